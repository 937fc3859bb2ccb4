//! `conv_transpose2d` (f32) as a GEMM followed by col2im.
//!
//! Per image and group: `cols[(om, i, j), (iy, ix)] = sum_ic W[ic, om, i, j] *
//! x[ic, iy, ix]`, a GEMM of `Mg*kh*kw` rows, depth `Cg` and `H*W` columns on the
//! micro-kernel of `fma/gemm.rs` (the weights transposed and packed at compile time when
//! constant, read strided in place otherwise; `x` packed into panels at run time).
//! col2im then adds each row of `cols` into the output plane of channel `om` at
//! `(iy*sh - top + i*dh, ix*sw - left + j*dw)`; which input rows and columns land
//! inside the output is computed at compile time for every tap, so the add loops have
//! constant bounds and no tests (f32x4 along a row when `sw == 1`). The output is
//! first filled with the bias (or zeros). A 1x1 kernel with unit strides, no padding
//! and no output padding is the GEMM alone, written in place with the bias as its
//! epilogue.
//!
//! Accumulation is in f32 (the interpreter sums in f64): the error is that of an f32
//! dot product of `Cg*kh*kw` terms, well inside `TOL` for the tested sizes.

use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};
use qcc_ir::shape::valid_range;
use qcc_ir::{Attrs, Module, Node};

use super::gemm::{self, AIn, BIn, Epilogue, Gemm};
use super::{ConstOf, Ecx};
use crate::backend::kb::Kb;

/// The geometry of a transposed convolution (x [N, C, H, W], w [C, M/group, kh, kw]).
#[derive(Clone, Debug)]
pub(crate) struct Deconv {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    top: usize,
    left: usize,
    group: usize,
    w_const: bool,
}

impl Deconv {
    fn cg(&self) -> usize {
        self.c / self.group
    }
    fn mg(&self) -> usize {
        self.m / self.group
    }
    /// GEMM rows per group.
    fn rows(&self) -> usize {
        self.mg() * self.kh * self.kw
    }
    fn npix_in(&self) -> usize {
        self.h * self.w
    }
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.top == 0
            && self.left == 0
            && self.oh == self.h
            && self.ow == self.w
    }

    pub fn kernel_name(&self) -> String {
        let kind = if self.pointwise() {
            "pointwise"
        } else {
            "col2im"
        };
        format!("conv_transpose2d.gemm{}x{}+{kind}.f32", gemm::MR, gemm::NR)
    }

    pub fn workspace(&self) -> usize {
        let packed = self.cg() * self.npix_in() * 4;
        if self.pointwise() {
            packed
        } else {
            packed + self.rows() * self.npix_in() * 4
        }
    }

    pub fn macs(&self) -> u64 {
        (self.n * self.c * self.h * self.w * self.mg() * self.kh * self.kw) as u64
    }
}

pub(crate) fn select(m: &Module, node: &Node, const_of: &ConstOf<'_>) -> Result<Deconv, String> {
    let xs = &m.ty(node.operands[0]).shape;
    let ws = &m.ty(node.operands[1]).shape;
    let os = &m.ty(node.result).shape;
    if xs.len() != 4 || ws.len() != 4 || os.len() != 4 {
        return Err("x, w and the result must have rank 4".into());
    }
    let a = Attrs::new(node.op, &node.attrs);
    let s = a.usizes("strides")?;
    let p = a.usizes("pads")?;
    let d = a.usizes("dilations")?;
    let op = a.usizes("output_padding")?;
    let group = a.int("group")?;
    if s.len() != 2 || p.len() != 4 || d.len() != 2 || op.len() != 2 || group <= 0 {
        return Err("bad strides, pads, dilations, output_padding or group".into());
    }
    let group = group as usize;
    if ws[0] != xs[1] || !xs[1].is_multiple_of(group) || s.contains(&0) || d.contains(&0) {
        return Err("inconsistent conv_transpose2d geometry".into());
    }
    let g = Deconv {
        n: xs[0],
        c: xs[1],
        h: xs[2],
        w: xs[3],
        m: ws[1] * group,
        kh: ws[2],
        kw: ws[3],
        oh: os[2],
        ow: os[3],
        sh: s[0],
        sw: s[1],
        dh: d[0],
        dw: d[1],
        top: p[0],
        left: p[1],
        group,
        w_const: const_of(node.operands[1]).is_some(),
    };
    if os[0] != g.n || os[1] != g.m {
        return Err("conv_transpose2d result shape does not match".into());
    }
    if node.operands.len() > 2 && m.ty(node.operands[2]).numel() != g.m {
        return Err("conv_transpose2d bias must have M elements".into());
    }
    Ok(g)
}

pub(crate) fn emit(cx: &mut Ecx<'_, '_, '_, '_>, g: &Deconv) {
    let x = cx.operand(0);
    let (rows, cg, npix) = (g.rows(), g.cg(), g.npix_in());
    let w_packed = if g.w_const {
        let w = cx.const_f32(1).expect("constant weights").to_vec();
        let mut packed = Vec::with_capacity(w.len());
        for grp in 0..g.group {
            packed.extend(gemm::pack_a(rows, cg, |r, ic| {
                w[(grp * cg + ic) * rows + r]
            }));
        }
        Some(cx.rodata_f32(&packed))
    } else {
        None
    };
    let w_rt = if g.w_const { None } else { Some(cx.operand(1)) };
    let bias = (cx.node.operands.len() > 2).then(|| cx.operand(2));
    let (out, ws) = (cx.out, cx.ws);
    let kb = &mut *cx.kb;
    let plane = g.oh * g.ow;
    let pointwise = g.pointwise();
    let (packed_b, cols) = if pointwise {
        (ws, ws)
    } else {
        (ws, kb.off(ws, (cg * npix * 4) as i64))
    };
    kb.for_range(0, g.n as i64, 1, |kb, n| {
        let xn = kb.idx(x, n, (g.c * npix * 4) as i64);
        let on = kb.idx(out, n, (g.m * plane * 4) as i64);
        if !pointwise {
            fill_bias(kb, g.m, plane, bias, on);
        }
        kb.for_range(0, g.group as i64, 1, |kb, grp| {
            let xg = kb.idx(xn, grp, (cg * npix * 4) as i64);
            let a = match (w_packed, w_rt) {
                (Some(wp), _) => AIn::Packed(kb.idx(wp, grp, (rows * cg * 4) as i64)),
                (None, Some(wr)) => AIn::Strided {
                    p: kb.idx(wr, grp, (cg * rows * 4) as i64),
                    row: 1,
                    col: rows as i64,
                },
                (None, None) => unreachable!("weights are constant or a run-time operand"),
            };
            gemm::pack_b_runtime(kb, xg, npix, cg, npix, packed_b);
            let og = kb.idx(on, grp, (g.mg() * plane * 4) as i64);
            let (dst, epi) = if pointwise {
                let b = bias.map(|bp| (kb.idx(bp, grp, (g.mg() * 4) as i64), 1, 0));
                (
                    og,
                    Epilogue {
                        bias: b,
                        ..Epilogue::plain()
                    },
                )
            } else {
                (cols, Epilogue::plain())
            };
            gemm::emit(
                kb,
                &Gemm {
                    m: rows,
                    n: npix,
                    k: cg,
                    a,
                    b: BIn::Packed(packed_b),
                    out: dst,
                    ldc: npix,
                    epi,
                },
            );
            if !pointwise {
                col2im(kb, g, cols, og);
            }
        });
    });
}

/// Fills `m` planes of `plane` floats at `out` with `bias[oc]` (or zeros).
fn fill_bias(kb: &mut Kb<'_, '_>, m: usize, plane: usize, bias: Option<Value>, out: Value) {
    kb.for_range(0, m as i64, 1, |kb, oc| {
        let v = match bias {
            Some(bp) => {
                let p = kb.idx(bp, oc, 4);
                kb.load(F32, p, 0)
            }
            None => kb.fconst(F32, 0.0),
        };
        let vv = kb.b.ins().splat(F32X4, v);
        let op = kb.idx(out, oc, (plane * 4) as i64);
        let nv = (plane / 4) as i64;
        kb.for_range(0, nv, 1, |kb, i| {
            let d = kb.idx(op, i, 16);
            kb.store(vv, d, 0);
        });
        for e in (nv * 4) as usize..plane {
            kb.store(v, op, (e * 4) as i64);
        }
    });
}

/// Adds the rows of `cols` (`[Mg*kh*kw, H*W]`) into the `Mg` output planes at `og`.
fn col2im(kb: &mut Kb<'_, '_>, g: &Deconv, cols: Value, og: Value) {
    let npix = g.npix_in();
    let plane = g.oh * g.ow;
    kb.for_range(0, g.mg() as i64, 1, |kb, om| {
        let crow = kb.idx(cols, om, (g.kh * g.kw * npix * 4) as i64);
        let op = kb.idx(og, om, (plane * 4) as i64);
        for i in 0..g.kh {
            let (ylo, yhi) = valid_range(g.h, g.oh, g.sh, i * g.dh, g.top);
            if ylo >= yhi {
                continue;
            }
            for j in 0..g.kw {
                let (xlo, xhi) = valid_range(g.w, g.ow, g.sw, j * g.dw, g.left);
                if xlo >= xhi {
                    continue;
                }
                let row = kb.off(crow, (((i * g.kw + j) * npix) * 4) as i64);
                // Output offset (elements) of input (iy, ix), less iy*sh*ow.
                let y0 = (i * g.dh) as i64 - g.top as i64;
                let x0 = (j * g.dw) as i64 - g.left as i64;
                kb.for_range(ylo as i64, yhi as i64, 1, |kb, iy| {
                    let src = kb.idx(row, iy, (g.w * 4) as i64);
                    let dst = kb.idx(op, iy, (g.sh * g.ow * 4) as i64);
                    let doff = (y0 * g.ow as i64 + x0 + (xlo * g.sw) as i64) * 4;
                    add_run(kb, dst, doff, src, (xlo * 4) as i64, xhi - xlo, g.sw as i64);
                });
            }
        }
    });
}

/// `dst[doff + e * stride] += src[soff + e]` for `len` f32 (offsets in bytes).
fn add_run(
    kb: &mut Kb<'_, '_>,
    dst: Value,
    doff: i64,
    src: Value,
    soff: i64,
    len: usize,
    stride: i64,
) {
    let nv = if stride == 1 { len / 4 } else { 0 };
    if nv > 0 {
        kb.for_range(0, nv as i64, 1, |kb, v| {
            let s = kb.idx(src, v, 16);
            let d = kb.idx(dst, v, 16);
            let a = kb.load(F32X4, s, soff);
            let b = kb.load(F32X4, d, doff);
            let r = kb.b.ins().fadd(b, a);
            kb.store(r, d, doff);
        });
    }
    let rest = len - nv * 4;
    if rest == 0 {
        return;
    }
    let s0 = kb.off(src, (nv * 16) as i64);
    let d0 = kb.off(dst, (nv * 4) as i64 * stride * 4);
    kb.for_range(0, rest as i64, 1, |kb, e| {
        let s = kb.idx(s0, e, 4);
        let d = kb.idx(d0, e, stride * 4);
        let a = kb.load(F32, s, soff);
        let b = kb.load(F32, d, doff);
        let r = kb.b.ins().fadd(b, a);
        kb.store(r, d, doff);
    });
}
