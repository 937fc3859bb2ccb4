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
    let span = dilation * (k - 1) + 1;
    let padded = n + pad_begin + pad_end;
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
    if ceil_mode && (out - 1) * stride >= n + pad_begin {
        out -= 1;
    }
    Ok(out)
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
    fn windows() {
        assert_eq!(window_out(8, 3, 1, 1, 1, 1, false).unwrap(), 8);
        assert_eq!(window_out(8, 2, 2, 1, 0, 0, false).unwrap(), 4);
        assert_eq!(window_out(5, 2, 2, 1, 0, 0, false).unwrap(), 2);
        assert_eq!(window_out(5, 2, 2, 1, 0, 0, true).unwrap(), 3);
        assert_eq!(normalize_axis(-1, 4).unwrap(), 3);
        assert!(normalize_axis(4, 4).is_err());
    }
}
