//! Line filters pushed down into chunk decoding.
//!
//! The leading line filters of a pipeline (before any stage that could
//! change the line) decide which lines are worth decoding at all: a block
//! in which a `|=` needle never occurs is skipped after one `memmem` scan,
//! and rejected lines are never copied. The full pipeline still runs on
//! what is kept, so this only has to be a superset of the final answer.

use std::sync::Arc;

use lucia_common::chunk::LineFilter;
use lucia_logql::ast::{LineFilterOp, LineFilterValue, Stage};
use memchr::memmem::Finder;
use regex::Regex;

use crate::source::LinePushdown;

enum Predicate {
    /// The line contains one of the needles.
    Contains(Vec<Finder<'static>>),
    /// The line contains none of the needles.
    NotContains(Vec<Finder<'static>>),
    Regex(Vec<Regex>),
    NotRegex(Vec<Regex>),
}

struct Filters(Vec<Predicate>);

impl LineFilter for Filters {
    fn block_may_match(&self, lines: &[u8]) -> bool {
        self.0.iter().all(|p| match p {
            Predicate::Contains(needles) => needles.iter().any(|n| n.find(lines).is_some()),
            _ => true,
        })
    }

    fn matches(&self, line: &str) -> bool {
        let bytes = line.as_bytes();
        self.0.iter().all(|p| match p {
            Predicate::Contains(needles) => needles.iter().any(|n| n.find(bytes).is_some()),
            Predicate::NotContains(needles) => !needles.iter().any(|n| n.find(bytes).is_some()),
            Predicate::Regex(res) => res.iter().any(|re| re.is_match(line)),
            Predicate::NotRegex(res) => !res.iter().any(|re| re.is_match(line)),
        })
    }
}

/// The pushdown filter of a pipeline, if its leading stages have any that
/// can be pushed down (plain strings and regexes; `ip()` and patterns stay
/// in the pipeline).
pub(crate) fn line_pushdown(stages: &[Stage]) -> Option<LinePushdown> {
    let mut predicates = Vec::new();
    for stage in stages {
        let Stage::LineFilter(filter) = stage else {
            break;
        };
        let texts: Option<Vec<&str>> = filter
            .values
            .iter()
            .map(|v| match v {
                LineFilterValue::Text(t) => Some(t.as_str()),
                LineFilterValue::Ip(_) => None,
            })
            .collect();
        let Some(texts) = texts else { continue };
        let finders = || {
            texts
                .iter()
                .map(|t| Finder::new(t.as_bytes()).into_owned())
                .collect()
        };
        let regexes = || {
            texts
                .iter()
                .map(|t| Regex::new(t).ok())
                .collect::<Option<Vec<_>>>()
        };
        let predicate = match filter.op {
            LineFilterOp::Contains => Some(Predicate::Contains(finders())),
            LineFilterOp::NotContains => Some(Predicate::NotContains(finders())),
            LineFilterOp::Regex => regexes().map(Predicate::Regex),
            LineFilterOp::NotRegex => regexes().map(Predicate::NotRegex),
            LineFilterOp::Pattern | LineFilterOp::NotPattern => None,
        };
        predicates.extend(predicate);
    }
    (!predicates.is_empty()).then(|| LinePushdown(Arc::new(Filters(predicates))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushdown(query: &str) -> Option<LinePushdown> {
        let expr = lucia_logql::parse_log_expr(query).unwrap();
        line_pushdown(&expr.stages)
    }

    #[test]
    fn leading_filters_are_pushed_down() {
        let f = pushdown(r#"{a="b"} |= "err" != "debug" |~ "code=5\\d\\d""#).unwrap();
        assert!(f.0.matches("err code=503"));
        assert!(!f.0.matches("err code=200"));
        assert!(!f.0.matches("debug err code=503"));
        assert!(f.0.block_may_match(b"x\nerr\n"));
        assert!(!f.0.block_may_match(b"x\nwarn\n"));
        let or = pushdown(r#"{a="b"} |= "x" or "y""#).unwrap();
        assert!(or.0.matches("y") && or.0.block_may_match(b"..y.."));
    }

    #[test]
    fn stops_at_the_first_stage_that_is_not_a_line_filter() {
        assert!(pushdown(r#"{a="b"} | json |= "err""#).is_none());
        assert!(pushdown(r#"{a="b"}"#).is_none());
        let f = pushdown(r#"{a="b"} |= "err" | line_format "{{.x}}" |= "zzz""#).unwrap();
        assert!(
            f.0.matches("err"),
            "filters after line_format see another line"
        );
        assert!(pushdown(r#"{a="b"} |= ip("10.0.0.0/8")"#).is_none());
    }
}
