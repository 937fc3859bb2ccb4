//! Rounding modes. Every rounding in qcc is named by one of these; none is implicit.

use std::fmt;
use std::str::FromStr;

/// How a real number becomes an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rounding {
    /// Nearest, ties to even (IEEE default, ONNX QuantizeLinear, QONNX `ROUND`).
    HalfEven,
    /// Nearest, ties away from zero (QONNX `HALF_UP`, C `round`).
    HalfUp,
    /// Nearest, ties toward zero (QONNX `HALF_DOWN`).
    HalfDown,
    /// Toward +infinity.
    Ceil,
    /// Toward -infinity.
    Floor,
    /// Away from zero (QONNX `UP`).
    Up,
    /// Toward zero, truncation (QONNX `DOWN`).
    Down,
}

impl Rounding {
    pub const ALL: [Rounding; 7] = [
        Rounding::HalfEven,
        Rounding::HalfUp,
        Rounding::HalfDown,
        Rounding::Ceil,
        Rounding::Floor,
        Rounding::Up,
        Rounding::Down,
    ];

    /// The text spelling.
    pub fn name(self) -> &'static str {
        match self {
            Rounding::HalfEven => "half_even",
            Rounding::HalfUp => "half_up",
            Rounding::HalfDown => "half_down",
            Rounding::Ceil => "ceil",
            Rounding::Floor => "floor",
            Rounding::Up => "up",
            Rounding::Down => "down",
        }
    }

    /// The spellings, in the order of [`Rounding::ALL`].
    pub const NAMES: [&'static str; 7] = [
        "half_even",
        "half_up",
        "half_down",
        "ceil",
        "floor",
        "up",
        "down",
    ];

    /// Parse a QONNX `rounding_mode` attribute (case-insensitive: ROUND, CEIL, FLOOR, UP,
    /// DOWN, HALF_UP, HALF_DOWN, and HALF_EVEN as a synonym of ROUND).
    pub fn from_qonnx(s: &str) -> Option<Rounding> {
        Some(match s.to_ascii_uppercase().as_str() {
            "ROUND" | "HALF_EVEN" => Rounding::HalfEven,
            "CEIL" => Rounding::Ceil,
            "FLOOR" => Rounding::Floor,
            "UP" => Rounding::Up,
            "DOWN" => Rounding::Down,
            "HALF_UP" => Rounding::HalfUp,
            "HALF_DOWN" => Rounding::HalfDown,
            _ => return None,
        })
    }

    /// Round a float (computed in the float's own precision; the result is integral).
    pub fn round_f32(self, x: f32) -> f32 {
        match self {
            Rounding::HalfEven => x.round_ties_even(),
            Rounding::HalfUp => x.round(),
            Rounding::HalfDown => {
                let f = x.trunc();
                if (x - f).abs() == 0.5 { f } else { x.round() }
            }
            Rounding::Ceil => x.ceil(),
            Rounding::Floor => x.floor(),
            Rounding::Up => {
                let t = x.trunc();
                if t == x { x } else { t + x.signum() }
            }
            Rounding::Down => x.trunc(),
        }
    }

    /// Round `n / 2^shift` exactly. A negative `shift` multiplies by `2^-shift`, saturating
    /// at the i64 range.
    pub fn shift_right(self, n: i64, shift: i32) -> i64 {
        let r = self.shift_right_wide(n as i128, shift as i64);
        r.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Round `n / 2^shift` exactly on i128, for any shift. A negative `shift` multiplies by
    /// `2^-shift`, saturating at the i128 range (far beyond any storage range the result is
    /// then clamped to).
    pub fn shift_right_wide(self, n: i128, shift: i64) -> i128 {
        if shift <= 0 {
            let k = shift.unsigned_abs();
            let sat = if n < 0 { i128::MIN } else { i128::MAX };
            return match k {
                _ if n == 0 => 0,
                0..=126 => n.checked_mul(1i128 << k).unwrap_or(sat),
                _ => sat,
            };
        }
        let s = shift.min(126) as u32;
        let floor = n >> s; // arithmetic: toward -infinity
        let rem = n - (floor << s); // 0 <= rem < 2^s
        if rem == 0 {
            return floor;
        }
        let half = 1i128 << (s - 1);
        let ceil = floor + 1;
        let away = if n < 0 { floor } else { ceil };
        let toward = if n < 0 { ceil } else { floor };
        match self {
            Rounding::Floor => floor,
            Rounding::Ceil => ceil,
            Rounding::Down => toward,
            Rounding::Up => away,
            Rounding::HalfEven | Rounding::HalfUp | Rounding::HalfDown => {
                if rem < half {
                    floor
                } else if rem > half {
                    ceil
                } else {
                    match self {
                        Rounding::HalfUp => away,
                        Rounding::HalfDown => toward,
                        _ if floor % 2 == 0 => floor,
                        _ => ceil,
                    }
                }
            }
        }
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Rounding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rounding::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown rounding mode `{s}` (expected one of {})",
                    Rounding::NAMES.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_modes() {
        let cases: [(f32, [f32; 7]); 6] = [
            // x, [half_even, half_up, half_down, ceil, floor, up, down]
            (2.5, [2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0]),
            (-2.5, [-2.0, -3.0, -2.0, -2.0, -3.0, -3.0, -2.0]),
            (3.5, [4.0, 4.0, 3.0, 4.0, 3.0, 4.0, 3.0]),
            (1.2, [1.0, 1.0, 1.0, 2.0, 1.0, 2.0, 1.0]),
            (-1.7, [-2.0, -2.0, -2.0, -1.0, -2.0, -2.0, -1.0]),
            (4.0, [4.0; 7]),
        ];
        for (x, want) in cases {
            for (r, w) in Rounding::ALL.iter().zip(want) {
                assert_eq!(r.round_f32(x), w, "{r} of {x}");
            }
        }
    }

    #[test]
    fn shift_modes_match_float_modes() {
        for n in -64i64..=64 {
            for shift in 1..4 {
                let x = n as f64 / (1 << shift) as f64;
                for r in Rounding::ALL {
                    let want = r.round_f32(x as f32) as i64;
                    assert_eq!(r.shift_right(n, shift), want, "{r} {n}>>{shift}");
                }
            }
        }
        assert_eq!(Rounding::HalfEven.shift_right(5, 0), 5);
        assert_eq!(Rounding::HalfEven.shift_right(5, -2), 20);
    }

    #[test]
    fn names_round_trip() {
        for r in Rounding::ALL {
            assert_eq!(r.name().parse::<Rounding>().unwrap(), r);
        }
        assert_eq!(Rounding::from_qonnx("round"), Some(Rounding::HalfEven));
        assert!("nearest".parse::<Rounding>().is_err());
    }
}
