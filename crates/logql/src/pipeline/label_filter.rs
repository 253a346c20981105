//! Label filters: string matchers, numbers, durations, bytes, ip(), with
//! `and`/`or`, and Loki's conversion-error behaviour.

use lucia_common::matchers::{MatchOp, Matcher};

use super::PipelineError;
use super::ip::IpMatcher;
use super::labels::LabelsBuilder;
use crate::ast::{CmpOp, LabelFilter};

pub const LABEL_FILTER_ERR: &str = "LabelFilterErr";

#[derive(Debug, Clone)]
pub enum LabelFilterStage {
    And(Box<LabelFilterStage>, Box<LabelFilterStage>),
    Or(Box<LabelFilterStage>, Box<LabelFilterStage>),
    /// A matcher that matches every value (`=~".*"`).
    Noop,
    String(Matcher),
    Number {
        name: String,
        op: CmpOp,
        value: f64,
    },
    /// Nanoseconds.
    Duration {
        name: String,
        op: CmpOp,
        value: i128,
    },
    Bytes {
        name: String,
        op: CmpOp,
        value: u64,
    },
    Ip {
        name: String,
        negate: bool,
        ip: IpMatcher,
    },
}

fn cmp<T: PartialOrd>(op: CmpOp, a: T, b: T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
    }
}

impl LabelFilterStage {
    pub fn new(filter: &LabelFilter) -> Result<Self, PipelineError> {
        Ok(match filter {
            LabelFilter::And(a, b) => Self::And(Box::new(Self::new(a)?), Box::new(Self::new(b)?)),
            LabelFilter::Or(a, b) => Self::Or(Box::new(Self::new(a)?), Box::new(Self::new(b)?)),
            LabelFilter::String(m) => {
                if m.op == MatchOp::Regex && (m.value == ".*" || m.value == "(?s:.*)") {
                    Self::Noop
                } else {
                    Self::String(m.clone())
                }
            }
            LabelFilter::Number { name, op, value } => Self::Number {
                name: name.clone(),
                op: *op,
                value: *value,
            },
            LabelFilter::Duration { name, op, value } => Self::Duration {
                name: name.clone(),
                op: *op,
                value: value.as_nanos() as i128,
            },
            LabelFilter::Bytes { name, op, value } => Self::Bytes {
                name: name.clone(),
                op: *op,
                value: *value,
            },
            LabelFilter::Ip { name, op, cidr } => Self::Ip {
                name: name.clone(),
                negate: match op {
                    CmpOp::Eq => false,
                    CmpOp::Ne => true,
                    _ => return Err(PipelineError::IpOperation),
                },
                ip: IpMatcher::new(cidr)?,
            },
        })
    }

    /// Whether the line passes; a conversion error sets `__error__`
    /// (unless one is already set) and keeps the line.
    pub fn keep(&self, lbs: &mut LabelsBuilder) -> bool {
        match self {
            Self::And(a, b) => {
                let l = a.keep(lbs);
                let r = b.keep(lbs);
                l && r
            }
            Self::Or(a, b) => a.keep(lbs) || b.keep(lbs),
            Self::Noop => true,
            Self::String(m) => m.matches_value(lbs.value_for_matcher(&m.name)),
            Self::Number { name, op, value } => {
                let Some(v) = lbs.get(name) else {
                    return false;
                };
                match parse_go_float(v) {
                    Ok(x) => cmp(*op, x, *value),
                    Err(e) => {
                        lbs.set_err_if_none(LABEL_FILTER_ERR, &e);
                        true
                    }
                }
            }
            Self::Duration { name, op, value } => {
                let Some(v) = lbs.get(name) else {
                    return false;
                };
                match parse_go_duration(v) {
                    Ok(x) => cmp(*op, x as i128, *value),
                    Err(e) => {
                        lbs.set_err_if_none(LABEL_FILTER_ERR, &e);
                        true
                    }
                }
            }
            Self::Bytes { name, op, value } => {
                let Some(v) = lbs.get(name) else {
                    return false;
                };
                match parse_bytes(v) {
                    Ok(x) => cmp(*op, x, *value),
                    Err(e) => {
                        lbs.set_err_if_none(LABEL_FILTER_ERR, &e);
                        true
                    }
                }
            }
            Self::Ip { name, negate, ip } => {
                if lbs.has_err() {
                    return true;
                }
                let Some(v) = lbs.get(name) else {
                    return false;
                };
                ip.matches(v) != *negate
            }
        }
    }
}

/// Go's `strconv.ParseFloat` for the common cases, with its error text.
pub fn parse_go_float(s: &str) -> Result<f64, String> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let lower = s.to_ascii_lowercase();
    let special = matches!(
        lower.trim_start_matches(['+', '-']),
        "inf" | "infinity" | "nan"
    );
    if (ok || special)
        && let Ok(v) = s.parse::<f64>()
    {
        return Ok(v);
    }
    Err(format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))
}

/// Go's `time.ParseDuration` in nanoseconds, with its error texts.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..n];
        if num.is_empty()
            || num == "."
            || !rest.as_bytes()[0].is_ascii_digit() && !num.starts_with('.')
        {
            return Err(invalid());
        }
        let value: f64 = num.parse().map_err(|_| invalid())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..u];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        rest = &rest[u..];
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let ns = total.round() as i64;
    Ok(if neg { -ns } else { ns })
}

/// go-humanize's `ParseBytes`: a number, then an optional unit (SI or IEC,
/// case-insensitive).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(s.len());
    let num: String = s[..digits].chars().filter(|c| *c != ',').collect();
    let value = parse_go_float(&num)?;
    let unit = s[digits..].trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        _ => return Err(format!("unhandled size name: {unit}")),
    };
    let v = value * mult;
    if v >= u64::MAX as f64 {
        return Err(format!("too large: {s}"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucia_common::labels::Labels;
    use std::time::Duration;

    fn lbs(pairs: &[(&str, &str)]) -> LabelsBuilder {
        let mut b = LabelsBuilder::new(Labels::from_pairs([("app", "a")]));
        for (n, v) in pairs {
            b.add_parsed(n, v);
        }
        b
    }
    fn num(name: &str, op: CmpOp, value: f64) -> LabelFilter {
        LabelFilter::Number {
            name: name.into(),
            op,
            value,
        }
    }
    fn dur(name: &str, op: CmpOp, secs: u64) -> LabelFilter {
        LabelFilter::Duration {
            name: name.into(),
            op,
            value: Duration::from_secs(secs),
        }
    }
    fn string(name: &str, op: MatchOp, v: &str) -> LabelFilter {
        LabelFilter::String(Matcher::new(op, name, v).unwrap())
    }

    #[test]
    fn numbers_and_errors() {
        let f = LabelFilterStage::new(&num("status", CmpOp::Ge, 500.0)).unwrap();
        assert!(f.keep(&mut lbs(&[("status", "503")])));
        assert!(!f.keep(&mut lbs(&[("status", "200")])));
        assert!(!f.keep(&mut lbs(&[])), "missing label drops, no error");
        let mut b = lbs(&[("status", "abc")]);
        assert!(f.keep(&mut b));
        assert_eq!(b.err(), LABEL_FILTER_ERR);
        assert_eq!(
            b.err_details(),
            r#"strconv.ParseFloat: parsing "abc": invalid syntax"#
        );
        let eq = LabelFilterStage::new(&num("code", CmpOp::Eq, 200.0)).unwrap();
        assert!(eq.keep(&mut lbs(&[("code", "200.0")])));
        assert!(
            LabelFilterStage::new(&num("code", CmpOp::Gt, 1e3))
                .unwrap()
                .keep(&mut lbs(&[("code", "1.5e3")]))
        );
    }

    #[test]
    fn and_or_order_and_first_error_wins() {
        let took = dur("took", CmpOp::Gt, 1);
        let lvl = string("lvl", MatchOp::Equal, "error");
        let or = LabelFilterStage::new(&LabelFilter::Or(
            Box::new(lvl.clone()),
            Box::new(took.clone()),
        ))
        .unwrap();
        let mut b = lbs(&[("lvl", "error"), ("took", "oops")]);
        assert!(or.keep(&mut b));
        assert!(!b.has_err(), "right side skipped");
        let or2 =
            LabelFilterStage::new(&LabelFilter::Or(Box::new(took.clone()), Box::new(lvl))).unwrap();
        let mut b = lbs(&[("lvl", "error"), ("took", "oops")]);
        assert!(or2.keep(&mut b));
        assert_eq!(b.err_details(), r#"time: invalid duration "oops""#);
        let and = LabelFilterStage::new(&LabelFilter::And(
            Box::new(dur("y", CmpOp::Gt, 1)),
            Box::new(dur("x", CmpOp::Gt, 1)),
        ))
        .unwrap();
        let mut b = lbs(&[("x", "nope"), ("y", "90")]);
        assert!(and.keep(&mut b));
        assert_eq!(b.err_details(), r#"time: missing unit in duration "90""#);
        // A false comparison drops the line even though the other failed.
        let and2 = LabelFilterStage::new(&LabelFilter::And(
            Box::new(took),
            Box::new(LabelFilter::Bytes {
                name: "size".into(),
                op: CmpOp::Lt,
                value: 1_000_000,
            }),
        ))
        .unwrap();
        assert!(!and2.keep(&mut lbs(&[("took", "oops"), ("size", "3MB")])));
    }

    #[test]
    fn error_label_and_ip() {
        let mut b = lbs(&[]);
        b.set_err("JSONParserErr");
        let s = LabelFilterStage::new(&string("__error__", MatchOp::Equal, "")).unwrap();
        assert!(!s.keep(&mut b));
        let ip = LabelFilterStage::new(&LabelFilter::Ip {
            name: "addr".into(),
            op: CmpOp::Eq,
            cidr: "1.2.3.0/24".into(),
        })
        .unwrap();
        assert!(ip.keep(&mut b), "errored lines pass ip filters");
        let ne = LabelFilterStage::new(&string("addr", MatchOp::NotEqual, "1.2.3.4")).unwrap();
        assert!(ne.keep(&mut b));
        assert!(ip.keep(&mut lbs(&[("addr", "client=1.2.3.9:80")])));
        assert!(!ip.keep(&mut lbs(&[])));
        let nip = LabelFilterStage::new(&LabelFilter::Ip {
            name: "addr".into(),
            op: CmpOp::Ne,
            cidr: "192.168.0.0/16".into(),
        })
        .unwrap();
        assert!(nip.keep(&mut lbs(&[("addr", "none")])));
        assert!(!nip.keep(&mut lbs(&[])));
        // A converting filter cannot read __error__.
        let n = LabelFilterStage::new(&num("__error__", CmpOp::Gt, 0.0)).unwrap();
        assert!(!n.keep(&mut b));
    }

    #[test]
    fn conversions() {
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_go_duration("2h45m"), Ok(9_900_000_000_000));
        assert_eq!(parse_go_duration("-1m"), Ok(-60_000_000_000));
        assert_eq!(
            parse_go_duration("1d").unwrap_err(),
            r#"time: unknown unit "d" in duration "1d""#
        );
        assert_eq!(parse_bytes("3MB"), Ok(3_000_000));
        assert_eq!(parse_bytes("2kib"), Ok(2048));
        assert_eq!(parse_bytes("1,000"), Ok(1000));
        assert_eq!(parse_bytes("500 KB"), Ok(500_000));
        assert_eq!(
            parse_bytes("oops").unwrap_err(),
            r#"strconv.ParseFloat: parsing "": invalid syntax"#
        );
        assert!(parse_go_float("0x10").is_err());
        assert_eq!(parse_go_float("-1"), Ok(-1.0));
    }
}
