//! Lexing and parsing of Go `text/template` source into nodes.

use super::TemplateError;

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Dot,
    /// `.a.b`
    Field(Vec<String>),
    /// `$x.a.b` (`$` is the root).
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    /// A function name.
    Ident(String),
    /// `(pipeline).a.b`
    Sub(Box<Pipe>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipe {
    /// Declared or assigned variables (`$x :=`, `$i, $e :=`, `$x =`).
    pub vars: Vec<String>,
    pub declare: bool,
    pub cmds: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Text(String),
    Action(Pipe),
    If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
    With(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
    Template(String, Option<Pipe>),
    Break,
    Continue,
}

fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError::Parse(msg.into())
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Ident(String),
    LParen,
    /// `)` and whether a field chain follows without a space.
    RParen(Vec<String>),
    Pipe,
    Declare,
    Assign,
    Comma,
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex_fields(chars: &[char], i: &mut usize) -> Vec<String> {
    let mut fields = Vec::new();
    while *i < chars.len()
        && chars[*i] == '.'
        && chars
            .get(*i + 1)
            .is_some_and(|c| ident_char(*c) && !c.is_ascii_digit())
    {
        *i += 1;
        let start = *i;
        while *i < chars.len() && ident_char(chars[*i]) {
            *i += 1;
        }
        fields.push(chars[start..*i].iter().collect());
    }
    fields
}

fn unquote(chars: &[char], i: &mut usize) -> Result<String, TemplateError> {
    let quote = chars[*i];
    *i += 1;
    let mut out = String::new();
    if quote == '`' {
        while *i < chars.len() && chars[*i] != '`' {
            out.push(chars[*i]);
            *i += 1;
        }
        if *i >= chars.len() {
            return Err(err("unterminated raw quoted string"));
        }
        *i += 1;
        return Ok(out);
    }
    while *i < chars.len() {
        let c = chars[*i];
        *i += 1;
        if c == quote {
            return Ok(out);
        }
        if c == '\\' {
            let Some(&e) = chars.get(*i) else { break };
            *i += 1;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'a' => out.push('\u{07}'),
                'b' => out.push('\u{08}'),
                'f' => out.push('\u{0c}'),
                'v' => out.push('\u{0b}'),
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = chars
                        .get(*i..*i + n)
                        .map(|s| s.iter().collect())
                        .unwrap_or_default();
                    *i += n;
                    let code = u32::from_str_radix(&hex, 16)
                        .map_err(|_| err("invalid escape in string"))?;
                    out.push(char::from_u32(code).ok_or_else(|| err("invalid escape in string"))?);
                }
                other => return Err(err(format!("unknown escape sequence \\{other}"))),
            }
        } else {
            out.push(c);
        }
    }
    Err(err("unterminated quoted string"))
}

fn lex(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                i += 1;
                let fields = lex_fields(&chars, &mut i);
                toks.push(Tok::RParen(fields));
            }
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            '"' | '`' => toks.push(Tok::Str(unquote(&chars, &mut i)?)),
            '\'' => {
                let s = unquote(&chars, &mut i)?;
                let ch = s
                    .chars()
                    .next()
                    .ok_or_else(|| err("empty character constant"))?;
                toks.push(Tok::Int(ch as i64));
            }
            '.' => {
                let fields = lex_fields(&chars, &mut i);
                if fields.is_empty() {
                    if chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                        let start = i;
                        i += 1;
                        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == 'e') {
                            i += 1;
                        }
                        let s: String = chars[start..i].iter().collect();
                        toks.push(Tok::Float(
                            s.parse().map_err(|_| err(format!("bad number {s}")))?,
                        ));
                    } else {
                        toks.push(Tok::Dot);
                        i += 1;
                    }
                } else {
                    toks.push(Tok::Field(fields));
                }
            }
            '$' => {
                let start = i;
                i += 1;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                let fields = lex_fields(&chars, &mut i);
                toks.push(Tok::Var(name, fields));
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+')
                    && chars
                        .get(i + 1)
                        .is_some_and(|d| d.is_ascii_digit() || *d == '.')) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || chars[i] == '_'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().filter(|c| **c != '_').collect();
                let (neg, body) = match s.strip_prefix('-') {
                    Some(b) => (true, b.to_string()),
                    None => (false, s.trim_start_matches('+').to_string()),
                };
                let int =
                    if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
                        i64::from_str_radix(h, 16).ok()
                    } else if let Some(o) = body.strip_prefix("0o") {
                        i64::from_str_radix(o, 8).ok()
                    } else if let Some(b) = body.strip_prefix("0b") {
                        i64::from_str_radix(b, 2).ok()
                    } else {
                        body.parse::<i64>().ok()
                    };
                match int {
                    Some(v) => toks.push(Tok::Int(if neg { -v } else { v })),
                    None => {
                        let f: f64 = body
                            .parse()
                            .map_err(|_| err(format!("bad number syntax: {s:?}")))?;
                        toks.push(Tok::Float(if neg { -f } else { f }));
                    }
                }
            }
            c if ident_char(c) => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(err(format!("unexpected {other:?} in action"))),
        }
    }
    Ok(toks)
}

struct PipeParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl PipeParser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn pipe(&mut self, in_paren: bool) -> Result<Pipe, TemplateError> {
        let mut vars = Vec::new();
        let mut declare = false;
        // A declaration: `$x :=`, `$x =`, `$i, $e :=`.
        let save = self.pos;
        loop {
            match (self.toks.get(self.pos), self.toks.get(self.pos + 1)) {
                (Some(Tok::Var(name, f)), Some(Tok::Declare | Tok::Assign | Tok::Comma))
                    if f.is_empty() =>
                {
                    vars.push(name.clone());
                    let sep = self.toks[self.pos + 1].clone();
                    self.pos += 2;
                    match sep {
                        Tok::Comma => continue,
                        Tok::Declare => declare = true,
                        _ => {}
                    }
                    break;
                }
                _ => {
                    if !vars.is_empty() {
                        return Err(err("bad variable declaration"));
                    }
                    self.pos = save;
                    break;
                }
            }
        }
        let mut cmds = Vec::new();
        let mut cmd = Vec::new();
        loop {
            match self.peek().cloned() {
                None => {
                    if in_paren {
                        return Err(err("unclosed left paren"));
                    }
                    break;
                }
                Some(Tok::RParen(fields)) => {
                    if !in_paren {
                        return Err(err("unexpected right paren"));
                    }
                    self.pos += 1;
                    let _ = fields; // handled by the caller
                    self.pos -= 1;
                    break;
                }
                Some(Tok::Pipe) => {
                    self.pos += 1;
                    if cmd.is_empty() {
                        return Err(err("missing command before '|'"));
                    }
                    cmds.push(std::mem::take(&mut cmd));
                }
                Some(Tok::LParen) => {
                    self.pos += 1;
                    let inner = self.pipe(true)?;
                    let Some(Tok::RParen(fields)) = self.peek().cloned() else {
                        return Err(err("unclosed left paren"));
                    };
                    self.pos += 1;
                    cmd.push(Operand::Sub(Box::new(inner), fields));
                }
                Some(t) => {
                    self.pos += 1;
                    cmd.push(match t {
                        Tok::Dot => Operand::Dot,
                        Tok::Field(f) => Operand::Field(f),
                        Tok::Var(n, f) => Operand::Var(n, f),
                        Tok::Str(s) => Operand::Str(s),
                        Tok::Int(i) => Operand::Int(i),
                        Tok::Float(f) => Operand::Float(f),
                        Tok::Ident(id) => match id.as_str() {
                            "true" => Operand::Bool(true),
                            "false" => Operand::Bool(false),
                            "nil" => Operand::Nil,
                            _ => Operand::Ident(id),
                        },
                        other => return Err(err(format!("unexpected {other:?} in command"))),
                    });
                }
            }
        }
        if !cmd.is_empty() {
            cmds.push(cmd);
        }
        if cmds.is_empty() {
            return Err(err("missing value for command"));
        }
        Ok(Pipe {
            vars,
            declare,
            cmds,
        })
    }
}

fn parse_pipe(src: &str) -> Result<Pipe, TemplateError> {
    let mut p = PipeParser {
        toks: lex(src)?,
        pos: 0,
    };
    let pipe = p.pipe(false)?;
    if p.pos != p.toks.len() {
        return Err(err(format!("unexpected tokens in {src:?}")));
    }
    Ok(pipe)
}

/// A parsed file: its top-level nodes and the templates it defines.
pub struct Parsed {
    pub root: Vec<Node>,
    pub defines: Vec<(String, Vec<Node>)>,
}

enum Frame {
    Root(Vec<Node>),
    If {
        branches: Vec<(Pipe, Vec<Node>)>,
        otherwise: Option<Vec<Node>>,
        with: bool,
    },
    Range {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Option<Vec<Node>>,
    },
    Define(String, Vec<Node>),
    Block(String, Option<Pipe>, Vec<Node>),
}

impl Frame {
    fn current(&mut self) -> &mut Vec<Node> {
        match self {
            Frame::Root(n) | Frame::Define(_, n) | Frame::Block(_, _, n) => n,
            Frame::If {
                branches,
                otherwise,
                ..
            } => {
                if otherwise.is_none() && !branches.is_empty() {
                    let n = branches.len();
                    return &mut branches[n - 1].1;
                }
                otherwise.get_or_insert_with(Vec::new)
            }
            Frame::Range {
                body, otherwise, ..
            } => match otherwise {
                Some(o) => o,
                None => body,
            },
        }
    }
}

fn split_name_and_pipe(rest: &str) -> Result<(String, Option<Pipe>), TemplateError> {
    let chars: Vec<char> = rest.trim().chars().collect();
    if chars.first().is_none_or(|c| *c != '"' && *c != '`') {
        return Err(err(format!("template name must be a string: {rest}")));
    }
    let mut i = 0;
    let name = unquote(&chars, &mut i)?;
    let tail: String = chars[i..].iter().collect();
    let pipe = if tail.trim().is_empty() {
        None
    } else {
        Some(parse_pipe(&tail)?)
    };
    Ok((name, pipe))
}

/// Parses template source.
pub fn parse(src: &str) -> Result<Parsed, TemplateError> {
    let mut stack = vec![Frame::Root(Vec::new())];
    let mut defines = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    loop {
        let open = rest.find("{{");
        let mut text = match open {
            Some(i) => &rest[..i],
            None => rest,
        };
        if trim_next {
            text = text.trim_start_matches([' ', '\t', '\n', '\r']);
        }
        let Some(open) = open else {
            if !text.is_empty() {
                push(&mut stack, Node::Text(text.to_string()));
            }
            break;
        };
        let mut inner = &rest[open + 2..];
        if inner.starts_with("- ")
            || inner.starts_with("-\t")
            || inner.starts_with("-\n")
            || inner.starts_with("-\r")
        {
            text = text.trim_end_matches([' ', '\t', '\n', '\r']);
            inner = &inner[1..];
        }
        if !text.is_empty() {
            push(&mut stack, Node::Text(text.to_string()));
        }
        // The closing braces, outside quotes.
        let bytes = inner.as_bytes();
        let mut i = 0;
        let mut close = None;
        let mut quote: Option<u8> = None;
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Some(q) => {
                    if b == b'\\' && q != b'`' {
                        i += 1;
                    } else if b == q {
                        quote = None;
                    }
                }
                None => {
                    if b == b'"' || b == b'`' || b == b'\'' {
                        quote = Some(b);
                    } else if inner[i..].starts_with("}}") {
                        close = Some(i);
                        break;
                    } else if inner[i..].starts_with("/*") {
                        match inner[i..].find("*/") {
                            Some(e) => i += e + 1,
                            None => return Err(err("unclosed comment")),
                        }
                    }
                }
            }
            i += 1;
        }
        let Some(close) = close else {
            return Err(err("unclosed action"));
        };
        let mut action = &inner[..close];
        trim_next = false;
        if action.ends_with(" -") || action.ends_with("\t-") || action.ends_with("\n-") {
            action = &action[..action.len() - 1];
            trim_next = true;
        }
        rest = &inner[close + 2..];
        let action = action.trim();
        if action.starts_with("/*") {
            continue;
        }
        let (word, tail) = match action.find(|c: char| c.is_whitespace()) {
            Some(i) => (&action[..i], action[i..].trim()),
            None => (action, ""),
        };
        match word {
            "if" | "with" => stack.push(Frame::If {
                branches: vec![(parse_pipe(tail)?, Vec::new())],
                otherwise: None,
                with: word == "with",
            }),
            "range" => stack.push(Frame::Range {
                pipe: parse_pipe(tail)?,
                body: Vec::new(),
                otherwise: None,
            }),
            "define" => {
                let (name, _) = split_name_and_pipe(tail)?;
                stack.push(Frame::Define(name, Vec::new()));
            }
            "block" => {
                let (name, pipe) = split_name_and_pipe(tail)?;
                stack.push(Frame::Block(name, pipe, Vec::new()));
            }
            "template" => {
                let (name, pipe) = split_name_and_pipe(tail)?;
                push(&mut stack, Node::Template(name, pipe));
            }
            "break" => push(&mut stack, Node::Break),
            "continue" => push(&mut stack, Node::Continue),
            "else" => match stack.last_mut() {
                Some(Frame::If {
                    branches,
                    otherwise,
                    with,
                }) => {
                    if otherwise.is_some() {
                        return Err(err("unexpected else after else"));
                    }
                    let chained = tail
                        .strip_prefix("if ")
                        .filter(|_| !*with)
                        .or_else(|| tail.strip_prefix("with ").filter(|_| *with));
                    if let Some(cond) = chained {
                        branches.push((parse_pipe(cond)?, Vec::new()));
                    } else if tail.is_empty() {
                        *otherwise = Some(Vec::new());
                    } else {
                        return Err(err(format!("unexpected else {tail}")));
                    }
                }
                Some(Frame::Range { otherwise, .. }) if tail.is_empty() && otherwise.is_none() => {
                    *otherwise = Some(Vec::new());
                }
                _ => return Err(err("unexpected else")),
            },
            "end" => {
                let frame = stack.pop().ok_or_else(|| err("unexpected end"))?;
                match frame {
                    Frame::Root(_) => return Err(err("unexpected end")),
                    Frame::If {
                        branches,
                        otherwise,
                        with,
                    } => {
                        let o = otherwise.unwrap_or_default();
                        push(
                            &mut stack,
                            if with {
                                Node::With(branches, o)
                            } else {
                                Node::If(branches, o)
                            },
                        );
                    }
                    Frame::Range {
                        pipe,
                        body,
                        otherwise,
                    } => {
                        push(
                            &mut stack,
                            Node::Range(pipe, body, otherwise.unwrap_or_default()),
                        );
                    }
                    Frame::Define(name, body) => defines.push((name, body)),
                    Frame::Block(name, pipe, body) => {
                        defines.push((name.clone(), body));
                        push(&mut stack, Node::Template(name, pipe));
                    }
                }
            }
            _ => push(&mut stack, Node::Action(parse_pipe(action)?)),
        }
    }
    if stack.len() != 1 {
        return Err(err("unexpected EOF: missing {{end}}"));
    }
    let root = match stack.pop() {
        Some(Frame::Root(n)) => n,
        _ => return Err(err("unexpected EOF")),
    };
    Ok(Parsed { root, defines })
}

fn push(stack: &mut [Frame], node: Node) {
    if let Some(f) = stack.last_mut() {
        f.current().push(node);
    }
}
