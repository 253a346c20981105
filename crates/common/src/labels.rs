//! Label sets: sorted by name, unique names, with Prometheus' text form
//! `{a="1", b="2"}` (also Loki's stream label string).

use std::fmt;

/// One label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// A set of labels sorted by name with unique names.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<Label>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    #[error("invalid label set {input:?} at byte {pos}: {reason}")]
    Syntax {
        input: String,
        pos: usize,
        reason: String,
    },
    #[error("invalid label name {0:?}: names must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName(String),
    #[error("duplicate label name {0:?}")]
    Duplicate(String),
}

/// Whether `name` is a legal label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is a legal metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

impl Labels {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Builds a set from pairs; a later duplicate name replaces an earlier one.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut labels = Self::new();
        for (name, value) in pairs {
            labels.insert(name, value);
        }
        labels
    }

    /// Parses `{name="value", ...}` as Loki and Prometheus print it: names
    /// unquoted, values double-quoted with Go escapes. Invalid or duplicate
    /// names are errors.
    pub fn parse(input: &str) -> Result<Self, LabelsError> {
        let mut parser = Parser {
            input,
            bytes: input.as_bytes(),
            pos: 0,
        };
        let mut labels = Vec::new();
        parser.skip_ws();
        parser.expect(b'{')?;
        loop {
            parser.skip_ws();
            if parser.peek() == Some(b'}') {
                parser.pos += 1;
                break;
            }
            let name = parser.name()?;
            parser.skip_ws();
            parser.expect(b'=')?;
            parser.skip_ws();
            let value = parser.quoted()?;
            labels.push(Label { name, value });
            parser.skip_ws();
            match parser.peek() {
                Some(b',') => parser.pos += 1,
                Some(b'}') => {}
                _ => return Err(parser.error("expected ',' or '}'")),
            }
        }
        parser.skip_ws();
        if parser.pos != parser.bytes.len() {
            return Err(parser.error("unexpected text after '}'"));
        }
        labels.sort();
        for pair in labels.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(LabelsError::Duplicate(pair[0].name.clone()));
            }
        }
        Ok(Self(labels))
    }

    /// Sets `name` to `value`, keeping the set sorted.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.binary_search_by(|l| l.name.as_str().cmp(&name)) {
            Ok(i) => self.0[i].value = value,
            Err(i) => self.0.insert(i, Label { name, value }),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self
            .0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()?;
        Some(self.0.remove(i).value)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A stable 64-bit hash of the set (names and values), the same in every
    /// process and version: used for fingerprints and ring placement.
    pub fn stable_hash(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for label in &self.0 {
            hasher.update(label.name.as_bytes());
            hasher.update(&[0xff]);
            hasher.update(label.value.as_bytes());
            hasher.update(&[0xff]);
        }
        hasher.digest()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, label) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}=", label.name)?;
            write_quoted(f, &label.value)?;
        }
        f.write_str("}")
    }
}

/// Writes `value` double-quoted with Go's `strconv.Quote` escapes for the
/// characters that need them.
pub fn write_quoted(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(out, "\\x{:02x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

struct Parser<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &str) -> LabelsError {
        LabelsError::Syntax {
            input: self.input.to_string(),
            pos: self.pos,
            reason: reason.to_string(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), LabelsError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", byte as char)))
        }
    }

    fn name(&mut self) -> Result<String, LabelsError> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-' || c == b':')
        {
            self.pos += 1;
        }
        let name = &self.input[start..self.pos];
        if name.is_empty() {
            return Err(self.error("expected a label name"));
        }
        if !is_valid_label_name(name) {
            return Err(LabelsError::InvalidName(name.to_string()));
        }
        Ok(name.to_string())
    }

    /// A double-quoted (or backquoted, raw) string with Go escapes.
    fn quoted(&mut self) -> Result<String, LabelsError> {
        let (value, end) = unquote(self.input, self.pos).map_err(|(pos, reason)| {
            self.pos = pos;
            self.error(reason)
        })?;
        self.pos = end;
        Ok(value)
    }
}

/// Unquotes the Go string literal starting at byte `start` of `input` (`"…"`
/// with escapes, `'…'`, or raw `` `…` ``). Returns the value and the byte
/// after the closing quote, or the error position and reason.
pub fn unquote(input: &str, start: usize) -> Result<(String, usize), (usize, &'static str)> {
    let bytes = input.as_bytes();
    let quote = match bytes.get(start) {
        Some(q @ (b'"' | b'\'' | b'`')) => *q,
        _ => return Err((start, "expected a quoted string")),
    };
    let mut out = String::new();
    let mut chars = input[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        let pos = start + 1 + offset;
        if c as u32 == quote as u32 {
            return Ok((out, pos + 1));
        }
        if c == '\\' && quote != b'`' {
            let Some((_, escaped)) = chars.next() else {
                return Err((pos, "unterminated escape sequence"));
            };
            match escaped {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'x' | 'u' | 'U' => {
                    let len = match escaped {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let mut code = 0u32;
                    for _ in 0..len {
                        let digit = chars
                            .next()
                            .and_then(|(_, d)| d.to_digit(16))
                            .ok_or((pos, "invalid hexadecimal escape"))?;
                        code = code * 16 + digit;
                    }
                    out.push(char::from_u32(code).ok_or((pos, "invalid unicode escape"))?);
                }
                '0'..='7' => {
                    let mut code = escaped.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        let digit = chars
                            .next()
                            .and_then(|(_, d)| d.to_digit(8))
                            .ok_or((pos, "invalid octal escape"))?;
                        code = code * 8 + digit;
                    }
                    out.push(char::from_u32(code).ok_or((pos, "invalid octal escape"))?);
                }
                _ => return Err((pos, "unknown escape sequence")),
            }
        } else {
            out.push(c);
        }
    }
    Err((input.len(), "unterminated quoted string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sorts_and_prints() {
        let labels = Labels::parse(r#"{job="api", app="x\"y", env = "prod"}"#).unwrap();
        assert_eq!(labels.to_string(), r#"{app="x\"y", env="prod", job="api"}"#);
        assert_eq!(labels.get("env"), Some("prod"));
        assert_eq!(Labels::parse("{}").unwrap().len(), 0);
        assert_eq!(Labels::parse(r#"{a="1",}"#).unwrap().len(), 1);
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert!(matches!(
            Labels::parse(r#"{1a="x"}"#),
            Err(LabelsError::InvalidName(_))
        ));
        assert!(matches!(
            Labels::parse(r#"{a.b="x"}"#),
            Err(LabelsError::InvalidName(_))
        ));
        assert!(matches!(
            Labels::parse(r#"{a="x", a="y"}"#),
            Err(LabelsError::Duplicate(_))
        ));
        assert!(Labels::parse(r#"{a="x""#).is_err());
        assert!(Labels::parse(r#"{a=x}"#).is_err());
        assert!(Labels::parse(r#"a="x""#).is_err());
        assert!(Labels::parse(r#"{a="x"} extra"#).is_err());
    }

    #[test]
    fn hash_is_stable_and_order_independent() {
        let a = Labels::from_pairs([("b", "2"), ("a", "1")]);
        let b = Labels::parse(r#"{a="1", b="2"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.stable_hash(), b.stable_hash());
        assert_ne!(
            a.stable_hash(),
            Labels::from_pairs([("a", "12")]).stable_hash()
        );
    }

    #[test]
    fn quoting_round_trips() {
        let labels = Labels::from_pairs([("msg", "a\nb\t\"c\\")]);
        assert_eq!(Labels::parse(&labels.to_string()).unwrap(), labels);
    }
}
