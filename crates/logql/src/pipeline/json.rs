//! The `json` parser (flattening and expressions) and `unpack`.

use super::PipelineError;
use super::labels::{LabelCategory, LabelsBuilder};
use super::sanitize::{append_sanitized, sanitize_key};

pub const JSON_PARSER_ERR: &str = "JSONParserErr";

/// A small JSON scanner over the line; strings are unescaped into reused
/// buffers, nothing is allocated per line once the buffers are warm.
struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

type ScanResult<T> = Result<T, String>;

impl<'a> Scanner<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            pos: 0,
        }
    }
    fn ws(&mut self) {
        while matches!(self.b.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }
    fn err(&self, what: &str) -> String {
        format!("{what} at offset {}", self.pos)
    }
    fn expect(&mut self, c: u8) -> ScanResult<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }
    /// Unescapes the string at `pos` (which is at the opening quote) into
    /// `out`.
    fn string(&mut self, out: &mut String) -> ScanResult<()> {
        out.clear();
        self.pos += 1;
        loop {
            let start = self.pos;
            let Some(off) = memchr::memchr2(b'"', b'\\', &self.b[start..]) else {
                return Err(self.err("unterminated string"));
            };
            out.push_str(&self.s[start..start + off]);
            self.pos = start + off;
            if self.b[self.pos] == b'"' {
                self.pos += 1;
                return Ok(());
            }
            let esc = self.b.get(self.pos + 1).copied();
            self.pos += 2;
            match esc {
                Some(b'"') => out.push('"'),
                Some(b'\\') => out.push('\\'),
                Some(b'/') => out.push('/'),
                Some(b'b') => out.push('\x08'),
                Some(b'f') => out.push('\x0c'),
                Some(b'n') => out.push('\n'),
                Some(b'r') => out.push('\r'),
                Some(b't') => out.push('\t'),
                Some(b'u') => {
                    let hi = self.hex4()?;
                    let c = if (0xD800..0xDC00).contains(&hi)
                        && self.b.get(self.pos) == Some(&b'\\')
                        && self.b.get(self.pos + 1) == Some(&b'u')
                    {
                        self.pos += 2;
                        let lo = self.hex4()?;
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00)))
                    } else {
                        char::from_u32(hi)
                    };
                    out.push(c.unwrap_or(' '));
                }
                _ => return Err(self.err("invalid escape")),
            }
        }
    }
    fn hex4(&mut self) -> ScanResult<u32> {
        let h = self
            .s
            .get(self.pos..self.pos + 4)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("invalid unicode escape"))?;
        self.pos += 4;
        Ok(h)
    }
    fn skip_string(&mut self) -> ScanResult<()> {
        self.pos += 1;
        loop {
            let Some(off) = memchr::memchr2(b'"', b'\\', &self.b[self.pos..]) else {
                return Err(self.err("unterminated string"));
            };
            self.pos += off;
            if self.b[self.pos] == b'"' {
                self.pos += 1;
                return Ok(());
            }
            self.pos += 2;
        }
    }
    /// A number, `true`, `false` or `null`: returns its text.
    fn scalar(&mut self) -> ScanResult<&'a str> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+'))
        {
            self.pos += 1;
        }
        let text = &self.s[start..self.pos];
        let valid = matches!(text, "true" | "false" | "null")
            || (!text.is_empty() && text.parse::<f64>().is_ok() && !text.starts_with('+'));
        if valid {
            Ok(text)
        } else {
            self.pos = start;
            Err(self.err("unexpected value"))
        }
    }
    fn skip_value(&mut self) -> ScanResult<()> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{') | Some(b'[') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        None => return Err(self.err("unterminated object or array")),
                        Some(b'"') => {
                            self.skip_string()?;
                            continue;
                        }
                        Some(b'{' | b'[') => depth += 1,
                        Some(b'}' | b']') => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => self.scalar().map(|_| ()),
        }
    }
}

/// Buffers reused across lines.
#[derive(Debug, Default)]
pub struct JsonScratch {
    key: String,
    value: String,
    prefix: String,
    name: String,
}

fn is_valid_start(line: &str) -> bool {
    line.trim_start().starts_with('{')
}

/// `| json`: every scalar field, nested objects flattened with `_`.
pub fn parse_all(line: &str, lbs: &mut LabelsBuilder, scratch: &mut JsonScratch) {
    let mut sc = Scanner::new(line);
    scratch.prefix.clear();
    let result = walk_object(&mut sc, lbs, scratch);
    if let Err(e) = result {
        lbs.set_err_if_none(JSON_PARSER_ERR, &e);
    }
}

fn walk_object(
    sc: &mut Scanner<'_>,
    lbs: &mut LabelsBuilder,
    scratch: &mut JsonScratch,
) -> ScanResult<()> {
    sc.expect(b'{')?;
    sc.ws();
    if sc.peek() == Some(b'}') {
        sc.pos += 1;
        return Ok(());
    }
    loop {
        sc.ws();
        if sc.peek() != Some(b'"') {
            return Err(sc.err("expected a key"));
        }
        sc.string(&mut scratch.key)?;
        sc.expect(b':')?;
        sc.ws();
        match sc.peek() {
            Some(b'"') => {
                sc.string(&mut scratch.value)?;
                emit(lbs, scratch, None);
            }
            Some(b'{') => {
                let before = scratch.prefix.len();
                let key = std::mem::take(&mut scratch.key);
                if !scratch.prefix.is_empty() && !key.trim().is_empty() {
                    scratch.prefix.push('_');
                }
                append_sanitized(&mut scratch.prefix, &key);
                scratch.key = key;
                walk_object(sc, lbs, scratch)?;
                scratch.prefix.truncate(before);
            }
            Some(b'[') => sc.skip_value()?,
            _ => {
                let text = sc.scalar()?;
                if text != "null" {
                    emit(lbs, scratch, Some(text));
                }
            }
        }
        sc.ws();
        match sc.peek() {
            Some(b',') => sc.pos += 1,
            Some(b'}') => {
                sc.pos += 1;
                return Ok(());
            }
            _ => return Err(sc.err("expected ',' or '}'")),
        }
    }
}

fn emit(lbs: &mut LabelsBuilder, scratch: &mut JsonScratch, scalar: Option<&str>) {
    scratch.name.clear();
    scratch.name.push_str(&scratch.prefix);
    if !scratch.name.is_empty() && !scratch.key.trim().is_empty() {
        scratch.name.push('_');
    }
    append_sanitized(&mut scratch.name, &scratch.key);
    if scratch.name.is_empty() {
        return;
    }
    let value = scalar.unwrap_or(&scratch.value);
    lbs.add_parsed(&scratch.name, value);
}

/// One step of a json expression.
#[derive(Debug, Clone, PartialEq)]
pub enum PathPart {
    Key(String),
    Index(usize),
}

/// Parses `a.b[0]["key with space"].c`.
pub fn parse_expression(expr: &str) -> Result<Vec<PathPart>, PipelineError> {
    let bad = || PipelineError::JsonExpression(expr.to_string());
    let b = expr.as_bytes();
    let mut parts = Vec::new();
    let mut i = 0;
    let mut expect_key = true;
    while i < b.len() {
        match b[i] {
            b'.' => {
                if expect_key {
                    return Err(bad());
                }
                expect_key = true;
                i += 1;
            }
            b'[' => {
                i += 1;
                if b.get(i) == Some(&b'"') {
                    let end = expr[i + 1..].find('"').ok_or_else(bad)? + i + 1;
                    parts.push(PathPart::Key(expr[i + 1..end].to_string()));
                    i = end + 1;
                } else {
                    let end = expr[i..].find(']').ok_or_else(bad)? + i;
                    let n: usize = expr[i..end].trim().parse().map_err(|_| bad())?;
                    parts.push(PathPart::Index(n));
                    i = end;
                }
                if b.get(i) != Some(&b']') {
                    return Err(bad());
                }
                i += 1;
                expect_key = false;
            }
            _ => {
                if !expect_key {
                    return Err(bad());
                }
                let end = expr[i..]
                    .find(['.', '['])
                    .map(|e| e + i)
                    .unwrap_or(expr.len());
                let key = &expr[i..end];
                if key.is_empty() || key.contains([']', '"']) {
                    return Err(bad());
                }
                parts.push(PathPart::Key(key.to_string()));
                i = end;
                expect_key = false;
            }
        }
    }
    if parts.is_empty() || (expect_key && b.last() == Some(&b'.')) {
        return Err(bad());
    }
    Ok(parts)
}

/// `| json a="x.y", b="z[0]"`.
pub fn parse_expressions(
    line: &str,
    exprs: &[(String, Vec<PathPart>)],
    lbs: &mut LabelsBuilder,
    name_buf: &mut String,
) {
    if line.is_empty() {
        return;
    }
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) if is_valid_start(line) => v,
        Ok(_) => {
            lbs.set_err_if_none(JSON_PARSER_ERR, "expected a json object");
            return;
        }
        Err(e) => {
            lbs.set_err_if_none(JSON_PARSER_ERR, &e.to_string());
            return;
        }
    };
    for (label, path) in exprs {
        let mut cur = Some(&value);
        for part in path {
            cur = match (cur, part) {
                (Some(serde_json::Value::Object(m)), PathPart::Key(k)) => m.get(k),
                (Some(serde_json::Value::Array(a)), PathPart::Index(i)) => a.get(*i),
                _ => None,
            };
        }
        let name: &str = if lbs.base_has(label)
            || lbs.has_in_category(label, LabelCategory::StructuredMetadata)
        {
            name_buf.clear();
            name_buf.push_str(label);
            name_buf.push_str(super::labels::DUPLICATE_SUFFIX);
            name_buf
        } else {
            label
        };
        match cur {
            Some(serde_json::Value::String(s)) => lbs.set(LabelCategory::Parsed, name, s),
            Some(serde_json::Value::Null) | None => lbs.set(LabelCategory::Parsed, name, ""),
            Some(v) => lbs.set(LabelCategory::Parsed, name, &v.to_string()),
        }
    }
}

/// `| unpack`: string fields become labels, `_entry` replaces the line.
/// Returns the new line in `line_out` when there is one.
pub fn unpack(
    line: &str,
    lbs: &mut LabelsBuilder,
    scratch: &mut JsonScratch,
    line_out: &mut String,
) -> bool {
    let mut sc = Scanner::new(line);
    let mut packed = false;
    let result = (|| -> ScanResult<()> {
        sc.expect(b'{')?;
        sc.ws();
        if sc.peek() == Some(b'}') {
            return Ok(());
        }
        loop {
            sc.ws();
            if sc.peek() != Some(b'"') {
                return Err(sc.err("expected a key"));
            }
            sc.string(&mut scratch.key)?;
            sc.expect(b':')?;
            sc.ws();
            if sc.peek() == Some(b'"') {
                sc.string(&mut scratch.value)?;
                if scratch.key == "_entry" {
                    line_out.clear();
                    line_out.push_str(&scratch.value);
                    packed = true;
                } else {
                    sanitize_key(&scratch.key, &mut scratch.name);
                    if !scratch.name.is_empty() {
                        lbs.add_parsed(&scratch.name, &scratch.value);
                    }
                }
            } else {
                sc.skip_value()?;
            }
            sc.ws();
            match sc.peek() {
                Some(b',') => sc.pos += 1,
                Some(b'}') => return Ok(()),
                _ => return Err(sc.err("expected ',' or '}'")),
            }
        }
    })();
    if let Err(e) = result {
        lbs.set_err_if_none(JSON_PARSER_ERR, &e);
        return false;
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucia_common::labels::Labels;

    fn run(base: &[(&str, &str)], line: &str) -> String {
        let mut b = LabelsBuilder::new(Labels::from_pairs(base.iter().copied()));
        parse_all(line, &mut b, &mut JsonScratch::default());
        b.result().labels().to_string()
    }

    #[test]
    fn flatten() {
        assert_eq!(
            run(
                &[("app", "a")],
                r#"{"lvl":"warn","obj":{"x":1,"y":{"z":2}},"ok":true,"no":false,"nil":null,"arr":[1,{"q":2}],"f":1.5}"#
            ),
            r#"{app="a", f="1.5", lvl="warn", no="false", obj_x="1", obj_y_z="2", ok="true"}"#
        );
        assert_eq!(
            run(
                &[("level", "stream")],
                r#"{"level":"parsed","a.b":1,"dup":"first","dup":"second","9x":"n","s":"a\"b\u00e9"}"#
            ),
            r#"{_9x="n", a_b="1", dup="first", level="stream", level_extracted="parsed", s="a\"bé"}"#
        );
        assert_eq!(run(&[], r#"{"a":{"level":"x"}}"#), r#"{a_level="x"}"#);
    }

    #[test]
    fn errors() {
        let r = run(&[("app", "a")], "broken");
        assert!(r.contains(r#"__error__="JSONParserErr""#), "{r}");
        assert!(r.contains("__error_details__"), "{r}");
        assert!(run(&[], r#"{"a":1"#).contains("JSONParserErr"));
        assert!(run(&[], r#"{"a":tru}"#).contains("JSONParserErr"));
        assert_eq!(run(&[], r#" {} "#), "{}");
    }

    #[test]
    fn expressions() {
        assert_eq!(
            parse_expression(r#"servers[0].name"#).unwrap(),
            vec![
                PathPart::Key("servers".into()),
                PathPart::Index(0),
                PathPart::Key("name".into())
            ]
        );
        assert_eq!(
            parse_expression(r#"["key with space"].x"#).unwrap(),
            vec![
                PathPart::Key("key with space".into()),
                PathPart::Key("x".into())
            ]
        );
        assert!(parse_expression("user[").is_err());
        assert!(parse_expression("a..b").is_err());
        assert!(parse_expression("").is_err());
        let exprs: Vec<(String, Vec<PathPart>)> = [
            ("who", "user.id"),
            ("tag", "tags[0]"),
            ("age", "user.age"),
            ("obj", "user"),
        ]
        .iter()
        .map(|(l, e)| (l.to_string(), parse_expression(e).unwrap()))
        .collect();
        let mut b = LabelsBuilder::new(Labels::from_pairs([("app", "a")]));
        parse_expressions(
            r#"{"user":{"id":"u1"},"tags":["x","y"]}"#,
            &exprs,
            &mut b,
            &mut String::new(),
        );
        assert_eq!(
            b.result().labels().to_string(),
            r#"{age="", app="a", obj="{\"id\":\"u1\"}", tag="x", who="u1"}"#
        );
    }

    #[test]
    fn unpack_entry() {
        let mut b = LabelsBuilder::new(Labels::from_pairs([("app", "a"), ("lvl", "stream")]));
        let mut out = String::new();
        let packed = unpack(
            r#"{"lvl":"packed","num":5,"_entry":"code=42","o":{"a":"b"}}"#,
            &mut b,
            &mut JsonScratch::default(),
            &mut out,
        );
        assert!(packed);
        assert_eq!(out, "code=42");
        assert_eq!(
            b.result().labels().to_string(),
            r#"{app="a", lvl="stream", lvl_extracted="packed"}"#
        );
        let mut b = LabelsBuilder::new(Labels::new());
        assert!(!unpack(
            "not json",
            &mut b,
            &mut JsonScratch::default(),
            &mut out
        ));
        assert_eq!(b.err(), JSON_PARSER_ERR);
    }
}
