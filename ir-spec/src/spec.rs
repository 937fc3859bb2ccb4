//! Generates SPEC.md's op section from the op table, so the written spec cannot drift
//! from the ops the code knows. A test compares the section with `ir-spec/SPEC.md`;
//! `QCC_BLESS=1 cargo test -p qcc-ir --test spec` rewrites it.

use std::fmt::Write;

use crate::module::Attr;
use crate::ops::{Arity, AttrDefault, AttrKind, Op};
use crate::print::write_attr;

/// Marks the start of the generated section in SPEC.md.
pub const BEGIN_MARKER: &str =
    "<!-- BEGIN GENERATED OPS (ir-spec/src/spec.rs; do not edit by hand) -->";
/// Marks the end of the generated section in SPEC.md.
pub const END_MARKER: &str = "<!-- END GENERATED OPS -->";

fn kind_name(k: AttrKind) -> String {
    match k {
        AttrKind::Int => "int".into(),
        AttrKind::Float => "float".into(),
        AttrKind::Bool => "bool".into(),
        AttrKind::Ints => "ints".into(),
        AttrKind::Floats => "floats".into(),
        AttrKind::Enum(words) => words.join(" \\| "),
    }
}

fn default_text(d: AttrDefault) -> String {
    match d {
        AttrDefault::Required => "required".into(),
        AttrDefault::Optional => "absent".into(),
        other => {
            let mut s = String::new();
            if let Some(a) = other.value() {
                let _ = write_attr(&mut s, &a);
            }
            if matches!(other.value(), Some(Attr::Enum(_))) {
                s
            } else {
                format!("`{s}`")
            }
        }
    }
}

/// The op reference in Markdown: an index table and one section per op.
pub fn op_reference() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| op | summary |");
    let _ = writeln!(s, "|---|---|");
    for &op in Op::ALL {
        let i = op.info();
        let _ = writeln!(s, "| [`{}`](#{}) | {} |", i.name, i.name, i.summary);
    }
    for &op in Op::ALL {
        let i = op.info();
        let _ = writeln!(s, "\n### {}\n", i.name);
        let _ = writeln!(s, "{}.\n", capitalize(i.summary));
        for line in i.description.lines() {
            let _ = writeln!(s, "{}", line.trim_start());
        }
        let _ = writeln!(s);
        let operands: Vec<String> = i
            .operands
            .iter()
            .map(|o| {
                let suffix = match o.arity {
                    Arity::One => "",
                    Arity::Optional => "?",
                    Arity::Variadic => "...",
                };
                format!("`{}{}`: {}", o.name, suffix, o.doc)
            })
            .collect();
        let _ = writeln!(s, "- Operands: {}", operands.join("; "));
        if i.attrs.is_empty() {
            let _ = writeln!(s, "- Attributes: none");
        } else {
            let _ = writeln!(s, "- Attributes:");
            for a in i.attrs {
                let _ = writeln!(
                    s,
                    "  - `{}` ({}, {}): {}",
                    a.name,
                    kind_name(a.kind),
                    default_text(a.default),
                    a.doc
                );
            }
        }
        if !i.traits.is_empty() {
            let t: Vec<&str> = i.traits.iter().map(|t| t.name()).collect();
            let _ = writeln!(s, "- Traits: {}", t.join(", "));
        }
    }
    s
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// `spec_md` with its generated section replaced by the current op reference, or `None`
/// when the markers are missing.
pub fn splice(spec_md: &str) -> Option<String> {
    let b = spec_md.find(BEGIN_MARKER)?;
    let e = spec_md.find(END_MARKER)?;
    if e < b {
        return None;
    }
    Some(format!(
        "{}{}\n\n{}\n{}",
        &spec_md[..b],
        BEGIN_MARKER,
        op_reference().trim_end(),
        &spec_md[e..]
    ))
}
