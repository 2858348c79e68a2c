//! The expression grammar: `call := ident '(' [arg (',' arg)*] ')' accessor*`,
//! `arg := 'string' | integer | true | false | call`, `accessor := '.' ident | '[' arg ']'`.

use crate::ExprError;

/// Longest expression text accepted (bytes).
pub const MAX_EXPR_LEN: usize = 64 * 1024;
/// Deepest nesting of calls and accessors accepted.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Str(String),
    Int(i64),
    Bool(bool),
    Call { name: String, args: Vec<Expr> },
    Prop(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Every function name called anywhere in the expression.
    pub fn functions(&self, out: &mut Vec<String>) {
        match self {
            Expr::Call { name, args } => {
                out.push(name.clone());
                args.iter().for_each(|a| a.functions(out));
            }
            Expr::Prop(e, _) => e.functions(out),
            Expr::Index(e, i) => {
                e.functions(out);
                i.functions(out);
            }
            _ => {}
        }
    }
}

/// Parses the inside of an expression string (without the surrounding `[` `]`).
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.len() > MAX_EXPR_LEN {
        return Err(syntax(src, format!("longer than {MAX_EXPR_LEN} bytes")));
    }
    let mut p = Parser {
        s: src.as_bytes(),
        i: 0,
        src,
    };
    p.ws();
    let e = p.call(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after the expression"));
    }
    Ok(e)
}

fn syntax(src: &str, reason: impl Into<String>) -> ExprError {
    let mut expr: String = src.chars().take(200).collect();
    if expr.len() < src.len() {
        expr.push('…');
    }
    ExprError::Syntax {
        expr,
        reason: reason.into(),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> ExprError {
        syntax(self.src, format!("{what} at position {}", self.i))
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> Option<String> {
        self.ws();
        let start = self.i;
        while let Some(c) = self.peek() {
            let ok = c.is_ascii_alphanumeric() || c == b'_' || (c == b'.' && self.i > start);
            if !ok || (c.is_ascii_digit() && self.i == start) {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    /// A function name may hold a dot (user-defined `ns.fn`); an accessor's name may not.
    fn prop_name(&mut self) -> Option<String> {
        self.ws();
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn call(&mut self, depth: usize) -> Result<Expr, ExprError> {
        if depth > MAX_DEPTH {
            return Err(self.err(&format!("nested deeper than {MAX_DEPTH}")));
        }
        let name = self
            .ident()
            .ok_or_else(|| self.err("expected a function name"))?;
        if !self.eat(b'(') {
            return Err(self.err(&format!("expected '(' after '{name}'")));
        }
        let mut args = Vec::new();
        if !self.eat(b')') {
            loop {
                args.push(self.arg(depth + 1)?);
                if self.eat(b')') {
                    break;
                }
                if !self.eat(b',') {
                    return Err(self.err("expected ',' or ')'"));
                }
            }
        }
        let mut e = Expr::Call { name, args };
        let mut d = depth;
        loop {
            d += 1;
            if d > MAX_DEPTH {
                return Err(self.err(&format!("nested deeper than {MAX_DEPTH}")));
            }
            if self.eat(b'.') {
                let p = self
                    .prop_name()
                    .ok_or_else(|| self.err("expected a property name after '.'"))?;
                e = Expr::Prop(Box::new(e), p);
            } else if self.eat(b'[') {
                let idx = self.arg(d)?;
                if !self.eat(b']') {
                    return Err(self.err("expected ']'"));
                }
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }
    fn arg(&mut self, depth: usize) -> Result<Expr, ExprError> {
        if depth > MAX_DEPTH {
            return Err(self.err(&format!("nested deeper than {MAX_DEPTH}")));
        }
        self.ws();
        match self.peek() {
            Some(b'\'') => self.string(),
            Some(c) if c.is_ascii_digit() || c == b'-' => self.int(),
            Some(_) => {
                let save = self.i;
                if let Some(id) = self.ident() {
                    self.ws();
                    if self.peek() != Some(b'(') && (id == "true" || id == "false") {
                        return Ok(Expr::Bool(id == "true"));
                    }
                }
                self.i = save;
                self.call(depth)
            }
            None => Err(self.err("unexpected end")),
        }
    }
    fn string(&mut self) -> Result<Expr, ExprError> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'\'') if self.s.get(self.i + 1) == Some(&b'\'') => {
                    out.push(b'\'');
                    self.i += 2;
                }
                Some(b'\'') => {
                    self.i += 1;
                    break;
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        // The input is a &str and quotes are ASCII, so the bytes between them are UTF-8.
        String::from_utf8(out)
            .map(Expr::Str)
            .map_err(|_| self.err("invalid UTF-8"))
    }
    fn int(&mut self) -> Result<Expr, ExprError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .map(Expr::Int)
            .ok_or_else(|| self.err("invalid integer"))
    }
}
