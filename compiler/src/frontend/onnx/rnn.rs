//! Recurrent layers: RNN, GRU and LSTM, unrolled over the (fixed) sequence length into
//! matrix products and element-wise ops.
//!
//! Per direction, the input projections of every time step are one matrix product
//! (`X [S*B, I] x W^T [I, G*H]` plus both biases); each step then adds `H_{t-1} x R^T`,
//! slices the gates and applies the activations. `reverse` walks the steps backwards;
//! `bidirectional` does both and stacks them on axis 1 of `Y` (axis 0 of `Y_h`, `Y_c`).
//! `layout = 1` (batch first) transposes in and out. Gate orders follow ONNX: `zrh` for
//! GRU, `iofc` for LSTM. Supported: the default activations and any of Sigmoid, Tanh,
//! Relu in the `activations` attribute; `clip`; LSTM peepholes; GRU
//! `linear_before_reset`; run-time or constant weights, initial states. Not supported
//! (an error names the attribute or input): `sequence_lens` other than the full length
//! for every batch entry, LSTM `input_forget`, other activations.
//!
//! `com.microsoft` DynamicQuantizeLSTM (ONNX Runtime's dynamically quantized LSTM: int8 or
//! uint8 W `[nd, I, 4H]` and R `[nd, H, 4H]`, per-tensor or per-channel) goes through the
//! same unrolling with each product computed as ONNX Runtime's kernel computes it: the
//! float operand quantized dynamically (DynamicQuantizeLinear's parameters over the whole
//! operand: X once over all steps, H_{t-1} at every step), the integer product, scaled
//! by `a_scale * w_scale[n]`; the step adds the biases after `X W + H R` (and after a
//! gate's peephole term, where there are peepholes), as ONNX Runtime does. Dequantizing W
//! and R into a float LSTM instead would not match it (about 1e-2 apart on the test
//! model, against 0 for this).

use qcc_ir::{Attr, Op, ValueId};
use qcc_ir::{ConstData, ElemType, TensorType};

use super::ctx::{NodeCx, ints, usz};
use super::quant::{col_sums, dyn_quantize, qtype, sub_rt_zp};
use super::tensor::{CTensor, DType};
use super::{OpReg, onnx_op as op, op_in};

pub(crate) const OPS: &[OpReg] = &[
    op("RNN", 7, rnn),
    op("GRU", 7, gru),
    op("LSTM", 7, lstm),
    op_in("com.microsoft", "DynamicQuantizeLSTM", 1, dq_lstm),
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rnn,
    Gru,
    Lstm,
}

impl Kind {
    /// Gates per direction.
    fn gates(self) -> usize {
        match self {
            Kind::Rnn => 1,
            Kind::Gru => 3,
            Kind::Lstm => 4,
        }
    }

    /// Activations per direction (f, g, h).
    fn acts(self) -> usize {
        match self {
            Kind::Rnn => 1,
            Kind::Gru => 2,
            Kind::Lstm => 3,
        }
    }

    fn default_acts(self) -> &'static [&'static str] {
        match self {
            Kind::Rnn => &["Tanh"],
            Kind::Gru => &["Sigmoid", "Tanh"],
            Kind::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

fn rnn(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    recurrent(cx, Kind::Rnn)
}

fn gru(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    recurrent(cx, Kind::Gru)
}

fn lstm(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    recurrent(cx, Kind::Lstm)
}

/// One direction's quantized weight matrix `[K, N]` (DynamicQuantizeLSTM): the codes
/// (their zero points in the type, scale 1), the corrected column sums `sum_k (w - zw)`
/// (i32 `[N]`) and the scales (f32, `[N]` or rank 0).
#[derive(Clone, Copy)]
struct QMat {
    codes: ValueId,
    colsum: ValueId,
    scale: ValueId,
}

/// The weights of one direction: W^T `[I, G*H]` and R^T `[H, G*H]`, float or quantized.
#[derive(Clone, Copy)]
enum Proj {
    F(ValueId),
    Q(QMat),
}

/// Input `wi` of DynamicQuantizeLSTM (`[nd, K, 4H]`, int8/uint8 constant) with its
/// scale `si` and zero point `zi` (`[nd]` or `[nd, 4H]`), split by direction.
fn qmats(cx: &mut NodeCx<'_, '_>, wi: usize, si: usize, zi: usize) -> Result<Vec<QMat>, String> {
    let what = ["W", "R"][usize::from(wi == 2)];
    let w = cx.konst(wi, what).map_err(|e| {
        format!("{e}; DynamicQuantizeLSTM's `{what}` must be constant int8/uint8 weights")
    })?;
    if !matches!(w.dtype, DType::I8 | DType::U8) {
        return Err(format!(
            "input {wi} (`{what}`) is {}; int8 or uint8 works",
            w.dtype.name()
        ));
    }
    let &[nd, k, n] = &w.shape[..] else {
        return Err(format!(
            "input {wi} (`{what}`) has shape {:?}; expected [num_directions, {}, 4*hidden_size]",
            w.shape,
            if wi == 1 { "input_size" } else { "hidden_size" }
        ));
    };
    let scale = cx.konst(si, &format!("{what}_scale"))?;
    let zp = cx.konst(zi, &format!("{what}_zero_point"))?;
    let per = |c: &CTensor, name: &str| -> Result<usize, String> {
        match c.shape[..] {
            [d] if d == nd => Ok(1),
            [d, m] if d == nd && m == n => Ok(n),
            _ => Err(format!(
                "`{what}_{name}` has shape {:?}; expected [{nd}] (per tensor) or [{nd}, {n}] (per channel)",
                c.shape
            )),
        }
    };
    let (ps, pz) = (per(&scale, "scale")?, per(&zp, "zero_point")?);
    if zp.dtype != w.dtype {
        return Err(format!(
            "`{what}_zero_point` is {}, `{what}` {}",
            zp.dtype.name(),
            w.dtype.name()
        ));
    }
    let codes = w.to_i64()?;
    let sv = scale.to_f32();
    let zv = zp.to_i64()?;
    let mut out = Vec::new();
    for d in 0..nd {
        let dcodes = codes[d * k * n..(d + 1) * k * n].to_vec();
        let ds = CTensor::f32s(vec![n], vec![1.0; n]);
        let dz: Vec<i64> = (0..n).map(|c| zv[d * pz + c.min(pz - 1)]).collect();
        let dz = CTensor::new(zp.dtype, vec![n], super::tensor::CData::I(dz));
        let q = qtype(&[k, n], &ds, Some(&dz), 1, 0, w.dtype)
            .map_err(|e| format!("`{what}` of direction {d}: {e}"))?;
        let ty = TensorType::new(ElemType::Quant(q), vec![k, n]);
        let colsum = col_sums(cx, &dcodes, &ty, &format!("{what}sum{d}"))?;
        let codes = cx.new_const(&format!("{what}q{d}"), ty, ConstData::Int(dcodes));
        let dsv = sv[d * ps..(d + 1) * ps].to_vec();
        if let Some(bad) = dsv.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(format!(
                "`{what}_scale` holds {bad}; scales must be positive and finite"
            ));
        }
        let scale = if ps == 1 {
            cx.f32_const(&format!("{what}s{d}"), vec![], dsv)
        } else {
            cx.f32_const(&format!("{what}s{d}"), vec![n], dsv)
        };
        out.push(QMat {
            codes,
            colsum,
            scale,
        });
    }
    Ok(out)
}

/// com.microsoft DynamicQuantizeLSTM: an LSTM whose W and R (transposed: `[nd, I, 4H]`,
/// `[nd, H, 4H]`) are int8/uint8 with per-tensor or per-channel scales. As ONNX
/// Runtime's kernel computes it, every product quantizes its float operand dynamically
/// (DynamicQuantizeLinear's u8 parameters, taken over the whole operand): X once over
/// all steps, H_{t-1} at every step; the integer product is scaled by `a_scale *
/// w_scale[n]`. The step sum is `(X W + H R) + (Wb + Rb)`, in that order.
fn dq_lstm(cx: &mut NodeCx<'_, '_>) -> Result<(), String> {
    if cx.n_inputs() != 12 {
        return Err(format!(
            "expected 12 inputs (X, W, R, B, sequence_lens, initial_h, initial_c, P, W_scale, W_zero_point, R_scale, R_zero_point), found {}",
            cx.n_inputs()
        ));
    }
    recurrent_q(cx, Kind::Lstm, true)
}

/// What every step needs.
struct Cell {
    kind: Kind,
    h: usize,
    b: usize,
    acts: Vec<Op>,
    clip: Option<f32>,
    linear_before_reset: bool,
}

struct Emit<'c, 'a, 'b> {
    cx: &'c mut NodeCx<'a, 'b>,
    n: usize,
}

impl Emit<'_, '_, '_> {
    fn op(
        &mut self,
        op: Op,
        operands: Vec<ValueId>,
        attrs: Vec<(&str, Attr)>,
    ) -> Result<ValueId, String> {
        self.n += 1;
        let suffix = format!(".r{}", self.n);
        self.cx.emit(op, operands, attrs, None, &suffix)
    }

    fn slice(
        &mut self,
        x: ValueId,
        axis: usize,
        from: usize,
        to: usize,
    ) -> Result<ValueId, String> {
        self.op(
            Op::Slice,
            vec![x],
            vec![
                ("starts", ints(&[from as i64])),
                ("ends", ints(&[to as i64])),
                ("axes", ints(&[axis as i64])),
                ("steps", ints(&[1])),
            ],
        )
    }

    fn reshape(&mut self, x: ValueId, shape: &[usize]) -> Result<ValueId, String> {
        self.op(Op::Reshape, vec![x], vec![("shape", usz(shape))])
    }

    fn transpose(&mut self, x: ValueId, perm: &[usize]) -> Result<ValueId, String> {
        self.op(Op::Transpose, vec![x], vec![("perm", usz(perm))])
    }

    fn concat(&mut self, xs: Vec<ValueId>, axis: usize) -> Result<ValueId, String> {
        if xs.len() == 1 {
            return Ok(xs[0]);
        }
        self.op(Op::Concat, xs, vec![("axis", Attr::Int(axis as i64))])
    }

    /// `a x w`: a float matrix product, or (quantized `w`) the dynamically quantized
    /// product `f32(sum_k (qa - za) (w - zw)) * (a_scale * w_scale)`, with `qa` given
    /// (`aq`) or computed here.
    fn project(
        &mut self,
        a: ValueId,
        aq: Option<(ValueId, ValueId, ValueId)>,
        w: Proj,
    ) -> Result<ValueId, String> {
        let q = match w {
            Proj::F(w) => return self.op(Op::MatMul, vec![a, w], vec![]),
            Proj::Q(q) => q,
        };
        self.n += 1;
        let sfx = format!(".r{}", self.n);
        let (qa, sa, za) = match aq {
            Some(v) => v,
            None => dyn_quantize(self.cx, a, &format!("{sfx}.q"))?,
        };
        let acc = self.cx.emit(
            Op::MatMulInt,
            vec![qa, q.codes],
            vec![],
            None,
            &format!("{sfx}.acc"),
        )?;
        let acc = sub_rt_zp(self.cx, acc, za, q.colsum, &format!("{sfx}.zc"))?;
        let accf = self.cx.emit(
            Op::Cast,
            vec![acc],
            vec![],
            Some(ElemType::F32),
            &format!("{sfx}.f"),
        )?;
        let mult = self.op(Op::Mul, vec![sa, q.scale], vec![])?;
        self.op(Op::Mul, vec![accf, mult], vec![])
    }

    fn act(&mut self, op: Op, x: ValueId, clip: Option<f32>) -> Result<ValueId, String> {
        let x = match clip {
            Some(c) => self.op(
                Op::Clip,
                vec![x],
                vec![("min", Attr::Float(-c)), ("max", Attr::Float(c))],
            )?,
            None => x,
        };
        self.op(op, vec![x], vec![])
    }
}

fn act_op(name: &str) -> Option<Op> {
    match name.to_ascii_lowercase().as_str() {
        "sigmoid" => Some(Op::Sigmoid),
        "tanh" => Some(Op::Tanh),
        "relu" => Some(Op::Relu),
        _ => None,
    }
}

fn recurrent(cx: &mut NodeCx<'_, '_>, kind: Kind) -> Result<(), String> {
    recurrent_q(cx, kind, false)
}

fn recurrent_q(cx: &mut NodeCx<'_, '_>, kind: Kind, quant: bool) -> Result<(), String> {
    let layout = cx.a_int("layout", 0)?;
    if !(0..=1).contains(&layout) {
        return Err(format!("attribute `layout` is {layout}; 0 or 1 works"));
    }
    let direction = cx.a_str("direction")?.unwrap_or_else(|| "forward".into());
    let dirs: Vec<bool> = match direction.as_str() {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        d => {
            return Err(format!(
                "attribute `direction` is \"{d}\"; forward, reverse or bidirectional works"
            ));
        }
    };
    let nd = dirs.len();
    let mut x = cx.f32_in(0)?;
    let xs = cx.ty(x).shape.clone();
    if xs.len() != 3 {
        return Err(format!("input 0 (`X`) has shape {xs:?}; expected rank 3"));
    }
    let (s, b, i) = if layout == 0 {
        (xs[0], xs[1], xs[2])
    } else {
        (xs[1], xs[0], xs[2])
    };
    let g = kind.gates();
    // Float W [nd, G*H, I] and R [nd, G*H, H]; quantized W [nd, I, G*H], R [nd, H, G*H].
    let (w, r, qw, qr) = if quant {
        let qw = qmats(cx, 1, 8, 9)?;
        let qr = qmats(cx, 2, 10, 11)?;
        (None, None, qw, qr)
    } else {
        (Some(cx.f32_in(1)?), Some(cx.f32_in(2)?), vec![], vec![])
    };
    let ws = cx.shape_of(1)?;
    let rs = cx.shape_of(2)?;
    let (ws_i, ws_gh, rs_h, rs_gh) = if quant { (1, 2, 1, 2) } else { (2, 1, 2, 1) };
    let want_w = |h: &str| {
        if quant {
            format!("[{nd}, {i}, {g} * {h}]")
        } else {
            format!("[{nd}, {g} * {h}, {i}]")
        }
    };
    if ws.len() != 3 || ws[0] != nd || ws[ws_i] != i || !ws[ws_gh].is_multiple_of(g) {
        return Err(format!(
            "input 1 (`W`) has shape {ws:?}; expected {}",
            want_w("hidden_size")
        ));
    }
    let h = ws[ws_gh] / g;
    if let Some(hs) = cx.a_opt_int("hidden_size")?
        && hs as usize != h
    {
        return Err(format!(
            "attribute `hidden_size` is {hs} but `W` has {} rows per direction ({g} gates)",
            ws[1]
        ));
    }
    if rs.len() != 3 || rs[0] != nd || rs[rs_h] != h || rs[rs_gh] != g * h {
        let want = if quant {
            format!("[{nd}, {h}, {}]", g * h)
        } else {
            format!("[{nd}, {}, {h}]", g * h)
        };
        return Err(format!("input 2 (`R`) has shape {rs:?}; expected {want}"));
    }
    if cx.has(4) {
        let lens = cx.konst_ints(4, "sequence_lens").map_err(|e| {
            format!("{e}; qcc unrolls a fixed length, so `sequence_lens` must be a constant")
        })?;
        if lens.iter().any(|&l| l != s as i64) {
            return Err(format!(
                "input 4 (`sequence_lens`) is {lens:?}; qcc unrolls every batch entry over the whole sequence ({s} steps): give no `sequence_lens` or all {s}"
            ));
        }
    }
    if kind == Kind::Lstm && cx.a_int("input_forget", 0)? != 0 {
        return Err("attribute `input_forget` = 1 (coupled input and forget gates) is not supported; 0 works".into());
    }
    if cx.attr("activation_alpha").is_some() || cx.attr("activation_beta").is_some() {
        return Err("attributes `activation_alpha`/`activation_beta` are not supported (they parametrise activations qcc does not offer here)".into());
    }
    let names: Vec<String> = match cx.a_strs("activations")? {
        Some(v) => v,
        None => kind
            .default_acts()
            .iter()
            .cycle()
            .take(kind.acts() * nd)
            .map(|s| s.to_string())
            .collect(),
    };
    if names.len() != kind.acts() * nd {
        return Err(format!(
            "attribute `activations` lists {} functions; {} per direction are needed",
            names.len(),
            kind.acts()
        ));
    }
    let acts = names
        .iter()
        .map(|n| {
            act_op(n).ok_or_else(|| {
                format!(
                    "attribute `activations`: {n} is not supported; Sigmoid, Tanh or Relu works"
                )
            })
        })
        .collect::<Result<Vec<Op>, String>>()?;
    let clip = cx.a_opt_float("clip")?;
    let linear_before_reset = kind == Kind::Gru && cx.a_int("linear_before_reset", 0)? != 0;
    // Optional inputs.
    let bias = if cx.has(3) { Some(cx.f32_in(3)?) } else { None };
    if let Some(bv) = bias
        && cx.ty(bv).shape != [nd, 2 * g * h]
    {
        return Err(format!(
            "input 3 (`B`) has shape {:?}; expected [{nd}, {}]",
            cx.ty(bv).shape,
            2 * g * h
        ));
    }
    let state =
        |cx: &mut NodeCx<'_, '_>, k: usize, what: &str| -> Result<Option<ValueId>, String> {
            if !cx.has(k) {
                return Ok(None);
            }
            let v = cx.f32_in(k)?;
            let want = if layout == 0 { [nd, b, h] } else { [b, nd, h] };
            if cx.ty(v).shape != want {
                return Err(format!(
                    "input {k} (`{what}`) has shape {:?}; expected {want:?}",
                    cx.ty(v).shape
                ));
            }
            Ok(Some(v))
        };
    let init_h = state(cx, 5, "initial_h")?;
    let init_c = if kind == Kind::Lstm {
        state(cx, 6, "initial_c")?
    } else {
        None
    };
    let peep = if kind == Kind::Lstm && cx.has(7) {
        let p = cx.f32_in(7)?;
        if cx.ty(p).shape != [nd, 3 * h] {
            return Err(format!(
                "input 7 (`P`) has shape {:?}; expected [{nd}, {}]",
                cx.ty(p).shape,
                3 * h
            ));
        }
        Some(p)
    } else {
        None
    };
    let want_y = cx.wants_output(0);
    let want_h = cx.wants_output(1);
    let want_c = kind == Kind::Lstm && cx.wants_output(2);
    let mut e = Emit { cx, n: 0 };
    if layout == 1 {
        x = e.transpose(x, &[1, 0, 2])?;
    }
    // Initial states as [nd, B, H].
    let to_dbh =
        |e: &mut Emit<'_, '_, '_>, v: Option<ValueId>| -> Result<Option<ValueId>, String> {
            match v {
                Some(v) if layout == 1 => Ok(Some(e.transpose(v, &[1, 0, 2])?)),
                v => Ok(v),
            }
        };
    let init_h = to_dbh(&mut e, init_h)?;
    let init_c = to_dbh(&mut e, init_c)?;
    let xf = e.reshape(x, &[s * b, i])?;
    // DynamicQuantizeLSTM quantizes X once, over every step (the same for both
    // directions: min and max do not depend on the order).
    let xq = if quant {
        Some(dyn_quantize(e.cx, xf, ".xq")?)
    } else {
        None
    };
    let (mut ys, mut hs, mut cs) = (Vec::new(), Vec::new(), Vec::new());
    for (d, &rev) in dirs.iter().enumerate() {
        let (wt, rt) = if quant {
            (Proj::Q(qw[d]), Proj::Q(qr[d]))
        } else {
            let (w, r) = (w.expect("float"), r.expect("float"));
            // W_d^T [I, G*H], R_d^T [H, G*H].
            let wd = e.slice(w, 0, d, d + 1)?;
            let wd = e.reshape(wd, &[g * h, i])?;
            let wt = e.transpose(wd, &[1, 0])?;
            let rd = e.slice(r, 0, d, d + 1)?;
            let rd = e.reshape(rd, &[g * h, h])?;
            (Proj::F(wt), Proj::F(e.transpose(rd, &[1, 0])?))
        };
        let cell = Cell {
            kind,
            h,
            b,
            acts: acts[d * kind.acts()..(d + 1) * kind.acts()].to_vec(),
            clip,
            linear_before_reset,
        };
        let (y, hl, cl) = direction_steps(
            &mut e, &cell, d, rev, s, xf, xq, wt, rt, bias, init_h, init_c, peep,
        )?;
        ys.push(y);
        hs.push(hl);
        if let Some(c) = cl {
            cs.push(c);
        }
    }
    // Y [S, nd, B, H] (layout 0) or [B, S, nd, H]; Y_h, Y_c [nd, B, H] or [B, nd, H].
    let y = if want_y {
        let y = e.concat(ys, 1)?;
        Some(if layout == 1 {
            e.transpose(y, &[2, 0, 1, 3])?
        } else {
            y
        })
    } else {
        None
    };
    let fin = |e: &mut Emit<'_, '_, '_>, v: Vec<ValueId>| -> Result<ValueId, String> {
        let v = e.concat(v, 0)?;
        if layout == 1 {
            e.transpose(v, &[1, 0, 2])
        } else {
            Ok(v)
        }
    };
    let yh = if want_h { Some(fin(&mut e, hs)?) } else { None };
    let yc = if want_c { Some(fin(&mut e, cs)?) } else { None };
    if let Some(y) = y {
        cx_set(e.cx, 0, y);
    }
    if let Some(v) = yh {
        cx_set(e.cx, 1, v);
    }
    if let Some(v) = yc {
        cx_set(e.cx, 2, v);
    }
    Ok(())
}

fn cx_set(cx: &mut NodeCx<'_, '_>, k: usize, v: ValueId) {
    cx.set_ir(k, v);
}

/// One direction: returns `Y` for it as [S, 1, B, H], the last `H` as [1, B, H] and
/// (LSTM) the last `C` as [1, B, H].
#[allow(clippy::too_many_arguments)]
fn direction_steps(
    e: &mut Emit<'_, '_, '_>,
    c: &Cell,
    d: usize,
    rev: bool,
    s: usize,
    xf: ValueId,
    xq: Option<(ValueId, ValueId, ValueId)>,
    wt: Proj,
    rt: Proj,
    bias: Option<ValueId>,
    init_h: Option<ValueId>,
    init_c: Option<ValueId>,
    peep: Option<ValueId>,
) -> Result<(ValueId, ValueId, Option<ValueId>), String> {
    let (h, b, g) = (c.h, c.b, c.kind.gates());
    let quant = matches!(wt, Proj::Q(_));
    // Biases [G*H] each.
    let (wb, rb) = match bias {
        Some(bv) => {
            let bd = e.slice(bv, 0, d, d + 1)?;
            let bd = e.reshape(bd, &[2 * g * h])?;
            (
                Some(e.slice(bd, 0, 0, g * h)?),
                Some(e.slice(bd, 0, g * h, 2 * g * h)?),
            )
        }
        None => (None, None),
    };
    // All steps' input projections: [S*B, G*H] (+ Wb, and Rb unless GRU's h gate needs it
    // apart).
    let mut xp = e.project(xf, xq, wt)?;
    let gru_sep = c.kind == Kind::Gru;
    // DynamicQuantizeLSTM (ONNX Runtime's order): the biases, summed, are added to
    // `X W + H R` at every step.
    let mut step_bias = None;
    if quant {
        if let (Some(wb), Some(rb)) = (wb, rb) {
            step_bias = Some(e.op(Op::Add, vec![wb, rb], vec![])?);
        }
    } else {
        if let Some(wb) = wb {
            xp = e.op(Op::Add, vec![xp, wb], vec![])?;
        }
        if let Some(rb) = rb
            && !gru_sep
        {
            xp = e.op(Op::Add, vec![xp, rb], vec![])?;
        }
    }
    let state0 =
        |e: &mut Emit<'_, '_, '_>, v: Option<ValueId>, what: &str| -> Result<ValueId, String> {
            match v {
                Some(v) => {
                    let s = e.slice(v, 0, d, d + 1)?;
                    e.reshape(s, &[b, h])
                }
                None => Ok(e.cx.f32_const(what, vec![b, h], vec![0.0; b * h])),
            }
        };
    let mut ht = state0(e, init_h, "h0")?;
    let mut ct = if c.kind == Kind::Lstm {
        Some(state0(e, init_c, "c0")?)
    } else {
        None
    };
    let peeps = match peep {
        Some(p) => {
            let pd = e.slice(p, 0, d, d + 1)?;
            let pd = e.reshape(pd, &[3 * h])?;
            Some([
                e.slice(pd, 0, 0, h)?,
                e.slice(pd, 0, h, 2 * h)?,
                e.slice(pd, 0, 2 * h, 3 * h)?,
            ])
        }
        None => None,
    };
    // DynamicQuantizeLSTM with peepholes: ONNX Runtime adds each gate's bias after its
    // peephole term, so the summed bias is added gate by gate there.
    let gate_bias = match (step_bias, peeps.is_some()) {
        (Some(sb), true) => Some([
            e.slice(sb, 0, 0, h)?,
            e.slice(sb, 0, h, 2 * h)?,
            e.slice(sb, 0, 2 * h, 3 * h)?,
            e.slice(sb, 0, 3 * h, 4 * h)?,
        ]),
        _ => None,
    };
    let step_bias = if gate_bias.is_some() { None } else { step_bias };
    let late = |e: &mut Emit<'_, '_, '_>, z: ValueId, k: usize| match gate_bias {
        Some(gb) => e.op(Op::Add, vec![z, gb[k]], vec![]),
        None => Ok(z),
    };
    // GRU's recurrent bias split: Rb_zr added with the projections, Rb_h kept apart.
    let (rb_zr, rb_h) = match (gru_sep, rb) {
        (true, Some(rb)) => (
            Some(e.slice(rb, 0, 0, 2 * h)?),
            Some(e.slice(rb, 0, 2 * h, 3 * h)?),
        ),
        _ => (None, None),
    };
    let (rt_zr, rt_h) = match (gru_sep, rt) {
        (true, Proj::F(rt)) => (
            Some(e.slice(rt, 1, 0, 2 * h)?),
            Some(e.slice(rt, 1, 2 * h, 3 * h)?),
        ),
        _ => (None, None),
    };
    let mut outs: Vec<ValueId> = vec![ht; s];
    let order: Vec<usize> = if rev {
        (0..s).rev().collect()
    } else {
        (0..s).collect()
    };
    for t in order {
        let xt = e.slice(xp, 0, t * b, (t + 1) * b)?;
        match c.kind {
            Kind::Rnn => {
                let hr = e.project(ht, None, rt)?;
                let z = e.op(Op::Add, vec![xt, hr], vec![])?;
                ht = e.act(c.acts[0], z, c.clip)?;
            }
            Kind::Lstm => {
                let hr = e.project(ht, None, rt)?;
                let mut z = e.op(Op::Add, vec![xt, hr], vec![])?;
                if let Some(sb) = step_bias {
                    z = e.op(Op::Add, vec![z, sb], vec![])?;
                }
                let gate = |e: &mut Emit<'_, '_, '_>, k: usize| e.slice(z, 1, k * h, (k + 1) * h);
                let (zi, zo, zf, zc) = (gate(e, 0)?, gate(e, 1)?, gate(e, 2)?, gate(e, 3)?);
                let cprev = ct.expect("lstm");
                let (zi, zf) = match &peeps {
                    Some([pi, _, pf]) => {
                        let a = e.op(Op::Mul, vec![cprev, *pi], vec![])?;
                        let bb = e.op(Op::Mul, vec![cprev, *pf], vec![])?;
                        let zi = e.op(Op::Add, vec![zi, a], vec![])?;
                        let zf = e.op(Op::Add, vec![zf, bb], vec![])?;
                        (late(e, zi, 0)?, late(e, zf, 2)?)
                    }
                    None => (zi, zf),
                };
                let zc = late(e, zc, 3)?;
                let it = e.act(c.acts[0], zi, c.clip)?;
                let ft = e.act(c.acts[0], zf, c.clip)?;
                let gt = e.act(c.acts[1], zc, c.clip)?;
                let keep = e.op(Op::Mul, vec![ft, cprev], vec![])?;
                let add = e.op(Op::Mul, vec![it, gt], vec![])?;
                let cnew = e.op(Op::Add, vec![keep, add], vec![])?;
                let zo = match &peeps {
                    Some([_, po, _]) => {
                        let a = e.op(Op::Mul, vec![cnew, *po], vec![])?;
                        let zo = e.op(Op::Add, vec![zo, a], vec![])?;
                        late(e, zo, 1)?
                    }
                    None => zo,
                };
                let ot = e.act(c.acts[0], zo, c.clip)?;
                let hc = e.op(c.acts[2], vec![cnew], vec![])?;
                ht = e.op(Op::Mul, vec![ot, hc], vec![])?;
                ct = Some(cnew);
            }
            Kind::Gru => {
                let (rt_zr, rt_h) = (rt_zr.expect("gru"), rt_h.expect("gru"));
                let xzr = e.slice(xt, 1, 0, 2 * h)?;
                let xh = e.slice(xt, 1, 2 * h, 3 * h)?;
                let hzr = e.op(Op::MatMul, vec![ht, rt_zr], vec![])?;
                let mut zr = e.op(Op::Add, vec![xzr, hzr], vec![])?;
                if let Some(rb) = rb_zr {
                    zr = e.op(Op::Add, vec![zr, rb], vec![])?;
                }
                let zz = e.slice(zr, 1, 0, h)?;
                let zrr = e.slice(zr, 1, h, 2 * h)?;
                let zt = e.act(c.acts[0], zz, c.clip)?;
                let rgate = e.act(c.acts[0], zrr, c.clip)?;
                let hh = if c.linear_before_reset {
                    let mut p = e.op(Op::MatMul, vec![ht, rt_h], vec![])?;
                    if let Some(rb) = rb_h {
                        p = e.op(Op::Add, vec![p, rb], vec![])?;
                    }
                    e.op(Op::Mul, vec![rgate, p], vec![])?
                } else {
                    let rh = e.op(Op::Mul, vec![rgate, ht], vec![])?;
                    let mut p = e.op(Op::MatMul, vec![rh, rt_h], vec![])?;
                    if let Some(rb) = rb_h {
                        p = e.op(Op::Add, vec![p, rb], vec![])?;
                    }
                    p
                };
                let zh = e.op(Op::Add, vec![xh, hh], vec![])?;
                let cand = e.act(c.acts[1], zh, c.clip)?;
                // H = (1 - z) * cand + z * H_prev = cand + z * (H_prev - cand).
                let diff = e.op(Op::Sub, vec![ht, cand], vec![])?;
                let zd = e.op(Op::Mul, vec![zt, diff], vec![])?;
                ht = e.op(Op::Add, vec![cand, zd], vec![])?;
            }
        }
        outs[t] = ht;
    }
    // Y for this direction: [S, 1, B, H].
    let steps: Vec<ValueId> = outs
        .into_iter()
        .map(|v| e.reshape(v, &[1, 1, b, h]))
        .collect::<Result<_, _>>()?;
    let y = e.concat(steps, 0)?;
    let hl = e.reshape(ht, &[1, b, h])?;
    let cl = match ct {
        Some(cv) => Some(e.reshape(cv, &[1, b, h])?),
        None => None,
    };
    Ok((y, hl, cl))
}
