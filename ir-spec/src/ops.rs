//! The op table: every op of the IR is declared here once.
//!
//! An entry gives the op's text name, a one-line summary, a description of its exact
//! semantics (which is SPEC.md's op section, generated from this table), its operands,
//! its attributes with their kinds and defaults, and its traits. The [`Op`] enum, the
//! printer, the parser, the verifier's operand and attribute checks and SPEC.md follow
//! from the table. Type rules (`typing.rs`) and the interpreter (`interp/`) match over
//! [`Op`] exhaustively, so a new op makes the compiler point at every place that must
//! learn it.

use std::collections::BTreeMap;

use crate::module::Attr;
use crate::rounding::Rounding;

/// How many values an operand slot takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly one.
    One,
    /// Zero or one; only trailing operands may be optional.
    Optional,
    /// One or more; only the last operand may be variadic.
    Variadic,
}

/// An operand slot of an op.
#[derive(Clone, Copy, Debug)]
pub struct OperandSpec {
    pub name: &'static str,
    pub arity: Arity,
    pub doc: &'static str,
}

/// The kind of value an attribute holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttrKind {
    Int,
    Float,
    Bool,
    Ints,
    Floats,
    /// One word of a fixed set.
    Enum(&'static [&'static str]),
}

/// What happens when an attribute is absent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttrDefault {
    /// It must be given.
    Required,
    /// It may be absent, and absence means something (the op's description says what).
    Optional,
    Int(i64),
    Float(f32),
    Bool(bool),
    Ints(&'static [i64]),
    Enum(&'static str),
}

impl AttrDefault {
    /// The attribute value this default stands for, if it is a value.
    pub fn value(self) -> Option<Attr> {
        Some(match self {
            AttrDefault::Required | AttrDefault::Optional => return None,
            AttrDefault::Int(i) => Attr::Int(i),
            AttrDefault::Float(f) => Attr::Float(f),
            AttrDefault::Bool(b) => Attr::Bool(b),
            AttrDefault::Ints(v) => Attr::Ints(v.to_vec()),
            AttrDefault::Enum(s) => Attr::Enum(s.to_string()),
        })
    }
}

/// An attribute of an op.
#[derive(Clone, Copy, Debug)]
pub struct AttrSpec {
    pub name: &'static str,
    pub kind: AttrKind,
    pub default: AttrDefault,
    pub doc: &'static str,
}

/// Properties passes may rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trait {
    /// Applies independently to every element; result shape = operand shape.
    Elementwise,
    /// Operands broadcast against each other (numpy rules).
    Broadcast,
    /// Moves or selects elements without changing them; any element type.
    DataMovement,
    /// Works on integer codes (integer or quantized operands).
    Integer,
    /// Part of the quantization machinery (quantize, dequantize, fake-quant, requantize).
    Quantization,
}

impl Trait {
    pub fn name(self) -> &'static str {
        match self {
            Trait::Elementwise => "elementwise",
            Trait::Broadcast => "broadcast",
            Trait::DataMovement => "data-movement",
            Trait::Integer => "integer",
            Trait::Quantization => "quantization",
        }
    }
}

/// Everything the table says about one op.
#[derive(Debug)]
pub struct OpInfo {
    pub name: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    pub operands: &'static [OperandSpec],
    pub attrs: &'static [AttrSpec],
    pub traits: &'static [Trait],
}

impl OpInfo {
    pub fn attr(&self, name: &str) -> Option<&'static AttrSpec> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// The smallest and largest operand counts (`None` = unbounded).
    pub fn operand_count_range(&self) -> (usize, Option<usize>) {
        let min = self
            .operands
            .iter()
            .filter(|o| o.arity != Arity::Optional)
            .count();
        let max = if self.operands.iter().any(|o| o.arity == Arity::Variadic) {
            None
        } else {
            Some(self.operands.len())
        };
        (min, max)
    }

    pub fn has_trait(&self, t: Trait) -> bool {
        self.traits.contains(&t)
    }
}

const fn one(name: &'static str, doc: &'static str) -> OperandSpec {
    OperandSpec {
        name,
        arity: Arity::One,
        doc,
    }
}
const fn opt(name: &'static str, doc: &'static str) -> OperandSpec {
    OperandSpec {
        name,
        arity: Arity::Optional,
        doc,
    }
}
const fn var(name: &'static str, doc: &'static str) -> OperandSpec {
    OperandSpec {
        name,
        arity: Arity::Variadic,
        doc,
    }
}
const fn attr(
    name: &'static str,
    kind: AttrKind,
    default: AttrDefault,
    doc: &'static str,
) -> AttrSpec {
    AttrSpec {
        name,
        kind,
        default,
        doc,
    }
}

const ROUNDING: AttrKind = AttrKind::Enum(&Rounding::NAMES);

const STRIDES: AttrSpec = attr(
    "strides",
    AttrKind::Ints,
    AttrDefault::Ints(&[1, 1]),
    "step along H and W",
);
const PADS: AttrSpec = attr(
    "pads",
    AttrKind::Ints,
    AttrDefault::Ints(&[0, 0, 0, 0]),
    "padding [top, left, bottom, right]",
);
const DILATIONS: AttrSpec = attr(
    "dilations",
    AttrKind::Ints,
    AttrDefault::Ints(&[1, 1]),
    "kernel dilation along H and W",
);
const GROUP: AttrSpec = attr(
    "group",
    AttrKind::Int,
    AttrDefault::Int(1),
    "number of groups; C and M are divisible by it",
);
const KERNEL: AttrSpec = attr(
    "kernel",
    AttrKind::Ints,
    AttrDefault::Required,
    "window [kh, kw]",
);
const CEIL_MODE: AttrSpec = attr(
    "ceil_mode",
    AttrKind::Bool,
    AttrDefault::Bool(false),
    "round the output size up instead of down",
);

const UNARY_X: &[OperandSpec] = &[one("x", "f32 tensor")];
const BINARY: &[OperandSpec] = &[one("a", "f32 tensor"), one("b", "f32 tensor")];
const BINARY_NUM: &[OperandSpec] = &[
    one("a", "f32 tensor, or a plain integer tensor"),
    one("b", "tensor of a's element type"),
];
const COMPARE: &[OperandSpec] = &[
    one("a", "f32 or integer-valued tensor (quantized: per tensor)"),
    one("b", "tensor of a's element type"),
];
const LOGIC: &[OperandSpec] = &[one("a", "u1 tensor"), one("b", "u1 tensor")];
const ARG_X: &[OperandSpec] = &[one(
    "x",
    "f32 or integer-valued tensor (quantized: per tensor)",
)];
const AXIS0: AttrSpec = attr(
    "axis",
    AttrKind::Int,
    AttrDefault::Int(0),
    "the axis (negative counts from the back)",
);
const KEEPDIMS: AttrSpec = attr(
    "keepdims",
    AttrKind::Bool,
    AttrDefault::Bool(true),
    "keep the axis as size 1",
);
const TOPK_AXIS: AttrSpec = attr(
    "axis",
    AttrKind::Int,
    AttrDefault::Int(-1),
    "the axis (negative counts from the back)",
);
const TOPK_K: AttrSpec = attr(
    "k",
    AttrKind::Int,
    AttrDefault::Required,
    "how many elements",
);
const TOPK_LARGEST: AttrSpec = attr(
    "largest",
    AttrKind::Bool,
    AttrDefault::Bool(true),
    "the largest elements (else the smallest)",
);
const CONV_OPERANDS: &[OperandSpec] = &[
    one("x", "input [N, C, H, W]"),
    one("w", "weights [M, C/group, kh, kw]"),
    opt("bias", "bias [M]"),
];

macro_rules! op_table {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $name:literal, $summary:literal,
            operands: $operands:expr,
            attrs: [$($attr:expr),* $(,)?],
            traits: [$($tr:ident),* $(,)?];
    )*) => {
        /// An operation of the IR. See the op table in `ops.rs` and SPEC.md.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Op {
            /// Every op, in table order.
            pub const ALL: &'static [Op] = &[$(Op::$variant),*];

            /// The op's table entry.
            pub fn info(self) -> &'static OpInfo {
                match self {
                    $(Op::$variant => {
                        static INFO: OpInfo = OpInfo {
                            name: $name,
                            summary: $summary,
                            description: concat!($($doc, "\n"),*),
                            operands: $operands,
                            attrs: &[$($attr),*],
                            traits: &[$(Trait::$tr),*],
                        };
                        &INFO
                    })*
                }
            }
        }
    };
}

impl Op {
    /// The text name (`conv2d`, `requantize`, ...).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Looks an op up by its text name.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.name() == name)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

op_table! {
    /// Cross-correlation of `x` [N, C, H, W] with `w` [M, C/group, kh, kw], plus `bias`.
    /// Output [N, M, OH, OW] with `OH = floor((H + top + bottom - dh*(kh-1) - 1) / sh) + 1`
    /// (likewise OW). Padded positions read 0. Accumulation is exact (f64), rounded once
    /// to f32.
    Conv2d = "conv2d", "2-D convolution (NCHW, OIHW weights)",
        operands: CONV_OPERANDS,
        attrs: [STRIDES, PADS, DILATIONS, GROUP],
        traits: [];

    /// The adjoint of conv2d (ONNX ConvTranspose): `w` is [C, M/group, kh, kw]; each input
    /// pixel scatters `x * w` into the output at `(ih*sh - top + i*dh, iw*sw - left + j*dw)`.
    /// Output size `sh*(H-1) + output_padding + dh*(kh-1) + 1 - top - bottom`.
    ConvTranspose2d = "conv_transpose2d", "2-D transposed convolution",
        operands: &[one("x", "input [N, C, H, W]"), one("w", "weights [C, M/group, kh, kw]"), opt("bias", "bias [M]")],
        attrs: [STRIDES, PADS, DILATIONS, GROUP,
            attr("output_padding", AttrKind::Ints, AttrDefault::Ints(&[0, 0]), "extra rows/columns at the bottom/right")],
        traits: [];

    /// numpy `matmul`: rank-1 operands are promoted (and the added dimension removed
    /// afterwards), batch dimensions broadcast. Exact accumulation rounded once to f32.
    MatMul = "matmul", "matrix product with batch broadcasting",
        operands: BINARY,
        attrs: [],
        traits: [];

    /// `alpha * A' B' + beta * C` with `A' = trans_a ? A^T : A` (rank 2), likewise B', and
    /// `C` broadcast to [M, N].
    Gemm = "gemm", "general matrix multiply with optional transposes and bias",
        operands: &[one("a", "[M, K] or [K, M]"), one("b", "[K, N] or [N, K]"), opt("c", "bias broadcastable to [M, N]")],
        attrs: [
            attr("alpha", AttrKind::Float, AttrDefault::Float(1.0), "scale of the product"),
            attr("beta", AttrKind::Float, AttrDefault::Float(1.0), "scale of C"),
            attr("trans_a", AttrKind::Bool, AttrDefault::Bool(false), "transpose A"),
            attr("trans_b", AttrKind::Bool, AttrDefault::Bool(false), "transpose B"),
        ],
        traits: [];

    /// `a + b`, broadcasting. On f32 operands, IEEE addition. On two operands of one plain
    /// integer type (`i32`, `i16`, ...; not quantized, not `b1`), the exact sum wrapped to
    /// that type's storage (two's complement), which is also the result type. A quantized
    /// add is written with `requantize` around it: each operand rescaled to a common finer
    /// scale in `i32`, added, and requantized to the result's type.
    Add = "add", "elementwise addition (f32, or wrapping on plain integers)", operands: BINARY_NUM, attrs: [], traits: [Elementwise, Broadcast];
    /// `a - b`, broadcasting; on plain integers as `add` (the exact difference, wrapped).
    Sub = "sub", "elementwise subtraction (f32, or wrapping on plain integers)", operands: BINARY_NUM, attrs: [], traits: [Elementwise, Broadcast];
    /// `a * b`, broadcasting; on plain integers as `add` (the exact product, wrapped).
    Mul = "mul", "elementwise multiplication (f32, or wrapping on plain integers)", operands: BINARY_NUM, attrs: [], traits: [Elementwise, Broadcast];
    /// `a / b` (IEEE), broadcasting.
    Div = "div", "elementwise division", operands: BINARY, attrs: [], traits: [Elementwise, Broadcast];
    /// `a ^ b` (`powf`), broadcasting.
    Pow = "pow", "elementwise power", operands: BINARY, attrs: [], traits: [Elementwise, Broadcast];
    /// Square root (NaN below zero).
    Sqrt = "sqrt", "elementwise square root", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// `e^x`.
    Exp = "exp", "elementwise exponential", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// `max(x, 0)`.
    Relu = "relu", "rectified linear unit", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// `min(max(x, min), max)`; an absent bound does not clamp. NaN stays NaN.
    Clip = "clip", "clamp to an interval",
        operands: UNARY_X,
        attrs: [
            attr("min", AttrKind::Float, AttrDefault::Optional, "lower bound"),
            attr("max", AttrKind::Float, AttrDefault::Optional, "upper bound"),
        ],
        traits: [Elementwise];
    /// `x >= 0 ? x : alpha * x`.
    LeakyRelu = "leaky_relu", "leaky rectified linear unit",
        operands: UNARY_X,
        attrs: [attr("alpha", AttrKind::Float, AttrDefault::Float(0.01), "slope below zero")],
        traits: [Elementwise];
    /// `1 / (1 + e^-x)`.
    Sigmoid = "sigmoid", "logistic function", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid = "hard_sigmoid", "piecewise-linear sigmoid",
        operands: UNARY_X,
        attrs: [
            attr("alpha", AttrKind::Float, AttrDefault::Float(0.2), "slope"),
            attr("beta", AttrKind::Float, AttrDefault::Float(0.5), "offset"),
        ],
        traits: [Elementwise];
    /// `x * max(0, min(1, x / 6 + 0.5))`.
    HardSwish = "hard_swish", "piecewise-linear swish", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// `x * (1 / (1 + e^-x))`: x times its sigmoid, computed as written.
    Silu = "silu", "sigmoid-weighted linear unit (swish)", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// `e^(x - max) / sum(e^(x - max))` along `axis` (negative counts from the back).
    Softmax = "softmax", "softmax along one axis",
        operands: UNARY_X,
        attrs: [attr("axis", AttrKind::Int, AttrDefault::Int(-1), "the normalised axis")],
        traits: [];
    /// ONNX Sign: -1 below zero, 0 at zero, +1 above, NaN stays NaN. (For +-1
    /// binarization, see `binarize`.)
    Sign = "sign", "sign of each element (-1, 0, +1)", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// `|x|`: the sign bit cleared (NaN stays NaN).
    Abs = "abs", "absolute value", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// `-x`: the sign bit flipped.
    Neg = "neg", "negation", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// The largest integer not above `x`; integers (and +-0, +-inf) and NaN are unchanged,
    /// and the sign of zero is kept (`floor(-0.0) = -0.0`).
    Floor = "floor", "round toward minus infinity", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// The smallest integer not below `x`; `ceil(-0.5) = -0.0`; otherwise as `floor`.
    Ceil = "ceil", "round toward plus infinity", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// The nearest integer, ties to even (`round(2.5) = 2`, `round(-0.5) = -0.0`);
    /// otherwise as `floor`.
    Round = "round", "round to nearest, ties to even", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// Natural logarithm: `-inf` at +-0, NaN below zero, `+inf` at `+inf`.
    Log = "log", "natural logarithm", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// Hyperbolic tangent.
    Tanh = "tanh", "hyperbolic tangent", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// The error function `2/sqrt(pi) * integral_0^x e^(-t^2) dt`.
    Erf = "erf", "error function", operands: UNARY_X, attrs: [], traits: [Elementwise];
    /// `max(a, b)`, broadcasting: NaN when either is NaN, and `max(-0.0, +0.0) = +0.0`.
    /// On integer-valued operands of one element type (plain integers, `b1`, per-tensor
    /// quantized types), the larger code, which is the larger value (one scale and zero
    /// point); the result has that type.
    Max = "max", "elementwise maximum", operands: COMPARE, attrs: [], traits: [Elementwise, Broadcast];
    /// `min(a, b)`, broadcasting: NaN when either is NaN, and `min(-0.0, +0.0) = -0.0`.
    /// On integer-valued operands, the smaller code, as `max`.
    Min = "min", "elementwise minimum", operands: COMPARE, attrs: [], traits: [Elementwise, Broadcast];
    /// `a == b`, broadcasting, as a boolean `u1` (1 true, 0 false). f32 operands compare
    /// as IEEE values: NaN equals nothing, `-0.0 == +0.0`. Integer-valued operands (one
    /// element type for both; quantized types per tensor) compare their codes, which
    /// compares quantized values as their real values (one scale and zero point).
    Equal = "equal", "elementwise equality (boolean u1 result)", operands: COMPARE, attrs: [], traits: [Elementwise, Broadcast];
    /// `a < b`, broadcasting, as a boolean `u1`; operands and NaN as `equal` (a comparison
    /// with NaN is false). ONNX Greater(a, b) is `less(b, a)`.
    Less = "less", "elementwise less-than (boolean u1 result)", operands: COMPARE, attrs: [], traits: [Elementwise, Broadcast];
    /// `a <= b`, broadcasting, as a boolean `u1`; operands and NaN as `equal`. ONNX
    /// GreaterOrEqual(a, b) is `less_or_equal(b, a)`.
    LessOrEqual = "less_or_equal", "elementwise less-or-equal (boolean u1 result)", operands: COMPARE, attrs: [], traits: [Elementwise, Broadcast];
    /// Logical not of a boolean `u1`: `1 - x`.
    Not = "not", "logical not", operands: &[one("x", "u1 tensor")], attrs: [], traits: [Elementwise];
    /// Logical and of two boolean `u1` tensors, broadcasting.
    And = "and", "logical and", operands: LOGIC, attrs: [], traits: [Elementwise, Broadcast];
    /// Logical or of two boolean `u1` tensors, broadcasting.
    Or = "or", "logical or", operands: LOGIC, attrs: [], traits: [Elementwise, Broadcast];
    /// Logical exclusive or of two boolean `u1` tensors, broadcasting.
    Xor = "xor", "logical exclusive or", operands: LOGIC, attrs: [], traits: [Elementwise, Broadcast];
    /// `cond ? a : b` elementwise; the three operands broadcast together. `cond` is a
    /// boolean `u1`; `a` and `b` have one element type (any; quantized types per tensor),
    /// which is the result's. Elements are copied unchanged (NaN payloads and signed
    /// zeros kept).
    Where = "where", "select by a boolean condition",
        operands: &[one("cond", "u1 tensor"), one("a", "any tensor (quantized: per tensor)"), one("b", "tensor of a's element type")],
        attrs: [],
        traits: [Elementwise, Broadcast];
    /// Inference batch normalisation over axis 1:
    /// `(x - mean[c]) / sqrt(var[c] + epsilon) * scale[c] + bias[c]`.
    BatchNorm = "batch_norm", "batch normalisation with fixed statistics",
        operands: &[one("x", "[N, C, ...]"), one("scale", "[C]"), one("bias", "[C]"), one("mean", "[C]"), one("var", "[C]")],
        attrs: [attr("epsilon", AttrKind::Float, AttrDefault::Float(1e-5), "added to the variance")],
        traits: [];
    /// Maximum over each window of `x` [N, C, H, W]; padded positions are ignored. Any
    /// element type: integer-valued types compare codes, which orders quantized values
    /// as their real values (scales are positive). Output size as conv2d, with
    /// `ceil_mode` rounding up (a window must start inside the input or left padding).
    MaxPool = "max_pool", "2-D max pooling",
        operands: &[one("x", "[N, C, H, W]")],
        attrs: [KERNEL, STRIDES, PADS, DILATIONS, CEIL_MODE],
        traits: [DataMovement];
    /// Mean over each window of `x` [N, C, H, W]. Padded positions count in the divisor
    /// only with `count_include_pad`; positions past the padding (from `ceil_mode`) never.
    AvgPool = "avg_pool", "2-D average pooling",
        operands: &[one("x", "[N, C, H, W]")],
        attrs: [KERNEL, STRIDES, PADS, CEIL_MODE,
            attr("count_include_pad", AttrKind::Bool, AttrDefault::Bool(false), "padded positions count in the divisor")],
        traits: [];
    /// Mean over all axes after the first two; those axes become 1.
    GlobalAvgPool = "global_avg_pool", "mean over the spatial axes",
        operands: &[one("x", "[N, C, ...]")],
        attrs: [],
        traits: [];
    /// Mean over `axes` (empty = every axis), kept as size 1 with `keepdims`.
    ReduceMean = "reduce_mean", "mean over axes",
        operands: UNARY_X,
        attrs: [
            attr("axes", AttrKind::Ints, AttrDefault::Ints(&[]), "reduced axes (negative counts from the back); empty = all"),
            attr("keepdims", AttrKind::Bool, AttrDefault::Bool(true), "keep reduced axes as size 1"),
        ],
        traits: [];
    /// Sum over `axes` (empty = every axis) accumulated in f64 and rounded once; 0 for an
    /// empty reduction.
    ReduceSum = "reduce_sum", "sum over axes",
        operands: UNARY_X,
        attrs: [
            attr("axes", AttrKind::Ints, AttrDefault::Ints(&[]), "reduced axes (negative counts from the back); empty = all"),
            attr("keepdims", AttrKind::Bool, AttrDefault::Bool(true), "keep reduced axes as size 1"),
        ],
        traits: [];
    /// Maximum over `axes` (empty = every axis): NaN if any is NaN; `-inf` for an empty
    /// reduction.
    ReduceMax = "reduce_max", "maximum over axes",
        operands: UNARY_X,
        attrs: [
            attr("axes", AttrKind::Ints, AttrDefault::Ints(&[]), "reduced axes (negative counts from the back); empty = all"),
            attr("keepdims", AttrKind::Bool, AttrDefault::Bool(true), "keep reduced axes as size 1"),
        ],
        traits: [];
    /// Minimum over `axes` (empty = every axis): NaN if any is NaN; `+inf` for an empty
    /// reduction.
    ReduceMin = "reduce_min", "minimum over axes",
        operands: UNARY_X,
        attrs: [
            attr("axes", AttrKind::Ints, AttrDefault::Ints(&[]), "reduced axes (negative counts from the back); empty = all"),
            attr("keepdims", AttrKind::Bool, AttrDefault::Bool(true), "keep reduced axes as size 1"),
        ],
        traits: [];
    /// Product over `axes` (empty = every axis) accumulated in f64 in row-major order and
    /// rounded once; 1 for an empty reduction.
    ReduceProd = "reduce_prod", "product over axes",
        operands: UNARY_X,
        attrs: [
            attr("axes", AttrKind::Ints, AttrDefault::Ints(&[]), "reduced axes (negative counts from the back); empty = all"),
            attr("keepdims", AttrKind::Bool, AttrDefault::Bool(true), "keep reduced axes as size 1"),
        ],
        traits: [];
    /// The index along `axis` of the largest element, as `i32` (ONNX gives int64; axes
    /// are shorter than 2^31): the first such index, or the last with
    /// `select_last_index`. f32 elements compare as values with NaN above every number
    /// (numpy's argmax: a NaN wins), `-0.0` equal to `+0.0`; integer-valued elements
    /// compare their codes (quantized types per tensor). The axis is kept as size 1
    /// with `keepdims`, else removed; it must not be empty.
    ArgMax = "arg_max", "index of the maximum along an axis",
        operands: ARG_X,
        attrs: [AXIS0, KEEPDIMS,
            attr("select_last_index", AttrKind::Bool, AttrDefault::Bool(false), "the last index of a tie instead of the first")],
        traits: [];
    /// The index along `axis` of the smallest element, as `arg_max` otherwise; NaN is
    /// below every number here (numpy's argmin: a NaN wins too).
    ArgMin = "arg_min", "index of the minimum along an axis",
        operands: ARG_X,
        attrs: [AXIS0, KEEPDIMS,
            attr("select_last_index", AttrKind::Bool, AttrDefault::Bool(false), "the last index of a tie instead of the first")],
        traits: [];
    /// The `k` largest (`largest`) or smallest elements along `axis`, in order: by value,
    /// descending for largest and ascending for smallest, ties by ascending index. f32
    /// values rank NaN above `+inf` (NaNs come first with `largest`, last without) and
    /// `-0.0` equal to `+0.0`; integer-valued elements rank by code (quantized types per
    /// tensor). The result has x's element type and `k` along `axis` (`0 <= k <=` the
    /// axis length). ONNX TopK's `sorted = 0` allows any order; this one is used.
    TopK = "top_k", "the k largest or smallest elements along an axis",
        operands: ARG_X,
        attrs: [TOPK_AXIS, TOPK_K, TOPK_LARGEST],
        traits: [];
    /// The indices along `axis` (as `i32`) of the elements `top_k` gives with the same
    /// attributes, in its order.
    TopKIndices = "top_k_indices", "indices of the k largest or smallest elements",
        operands: ARG_X,
        attrs: [TOPK_AXIS, TOPK_K, TOPK_LARGEST],
        traits: [];
    /// One-hot mask: the result has `indices`' shape with a new axis of length `depth`
    /// inserted at `axis` (negative counts from the back of the result), and is 1 (`u1`)
    /// where the position along that axis equals the index at the other positions.
    /// Negative indices count from the back (`index + depth`); an index outside
    /// `[-depth, depth)` gives all zeros. (ONNX OneHot's on and off values are applied
    /// with `where`.)
    OneHot = "one_hot", "one-hot boolean mask of integer indices",
        operands: &[one("indices", "plain integer tensor")],
        attrs: [
            attr("depth", AttrKind::Int, AttrDefault::Required, "length of the new axis (positive)"),
            attr("axis", AttrKind::Int, AttrDefault::Int(-1), "position of the new axis in the result (negative counts from the back)"),
        ],
        traits: [];
    /// ONNX Resize (nearest or n-linear) to the shape `sizes`. Output coordinate `o` of an
    /// axis maps to input coordinate by `coordinate_transformation_mode`, with `scale` the
    /// axis's entry of `scales`: half_pixel `(o + 0.5) / scale - 0.5`, pytorch_half_pixel
    /// the same but 0 when the output length is 1, asymmetric `o / scale`, align_corners
    /// `o * (in - 1) / (out - 1)` (0 when out = 1). Nearest rounds the coordinate by
    /// `nearest_mode` and clamps it into the input; linear interpolates between the two
    /// neighbours of the clamped coordinate.
    Resize = "resize", "nearest or linear resampling",
        operands: &[one("x", "any tensor for nearest; f32 for linear")],
        attrs: [
            attr("mode", AttrKind::Enum(&["nearest", "linear"]), AttrDefault::Enum("nearest"), "interpolation"),
            attr("coordinate_transformation_mode", AttrKind::Enum(&["half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners"]), AttrDefault::Enum("half_pixel"), "output-to-input coordinate map"),
            attr("nearest_mode", AttrKind::Enum(&["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]), AttrDefault::Enum("round_prefer_floor"), "rounding of nearest"),
            attr("scales", AttrKind::Floats, AttrDefault::Required, "scale per axis (output over input)"),
            attr("sizes", AttrKind::Ints, AttrDefault::Required, "output shape"),
        ],
        traits: [];
    /// Same elements in row-major order, new shape `shape` (fully specified). A per-axis
    /// quantized operand keeps its axis only if the dimensions up to it are unchanged.
    Reshape = "reshape", "change the shape",
        operands: &[one("x", "any tensor")],
        attrs: [attr("shape", AttrKind::Ints, AttrDefault::Required, "the new shape")],
        traits: [DataMovement];
    /// Reshape to 2-D: [prod(d[..axis]), prod(d[axis..])].
    Flatten = "flatten", "reshape to two dimensions",
        operands: &[one("x", "any tensor")],
        attrs: [attr("axis", AttrKind::Int, AttrDefault::Int(1), "first axis of the second dimension (negative counts from the back)")],
        traits: [DataMovement];
    /// Output axis i is input axis `perm[i]`.
    Transpose = "transpose", "permute axes",
        operands: &[one("x", "any tensor")],
        attrs: [attr("perm", AttrKind::Ints, AttrDefault::Required, "permutation of the axes")],
        traits: [DataMovement];
    /// Join along `axis`; every operand has the same element type and the same other
    /// dimensions.
    Concat = "concat", "join tensors along an axis",
        operands: &[var("xs", "tensors of one element type")],
        attrs: [attr("axis", AttrKind::Int, AttrDefault::Required, "joined axis (negative counts from the back)")],
        traits: [DataMovement];
    /// Pad (or crop, for negative amounts) each axis: `pads` holds the begin amounts of
    /// every axis, then the end amounts. Negative amounts crop first; the positive amounts
    /// then pad the cropped tensor (as ONNX Runtime does). `constant` fills with `value` (for integer-valued
    /// types, `value` is a code and must be integral and admitted by the type), `reflect`
    /// mirrors without repeating the edge, `edge` repeats the edge, `wrap` wraps around.
    Pad = "pad", "pad or crop each axis",
        operands: &[one("x", "any tensor")],
        attrs: [
            attr("pads", AttrKind::Ints, AttrDefault::Required, "[begin_0, .., begin_r-1, end_0, .., end_r-1]"),
            attr("mode", AttrKind::Enum(&["constant", "reflect", "edge", "wrap"]), AttrDefault::Enum("constant"), "how new elements are filled"),
            attr("value", AttrKind::Float, AttrDefault::Float(0.0), "fill value of constant mode"),
        ],
        traits: [DataMovement];
    /// ONNX Slice: for each listed axis, indices `starts, starts+steps, ...` up to (not
    /// including) `ends`; negative starts/ends count from the back (D is added once), then
    /// they are clamped: for positive steps both to [0, D]; for negative steps `starts` to
    /// [0, D-1] and `ends` to [-1, D-1].
    Slice = "slice", "strided sub-tensor",
        operands: &[one("x", "any tensor")],
        attrs: [
            attr("starts", AttrKind::Ints, AttrDefault::Required, "first index per listed axis"),
            attr("ends", AttrKind::Ints, AttrDefault::Required, "end index (exclusive) per listed axis"),
            attr("axes", AttrKind::Ints, AttrDefault::Required, "sliced axes (negative counts from the back)"),
            attr("steps", AttrKind::Ints, AttrDefault::Required, "step per listed axis (non-zero)"),
        ],
        traits: [DataMovement];
    /// Remove the listed axes, each of size 1 (negative counts from the back).
    Squeeze = "squeeze", "remove axes of size 1",
        operands: &[one("x", "any tensor")],
        attrs: [attr("axes", AttrKind::Ints, AttrDefault::Required, "removed axes")],
        traits: [DataMovement];
    /// Insert axes of size 1 at the listed positions of the output (negative counts from
    /// the back of the output).
    Unsqueeze = "unsqueeze", "insert axes of size 1",
        operands: &[one("x", "any tensor")],
        attrs: [attr("axes", AttrKind::Ints, AttrDefault::Required, "inserted axes of the output")],
        traits: [DataMovement];
    /// Element type conversion to the result type. f32 -> integer: rounded by `rounding`,
    /// then saturated to the type's range (NaN becomes 0). Integer-valued -> f32: the code,
    /// rounded to nearest f32. Integer-valued -> integer or quantized: the code, wrapped
    /// to the storage (two's complement), i.e. a reinterpretation of codes. Integer-valued
    /// -> `b1`: the codes must be +1 or -1 (anything else is an error at run time).
    Cast = "cast", "convert element type",
        operands: &[one("x", "any tensor")],
        attrs: [attr("rounding", ROUNDING, AttrDefault::Enum("down"), "rounding of f32 -> integer")],
        traits: [Elementwise];

    /// `q = clamp(round(x / scale) + zero_point, qmin, qmax)` with scale and zero point of
    /// the result's quantized type (at the element's parameter index), the division in
    /// f32, `round` by `rounding`, `qmin/qmax` the narrow-aware storage range. NaN maps to
    /// the zero point.
    Quantize = "quantize", "f32 to quantized integers",
        operands: &[one("x", "f32 tensor")],
        attrs: [attr("rounding", ROUNDING, AttrDefault::Enum("half_even"), "rounding of x / scale")],
        traits: [Elementwise, Quantization];
    /// `x = (f32(q) - f32(zero_point)) * scale` with the operand's parameters, in f32.
    Dequantize = "dequantize", "quantized integers to f32",
        operands: &[one("q", "quantized tensor")],
        attrs: [],
        traits: [Elementwise, Quantization];
    /// QONNX Quant, float in and float out, in f32: `y = x / scale + zero_point`; at
    /// `bits = 1` and `signed`, `y = y >= 0 ? 1 : -1` (bipolar); otherwise
    /// `y = rounding(clamp(y, min, max))` (clamp before rounding) with min/max of a
    /// `bits`-wide signed or unsigned, optionally narrow, integer. Then
    /// `out = (y - zero_point) * scale`. `scale` (positive) and `zero_point` (any float)
    /// broadcast to `x`.
    FakeQuant = "fake_quant", "quantize-dequantize in the float domain (QONNX Quant)",
        operands: &[one("x", "f32 tensor"), one("scale", "f32, broadcastable to x"), one("zero_point", "f32, broadcastable to x")],
        attrs: [
            attr("bits", AttrKind::Int, AttrDefault::Required, "bit-width, 1..=32"),
            attr("signed", AttrKind::Bool, AttrDefault::Bool(true), "signed integer grid"),
            attr("narrow", AttrKind::Bool, AttrDefault::Bool(false), "drop the most negative (signed) or largest (unsigned) code"),
            attr("rounding", ROUNDING, AttrDefault::Enum("half_even"), "rounding onto the grid"),
        ],
        traits: [Elementwise, Quantization];
    /// QONNX Trunc, in f32. Without `out_scale` (v1): `y = round_half_even(x / scale +
    /// zero_point) / 2^(in_bits - out_bits)`, `y = rounding(y)`, `out = (y - zero_point) *
    /// scale`, no clamp. With `out_scale` (v2): `t = 2^round_half_even(log2(out_scale /
    /// scale))`, `y = round_half_even(x / scale + zero_point) / t`,
    /// `y = rounding(clamp(y, min, max))` with the `out_bits` grid (`signed`, `narrow`),
    /// `out = (y - zero_point / t) * out_scale`.
    Trunc = "trunc", "drop low bits in the float domain (QONNX Trunc)",
        operands: &[one("x", "f32 tensor"), one("scale", "f32, broadcastable"), one("zero_point", "f32, broadcastable"), opt("out_scale", "f32, broadcastable (v2)")],
        attrs: [
            attr("in_bits", AttrKind::Int, AttrDefault::Required, "bit-width of the input grid"),
            attr("out_bits", AttrKind::Int, AttrDefault::Required, "bit-width of the output grid"),
            attr("rounding", ROUNDING, AttrDefault::Enum("floor"), "rounding of the shifted value"),
            attr("signed", AttrKind::Bool, AttrDefault::Bool(true), "signed output grid (v2)"),
            attr("narrow", AttrKind::Bool, AttrDefault::Bool(false), "narrow output grid (v2)"),
        ],
        traits: [Elementwise, Quantization];
    /// Integer rescaling, exact: `a = x - zx` (the operand's zero point, 0 for plain
    /// integers), `r = rounding(a * multiplier[c] / 2^shift[c])` (a negative shift
    /// multiplies), `q = clamp(r + zq, lo, hi)` where `zq` is the result's zero point,
    /// `[lo, hi]` the result's storage range intersected with `[min, max]` when given. `c`
    /// indexes `axis` when `multiplier`/`shift` have more than one entry. The storage range is
    /// narrow-aware (`qmin..=qmax`); an empty `[lo, hi]` is an error. The real scale is
    /// `multiplier * 2^-shift`; a shift-only requantize has multiplier 1.
    Requantize = "requantize", "fixed-point rescale of integers to a (quantized) integer type",
        operands: &[one("x", "integer or quantized tensor")],
        attrs: [
            attr("multiplier", AttrKind::Ints, AttrDefault::Required, "i32 multipliers, one or one per channel"),
            attr("shift", AttrKind::Ints, AttrDefault::Required, "right shifts (0..=62, or negative for left), one or one per channel"),
            attr("axis", AttrKind::Int, AttrDefault::Int(1), "channel axis of per-channel multipliers"),
            attr("rounding", ROUNDING, AttrDefault::Enum("half_even"), "rounding of the shift"),
            attr("min", AttrKind::Int, AttrDefault::Optional, "lower clamp (a code), e.g. an absorbed ReLU"),
            attr("max", AttrKind::Int, AttrDefault::Optional, "upper clamp (a code)"),
        ],
        traits: [Elementwise, Integer, Quantization];
    /// conv2d over integer codes with i32 accumulation: `acc[m] = bias[m] + sum (x - zx) *
    /// (w - zw[m])` with zx the (per-tensor) zero point of `x` and zw the per-tensor or
    /// per-output-channel (axis 0) zero point of `w` (0 for plain integers, bipolar values
    /// are +-1). Padded positions contribute 0 (as if padded with zx). The exact sum is
    /// wrapped to i32 (two's complement).
    Conv2dInt = "conv2d_int", "integer 2-D convolution accumulating in i32",
        operands: &[one("x", "integer [N, C, H, W]"), one("w", "integer [M, C/group, kh, kw]"), opt("bias", "i32 [M]")],
        attrs: [STRIDES, PADS, DILATIONS, GROUP],
        traits: [Integer];
    /// matmul over integer codes with i32 accumulation: `acc = bias[n] + sum_k (a - za) *
    /// (b - zb[n])`, za per-tensor, zb per-tensor or per-column (the last axis of b).
    /// Broadcasting as matmul; wrapped to i32.
    MatMulInt = "matmul_int", "integer matrix product accumulating in i32",
        operands: &[one("a", "integer tensor"), one("b", "integer tensor"), opt("bias", "i32 [N]")],
        attrs: [],
        traits: [Integer];
    /// Table lookup: `y = table[x - xmin]` where `xmin` is the smallest code of x's storage
    /// (0 for unsigned, `-2^(b-1)` for signed `b`-bit storage; the narrow flag does not
    /// change the index). `x` has at most 8 storage bits and `table` is 1-D with one entry
    /// per storage code (`2^b`); the result has the table's element type (a plain integer
    /// or per-tensor quantized type) and x's shape. A quantized elementwise function
    /// `quantize(f(dequantize(x)))` becomes a lookup whose table is that function
    /// evaluated on every code.
    Lookup = "lookup", "per-code table lookup (a quantized elementwise function)",
        operands: &[one("x", "integer or quantized tensor of at most 8 storage bits"), one("table", "1-D, 2^bits(x) codes of the result type")],
        attrs: [],
        traits: [Elementwise, Integer];
    /// +-1 binarization: +1 where the real value is >= 0 (f32 `x >= 0`; quantized
    /// `q >= zero_point`; integer `x >= 0`), else -1. NaN gives -1. Result `b1`.
    Binarize = "binarize", "map to +1 / -1 (zero maps to +1)",
        operands: &[one("x", "any tensor")],
        attrs: [],
        traits: [Elementwise];
    /// Multi-threshold: `count = #{k : x >= t[c, k]}` where `t` is [C, K] (or [1, K] for
    /// one set shared by every channel) and c indexes `axis` of `x` (codes compared as
    /// integers). Result code `count + offset`, which must be a code of the result type (an
    /// error otherwise); for a `b1` result K must be 1, offset 0, and
    /// count 0 gives -1, count 1 gives +1. Batch norm followed by sign folds into this.
    Threshold = "threshold", "per-channel integer thresholds",
        operands: &[one("x", "integer or quantized tensor"), one("t", "integer [C, K] or [1, K], sorted along K")],
        attrs: [
            attr("axis", AttrKind::Int, AttrDefault::Int(1), "channel axis"),
            attr("offset", AttrKind::Int, AttrDefault::Int(0), "added to the count"),
        ],
        traits: [Integer];
    /// Packs the codes along `axis` into unsigned words of `word_bits` bits, as a little-
    /// endian bit stream: element i occupies bits `[i*b, (i+1)*b)` of the stream, where b
    /// is the operand's storage bits (two's complement low bits; `b1` stores 1 for -1 and 0
    /// for +1). The axis becomes `ceil(D * b / word_bits)` words; unused bits are 0.
    BitPack = "bit_pack", "pack low-bit codes into words",
        operands: &[one("x", "integer-valued tensor")],
        attrs: [
            attr("axis", AttrKind::Int, AttrDefault::Int(1), "packed axis"),
            attr("word_bits", AttrKind::Int, AttrDefault::Int(8), "8, 16 or 32"),
        ],
        traits: [DataMovement, Integer];
    /// The inverse of bit_pack: `count` codes of the result's storage width along `axis`
    /// are read from the word stream (sign-extended for signed storage; `b1` reads 1 as -1
    /// and 0 as +1).
    BitUnpack = "bit_unpack", "unpack words into low-bit codes",
        operands: &[one("x", "unsigned words")],
        attrs: [
            attr("axis", AttrKind::Int, AttrDefault::Int(1), "unpacked axis"),
            attr("count", AttrKind::Int, AttrDefault::Required, "codes along the axis"),
        ],
        traits: [DataMovement, Integer];
}

/// Typed access to a node's attributes, falling back to the table's defaults. Errors
/// name the attribute; they only occur on modules the verifier would reject.
#[derive(Clone, Copy)]
pub struct Attrs<'a> {
    op: Op,
    map: &'a BTreeMap<String, Attr>,
}

impl<'a> Attrs<'a> {
    pub fn new(op: Op, map: &'a BTreeMap<String, Attr>) -> Self {
        Attrs { op, map }
    }

    fn get(&self, name: &str) -> Result<Option<Attr>, String> {
        if let Some(a) = self.map.get(name) {
            return Ok(Some(a.clone()));
        }
        let spec = self
            .op
            .info()
            .attr(name)
            .ok_or_else(|| format!("{} has no attribute `{name}`", self.op))?;
        match spec.default {
            AttrDefault::Required => Err(format!("{} needs attribute `{name}`", self.op)),
            d => Ok(d.value()),
        }
    }

    fn wrong(&self, name: &str, want: &str) -> String {
        format!("attribute `{name}` of {} must be {want}", self.op)
    }

    pub fn int(&self, name: &str) -> Result<i64, String> {
        match self.get(name)? {
            Some(Attr::Int(i)) => Ok(i),
            _ => Err(self.wrong(name, "an integer")),
        }
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, String> {
        match self.get(name)? {
            None => Ok(None),
            Some(Attr::Int(i)) => Ok(Some(i)),
            _ => Err(self.wrong(name, "an integer")),
        }
    }

    pub fn float(&self, name: &str) -> Result<f32, String> {
        match self.get(name)? {
            Some(Attr::Float(f)) => Ok(f),
            Some(Attr::Int(i)) => Ok(i as f32),
            _ => Err(self.wrong(name, "a float")),
        }
    }

    pub fn opt_float(&self, name: &str) -> Result<Option<f32>, String> {
        match self.get(name)? {
            None => Ok(None),
            Some(Attr::Float(f)) => Ok(Some(f)),
            Some(Attr::Int(i)) => Ok(Some(i as f32)),
            _ => Err(self.wrong(name, "a float")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, String> {
        match self.get(name)? {
            Some(Attr::Bool(b)) => Ok(b),
            _ => Err(self.wrong(name, "true or false")),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        match self.get(name)? {
            Some(Attr::Ints(v)) => Ok(v),
            _ => Err(self.wrong(name, "a list of integers")),
        }
    }

    pub fn floats(&self, name: &str) -> Result<Vec<f32>, String> {
        match self.get(name)? {
            Some(Attr::Floats(v)) => Ok(v),
            Some(Attr::Ints(v)) => Ok(v.into_iter().map(|i| i as f32).collect()),
            _ => Err(self.wrong(name, "a list of floats")),
        }
    }

    pub fn word(&self, name: &str) -> Result<String, String> {
        match self.get(name)? {
            Some(Attr::Enum(s)) => Ok(s),
            _ => Err(self.wrong(name, "a word")),
        }
    }

    pub fn rounding(&self, name: &str) -> Result<Rounding, String> {
        self.word(name)?.parse()
    }

    /// Non-negative integers (sizes, strides, pads) as `usize`.
    pub fn usizes(&self, name: &str) -> Result<Vec<usize>, String> {
        self.ints(name)?
            .into_iter()
            .map(|i| usize::try_from(i).map_err(|_| self.wrong(name, "non-negative")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let mut names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Op::ALL.len());
        for &op in Op::ALL {
            assert_eq!(Op::from_name(op.name()), Some(op));
        }
    }

    #[test]
    fn table_is_well_formed() {
        for &op in Op::ALL {
            let info = op.info();
            assert!(
                !info.description.trim().is_empty(),
                "{op} has no description"
            );
            // Optional operands only at the end, variadic only last.
            let mut seen_opt = false;
            for (i, o) in info.operands.iter().enumerate() {
                match o.arity {
                    Arity::One => assert!(!seen_opt, "{op}: required operand after optional"),
                    Arity::Optional => seen_opt = true,
                    Arity::Variadic => assert_eq!(i + 1, info.operands.len(), "{op}"),
                }
            }
            for a in info.attrs {
                if let (AttrKind::Enum(words), AttrDefault::Enum(d)) = (a.kind, a.default) {
                    assert!(words.contains(&d), "{op}.{}: default not a word", a.name);
                }
            }
        }
    }
}
