//! The storage seam of the PromQL engine.

use std::sync::Arc;

use regex::Regex;

use super::histogram::FloatHistogram;

use super::{Error, Labels};

/// How a matcher compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// A label matcher. Regexes are fully anchored, as in Prometheus. A label
/// that is absent matches as the empty value.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl LabelMatcher {
    /// Builds a matcher; fails on an invalid regex.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, Error> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(Regex::new(&format!("^(?s:{value})$")).map_err(|e| {
                    Error::Parse(format!("invalid regular expression {value:?}: {e}"))
                })?)
            }
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// True when `value` (the empty string for an absent label) matches.
    pub fn matches_value(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// True when the label set matches.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).map(String::as_str).unwrap_or(""))
    }
}

/// A series as storage returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries {
    pub labels: Labels,
    /// (timestamp in ms, value), sorted by time; staleness markers are kept
    /// with their exact bit pattern.
    pub samples: Vec<(i64, f64)>,
}

/// A series with float and native histogram samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MixedSeries {
    pub labels: Labels,
    /// Float samples, as in [`RawSeries`].
    pub samples: Vec<(i64, f64)>,
    /// Native histogram samples, sorted by time.
    pub histograms: Vec<(i64, Arc<FloatHistogram>)>,
}

/// Where the engine reads series from.
pub trait SeriesSource: Send + Sync {
    /// Every series that matches all `matchers`, with its samples in
    /// `[start_ms, end_ms]` (inclusive). Series without samples in the range
    /// may be left out.
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<RawSeries>, Error>;

    /// Like [`SeriesSource::select`], with native histogram samples too.
    /// Storage without native histograms keeps this default.
    fn select_mixed(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<MixedSeries>, Error> {
        Ok(self
            .select(matchers, start_ms, end_ms)?
            .into_iter()
            .map(|s| MixedSeries {
                labels: s.labels,
                samples: s.samples,
                histograms: Vec::new(),
            })
            .collect())
    }

    /// Label sets of the series that match all `matchers` and have samples
    /// in `[start_ms, end_ms]` (the Prometheus `series` API). Storage with
    /// an index overrides this to avoid reading samples.
    fn series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, Error> {
        Ok(self
            .select(matchers, start_ms, end_ms)?
            .into_iter()
            .map(|s| s.labels)
            .collect())
    }

    /// Sorted, distinct label names of the matching series (all series
    /// when `matchers` is empty).
    fn label_names(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, Error> {
        let all = match_all_when_empty(matchers)?;
        let mut names = std::collections::BTreeSet::new();
        for labels in self.series(&all, start_ms, end_ms)? {
            names.extend(labels.into_keys());
        }
        Ok(names.into_iter().collect())
    }

    /// Sorted, distinct values of label `name` over the matching series
    /// (all series when `matchers` is empty).
    fn label_values(
        &self,
        name: &str,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, Error> {
        let all = match_all_when_empty(matchers)?;
        let mut values = std::collections::BTreeSet::new();
        for mut labels in self.series(&all, start_ms, end_ms)? {
            if let Some(v) = labels.remove(name) {
                values.insert(v);
            }
        }
        Ok(values.into_iter().collect())
    }
}

/// `matchers`, or one matcher that every series passes when it is empty.
fn match_all_when_empty(matchers: &[LabelMatcher]) -> Result<Vec<LabelMatcher>, Error> {
    if matchers.is_empty() {
        Ok(vec![LabelMatcher::new(
            super::METRIC_NAME,
            MatchOp::Regex,
            ".+",
        )?])
    } else {
        Ok(matchers.to_vec())
    }
}
