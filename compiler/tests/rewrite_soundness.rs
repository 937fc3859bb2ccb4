//! Soundness of every rewrite rule: for each rule, small instances of its left side are
//! rewritten by that rule alone, the right side is extracted (nodes of the left side are
//! priced out, so the rule's replacement is what comes back), and both modules run
//! through the reference interpreter on random inputs. Exact rules must give identical
//! results (f32 compared bit for bit); bounded rules must stay within the bound their
//! documentation states, checked here per instance. A rule without an instance here
//! fails the test.

use std::collections::{BTreeMap, HashSet};

use egg::Language;
use qcc::rewrite::rules::all_rules;
use qcc::rewrite::{Exactness, Limits, QNode, extract_with, run_rules, to_egraph};
use qcc_ir::interp::{Tensor, TensorData, run};
use qcc_ir::verify::verify;
use qcc_ir::{ElemType, Module, parse_module};

/// How close the rewritten module must be.
#[derive(Clone, Copy, Debug)]
enum Tol {
    /// Bit-identical outputs.
    Exact,
    /// Integer outputs at most this many codes apart.
    Codes(i64),
    /// f32 outputs at most this far apart.
    Abs(f32),
}

struct Case {
    rule: &'static str,
    tol: Tol,
    text: String,
}

fn case(rule: &'static str, tol: Tol, text: &str) -> Case {
    Case {
        rule,
        tol,
        text: text.to_string(),
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }

    /// Floats with plenty of exact ties for the scales used below.
    fn float(&mut self) -> f32 {
        match self.next() % 4 {
            0 => self.range(-400, 400) as f32 * 0.0125,
            1 => self.range(-64, 64) as f32 * 0.125,
            _ => (self.range(-1_000_000, 1_000_000) as f32) * 8e-6,
        }
    }
}

fn random_input(rng: &mut Rng, ty: &qcc_ir::TensorType) -> Tensor {
    let n = ty.numel();
    match &ty.elem {
        ElemType::F32 => Tensor::f32(ty.shape.clone(), (0..n).map(|_| rng.float()).collect()),
        ElemType::Bipolar => Tensor::int(
            ty.shape.clone(),
            (0..n)
                .map(|_| if rng.next().is_multiple_of(2) { 1 } else { -1 })
                .collect(),
        ),
        e => {
            let (lo, hi) = e.code_range().unwrap();
            let (lo, hi) = (lo.max(-(1 << 20)), hi.min(1 << 20));
            Tensor::int(
                ty.shape.clone(),
                (0..n).map(|_| rng.range(lo, hi)).collect(),
            )
        }
    }
}

fn compare(rule: &str, tol: Tol, a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape != b.shape {
        return Err(format!("{rule}: shapes {:?} vs {:?}", a.shape, b.shape));
    }
    match (&a.data, &b.data, tol) {
        (TensorData::Int(x), TensorData::Int(y), Tol::Exact) if x == y => Ok(()),
        (TensorData::Int(x), TensorData::Int(y), Tol::Codes(k)) => {
            match x.iter().zip(y).find(|(p, q)| (*p - *q).abs() > k) {
                None => Ok(()),
                Some((p, q)) => Err(format!("{rule}: codes {p} vs {q} differ by more than {k}")),
            }
        }
        (TensorData::F32(x), TensorData::F32(y), _) => {
            for (&p, &q) in x.iter().zip(y) {
                let ok = match tol {
                    Tol::Exact => p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                    Tol::Abs(e) => (p - q).abs() <= e,
                    Tol::Codes(_) => false,
                };
                if !ok {
                    return Err(format!("{rule}: {p} vs {q} (tolerance {tol:?})"));
                }
            }
            Ok(())
        }
        _ => Err(format!(
            "{rule}: outputs differ: {:?} vs {:?}",
            a.data, b.data
        )),
    }
}

/// Rewrites `m` with `rule` alone and extracts its right side.
fn apply(rule: &str, m: &Module) -> Module {
    let defs = all_rules();
    let def = defs.iter().find(|d| d.name == rule).expect("rule exists");
    let conv = to_egraph(m);
    let original: Vec<QNode> = conv
        .egraph
        .classes()
        .flat_map(|c| c.nodes.iter().cloned())
        .filter(|n| matches!(n, QNode::Op(..)))
        .collect();
    let limits = Limits {
        iterations: 1,
        nodes: 10_000,
    };
    let (eg, report) = run_rules(conv.egraph, &conv.outputs, &[&def.rewrite], limits);
    assert!(
        report.applied.get(rule).copied().unwrap_or(0) > 0,
        "{rule} did not apply to\n{m}"
    );
    let old: HashSet<QNode> = original
        .into_iter()
        .map(|n| n.map_children(|c| eg.find(c)))
        .collect();
    let penalty = |n: &QNode| if old.contains(n) { 1e12 } else { 0.0 };
    let outputs: Vec<_> = conv.outputs.iter().map(|&o| eg.find(o)).collect();
    extract_with(&eg, &conv.name, &outputs, Some(&penalty))
}

fn check(c: &Case, trials: usize) {
    let m = parse_module(&c.text).unwrap_or_else(|e| panic!("{}: {e}\n{}", c.rule, c.text));
    verify(&m).unwrap_or_else(|e| panic!("{}: invalid left side:\n{e}", c.rule));
    let r = apply(c.rule, &m);
    verify(&r).unwrap_or_else(|e| panic!("{}: invalid right side:\n{e}\n{r}", c.rule));
    assert_ne!(m.to_string(), r.to_string(), "{}: nothing changed", c.rule);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ c.rule.len() as u64);
    for _ in 0..trials {
        let inputs: Vec<Tensor> = m
            .inputs
            .iter()
            .map(|&i| random_input(&mut rng, m.ty(i)))
            .collect();
        let a = run(&m, &inputs).unwrap_or_else(|e| panic!("{}: left: {e}", c.rule));
        let b = run(&r, &inputs).unwrap_or_else(|e| panic!("{}: right: {e}\n{r}", c.rule));
        for (x, y) in a.iter().zip(&b) {
            if let Err(e) = compare(c.rule, c.tol, x, y) {
                panic!("{e}\nleft:\n{m}\nright:\n{r}\ninputs: {inputs:?}");
            }
        }
    }
}

fn movers() -> Vec<Case> {
    // (op, rule suffix, quantized operand type, op line in f32 with %d/%y operand)
    let items: &[(&str, &str, &str, &str)] = &[
        (
            "max-pool",
            "q<u8, 0.05:3>[1,2,4,4]",
            "f32[1,2,2,2]",
            "max_pool(%d) {kernel = [2, 2], strides = [2, 2], pads = [0, 0, 1, 1], ceil_mode = true}",
        ),
        (
            "reshape",
            "q<i8, 0.1:-2>[2,6]",
            "f32[3,4]",
            "reshape(%d) {shape = [3, 4]}",
        ),
        (
            "flatten",
            "q<i8, axis=0, [0.1:0]>[1,2,2,2]",
            "f32[1,8]",
            "flatten(%d) {axis = 1}",
        ),
        (
            "transpose",
            "q<u4, axis=1, [0.1:0, 0.2:1, 0.3:2]>[2,3,2]",
            "f32[3,2,2]",
            "transpose(%d) {perm = [1, 2, 0]}",
        ),
        (
            "squeeze",
            "q<i8, 0.1:0>[1,3,1]",
            "f32[3]",
            "squeeze(%d) {axes = [0, 2]}",
        ),
        (
            "unsqueeze",
            "q<i8, 0.1:0>[3]",
            "f32[1,3,1]",
            "unsqueeze(%d) {axes = [0, 2]}",
        ),
        (
            "slice",
            "q<u8, 0.1:7>[4,5]",
            "f32[2,2]",
            "slice(%d) {starts = [1, 4], ends = [4, 0], axes = [0, 1], steps = [2, -2]}",
        ),
    ];
    let mut out = Vec::new();
    for &(suffix, qty, fty, line) in items {
        let shape = &qty[qty.find(">[").unwrap() + 1..];
        let down: &'static str = Box::leak(format!("dequantize-through-{suffix}").into_boxed_str());
        let up: &'static str = Box::leak(format!("quantize-through-{suffix}").into_boxed_str());
        out.push(case(
            down,
            Tol::Exact,
            &format!(
                "module m {{\n input %x: {qty}\n %d: f32{shape} = dequantize(%x)\n %p: {fty} = {line}\n output %p\n}}"
            ),
        ));
        // The up direction: quantize with the type the moved op gives the operand's type.
        let moved_ty = moved_type(qty, line);
        out.push(case(
            up,
            Tol::Exact,
            &format!(
                "module m {{\n input %d: f32{shape}\n %p: {fty} = {line}\n %q: {moved_ty} = quantize(%p)\n output %q\n}}"
            ),
        ));
    }
    out
}

/// The quantized type `op` gives when applied to a value of type `qty`.
fn moved_type(qty: &str, line: &str) -> String {
    let op_name = line.split('(').next().unwrap().trim();
    let op = qcc_ir::Op::from_name(op_name).unwrap();
    let t = qcc_ir::parse::parse_type(qty).unwrap();
    // Parse the attributes by parsing a one-node module with an f32 operand.
    let shape = &qty[qty.find(">[").unwrap() + 1..];
    let m = parse_module(&format!(
        "module t {{\n input %d: f32{shape}\n %p: f32[1] = {line}\n output %p\n}}"
    ));
    // The declared f32[1] is wrong on purpose: only the attributes are wanted.
    let attrs = m.unwrap_or_else(|e| panic!("{line}: {e}")).nodes[0]
        .attrs
        .clone();
    let a = qcc_ir::Attrs::new(op, &attrs);
    qcc_ir::typing::infer(op, &a, &[&t], &t)
        .unwrap()
        .to_string()
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        // fold-qdq
        case(
            "fold-quantize-dequantize",
            Tol::Exact,
            "module m {\n input %x: q<i8, 0.037:-5>[64]\n %d: f32[64] = dequantize(%x)\n %q: q<i8, 0.037:-5>[64] = quantize(%d) {rounding = half_up}\n output %q\n}",
        ),
        case(
            "fold-quantize-dequantize",
            Tol::Exact,
            "module m {\n input %x: q<u8 narrow, axis=0, [0.3:1, 0.0071:250]>[2,32]\n %d: f32[2,32] = dequantize(%x)\n %q: q<u8 narrow, axis=0, [0.3:1, 0.0071:250]>[2,32] = quantize(%d)\n output %q\n}",
        ),
        case(
            "binarize-dequantize",
            Tol::Exact,
            "module m {\n input %x: q<u8, axis=1, [0.02:100, 0.5:3]>[4,2]\n %d: f32[4,2] = dequantize(%x)\n %b: b1[4,2] = binarize(%d)\n output %b\n}",
        ),
        // move-scales: concat
        case(
            "dequantize-through-concat",
            Tol::Exact,
            "module m {\n input %a: q<i8, axis=0, [0.1:0, 0.2:1]>[2,3]\n input %b: q<i8, axis=0, [0.1:0, 0.2:1]>[2,2]\n %da: f32[2,3] = dequantize(%a)\n %db: f32[2,2] = dequantize(%b)\n %c: f32[2,5] = concat(%da, %db) {axis = 1}\n output %c\n}",
        ),
        case(
            "quantize-through-concat",
            Tol::Exact,
            "module m {\n input %a: f32[2,3]\n input %b: f32[1,3]\n %c: f32[3,3] = concat(%a, %b) {axis = -2}\n %q: q<u8, 0.05:128>[3,3] = quantize(%c)\n output %q\n}",
        ),
        // move-scales: selection and order (where, max, min, comparisons, arg_*, top_k)
        case(
            "dequantize-through-where",
            Tol::Exact,
            "module m {\n input %c: u1[2,3]\n input %a: q<i4, 0.1:3>[2,3]\n input %b: q<i4, 0.1:3>[3]\n %da: f32[2,3] = dequantize(%a)\n %db: f32[3] = dequantize(%b)\n %w: f32[2,3] = where(%c, %da, %db)\n output %w\n}",
        ),
        case(
            "quantize-through-where",
            Tol::Exact,
            "module m {\n input %c: u1[3,1]\n input %a: f32[3,4]\n input %b: f32[4]\n %w: f32[3,4] = where(%c, %a, %b)\n %q: q<u8, 0.05:128>[3,4] = quantize(%w)\n output %q\n}",
        ),
        case(
            "dequantize-through-max",
            Tol::Exact,
            "module m {\n input %a: q<i4, 0.5:-2>[4,3]\n input %b: q<i4, 0.5:-2>[4,1]\n %da: f32[4,3] = dequantize(%a)\n %db: f32[4,1] = dequantize(%b)\n %y: f32[4,3] = max(%da, %db)\n output %y\n}",
        ),
        case(
            "dequantize-through-min",
            Tol::Exact,
            "module m {\n input %a: q<u8, 0.02:128>[8]\n input %b: q<u8, 0.02:128>[8]\n %da: f32[8] = dequantize(%a)\n %db: f32[8] = dequantize(%b)\n %y: f32[8] = min(%da, %db)\n output %y\n}",
        ),
        case(
            "compare-codes-equal",
            Tol::Exact,
            "module m {\n input %a: q<i4, 0.25:1>[3,4]\n input %b: q<i4, 0.25:1>[4]\n %da: f32[3,4] = dequantize(%a)\n %db: f32[4] = dequantize(%b)\n %y: u1[3,4] = equal(%da, %db)\n output %y\n}",
        ),
        case(
            "compare-codes-less",
            Tol::Exact,
            "module m {\n input %a: q<i4, 0.25:1>[3,4]\n input %b: q<i4, 0.25:1>[3,4]\n %da: f32[3,4] = dequantize(%a)\n %db: f32[3,4] = dequantize(%b)\n %y: u1[3,4] = less(%da, %db)\n output %y\n}",
        ),
        case(
            "compare-codes-less-or-equal",
            Tol::Exact,
            "module m {\n input %a: q<i16, 0.001:-7>[16]\n input %b: q<i16, 0.001:-7>[1]\n %da: f32[16] = dequantize(%a)\n %db: f32[1] = dequantize(%b)\n %y: u1[16] = less_or_equal(%da, %db)\n output %y\n}",
        ),
        case(
            "arg-max-of-codes",
            Tol::Exact,
            "module m {\n input %x: q<i4, 0.3:0>[4,6]\n %d: f32[4,6] = dequantize(%x)\n %y: i32[4] = arg_max(%d) {axis = 1, keepdims = false}\n output %y\n}",
        ),
        case(
            "arg-min-of-codes",
            Tol::Exact,
            "module m {\n input %x: q<u4, 0.3:5>[4,6]\n %d: f32[4,6] = dequantize(%x)\n %y: i32[1,6] = arg_min(%d) {select_last_index = true}\n output %y\n}",
        ),
        case(
            "top-k-indices-of-codes",
            Tol::Exact,
            "module m {\n input %x: q<i4, 0.3:0>[3,7]\n %d: f32[3,7] = dequantize(%x)\n %y: i32[3,4] = top_k_indices(%d) {k = 4}\n output %y\n}",
        ),
        case(
            "dequantize-through-top-k",
            Tol::Exact,
            "module m {\n input %x: q<u8, 0.01:3>[5,4]\n %d: f32[5,4] = dequantize(%x)\n %y: f32[2,4] = top_k(%d) {axis = 0, k = 2, largest = false}\n output %y\n}",
        ),
        // absorb-clamp
        case(
            "absorb-relu-into-quantize",
            Tol::Exact,
            "module m {\n input %y: f32[64]\n %r: f32[64] = relu(%y)\n %q: q<i8, 0.05:-7>[64] = quantize(%r)\n output %q\n}",
        ),
        case(
            "absorb-relu-into-quantize",
            Tol::Exact,
            "module m {\n input %y: f32[64]\n %r: f32[64] = relu(%y)\n %q: q<u4, 0.5:3>[64] = quantize(%r) {rounding = floor}\n output %q\n}",
        ),
        // Per-channel scales with one zero point (DQA's per-channel type).
        case(
            "absorb-relu-into-quantize",
            Tol::Exact,
            "module m {\n input %y: f32[2,3,8]\n %r: f32[2,3,8] = relu(%y)\n %q: q<u6, axis=1, [0.125:2, 1.0:2, 0.0625:2]>[2,3,8] = quantize(%r)\n output %q\n}",
        ),
        case(
            "absorb-clip-into-quantize",
            Tol::Exact,
            "module m {\n input %y: f32[64]\n %c: f32[64] = clip(%y) {min = -0.33, max = 2.7}\n %q: q<i8, 0.05:4>[64] = quantize(%c)\n output %q\n}",
        ),
        case(
            "absorb-clip-into-quantize",
            Tol::Exact,
            "module m {\n input %y: f32[64]\n %c: f32[64] = clip(%y) {max = 6.0}\n %q: q<u8, 0.025:0>[64] = quantize(%c) {rounding = ceil}\n output %q\n}",
        ),
        case(
            "merge-clamp-requantize",
            Tol::Exact,
            "module m {\n input %a: i32[64]\n %r: q<u8, 0.1:5>[64] = requantize(%a) {multiplier = [1518500250], shift = [36], max = 200}\n %c: q<u8, 0.1:5>[64] = requantize(%r) {multiplier = [1], shift = [0], min = 5, max = 250}\n output %c\n}",
        ),
        // merge-requant
        case(
            "drop-identity-requantize",
            Tol::Exact,
            "module m {\n input %x: q<i4, axis=0, [0.1:0, 0.2:1]>[2,8]\n %r: q<i4, axis=0, [0.1:0, 0.2:1]>[2,8] = requantize(%x) {multiplier = [1], shift = [0], min = -8}\n output %r\n}",
        ),
        case(
            "merge-requantize-after-widen",
            Tol::Exact,
            "module m {\n input %x: q<i8, 0.1:-3>[2,16]\n %w: i32[2,16] = requantize(%x) {multiplier = [1], shift = [-4]}\n %r: q<u8, axis=0, [0.2:128, 0.3:100]>[2,16] = requantize(%w) {multiplier = [1073741824, 1518500250], shift = [31, 36], axis = 0, rounding = half_up}\n output %r\n}",
        ),
        case(
            "requantize-dequantize-quantize",
            Tol::Codes(1),
            "module m {\n input %x: q<u8, 0.1:128>[256]\n %d: f32[256] = dequantize(%x)\n %q: q<i8, 0.3:2>[256] = quantize(%d)\n output %q\n}",
        ),
        case(
            "requantize-dequantize-quantize",
            Tol::Codes(1),
            "module m {\n input %x: q<i8, axis=1, [0.5:0, 0.0123:-4]>[64,2]\n %d: f32[64,2] = dequantize(%x)\n %q: q<i4, 0.07:1>[64,2] = quantize(%d)\n output %q\n}",
        ),
        // pow2-shift
        case(
            "requantize-pow2-to-shift",
            Tol::Exact,
            "module m {\n input %a: i32[8,2]\n %r: q<i8, 1.0:3>[8,2] = requantize(%a) {multiplier = [1073741824, 4], shift = [34, 9], axis = 1, rounding = half_even}\n output %r\n}",
        ),
        // fold-bias: 2^-23 (|y| + |b|) with inputs in [-8, 8], |y| < 30, |b| <= 3.
        case(
            "fold-add-into-conv2d",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[1,2,3,3]\n const @w: f32[3,2,1,1] = [0.5, -1.25, 2.0, 0.1, -0.3, 0.7]\n const @b: f32[1,3,1,1] = [0.5, -0.25, 3.0]\n %c: f32[1,3,3,3] = conv2d(%x, @w)\n %y: f32[1,3,3,3] = add(%c, @b)\n output %y\n}",
        ),
        case(
            "fold-add-into-conv2d-commuted",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[1,2,3,3]\n const @w: f32[3,2,1,1] = [0.5, -1.25, 2.0, 0.1, -0.3, 0.7]\n const @b: f32[3,1,1] = [0.5, -0.25, 3.0]\n %c: f32[1,3,3,3] = conv2d(%x, @w)\n %y: f32[1,3,3,3] = add(@b, %c)\n output %y\n}",
        ),
        case(
            "fold-add-into-conv2d-bias",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[1,2,3,3]\n const @w: f32[3,2,1,1] = [0.5, -1.25, 2.0, 0.1, -0.3, 0.7]\n const @cb: f32[3] = [0.1, 0.2, 0.3]\n const @b: f32[1] = [0.7]\n %c: f32[1,3,3,3] = conv2d(%x, @w, @cb)\n %y: f32[1,3,3,3] = add(%c, @b)\n output %y\n}",
        ),
        case(
            "matmul-add-to-gemm",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[4,3]\n const @w: f32[3,2] = [1.5, 0.0, -2.0, 1.0, 1.0, 0.25]\n const @b: f32[1,2] = [0.1, -0.2]\n %mm: f32[4,2] = matmul(%x, @w)\n %y: f32[4,2] = add(%mm, @b)\n output %y\n}",
        ),
        case(
            "matmul-add-to-gemm-commuted",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[4,3]\n const @w: f32[3,2] = [1.5, 0.0, -2.0, 1.0, 1.0, 0.25]\n const @b: f32[2] = [0.1, -0.2]\n %mm: f32[4,2] = matmul(%x, @w)\n %y: f32[4,2] = add(@b, %mm)\n output %y\n}",
        ),
        case(
            "fold-add-into-gemm",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[4,3]\n const @w: f32[2,3] = [1.5, 0.0, -2.0, 1.0, 1.0, 0.25]\n const @b: f32[2] = [0.1, -0.2]\n %g: f32[4,2] = gemm(%x, @w) {trans_b = true, alpha = 0.5, beta = 3.0}\n %y: f32[4,2] = add(%g, @b)\n output %y\n}",
        ),
        // fuse-float: |c| sum |w x| <= 3 * 2 * 2 * 8 with inputs in [-8, 8]: 2^-23 * 96;
        // hard-swish: 2^-22 * 8.
        case(
            "fold-mul-into-conv2d",
            Tol::Abs(2e-5),
            "module m {\n input %x: f32[1,2,3,3]\n const @w: f32[3,2,1,1] = [0.5, -1.25, 2.0, 0.1, -0.3, 0.7]\n const @cb: f32[3] = [0.1, 0.2, 0.3]\n const @s: f32[1,3,1,1] = [3.0, -0.5, 1.5]\n %c: f32[1,3,3,3] = conv2d(%x, @w)\n %y: f32[1,3,3,3] = mul(@s, %c)\n output %y\n}",
        ),
        case(
            "fold-mul-into-conv2d-commuted",
            Tol::Abs(2e-5),
            "module m {\n input %x: f32[1,2,3,3]\n const @w: f32[3,2,1,1] = [0.5, -1.25, 2.0, 0.1, -0.3, 0.7]\n const @cb: f32[3] = [0.1, 0.2, 0.3]\n const @s: f32[1,3,1,1] = [3.0, -0.5, 1.5]\n %c: f32[1,3,3,3] = conv2d(%x, @w)\n %y: f32[1,3,3,3] = mul(%c, @s)\n output %y\n}",
        ),
        case(
            "fold-mul-into-conv2d-bias",
            Tol::Abs(2e-5),
            "module m {\n input %x: f32[1,2,3,3]\n const @w: f32[3,2,1,1] = [0.5, -1.25, 2.0, 0.1, -0.3, 0.7]\n const @cb: f32[3] = [0.1, 0.2, 0.3]\n const @s: f32[1,3,1,1] = [3.0, -0.5, 1.5]\n %c: f32[1,3,3,3] = conv2d(%x, @w, @cb)\n %y: f32[1,3,3,3] = mul(@s, %c)\n output %y\n}",
        ),
        case(
            "fold-mul-into-conv2d-bias-commuted",
            Tol::Abs(2e-5),
            "module m {\n input %x: f32[1,2,3,3]\n const @w: f32[3,2,1,1] = [0.5, -1.25, 2.0, 0.1, -0.3, 0.7]\n const @cb: f32[3] = [0.1, 0.2, 0.3]\n const @s: f32[1,3,1,1] = [3.0, -0.5, 1.5]\n %c: f32[1,3,3,3] = conv2d(%x, @w, @cb)\n %y: f32[1,3,3,3] = mul(%c, @s)\n output %y\n}",
        ),
        case(
            "hard-swish",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[2,5]\n const @three: f32[1] = [3.0]\n const @six: f32[1] = [6.0]\n %a: f32[2,5] = add(%x, @three)\n %c: f32[2,5] = clip(%a) {min = 0.0, max = 6.0}\n %m: f32[2,5] = mul(%x, %c)\n %y: f32[2,5] = div(%m, @six)\n output %y\n}",
        ),
        case(
            "hard-swish-mul-commuted",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[2,5]\n const @three: f32[1] = [3.0]\n const @six: f32[1] = [6.0]\n %a: f32[2,5] = add(%x, @three)\n %c: f32[2,5] = clip(%a) {min = 0.0, max = 6.0}\n %m: f32[2,5] = mul(%c, %x)\n %y: f32[2,5] = div(%m, @six)\n output %y\n}",
        ),
        case(
            "hard-swish-add-commuted",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[2,5]\n const @three: f32[1] = [3.0]\n const @six: f32[1] = [6.0]\n %a: f32[2,5] = add(@three, %x)\n %c: f32[2,5] = clip(%a) {min = 0.0, max = 6.0}\n %m: f32[2,5] = mul(%x, %c)\n %y: f32[2,5] = div(%m, @six)\n output %y\n}",
        ),
        case(
            "hard-swish-both-commuted",
            Tol::Abs(4e-6),
            "module m {\n input %x: f32[2,5]\n const @three: f32[1] = [3.0]\n const @six: f32[1] = [6.0]\n %a: f32[2,5] = add(@three, %x)\n %c: f32[2,5] = clip(%a) {min = 0.0, max = 6.0}\n %m: f32[2,5] = mul(%c, %x)\n %y: f32[2,5] = div(%m, @six)\n output %y\n}",
        ),
        // fuse-silu: silu is the written-out form (exact).
        case(
            "silu",
            Tol::Exact,
            "module m {\n input %x: f32[2,5]\n %s: f32[2,5] = sigmoid(%x)\n %y: f32[2,5] = mul(%x, %s)\n output %y\n}",
        ),
        case(
            "silu-commuted",
            Tol::Exact,
            "module m {\n input %x: f32[2,5]\n %s: f32[2,5] = sigmoid(%x)\n %y: f32[2,5] = mul(%s, %x)\n output %y\n}",
        ),
        // fold-threshold
        case(
            "binarize-batch-norm-to-threshold",
            Tol::Exact,
            "module m {\n input %x: q<i8, 0.03:5>[2,3,4]\n const @s: f32[3] = [1.0, 2.0, 0.001]\n const @b: f32[3] = [0.0, -1.0, 0.3]\n const @mu: f32[3] = [1.0, 0.5, -0.2]\n const @v: f32[3] = [1.0, 4.0, 0.01]\n %d: f32[2,3,4] = dequantize(%x)\n %n: f32[2,3,4] = batch_norm(%d, @s, @b, @mu, @v)\n %y: b1[2,3,4] = binarize(%n)\n output %y\n}",
        ),
        case(
            "sign-batch-norm-to-threshold",
            Tol::Exact,
            "module m {\n input %x: q<u4, axis=1, [0.5:3, 0.25:0]>[4,2,3]\n const @s: f32[2] = [1.0, 3.0]\n const @b: f32[2] = [0.0, 0.5]\n const @mu: f32[2] = [0.5, 0.0]\n const @v: f32[2] = [1.0, 1.0]\n %d: f32[4,2,3] = dequantize(%x)\n %n: f32[4,2,3] = batch_norm(%d, @s, @b, @mu, @v) {epsilon = 0.0}\n %y: f32[4,2,3] = sign(%n)\n output %y\n}",
        ),
        case(
            "sign-dequantize-to-threshold",
            Tol::Exact,
            "module m {\n input %x: q<u8, axis=1, [0.1:7, 0.2:0, 0.3:255]>[4,3]\n %d: f32[4,3] = dequantize(%x)\n %y: f32[4,3] = sign(%d)\n output %y\n}",
        ),
    ];
    v.extend(fusions());
    v.extend(movers());
    v.extend(qonnx_cases());
    v.extend(int_elementwise());
    v
}

/// Instances of the integer add/sub/mul, global average pool and lookup rules.
fn int_elementwise() -> Vec<Case> {
    let bin = |op: &str, a: &str, b: &str, y: &str| {
        format!(
            "module m {{\n input %a: {a}[2,3,4]\n input %b: {b}[2,3,4]\n %da: f32[2,3,4] = dequantize(%a)\n %db: f32[2,3,4] = dequantize(%b)\n %s: f32[2,3,4] = {op}(%da, %db)\n %q: {y}[2,3,4] = quantize(%s)\n output %q\n}}"
        )
    };
    let unary = |op: &str, attrs: &str, x: &str, y: &str| {
        format!(
            "module m {{\n input %x: {x}[3,5]\n %d: f32[3,5] = dequantize(%x)\n %f: f32[3,5] = {op}(%d){attrs}\n %q: {y}[3,5] = quantize(%f)\n output %q\n}}"
        )
    };
    let mut v = vec![
        case(
            "int-add",
            Tol::Codes(1),
            &bin(
                "add",
                "q<u8, 0.0292:13>",
                "q<u8, 0.1075:118>",
                "q<u8, 0.0636:0>",
            ),
        ),
        case(
            "int-add",
            Tol::Codes(1),
            &bin("add", "q<i8, 0.05:-3>", "q<i4, 0.5:1>", "q<i8, 0.125:0>"),
        ),
        case(
            "int-sub",
            Tol::Codes(1),
            &bin(
                "sub",
                "q<i8, 0.02:0>",
                "q<u8, 0.03:128>",
                "q<i16, 0.001:-7>",
            ),
        ),
        case(
            "int-mul",
            Tol::Codes(1),
            &bin(
                "mul",
                "q<u8, 0.0601:137>",
                "q<u8, 0.003921569:0>",
                "q<u8, 0.0292:13>",
            ),
        ),
        case(
            "int-global-avg-pool",
            Tol::Codes(1),
            "module m {\n input %x: q<u8, 0.0636:3>[2,3,4,5]\n %d: f32[2,3,4,5] = dequantize(%x)\n %p: f32[2,3,1,1] = global_avg_pool(%d)\n %q: q<u8, 0.0216:0>[2,3,1,1] = quantize(%p)\n output %q\n}",
        ),
    ];
    for (rule, op, attrs, x, y) in [
        ("lookup-relu", "relu", "", "q<i8, 0.1:2>", "q<u8, 0.05:0>"),
        (
            "lookup-clip",
            "clip",
            " {min = -0.5, max = 2.0}",
            "q<u8, 0.02:100>",
            "q<i8, 0.02:-3>",
        ),
        (
            "lookup-leaky-relu",
            "leaky_relu",
            " {alpha = 0.1}",
            "q<u8, 0.0446:149>",
            "q<u8, 0.0211:31>",
        ),
        (
            "lookup-sigmoid",
            "sigmoid",
            "",
            "q<i8, 0.0625:0>",
            "q<u8, 0.00390625:0>",
        ),
        (
            "lookup-hard-sigmoid",
            "hard_sigmoid",
            " {alpha = 0.1666667, beta = 0.5}",
            "q<u8, 0.0601:137>",
            "q<u8, 0.003921569:0>",
        ),
        (
            "lookup-hard-swish",
            "hard_swish",
            "",
            "q<i4, 0.5:0>",
            "q<i8, 0.05:-10>",
        ),
        ("lookup-exp", "exp", "", "q<i8, 0.02:0>", "q<u8, 0.04:0>"),
        ("lookup-sqrt", "sqrt", "", "q<u8, 0.1:10>", "q<u8, 0.1:0>"),
        ("lookup-sign", "sign", "", "q<u4, 0.3:7>", "q<i2, 1.0:0>"),
        ("lookup-abs", "abs", "", "q<i8, 0.05:3>", "q<u8, 0.05:0>"),
        ("lookup-neg", "neg", "", "q<u8, 0.1:20>", "q<i8, 0.1:0>"),
        ("lookup-floor", "floor", "", "q<i8, 0.13:0>", "q<i8, 1.0:0>"),
        ("lookup-ceil", "ceil", "", "q<u6, 0.21:9>", "q<i8, 1.0:2>"),
        (
            "lookup-round",
            "round",
            "",
            "q<i8, 0.25:-3>",
            "q<i8, 1.0:0>",
        ),
        ("lookup-log", "log", "", "q<u8, 0.05:0>", "q<i8, 0.05:30>"),
        (
            "lookup-tanh",
            "tanh",
            "",
            "q<i8, 0.03:0>",
            "q<i8, 0.0078125:0>",
        ),
        (
            "lookup-erf",
            "erf",
            "",
            "q<i8, 0.02:0>",
            "q<i8, 0.0078125:0>",
        ),
        (
            "lookup-silu",
            "silu",
            "",
            "q<u8, 0.05:128>",
            "q<u8, 0.03:10>",
        ),
    ] {
        v.push(case(rule, Tol::Exact, &unary(op, attrs, x, y)));
    }
    v
}

/// Instances of the rules for imported QONNX layers: batch norm into weight scales,
/// bipolar operands, casts of b1 codes, thresholds on accumulators and codes.
fn qonnx_cases() -> Vec<Case> {
    let bn = |bias: &str, extra: &str| {
        format!(
            "module m {{\n input %x: q<u8, 0.05:10>[2,3,4,4]\n const @w: q<i4 narrow, axis=0, [0.25:0, 0.5:0]>[2,3,3,3] = [{}]\n const @cb: f32[2] = [0.3, -1.5]\n const @g: f32[2] = [1.7, 0.4]\n const @b: f32[2] = [-0.2, 0.9]\n const @mu: f32[2] = [0.5, -3.0]\n const @v: f32[2] = [2.5, 0.3]\n %dx: f32[2,3,4,4] = dequantize(%x)\n %dw: f32[2,3,3,3] = dequantize(@w)\n %c: f32[2,2,4,4] = conv2d(%dx, %dw{bias}) {{pads = [1, 1, 1, 1]}}\n %n: f32[2,2,4,4] = batch_norm(%c, @g, @b, @mu, @v){extra}\n output %n\n}}",
            (0..54)
                .map(|i| ((i * 5 % 15) as i64 - 7).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let bip = |op: &str| {
        let (shape, w, line) = match op {
            "conv" => (
                "[1,3,4,4]",
                "const @w: q<i2 narrow, axis=0, [0.1:0, 0.3:0]>[2,3,3,3] = [1, -1, 1, 1, -1, -1, 1, 1, 1, -1, -1, -1, 1, -1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, -1, 1, -1, -1, 1, 1, 1, -1, -1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1, -1, 1, 1, -1, -1, 1, 1, 1]",
                "%acc: i32[1,2,4,4] = conv2d_int(%cx, @w{B}) {pads = [1, 1, 1, 1]}",
            ),
            _ => (
                "[3,4]",
                "const @w: q<i8, 0.5:0>[4,2] = [1, 2, 3, 4, -5, 6, 7, -8]",
                "%acc: i32[3,2] = matmul_int(%cx, @w{B})",
            ),
        };
        move |bias: bool| {
            let line = line.replace("{B}", if bias { ", @ib" } else { "" });
            format!(
                "module m {{\n input %x: b1{shape}\n {w}\n const @ib: i32[2] = [5, -7]\n %cx: q<i2 narrow, 1.0:0>{shape} = cast(%x)\n {line}\n output %acc\n}}"
            )
        }
    };
    // XNOR-Net's per-channel scale after a conv: `mul(conv2d(..), alpha)`, either order,
    // alpha per channel ([1,M,1,1] or [M,1,1]) or one value.
    let mul = |bias: &str, alpha: &str, commuted: bool| {
        let (a_ty, a_vals) = match alpha {
            "nchw" => ("[1,2,1,1]", "[0.07, 1.3]"),
            "chw" => ("[2,1,1]", "[1.1, 0.02]"),
            _ => ("[1]", "[0.6]"),
        };
        let prod = if commuted {
            "mul(@a, %c)"
        } else {
            "mul(%c, @a)"
        };
        format!(
            "module m {{\n input %x: q<u8, 0.05:10>[2,3,4,4]\n const @w: q<i4 narrow, axis=0, [0.25:0, 0.5:0]>[2,3,3,3] = [{}]\n const @cb: f32[2] = [0.3, -1.5]\n const @a: f32{a_ty} = {a_vals}\n %dx: f32[2,3,4,4] = dequantize(%x)\n %dw: f32[2,3,3,3] = dequantize(@w)\n %c: f32[2,2,4,4] = conv2d(%dx, %dw{bias}) {{pads = [1, 1, 1, 1]}}\n %n: f32[2,2,4,4] = {prod}\n output %n\n}}",
            (0..54)
                .map(|i| ((i * 5 % 15) as i64 - 7).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let conv = bip("conv");
    let mm = bip("matmul");
    let cast_mover = |line: &str, out_ty: &str| {
        format!(
            "module m {{\n input %x: b1[2,3,4,4]\n %c: q<i2 narrow, 0.5:0>[2,3,4,4] = cast(%x)\n %y: q<i2 narrow, 0.5:0>{out_ty} = {line}\n %d: f32{out_ty} = dequantize(%y)\n output %d\n}}"
        )
    };
    // K = 27, max|x| = 245 * 0.05, max|w'| = 7 * 0.5 * a with a <= 0.8: 27*12.25*2.8*2^-21
    // ~ 4.4e-4, plus the batch norm's f32 steps on values below ~300 (~1e-4).
    vec![
        case(
            "fold-batch-norm-into-weight-scale",
            Tol::Abs(1e-3),
            &bn("", ""),
        ),
        case(
            "fold-batch-norm-into-weight-scale-bias",
            Tol::Abs(1e-3),
            &bn(", @cb", " {epsilon = 0.001}"),
        ),
        // K = 27, max|x| = 12.25, max|w'| = 7 * 0.5 * 1.3: 27*12.25*4.55*2^-21 ~ 7.2e-4,
        // plus the product's rounding on values below ~1600 (~1e-4).
        case(
            "fold-mul-into-weight-scale",
            Tol::Abs(1e-3),
            &mul("", "nchw", false),
        ),
        case(
            "fold-mul-into-weight-scale-commuted",
            Tol::Abs(1e-3),
            &mul("", "chw", true),
        ),
        case(
            "fold-mul-into-weight-scale-bias",
            Tol::Abs(1e-3),
            &mul(", @cb", "scalar", false),
        ),
        case(
            "fold-mul-into-weight-scale-bias-commuted",
            Tol::Abs(1e-3),
            &mul(", @cb", "nchw", true),
        ),
        case("conv2d-int-bipolar-operands", Tol::Exact, &conv(false)),
        case("conv2d-int-bias-bipolar-operands", Tol::Exact, &conv(true)),
        case("matmul-int-bipolar-operands", Tol::Exact, &mm(false)),
        case("matmul-int-bias-bipolar-operands", Tol::Exact, &mm(true)),
        case(
            "bipolar-cast-through-max-pool",
            Tol::Exact,
            &cast_mover(
                "max_pool(%c) {kernel = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]}",
                "[2,3,2,2]",
            ),
        ),
        case(
            "bipolar-cast-through-reshape",
            Tol::Exact,
            &cast_mover("reshape(%c) {shape = [2, 48]}", "[2,48]"),
        ),
        case(
            "bipolar-cast-through-flatten",
            Tol::Exact,
            &cast_mover("flatten(%c)", "[2,48]"),
        ),
        // Wide codes: thresholds by bisection on an i32 accumulator.
        case(
            "binarize-batch-norm-to-threshold",
            Tol::Exact,
            "module m {\n input %x: q<i32, axis=1, [0.003:0, 0.5:0, 1e-6:0]>[2,3,4]\n const @s: f32[3] = [1.0, 0.0, 3.0]\n const @b: f32[3] = [0.1, 1.0, 0.3]\n const @mu: f32[3] = [1.0, 0.5, -0.2]\n const @v: f32[3] = [1.0, 4.0, 0.01]\n %d: f32[2,3,4] = dequantize(%x)\n %n: f32[2,3,4] = batch_norm(%d, @s, @b, @mu, @v)\n %y: b1[2,3,4] = binarize(%n)\n output %y\n}",
        ),
        // Multi-thresholds: quantize after batch norm (and relu), on an i32 accumulator
        // (bisection) and on 4-bit codes (every code evaluated).
        case(
            "quantize-batch-norm-to-threshold",
            Tol::Exact,
            "module m {\n input %x: q<i32, 0.004:0>[2,3,4]\n const @s: f32[3] = [1.0, 0.001, 3.0]\n const @b: f32[3] = [0.1, 1.0, -0.3]\n const @mu: f32[3] = [1.0, 0.5, -0.2]\n const @v: f32[3] = [1.0, 4.0, 0.01]\n %d: f32[2,3,4] = dequantize(%x)\n %n: f32[2,3,4] = batch_norm(%d, @s, @b, @mu, @v)\n %q: q<i4 narrow, 0.5:-1>[2,3,4] = quantize(%n) {rounding = half_up}\n output %q\n}",
        ),
        case(
            "quantize-relu-batch-norm-to-threshold",
            Tol::Exact,
            "module m {\n input %x: q<i4, axis=1, [0.3:1, 0.1:0, 0.7:-2]>[2,3,4]\n const @s: f32[3] = [1.0, 0.5, 3.0]\n const @b: f32[3] = [0.1, -0.5, -0.3]\n const @mu: f32[3] = [1.0, 0.5, -0.2]\n const @v: f32[3] = [1.0, 4.0, 0.01]\n %d: f32[2,3,4] = dequantize(%x)\n %n: f32[2,3,4] = batch_norm(%d, @s, @b, @mu, @v)\n %r: f32[2,3,4] = relu(%n)\n %q: q<u2, 0.25:0>[2,3,4] = quantize(%r)\n output %q\n}",
        ),
        case(
            "binarize-integer-to-threshold",
            Tol::Exact,
            "module m {\n input %x: q<i4, axis=1, [0.1:-3, 0.2:0, 0.3:5]>[2,3,4]\n %y: b1[2,3,4] = binarize(%x)\n output %y\n}",
        ),
        // The binarized input of a post-training 1-bit layer: sign of 8-bit codes
        // centred by a threshold (per-tensor and per-channel codes).
        case(
            "binarize-centered-dequantize-to-threshold",
            Tol::Exact,
            "module m {\n input %x: q<u8, 0.0213:7>[2,3,4]\n const @t: f32[1] = [0.7391]\n %d: f32[2,3,4] = dequantize(%x)\n %c: f32[2,3,4] = sub(%d, @t)\n %y: b1[2,3,4] = binarize(%c)\n output %y\n}",
        ),
        case(
            "binarize-centered-dequantize-to-threshold",
            Tol::Exact,
            "module m {\n input %x: q<i4, axis=1, [0.1:-3, 0.2:0, 0.3:5]>[2,3,4]\n const @t: f32[1] = [-0.25]\n %d: f32[2,3,4] = dequantize(%x)\n %c: f32[2,3,4] = sub(%d, @t)\n %y: b1[2,3,4] = binarize(%c)\n output %y\n}",
        ),
        // A threshold on requantized accumulators: on the accumulator itself (per-tensor
        // and per-channel requantize, every rounding of ties, clamps, thresholds at the
        // ends of the code range).
        case(
            "threshold-of-requantize",
            Tol::Exact,
            "module m {\n input %a: b1[2,4,3,3]\n const @w: b1[3,4,1,1] = [1, -1, 1, 1, -1, -1, 1, -1, 1, 1, 1, 1]\n %x: i32[2,3,3,3] = conv2d_int(%a, @w)\n const @t: i32[1,1] = [5]\n %r: q<u8, 0.1:0>[2,3,3,3] = requantize(%x) {multiplier = [1073741824], shift = [28]}\n %y: b1[2,3,3,3] = threshold(%r, @t)\n output %y\n}",
        ),
        case(
            "threshold-of-requantize",
            Tol::Exact,
            "module m {\n input %a: b1[5,7]\n const @w: b1[7,3] = [1, -1, 1, 1, -1, -1, 1, -1, 1, 1, 1, 1, -1, -1, -1, 1, 1, -1, -1, 1, 1]\n const @b: i32[3] = [0, 1, -2]\n %x: i32[5,3] = matmul_int(%a, @w, @b)\n const @t: i32[3,3] = [-128, 0, 127, -3, 0, 2, 5, 6, 40]\n %r: q<i8, 0.1:2>[5,3] = requantize(%x) {multiplier = [1073741824, 3, 2000000000], shift = [29, 1, 28], axis = 1, rounding = half_up, min = -100}\n %y: i8[5,3] = threshold(%r, @t) {offset = -1}\n output %y\n}",
        ),
        case(
            "threshold-of-relabel-cast",
            Tol::Exact,
            "module m {\n input %x: i32[2,3,4]\n const @t: i32[3,2] = [-5, 7, 0, 0, 100, 200]\n %c: q<i32, 0.5:0>[2,3,4] = cast(%x)\n %y: i8[2,3,4] = threshold(%c, @t) {offset = -1}\n output %y\n}",
        ),
    ]
}

/// Instances of the fusions. Float-output bounds: `(0.5 + K*max|x-zx|*max|w-zw|*2^-22)`
/// accumulator steps (`sx*sw`) plus 2^-22 of the result, computed per instance below.
fn fusions() -> Vec<Case> {
    let conv = |tail: &str, bias: &str, out: &str| {
        format!(
            "module m {{\n input %x: q<u8, 0.05:10>[2,3,5,5]\n const @w: q<i8, axis=0, [0.01:0, 0.02:1, 0.005:-2, 0.03:0]>[4,3,3,3] = [{}]\n const @b: f32[4] = [0.1, -0.2, 0.05, 1.3]\n %dx: f32[2,3,5,5] = dequantize(%x)\n %dw: f32[4,3,3,3] = dequantize(@w)\n %c: f32[2,4,3,3] = conv2d(%dx, %dw{bias}) {{strides = [2, 2], pads = [1, 1, 1, 1]}}\n{tail}\n output {out}\n}}",
            (0..108)
                .map(|i| ((i * 37 % 255) as i64 - 127).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let q = " %q: q<u8, 0.1:3>[2,4,3,3] = quantize(%c)";
    let gemm = |bias: &str, tail: &str, out: &str| {
        format!(
            "module m {{\n input %x: q<i8, 0.1:-1>[3,6]\n const @w: q<i4, axis=0, [0.5:0, 0.25:1, 0.125:0]>[3,6] = [1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6, 7, -8, 7, -8, 0, 1]\n const @b: f32[1,3] = [1.0, 2.0, -3.0]\n %dx: f32[3,6] = dequantize(%x)\n %dw: f32[3,6] = dequantize(@w)\n %y: f32[3,3] = gemm(%dx, %dw{bias}) {{trans_b = true}}\n{tail}\n output {out}\n}}"
        )
    };
    let matmul = |tail: &str, out: &str| {
        format!(
            "module m {{\n input %a: q<i8, 0.1:2>[2,4,5]\n input %b: q<u4, axis=1, [0.5:0, 0.25:3]>[5,2]\n %da: f32[2,4,5] = dequantize(%a)\n %db: f32[5,2] = dequantize(%b)\n %y: f32[2,4,2] = matmul(%da, %db)\n{tail}\n output {out}\n}}"
        )
    };
    // conv: K = 27, max|x-zx| = 245, max|w-zw| = 130 -> 27*245*130*2^-22 ~ 0.21; steps up
    // to 0.05*0.03 = 0.0015 -> 0.71 * 0.0015 ~ 1.1e-3, results below ~130 -> 3.1e-5.
    // gemm: K = 6, 128*9 -> ~1.6e-3 steps; steps up to 0.05 -> 0.026; results < 300 -> 7e-5.
    // matmul: K = 5, 130*15 -> tiny; steps up to 0.05 -> 0.026; results < 100.
    // A layer split into a 2-bit and an 8-bit filter group (`--sq-ratio`), joined whole
    // and in group order, or by slices in another order (one group without bias).
    let split = |bias2: &str, join: &str| {
        let codes = |n: usize, lo: i64, hi: i64| {
            (0..n)
                .map(|i| (lo + (i as i64 * 7) % (hi - lo + 1)).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "module m {{\n input %x: q<u8, 0.05:10>[1,3,5,5]\n const @w1: q<i2 narrow, axis=0, [0.5:0, 0.25:0]>[2,3,3,3] = [{}]\n const @w2: q<i8 narrow, axis=0, [0.01:0, 0.02:0, 0.005:0]>[3,3,3,3] = [{}]\n const @b1: i32[2] = [5, -7]\n const @b2: i32[3] = [100, -3, 40]\n %a1: i32[1,2,5,5] = conv2d_int(%x, @w1, @b1) {{pads = [1, 1, 1, 1]}}\n %a2: i32[1,3,5,5] = conv2d_int(%x, @w2{bias2}) {{pads = [1, 1, 1, 1]}}\n %r1: q<u8, 0.1:3>[1,2,5,5] = requantize(%a1) {{multiplier = [1288490189, 1717986918], shift = [32, 33], axis = 1, min = 3}}\n %r2: q<u8, 0.1:3>[1,3,5,5] = requantize(%a2) {{multiplier = [1374389535], shift = [38], min = 3}}\n{join}\n output %c\n}}",
            codes(54, -1, 1),
            codes(81, -127, 127)
        )
    };
    vec![
        case(
            "merge-split-conv2d",
            Tol::Exact,
            &split(
                ", @b2",
                " %c: q<u8, 0.1:3>[1,5,5,5] = concat(%r1, %r2) {axis = 1}",
            ),
        ),
        case(
            "merge-split-conv2d",
            Tol::Exact,
            &split(
                "",
                " %s1: q<u8, 0.1:3>[1,1,5,5] = slice(%r1) {axes = [1], starts = [1], ends = [2], steps = [1]}\n %s2: q<u8, 0.1:3>[1,2,5,5] = slice(%r2) {axes = [1], starts = [0], ends = [2], steps = [1]}\n %s3: q<u8, 0.1:3>[1,1,5,5] = slice(%r1) {axes = [1], starts = [0], ends = [1], steps = [1]}\n %s4: q<u8, 0.1:3>[1,1,5,5] = slice(%r2) {axes = [1], starts = [2], ends = [3], steps = [1]}\n %c: q<u8, 0.1:3>[1,5,5,5] = concat(%s1, %s2, %s3, %s4) {axis = 1}",
            ),
        ),
        case("fuse-conv2d-requantize", Tol::Codes(1), &conv(q, "", "%q")),
        case(
            "fuse-conv2d-bias-requantize",
            Tol::Codes(1),
            &conv(q, ", @b", "%q"),
        ),
        case(
            "fuse-conv2d-dequantize",
            Tol::Abs(1.2e-3),
            &conv("", "", "%c"),
        ),
        case(
            "fuse-conv2d-bias-dequantize",
            Tol::Abs(1.2e-3),
            &conv("", ", @b", "%c"),
        ),
        case(
            "fuse-gemm-requantize",
            Tol::Codes(1),
            &gemm("", " %q: q<i8, 0.3:0>[3,3] = quantize(%y)", "%q"),
        ),
        case(
            "fuse-gemm-bias-requantize",
            Tol::Codes(1),
            &gemm(
                ", @b",
                " %q: q<i8, axis=1, [0.3:0, 0.2:5, 0.7:-1]>[3,3] = quantize(%y)",
                "%q",
            ),
        ),
        case("fuse-gemm-dequantize", Tol::Abs(0.027), &gemm("", "", "%y")),
        case(
            "fuse-gemm-bias-dequantize",
            Tol::Abs(0.027),
            &gemm(", @b", "", "%y"),
        ),
        case(
            "fuse-matmul-requantize",
            Tol::Codes(1),
            &matmul(
                " %q: q<i8, 0.2:0>[2,4,2] = quantize(%y) {rounding = half_down}",
                "%q",
            ),
        ),
        case("fuse-matmul-dequantize", Tol::Abs(0.027), &matmul("", "%y")),
    ]
}

#[test]
fn every_rule_has_an_instance() {
    let cases = cases();
    let covered: HashSet<&str> = cases.iter().map(|c| c.rule).collect();
    let missing: Vec<&str> = all_rules()
        .iter()
        .map(|r| r.name)
        .filter(|n| !covered.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a soundness instance: {missing:?}"
    );
    // Exact rules are checked bit for bit.
    let exactness: BTreeMap<&str, Exactness> =
        all_rules().iter().map(|r| (r.name, r.exactness)).collect();
    for c in &cases {
        if exactness[c.rule] == Exactness::Exact {
            assert!(
                matches!(c.tol, Tol::Exact),
                "{} is exact but tested with {:?}",
                c.rule,
                c.tol
            );
        }
    }
}

#[test]
fn rules_are_sound() {
    for c in cases() {
        check(&c, 60);
    }
}

/// `threshold-of-requantize` moves thresholds onto accumulator codes by bisection: an
/// off-by-one there shows only at the threshold codes themselves, which random inputs
/// rarely hit, so both sides also run on every accumulator code in [-600, 601] (a binary
/// matmul whose rows count down the +1s, with biases 0 and 1 for both parities), in
/// every rounding mode of the requantize.
#[test]
fn threshold_of_requantize_at_every_code() {
    let (rows, k) = (601usize, 600usize);
    let a: Vec<i64> = (0..rows)
        .flat_map(|r| (0..k).map(move |j| if j < r { -1 } else { 1 }))
        .collect();
    for rounding in [
        "half_even",
        "half_up",
        "half_down",
        "floor",
        "ceil",
        "down",
        "up",
    ] {
        let w = vec!["1"; k * 6].join(", ");
        let text = format!(
            "module m {{\n input %a: b1[{rows},{k}]\n const @w: b1[{k},6] = [{w}]\n const @b: i32[6] = [0, 1, 0, 1, 0, 1]\n %x: i32[{rows},6] = matmul_int(%a, @w, @b)\n const @t: i32[6,3] = [-128, 0, 127, -3, 0, 2, 5, 6, 40, -50, -49, 60, -1, 0, 1, -100, 0, 100]\n %r: q<i8, 0.1:2>[{rows},6] = requantize(%x) {{multiplier = [1073741824, 1073741824, 1288490189, 1288490189, 858993459, 858993459], shift = [32, 32, 32, 32, 31, 31], axis = 1, rounding = {rounding}, min = -100}}\n %y: i8[{rows},6] = threshold(%r, @t) {{offset = -1}}\n output %y\n}}"
        );
        let m = parse_module(&text).unwrap();
        let r = apply("threshold-of-requantize", &m);
        let x = Tensor::int(vec![rows, k], a.clone());
        let left = run(&m, std::slice::from_ref(&x)).unwrap();
        let right = run(&r, &[x]).unwrap();
        let (TensorData::Int(p), TensorData::Int(q)) = (&left[0].data, &right[0].data) else {
            panic!("integer results expected");
        };
        if let Some(i) = (0..p.len()).find(|&i| p[i] != q[i]) {
            panic!(
                "{rounding}: row {} channel {}: left {}, right {}",
                i / 6,
                i % 6,
                p[i],
                q[i]
            );
        }
    }
}

/// A conv2d whose bias is infinite or too large for an i32 accumulator bias is not
/// fused, and the rule does not fail on it (it once overflowed computing the bias codes'
/// magnitude: `abs` of `i64::MIN` from a `-inf` bias code; PP-OCRv4 rec at `--bits 4`).
#[test]
fn bias_beyond_i32_is_not_fused() {
    for bias in ["1.0e30", "inf", "-inf", "3.0e9", "-3.0e9"] {
        let text = format!(
            "module m {{\n input %x: q<u8, 0.05:0>[1,1,3,3]\n const @w: q<i8, 0.01:0>[2,1,1,1] = [1, -1]\n const @b: f32[2] = [{bias}, 1.0]\n %dx: f32[1,1,3,3] = dequantize(%x)\n %dw: f32[2,1,1,1] = dequantize(@w)\n %c: f32[1,2,3,3] = conv2d(%dx, %dw, @b)\n %q: q<u8, 0.1:3>[1,2,3,3] = quantize(%c)\n output %q\n}}"
        );
        let m = parse_module(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut r = m.clone();
        qcc::rewrite::run_groups(&mut r, &["fuse-int"], &qcc::rewrite::Options::default()).unwrap();
        assert!(
            !r.nodes.iter().any(|n| n.op == qcc_ir::Op::Conv2dInt),
            "bias {bias} fused:\n{r}"
        );
    }
}
