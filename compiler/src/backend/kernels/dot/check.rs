//! The u8 x i8 family's operand checks (`check`): which `conv2d_int` / `matmul_int`
//! layers the byte kernels take (byte-stored activations with a per-tensor zero point,
//! constant weights whose zero-point corrected values fit i8), and the saturation
//! check of `pmaddubsw` / `vpmaddubsw`: the i16 group length along K (`group_len`) and,
//! for 8-bit convolutions that fail in K's natural order, an order of the K rows in
//! which every pair passes (`pair_order`). The rules are in `maddubs.rs`'s module
//! documentation.

use qcc_ir::{ConstData, ElemType, Module, Node, Op};

use super::super::bitserial;
use super::super::conv::{self, ConvGeom};
use super::super::quant::tensor_zp;
use super::super::{ConstOf, matmul_geom};
use super::maddubs::kp;
use crate::backend::storage::Store;

/// The largest i16 group, in quads.
pub(super) const GMAX: usize = 4096;

/// What [`applies`] found: the i16 group length (quads along K), and the order of K
/// that makes `pmaddubsw` exact where the natural one does not ([`pair_order`]).
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub group: usize,
    pub order: Option<KOrder>,
    /// aarch64 with FEAT_DotProd: `sdot` for each quad ([`Strategy::Sdot`]).
    pub sdot: bool,
}

/// A convolution's K order for `pmaddubsw` (`[`pair_order`]): position `i` of the
/// padded K (`Kp`) holds original row `order[i]` (rows past K are zero weights).
pub(crate) type KOrder = std::sync::Arc<[u32]>;

/// Storage bits and signedness of an integer element type (not `b1`, not f32).
/// Bipolar codes (+-1) count as 2-bit signed ones: activations are offset by 2, weights
/// stored in 2-bit planes (0 for padding).
pub(super) fn int_bits(e: &ElemType) -> Option<(u32, bool)> {
    if *e == ElemType::Bipolar {
        return Some((2, true));
    }
    bitserial::int_bits(e).map(|(b, s)| (b as u32, s))
}

/// The weights' zero point per output channel (conv: `M` of them, matmul: `N`).
pub(super) fn weight_zps(m: &Module, node: &Node, chans: usize) -> Result<Vec<i64>, String> {
    let z = bitserial::weight_zps(m, node)?;
    Ok(if z.len() == 1 { vec![z[0]; chans] } else { z })
}

/// The weight vectors of a layer: `count` vectors of `k` values `w(v, kk)` (already
/// zero-point corrected); conv: one per output channel; matmul: one per column of
/// every weight slab.
pub(super) struct WVecs<'a> {
    count: usize,
    k: usize,
    w: Box<dyn Fn(usize, usize) -> i64 + 'a>,
}

pub(super) fn weight_vectors<'a>(
    m: &Module,
    node: &Node,
    w: &'a [i64],
    zw: Vec<i64>,
) -> Option<WVecs<'a>> {
    match node.op {
        Op::Conv2dInt => {
            let mm = zw.len();
            if mm == 0 || !w.len().is_multiple_of(mm) {
                return None;
            }
            let k = w.len() / mm;
            Some(WVecs {
                count: mm,
                k,
                w: Box::new(move |v, kk| w[v * k + kk] - zw[v]),
            })
        }
        _ => {
            let (sa, sb) = (&m.ty(node.operands[0]).shape, &m.ty(node.operands[1]).shape);
            let g = matmul_geom(sa, sb).ok()?;
            let slabs = g.batches.iter().map(|b| b.1).max().unwrap_or(0) + 1;
            let (k, n) = (g.k, g.n);
            if w.len() < slabs * k * n || zw.len() != n {
                return None;
            }
            Some(WVecs {
                count: slabs * n,
                k,
                w: Box::new(move |v, kk| {
                    let (s, j) = (v / n, v % n);
                    w[s * k * n + kk * n + j] - zw[j]
                }),
            })
        }
    }
}

/// The longest i16 group (quads along K, a power of two up to [`GMAX`]) such that no
/// i16 lane saturates with activations in `0..=xmax` (2 becomes 1: see the end); None
/// when even one `pmaddubsw` may saturate (or a weight does not fit i8).
pub(super) fn group_len(wv: &WVecs<'_>, xmax: i64) -> Option<usize> {
    let q = wv.k.div_ceil(4);
    let mut best = q.next_power_of_two().clamp(1, GMAX);
    for v in 0..wv.count {
        for kk in 0..wv.k {
            if !(-128..=127).contains(&(wv.w)(v, kk)) {
                return None;
            }
        }
        for h in 0..2 {
            // The lane of pair h of each quad: its positive and negative parts.
            let pn: Vec<(i64, i64)> = (0..q)
                .map(|qq| {
                    let (mut p, mut n) = (0, 0);
                    for t in 0..2 {
                        let kk = 4 * qq + 2 * h + t;
                        if kk < wv.k {
                            let x = (wv.w)(v, kk);
                            if x > 0 {
                                p += x;
                            } else {
                                n -= x;
                            }
                        }
                    }
                    (p, n)
                })
                .collect();
            loop {
                let ok = pn.chunks(best).all(|c| {
                    let (p, n) = c.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                    xmax * p <= 32767 && xmax * n <= 32768
                });
                if ok {
                    break;
                }
                if best == 1 {
                    return None;
                }
                best /= 2;
            }
        }
    }
    // Short groups of several: each flush (through memory, see `tile`) costs more than
    // widening every product at once.
    Some(if best < 4 && best < q { 1 } else { best })
}

/// An order of a convolution's K rows in which every pair `pmaddubsw` multiplies passes
/// the saturation check (None if the greedy search finds none): with 8-bit activations
/// and weights, a pair saturates only when some channel's two weights have the same
/// sign and magnitudes adding up to more than 128, and the im2col rows are shared by
/// all channels, so one order serves all of them. Rows are matched greedily: the rows
/// with the most large weights (more than half the limit) first, each with the first
/// unmatched row, in increasing count of large weights, that no channel forbids; a row
/// left over is matched with another one left over, or two of them replace a pair
/// `(c, d)` by `(a, c)` and `(b, d)`; then the pairs fill the quads in order.
/// Exactness rests on the check, which [`group_len`] repeats on the result.
pub(super) fn pair_order(wv: &WVecs<'_>, xmax: i64) -> Option<KOrder> {
    let (k, kp4) = (wv.k, kp(wv.k));
    let (plim, nlim) = (32767 / xmax.max(1), 32768 / xmax.max(1));
    // Per row: its channels with a weight above half the limit (sign, magnitude).
    let large: Vec<Vec<(usize, i64)>> = (0..kp4)
        .map(|kk| {
            if kk >= k {
                return Vec::new();
            }
            (0..wv.count)
                .filter_map(|v| {
                    let x = (wv.w)(v, kk);
                    let lim = if x > 0 { plim } else { nlim };
                    (2 * x.abs() > lim).then_some((v, x))
                })
                .collect()
        })
        .collect();
    // Two rows may share a pair when no channel's same-sign weights exceed the limit;
    // only a channel where one of them is large can.
    let w = |v: usize, kk: usize| if kk < k { (wv.w)(v, kk) } else { 0 };
    let fits = |a: usize, b: usize| {
        large[a].iter().chain(&large[b]).all(|&(v, _)| {
            let (x, y) = (w(v, a), w(v, b));
            x.max(0) + y.max(0) <= plim && (-x).max(0) + (-y).max(0) <= nlim
        })
    };
    let mut by_large: Vec<usize> = (0..kp4).collect();
    by_large.sort_by_key(|&kk| (std::cmp::Reverse(large[kk].len()), kk));
    let mut free: Vec<usize> = by_large.iter().rev().copied().collect();
    let mut taken = vec![false; kp4];
    let mut pairs: Vec<(usize, usize)> = Vec::with_capacity(kp4 / 2);
    // Rows the greedy pass left without a partner.
    let mut left: Vec<usize> = Vec::new();
    for &a in &by_large {
        if taken[a] {
            continue;
        }
        taken[a] = true;
        free.retain(|&x| !taken[x]);
        match free.iter().find(|&&b| fits(a, b)) {
            Some(&b) => {
                taken[b] = true;
                pairs.push((a, b));
            }
            None => left.push(a),
        }
    }
    // Each leftover row: with another leftover, or two leftovers a, b and a pair
    // (c, d) become (a, c) and (b, d) (or (a, d) and (b, c)).
    while let Some(a) = left.pop() {
        if let Some(i) = left.iter().position(|&b| fits(a, b)) {
            let b = left.swap_remove(i);
            pairs.push((a, b));
            continue;
        }
        let mut done = false;
        'swap: for i in 0..left.len() {
            let b = left[i];
            for j in 0..pairs.len() {
                let (c, d) = pairs[j];
                for (x, y) in [(c, d), (d, c)] {
                    if fits(a, x) && fits(b, y) {
                        pairs[j] = (a, x);
                        pairs.push((b, y));
                        left.swap_remove(i);
                        done = true;
                        break 'swap;
                    }
                }
            }
        }
        if !done {
            return None;
        }
    }
    let order: Vec<u32> = pairs
        .iter()
        .flat_map(|&(a, b)| [a as u32, b as u32])
        .collect();
    Some(order.into())
}

/// Bits of the narrowest signed type holding every weight (at least 2).
pub(super) fn effective_bits(wv: &WVecs<'_>) -> u32 {
    let mut b = 2;
    for v in 0..wv.count {
        for kk in 0..wv.k {
            let x = (wv.w)(v, kk);
            while !(-(1i64 << (b - 1))..(1i64 << (b - 1))).contains(&x) {
                b += 1;
            }
        }
    }
    b
}

/// Whether a convolution reads padding taps.
pub(super) fn padded(g: &ConvGeom) -> bool {
    (0..g.kh).any(|i| g.rows_valid(i) != (0, g.oh))
        || (0..g.kw).any(|j| g.cols_valid(j) != (0, g.ow))
}

/// What [`check`] found about a layer's operands.
#[derive(Clone, Debug)]
pub(crate) struct Checked {
    /// Storage bits of the weights and the activations.
    pub wb: u32,
    pub ab: u32,
    pub k: usize,
    /// The i16 group length (None: some pair may saturate `pmaddubsw`).
    pub group: Option<usize>,
    /// Bits of the narrowest signed type holding every corrected weight.
    pub weff: u32,
    /// A convolution with 8-bit weights that fail the check in K's natural order: an
    /// order that passes it ([`pair_order`]), `group` then being the permuted layer's.
    pub order: Option<KOrder>,
}

/// The operand checks of the u8 x i8 kernels: a `conv2d_int` or `matmul_int` with
/// byte-stored activations (per-tensor zero point) and constant integer weights of at
/// most 8 bits whose zero-point corrected values fit i8 (and, for a padded convolution,
/// a padding code that fits u8); and the saturation check of `pmaddubsw`.
pub(crate) fn check(m: &Module, node: &Node, const_of: &ConstOf<'_>) -> Option<Checked> {
    if !matches!(node.op, Op::Conv2dInt | Op::MatMulInt) || node.operands.len() < 2 {
        return None;
    }
    let (xe, we) = (&m.ty(node.operands[0]).elem, &m.ty(node.operands[1]).elem);
    let (ab, asigned) = int_bits(xe)?;
    let (wb, _) = int_bits(we)?;
    if ab > 8 || wb > 8 || Store::of(xe).bytes() != 1 {
        return None;
    }
    let Some(ConstData::Int(w)) = const_of(node.operands[1]) else {
        return None;
    };
    let zx = tensor_zp(xe).ok()?;
    let off = if asigned { 1i64 << (ab - 1) } else { 0 };
    let zu = zx + off;
    let mut xmax = (1i64 << ab) - 1;
    let (chans, k) = match node.op {
        Op::Conv2dInt => {
            let g = conv::conv_geom(m, node).ok()?;
            if padded(&g) {
                if !(0..=255).contains(&zu) {
                    return None;
                }
                xmax = xmax.max(zu);
            }
            (g.m, g.kdim())
        }
        _ => {
            let (sa, sb) = (&m.ty(node.operands[0]).shape, &m.ty(node.operands[1]).shape);
            let mg = matmul_geom(sa, sb).ok()?;
            (mg.n, mg.k)
        }
    };
    let zw = weight_zps(m, node, chans).ok()?;
    let wv = weight_vectors(m, node, w, zw)?;
    for v in 0..wv.count {
        for kk in 0..wv.k {
            if !(-128..=127).contains(&(wv.w)(v, kk)) {
                return None;
            }
        }
    }
    let mut group = group_len(&wv, xmax);
    let mut order = None;
    if group.is_none()
        && node.op == Op::Conv2dInt
        && wb == 8
        && let Some(o) = pair_order(&wv, xmax)
    {
        let permuted = WVecs {
            count: wv.count,
            k: o.len(),
            w: Box::new(|v, i| {
                let kk = o[i] as usize;
                if kk < k { (wv.w)(v, kk) } else { 0 }
            }),
        };
        group = group_len(&permuted, xmax);
        drop(permuted);
        order = group.is_some().then_some(o);
    }
    Some(Checked {
        wb,
        ab,
        k,
        group,
        weff: effective_bits(&wv),
        order,
    })
}
