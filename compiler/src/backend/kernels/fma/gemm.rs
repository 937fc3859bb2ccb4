//! The f32 GEMM micro-kernel: `C[i, j] = epilogue(sum_k A[i, k] B[k, j])`.
//!
//! Register tile of [`MR`] rows by [`NR`] columns (6 x 2 f32x4 accumulators, 12 of the
//! 16 xmm registers), K loop unrolled by two. A is read by broadcasting one element per
//! row, B by vector loads along j. Both may be *packed* (the kernel's own layout,
//! contiguous per tile: written at compile time for weights, or by im2col at run time)
//! or *strided* (a row-major tensor used in place). Column tails use one f32x4 group
//! and then scalar columns; row tails a shorter tile. Every shape is a constant.
//!
//! Packed layouts (elements, row-major inside a block):
//! - A: row blocks of `MR` rows (the last one shorter), each `[K][rows]`;
//! - B: column panels of `NR` columns, then one of 4 if at least 4 remain, then one of
//!   the last 1..3; each `[K][width]`.

use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use crate::backend::kb::Kb;

pub(crate) const MR: usize = 6;
pub(crate) const NR: usize = 8;

/// A block of packed B columns (or of A rows): first index, width, element offset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Panel {
    pub first: usize,
    pub width: usize,
    pub off: usize,
}

/// Column panels of B for `n` columns and depth `k`.
pub(crate) fn b_panels(n: usize, k: usize) -> Vec<Panel> {
    let mut v = Vec::new();
    let mut j = 0;
    let mut off = 0;
    while j < n {
        let w = if n - j >= NR {
            NR
        } else if n - j >= 4 {
            4
        } else {
            n - j
        };
        v.push(Panel {
            first: j,
            width: w,
            off,
        });
        off += w * k;
        j += w;
    }
    v
}

/// Row blocks of A for `m` rows and depth `k`.
pub(crate) fn a_blocks(m: usize, k: usize) -> Vec<Panel> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < m {
        let r = MR.min(m - i);
        v.push(Panel {
            first: i,
            width: r,
            off: i * k,
        });
        i += r;
    }
    v
}

/// Packs B (`get(k, j)`) into panels.
pub(crate) fn pack_b(k: usize, n: usize, get: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(k * n);
    for p in b_panels(n, k) {
        for kk in 0..k {
            for j in p.first..p.first + p.width {
                out.push(get(kk, j));
            }
        }
    }
    out
}

/// Packs A (`get(i, k)`) into row blocks.
pub(crate) fn pack_a(m: usize, k: usize, get: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(m * k);
    for blk in a_blocks(m, k) {
        for kk in 0..k {
            for i in blk.first..blk.first + blk.width {
                out.push(get(i, kk));
            }
        }
    }
    out
}

/// Packs a row-major `[k][n]` f32 matrix at `src` (row stride `row` elements) into
/// the panel layout at `dst`, at run time.
pub(crate) fn pack_b_runtime(
    kb: &mut Kb<'_, '_>,
    src: Value,
    row: usize,
    k: usize,
    n: usize,
    dst: Value,
) {
    let panels = b_panels(n, k);
    let full = n / NR;
    let copy_panel = |kb: &mut Kb<'_, '_>, s: Value, d: Value, w: usize| {
        kb.for_range(0, k as i64, 1, |kb, kk| {
            let sp = kb.idx(s, kk, (row * 4) as i64);
            let dp = kb.idx(d, kk, (w * 4) as i64);
            let mut c = 0;
            while c + 4 <= w {
                let v = kb.load(F32X4, sp, (c * 4) as i64);
                kb.store(v, dp, (c * 4) as i64);
                c += 4;
            }
            while c < w {
                let v = kb.load(F32, sp, (c * 4) as i64);
                kb.store(v, dp, (c * 4) as i64);
                c += 1;
            }
        });
    };
    if full > 0 {
        kb.for_range(0, full as i64, 1, |kb, p| {
            let s = kb.idx(src, p, (NR * 4) as i64);
            let d = kb.idx(dst, p, (k * NR * 4) as i64);
            copy_panel(kb, s, d, NR);
        });
    }
    for p in panels.iter().skip(full) {
        let s = kb.off(src, (p.first * 4) as i64);
        let d = kb.off(dst, (p.off * 4) as i64);
        copy_panel(kb, s, d, p.width);
    }
}

/// How the kernel reads A.
#[derive(Clone, Copy)]
pub(crate) enum AIn {
    /// Packed row blocks (see the module docs).
    Packed(Value),
    /// `A[i, k]` at `p + (i * row + k * col) * 4`.
    Strided { p: Value, row: i64, col: i64 },
}

/// How the kernel reads B.
#[derive(Clone, Copy)]
pub(crate) enum BIn {
    /// Packed column panels.
    Packed(Value),
    /// `B[k, j]` at `p + (k * row + j) * 4`.
    Strided { p: Value, row: i64 },
}

/// What happens to an accumulator before it is stored:
/// `clamp(alpha * acc + beta * bias[i * row + j * col])`.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue {
    /// Bias pointer and its element strides along i and j (0 broadcasts).
    pub bias: Option<(Value, i64, i64)>,
    pub alpha: f32,
    pub beta: f32,
    pub lo: Option<f32>,
    pub hi: Option<f32>,
}

impl Epilogue {
    pub fn plain() -> Epilogue {
        Epilogue {
            bias: None,
            alpha: 1.0,
            beta: 1.0,
            lo: None,
            hi: None,
        }
    }
}

/// The problem: `m x n` outputs of depth `k`, written at `out + (i * ldc + j) * 4`.
#[derive(Clone, Copy)]
pub(crate) struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: AIn,
    pub b: BIn,
    pub out: Value,
    pub ldc: usize,
    pub epi: Epilogue,
}

/// Emits the whole GEMM.
pub(crate) fn emit(kb: &mut Kb<'_, '_>, g: &Gemm) {
    let blocks = a_blocks(g.m, g.k);
    let panels = b_panels(g.n, g.k);
    // Full row blocks in a run-time loop, then the tail block.
    let full_blocks = g.m / MR;
    let mut groups: Vec<(usize, Vec<Panel>)> = Vec::new(); // (rows, blocks)
    if full_blocks > 0 {
        groups.push((MR, blocks[..full_blocks].to_vec()));
    }
    if !g.m.is_multiple_of(MR) {
        groups.push((g.m % MR, blocks[full_blocks..].to_vec()));
    }
    for (rows, blks) in groups {
        let first = blks[0];
        kb.for_range(0, blks.len() as i64, 1, |kb, bi| {
            // Row block base: rows first.first + bi * MR.
            let row0 = kb.b.ins().imul_imm_s(bi, MR as i64);
            let row0 = kb.b.ins().iadd_imm_s(row0, first.first as i64);
            let (a_base, a_kstep, a_row): (Value, i64, i64) = match g.a {
                AIn::Packed(p) => {
                    // Block offset = row0 * k elements.
                    let p = kb.idx(p, row0, (g.k * 4) as i64);
                    (p, (rows * 4) as i64, 4)
                }
                AIn::Strided { p, row, col } => {
                    let p = kb.idx(p, row0, row * 4);
                    (p, col * 4, row * 4)
                }
            };
            let out_row = kb.idx(g.out, row0, (g.ldc * 4) as i64);
            // Full NR panels in a loop, then the tails.
            let full = g.n / NR;
            if full > 0 {
                kb.for_range(0, full as i64, 1, |kb, pi| {
                    let col0 = kb.b.ins().imul_imm_s(pi, NR as i64);
                    tile(
                        kb, g, rows, row0, a_base, a_kstep, a_row, col0, NR, pi, None,
                    );
                });
            }
            for p in panels.iter().skip(full) {
                let col0 = kb.c(p.first as i64);
                tile(
                    kb,
                    g,
                    rows,
                    row0,
                    a_base,
                    a_kstep,
                    a_row,
                    col0,
                    p.width,
                    col0,
                    Some(p.off),
                );
            }
            let _ = out_row;
        });
    }
}

/// One register tile: `rows` rows from `row0`, `width` columns from `col0`.
/// `panel_off`: the panel's element offset in packed B (None: full panel `pi`).
#[allow(
    clippy::too_many_arguments,
    reason = "one tile needs all of its geometry"
)]
fn tile(
    kb: &mut Kb<'_, '_>,
    g: &Gemm,
    rows: usize,
    row0: Value,
    a_base: Value,
    a_kstep: i64,
    a_row: i64,
    col0: Value,
    width: usize,
    pi: Value,
    panel_off: Option<usize>,
) {
    // Column groups: (offset in tile, lanes).
    let mut cols: Vec<(usize, usize)> = Vec::new();
    let mut c = 0;
    while c < width {
        if width - c >= 4 {
            cols.push((c, 4));
            c += 4;
        } else {
            cols.push((c, 1));
            c += 1;
        }
    }
    let (b_base, b_kstep, b_col): (Value, i64, i64) = match g.b {
        BIn::Packed(p) => {
            let p = match panel_off {
                Some(off) => kb.off(p, (off * 4) as i64),
                None => kb.idx(p, pi, (g.k * NR * 4) as i64),
            };
            (p, (width * 4) as i64, 4)
        }
        BIn::Strided { p, row } => {
            let p = kb.idx(p, col0, 4);
            (p, row * 4, 4)
        }
    };
    let zero_v = kb.fconst(F32X4, 0.0);
    let zero_s = kb.fconst(F32, 0.0);
    let accs: Vec<Vec<_>> = (0..rows)
        .map(|_| {
            cols.iter()
                .map(|&(_, l)| {
                    let (ty, z) = if l == 4 {
                        (F32X4, zero_v)
                    } else {
                        (F32, zero_s)
                    };
                    kb.var(ty, z)
                })
                .collect()
        })
        .collect();
    let any_vec = cols.iter().any(|&(_, l)| l == 4);
    let step = |kb: &mut Kb<'_, '_>, ap: Value, bp: Value, u: i64| {
        let bv: Vec<Value> = cols
            .iter()
            .map(|&(c, l)| {
                let ty = if l == 4 { F32X4 } else { F32 };
                kb.load(ty, bp, u * b_kstep + c as i64 * b_col)
            })
            .collect();
        for (r, acc_r) in accs.iter().enumerate() {
            let a = kb.load(F32, ap, u * a_kstep + r as i64 * a_row);
            let av = if any_vec {
                Some(kb.b.ins().splat(F32X4, a))
            } else {
                None
            };
            for (gi, &(_, l)) in cols.iter().enumerate() {
                let x = if l == 4 { av.unwrap_or(a) } else { a };
                let acc = kb.b.use_var(acc_r[gi]);
                let nv = kb.madd(x, bv[gi], acc);
                kb.b.def_var(acc_r[gi], nv);
            }
        }
    };
    let unroll = 2i64;
    let kk = g.k as i64;
    let main = kk / unroll * unroll;
    if main > 0 {
        kb.for_range(0, main, unroll, |kb, k| {
            let ap = kb.idx(a_base, k, a_kstep);
            let bp = kb.idx(b_base, k, b_kstep);
            for u in 0..unroll {
                step(kb, ap, bp, u);
            }
        });
    }
    if main < kk {
        let ap = kb.off(a_base, main * a_kstep);
        let bp = kb.off(b_base, main * b_kstep);
        step(kb, ap, bp, 0);
    }
    // Epilogue and store.
    let epi = g.epi;
    let alpha =
        (epi.alpha != 1.0).then(|| (kb.fconst(F32X4, epi.alpha), kb.fconst(F32, epi.alpha)));
    let beta = (epi.beta != 1.0).then(|| (kb.fconst(F32X4, epi.beta), kb.fconst(F32, epi.beta)));
    let lo = epi.lo.map(|v| (kb.fconst(F32X4, v), kb.fconst(F32, v)));
    let hi = epi.hi.map(|v| (kb.fconst(F32X4, v), kb.fconst(F32, v)));
    let bias_base = epi.bias.map(|(p, rs, cs)| {
        let p = kb.idx(p, row0, rs * 4);
        (kb.idx(p, col0, cs * 4), rs, cs)
    });
    let out_tile = {
        let p = kb.idx(g.out, row0, (g.ldc * 4) as i64);
        kb.idx(p, col0, 4)
    };
    for (r, acc_r) in accs.iter().enumerate() {
        for (gi, &(c, l)) in cols.iter().enumerate() {
            let vec = l == 4;
            let pick = |p: (Value, Value)| if vec { p.0 } else { p.1 };
            let mut v = kb.b.use_var(acc_r[gi]);
            if let Some(a) = alpha {
                v = kb.b.ins().fmul(v, pick(a));
            }
            if let Some((bp, rs, cs)) = bias_base {
                let off = (r as i64 * rs + c as i64 * cs) * 4;
                let bv = if vec && cs == 1 {
                    kb.load(F32X4, bp, off)
                } else {
                    let s = kb.load(F32, bp, off);
                    if vec { kb.b.ins().splat(F32X4, s) } else { s }
                };
                v = match beta {
                    Some(bt) => kb.madd(bv, pick(bt), v),
                    None => kb.b.ins().fadd(v, bv),
                };
            }
            let ty = if vec { F32X4 } else { F32 };
            if let Some(l) = lo {
                let l = pick(l);
                v = kb.fselect(
                    ty,
                    cranelift_codegen::ir::condcodes::FloatCC::LessThan,
                    v,
                    l,
                    l,
                    v,
                );
            }
            if let Some(h) = hi {
                let h = pick(h);
                v = kb.fselect(
                    ty,
                    cranelift_codegen::ir::condcodes::FloatCC::GreaterThan,
                    v,
                    h,
                    h,
                    v,
                );
            }
            kb.store(v, out_tile, ((r * g.ldc + c) * 4) as i64);
        }
    }
    let _ = I64;
}
