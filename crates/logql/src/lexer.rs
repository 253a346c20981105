//! The LogQL lexer.
//!
//! It follows Loki's tokenisation rules: keywords are case-insensitive,
//! function names (`rate`, `sum`, `bytes`, `ip`, ...) are keywords only when
//! an opening parenthesis (or `by (`/`without (`) follows, a number directly
//! followed by a unit is a duration (`250ms`, `1h5m`) or a byte size
//! (`20KB`, `1.5MiB`), `[5m]` is one range token, and `#` starts a comment.

use std::time::Duration;

use lucia_common::duration::{parse_go_duration, parse_prometheus_duration};
use lucia_common::labels::unquote;

use crate::parser::ParseError;

/// Keywords that are keywords wherever they appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kw {
    By,
    Without,
    Bool,
    Or,
    And,
    Unless,
    Json,
    Regexp,
    Logfmt,
    Unpack,
    Pattern,
    LabelFormat,
    LineFormat,
    Decolorize,
    Drop,
    Keep,
    Unwrap,
    Offset,
    On,
    Ignoring,
    GroupLeft,
    GroupRight,
}

impl Kw {
    fn from_lower(text: &str) -> Option<Self> {
        Some(match text {
            "by" => Self::By,
            "without" => Self::Without,
            "bool" => Self::Bool,
            "or" => Self::Or,
            "and" => Self::And,
            "unless" => Self::Unless,
            "json" => Self::Json,
            "regexp" => Self::Regexp,
            "logfmt" => Self::Logfmt,
            "unpack" => Self::Unpack,
            "pattern" => Self::Pattern,
            "label_format" => Self::LabelFormat,
            "line_format" => Self::LineFormat,
            "decolorize" => Self::Decolorize,
            "drop" => Self::Drop,
            "keep" => Self::Keep,
            "unwrap" => Self::Unwrap,
            "offset" => Self::Offset,
            "on" => Self::On,
            "ignoring" => Self::Ignoring,
            "group_left" => Self::GroupLeft,
            "group_right" => Self::GroupRight,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::By => "by",
            Self::Without => "without",
            Self::Bool => "bool",
            Self::Or => "or",
            Self::And => "and",
            Self::Unless => "unless",
            Self::Json => "json",
            Self::Regexp => "regexp",
            Self::Logfmt => "logfmt",
            Self::Unpack => "unpack",
            Self::Pattern => "pattern",
            Self::LabelFormat => "label_format",
            Self::LineFormat => "line_format",
            Self::Decolorize => "decolorize",
            Self::Drop => "drop",
            Self::Keep => "keep",
            Self::Unwrap => "unwrap",
            Self::Offset => "offset",
            Self::On => "on",
            Self::Ignoring => "ignoring",
            Self::GroupLeft => "group_left",
            Self::GroupRight => "group_right",
        }
    }
}

/// Names that are keywords only when used as a function.
pub(crate) const FUNCTIONS: &[&str] = &[
    "count_over_time",
    "rate",
    "rate_counter",
    "bytes_over_time",
    "bytes_rate",
    "avg_over_time",
    "sum_over_time",
    "min_over_time",
    "max_over_time",
    "stdvar_over_time",
    "stddev_over_time",
    "quantile_over_time",
    "first_over_time",
    "last_over_time",
    "absent_over_time",
    "vector",
    "sum",
    "avg",
    "max",
    "min",
    "count",
    "stddev",
    "stdvar",
    "bottomk",
    "topk",
    "sort",
    "sort_desc",
    "approx_topk",
    "label_replace",
    "bytes",
    "duration",
    "duration_seconds",
    "ip",
];

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    /// The literal text; converted by the parser where a number is expected.
    Number(String),
    Duration {
        value: Duration,
        negative: bool,
    },
    Bytes(u64),
    /// `[5m]`
    Range(Duration),
    /// `--strict`, `--keep-empty`
    Flag(String),
    Kw(Kw),
    /// A function name (lowercase) followed by `(`.
    Func(&'static str),
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Dot,
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `=~`
    Re,
    /// `!~`
    Nre,
    /// `!>`
    Npa,
    /// `|=`
    PipeExact,
    /// `|~`
    PipeMatch,
    /// `|>`
    PipePattern,
    Pipe,
    /// `==`
    CmpEq,
    Gt,
    Ge,
    Lt,
    Le,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    /// A character that starts no token.
    Unknown(char),
    Eof,
}

impl Tok {
    /// The token's name in error messages, as Loki's parser names it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Ident(_) | Self::Unknown(_) => "IDENTIFIER".into(),
            Self::Str(_) => "STRING".into(),
            Self::Number(_) => "NUMBER".into(),
            Self::Duration { .. } => "DURATION".into(),
            Self::Bytes(_) => "BYTES".into(),
            Self::Range(_) => "RANGE".into(),
            Self::Flag(_) => "FUNCTION_FLAG".into(),
            Self::Kw(kw) => kw.as_str().into(),
            Self::Func(name) => match *name {
                "ip" | "label_replace" => (*name).into(),
                "bytes" => "BYTES_CONV".into(),
                "duration" => "DURATION_CONV".into(),
                "duration_seconds" => "DURATION_SECONDS_CONV".into(),
                other => other.to_ascii_uppercase(),
            },
            Self::Eof => "$end".into(),
            other => other.punct().into(),
        }
    }

    fn punct(&self) -> &'static str {
        match self {
            Self::LBrace => "{",
            Self::RBrace => "}",
            Self::LParen => "(",
            Self::RParen => ")",
            Self::Comma => ",",
            Self::Dot => ".",
            Self::Eq => "=",
            Self::Neq => "!=",
            Self::Re => "=~",
            Self::Nre => "!~",
            Self::Npa => "!>",
            Self::PipeExact => "|=",
            Self::PipeMatch => "|~",
            Self::PipePattern => "|>",
            Self::Pipe => "|",
            Self::CmpEq => "==",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Mod => "%",
            Self::Pow => "^",
            _ => "?",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    /// Byte offset of the token's first character.
    pub start: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn is_duration_rune(c: char) -> bool {
    matches!(c, 'n' | 'u' | 'µ' | 'm' | 's' | 'h' | 'd' | 'w' | 'y')
}

fn is_bytes_rune(c: char) -> bool {
    matches!(c, 'B' | 'i' | 'k' | 'K' | 'M' | 'G' | 'T' | 'P')
}

/// Loki's duration rule: Prometheus syntax first, then Go's (which also
/// allows fractions, `ns`/`us` and a sign).
pub(crate) fn parse_logql_duration(text: &str) -> Option<(Duration, bool)> {
    if let Ok(d) = parse_prometheus_duration(text) {
        return Some((d, false));
    }
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest.starts_with(['-', '+']) {
        return None;
    }
    parse_go_duration(rest)
        .ok()
        .map(|d| (d, negative && !d.is_zero()))
}

/// go-humanize's `ParseBytes`, which Loki uses for byte literals.
pub(crate) fn parse_bytes(text: &str) -> Option<u64> {
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(text.len());
    let number: f64 = text[..digits].replace(',', "").parse().ok()?;
    let unit = text[digits..].trim().to_ascii_lowercase();
    let scale: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1000u64.pow(4),
        "ti" | "tib" => 1 << 40,
        "p" | "pb" => 1000u64.pow(5),
        "pi" | "pib" => 1 << 50,
        "e" | "eb" => 1000u64.pow(6),
        "ei" | "eib" => 1 << 60,
        _ => return None,
    };
    let value = number * scale as f64;
    if !value.is_finite() || value >= u64::MAX as f64 {
        return None;
    }
    Some(value as u64)
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.input.get(self.pos + offset..)?.chars().next()
    }

    fn error(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(self.input, at, message)
    }

    /// The end of the run of characters after `from` that satisfy `accept`,
    /// stopping at whitespace.
    fn run_end(&self, from: usize, accept: impl Fn(char) -> bool) -> usize {
        let rest = &self.input[from..];
        from + rest
            .find(|c: char| c.is_whitespace() || !accept(c))
            .unwrap_or(rest.len())
    }

    /// Whether a function call follows `from`: optional whitespace and `(`,
    /// or `by`/`without`, optional whitespace and `(`.
    fn function_follows(&self, from: usize) -> bool {
        let rest = self.input[from..].trim_start();
        if rest.starts_with('(') {
            return true;
        }
        for word in ["by", "without"] {
            if rest.len() >= word.len()
                && rest.is_char_boundary(word.len())
                && rest[..word.len()].eq_ignore_ascii_case(word)
                && rest[word.len()..].trim_start().starts_with('(')
            {
                return true;
            }
        }
        false
    }

    /// A Go number: decimal, `0x`/`0o`/`0b` prefixed, fractions, exponents.
    fn number(&mut self) -> Result<(), ParseError> {
        let start = self.pos;
        let bytes = self.input.as_bytes();
        let mut i = self.pos;
        let prefixed = bytes.get(i) == Some(&b'0')
            && matches!(
                bytes.get(i + 1),
                Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
            )
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if prefixed {
            i += 2;
            while bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_hexdigit() || *b == b'_')
            {
                i += 1;
            }
            self.pos = i;
            return Ok(());
        }
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'_')
        {
            i += 1;
        }
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            while bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_digit() || *b == b'_')
            {
                i += 1;
            }
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !bytes.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(self.error(start, "exponent has no digits"));
            }
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        self.pos = i;
        Ok(())
    }

    fn next_token(&mut self) -> Result<Token, ParseError> {
        loop {
            let rest = &self.input[self.pos..];
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with('#') {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
                continue;
            }
            break;
        }
        let start = self.pos;
        let token = |tok| Ok(Token { tok, start });
        let Some(c) = self.peek() else {
            return token(Tok::Eof);
        };
        let next = self.peek_at(c.len_utf8());

        if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            self.number()?;
            let number = &self.input[start..self.pos];
            let unit_end = self.run_end(self.pos, |c| {
                c.is_numeric() || is_duration_rune(c) || c == '.'
            });
            if unit_end > self.pos
                && let Some((value, negative)) = parse_logql_duration(&self.input[start..unit_end])
            {
                self.pos = unit_end;
                return token(Tok::Duration { value, negative });
            }
            let unit_end =
                self.run_end(self.pos, |c| c.is_numeric() || is_bytes_rune(c) || c == '.');
            if unit_end > self.pos
                && let Some(value) = parse_bytes(&self.input[start..unit_end])
            {
                self.pos = unit_end;
                return token(Tok::Bytes(value));
            }
            return token(Tok::Number(number.to_string()));
        }

        if is_ident_start(c) {
            let end = self.input[start..]
                .find(|c: char| !is_ident_char(c))
                .map_or(self.input.len(), |n| start + n);
            self.pos = end;
            let text = &self.input[start..end];
            let lower = text.to_lowercase();
            if let Some(name) = FUNCTIONS.iter().find(|f| **f == lower) {
                if self.function_follows(end) {
                    return token(Tok::Func(name));
                }
                return token(Tok::Ident(text.to_string()));
            }
            if let Some(kw) = Kw::from_lower(&lower) {
                return token(Tok::Kw(kw));
            }
            return token(Tok::Ident(text.to_string()));
        }

        match c {
            '"' | '`' => {
                let (value, end) =
                    unquote(self.input, start).map_err(|(at, reason)| self.error(at, reason))?;
                self.pos = end;
                return token(Tok::Str(value));
            }
            '\'' => {
                return Err(self.error(
                    start,
                    "single-quoted strings are not supported: use double quotes or backticks",
                ));
            }
            '[' => {
                let Some(close) = self.input[start..].find(']') else {
                    return Err(self.error(start, "missing closing ']' in duration"));
                };
                let text = &self.input[start + 1..start + close];
                let value = parse_prometheus_duration(text).map_err(|_| {
                    self.error(
                        start,
                        format!(
                            "not a valid duration string: {text:?}: use a range such as [5m] or [1h30m]"
                        ),
                    )
                })?;
                self.pos = start + close + 1;
                return token(Tok::Range(value));
            }
            '-' => {
                if next == Some('-') {
                    let end = self.run_end(start, |c| c.is_alphabetic() || c == '-');
                    let flag = &self.input[start..end];
                    if flag == "--strict" || flag == "--keep-empty" {
                        self.pos = end;
                        return token(Tok::Flag(flag.to_string()));
                    }
                }
                let end = self.run_end(start + 1, |c| {
                    c.is_numeric() || is_duration_rune(c) || c == '.'
                });
                if end > start + 1
                    && let Some((value, negative)) = parse_logql_duration(&self.input[start..end])
                {
                    self.pos = end;
                    return token(Tok::Duration { value, negative });
                }
            }
            _ => {}
        }

        let two = match (c, next) {
            ('!', Some('=')) => Some(Tok::Neq),
            ('=', Some('~')) => Some(Tok::Re),
            ('!', Some('~')) => Some(Tok::Nre),
            ('!', Some('>')) => Some(Tok::Npa),
            ('|', Some('=')) => Some(Tok::PipeExact),
            ('|', Some('~')) => Some(Tok::PipeMatch),
            ('|', Some('>')) => Some(Tok::PipePattern),
            ('=', Some('=')) => Some(Tok::CmpEq),
            ('>', Some('=')) => Some(Tok::Ge),
            ('<', Some('=')) => Some(Tok::Le),
            _ => None,
        };
        if let Some(tok) = two {
            self.pos += 2;
            return token(tok);
        }
        let one = match c {
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '.' => Tok::Dot,
            '=' => Tok::Eq,
            '|' => Tok::Pipe,
            '>' => Tok::Gt,
            '<' => Tok::Lt,
            '+' => Tok::Add,
            '-' => Tok::Sub,
            '*' => Tok::Mul,
            '/' => Tok::Div,
            '%' => Tok::Mod,
            '^' => Tok::Pow,
            other => Tok::Unknown(other),
        };
        self.pos += c.len_utf8();
        token(one)
    }
}

/// Splits `input` into tokens; the last one is `Tok::Eof`.
pub(crate) fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer { input, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let eof = token.tok == Tok::Eof;
        tokens.push(token);
        if eof {
            return Ok(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(input: &str) -> Vec<Tok> {
        tokenize(input)
            .unwrap()
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn units() {
        assert_eq!(
            toks("250ms 1h5m 1.5h"),
            vec![
                Tok::Duration {
                    value: Duration::from_millis(250),
                    negative: false
                },
                Tok::Duration {
                    value: Duration::from_secs(3900),
                    negative: false
                },
                Tok::Duration {
                    value: Duration::from_secs(5400),
                    negative: false
                },
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("20KB 1.5MiB 100B 5"),
            vec![
                Tok::Bytes(20_000),
                Tok::Bytes(1_572_864),
                Tok::Bytes(100),
                Tok::Number("5".into()),
                Tok::Eof
            ]
        );
        // `1mb` is the duration 1m followed by the identifier b, as in Loki.
        assert_eq!(
            toks("1mb"),
            vec![
                Tok::Duration {
                    value: Duration::from_secs(60),
                    negative: false
                },
                Tok::Ident("b".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn functions_need_parentheses() {
        assert_eq!(
            toks("rate ( rate by (x) sum"),
            vec![
                Tok::Func("rate"),
                Tok::LParen,
                Tok::Func("rate"),
                Tok::Kw(Kw::By),
                Tok::LParen,
                Tok::Ident("x".into()),
                Tok::RParen,
                Tok::Ident("sum".into()),
                Tok::Eof
            ]
        );
        assert_eq!(toks("SUM("), vec![Tok::Func("sum"), Tok::LParen, Tok::Eof]);
    }

    #[test]
    fn flags_ranges_comments() {
        assert_eq!(
            toks("--strict --keep-empty # comment\n[1h30m]"),
            vec![
                Tok::Flag("--strict".into()),
                Tok::Flag("--keep-empty".into()),
                Tok::Range(Duration::from_secs(5400)),
                Tok::Eof
            ]
        );
        assert!(tokenize("[1.5h]").is_err());
        assert!(tokenize("[5m").is_err());
    }
}
