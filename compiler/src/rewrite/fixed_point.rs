//! Real scales as fixed-point multipliers: `r ~= multiplier * 2^-shift`.

/// The `(multiplier, shift)` of `requantize` closest to the real ratio `r > 0`: the
/// multiplier has 31 significant bits (in `[2^30, 2^31)`), rounded half-even, so the
/// relative error is at most 2^-31. Shifts stay in `requantize`'s `-31..=62`: a ratio
/// below 2^-32 loses low multiplier bits (down to multiplier 0 for ratios below 2^-63);
/// a ratio of 2^62 or more has no representation (`None`).
pub fn multiplier(r: f64) -> Option<(i64, i64)> {
    if !(r.is_finite() && r > 0.0) {
        return None;
    }
    // r = m * 2^e with m in [0.5, 1).
    let mut e = r.log2().floor() as i32 + 1;
    let mut m = r / 2f64.powi(e);
    while m >= 1.0 {
        m /= 2.0;
        e += 1;
    }
    while m < 0.5 {
        m *= 2.0;
        e -= 1;
    }
    let mut mult = (m * 2f64.powi(31)).round_ties_even() as i64;
    if mult == 1 << 31 {
        mult = 1 << 30;
        e += 1;
    }
    let shift = 31 - e as i64;
    if shift < -31 {
        return None;
    }
    if shift > 62 {
        let mult = (r * 2f64.powi(62)).round_ties_even() as i64;
        return Some((mult, 62));
    }
    Some((mult, shift))
}

/// The real value of `(multiplier, shift)`.
pub fn real(multiplier: i64, shift: i64) -> f64 {
    multiplier as f64 * 2f64.powi(-shift as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_are_close() {
        for &r in &[
            1.0,
            0.5,
            0.75,
            1e-3,
            3.3e-5,
            123.456,
            2f64.powi(-40),
            0.999_999_9,
        ] {
            let (m, s) = multiplier(r).unwrap();
            assert!((1i64 << 30..1i64 << 31).contains(&m) || s == 62, "{r}: {m}");
            assert!((real(m, s) - r).abs() <= r * 2f64.powi(-31), "{r}: {m} {s}");
        }
        assert_eq!(multiplier(0.25), Some((1 << 30, 32)));
        assert_eq!(multiplier(0.0), None);
        assert_eq!(multiplier(2f64.powi(70)), None);
    }
}
