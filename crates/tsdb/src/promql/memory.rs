//! An in-memory [`SeriesSource`].

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::source::{LabelMatcher, RawSeries, SeriesSource};
use super::{Error, Labels};

type SeriesMap = BTreeMap<Labels, Vec<(i64, f64)>>;

/// Series held in memory; clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    series: Arc<RwLock<SeriesMap>>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample; a sample at an existing timestamp replaces it.
    pub fn append(&self, labels: &Labels, t_ms: i64, f: f64) {
        let mut map = match self.series.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let samples = map.entry(labels.clone()).or_default();
        match samples.binary_search_by_key(&t_ms, |s| s.0) {
            Ok(i) => samples[i].1 = f,
            Err(i) => samples.insert(i, (t_ms, f)),
        }
    }

    /// Removes every series.
    pub fn clear(&self) {
        let mut map = match self.series.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.clear();
    }
}

impl SeriesSource for MemorySource {
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<RawSeries>, Error> {
        let map = match self.series.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = Vec::new();
        for (labels, samples) in map.iter() {
            if !matchers.iter().all(|m| m.matches(labels)) {
                continue;
            }
            let lo = samples.partition_point(|s| s.0 < start_ms);
            let hi = samples.partition_point(|s| s.0 <= end_ms);
            if lo >= hi {
                continue;
            }
            out.push(RawSeries {
                labels: labels.clone(),
                samples: samples[lo..hi].to_vec(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::{MatchOp, is_stale_nan, stale_nan};

    #[test]
    fn selects_by_matchers_and_range_keeping_stale_markers() {
        let src = MemorySource::new();
        let a: Labels = [("__name__".into(), "up".into()), ("job".into(), "a".into())].into();
        let b: Labels = [("__name__".into(), "up".into()), ("job".into(), "b".into())].into();
        src.append(&a, 20, 2.0);
        src.append(&a, 10, 1.0);
        src.append(&a, 30, stale_nan());
        src.append(&b, 10, 5.0);
        let m = [
            LabelMatcher::new("__name__", MatchOp::Equal, "up").expect("matcher"),
            LabelMatcher::new("job", MatchOp::Regex, "a|c").expect("matcher"),
        ];
        let got = src.select(&m, 15, 30).expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels, a);
        assert_eq!(got[0].samples.len(), 2);
        assert_eq!(got[0].samples[0], (20, 2.0));
        assert!(is_stale_nan(got[0].samples[1].1));
        let none = [LabelMatcher::new("job", MatchOp::NotRegex, ".*").expect("matcher")];
        assert!(src.select(&none, 0, 100).expect("select").is_empty());
    }
}
