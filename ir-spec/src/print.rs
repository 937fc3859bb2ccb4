//! The text form, printing side. See `parse.rs` for the grammar.
//!
//! ```text
//! module digits {
//!   input %x: f32[1,1,8,8]
//!   const @w: f32[2,1,1,1] = [0.5, -1.0]
//!   %y: f32[1,2,8,8] = conv2d(%x, @w) {dilations = [1, 1], group = 1, pads = [0, 0, 0, 0], strides = [1, 1]} loc("Conv_0")
//!   output %y
//! }
//! ```
//!
//! Attributes print in name order, all of them (the parser fills in defaults), so the
//! printed form is canonical: equal modules print equally.

use std::collections::BTreeMap;
use std::fmt::{self, Write};

use crate::module::{Attr, ConstData, Module, Node, ValueDef, ValueId};
use crate::types::fmt_f32;

/// Characters allowed in names (after the `%` or `@` sigil) and module names.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '/' | '-')
}

/// Whether `s` can be printed as a name as it is.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_name_char)
}

/// Whether `s` can be a module's name: a valid name that starts with a letter or `_`.
pub fn is_valid_module_name(s: &str) -> bool {
    is_valid_name(s) && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

/// Turns any string into a valid name (replacing other characters by `_`).
pub fn sanitize_name(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect();
    if out.is_empty() { "_".into() } else { out }
}

pub(crate) fn write_attr(f: &mut impl Write, a: &Attr) -> fmt::Result {
    match a {
        Attr::Int(i) => write!(f, "{i}"),
        Attr::Float(x) => fmt_f32(f, *x),
        Attr::Bool(b) => write!(f, "{b}"),
        Attr::Ints(v) => {
            f.write_char('[')?;
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{x}")?;
            }
            f.write_char(']')
        }
        Attr::Floats(v) => {
            f.write_char('[')?;
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                fmt_f32(f, *x)?;
            }
            f.write_char(']')
        }
        Attr::Enum(s) => f.write_str(s),
    }
}

fn write_attr_dict(f: &mut impl Write, attrs: &BTreeMap<String, Attr>) -> fmt::Result {
    f.write_char('{')?;
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{k} = ")?;
        write_attr(f, v)?;
    }
    f.write_char('}')
}

fn write_const(f: &mut impl Write, data: &ConstData) -> fmt::Result {
    f.write_char('[')?;
    match data {
        ConstData::F32(v) => {
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                fmt_f32(f, *x)?;
            }
        }
        ConstData::Int(v) => {
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{x}")?;
            }
        }
    }
    f.write_char(']')
}

/// What one printed line stands for; used to place diagnostics next to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    Header,
    Value(ValueId),
    Node(usize),
    Outputs,
    Footer,
}

impl Module {
    fn spell(&self, id: ValueId) -> String {
        match self.values.get(id.index()) {
            Some(v) => v.spelling(),
            None => format!("%<invalid {}>", id.0),
        }
    }

    /// The node's line (without indentation or newline).
    pub fn node_line(&self, node: &Node) -> String {
        let mut s = String::new();
        let _ = self.write_node(&mut s, node);
        s
    }

    fn write_node(&self, f: &mut impl Write, n: &Node) -> fmt::Result {
        let res = self.values.get(n.result.index());
        match res {
            Some(v) => write!(f, "{}: {} = {}(", self.spell(n.result), v.ty, n.op)?,
            None => write!(f, "{} = {}(", self.spell(n.result), n.op)?,
        }
        for (i, &o) in n.operands.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&self.spell(o))?;
        }
        f.write_char(')')?;
        if !n.attrs.is_empty() {
            f.write_char(' ')?;
            write_attr_dict(f, &n.attrs)?;
        }
        if let Some(loc) = &n.loc {
            write!(f, " loc({loc:?})")?;
        }
        if !n.meta.is_empty() {
            f.write_str(" meta ")?;
            write_attr_dict(f, &n.meta)?;
        }
        Ok(())
    }

    /// The module's text, one entry per line, each tagged with what it stands for.
    pub fn print_lines(&self) -> Vec<(LineKind, String)> {
        let mut lines = vec![(LineKind::Header, format!("module {} {{", self.name))];
        for &i in &self.inputs {
            let v = &self.values[i.index()];
            lines.push((
                LineKind::Value(i),
                format!("  input {}: {}", self.spell(i), v.ty),
            ));
        }
        for (i, v) in self.values.iter().enumerate() {
            if let ValueDef::Const(data) = &v.def {
                let mut s = format!("  const {}: {} = ", v.spelling(), v.ty);
                let _ = write_const(&mut s, data);
                lines.push((LineKind::Value(ValueId(i as u32)), s));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let mut s = String::from("  ");
            let _ = self.write_node(&mut s, n);
            lines.push((LineKind::Node(i), s));
        }
        let outs: Vec<String> = self.outputs.iter().map(|&o| self.spell(o)).collect();
        lines.push((LineKind::Outputs, format!("  output {}", outs.join(", "))));
        lines.push((LineKind::Footer, "}".into()));
        lines
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (_, line) in self.print_lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}
