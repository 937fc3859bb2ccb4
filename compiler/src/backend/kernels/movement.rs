//! Data movement: copies, gathers (transpose, slice, pad) and concat, on any storage.
//!
//! A gather walks the output in row-major order; along each axis the source byte
//! offset is affine (`start + o * stride`: transpose, slice) or read from a table
//! packed at compile time (pad's reflect/edge/wrap, and constant fill, marked by a
//! negative offset). An innermost axis that is contiguous in both is a block copy.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I8, I16, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

use crate::backend::kb::Kb;

/// The longest innermost table [`emit_gather`] unrolls.
const UNROLL_TABLE: usize = 64;

/// A table entry meaning "fill value here".
pub(crate) const FILL: i64 = -(1 << 40);

/// How the source offset moves along one output axis.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AxisMap {
    /// `start + o * stride` bytes.
    Affine { start: i64, stride: i64 },
    /// Byte offset per output index ([`FILL`] for fill).
    Table(Vec<i64>),
}

/// A gather: output dims, each axis's map, element bytes and the fill bits.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Gather {
    pub dims: Vec<usize>,
    pub maps: Vec<AxisMap>,
    pub elem: usize,
    pub fill: i64,
}

impl Gather {
    pub fn table_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for m in &self.maps {
            if let AxisMap::Table(t) = m {
                for &x in t {
                    v.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        v
    }
}

fn int_ty(bytes: usize) -> Type {
    match bytes {
        1 => I8,
        2 => I16,
        _ => I32,
    }
}

/// Emits the gather; `tables` points at [`Gather::table_bytes`] (if any table).
pub(crate) fn emit_gather(
    kb: &mut Kb<'_, '_>,
    g: &Gather,
    src: Value,
    out: Value,
    tables: Option<Value>,
) {
    let mut tptr = Vec::new();
    let mut at = 0i64;
    for m in &g.maps {
        if let AxisMap::Table(t) = m {
            tptr.push(Some(at));
            at += (t.len() * 8) as i64;
        } else {
            tptr.push(None);
        }
    }
    let has_tables = tptr.iter().any(Option::is_some);
    let start: i64 = g
        .maps
        .iter()
        .map(|m| match m {
            AxisMap::Affine { start, .. } => *start,
            AxisMap::Table(_) => 0,
        })
        .sum();
    let acc0 = kb.c(start);
    let ostr = qcc_ir::shape::strides(&g.dims);
    if g.dims.is_empty() {
        let ty = int_ty(g.elem);
        let p = kb.b.ins().iadd(src, acc0);
        let v = kb.load(ty, p, 0);
        kb.store(v, out, 0);
        return;
    }
    let ctx = Ctx {
        g,
        tptr: &tptr,
        tables,
        has_tables,
        ostr: &ostr,
        src,
    };
    ctx.nest(kb, 0, acc0, out);
}

struct Ctx<'a> {
    g: &'a Gather,
    tptr: &'a [Option<i64>],
    tables: Option<Value>,
    has_tables: bool,
    ostr: &'a [usize],
    src: Value,
}

impl Ctx<'_> {
    fn nest(&self, kb: &mut Kb<'_, '_>, a: usize, acc: Value, out: Value) {
        let g = self.g;
        let last = a + 1 == g.dims.len();
        let eb = g.elem as i64;
        if last
            && !self.has_tables
            && matches!(g.maps[a], AxisMap::Affine { stride, .. } if stride == eb)
        {
            let p = kb.b.ins().iadd(self.src, acc);
            kb.copy_bytes(out, p, g.dims[a] as i64 * eb);
            return;
        }
        // A short innermost table (nearest upsampling, pads of a row): unrolled, the
        // offsets as constants; only when no outer axis fills (its offset would make
        // the whole row fill).
        let outer_fill = g.maps[..a]
            .iter()
            .any(|m| matches!(m, AxisMap::Table(t) if t.iter().any(|&x| x < 0)));
        if last
            && !outer_fill
            && let AxisMap::Table(t) = &g.maps[a]
            && t.len() <= UNROLL_TABLE
        {
            let ty = int_ty(g.elem);
            let p = kb.b.ins().iadd(self.src, acc);
            for (o, &off) in t.iter().enumerate() {
                let v = if off < 0 {
                    kb.b.ins().iconst(ty, g.fill)
                } else {
                    kb.load(ty, p, off)
                };
                kb.store(v, out, o as i64 * eb);
            }
            return;
        }
        kb.for_range(0, g.dims[a] as i64, 1, |kb, o| {
            let off = match &g.maps[a] {
                AxisMap::Affine { stride, .. } => kb.b.ins().imul_imm_s(o, *stride),
                AxisMap::Table(_) => {
                    let t = self.tables.expect("gather tables");
                    let t = kb.off(t, self.tptr[a].unwrap_or(0));
                    let p = kb.idx(t, o, 8);
                    kb.load(I64, p, 0)
                }
            };
            let acc = kb.b.ins().iadd(acc, off);
            let o_out = kb.idx(out, o, self.ostr[a] as i64 * eb);
            if !last {
                self.nest(kb, a + 1, acc, o_out);
                return;
            }
            let ty = int_ty(g.elem);
            if self.has_tables {
                let zero = kb.c(0);
                let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, acc, 0);
                let safe = kb.b.ins().select(neg, zero, acc);
                let p = kb.b.ins().iadd(self.src, safe);
                let v = kb.load(ty, p, 0);
                let f = kb.b.ins().iconst(ty, g.fill);
                let v = kb.b.ins().select(neg, f, v);
                kb.store(v, o_out, 0);
            } else {
                let p = kb.b.ins().iadd(self.src, acc);
                let v = kb.load(ty, p, 0);
                kb.store(v, o_out, 0);
            }
        });
    }
}

/// Concat: `outer` rows; operand i contributes `chunks[i]` bytes per row.
pub(crate) fn emit_concat(
    kb: &mut Kb<'_, '_>,
    outer: usize,
    chunks: &[usize],
    srcs: &[Value],
    out: Value,
) {
    let total: usize = chunks.iter().sum();
    kb.for_range(0, outer as i64, 1, |kb, o| {
        let orow = kb.idx(out, o, total as i64);
        let mut at = 0i64;
        for (i, &c) in chunks.iter().enumerate() {
            let s = kb.idx(srcs[i], o, c as i64);
            let d = kb.off(orow, at);
            kb.copy_bytes(d, s, c as i64);
            at += c as i64;
        }
    });
    let _ = I32;
}
