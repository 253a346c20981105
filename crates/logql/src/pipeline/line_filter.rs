//! Line filters: `|=`, `!=`, `|~`, `!~`, `|>`, `!>`, with `or` alternatives
//! and `ip()`.

use memchr::memmem;
use regex::Regex;

use super::PipelineError;
use super::ip::IpMatcher;
use super::pattern::Pattern;
use crate::ast::{LineFilter, LineFilterOp, LineFilterValue};

/// One alternative of a line filter.
#[derive(Debug, Clone)]
enum Matcher {
    All,
    Literal(memmem::Finder<'static>),
    /// Case-insensitive ASCII literal, stored lowercase.
    LiteralFold(memmem::Finder<'static>),
    Regex(Regex),
    Pattern(Pattern),
    Ip(IpMatcher),
}

#[derive(Debug, Clone)]
pub struct LineFilterStage {
    negate: bool,
    matchers: Vec<Matcher>,
    needs_fold: bool,
}

/// `(?i)` followed by a plain ASCII literal, or a plain literal.
fn regex_literal(src: &str) -> Option<(String, bool)> {
    let (body, fold) = match src.strip_prefix("(?i)") {
        Some(b) => (b, true),
        None => (src, false),
    };
    let plain = body.bytes().all(|b| {
        b.is_ascii()
            && !matches!(
                b,
                b'\\'
                    | b'.'
                    | b'+'
                    | b'*'
                    | b'?'
                    | b'('
                    | b')'
                    | b'|'
                    | b'['
                    | b']'
                    | b'{'
                    | b'}'
                    | b'^'
                    | b'$'
            )
    });
    plain.then(|| (body.to_string(), fold))
}

impl LineFilterStage {
    pub fn new(filter: &LineFilter) -> Result<Self, PipelineError> {
        let negate = matches!(
            filter.op,
            LineFilterOp::NotContains | LineFilterOp::NotRegex | LineFilterOp::NotPattern
        );
        let mut matchers = Vec::with_capacity(filter.values.len());
        for value in &filter.values {
            let m = match (filter.op, value) {
                (LineFilterOp::Contains | LineFilterOp::NotContains, LineFilterValue::Ip(p)) => {
                    Matcher::Ip(IpMatcher::new(p)?)
                }
                (_, LineFilterValue::Ip(_)) => {
                    return Err(PipelineError::IpOperation);
                }
                (LineFilterOp::Contains | LineFilterOp::NotContains, LineFilterValue::Text(t)) => {
                    if t.is_empty() {
                        Matcher::All
                    } else {
                        Matcher::Literal(memmem::Finder::new(t.as_bytes()).into_owned())
                    }
                }
                (LineFilterOp::Regex | LineFilterOp::NotRegex, LineFilterValue::Text(t)) => {
                    // Validate with the real engine first so errors read the same.
                    let re = Regex::new(t)
                        .map_err(|e| PipelineError::Regex(t.clone(), e.to_string()))?;
                    match regex_literal(t) {
                        Some((lit, _)) if lit.is_empty() => Matcher::All,
                        Some((lit, false)) => {
                            Matcher::Literal(memmem::Finder::new(lit.as_bytes()).into_owned())
                        }
                        Some((lit, true)) => Matcher::LiteralFold(
                            memmem::Finder::new(lit.to_ascii_lowercase().as_bytes()).into_owned(),
                        ),
                        None => Matcher::Regex(re),
                    }
                }
                (LineFilterOp::Pattern | LineFilterOp::NotPattern, LineFilterValue::Text(t)) => {
                    Matcher::Pattern(Pattern::filter(t)?)
                }
            };
            matchers.push(m);
        }
        let needs_fold = matchers
            .iter()
            .any(|m| matches!(m, Matcher::LiteralFold(_)));
        Ok(Self {
            negate,
            matchers,
            needs_fold,
        })
    }

    /// Whether the line passes. `fold_buf` is scratch space reused across
    /// lines for case-insensitive literals.
    pub fn keep(&self, line: &str, fold_buf: &mut Vec<u8>) -> bool {
        if self.needs_fold {
            fold_buf.clear();
            fold_buf.extend(line.bytes().map(|b| b.to_ascii_lowercase()));
        }
        let any = self.matchers.iter().any(|m| match m {
            Matcher::All => true,
            Matcher::Literal(f) => f.find(line.as_bytes()).is_some(),
            Matcher::LiteralFold(f) => f.find(fold_buf).is_some(),
            Matcher::Regex(re) => re.is_match(line),
            Matcher::Pattern(p) => p.test(line),
            Matcher::Ip(ip) => ip.matches(line),
        });
        any != self.negate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(op: LineFilterOp, values: &[&str]) -> LineFilterStage {
        LineFilterStage::new(&LineFilter {
            op,
            values: values
                .iter()
                .map(|v| match v.strip_prefix("ip:") {
                    Some(ip) => LineFilterValue::Ip(ip.to_string()),
                    None => LineFilterValue::Text(v.to_string()),
                })
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn contains_and_or() {
        let mut buf = Vec::new();
        let c = f(LineFilterOp::Contains, &["err"]);
        assert!(c.keep("req id=1 err=connrefused", &mut buf));
        assert!(!c.keep("req id=2 ok", &mut buf));
        assert!(!f(LineFilterOp::Contains, &["ERR"]).keep("err", &mut buf));
        assert!(f(LineFilterOp::Contains, &[""]).keep("anything", &mut buf));
        let n = f(LineFilterOp::NotContains, &["error", "warn"]);
        assert!(!n.keep("level=warn y", &mut buf));
        assert!(n.keep("level=info z", &mut buf));
        let ip = f(LineFilterOp::Contains, &["special", "ip:10.0.0.0/8"]);
        assert!(ip.keep("src 10.0.0.9 ok", &mut buf));
        assert!(ip.keep("special no ip", &mut buf));
        assert!(!ip.keep("src 8.8.8.8 ok", &mut buf));
        let nip = f(LineFilterOp::NotContains, &["ip:192.168.1.0/24"]);
        assert!(nip.keep("no ip here", &mut buf));
        assert!(!nip.keep("src 192.168.1.10 ok", &mut buf));
    }

    #[test]
    fn regex_and_pattern() {
        let mut buf = Vec::new();
        let r = f(LineFilterOp::Regex, &["code=5.."]);
        assert!(r.keep("code=500 fail", &mut buf));
        assert!(!r.keep("CODE=503 down", &mut buf));
        let ri = f(LineFilterOp::Regex, &["(?i)code=5.."]);
        assert!(ri.keep("CODE=503 down", &mut buf));
        let lit = f(LineFilterOp::Regex, &["(?i)Code"]);
        assert!(lit.keep("xCODEx", &mut buf));
        assert!(!lit.keep("cod", &mut buf));
        assert!(!f(LineFilterOp::NotRegex, &["err.r", "wa.n"]).keep("level=warn y", &mut buf));
        let p = f(
            LineFilterOp::Pattern,
            &["level=error <_>", "level=warn <_>"],
        );
        assert!(p.keep("level=warn y", &mut buf));
        assert!(!p.keep("level=info z", &mut buf));
        assert!(f(LineFilterOp::NotPattern, &["GET <_> 200"]).keep("POST /api 500", &mut buf));
    }

    #[test]
    fn build_errors() {
        let e = |op, v: LineFilterValue| {
            LineFilterStage::new(&LineFilter {
                op,
                values: vec![v],
            })
            .unwrap_err()
            .to_string()
        };
        assert!(
            e(LineFilterOp::Regex, LineFilterValue::Text("(".into()))
                .contains("error parsing regexp")
        );
        assert!(
            e(
                LineFilterOp::Regex,
                LineFilterValue::Ip("10.0.0.0/8".into())
            )
            .contains("ip: invalid operation")
        );
        assert!(
            e(
                LineFilterOp::Contains,
                LineFilterValue::Ip("notanip".into())
            )
            .contains("ip: invalid pattern")
        );
        assert!(
            e(
                LineFilterOp::Pattern,
                LineFilterValue::Text("<verb> /api".into())
            )
            .contains("named captures are not allowed")
        );
    }
}
