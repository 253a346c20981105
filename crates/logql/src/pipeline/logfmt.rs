//! The `logfmt` parser.

use super::labels::{DUPLICATE_SUFFIX, LabelCategory, LabelsBuilder};
use super::sanitize::sanitize_key;

pub const LOGFMT_PARSER_ERR: &str = "LogfmtParserErr";

/// A logfmt key/value decoder over one line. Values with escapes are
/// unescaped into a reused buffer.
pub struct Decoder<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            pos: 0,
        }
    }

    /// The next pair, `None` at the end of the line. On error the decoder
    /// skips to the next space.
    pub fn next_pair(&mut self, buf: &mut String) -> Option<Result<(&'a str, Val<'a>), String>> {
        while self.pos < self.b.len() && self.b[self.pos] <= b' ' {
            self.pos += 1;
        }
        if self.pos >= self.b.len() {
            return None;
        }
        let start = self.pos;
        while self.pos < self.b.len() {
            let c = self.b[self.pos];
            if c <= b' ' || c == b'=' || c == b'"' {
                break;
            }
            self.pos += 1;
        }
        let key = &self.s[start..self.pos];
        if key.is_empty() {
            let e = self.error("unexpected character");
            self.skip_garbage();
            return Some(Err(e));
        }
        if self.pos >= self.b.len() || self.b[self.pos] <= b' ' {
            return Some(Ok((key, Val::Slice(""))));
        }
        if self.b[self.pos] == b'"' {
            let e = self.error("unexpected '\"'");
            self.skip_garbage();
            return Some(Err(e));
        }
        // '='
        self.pos += 1;
        if self.pos >= self.b.len() || self.b[self.pos] <= b' ' {
            return Some(Ok((key, Val::Slice(""))));
        }
        if self.b[self.pos] == b'"' {
            self.pos += 1;
            let vstart = self.pos;
            let mut escaped = false;
            loop {
                match memchr::memchr2(b'"', b'\\', &self.b[self.pos..]) {
                    None => {
                        self.pos = self.b.len();
                        return Some(Err(self.error("unterminated quoted value")));
                    }
                    Some(off) => {
                        self.pos += off;
                        if self.b[self.pos] == b'\\' {
                            escaped = true;
                            self.pos += 2;
                            if self.pos > self.b.len() {
                                self.pos = self.b.len();
                                return Some(Err(self.error("unterminated quoted value")));
                            }
                        } else {
                            break;
                        }
                    }
                }
            }
            let raw = &self.s[vstart..self.pos];
            self.pos += 1;
            if !escaped {
                return Some(Ok((key, Val::Slice(raw))));
            }
            buf.clear();
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    buf.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => buf.push('\n'),
                    Some('t') => buf.push('\t'),
                    Some('r') => buf.push('\r'),
                    Some(other) => buf.push(other),
                    None => {}
                }
            }
            return Some(Ok((key, Val::Buf)));
        }
        let vstart = self.pos;
        while self.pos < self.b.len() {
            let c = self.b[self.pos];
            if c <= b' ' {
                break;
            }
            if c == b'=' || c == b'"' {
                let e = self.error(&format!("unexpected '{}'", c as char));
                self.skip_garbage();
                return Some(Err(e));
            }
            self.pos += 1;
        }
        Some(Ok((key, Val::Slice(&self.s[vstart..self.pos]))))
    }

    fn skip_garbage(&mut self) {
        while self.pos < self.b.len() && self.b[self.pos] > b' ' {
            self.pos += 1;
        }
    }

    fn error(&self, msg: &str) -> String {
        format!("logfmt syntax error at pos {} : {msg}", self.pos + 1)
    }
}

/// Where a decoded value is.
pub enum Val<'a> {
    Slice(&'a str),
    /// In the caller's buffer.
    Buf,
}

#[derive(Debug, Default)]
pub struct LogfmtScratch {
    value: String,
    key: String,
}

/// `| logfmt [--strict] [--keep-empty]`.
pub fn parse_all(
    line: &str,
    strict: bool,
    keep_empty: bool,
    lbs: &mut LabelsBuilder,
    scratch: &mut LogfmtScratch,
) {
    let mut dec = Decoder::new(line);
    while let Some(pair) = dec.next_pair(&mut scratch.value) {
        match pair {
            Err(e) => {
                if strict {
                    lbs.set_err_if_none(LOGFMT_PARSER_ERR, &e);
                    return;
                }
            }
            Ok((key, val)) => {
                let value = match val {
                    Val::Slice(s) => s,
                    Val::Buf => scratch.value.as_str(),
                };
                if value.is_empty() && !keep_empty {
                    continue;
                }
                sanitize_key(key, &mut scratch.key);
                if scratch.key.is_empty() {
                    continue;
                }
                lbs.add_parsed(&scratch.key, value);
            }
        }
    }
}

/// `| logfmt a, b="c"`: `exprs` are (label, key) pairs. Every label exists
/// afterwards, empty when the key is missing.
pub fn parse_expressions(
    line: &str,
    strict: bool,
    exprs: &[(String, String)],
    lbs: &mut LabelsBuilder,
    scratch: &mut LogfmtScratch,
) {
    let target = |lbs: &LabelsBuilder, label: &str, out: &mut String| {
        out.clear();
        out.push_str(label);
        if lbs.base_has(label) || lbs.has_in_category(label, LabelCategory::StructuredMetadata) {
            out.push_str(DUPLICATE_SUFFIX);
        }
    };
    for (label, _) in exprs {
        if !lbs.base_has(label) && !lbs.has_in_category(label, LabelCategory::StructuredMetadata) {
            lbs.set(LabelCategory::Parsed, label, "");
        }
    }
    let mut found = vec![false; exprs.len()];
    let mut dec = Decoder::new(line);
    let mut name = String::new();
    while let Some(pair) = dec.next_pair(&mut scratch.value) {
        match pair {
            Err(e) => {
                if strict {
                    lbs.set_err_if_none(LOGFMT_PARSER_ERR, &e);
                    return;
                }
            }
            Ok((key, val)) => {
                let value = match val {
                    Val::Slice(s) => s,
                    Val::Buf => scratch.value.as_str(),
                };
                sanitize_key(key, &mut scratch.key);
                for (i, (label, expr)) in exprs.iter().enumerate() {
                    if !found[i] && *expr == scratch.key {
                        found[i] = true;
                        target(lbs, label, &mut name);
                        lbs.set(LabelCategory::Parsed, &name, value);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucia_common::labels::Labels;

    fn run(line: &str, strict: bool, keep_empty: bool) -> String {
        let mut b = LabelsBuilder::new(Labels::from_pairs([("app", "a")]));
        parse_all(
            line,
            strict,
            keep_empty,
            &mut b,
            &mut LogfmtScratch::default(),
        );
        b.result().labels().to_string()
    }

    #[test]
    fn edge_cases() {
        let line = r#"a-b=1 9x=2 dup=first dup=second msg="hi there" empty="#;
        assert_eq!(
            run(line, false, false),
            r#"{_9x="2", a_b="1", app="a", dup="first", msg="hi there"}"#
        );
        assert_eq!(
            run(line, false, true),
            r#"{_9x="2", a_b="1", app="a", dup="first", empty="", msg="hi there"}"#
        );
        assert_eq!(
            run(r#"esc="a \"q\" b\\n""#, false, false),
            r#"{app="a", esc="a \"q\" b\\n"}"#
        );
        assert_eq!(run("flag x=1", false, false), r#"{app="a", x="1"}"#);
        assert_eq!(run("x=a=b y=2", false, false), r#"{app="a", y="2"}"#);
    }

    #[test]
    fn malformed() {
        let line = r#"good=1 bad="unterminated"#;
        assert_eq!(run(line, false, false), r#"{app="a", good="1"}"#);
        let strict = run(line, true, false);
        assert!(
            strict.contains(r#"__error__="LogfmtParserErr""#),
            "{strict}"
        );
        assert!(strict.contains("unterminated quoted value"), "{strict}");
    }

    #[test]
    fn expressions() {
        let mut b = LabelsBuilder::new(Labels::from_pairs([("app", "a")]));
        let exprs = vec![
            ("level".to_string(), "level".to_string()),
            ("code".to_string(), "status".to_string()),
            ("app".to_string(), "app".to_string()),
            ("none".to_string(), "none".to_string()),
        ];
        parse_expressions(
            "level=info status=200 msg=hi app=x",
            false,
            &exprs,
            &mut b,
            &mut LogfmtScratch::default(),
        );
        assert_eq!(
            b.result().labels().to_string(),
            r#"{app="a", app_extracted="x", code="200", level="info", none=""}"#
        );
    }
}
