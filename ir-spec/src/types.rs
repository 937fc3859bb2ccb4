//! Element types and tensor types.
//!
//! A value's type is an element type plus a static shape. Quantized element types carry
//! their storage (bits and signedness) together with the quantization parameters, so a
//! rewrite that changes a layer's bit-width changes a type, and the verifier and the
//! interpreter see the change.
//!
//! Text spelling (see SPEC.md): `f32`, `i32`, `u4`, `b1`, `q<i8, 0.1:-3>`,
//! `q<u8 narrow, axis=1, [0.1:0, 0.2:0]>`, `q<i4, axis=1, block=32, [...]>`, followed by
//! the shape in brackets: `q<i8, 0.5:0>[1,8,4,4]`, `f32[]` for a scalar.

use std::fmt;

/// Bit-widths an integer storage type may have.
pub const STORAGE_BITS: [u8; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32];

/// Integer storage: bit-width and signedness. Signed storage is two's complement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntType {
    pub bits: u8,
    pub signed: bool,
}

impl IntType {
    pub const I32: IntType = IntType {
        bits: 32,
        signed: true,
    };
    pub const I8: IntType = IntType {
        bits: 8,
        signed: true,
    };
    pub const U8: IntType = IntType {
        bits: 8,
        signed: false,
    };
    /// Booleans: `u1`, 0 false and 1 true (what comparisons give and `where` takes).
    pub const U1: IntType = IntType {
        bits: 1,
        signed: false,
    };

    pub fn new(bits: u8, signed: bool) -> Self {
        IntType { bits, signed }
    }

    /// Whether `bits` is one of [`STORAGE_BITS`].
    pub fn is_valid(self) -> bool {
        STORAGE_BITS.contains(&self.bits)
    }

    /// Smallest storable value.
    pub fn min_code(self) -> i64 {
        if self.signed {
            -(1i64 << (self.bits - 1))
        } else {
            0
        }
    }

    /// Largest storable value.
    pub fn max_code(self) -> i64 {
        if self.signed {
            (1i64 << (self.bits - 1)) - 1
        } else {
            (1i64 << self.bits) - 1
        }
    }

    /// Clamp to the storage range.
    pub fn saturate(self, v: i64) -> i64 {
        v.clamp(self.min_code(), self.max_code())
    }

    /// Wrap to the storage range (two's complement), as a store of the low bits would.
    pub fn wrap(self, v: i64) -> i64 {
        let m = 1i128 << self.bits;
        let mut r = (v as i128).rem_euclid(m);
        if self.signed && r >= m / 2 {
            r -= m;
        }
        r as i64
    }
}

impl fmt::Display for IntType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", if self.signed { 'i' } else { 'u' }, self.bits)
    }
}

/// How the scales and zero points of a quantized type are laid out.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantParams {
    /// One scale and zero point for the whole tensor.
    PerTensor { scale: f32, zero_point: i32 },
    /// One scale and zero point per index along `axis`.
    PerAxis {
        axis: usize,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
    },
    /// Blocks of `block_size` elements along `axis` share a scale and zero point. The
    /// parameter tensor has the value's shape with `ceil(D[axis] / block_size)` along
    /// `axis`, stored row-major; the last block may be shorter.
    Blocked {
        axis: usize,
        block_size: usize,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
    },
}

impl QuantParams {
    pub fn scales(&self) -> &[f32] {
        match self {
            QuantParams::PerTensor { scale, .. } => std::slice::from_ref(scale),
            QuantParams::PerAxis { scales, .. } | QuantParams::Blocked { scales, .. } => scales,
        }
    }

    pub fn zero_points(&self) -> &[i32] {
        match self {
            QuantParams::PerTensor { zero_point, .. } => std::slice::from_ref(zero_point),
            QuantParams::PerAxis { zero_points, .. } | QuantParams::Blocked { zero_points, .. } => {
                zero_points
            }
        }
    }

    pub fn axis(&self) -> Option<usize> {
        match self {
            QuantParams::PerTensor { .. } => None,
            QuantParams::PerAxis { axis, .. } | QuantParams::Blocked { axis, .. } => Some(*axis),
        }
    }

    /// The same parameters with the axis replaced (used when an op moves dimensions).
    pub fn with_axis(&self, new_axis: usize) -> QuantParams {
        let mut p = self.clone();
        match &mut p {
            QuantParams::PerTensor { .. } => {}
            QuantParams::PerAxis { axis, .. } | QuantParams::Blocked { axis, .. } => {
                *axis = new_axis
            }
        }
        p
    }

    /// Index into `scales()`/`zero_points()` for the element at multi-index `idx` of a
    /// tensor of shape `shape`.
    pub fn param_index(&self, shape: &[usize], idx: &[usize]) -> usize {
        match self {
            QuantParams::PerTensor { .. } => 0,
            QuantParams::PerAxis { axis, .. } => idx[*axis],
            QuantParams::Blocked {
                axis, block_size, ..
            } => {
                let mut flat = 0;
                for (d, (&i, &n)) in idx.iter().zip(shape).enumerate() {
                    let (i, n) = if d == *axis {
                        (i / block_size, n.div_ceil(*block_size))
                    } else {
                        (i, n)
                    };
                    flat = flat * n + i;
                }
                flat
            }
        }
    }

    /// Number of parameters these params need for a tensor of `shape`, or `None` when the
    /// axis is outside the shape.
    pub fn expected_count(&self, shape: &[usize]) -> Option<usize> {
        match self {
            QuantParams::PerTensor { .. } => Some(1),
            QuantParams::PerAxis { axis, .. } => shape.get(*axis).copied(),
            QuantParams::Blocked {
                axis, block_size, ..
            } => {
                let d = *shape.get(*axis)?;
                if *block_size == 0 {
                    return None;
                }
                Some(
                    shape
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| {
                            if i == *axis {
                                d.div_ceil(*block_size)
                            } else {
                                n
                            }
                        })
                        .product(),
                )
            }
        }
    }
}

/// A quantized integer type: storage plus the affine map to real values,
/// `real = (q - zero_point) * scale`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantType {
    pub storage: IntType,
    /// The most negative code is unused (signed: `[-2^(b-1)+1, 2^(b-1)-1]`), or the
    /// largest (unsigned: `[0, 2^b-2]`).
    pub narrow: bool,
    /// Every scale is a power of two, so requantization can be a shift.
    pub pow2: bool,
    pub params: QuantParams,
}

impl QuantType {
    pub fn per_tensor(storage: IntType, scale: f32, zero_point: i32) -> Self {
        QuantType {
            storage,
            narrow: false,
            pow2: false,
            params: QuantParams::PerTensor { scale, zero_point },
        }
    }

    /// Smallest code the type may hold (narrow range aware).
    pub fn qmin(&self) -> i64 {
        if self.narrow && self.storage.signed {
            self.storage.min_code() + 1
        } else {
            self.storage.min_code()
        }
    }

    /// Largest code the type may hold (narrow range aware).
    pub fn qmax(&self) -> i64 {
        if self.narrow && !self.storage.signed {
            self.storage.max_code() - 1
        } else {
            self.storage.max_code()
        }
    }
}

/// The element type of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum ElemType {
    /// IEEE-754 binary32.
    F32,
    /// Plain integers (accumulators, indices, bit-packed words).
    Int(IntType),
    /// Quantized integers with scale and zero point.
    Quant(QuantType),
    /// Binary values +1 / -1, stored as one bit each (bit 1 encodes -1, bit 0 encodes +1).
    Bipolar,
}

impl ElemType {
    pub const I32: ElemType = ElemType::Int(IntType::I32);
    /// Booleans (`u1`: 0 false, 1 true).
    pub const U1: ElemType = ElemType::Int(IntType::U1);

    /// Integer storage of integer-valued types (`Bipolar` is one signed bit whose codes
    /// are -1 and +1, so it has none).
    pub fn storage(&self) -> Option<IntType> {
        match self {
            ElemType::Int(t) => Some(*t),
            ElemType::Quant(q) => Some(q.storage),
            ElemType::F32 | ElemType::Bipolar => None,
        }
    }

    pub fn is_float(&self) -> bool {
        matches!(self, ElemType::F32)
    }

    /// Whether values of this type are held as integers by the interpreter.
    pub fn is_integer(&self) -> bool {
        !self.is_float()
    }

    pub fn quant(&self) -> Option<&QuantType> {
        match self {
            ElemType::Quant(q) => Some(q),
            _ => None,
        }
    }

    /// Bits one element occupies when stored packed.
    pub fn bits(&self) -> u32 {
        match self {
            ElemType::F32 => 32,
            ElemType::Int(t) => t.bits as u32,
            ElemType::Quant(q) => q.storage.bits as u32,
            ElemType::Bipolar => 1,
        }
    }

    /// Range of codes a value of this type may hold, for integer-valued types.
    pub fn code_range(&self) -> Option<(i64, i64)> {
        match self {
            ElemType::F32 => None,
            ElemType::Int(t) => Some((t.min_code(), t.max_code())),
            ElemType::Quant(q) => Some((q.qmin(), q.qmax())),
            ElemType::Bipolar => Some((-1, 1)),
        }
    }

    /// Whether `code` is a value of this type.
    pub fn admits(&self, code: i64) -> bool {
        match self {
            ElemType::Bipolar => code == 1 || code == -1,
            _ => self
                .code_range()
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&code)),
        }
    }
}

/// A tensor type: element type and static shape (empty shape = scalar).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorType {
    pub elem: ElemType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(elem: ElemType, shape: impl Into<Vec<usize>>) -> Self {
        TensorType {
            elem,
            shape: shape.into(),
        }
    }

    pub fn f32(shape: impl Into<Vec<usize>>) -> Self {
        TensorType::new(ElemType::F32, shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Writes a float so that parsing it gives back the same bits (Rust's shortest
/// round-trip formatting, which always shows a `.` or an exponent), with `nan`, `inf`
/// and `-inf` spelled out.
pub fn fmt_f32(f: &mut impl fmt::Write, x: f32) -> fmt::Result {
    if x.is_nan() {
        f.write_str("nan")
    } else if x.is_infinite() {
        f.write_str(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        write!(f, "{x:?}")
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q<{}", self.storage)?;
        if self.narrow {
            f.write_str(" narrow")?;
        }
        if self.pow2 {
            f.write_str(" pow2")?;
        }
        let pair = |f: &mut fmt::Formatter<'_>, s: f32, z: i32| -> fmt::Result {
            fmt_f32(f, s)?;
            write!(f, ":{z}")
        };
        let list = |f: &mut fmt::Formatter<'_>, s: &[f32], z: &[i32]| -> fmt::Result {
            f.write_str("[")?;
            for (i, (&s, &z)) in s.iter().zip(z).enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                pair(f, s, z)?;
            }
            f.write_str("]")
        };
        match &self.params {
            QuantParams::PerTensor { scale, zero_point } => {
                f.write_str(", ")?;
                pair(f, *scale, *zero_point)?;
            }
            QuantParams::PerAxis {
                axis,
                scales,
                zero_points,
            } => {
                write!(f, ", axis={axis}, ")?;
                list(f, scales, zero_points)?;
            }
            QuantParams::Blocked {
                axis,
                block_size,
                scales,
                zero_points,
            } => {
                write!(f, ", axis={axis}, block={block_size}, ")?;
                list(f, scales, zero_points)?;
            }
        }
        f.write_str(">")
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElemType::F32 => f.write_str("f32"),
            ElemType::Int(t) => write!(f, "{t}"),
            ElemType::Quant(q) => write!(f, "{q}"),
            ElemType::Bipolar => f.write_str("b1"),
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.elem)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_ranges() {
        assert_eq!(
            (
                IntType::new(4, true).min_code(),
                IntType::new(4, true).max_code()
            ),
            (-8, 7)
        );
        assert_eq!(
            (
                IntType::new(2, false).min_code(),
                IntType::new(2, false).max_code()
            ),
            (0, 3)
        );
        assert_eq!(IntType::I32.min_code(), i32::MIN as i64);
        assert_eq!(IntType::new(32, false).max_code(), u32::MAX as i64);
        assert_eq!(IntType::I8.wrap(130), -126);
        assert_eq!(IntType::new(4, false).wrap(-1), 15);
    }

    #[test]
    fn narrow_ranges() {
        let mut q = QuantType::per_tensor(IntType::I8, 1.0, 0);
        q.narrow = true;
        assert_eq!((q.qmin(), q.qmax()), (-127, 127));
        q.storage = IntType::U8;
        assert_eq!((q.qmin(), q.qmax()), (0, 254));
    }

    #[test]
    fn blocked_param_index() {
        let p = QuantParams::Blocked {
            axis: 1,
            block_size: 2,
            scales: vec![1.0; 6],
            zero_points: vec![0; 6],
        };
        // shape [2, 5] -> params [2, 3]
        assert_eq!(p.expected_count(&[2, 5]), Some(6));
        assert_eq!(p.param_index(&[2, 5], &[1, 4]), 5);
        assert_eq!(p.param_index(&[2, 5], &[0, 3]), 1);
    }

    #[test]
    fn display() {
        let t = TensorType::new(
            ElemType::Quant(QuantType::per_tensor(IntType::I8, 0.1, -3)),
            vec![1, 8],
        );
        assert_eq!(t.to_string(), "q<i8, 0.1:-3>[1,8]");
        assert_eq!(TensorType::f32(vec![]).to_string(), "f32[]");
    }
}
