//! f32 elementwise kernels: activations, rounding, transcendental functions (exp, ln,
//! tanh, erf: `math.rs`), broadcasting arithmetic and min/max, batch norm, softmax.
//!
//! All loops run over f32x4 vectors with a scalar tail; each lane computes exactly
//! what the interpreter computes in f32 (same operations and order) except where a
//! comment says otherwise (exp, sigmoid and silu use the polynomial of `math.rs`; hard_swish
//! multiplies by 1/6 instead of dividing by 6).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{FuncRef, InstBuilder, Type, Value};

use crate::backend::kb::Kb;
use qcc_ir::Rounding;

use super::quantsim::RoundConsts;
use crate::backend::math::{ErfConsts, ExpConsts, LogConsts, TanhConsts};

/// A unary f32 function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Unary {
    Relu,
    Clip(Option<f32>, Option<f32>),
    LeakyRelu(f32),
    HardSigmoid(f32, f32),
    HardSwish,
    Sigmoid,
    /// `x * sigmoid(x)`.
    Silu,
    Exp,
    Sqrt,
    Sign,
    Abs,
    Neg,
    /// Floor, Ceil or HalfEven (ONNX Round).
    Round(Rounding),
    Log,
    Tanh,
    Erf,
}

impl Unary {
    pub fn name(self) -> &'static str {
        match self {
            Unary::Relu => "relu",
            Unary::Clip(..) => "clip",
            Unary::LeakyRelu(_) => "leaky_relu",
            Unary::HardSigmoid(..) => "hard_sigmoid",
            Unary::HardSwish => "hard_swish",
            Unary::Sigmoid => "sigmoid",
            Unary::Silu => "silu",
            Unary::Exp => "exp",
            Unary::Sqrt => "sqrt",
            Unary::Sign => "sign",
            Unary::Abs => "abs",
            Unary::Neg => "neg",
            Unary::Round(Rounding::Floor) => "floor",
            Unary::Round(Rounding::Ceil) => "ceil",
            Unary::Round(_) => "round",
            Unary::Log => "log",
            Unary::Tanh => "tanh",
            Unary::Erf => "erf",
        }
    }
}

/// Constants of one unary function for one type, made before the loops.
struct UConsts {
    ty: Type,
    zero: Value,
    one: Value,
    a: Value,
    b: Value,
    exp: Option<ExpConsts>,
    round: Option<RoundConsts>,
    log: Option<LogConsts>,
    tanh: Option<TanhConsts>,
    erf: Option<ErfConsts>,
}

impl UConsts {
    fn new(kb: &mut Kb<'_, '_>, op: Unary, ty: Type) -> UConsts {
        let (a, b) = match op {
            Unary::Clip(lo, hi) => (lo.unwrap_or(0.0), hi.unwrap_or(0.0)),
            Unary::LeakyRelu(al) => (al, 0.0),
            Unary::HardSigmoid(al, be) => (al, be),
            Unary::HardSwish => (1.0 / 6.0, 0.5),
            _ => (0.0, 0.0),
        };
        UConsts {
            ty,
            zero: kb.fconst(ty, 0.0),
            one: kb.fconst(ty, 1.0),
            a: kb.fconst(ty, a),
            b: kb.fconst(ty, b),
            exp: matches!(op, Unary::Sigmoid | Unary::Silu | Unary::Exp)
                .then(|| ExpConsts::new(kb, ty)),
            round: matches!(op, Unary::Round(_)).then(|| RoundConsts::new(kb, ty)),
            log: (op == Unary::Log).then(|| LogConsts::new(kb, ty)),
            tanh: (op == Unary::Tanh).then(|| TanhConsts::new(kb, ty)),
            erf: (op == Unary::Erf).then(|| ErfConsts::new(kb, ty)),
        }
    }

    /// `min(max(x, 0), 1)`, keeping NaN.
    fn clamp01(&self, kb: &mut Kb<'_, '_>, x: Value) -> Value {
        let x = kb.fselect(self.ty, FloatCC::LessThan, x, self.zero, self.zero, x);
        kb.fselect(self.ty, FloatCC::GreaterThan, x, self.one, self.one, x)
    }

    fn apply(&self, kb: &mut Kb<'_, '_>, op: Unary, x: Value) -> Value {
        let ty = self.ty;
        match op {
            Unary::Relu => kb.fselect(ty, FloatCC::LessThan, x, self.zero, self.zero, x),
            Unary::Clip(lo, hi) => {
                let mut x = x;
                if lo.is_some() {
                    x = kb.fselect(ty, FloatCC::LessThan, x, self.a, self.a, x);
                }
                if hi.is_some() {
                    x = kb.fselect(ty, FloatCC::GreaterThan, x, self.b, self.b, x);
                }
                x
            }
            Unary::LeakyRelu(_) => {
                let ax = kb.b.ins().fmul(self.a, x);
                kb.fselect(ty, FloatCC::GreaterThanOrEqual, x, self.zero, x, ax)
            }
            Unary::HardSigmoid(..) => {
                let y = kb.b.ins().fmul(self.a, x);
                let y = kb.b.ins().fadd(y, self.b);
                self.clamp01(kb, y)
            }
            Unary::HardSwish => {
                let y = kb.b.ins().fmul(x, self.a);
                let y = kb.b.ins().fadd(y, self.b);
                let y = self.clamp01(kb, y);
                kb.b.ins().fmul(x, y)
            }
            Unary::Sigmoid => self.exp.as_ref().expect("exp constants").sigmoid(kb, x),
            Unary::Silu => {
                let s = self.exp.as_ref().expect("exp constants").sigmoid(kb, x);
                kb.b.ins().fmul(x, s)
            }
            Unary::Exp => self.exp.as_ref().expect("exp constants").exp(kb, x),
            Unary::Sqrt => kb.b.ins().sqrt(x),
            Unary::Sign => {
                let m1 = kb.b.ins().fneg(self.one);
                let y = kb.fselect(ty, FloatCC::GreaterThan, x, self.zero, self.one, x);
                kb.fselect(ty, FloatCC::LessThan, x, self.zero, m1, y)
            }
            Unary::Abs => kb.b.ins().fabs(x),
            Unary::Neg => kb.b.ins().fneg(x),
            Unary::Round(mode) => self
                .round
                .as_ref()
                .expect("round constants")
                .round(kb, x, mode),
            Unary::Log => self.log.as_ref().expect("log constants").ln(kb, x),
            Unary::Tanh => self.tanh.as_ref().expect("tanh constants").tanh(kb, x),
            Unary::Erf => self.erf.as_ref().expect("erf constants").erf(kb, x),
        }
    }
}

/// `out[i] = op(x[i])` for `n` elements.
pub(crate) fn emit_unary(kb: &mut Kb<'_, '_>, op: Unary, n: usize, x: Value, out: Value) {
    let cv = UConsts::new(kb, op, F32X4);
    let cs = UConsts::new(kb, op, F32);
    let nv = (n / 4) as i64;
    kb.for_range(0, nv, 1, |kb, i| {
        let s = kb.idx(x, i, 16);
        let d = kb.idx(out, i, 16);
        let v = kb.load(F32X4, s, 0);
        let y = cv.apply(kb, op, v);
        kb.store(y, d, 0);
    });
    for e in (nv * 4) as usize..n {
        let v = kb.load(F32, x, (e * 4) as i64);
        let y = cs.apply(kb, op, v);
        kb.store(y, out, (e * 4) as i64);
    }
}

/// A binary f32 operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    /// NaN when either is NaN; `max(-0, +0) = +0` (Cranelift's `fmax`).
    Max,
    Min,
}

impl Binary {
    fn apply(self, kb: &mut Kb<'_, '_>, a: Value, b: Value) -> Value {
        match self {
            Binary::Add => kb.b.ins().fadd(a, b),
            Binary::Sub => kb.b.ins().fsub(a, b),
            Binary::Mul => kb.b.ins().fmul(a, b),
            Binary::Div => kb.b.ins().fdiv(a, b),
            Binary::Max => kb.b.ins().fmax(a, b),
            Binary::Min => kb.b.ins().fmin(a, b),
        }
    }
}

/// A broadcast loop nest: output dims and each operand's element strides (0 where it
/// broadcasts), collapsed so that adjacent dims that move together are one dim.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Broadcast {
    pub dims: Vec<usize>,
    pub sa: Vec<usize>,
    pub sb: Vec<usize>,
}

impl Broadcast {
    pub fn new(a: &[usize], b: &[usize], out: &[usize]) -> Broadcast {
        let strides = |s: &[usize]| -> Vec<usize> {
            let off = out.len() - s.len();
            let nat = qcc_ir::shape::strides(s);
            (0..out.len())
                .map(|d| {
                    if d < off || s[d - off] == 1 {
                        0
                    } else {
                        nat[d - off]
                    }
                })
                .collect()
        };
        let (sa, sb) = (strides(a), strides(b));
        let mut dims: Vec<usize> = Vec::new();
        let mut ra: Vec<usize> = Vec::new();
        let mut rb: Vec<usize> = Vec::new();
        for d in 0..out.len() {
            if out[d] == 1 {
                continue;
            }
            if let (Some(&ld), Some(&la), Some(&lb)) = (dims.last(), ra.last(), rb.last())
                && la == sa[d] * out[d]
                && lb == sb[d] * out[d]
            {
                let _ = ld;
                let k = dims.len() - 1;
                dims[k] *= out[d];
                ra[k] = sa[d];
                rb[k] = sb[d];
                continue;
            }
            dims.push(out[d]);
            ra.push(sa[d]);
            rb.push(sb[d]);
        }
        if dims.is_empty() {
            dims.push(1);
            ra.push(1);
            rb.push(1);
        }
        Broadcast {
            dims,
            sa: ra,
            sb: rb,
        }
    }
}

/// `out = a op b` with broadcasting; `zmm`: the zmm kernel of the innermost run's
/// whole 16-element steps (`binzmm.rs`), the rest here.
pub(crate) fn emit_binary(
    kb: &mut Kb<'_, '_>,
    op: Binary,
    bc: &Broadcast,
    a: Value,
    b: Value,
    out: Value,
    zmm: Option<FuncRef>,
) {
    nest(kb, op, bc, 0, [a, b, out], zmm);
}

fn nest(
    kb: &mut Kb<'_, '_>,
    op: Binary,
    bc: &Broadcast,
    d: usize,
    [a, b, out]: [Value; 3],
    zmm: Option<FuncRef>,
) {
    let last = bc.dims.len() - 1;
    if d < last {
        let inner: usize = bc.dims[d + 1..].iter().product();
        kb.for_range(0, bc.dims[d] as i64, 1, |kb, i| {
            let a = kb.idx(a, i, (bc.sa[d] * 4) as i64);
            let b = kb.idx(b, i, (bc.sb[d] * 4) as i64);
            let o = kb.idx(out, i, (inner * 4) as i64);
            nest(kb, op, bc, d + 1, [a, b, o], zmm);
        });
        return;
    }
    let (va, vb) = (bc.sa[d] != 0, bc.sb[d] != 0);
    let (mut n, mut a, mut b, mut out) = (bc.dims[d], a, b, out);
    if let Some(f) = zmm {
        kb.b.ins().call(f, &[a, b, out]);
        let done = n / 16 * 16;
        let bytes = (done * 4) as i64;
        if va {
            a = kb.off(a, bytes);
        }
        if vb {
            b = kb.off(b, bytes);
        }
        out = kb.off(out, bytes);
        n -= done;
    }
    // Broadcast scalars are loaded once, before the loop.
    let sa = (!va).then(|| kb.load(F32, a, 0));
    let sb = (!vb).then(|| kb.load(F32, b, 0));
    let spl = |kb: &mut Kb<'_, '_>, s: Option<Value>| s.map(|s| kb.b.ins().splat(F32X4, s));
    let (ba, bb) = (spl(kb, sa), spl(kb, sb));
    let nv = (n / 4) as i64;
    kb.for_range(0, nv, 1, |kb, i| {
        let x = match ba {
            Some(v) => v,
            None => {
                let p = kb.idx(a, i, 16);
                kb.load(F32X4, p, 0)
            }
        };
        let y = match bb {
            Some(v) => v,
            None => {
                let p = kb.idx(b, i, 16);
                kb.load(F32X4, p, 0)
            }
        };
        let r = op.apply(kb, x, y);
        let o = kb.idx(out, i, 16);
        kb.store(r, o, 0);
    });
    for e in (nv * 4) as usize..n {
        let off = (e * 4) as i64;
        let x = match sa {
            Some(v) => v,
            None => kb.load(F32, a, off),
        };
        let y = match sb {
            Some(v) => v,
            None => kb.load(F32, b, off),
        };
        let r = op.apply(kb, x, y);
        kb.store(r, out, off);
    }
}

/// Batch norm over axis 1 of `[N, C, inner]`:
/// `(x - mean[c]) / sqrt(var[c] + eps) * scale[c] + bias[c]`, in that order.
#[allow(clippy::too_many_arguments, reason = "the pointers of one kernel")]
pub(crate) fn emit_batch_norm(
    kb: &mut Kb<'_, '_>,
    n: usize,
    c: usize,
    inner: usize,
    eps: f32,
    x: Value,
    p: [Value; 4],
    out: Value,
) {
    let [scale, bias, mean, var] = p;
    kb.for_range(0, (n * c) as i64, 1, |kb, nc| {
        // Channel index = nc % c.
        let ch = kb.b.ins().urem_imm_u(nc, c as i64);
        let ld = |kb: &mut Kb<'_, '_>, p: Value| {
            let a = kb.idx(p, ch, 4);
            kb.load(F32, a, 0)
        };
        let (s, b, m, v) = (ld(kb, scale), ld(kb, bias), ld(kb, mean), ld(kb, var));
        let e = kb.b.ins().f32const(eps);
        let ve = kb.b.ins().fadd(v, e);
        let den = kb.b.ins().sqrt(ve);
        let vecs = [s, b, m, den].map(|v| kb.b.ins().splat(F32X4, v));
        let xp = kb.idx(x, nc, (inner * 4) as i64);
        let op = kb.idx(out, nc, (inner * 4) as i64);
        let f = |kb: &mut Kb<'_, '_>, v: Value, [s, b, m, d]: [Value; 4]| {
            let y = kb.b.ins().fsub(v, m);
            let y = kb.b.ins().fdiv(y, d);
            let y = kb.b.ins().fmul(y, s);
            kb.b.ins().fadd(y, b)
        };
        let nv = (inner / 4) as i64;
        kb.for_range(0, nv, 1, |kb, i| {
            let sp = kb.idx(xp, i, 16);
            let v = kb.load(F32X4, sp, 0);
            let y = f(kb, v, vecs);
            let dp = kb.idx(op, i, 16);
            kb.store(y, dp, 0);
        });
        for e in (nv * 4) as usize..inner {
            let v = kb.load(F32, xp, (e * 4) as i64);
            let y = f(kb, v, [s, b, m, den]);
            kb.store(y, op, (e * 4) as i64);
        }
    });
}

/// Softmax along an axis of `[outer, d, inner]`: `e^(x - max) / sum`.
pub(crate) fn emit_softmax(
    kb: &mut Kb<'_, '_>,
    outer: usize,
    d: usize,
    inner: usize,
    x: Value,
    out: Value,
) {
    let ev = ExpConsts::new(kb, F32X4);
    let es = ExpConsts::new(kb, F32);
    if inner == 1 {
        let nv = (d / 4) as i64;
        kb.for_range(0, outer as i64, 1, |kb, o| {
            let xr = kb.idx(x, o, (d * 4) as i64);
            let or = kb.idx(out, o, (d * 4) as i64);
            // Max.
            let ninf = kb.fconst(F32, f32::NEG_INFINITY);
            let mut mx = ninf;
            if nv > 0 {
                let init = kb.fconst(F32X4, f32::NEG_INFINITY);
                let acc = kb.var(F32X4, init);
                kb.for_range(0, nv, 1, |kb, i| {
                    let p = kb.idx(xr, i, 16);
                    let v = kb.load(F32X4, p, 0);
                    let a = kb.b.use_var(acc);
                    let m = kb.b.ins().fmax(a, v);
                    kb.b.def_var(acc, m);
                });
                let a = kb.b.use_var(acc);
                mx = kb.hmax(a);
            }
            for e in (nv * 4) as usize..d {
                let v = kb.load(F32, xr, (e * 4) as i64);
                mx = kb.b.ins().fmax(mx, v);
            }
            // Exponentials and their sum.
            let mxv = kb.b.ins().splat(F32X4, mx);
            let zero = kb.fconst(F32X4, 0.0);
            let sacc = kb.var(F32X4, zero);
            kb.for_range(0, nv, 1, |kb, i| {
                let p = kb.idx(xr, i, 16);
                let v = kb.load(F32X4, p, 0);
                let v = kb.b.ins().fsub(v, mxv);
                let e = ev.exp(kb, v);
                let q = kb.idx(or, i, 16);
                kb.store(e, q, 0);
                let s = kb.b.use_var(sacc);
                let s = kb.b.ins().fadd(s, e);
                kb.b.def_var(sacc, s);
            });
            let s = kb.b.use_var(sacc);
            let mut sum = kb.hsum(s);
            for e in (nv * 4) as usize..d {
                let v = kb.load(F32, xr, (e * 4) as i64);
                let v = kb.b.ins().fsub(v, mx);
                let ex = es.exp(kb, v);
                kb.store(ex, or, (e * 4) as i64);
                sum = kb.b.ins().fadd(sum, ex);
            }
            let sv = kb.b.ins().splat(F32X4, sum);
            kb.for_range(0, nv, 1, |kb, i| {
                let q = kb.idx(or, i, 16);
                let v = kb.load(F32X4, q, 0);
                let v = kb.b.ins().fdiv(v, sv);
                kb.store(v, q, 0);
            });
            for e in (nv * 4) as usize..d {
                let v = kb.load(F32, or, (e * 4) as i64);
                let v = kb.b.ins().fdiv(v, sum);
                kb.store(v, or, (e * 4) as i64);
            }
        });
        return;
    }
    // Strided lines: along d at stride `inner`, four adjacent lines (inner indices) per
    // f32x4 (each lane the scalar line's operations in the same order), then the
    // lines left one at a time.
    let st = (inner * 4) as i64;
    let line = |kb: &mut Kb<'_, '_>, ty: Type, xr: Value, or: Value| {
        let ec = if ty == F32 { &es } else { &ev };
        let mut mx = kb.fconst(ty, f32::NEG_INFINITY);
        for e in 0..d as i64 {
            let v = kb.load(ty, xr, e * st);
            mx = kb.b.ins().fmax(mx, v);
        }
        let mut sum = kb.fconst(ty, 0.0);
        for e in 0..d as i64 {
            let v = kb.load(ty, xr, e * st);
            let v = kb.b.ins().fsub(v, mx);
            let ex = ec.exp(kb, v);
            kb.store(ex, or, e * st);
            sum = kb.b.ins().fadd(sum, ex);
        }
        for e in 0..d as i64 {
            let v = kb.load(ty, or, e * st);
            let v = kb.b.ins().fdiv(v, sum);
            kb.store(v, or, e * st);
        }
    };
    let nv = inner / 4;
    kb.for_range(0, outer as i64, 1, |kb, o| {
        let xo = kb.idx(x, o, (d * inner * 4) as i64);
        let oo = kb.idx(out, o, (d * inner * 4) as i64);
        kb.for_range(0, nv as i64, 1, |kb, i| {
            let xr = kb.idx(xo, i, 16);
            let or = kb.idx(oo, i, 16);
            line(kb, F32X4, xr, or);
        });
        kb.for_range((nv * 4) as i64, inner as i64, 1, |kb, i| {
            let xr = kb.idx(xo, i, 4);
            let or = kb.idx(oo, i, 4);
            line(kb, F32, xr, or);
        });
    });
}
