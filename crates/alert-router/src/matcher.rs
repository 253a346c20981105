//! Alertmanager's label matchers: `foo="bar"`, `foo=~"a|b"`, `foo!=bar`,
//! unquoted values, and comma-separated lists with optional braces.
//! Regexes are anchored (`^(?:re)$`).

use std::fmt;

use regex::Regex;

use crate::model::LabelSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regexp,
    NotRegexp,
}

impl MatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regexp => "=~",
            Self::NotRegexp => "!~",
        }
    }

    pub fn is_regex(self) -> bool {
        matches!(self, Self::Regexp | Self::NotRegexp)
    }

    pub fn is_equal(self) -> bool {
        matches!(self, Self::Equal | Self::Regexp)
    }

    pub fn from_flags(is_equal: bool, is_regex: bool) -> Self {
        match (is_equal, is_regex) {
            (true, false) => Self::Equal,
            (false, false) => Self::NotEqual,
            (true, true) => Self::Regexp,
            (false, true) => Self::NotRegexp,
        }
    }
}

/// One matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub kind: MatchType,
    pub name: String,
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.name == other.name && self.value == other.value
    }
}

impl Eq for Matcher {}

impl Matcher {
    pub fn new(
        kind: MatchType,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, String> {
        let name = name.into();
        let value = value.into();
        let re = if kind.is_regex() {
            Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|err| format!("invalid regular expression {value:?}: {err}"))?,
            )
        } else {
            None
        };
        Ok(Self {
            kind,
            name,
            value,
            re,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match (self.kind, &self.re) {
            (MatchType::Equal, _) => value == self.value,
            (MatchType::NotEqual, _) => value != self.value,
            (MatchType::Regexp, Some(re)) => re.is_match(value),
            (MatchType::NotRegexp, Some(re)) => !re.is_match(value),
            _ => false,
        }
    }

    pub fn matches_labels(&self, labels: &LabelSet) -> bool {
        self.matches(labels.get(&self.name).map(String::as_str).unwrap_or(""))
    }

    fn sort_key(&self) -> (&str, &str, MatchType) {
        (&self.name, &self.value, self.kind)
    }
}

/// `name="value"` with OpenMetrics escaping, as Alertmanager prints it.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escaped = self
            .value
            .replace('\\', r"\\")
            .replace('\n', r"\n")
            .replace('"', "\\\"");
        write!(f, "{}{}\"{}\"", self.name, self.kind.as_str(), escaped)
    }
}

/// A list of matchers that all have to match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matchers(pub Vec<Matcher>);

impl Matchers {
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.0.iter().all(|m| m.matches_labels(labels))
    }

    /// Sorts like Alertmanager's `Matchers.Less` (name, value, type).
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `{a="b",c=~"d"}`: the form route keys use.
impl fmt::Display for Matchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

fn is_label_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

/// Parses one matcher (Alertmanager's `ParseMatcher`).
pub fn parse_matcher(input: &str) -> Result<Matcher, String> {
    let bad = || format!("bad matcher format: {input}");
    let s = input.trim_start();
    let name_len = s
        .char_indices()
        .find(|(i, c)| !is_label_name_char(*c, *i == 0))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    if name_len == 0 {
        return Err(bad());
    }
    let name = &s[..name_len];
    let rest = s[name_len..].trim_start();
    let (kind, rest) = if let Some(r) = rest.strip_prefix("=~") {
        (MatchType::Regexp, r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        (MatchType::NotEqual, r)
    } else if let Some(r) = rest.strip_prefix("!~") {
        (MatchType::NotRegexp, r)
    } else if let Some(r) = rest.strip_prefix('=') {
        (MatchType::Equal, r)
    } else {
        return Err(bad());
    };
    let raw = rest.trim();
    let (raw, mut expect_quote) = match raw.strip_prefix('"') {
        Some(r) => (r, true),
        None => (raw, false),
    };
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    let chars: Vec<(usize, char)> = raw.char_indices().collect();
    for (pos, &(i, c)) in chars.iter().enumerate() {
        let last = pos + 1 == chars.len();
        if escaped {
            escaped = false;
            match c {
                'n' => value.push('\n'),
                '"' | '\\' => value.push(c),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            }
            continue;
        }
        match c {
            '\\' if !last => escaped = true,
            '\\' => value.push('\\'),
            '"' => {
                if !expect_quote || i + 1 < raw.len() {
                    return Err(format!(
                        "matcher value contains unescaped double quote: {}",
                        rest.trim()
                    ));
                }
                expect_quote = false;
            }
            other => value.push(other),
        }
    }
    if expect_quote {
        return Err(format!(
            "matcher value contains unescaped double quote: {}",
            rest.trim()
        ));
    }
    Matcher::new(kind, name, value)
}

/// Parses a comma-separated list, optionally in braces (`ParseMatchers`).
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, String> {
    let s = input.trim();
    let s = s.strip_prefix('{').unwrap_or(s);
    let s = s.strip_suffix('}').unwrap_or(s);
    let mut tokens = Vec::new();
    let mut token = String::new();
    let (mut inside_quotes, mut escaped) = (false, false);
    for c in s.chars() {
        match c {
            ',' if !inside_quotes => {
                tokens.push(std::mem::take(&mut token));
                continue;
            }
            ',' => {}
            '"' => {
                if escaped {
                    escaped = false;
                } else {
                    inside_quotes = !inside_quotes;
                }
            }
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
        token.push(c);
    }
    if !token.trim().is_empty() {
        tokens.push(token.trim().to_string());
    }
    tokens.iter().map(|t| parse_matcher(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_alertmanager_syntax() {
        let m = parse_matchers(r#"{foo = "bar", dings != "bums", }"#).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].to_string(), r#"foo="bar""#);
        assert_eq!(m[1].kind, MatchType::NotEqual);
        let m = parse_matchers("foo=bar,dings!=bums").unwrap();
        assert_eq!(m[1].value, "bums");
        let m = parse_matchers(r#"{quote="She said: \"Hi, ladies!\""}"#).unwrap();
        assert_eq!(m[0].value, r#"She said: "Hi, ladies!""#);
        let m = parse_matcher(r#"statuscode=~"5..""#).unwrap();
        assert!(m.matches("503"));
        assert!(!m.matches("5030"), "anchored");
        assert!(parse_matcher("foo").is_err());
        assert!(parse_matcher(r#"foo="ba"r""#).is_err());
        assert!(parse_matcher(r#"foo=~"(""#).is_err());
        assert!(parse_matcher("1foo=bar").is_err());
        let m = parse_matcher("foo==bar").unwrap();
        assert_eq!(m.value, "=bar");
        let m = parse_matcher("foo=").unwrap();
        assert!(m.matches_labels(&labels(&[])));
    }

    #[test]
    fn lists_sort_and_print() {
        let mut ms = Matchers(parse_matchers(r#"b=~"x|y",a="1\n""#).unwrap());
        ms.sort();
        assert_eq!(ms.to_string(), r#"{a="1\n",b=~"x|y"}"#);
        assert!(ms.matches(&labels(&[("a", "1\n"), ("b", "y")])));
        assert!(!ms.matches(&labels(&[("a", "1\n"), ("b", "z")])));
    }
}
