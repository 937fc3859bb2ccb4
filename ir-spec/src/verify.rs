//! The verifier: checks a module is well formed and reports every violation at once.
//!
//! Invariants checked, in the order they are checked:
//!
//! 1. **Module name**: the module's name is a valid name starting with a letter or `_`
//!    ([`is_valid_module_name`]).
//! 2. **Value names**: every value's name is valid and no two values share a name
//!    (inputs, constants and node results share one namespace).
//! 3. **Types**: every value's type passes [`verify_types`]:
//!    - 3a. integer and quantized storage has a valid bit-width ([`IntType::is_valid`]);
//!    - 3b. `narrow` is a flag of quantized types only (plain integers cannot carry
//!      it) and needs a storage of at least 2 bits;
//!    - 3c. a quantized type has as many zero points as scales;
//!    - 3d. scales are positive and finite;
//!    - 3e. zero points lie within the storage range;
//!    - 3f. the axis of per-axis and blocked parameters is below the rank;
//!    - 3g. per-axis parameters number the axis's dimension;
//!    - 3h. blocked parameters have `block_size > 0` and number
//!      [`QuantParams::expected_count`];
//!    - 3i. `pow2` is set only when every scale is an exact power of two;
//!    - 3j. the element count (the product of the shape) is at most `i64::MAX`, so
//!      size arithmetic cannot overflow (the other type checks are skipped otherwise).
//! 4. **Constants**: the data of a constant has `numel` entries; f32 types hold float
//!    data and every other type integer codes; every code is admitted by the element
//!    type ([`ElemType::admits`]: within the narrow-aware range, +-1 for `b1`).
//! 5. **Definitions**: a value defined as `ValueDef::Node(n)` names an existing node
//!    whose result it is; a value defined as `ValueDef::Input` is listed among the
//!    inputs.
//! 6. **Inputs**: every listed input is in range, is defined as `ValueDef::Input` and is
//!    listed once.
//! 7. **Node results**: every node's result is in range and is defined by that node
//!    (`ValueDef::Node(n)`), so every value is defined exactly once.
//! 8. **Operands**: every operand is in range, and an operand defined by a node is
//!    defined by an earlier node (nodes are in topological order; inputs and constants
//!    are defined before every node).
//! 9. **Arity**: the operand count fits the op table's slots
//!    ([`Arity`](crate::ops::Arity): `One` exactly one, `Optional` zero or one,
//!    `Variadic` one or more).
//! 10. **Attributes**: no attribute the op does not declare, every required attribute
//!     present, every value of the declared kind (`Float` also accepts an integer,
//!     `Floats` a list of integers), every enum word one of the declared words.
//! 11. **Result type**: the declared result type equals [`typing::infer`]'s. This rule
//!     is skipped for a node that already broke 7, 9 or 10, has an operand out of range,
//!     or has an operand or result of an invalid type (3), so one mistake is reported
//!     once. (A use before definition does not skip it: the operand's type is known.)
//! 12. **Constant operands**: where an op constrains operand data and the operand is a
//!     constant, the data obeys: the thresholds `t` of `threshold` are sorted
//!     (non-decreasing) along K; the `scale` of `fake_quant` and the `scale` and
//!     `out_scale` of `trunc` are positive and finite.
//! 13. **Outputs**: there is at least one output and every output is in range.
//!
//! Errors are collected, not returned at the first one; [`VerifyErrors`] prints the
//! module with each message under the line it is about.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::module::{Attr, ConstData, Module, NodeId, ValueDef, ValueId};
use crate::ops::{AttrDefault, AttrKind, Attrs, Op};
use crate::print::{LineKind, is_valid_module_name, is_valid_name, write_attr};
use crate::types::{ElemType, IntType, QuantParams, TensorType};
use crate::typing;

/// What a diagnostic is about; decides the line it is printed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The module as a whole (printed under the `module` line).
    Module,
    /// A value (printed under its input, const or node line).
    Value(ValueId),
    /// A node (printed under its line).
    Node(NodeId),
}

/// One violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
}

/// Every violation found in a module, and the module's text with each message printed
/// under the line it is about.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyErrors {
    pub diagnostics: Vec<Diagnostic>,
    pub listing: String,
}

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        writeln!(
            f,
            "verification failed with {n} error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        f.write_str(&self.listing)
    }
}

// `unwrap()` and `{:?}` show the listing, which is what one wants to read.
impl fmt::Debug for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for VerifyErrors {}

/// Checks every invariant of the module doc and reports all violations.
pub fn verify(m: &Module) -> Result<(), VerifyErrors> {
    let mut v = Verifier {
        m,
        diags: Vec::new(),
    };
    v.run();
    if v.diags.is_empty() {
        Ok(())
    } else {
        let listing = render(m, &v.diags);
        Err(VerifyErrors {
            diagnostics: v.diags,
            listing,
        })
    }
}

/// The checks of invariant 3 on one type: the messages of every violation (empty when
/// the type is valid).
pub fn verify_types(t: &TensorType) -> Vec<String> {
    let mut errs = Vec::new();
    if checked_numel(&t.shape).is_none() {
        errs.push(format!(
            "shape {:?} has more than {} elements",
            t.shape,
            i64::MAX
        ));
        return errs;
    }
    match &t.elem {
        ElemType::F32 | ElemType::Bipolar => {}
        ElemType::Int(it) => {
            if !it.is_valid() {
                errs.push(bad_bits(*it));
            }
        }
        ElemType::Quant(q) => {
            let storage_ok = q.storage.is_valid();
            if !storage_ok {
                errs.push(bad_bits(q.storage));
            }
            if q.narrow && q.storage.bits < 2 {
                errs.push(format!(
                    "a narrow range needs at least 2 bits of storage; {} narrow has a single code",
                    q.storage
                ));
            }
            let scales = q.params.scales();
            let zps = q.params.zero_points();
            if scales.len() != zps.len() {
                errs.push(format!(
                    "{} scales but {} zero points",
                    scales.len(),
                    zps.len()
                ));
            }
            match &q.params {
                QuantParams::PerTensor { .. } => {}
                QuantParams::PerAxis { axis, .. } => {
                    if *axis >= t.rank() {
                        errs.push(format!(
                            "quantization axis {axis} is out of range for rank {}",
                            t.rank()
                        ));
                    } else if scales.len() != t.shape[*axis] {
                        errs.push(format!(
                            "per-axis quantization along axis {axis} has {} parameters, but the axis has {} elements",
                            scales.len(),
                            t.shape[*axis]
                        ));
                    }
                }
                QuantParams::Blocked {
                    axis, block_size, ..
                } => {
                    if *axis >= t.rank() {
                        errs.push(format!(
                            "quantization axis {axis} is out of range for rank {}",
                            t.rank()
                        ));
                    } else if *block_size == 0 {
                        errs.push("block size must be positive, found 0".into());
                    } else {
                        let want = q.params.expected_count(&t.shape).unwrap_or(0);
                        if scales.len() != want {
                            errs.push(format!(
                                "blocked quantization along axis {axis} in blocks of {block_size} needs {want} parameters (the shape with ceil({} / {block_size}) along the axis), found {}",
                                t.shape[*axis],
                                scales.len()
                            ));
                        }
                    }
                }
            }
            if let Some((i, s)) = scales
                .iter()
                .enumerate()
                .find(|(_, s)| !(**s > 0.0 && s.is_finite()))
            {
                errs.push(format!(
                    "scales must be positive and finite, scale #{i} is {s:?}"
                ));
            }
            if storage_ok {
                let (lo, hi) = (q.storage.min_code(), q.storage.max_code());
                if let Some((i, z)) = zps
                    .iter()
                    .enumerate()
                    .find(|(_, z)| !(lo..=hi).contains(&(**z as i64)))
                {
                    errs.push(format!(
                        "zero point #{i} is {z}, outside the range of {} ({lo}..={hi})",
                        q.storage
                    ));
                }
            }
            if q.pow2
                && let Some((i, s)) = scales.iter().enumerate().find(|(_, s)| !is_pow2(**s))
            {
                errs.push(format!(
                    "pow2 is set but scale #{i} ({s:?}) is not an exact power of two"
                ));
            }
        }
    }
    errs
}

/// The element count of `shape`, if it is at most `i64::MAX`.
fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as usize)
}

fn bad_bits(t: IntType) -> String {
    format!("storage {t} has an invalid bit-width (allowed: 1 to 8, 16 or 32 bits)")
}

/// Whether `s` is an exact (positive, finite) power of two.
fn is_pow2(s: f32) -> bool {
    if !(s > 0.0 && s.is_finite()) {
        return false;
    }
    let bits = s.to_bits();
    let mantissa = bits & 0x007f_ffff;
    if bits >> 23 == 0 {
        mantissa.is_power_of_two() // subnormal
    } else {
        mantissa == 0
    }
}

struct Verifier<'a> {
    m: &'a Module,
    diags: Vec<Diagnostic>,
}

impl Verifier<'_> {
    fn err(&mut self, location: Location, message: String) {
        self.diags.push(Diagnostic { location, message });
    }

    fn in_range(&self, id: ValueId) -> bool {
        id.index() < self.m.values.len()
    }

    fn spell(&self, id: ValueId) -> String {
        match self.m.values.get(id.index()) {
            Some(v) => format!("`{}`", v.spelling()),
            None => format!("value #{}", id.0),
        }
    }

    fn out_of_range(&self, what: &str, id: ValueId) -> String {
        format!(
            "{what} refers to value #{}, but the module has {} values",
            id.0,
            self.m.values.len()
        )
    }

    fn run(&mut self) {
        let m = self.m;
        // 1.
        if !is_valid_module_name(&m.name) {
            self.err(
                Location::Module,
                format!(
                    "module name {:?} is not a valid name (a letter or `_`, then letters, digits, `_ . $ / -`)",
                    m.name
                ),
            );
        }
        let type_ok = self.check_values();
        self.check_inputs();
        self.check_nodes(&type_ok);
        // 13.
        if m.outputs.is_empty() {
            self.err(
                Location::Module,
                "the module has no outputs (at least one is needed)".into(),
            );
        }
        for (i, &o) in m.outputs.iter().enumerate() {
            if !self.in_range(o) {
                let msg = self.out_of_range(&format!("output #{i}"), o);
                self.err(Location::Module, msg);
            }
        }
    }

    /// Invariants 2-5; returns, for every value, whether its type is valid.
    fn check_values(&mut self) -> Vec<bool> {
        let m = self.m;
        let mut first: HashMap<&str, ValueId> = HashMap::new();
        let mut type_ok = Vec::with_capacity(m.values.len());
        let listed: std::collections::HashSet<ValueId> = m.inputs.iter().copied().collect();
        for (i, v) in m.values.iter().enumerate() {
            let id = ValueId(i as u32);
            let here = Location::Value(id);
            // 2.
            if !is_valid_name(&v.name) {
                self.err(
                    here,
                    format!(
                        "value name {:?} is not a valid name (a letter or `_`, then letters, digits, `_ . $ / -`)",
                        v.name
                    ),
                );
            }
            if let Some(&prev) = first.get(v.name.as_str()) {
                let msg = format!(
                    "the name `{}` is already used by {} (value #{}); names are unique",
                    v.name,
                    self.def_text(prev),
                    prev.0
                );
                self.err(here, msg);
            } else {
                first.insert(&v.name, id);
            }
            // 3.
            let errs = verify_types(&v.ty);
            type_ok.push(errs.is_empty());
            for e in errs {
                self.err(
                    here,
                    format!("invalid type {} of {}: {e}", v.ty, v.spelling()),
                );
            }
            match &v.def {
                // 4.
                ValueDef::Const(data) => self.check_const(id, &v.ty, data),
                // 5.
                ValueDef::Input => {
                    if !listed.contains(&id) {
                        self.err(
                            here,
                            format!(
                                "{} is defined as an input but is not listed among the module's inputs",
                                v.spelling()
                            ),
                        );
                    }
                }
                ValueDef::Node(n) => match m.nodes.get(n.index()) {
                    None => self.err(
                        here,
                        format!(
                            "{} is defined by node #{}, but the module has {} nodes",
                            v.spelling(),
                            n.0,
                            m.nodes.len()
                        ),
                    ),
                    Some(node) if node.result != id => {
                        let msg = format!(
                            "{} is defined by node #{}, but that node's result is {}",
                            v.spelling(),
                            n.0,
                            self.spell(node.result)
                        );
                        self.err(here, msg);
                    }
                    Some(_) => {}
                },
            }
        }
        type_ok
    }

    fn def_text(&self, id: ValueId) -> String {
        let v = self.m.value(id);
        match &v.def {
            ValueDef::Input => format!("input {}", v.spelling()),
            ValueDef::Const(_) => format!("constant {}", v.spelling()),
            ValueDef::Node(n) => format!("the result {} of node #{}", v.spelling(), n.0),
        }
    }

    /// Invariant 4.
    fn check_const(&mut self, id: ValueId, ty: &TensorType, data: &ConstData) {
        let here = Location::Value(id);
        let name = self.m.value(id).spelling();
        if let Some(n) = checked_numel(&ty.shape)
            && data.len() != n
        {
            self.err(
                here,
                format!(
                    "constant {name} holds {} values, but its type {ty} has {n} elements",
                    data.len(),
                ),
            );
        }
        match (data, ty.elem.is_float()) {
            (ConstData::F32(_), true) => {}
            (ConstData::F32(_), false) => self.err(
                here,
                format!(
                    "constant {name} of type {ty} holds f32 data; integer-valued types hold integer codes"
                ),
            ),
            (ConstData::Int(_), true) => self.err(
                here,
                format!("constant {name} of type {ty} holds integer data; f32 types hold floats"),
            ),
            (ConstData::Int(codes), false) => {
                let bad: Vec<(usize, i64)> = codes
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|&(_, c)| !ty.elem.admits(c))
                    .collect();
                if let Some(&(i, c)) = bad.first() {
                    let range = match (&ty.elem, ty.elem.code_range()) {
                        (ElemType::Bipolar, _) => "+1 and -1 only".to_string(),
                        (_, Some((lo, hi))) => format!("codes {lo}..={hi}"),
                        (_, None) => String::new(),
                    };
                    let more = if bad.len() > 1 {
                        format!(" (and {} more)", bad.len() - 1)
                    } else {
                        String::new()
                    };
                    self.err(
                        here,
                        format!(
                            "constant {name} holds code {c} at index {i}{more}, which {} does not admit ({range})",
                            ty.elem
                        ),
                    );
                }
            }
        }
    }

    /// Invariant 6.
    fn check_inputs(&mut self) {
        let m = self.m;
        let mut seen: BTreeMap<ValueId, usize> = BTreeMap::new();
        for (i, &id) in m.inputs.iter().enumerate() {
            if !self.in_range(id) {
                let msg = self.out_of_range(&format!("input #{i}"), id);
                self.err(Location::Module, msg);
                continue;
            }
            let v = m.value(id);
            if v.def != ValueDef::Input {
                let msg = format!(
                    "{} is listed among the inputs but is defined as {}",
                    v.spelling(),
                    match v.def {
                        ValueDef::Const(_) => "a constant".to_string(),
                        ValueDef::Node(n) => format!("the result of node #{}", n.0),
                        ValueDef::Input => unreachable!(),
                    }
                );
                self.err(Location::Value(id), msg);
            }
            if let Some(prev) = seen.insert(id, i) {
                self.err(
                    Location::Value(id),
                    format!(
                        "{} is listed twice among the inputs (#{prev} and #{i})",
                        v.spelling()
                    ),
                );
            }
        }
    }

    /// Invariants 7-12.
    fn check_nodes(&mut self, type_ok: &[bool]) {
        let m = self.m;
        for (i, node) in m.nodes.iter().enumerate() {
            let nid = NodeId(i as u32);
            let here = Location::Node(nid);
            let op = node.op;
            let mut ok = true;
            // 7.
            if !self.in_range(node.result) {
                let msg = self.out_of_range("the result", node.result);
                self.err(here, msg);
                ok = false;
            } else {
                let v = m.value(node.result);
                if v.def != ValueDef::Node(nid) {
                    let msg = format!(
                        "the result {} is already defined as {}; every value is defined exactly once",
                        v.spelling(),
                        match v.def {
                            ValueDef::Input => "an input".to_string(),
                            ValueDef::Const(_) => "a constant".to_string(),
                            ValueDef::Node(n) => format!("the result of node #{}", n.0),
                        }
                    );
                    self.err(here, msg);
                    ok = false;
                }
                ok &= type_ok[node.result.index()];
            }
            // 8.
            for (k, &o) in node.operands.iter().enumerate() {
                if !self.in_range(o) {
                    let msg = self.out_of_range(&format!("operand #{k}"), o);
                    self.err(here, msg);
                    ok = false;
                    continue;
                }
                ok &= type_ok[o.index()];
                if let ValueDef::Node(d) = m.value(o).def
                    && d.index() >= i
                {
                    let msg = if d.index() == i {
                        format!("operand #{k} is the node's own result {}", self.spell(o))
                    } else {
                        format!(
                            "operand #{k} {} is used before its definition (by node #{}); nodes must be in topological order",
                            self.spell(o),
                            d.0
                        )
                    };
                    self.err(here, msg);
                }
            }
            // 9.
            if let Err(e) = typing::check_operand_count(op, node.operands.len()) {
                self.err(here, e);
                ok = false;
            }
            // 10.
            ok &= self.check_attrs(nid, op, &node.attrs);
            // 11.
            if ok {
                let tys: Vec<&TensorType> = node.operands.iter().map(|&o| m.ty(o)).collect();
                let declared = m.ty(node.result);
                match typing::infer(op, &Attrs::new(op, &node.attrs), &tys, declared) {
                    Ok(t) if t == *declared => self.check_const_operands(nid),
                    Ok(t) => self.err(
                        here,
                        format!("result type mismatch: declared {declared}, expected {t}"),
                    ),
                    Err(e) => self.err(here, e),
                }
            }
        }
    }

    /// Invariant 10; returns whether the attributes are fine.
    fn check_attrs(&mut self, nid: NodeId, op: Op, attrs: &BTreeMap<String, Attr>) -> bool {
        let here = Location::Node(nid);
        let info = op.info();
        let before = self.diags.len();
        for (name, a) in attrs {
            let Some(spec) = info.attr(name) else {
                let known: Vec<&str> = info.attrs.iter().map(|a| a.name).collect();
                self.err(
                    here,
                    format!(
                        "{op} has no attribute `{name}` ({})",
                        if known.is_empty() {
                            "it takes none".to_string()
                        } else {
                            format!("it takes {}", known.join(", "))
                        }
                    ),
                );
                continue;
            };
            let fits = match (spec.kind, a) {
                (AttrKind::Int, Attr::Int(_))
                | (AttrKind::Float, Attr::Float(_) | Attr::Int(_))
                | (AttrKind::Bool, Attr::Bool(_))
                | (AttrKind::Ints, Attr::Ints(_))
                | (AttrKind::Floats, Attr::Floats(_) | Attr::Ints(_)) => true,
                (AttrKind::Enum(words), Attr::Enum(w)) => {
                    if !words.contains(&w.as_str()) {
                        self.err(
                            here,
                            format!(
                                "attribute `{name}` of {op} must be one of {}, found `{w}`",
                                words.join(", ")
                            ),
                        );
                    }
                    true
                }
                _ => false,
            };
            if !fits {
                let mut found = String::new();
                let _ = write_attr(&mut found, a);
                self.err(
                    here,
                    format!(
                        "attribute `{name}` of {op} must be {}, found {found}",
                        kind_text(spec.kind)
                    ),
                );
            }
        }
        for spec in info.attrs {
            if spec.default == AttrDefault::Required && !attrs.contains_key(spec.name) {
                self.err(
                    here,
                    format!(
                        "{op} needs attribute `{}` ({}: {})",
                        spec.name,
                        kind_text(spec.kind),
                        spec.doc
                    ),
                );
            }
        }
        self.diags.len() == before
    }

    /// Invariant 12, for a node that passed the type rule.
    fn check_const_operands(&mut self, nid: NodeId) {
        let m = self.m;
        let node = m.node(nid);
        let here = Location::Node(nid);
        match node.op {
            Op::Threshold => {
                let t = node.operands[1];
                if let Some(ConstData::Int(data)) = m.const_data(t) {
                    let k = m.ty(t).shape[1];
                    if k == 0 {
                        return;
                    }
                    for (row, chunk) in data.chunks(k).enumerate() {
                        if let Some(j) = chunk.windows(2).position(|w| w[0] > w[1]) {
                            let msg = format!(
                                "thresholds {} must be sorted along K, but row {row} has {} before {} (at {j} and {})",
                                self.spell(t),
                                chunk[j],
                                chunk[j + 1],
                                j + 1
                            );
                            self.err(here, msg);
                            return;
                        }
                    }
                }
            }
            Op::FakeQuant | Op::Trunc => {
                let scales: &[usize] = if node.op == Op::Trunc { &[1, 3] } else { &[1] };
                for &k in scales {
                    let Some(&s) = node.operands.get(k) else {
                        continue;
                    };
                    if let Some(ConstData::F32(data)) = m.const_data(s)
                        && let Some(bad) = data.iter().find(|x| !(**x > 0.0 && x.is_finite()))
                    {
                        let msg = format!(
                            "operand `{}` of {} must be positive and finite, but {} holds {bad:?}",
                            node.op.info().operands[k].name,
                            node.op,
                            self.spell(s)
                        );
                        self.err(here, msg);
                    }
                }
            }
            _ => {}
        }
    }
}

fn kind_text(kind: AttrKind) -> String {
    match kind {
        AttrKind::Int => "an integer".into(),
        AttrKind::Float => "a number".into(),
        AttrKind::Bool => "true or false".into(),
        AttrKind::Ints => "a list of integers".into(),
        AttrKind::Floats => "a list of numbers".into(),
        AttrKind::Enum(words) => format!("one of {}", words.join(", ")),
    }
}

/// The module's text with every diagnostic printed under its line, indented like it:
/// `  ^ error: message`.
fn render(m: &Module, diags: &[Diagnostic]) -> String {
    // The printer indexes `values` by the listed inputs; leave out-of-range ones out
    // (they have their own diagnostic).
    let safe;
    let m = if m.inputs.iter().all(|i| i.index() < m.values.len()) {
        m
    } else {
        let mut c = m.clone();
        c.inputs.retain(|i| i.index() < c.values.len());
        safe = c;
        &safe
    };
    let lines = m.print_lines();
    let line_of = |loc: Location| -> usize {
        let find = |k: LineKind| lines.iter().position(|(kind, _)| *kind == k);
        match loc {
            Location::Module => None,
            Location::Node(n) => find(LineKind::Node(n.index())),
            Location::Value(v) => find(LineKind::Value(v)).or_else(|| {
                m.nodes
                    .iter()
                    .position(|n| n.result == v)
                    .and_then(|n| find(LineKind::Node(n)))
            }),
        }
        .unwrap_or(0)
    };
    let mut under: Vec<Vec<&str>> = vec![Vec::new(); lines.len()];
    for d in diags {
        under[line_of(d.location)].push(&d.message);
    }
    let mut out = String::new();
    for ((_, text), msgs) in lines.iter().zip(&under) {
        out.push_str(text);
        out.push('\n');
        let indent = &text[..text.len() - text.trim_start().len()];
        for msg in msgs {
            out.push_str(indent);
            out.push_str("^ error: ");
            out.push_str(msg);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_type;

    #[test]
    fn pow2_detection() {
        for s in [
            1.0f32,
            0.5,
            0.125,
            1024.0,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
        ] {
            assert!(is_pow2(s), "{s}");
        }
        for s in [
            0.0f32,
            -0.5,
            0.3,
            3.0,
            f32::INFINITY,
            f32::NAN,
            f32::from_bits(3),
        ] {
            assert!(!is_pow2(s), "{s}");
        }
    }

    #[test]
    fn type_checks() {
        let errs = |s: &str| verify_types(&parse_type(s).unwrap());
        assert!(errs("q<i8 pow2, axis=0, [0.5:0, 0.25:-128]>[2,3]").is_empty());
        assert!(errs("q<i8, axis=0, [0.5:0]>[2,3]")[0].contains("has 1 parameters"));
        assert!(errs("q<u4, 0.5:16>[2]")[0].contains("zero point #0 is 16"));
        assert!(errs("q<i8 pow2, 0.3:0>[2]")[0].contains("not an exact power of two"));
        assert!(errs("q<i8, -0.5:0>[2]")[0].contains("positive and finite"));
        assert!(errs("q<i8, axis=2, [0.5:0]>[2]")[0].contains("out of range"));
        assert!(errs("q<u1 narrow, 1.0:0>[2]")[0].contains("at least 2 bits"));
        assert!(errs("q<i4, axis=1, block=2, [1.0:0, 1.0:0]>[2,3]")[0].contains("needs 4"));
        assert!(errs("q<i4, axis=1, block=0, []>[2,3]")[0].contains("block size"));
    }
}
