//! Template lexing and parsing.

use super::TemplateError;
use super::funcs::is_function;

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Dot,
    /// `.a` or `.a.b`.
    Field(Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Pipe(Box<Pipe>),
    Func(String),
    /// `(pipe).a.b`.
    Chain(Box<Operand>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipe {
    /// Each command is its operands; the first may be a function.
    pub cmds: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Text(String),
    Action(Pipe),
    If {
        branches: Vec<(Pipe, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
}

fn perr(msg: impl Into<String>) -> TemplateError {
    TemplateError::Parse(msg.into())
}

/// A raw piece: text or the inside of an action.
enum Piece<'a> {
    Text(String),
    Action(&'a str),
}

fn split(src: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    loop {
        let Some(open) = rest.find("{{") else {
            let mut t = rest;
            if trim_next_text {
                t = t.trim_start();
            }
            if !t.is_empty() {
                pieces.push(Piece::Text(t.to_string()));
            }
            return Ok(pieces);
        };
        let mut text = &rest[..open];
        if trim_next_text {
            text = text.trim_start();
        }
        let mut inner_start = open + 2;
        let after = &rest[inner_start..];
        if after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n") {
            text = text.trim_end();
            inner_start += 1;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        // Find the closing braces outside of quoted strings.
        let b = rest.as_bytes();
        let mut i = inner_start;
        let mut close = None;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'`' => {
                    i += 1;
                    while i < b.len() && b[i] != b'`' {
                        i += 1;
                    }
                }
                b'}' if b.get(i + 1) == Some(&b'}') => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let Some(close) = close else {
            return Err(perr("unclosed action"));
        };
        let mut inner_end = close;
        trim_next_text = false;
        let before = &rest[inner_start..close];
        if before.len() >= 2
            && before.ends_with('-')
            && before[..before.len() - 1].ends_with([' ', '\t', '\n', '\r'])
        {
            inner_end -= 1;
            trim_next_text = true;
        }
        let inner = rest[inner_start..inner_end].trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            pieces.push(Piece::Action(inner));
        }
        rest = &rest[close + 2..];
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Dot,
    Field(Vec<String>),
    /// `.a.b` right after `)`.
    Chain(Vec<String>),
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Pipe,
    LParen,
    RParen,
}

fn lex(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut toks = Vec::new();
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            b'"' => {
                let (s, end) = lucia_common::labels::unquote(src, i)
                    .map_err(|(_, reason)| perr(format!("bad string in action: {reason}")))?;
                toks.push(Tok::Str(s));
                i = end;
            }
            b'`' => {
                let end = src[i + 1..]
                    .find('`')
                    .ok_or_else(|| perr("unterminated raw quoted string"))?;
                toks.push(Tok::Str(src[i + 1..i + 1 + end].to_string()));
                i += end + 2;
            }
            b'\'' => {
                let (s, end) = lucia_common::labels::unquote(src, i)
                    .map_err(|(_, reason)| perr(format!("bad character constant: {reason}")))?;
                let ch = s
                    .chars()
                    .next()
                    .ok_or_else(|| perr("empty character constant"))?;
                toks.push(Tok::Int(ch as i64));
                i = end;
            }
            b'.' => {
                let mut path = Vec::new();
                let mut j = i;
                while b.get(j) == Some(&b'.') {
                    let start = j + 1;
                    let mut k = start;
                    while k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'_') {
                        k += 1;
                    }
                    if k == start {
                        break;
                    }
                    path.push(src[start..k].to_string());
                    j = k;
                }
                if path.is_empty() {
                    if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                        return Err(perr("bad number syntax"));
                    }
                    toks.push(Tok::Dot);
                    i += 1;
                } else {
                    if i > 0 && b[i - 1] == b')' {
                        toks.push(Tok::Chain(path));
                    } else {
                        toks.push(Tok::Field(path));
                    }
                    i = j;
                }
            }
            b'$' => {
                // `$` is the root data, the same as `.` here.
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j != i + 1 {
                    return Err(perr(format!("undefined variable \"{}\"", &src[i..j])));
                }
                toks.push(Tok::Dot);
                i = j;
            }
            b'0'..=b'9' | b'-' | b'+' => {
                let start = i;
                let mut j = i + 1;
                while j < b.len()
                    && (b[j].is_ascii_alphanumeric()
                        || b[j] == b'.'
                        || b[j] == b'_'
                        || ((b[j] == b'-' || b[j] == b'+') && matches!(b[j - 1], b'e' | b'E')))
                {
                    j += 1;
                }
                let text = src[start..j].replace('_', "");
                let tok = parse_number(&text)
                    .ok_or_else(|| perr(format!("bad number syntax: {:?}", &src[start..j])))?;
                toks.push(tok);
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                toks.push(Tok::Ident(src[start..j].to_string()));
                i = j;
            }
            _ => {
                return Err(perr(format!(
                    "unexpected {:?} in command",
                    src[i..].chars().next().unwrap_or(' ')
                )));
            }
        }
    }
    Ok(toks)
}

fn parse_number(text: &str) -> Option<Tok> {
    let (neg, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let int = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()
    } else {
        digits.parse::<i64>().ok()
    };
    if let Some(v) = int {
        return Some(Tok::Int(if neg { -v } else { v }));
    }
    let f: f64 = digits.parse().ok()?;
    if !digits.bytes().next()?.is_ascii_digit() && !digits.starts_with('.') {
        return None;
    }
    Some(Tok::Float(if neg { -f } else { f }))
}

struct PipeParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl PipeParser {
    fn pipe(&mut self, in_paren: bool) -> Result<Pipe, TemplateError> {
        let mut cmds = Vec::new();
        let mut cmd = Vec::new();
        loop {
            let Some(tok) = self.toks.get(self.pos).cloned() else {
                if in_paren {
                    return Err(perr("unclosed left paren"));
                }
                break;
            };
            self.pos += 1;
            match tok {
                Tok::Pipe => {
                    if cmd.is_empty() {
                        return Err(perr("missing command"));
                    }
                    cmds.push(std::mem::take(&mut cmd));
                }
                Tok::RParen => {
                    if !in_paren {
                        return Err(perr("unexpected right paren"));
                    }
                    break;
                }
                Tok::LParen => cmd.push(Operand::Pipe(Box::new(self.pipe(true)?))),
                Tok::Dot => cmd.push(Operand::Dot),
                Tok::Field(path) => cmd.push(Operand::Field(path)),
                Tok::Chain(path) => {
                    let Some(prev) = cmd.pop() else {
                        return Err(perr("unexpected field chain"));
                    };
                    cmd.push(Operand::Chain(Box::new(prev), path));
                }
                Tok::Str(s) => cmd.push(Operand::Str(s)),
                Tok::Int(i) => cmd.push(Operand::Int(i)),
                Tok::Float(f) => cmd.push(Operand::Float(f)),
                Tok::Ident(name) => match name.as_str() {
                    "true" => cmd.push(Operand::Bool(true)),
                    "false" => cmd.push(Operand::Bool(false)),
                    "nil" => cmd.push(Operand::Nil),
                    _ if is_function(&name) => cmd.push(Operand::Func(name)),
                    _ => return Err(perr(format!("function {name:?} not defined"))),
                },
            }
        }
        if cmd.is_empty() {
            return Err(perr("missing value for command"));
        }
        cmds.push(cmd);
        Ok(Pipe { cmds })
    }
}

fn parse_pipe(src: &str) -> Result<Pipe, TemplateError> {
    let toks = lex(src)?;
    let mut p = PipeParser { toks, pos: 0 };
    p.pipe(false)
}

enum Frame {
    Root(Vec<Node>),
    If {
        branches: Vec<(Pipe, Vec<Node>)>,
        current: Option<Pipe>,
        body: Vec<Node>,
        in_else: bool,
    },
}

pub fn parse(src: &str) -> Result<Vec<Node>, TemplateError> {
    let mut stack: Vec<Frame> = vec![Frame::Root(Vec::new())];
    fn push(stack: &mut [Frame], node: Node) {
        match stack.last_mut() {
            Some(Frame::Root(nodes)) => nodes.push(node),
            Some(Frame::If { body, .. }) => body.push(node),
            None => {}
        }
    }
    for piece in split(src)? {
        match piece {
            Piece::Text(t) => push(&mut stack, Node::Text(t)),
            Piece::Action(a) => {
                let (word, rest) = match a.find(|c: char| c.is_whitespace()) {
                    Some(i) => (&a[..i], a[i..].trim()),
                    None => (a, ""),
                };
                match word {
                    "" => return Err(perr("missing value for command")),
                    "if" => stack.push(Frame::If {
                        branches: Vec::new(),
                        current: Some(parse_pipe(rest)?),
                        body: Vec::new(),
                        in_else: false,
                    }),
                    "else" => {
                        let Some(Frame::If {
                            branches,
                            current,
                            body,
                            in_else,
                        }) = stack.last_mut()
                        else {
                            return Err(perr("unexpected {{else}}"));
                        };
                        if *in_else {
                            return Err(perr("expected end; found {{else}}"));
                        }
                        if let Some(cond) = current.take() {
                            branches.push((cond, std::mem::take(body)));
                        }
                        if let Some(cond) = rest.strip_prefix("if") {
                            *current = Some(parse_pipe(cond.trim())?);
                        } else if rest.is_empty() {
                            *in_else = true;
                        } else {
                            return Err(perr(format!("unexpected {rest:?} after else")));
                        }
                    }
                    "end" => {
                        let Some(Frame::If {
                            mut branches,
                            current,
                            body,
                            ..
                        }) = stack.pop()
                        else {
                            return Err(perr("unexpected {{end}}"));
                        };
                        let otherwise = match current {
                            Some(cond) => {
                                branches.push((cond, body));
                                Vec::new()
                            }
                            None => body,
                        };
                        push(
                            &mut stack,
                            Node::If {
                                branches,
                                otherwise,
                            },
                        );
                    }
                    "range" | "with" | "define" | "template" | "block" | "break" | "continue" => {
                        return Err(perr(format!("{{{{{word}}}}} is not supported")));
                    }
                    _ => push(&mut stack, Node::Action(parse_pipe(a)?)),
                }
            }
        }
    }
    match stack.pop() {
        Some(Frame::Root(nodes)) if stack.is_empty() => Ok(nodes),
        _ => Err(perr("unexpected EOF: missing {{end}}")),
    }
}
