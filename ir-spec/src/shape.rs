//! Shape arithmetic shared by the type rules, the interpreter and the compiler.

/// numpy broadcasting of two shapes (aligned at the back; 1 stretches).
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i < n - a.len() {
            1
        } else {
            a[i - (n - a.len())]
        };
        let db = if i < n - b.len() {
            1
        } else {
            b[i - (n - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(format!(
                    "shapes {a:?} and {b:?} do not broadcast (axis {i}: {da} vs {db})"
                ));
            }
        };
    }
    Ok(out)
}

/// Whether `from` broadcasts to exactly `to` (unidirectional broadcasting).
pub fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1)
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// For an output of shape `out`, the flat index into an operand of shape `from` that
/// broadcasts to it, for every output element in row-major order.
pub fn broadcast_indices(from: &[usize], out: &[usize]) -> Vec<usize> {
    let n = out.len();
    let off = n - from.len();
    let fs = strides(from);
    let mut idx = vec![0usize; n];
    let total: usize = out.iter().product();
    let mut result = Vec::with_capacity(total);
    for _ in 0..total {
        let mut flat = 0;
        for d in off..n {
            if from[d - off] != 1 {
                flat += idx[d] * fs[d - off];
            }
        }
        result.push(flat);
        for d in (0..n).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    result
}

/// Resolves a possibly negative axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Output length of a convolution or pooling window sweep:
/// `(n + pad_begin + pad_end - dilation*(k-1) - 1) / stride + 1`, rounded down, or up
/// with `ceil_mode` (a window must still start inside the input or the begin padding).
pub fn window_out(
    n: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil_mode: bool,
) -> Result<usize, String> {
    if k == 0 || stride == 0 || dilation == 0 {
        return Err("kernel, stride and dilation must be positive".into());
    }
    let overflow = || "window arithmetic overflows".to_string();
    let span = dilation
        .checked_mul(k - 1)
        .and_then(|x| x.checked_add(1))
        .ok_or_else(overflow)?;
    let padded = n
        .checked_add(pad_begin)
        .and_then(|x| x.checked_add(pad_end))
        .ok_or_else(overflow)?;
    if padded < span {
        return Err(format!(
            "window of extent {span} does not fit in padded length {padded}"
        ));
    }
    let room = padded - span;
    let mut out = if ceil_mode {
        room.div_ceil(stride) + 1
    } else {
        room / stride + 1
    };
    if ceil_mode && (out - 1) * stride >= n.saturating_add(pad_begin) {
        out -= 1;
    }
    Ok(out)
}

/// ONNX Slice along one axis of length `d`: the first index and the number of elements
/// selected by `start`, `end` (exclusive) and a non-zero `step`. Negative `start`/`end`
/// count from the back; then, for positive steps both clamp to `[0, d]`, for negative
/// steps `start` clamps to `[0, d-1]` and `end` to `[-1, d-1]`.
pub fn slice_range(start: i64, end: i64, step: i64, d: usize) -> (i64, usize) {
    let d = d as i128;
    let (step, resolve) = (step as i128, |v: i64| {
        let v = v as i128;
        if v < 0 { v + d } else { v }
    });
    let (s, e) = (resolve(start), resolve(end));
    let (s, e) = if step > 0 {
        (s.clamp(0, d), e.clamp(0, d))
    } else {
        (s.clamp(0, (d - 1).max(0)), e.clamp(-1, d - 1))
    };
    let count = if step > 0 && e > s {
        (e - s + step - 1) / step
    } else if step < 0 && s > e {
        (s - e - step - 1) / -step
    } else {
        0
    };
    (s as i64, count as usize)
}

/// The shape bookkeeping of a numpy matmul: rank-1 promotion and batch broadcasting.
pub struct MatMulGeom {
    pub out_shape: Vec<usize>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// For every output batch (row-major), the batch index into a and into b.
    pub batches: Vec<(usize, usize)>,
}

/// The geometry of `matmul` / `matmul_int` on operands of shapes `a` and `b`.
pub fn matmul_geom(a: &[usize], b: &[usize]) -> Result<MatMulGeom, String> {
    if a.is_empty() || b.is_empty() {
        return Err("matmul operands must have rank 1 or more".into());
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (ra, rb) = (a2.len(), b2.len());
    let (m, k) = (a2[ra - 2], a2[ra - 1]);
    let (kb, n) = (b2[rb - 2], b2[rb - 1]);
    if k != kb {
        return Err(format!(
            "inner dimensions differ: {a:?} x {b:?} ({k} vs {kb})"
        ));
    }
    let (ba, bb) = (&a2[..ra - 2], &b2[..rb - 2]);
    let batch = broadcast(ba, bb)?;
    let ia = broadcast_indices(ba, &batch);
    let ib = broadcast_indices(bb, &batch);
    let mut out_shape = batch;
    if a.len() > 1 {
        out_shape.push(m);
    }
    if b.len() > 1 {
        out_shape.push(n);
    }
    Ok(MatMulGeom {
        out_shape,
        m,
        k,
        n,
        batches: ia.into_iter().zip(ib).collect(),
    })
}

/// The geometry of a 2-D convolution (or of a pooling window sweep, with `m = c` and
/// `group = c`), shared by the interpreter and the backend.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub top: usize,
    pub left: usize,
    pub group: usize,
}

impl ConvGeom {
    pub fn cg(&self) -> usize {
        self.c / self.group
    }
    pub fn mg(&self) -> usize {
        self.m / self.group
    }
    /// Depth of the per-group GEMM.
    pub fn kdim(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    pub fn npix(&self) -> usize {
        self.oh * self.ow
    }
    /// Whether the patch matrix is `x` itself.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.top == 0
            && self.left == 0
            && self.oh == self.h
            && self.ow == self.w
    }
    pub fn macs(&self) -> u64 {
        (self.n * self.m * self.npix() * self.kdim()) as u64
    }

    pub fn out_shape(&self) -> Vec<usize> {
        vec![self.n, self.m, self.oh, self.ow]
    }

    /// Input row of window row `i` for output row `oy`, if inside the input.
    pub fn in_y(&self, oy: usize, i: usize) -> Option<usize> {
        (oy * self.sh + i * self.dh)
            .checked_sub(self.top)
            .filter(|&y| y < self.h)
    }

    pub fn in_x(&self, ox: usize, j: usize) -> Option<usize> {
        (ox * self.sw + j * self.dw)
            .checked_sub(self.left)
            .filter(|&x| x < self.w)
    }

    /// Output rows `[lo, hi)` for which window row `i` falls inside the input.
    pub fn rows_valid(&self, i: usize) -> (usize, usize) {
        valid_range(self.oh, self.h, self.sh, i * self.dh, self.top)
    }
    pub fn cols_valid(&self, j: usize) -> (usize, usize) {
        valid_range(self.ow, self.w, self.sw, j * self.dw, self.left)
    }
}

/// Outputs `o` in `[0, out)` with `0 <= o*s + tap - pad < len`, as a range.
pub fn valid_range(out: usize, len: usize, s: usize, tap: usize, pad: usize) -> (usize, usize) {
    let ok = |o: usize| {
        let p = o * s + tap;
        p >= pad && p - pad < len
    };
    let lo = (0..out).find(|&o| ok(o)).unwrap_or(out);
    let hi = (lo..out).find(|&o| !ok(o)).unwrap_or(out);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert!(broadcast(&[2, 3], &[4]).is_err());
        assert_eq!(broadcast(&[], &[5]).unwrap(), vec![5]);
        assert!(broadcasts_to(&[3], &[2, 3]));
        assert!(!broadcasts_to(&[2, 3], &[3]));
        assert_eq!(broadcast_indices(&[1, 2], &[2, 2]), vec![0, 1, 0, 1]);
        assert_eq!(broadcast_indices(&[2, 1], &[2, 2]), vec![0, 0, 1, 1]);
    }

    #[test]
    fn slices() {
        assert_eq!(slice_range(1, 3, 1, 5), (1, 2));
        assert_eq!(slice_range(-1, -6, -1, 5), (4, 5));
        // ONNX: start -100 clamps to 0 for negative steps, end -200 to -1: one element.
        assert_eq!(slice_range(-100, -200, -1, 10), (0, 1));
        assert_eq!(slice_range(0, 100, 3, 10), (0, 4));
        assert_eq!(slice_range(5, 2, 1, 10).1, 0);
    }

    #[test]
    fn windows() {
        assert_eq!(window_out(8, 3, 1, 1, 1, 1, false).unwrap(), 8);
        assert_eq!(window_out(8, 2, 2, 1, 0, 0, false).unwrap(), 4);
        assert_eq!(window_out(5, 2, 2, 1, 0, 0, false).unwrap(), 2);
        assert_eq!(window_out(5, 2, 2, 1, 0, 0, true).unwrap(), 3);
        assert_eq!(normalize_axis(-1, 4).unwrap(), 3);
        assert!(normalize_axis(4, 4).is_err());
    }
}

/// How a `resize` output coordinate maps to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeCoord {
    HalfPixel,
    PytorchHalfPixel,
    Asymmetric,
    AlignCorners,
}

impl ResizeCoord {
    fn map(self, o: usize, scale: f64, len_in: usize, len_out: usize) -> f64 {
        let o = o as f64;
        match self {
            ResizeCoord::HalfPixel => (o + 0.5) / scale - 0.5,
            ResizeCoord::PytorchHalfPixel if len_out == 1 => 0.0,
            ResizeCoord::PytorchHalfPixel => (o + 0.5) / scale - 0.5,
            ResizeCoord::Asymmetric => o / scale,
            ResizeCoord::AlignCorners if len_out == 1 => 0.0,
            ResizeCoord::AlignCorners => o * (len_in as f64 - 1.0) / (len_out as f64 - 1.0),
        }
    }
}

/// A `resize` node's sampling, shared by the interpreter and the backend: per axis and
/// output position, the input positions and their weights (one tap of weight 1 for
/// nearest, one or two for linear).
#[derive(Clone, Debug)]
pub struct ResizePlan {
    pub linear: bool,
    pub sizes: Vec<usize>,
    pub taps: Vec<Vec<Vec<(usize, f64)>>>,
}

/// Reads and checks a `resize` node's attributes for an operand of `shape`.
pub fn resize_plan(a: &crate::Attrs<'_>, shape: &[usize]) -> Result<ResizePlan, String> {
    let rank = shape.len();
    let linear = match a.word("mode")?.as_str() {
        "nearest" => false,
        "linear" => true,
        m => return Err(format!("unknown mode `{m}`")),
    };
    let coord = match a.word("coordinate_transformation_mode")?.as_str() {
        "half_pixel" => ResizeCoord::HalfPixel,
        "pytorch_half_pixel" => ResizeCoord::PytorchHalfPixel,
        "asymmetric" => ResizeCoord::Asymmetric,
        "align_corners" => ResizeCoord::AlignCorners,
        m => return Err(format!("unknown coordinate_transformation_mode `{m}`")),
    };
    let nearest = a.word("nearest_mode")?;
    if !["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"].contains(&nearest.as_str()) {
        return Err(format!("unknown nearest_mode `{nearest}`"));
    }
    let scales = a.floats("scales")?;
    let sizes = a.usizes("sizes")?;
    if scales.len() != rank || sizes.len() != rank {
        return Err(format!(
            "scales and sizes must have {rank} entries, found {} and {}",
            scales.len(),
            sizes.len()
        ));
    }
    if let Some(s) = scales.iter().find(|&&s| !(s > 0.0 && s.is_finite())) {
        return Err(format!("scales must be positive and finite, found {s}"));
    }
    if shape.iter().zip(&sizes).any(|(&i, &o)| i == 0 && o > 0) {
        return Err(format!(
            "cannot resize an empty axis of {shape:?} to {sizes:?}"
        ));
    }
    let taps = (0..rank)
        .map(|d| {
            let (len_in, len_out) = (shape[d], sizes[d]);
            let last = len_in as f64 - 1.0;
            (0..len_out)
                .map(|o| {
                    let c = coord.map(o, scales[d] as f64, len_in, len_out);
                    if linear {
                        let c = c.clamp(0.0, last);
                        let lo = c.floor();
                        let frac = c - lo;
                        let i0 = lo as usize;
                        let i1 = (i0 + 1).min(len_in - 1);
                        if frac == 0.0 {
                            vec![(i0, 1.0)]
                        } else {
                            vec![(i0, 1.0 - frac), (i1, frac)]
                        }
                    } else {
                        let r = match nearest.as_str() {
                            "round_prefer_ceil" => (c + 0.5).floor(),
                            "floor" => c.floor(),
                            "ceil" => c.ceil(),
                            // round_prefer_floor
                            _ => (c - 0.5).ceil(),
                        };
                        vec![(r.clamp(0.0, last) as usize, 1.0)]
                    }
                })
                .collect()
        })
        .collect();
    Ok(ResizePlan {
        linear,
        sizes,
        taps,
    })
}
