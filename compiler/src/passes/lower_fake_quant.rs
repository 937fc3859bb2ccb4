//! Lowers QONNX quantizers (`fake_quant`, imported from Quant / IntQuant / BipolarQuant)
//! with constant parameters into the IR's integer types, so that the bit-width, the
//! grid and the scales survive the float cleanup and the rewrite engine can fuse the
//! layers into integer kernels. It runs first in the cleanup pipeline: constant folding
//! then turns the quantize of a constant weight into a constant of the quantized type
//! (kept behind its `dequantize`), which batch-norm folding does not touch.
//!
//! Which nodes are lowered: `scale` and `zero_point` are constants, per tensor or per
//! channel (after right-aligning with `x`, at most one axis of length > 1, of `x`'s
//! length), the zero points are integers inside the storage range, and `bits <= 8`.
//! Others stay `fake_quant` (the backend then reports them by name).
//!
//! - Grid (`bits >= 2`, or unsigned 1-bit):
//!   `fake_quant(x) -> dequantize(quantize_T(x))` with `T = q<{i,u}bits [narrow], s:z>`
//!   (per axis when the scale or zero point is), `quantize` with the same rounding.
//!   **Exactness.** `fake_quant` computes `y = fl(x / s) + z`, `rounding(clamp(y, lo, hi))`,
//!   `(y - z) * s`; `quantize` computes `clamp(rounding(fl(x / s)) + z, qmin, qmax)`, and
//!   `dequantize` `(q - z) * s`, all in f32 (same division, same final product). The
//!   grids are equal (`[lo, hi] = [qmin, qmax]`, narrow-aware). For integer bounds and a
//!   non-decreasing rounding with `rounding(n) = n` on integers, `rounding(clamp(y)) =
//!   clamp(rounding(y))`: below `lo`, `rounding(y) <= rounding(lo) = lo`, so both give
//!   `lo` (likewise above `hi`); inside, they are the same expression. With `z = 0` the
//!   two sides are therefore equal for every non-NaN input (as real numbers: a negative
//!   zero may come out as +0). With an integer `z != 0`, `fl(fl(x / s) + z)` may round
//!   the sum: for `|y| <= 2^8` the rounding error is at most `2^-16`, so the results can
//!   differ (by one code) only where `x / s` is within `2^-16` of a rounding boundary.
//!   NaN: `fake_quant` keeps it, `quantize` maps it to the zero point.
//! - Bipolar (`bits = 1`, signed, zero point 0):
//!   `fake_quant(x) -> dequantize(cast_T(binarize(x)))` with `T = q<i2 narrow, s:0>` (codes
//!   -1 and +1 exactly, what the integer kernels and the `b1` rules read).
//!   **Exactness.** Left: `fl(x / s) + 0 >= 0 ? 1 : -1`; right: `x >= 0 ? 1 : -1`; both
//!   then give `(+-1 - 0) * s`. For `s > 0`, `x / s` has the sign of `x` unless it
//!   underflows to zero, which needs `|x| < s * 2^-149`: impossible for a non-zero `x`
//!   when `s <= 1` (the quotient is at least `|x|`), so the lowering is exact for every
//!   input (NaN included: both give -1) when every scale is at most 1, and otherwise
//!   differs only for negative subnormal `x` below `s * 2^-149`.

use std::collections::BTreeMap;

use qcc_ir::interp::{TensorData, const_tensor};
use qcc_ir::{
    Attr, Attrs, ElemType, IntType, Module, Node, Op, QuantParams, QuantType, TensorType, ValueId,
};

/// Per-tensor or per-axis parameters of a constant broadcast against a tensor of `shape`:
/// `(axis, values)`, `axis = None` for one value.
fn layout(m: &Module, id: ValueId, shape: &[usize]) -> Option<(Option<usize>, Vec<f32>)> {
    let t = const_tensor(m, id)?;
    let TensorData::F32(v) = t.data else {
        return None;
    };
    if v.len() == 1 {
        return Some((None, v));
    }
    let r = shape.len();
    if t.shape.len() > r {
        return None;
    }
    let off = r - t.shape.len();
    let big: Vec<usize> = (0..t.shape.len()).filter(|&i| t.shape[i] != 1).collect();
    match big[..] {
        [i] if t.shape[i] == shape[i + off] => Some((Some(i + off), v)),
        _ => None,
    }
}

/// The quantization parameters for `fake_quant` node `n`, or `None` when they are not
/// constant, not per tensor / per axis, or the zero points are not integers.
fn params(m: &Module, n: &Node, storage: IntType) -> Option<QuantParams> {
    let shape = &m.ty(n.operands[0]).shape;
    let (sa, s) = layout(m, n.operands[1], shape)?;
    let (za, z) = layout(m, n.operands[2], shape)?;
    if s.iter()
        .any(|&v| !(v.is_finite() && v > 0.0 && v.is_normal()))
    {
        return None;
    }
    let ok_z = |v: &f32| {
        v.fract() == 0.0 && (storage.min_code() as f32..=storage.max_code() as f32).contains(v)
    };
    if !z.iter().all(ok_z) {
        return None;
    }
    let axis = match (sa, za) {
        (None, None) => {
            return Some(QuantParams::PerTensor {
                scale: s[0],
                zero_point: z[0] as i32,
            });
        }
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) if a == b => a,
        _ => return None,
    };
    let len = shape[axis];
    let expand = |v: Vec<f32>| if v.len() == 1 { vec![v[0]; len] } else { v };
    Some(QuantParams::PerAxis {
        axis,
        scales: expand(s),
        zero_points: expand(z).into_iter().map(|z| z as i32).collect(),
    })
}

/// The nodes that replace `fake_quant` node `n` (the last one takes over `n`'s result),
/// or `None` when it is not lowered.
fn lower(m: &mut Module, n: &Node) -> Result<Option<Vec<Node>>, String> {
    let a = Attrs::new(Op::FakeQuant, &n.attrs);
    let bits = a.int("bits")?;
    let signed = a.bool("signed")?;
    let narrow = a.bool("narrow")?;
    if !(1..=8).contains(&bits) || m.ty(n.operands[0]).elem != ElemType::F32 {
        return Ok(None);
    }
    let x = n.operands[0];
    let shape = m.ty(x).shape.clone();
    let base = m.value(n.result).name.clone();
    let bipolar = bits == 1 && signed;
    let storage = if bipolar {
        IntType::new(2, true)
    } else {
        IntType::new(bits as u8, signed)
    };
    let Some(p) = params(m, n, storage) else {
        return Ok(None);
    };
    let pow2 = p
        .scales()
        .iter()
        .all(|s| s.to_bits() & 0x007f_ffff == 0 && s.is_normal());
    // `m.nodes` is empty here (see `run`): the new nodes are collected from it.
    let (last_operand, extra) = if bipolar {
        if p.zero_points().iter().any(|&z| z != 0) {
            return Ok(None);
        }
        let qt = ElemType::Quant(QuantType {
            storage,
            narrow: true,
            pow2,
            params: p,
        });
        let bn = m.fresh_name(&format!("{base}.b1"));
        let b = m.add_node(
            Op::Binarize,
            vec![x],
            BTreeMap::new(),
            bn,
            TensorType::new(ElemType::Bipolar, shape.clone()),
        );
        let cn = m.fresh_name(&format!("{base}.q"));
        let mut ca = BTreeMap::new();
        ca.insert("rounding".to_string(), Attr::Enum("down".into()));
        let c = m.add_node(Op::Cast, vec![b], ca, cn, TensorType::new(qt, shape));
        (c, std::mem::take(&mut m.nodes))
    } else {
        let qt = ElemType::Quant(QuantType {
            storage,
            narrow: narrow && bits > 1,
            pow2,
            params: p,
        });
        let qn = m.fresh_name(&format!("{base}.q"));
        let mut qa = BTreeMap::new();
        qa.insert("rounding".to_string(), Attr::Enum(a.word("rounding")?));
        let q = m.add_node(Op::Quantize, vec![x], qa, qn, TensorType::new(qt, shape));
        (q, std::mem::take(&mut m.nodes))
    };
    let mut out: Vec<Node> = extra
        .into_iter()
        .map(|mut e| {
            e.loc = n.loc.clone();
            e
        })
        .collect();
    let mut d = n.clone();
    d.op = Op::Dequantize;
    d.operands = vec![last_operand];
    d.attrs = BTreeMap::new();
    out.push(d);
    Ok(Some(out))
}

pub fn run(m: &mut Module) -> Result<bool, String> {
    let old = std::mem::take(&mut m.nodes);
    let mut changed = false;
    let mut out = Vec::with_capacity(old.len());
    let mut result = Ok(());
    for n in old {
        if n.op != Op::FakeQuant || result.is_err() {
            out.push(n);
            continue;
        }
        // `lower` appends its new nodes to the (now empty) `m.nodes` and takes them back.
        match lower(m, &n) {
            Ok(Some(nodes)) => {
                out.extend(nodes);
                changed = true;
            }
            Ok(None) => out.push(n),
            Err(e) => {
                result = Err(format!("fake_quant %{}: {e}", m.value(n.result).name));
                out.push(n);
            }
        }
    }
    m.nodes = out;
    m.compact();
    result.map(|()| changed)
}
