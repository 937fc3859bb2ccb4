//! The text form, parsing side.
//!
//! ```text
//! module   := 'module' NAME '{' item* '}'
//! item     := 'input' VALUE ':' type
//!           | 'const' CONST ':' type '=' '[' number,* ']'
//!           | VALUE ':' type '=' OP '(' (VALUE|CONST),* ')' attrs? ('loc' '(' STRING ')')?
//!             ('meta' attrs)?
//!           | 'output' (VALUE|CONST),*
//! type     := elem '[' int,* ']'
//! elem     := 'f32' | 'b1' | ('i'|'u') BITS
//!           | 'q' '<' ('i'|'u') BITS 'narrow'? 'pow2'? ',' qparams '>'
//! qparams  := float ':' int
//!           | 'axis' '=' int ',' ('block' '=' int ',')? '[' (float ':' int),* ']'
//! attrs    := '{' (NAME '=' attr),* '}'
//! attr     := int | float | 'true' | 'false' | WORD | '[' number,* ']'
//! ```
//!
//! VALUE is `%name`, CONST is `@name`; names use letters, digits and `_ . $ / -`.
//! Whitespace and newlines separate tokens; `//` starts a comment. Definitions come
//! before uses. Attributes missing from a node are filled in from the op table's
//! defaults. Every error carries the line and column where it was found.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::module::{Attr, ConstData, Module, Node, NodeId, Value, ValueDef, ValueId};
use crate::ops::{AttrKind, Op};
use crate::print::is_name_char;
use crate::types::{ElemType, IntType, QuantParams, QuantType, TensorType};

/// A parse error at a line and column (both 1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Value(String),
    Const(String),
    Int(i64),
    Float(f32),
    Str(String),
    Punct(char),
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "`{w}`"),
            Tok::Value(n) => write!(f, "`%{n}`"),
            Tok::Const(n) => write!(f, "`@{n}`"),
            Tok::Int(i) => write!(f, "`{i}`"),
            Tok::Float(x) => write!(f, "`{x:?}`"),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Punct(c) => write!(f, "`{c}`"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Pos {
    line: usize,
    col: usize,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    col: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            chars: src.chars().peekable(),
            line: 1,
            col: 1,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn err(&self, pos: Pos, message: impl Into<String>) -> ParseError {
        ParseError {
            line: pos.line,
            col: pos.col,
            message: message.into(),
        }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(&c) = self.chars.peek() {
            if !f(c) {
                break;
            }
            s.push(c);
            self.bump();
        }
        s
    }

    fn tokens(mut self) -> Result<Vec<(Tok, Pos)>, ParseError> {
        let mut out = Vec::new();
        loop {
            // Skip whitespace and comments.
            while let Some(&c) = self.chars.peek() {
                if c.is_whitespace() {
                    self.bump();
                } else if c == '/' {
                    let mut ahead = self.chars.clone();
                    ahead.next();
                    if ahead.peek() == Some(&'/') {
                        self.take_while(|c| c != '\n');
                    } else {
                        break;
                    }
                } else {
                    break;
                }
            }
            let pos = Pos {
                line: self.line,
                col: self.col,
            };
            let Some(&c) = self.chars.peek() else {
                out.push((Tok::Eof, pos));
                return Ok(out);
            };
            let tok = match c {
                '%' | '@' => {
                    self.bump();
                    let name = self.take_while(is_name_char);
                    if name.is_empty() {
                        return Err(self.err(pos, format!("expected a name after `{c}`")));
                    }
                    if c == '%' {
                        Tok::Value(name)
                    } else {
                        Tok::Const(name)
                    }
                }
                '"' => {
                    self.bump();
                    let mut s = String::new();
                    loop {
                        match self.bump() {
                            None => return Err(self.err(pos, "unterminated string")),
                            Some('"') => break,
                            Some('\\') => match self.bump() {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some('r') => s.push('\r'),
                                Some('0') => s.push('\0'),
                                Some('\\') => s.push('\\'),
                                Some('"') => s.push('"'),
                                Some('\'') => s.push('\''),
                                Some('u') => {
                                    if self.bump() != Some('{') {
                                        return Err(self.err(pos, "bad \\u escape in string"));
                                    }
                                    let hex = self.take_while(|c| c.is_ascii_hexdigit());
                                    if self.bump() != Some('}') {
                                        return Err(self.err(pos, "bad \\u escape in string"));
                                    }
                                    let ch = u32::from_str_radix(&hex, 16)
                                        .ok()
                                        .and_then(char::from_u32)
                                        .ok_or_else(|| self.err(pos, "bad \\u escape in string"))?;
                                    s.push(ch);
                                }
                                _ => return Err(self.err(pos, "unknown escape in string")),
                            },
                            Some(ch) => s.push(ch),
                        }
                    }
                    Tok::Str(s)
                }
                c if c.is_ascii_digit() || c == '-' || c == '+' => self.number(pos)?,
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let w = self.take_while(is_name_char);
                    match w.as_str() {
                        "nan" => Tok::Float(f32::NAN),
                        "inf" => Tok::Float(f32::INFINITY),
                        _ => Tok::Word(w),
                    }
                }
                '{' | '}' | '(' | ')' | '[' | ']' | '<' | '>' | ',' | ':' | '=' => {
                    self.bump();
                    Tok::Punct(c)
                }
                other => {
                    return Err(self.err(pos, format!("unexpected character {other:?}")));
                }
            };
            out.push((tok, pos));
        }
    }

    fn number(&mut self, pos: Pos) -> Result<Tok, ParseError> {
        let mut s = String::new();
        if let Some(&c) = self.chars.peek()
            && (c == '-' || c == '+')
        {
            s.push(c);
            self.bump();
        }
        if self.chars.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            let w = self.take_while(|c| c.is_ascii_alphanumeric());
            return match w.as_str() {
                "inf" => Ok(Tok::Float(if s == "-" {
                    f32::NEG_INFINITY
                } else {
                    f32::INFINITY
                })),
                "nan" => Ok(Tok::Float(f32::NAN)),
                _ => Err(self.err(pos, format!("expected a number, found `{s}{w}`"))),
            };
        }
        let mut is_float = false;
        loop {
            match self.chars.peek() {
                Some(&c) if c.is_ascii_digit() => {
                    s.push(c);
                    self.bump();
                }
                Some(&c) if c == '.' => {
                    is_float = true;
                    s.push(c);
                    self.bump();
                }
                Some(&c) if c == 'e' || c == 'E' => {
                    is_float = true;
                    s.push(c);
                    self.bump();
                    if let Some(&c) = self.chars.peek()
                        && (c == '-' || c == '+')
                    {
                        s.push(c);
                        self.bump();
                    }
                }
                _ => break,
            }
        }
        if is_float {
            s.parse::<f32>()
                .map(Tok::Float)
                .map_err(|_| self.err(pos, format!("malformed number `{s}`")))
        } else {
            s.parse::<i64>()
                .map(Tok::Int)
                .map_err(|_| self.err(pos, format!("malformed or out-of-range integer `{s}`")))
        }
    }
}

struct Parser {
    toks: Vec<(Tok, Pos)>,
    i: usize,
    module: Module,
    names: HashMap<String, ValueId>,
}

type PResult<T> = Result<T, ParseError>;

/// Parses a module from its text form.
pub fn parse_module(src: &str) -> Result<Module, ParseError> {
    let toks = Lexer::new(src).tokens()?;
    let mut p = Parser {
        toks,
        i: 0,
        module: Module::default(),
        names: HashMap::new(),
    };
    p.module()?;
    Ok(p.module)
}

/// Parses a tensor type such as `q<i8, 0.1:-3>[1,8]`.
pub fn parse_type(src: &str) -> Result<TensorType, ParseError> {
    let toks = Lexer::new(src).tokens()?;
    let mut p = Parser {
        toks,
        i: 0,
        module: Module::default(),
        names: HashMap::new(),
    };
    let t = p.ty()?;
    p.expect_eof()?;
    Ok(t)
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].0
    }

    fn pos(&self) -> Pos {
        self.toks[self.i].1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.i].0.clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn err_at<T>(&self, pos: Pos, message: impl Into<String>) -> PResult<T> {
        Err(ParseError {
            line: pos.line,
            col: pos.col,
            message: message.into(),
        })
    }

    fn unexpected<T>(&self, what: &str) -> PResult<T> {
        self.err_at(
            self.pos(),
            format!("expected {what}, found {}", self.peek()),
        )
    }

    fn punct(&mut self, c: char) -> PResult<()> {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            Ok(())
        } else {
            self.unexpected(&format!("`{c}`"))
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            true
        } else {
            false
        }
    }

    fn keyword(&mut self, w: &str) -> PResult<()> {
        if matches!(self.peek(), Tok::Word(x) if x == w) {
            self.next();
            Ok(())
        } else {
            self.unexpected(&format!("`{w}`"))
        }
    }

    fn eat_keyword(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Tok::Word(x) if x == w) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_eof(&mut self) -> PResult<()> {
        if *self.peek() == Tok::Eof {
            Ok(())
        } else {
            self.unexpected("end of input")
        }
    }

    fn int(&mut self) -> PResult<i64> {
        match self.peek().clone() {
            Tok::Int(i) => {
                self.next();
                Ok(i)
            }
            _ => self.unexpected("an integer"),
        }
    }

    fn usize(&mut self) -> PResult<usize> {
        let pos = self.pos();
        let i = self.int()?;
        usize::try_from(i)
            .or_else(|_| self.err_at(pos, format!("expected a non-negative integer, found {i}")))
    }

    fn float(&mut self) -> PResult<f32> {
        match self.peek().clone() {
            Tok::Float(x) => {
                self.next();
                Ok(x)
            }
            Tok::Int(i) => {
                self.next();
                Ok(i as f32)
            }
            _ => self.unexpected("a number"),
        }
    }

    fn module(&mut self) -> PResult<()> {
        self.keyword("module")?;
        let pos = self.pos();
        self.module.name = match self.next() {
            Tok::Word(w) => w,
            other => return self.err_at(pos, format!("expected the module's name, found {other}")),
        };
        self.punct('{')?;
        let mut saw_output = false;
        loop {
            let pos = self.pos();
            match self.peek().clone() {
                Tok::Punct('}') => {
                    self.next();
                    break;
                }
                Tok::Word(w) if w == "input" => {
                    self.next();
                    let pos = self.pos();
                    let name = match self.next() {
                        Tok::Value(n) => n,
                        other => {
                            return self.err_at(
                                pos,
                                format!("expected `%name` after `input`, found {other}"),
                            );
                        }
                    };
                    self.punct(':')?;
                    let ty = self.ty()?;
                    let id = self.define(pos, name, ty, ValueDef::Input)?;
                    self.module.inputs.push(id);
                }
                Tok::Word(w) if w == "const" => {
                    self.next();
                    let npos = self.pos();
                    let name = match self.next() {
                        Tok::Const(n) => n,
                        other => {
                            return self.err_at(
                                npos,
                                format!("expected `@name` after `const`, found {other}"),
                            );
                        }
                    };
                    self.punct(':')?;
                    let ty = self.ty()?;
                    self.punct('=')?;
                    let data = self.const_data(&ty.elem)?;
                    self.define(npos, name, ty, ValueDef::Const(data))?;
                }
                Tok::Word(w) if w == "output" => {
                    self.next();
                    if saw_output {
                        return self.err_at(pos, "a module has one `output` line");
                    }
                    saw_output = true;
                    if !matches!(self.peek(), Tok::Punct('}')) {
                        loop {
                            let id = self.use_value()?;
                            self.module.outputs.push(id);
                            if !self.eat_punct(',') {
                                break;
                            }
                        }
                    }
                }
                Tok::Value(_) => self.node()?,
                _ => {
                    return self.unexpected(
                        "`input`, `const`, a node (`%name: type = op(...)`), `output` or `}`",
                    );
                }
            }
        }
        self.expect_eof()
    }

    fn define(
        &mut self,
        pos: Pos,
        name: String,
        ty: TensorType,
        def: ValueDef,
    ) -> PResult<ValueId> {
        if self.names.contains_key(&name) {
            return self.err_at(pos, format!("redefinition of `{name}`"));
        }
        let id = ValueId(self.module.values.len() as u32);
        self.names.insert(name.clone(), id);
        self.module.values.push(Value { name, ty, def });
        Ok(id)
    }

    fn use_value(&mut self) -> PResult<ValueId> {
        let pos = self.pos();
        let (name, is_const) = match self.next() {
            Tok::Value(n) => (n, false),
            Tok::Const(n) => (n, true),
            other => {
                return self.err_at(pos, format!("expected `%name` or `@name`, found {other}"));
            }
        };
        let sigil = if is_const { '@' } else { '%' };
        let Some(&id) = self.names.get(&name) else {
            return self.err_at(pos, format!("use of undefined value `{sigil}{name}`"));
        };
        if self.module.values[id.index()].is_const() != is_const {
            let v = &self.module.values[id.index()];
            return self.err_at(
                pos,
                format!("`{sigil}{name}` is spelled `{}`", v.spelling()),
            );
        }
        Ok(id)
    }

    fn node(&mut self) -> PResult<()> {
        let pos = self.pos();
        let Tok::Value(name) = self.next() else {
            unreachable!("node() is called on a value token")
        };
        self.punct(':')?;
        let ty = self.ty()?;
        self.punct('=')?;
        let opos = self.pos();
        let op = match self.next() {
            Tok::Word(w) => Op::from_name(&w).ok_or_else(|| ParseError {
                line: opos.line,
                col: opos.col,
                message: format!("unknown op `{w}`"),
            })?,
            other => return self.err_at(opos, format!("expected an op name, found {other}")),
        };
        self.punct('(')?;
        let mut operands = Vec::new();
        if !self.eat_punct(')') {
            loop {
                operands.push(self.use_value()?);
                if self.eat_punct(')') {
                    break;
                }
                self.punct(',')?;
            }
        }
        let mut attrs = BTreeMap::new();
        if *self.peek() == Tok::Punct('{') {
            attrs = self.attr_dict(Some(op))?;
        }
        for spec in op.info().attrs {
            if !attrs.contains_key(spec.name)
                && let Some(v) = spec.default.value()
            {
                attrs.insert(spec.name.to_string(), v);
            }
        }
        let mut loc = None;
        if self.eat_keyword("loc") {
            self.punct('(')?;
            match self.next() {
                Tok::Str(s) => loc = Some(s),
                other => {
                    return self.err_at(
                        self.pos(),
                        format!("expected a string in loc(...), found {other}"),
                    );
                }
            }
            self.punct(')')?;
        }
        let mut meta = BTreeMap::new();
        if self.eat_keyword("meta") {
            meta = self.attr_dict(None)?;
        }
        let node_id = NodeId(self.module.nodes.len() as u32);
        let result = self.define(pos, name, ty, ValueDef::Node(node_id))?;
        self.module.nodes.push(Node {
            op,
            operands,
            attrs,
            result,
            loc,
            meta,
        });
        Ok(())
    }

    fn attr_dict(&mut self, op: Option<Op>) -> PResult<BTreeMap<String, Attr>> {
        self.punct('{')?;
        let mut map = BTreeMap::new();
        if self.eat_punct('}') {
            return Ok(map);
        }
        loop {
            let pos = self.pos();
            let name = match self.next() {
                Tok::Word(w) => w,
                other => {
                    return self.err_at(pos, format!("expected an attribute name, found {other}"));
                }
            };
            self.punct('=')?;
            let kind = op.and_then(|op| op.info().attr(&name)).map(|s| s.kind);
            let vpos = self.pos();
            let value = self.attr_value(kind)?;
            if map.insert(name.clone(), value).is_some() {
                return self.err_at(vpos, format!("attribute `{name}` given twice"));
            }
            if self.eat_punct('}') {
                return Ok(map);
            }
            self.punct(',')?;
        }
    }

    /// An attribute literal, read as `kind` when the op table declares one (so `[]` and
    /// integral numbers get the declared kind), else by its spelling.
    fn attr_value(&mut self, kind: Option<AttrKind>) -> PResult<Attr> {
        let pos = self.pos();
        let lit = match self.next() {
            Tok::Int(i) => match kind {
                Some(AttrKind::Float) => Attr::Float(i as f32),
                _ => Attr::Int(i),
            },
            Tok::Float(x) => Attr::Float(x),
            Tok::Word(w) if w == "true" => Attr::Bool(true),
            Tok::Word(w) if w == "false" => Attr::Bool(false),
            Tok::Word(w) => Attr::Enum(w),
            Tok::Punct('[') => {
                let mut ints = Vec::new();
                let mut floats = Vec::new();
                let mut any_float = matches!(kind, Some(AttrKind::Floats));
                if !self.eat_punct(']') {
                    loop {
                        match self.next() {
                            Tok::Int(i) => {
                                ints.push(i);
                                floats.push(i as f32);
                            }
                            Tok::Float(x) => {
                                any_float = true;
                                floats.push(x);
                            }
                            other => {
                                return self.err_at(
                                    pos,
                                    format!("expected a number in the list, found {other}"),
                                );
                            }
                        }
                        if self.eat_punct(']') {
                            break;
                        }
                        self.punct(',')?;
                    }
                }
                if any_float {
                    Attr::Floats(floats)
                } else {
                    Attr::Ints(ints)
                }
            }
            other => {
                return self.err_at(pos, format!("expected an attribute value, found {other}"));
            }
        };
        Ok(lit)
    }

    fn const_data(&mut self, elem: &ElemType) -> PResult<ConstData> {
        self.punct('[')?;
        let float = elem.is_float();
        let mut f = Vec::new();
        let mut i = Vec::new();
        if !self.eat_punct(']') {
            loop {
                let pos = self.pos();
                match self.next() {
                    Tok::Int(x) if float => f.push(x as f32),
                    Tok::Int(x) => i.push(x),
                    Tok::Float(x) if float => f.push(x),
                    Tok::Float(x) => {
                        return self.err_at(
                            pos,
                            format!("constant of type {elem} holds integers, found {x:?}"),
                        );
                    }
                    other => return self.err_at(pos, format!("expected a number, found {other}")),
                }
                if self.eat_punct(']') {
                    break;
                }
                self.punct(',')?;
            }
        }
        Ok(if float {
            ConstData::F32(f)
        } else {
            ConstData::Int(i)
        })
    }

    fn ty(&mut self) -> PResult<TensorType> {
        let elem = self.elem()?;
        self.punct('[')?;
        let mut shape = Vec::new();
        if !self.eat_punct(']') {
            loop {
                shape.push(self.usize()?);
                if self.eat_punct(']') {
                    break;
                }
                self.punct(',')?;
            }
        }
        Ok(TensorType { elem, shape })
    }

    fn int_type(&self, pos: Pos, w: &str) -> PResult<IntType> {
        let bad = || {
            self.err_at(
                pos,
                format!("unknown element type `{w}` (expected f32, b1, i<bits>, u<bits> with bits 1..8, 16 or 32, or q<...>)"),
            )
        };
        let signed = match w.as_bytes().first() {
            Some(b'i') => true,
            Some(b'u') => false,
            _ => return bad(),
        };
        let Ok(bits) = w[1..].parse::<u8>() else {
            return bad();
        };
        let t = IntType::new(bits, signed);
        if !t.is_valid() {
            return bad();
        }
        Ok(t)
    }

    fn elem(&mut self) -> PResult<ElemType> {
        let pos = self.pos();
        let w = match self.next() {
            Tok::Word(w) => w,
            other => return self.err_at(pos, format!("expected a type, found {other}")),
        };
        match w.as_str() {
            "f32" => Ok(ElemType::F32),
            "b1" => Ok(ElemType::Bipolar),
            "q" => {
                self.punct('<')?;
                let spos = self.pos();
                let storage = match self.next() {
                    Tok::Word(s) => self.int_type(spos, &s)?,
                    other => {
                        return self.err_at(
                            spos,
                            format!("expected a storage type such as i8, found {other}"),
                        );
                    }
                };
                let narrow = self.eat_keyword("narrow");
                let pow2 = self.eat_keyword("pow2");
                self.punct(',')?;
                let params = if self.eat_keyword("axis") {
                    self.punct('=')?;
                    let axis = self.usize()?;
                    self.punct(',')?;
                    let block = if self.eat_keyword("block") {
                        self.punct('=')?;
                        let b = self.usize()?;
                        self.punct(',')?;
                        Some(b)
                    } else {
                        None
                    };
                    self.punct('[')?;
                    let mut scales = Vec::new();
                    let mut zero_points = Vec::new();
                    if !self.eat_punct(']') {
                        loop {
                            let (s, z) = self.scale_zp()?;
                            scales.push(s);
                            zero_points.push(z);
                            if self.eat_punct(']') {
                                break;
                            }
                            self.punct(',')?;
                        }
                    }
                    match block {
                        None => QuantParams::PerAxis {
                            axis,
                            scales,
                            zero_points,
                        },
                        Some(block_size) => QuantParams::Blocked {
                            axis,
                            block_size,
                            scales,
                            zero_points,
                        },
                    }
                } else {
                    let (scale, zero_point) = self.scale_zp()?;
                    QuantParams::PerTensor { scale, zero_point }
                };
                self.punct('>')?;
                Ok(ElemType::Quant(QuantType {
                    storage,
                    narrow,
                    pow2,
                    params,
                }))
            }
            _ => Ok(ElemType::Int(self.int_type(pos, &w)?)),
        }
    }

    fn scale_zp(&mut self) -> PResult<(f32, i32)> {
        let s = self.float()?;
        self.punct(':')?;
        let pos = self.pos();
        let z = self.int()?;
        let z = i32::try_from(z)
            .or_else(|_| self.err_at(pos, format!("zero point {z} does not fit in 32 bits")))?;
        Ok((s, z))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
// A small module.
module sample {
  input %x: f32[1,1,4,4]
  const @w: f32[2,1,1,1] = [0.5, -1.0]
  const @b: f32[2] = [0, 1e-3]
  %c: f32[1,2,4,4] = conv2d(%x, @w, @b) {pads = [0, 0, 0, 0]} loc("Conv_0")
  %q: q<u8 narrow, axis=1, [0.1:3, 0.25:0]>[1,2,4,4] = quantize(%c)
  %d: f32[1,2,4,4] = dequantize(%q) meta {note = [1, 2]}
  output %d, %q
}
"#;

    #[test]
    fn parses_and_fills_defaults() {
        let m = parse_module(SAMPLE).unwrap();
        assert_eq!(m.name, "sample");
        assert_eq!(m.nodes.len(), 3);
        let conv = &m.nodes[0];
        assert_eq!(conv.attrs["group"], Attr::Int(1));
        assert_eq!(conv.attrs["strides"], Attr::Ints(vec![1, 1]));
        assert_eq!(conv.loc.as_deref(), Some("Conv_0"));
        assert_eq!(m.nodes[1].attrs["rounding"], Attr::Enum("half_even".into()));
        assert_eq!(m.outputs.len(), 2);
    }

    #[test]
    fn print_parse_print_is_stable() {
        let m = parse_module(SAMPLE).unwrap();
        let text = m.to_string();
        let m2 = parse_module(&text).unwrap();
        assert_eq!(m, m2);
        assert_eq!(text, m2.to_string());
    }

    #[test]
    fn errors_have_positions() {
        let e = parse_module("module m {\n  input %x: f33[1]\n}").unwrap_err();
        assert_eq!((e.line, e.col), (2, 13), "{e}");
        let e = parse_module("module m {\n  %y: f32[1] = relu(%x)\n}").unwrap_err();
        assert_eq!((e.line, e.col), (2, 21), "{e}");
        assert!(e.message.contains("undefined value `%x`"), "{e}");
        let e =
            parse_module("module m {\n  input %x: f32[1]\n  %y: f32[1] = frob(%x)\n}").unwrap_err();
        assert!(e.message.contains("unknown op `frob`"), "{e}");
    }

    #[test]
    fn parses_types() {
        for s in [
            "f32[]",
            "i32[3,4]",
            "u4[2]",
            "b1[8]",
            "q<i8, 0.1:-3>[1,8]",
            "q<u8 narrow pow2, 0.125:0>[2]",
            "q<i4, axis=1, block=2, [0.5:0, 0.25:1]>[1,4]",
        ] {
            let t = parse_type(s).unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert!(parse_type("i9[1]").is_err());
        assert!(parse_type("q<f32, 1.0:0>[1]").is_err());
    }
}
