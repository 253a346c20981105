//! Label matchers `=`, `!=`, `=~`, `!~` and stream selectors `{a="b", c=~"d.*"}`.
//!
//! Regexes are fully anchored and `.` matches newlines, as in Prometheus 3.
//! A matcher against a missing label sees the empty string.

use std::fmt;

use regex::Regex;

use crate::labels::{Labels, is_valid_label_name, unquote, write_quoted};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("invalid regex {value:?} for label {name:?}: {reason}")]
    Regex {
        name: String,
        value: String,
        reason: String,
    },
    #[error("parse error at byte {pos} of {input:?}: {reason}")]
    Syntax {
        input: String,
        pos: usize,
        reason: String,
    },
    #[error(
        "selector {0:?} must contain at least one matcher that does not match the empty string, e.g. {{app=\"api\"}}"
    )]
    MatchesEverything(String),
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let name = name.into();
        let value = value.into();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?s:{value})$")).map_err(|err| MatcherError::Regex {
                    name: name.clone(),
                    value: value.clone(),
                    reason: err.to_string(),
                })?,
            ),
            _ => None,
        };
        Ok(Self {
            name,
            op,
            value,
            regex,
        })
    }

    /// Whether `value` (the empty string for a missing label) matches.
    pub fn matches_value(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            _ => false,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).unwrap_or(""))
    }

    pub fn matches_empty(&self) -> bool {
        self.matches_value("")
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, self.op.as_str())?;
        write_quoted(f, &self.value)
    }
}

/// Whether every matcher matches `labels`.
pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Parses a stream selector `{name op "value", ...}`. At least one matcher
/// must not match the empty string, as Loki and Prometheus require.
pub fn parse_selector(input: &str) -> Result<Vec<Matcher>, MatcherError> {
    let matchers = parse_matchers(input)?;
    if matchers.iter().all(Matcher::matches_empty) {
        return Err(MatcherError::MatchesEverything(input.to_string()));
    }
    Ok(matchers)
}

/// Parses `{name op "value", ...}` without the non-empty requirement.
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, MatcherError> {
    let bytes = input.as_bytes();
    let syntax = |pos: usize, reason: &str| MatcherError::Syntax {
        input: input.to_string(),
        pos,
        reason: reason.to_string(),
    };
    let skip_ws = |mut pos: usize| {
        while matches!(bytes.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            pos += 1;
        }
        pos
    };
    let mut pos = skip_ws(0);
    if bytes.get(pos) != Some(&b'{') {
        return Err(syntax(pos, "expected '{'"));
    }
    pos += 1;
    let mut matchers = Vec::new();
    loop {
        pos = skip_ws(pos);
        if bytes.get(pos) == Some(&b'}') {
            pos += 1;
            break;
        }
        let start = pos;
        while matches!(bytes.get(pos), Some(c) if c.is_ascii_alphanumeric() || *c == b'_') {
            pos += 1;
        }
        let name = &input[start..pos];
        if !is_valid_label_name(name) {
            return Err(syntax(start, "expected a label name"));
        }
        pos = skip_ws(pos);
        let op = match (bytes.get(pos), bytes.get(pos + 1)) {
            (Some(b'='), Some(b'~')) => MatchOp::Regex,
            (Some(b'!'), Some(b'~')) => MatchOp::NotRegex,
            (Some(b'!'), Some(b'=')) => MatchOp::NotEqual,
            (Some(b'='), _) => MatchOp::Equal,
            _ => return Err(syntax(pos, "expected one of =, !=, =~, !~")),
        };
        pos += if op == MatchOp::Equal { 1 } else { 2 };
        pos = skip_ws(pos);
        let (value, end) = unquote(input, pos).map_err(|(p, reason)| syntax(p, reason))?;
        pos = end;
        matchers.push(Matcher::new(op, name, value)?);
        pos = skip_ws(pos);
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            Some(b'}') => {}
            _ => return Err(syntax(pos, "expected ',' or '}'")),
        }
    }
    pos = skip_ws(pos);
    if pos != bytes.len() {
        return Err(syntax(pos, "unexpected text after '}'"));
    }
    Ok(matchers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels::from_pairs([("app", "api"), ("env", "prod"), ("msg", "a\nb")])
    }

    #[test]
    fn operators() {
        let l = labels();
        assert!(
            Matcher::new(MatchOp::Equal, "app", "api")
                .unwrap()
                .matches(&l)
        );
        assert!(
            !Matcher::new(MatchOp::NotEqual, "app", "api")
                .unwrap()
                .matches(&l)
        );
        assert!(
            Matcher::new(MatchOp::Regex, "env", "pr.*")
                .unwrap()
                .matches(&l)
        );
        assert!(
            !Matcher::new(MatchOp::Regex, "env", "pr")
                .unwrap()
                .matches(&l),
            "anchored"
        );
        assert!(
            Matcher::new(MatchOp::NotRegex, "env", "dev|test")
                .unwrap()
                .matches(&l)
        );
        assert!(
            Matcher::new(MatchOp::Regex, "msg", "a.b")
                .unwrap()
                .matches(&l),
            "dot matches newline"
        );
        assert!(
            Matcher::new(MatchOp::Equal, "missing", "")
                .unwrap()
                .matches(&l)
        );
        assert!(Matcher::new(MatchOp::Regex, "x", "(").is_err());
    }

    #[test]
    fn selectors() {
        let m = parse_selector(r#"{app="api", env=~"prod|dev" , msg!~`x\d`}"#).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].value, r"x\d");
        assert!(matches_all(&m, &labels()));
        assert_eq!(m[0].to_string(), r#"app="api""#);
        assert!(matches!(
            parse_selector(r#"{app=~".*"}"#),
            Err(MatcherError::MatchesEverything(_))
        ));
        assert!(parse_selector(r#"{app="api""#).is_err());
        assert!(parse_selector(r#"{app=="api"}"#).is_err());
        assert!(parse_selector(r#"{="api"}"#).is_err());
    }
}
