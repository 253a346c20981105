//! An in-memory [`SeriesSource`].

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::histogram::FloatHistogram;
use super::source::{LabelMatcher, MixedSeries, RawSeries, SeriesSource};
use super::{Error, Labels};

/// A stored sample: a float or a native histogram.
#[derive(Debug, Clone)]
enum Stored {
    Float(f64),
    Histogram(Arc<FloatHistogram>),
}

type SeriesMap = BTreeMap<Labels, Vec<(i64, Stored)>>;

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
        self.put(labels, t_ms, Stored::Float(f));
    }

    /// Adds a native histogram sample; a sample at an existing timestamp
    /// replaces it. Like Prometheus' head, a counter histogram that follows
    /// another histogram gets its counter reset hint from a comparison with
    /// it (`NotCounterReset` or `CounterReset`); after a float sample or
    /// none it stays `Unknown`.
    pub fn append_histogram(&self, labels: &Labels, t_ms: i64, mut h: FloatHistogram) {
        use super::histogram::CounterResetHint;
        if h.counter_reset_hint == CounterResetHint::Unknown
            || h.counter_reset_hint == CounterResetHint::NotCounterReset
        {
            let map = match self.series.read() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let prev = map.get(labels).and_then(|samples| {
                let i = samples.partition_point(|s| s.0 < t_ms);
                i.checked_sub(1).map(|i| &samples[i].1)
            });
            h.counter_reset_hint = match prev {
                Some(Stored::Histogram(p)) if p.counter_reset_hint != CounterResetHint::Gauge => {
                    h.counter_reset_hint = CounterResetHint::Unknown;
                    if h.detect_reset(p) {
                        CounterResetHint::CounterReset
                    } else {
                        CounterResetHint::NotCounterReset
                    }
                }
                _ => CounterResetHint::Unknown,
            };
        }
        self.put(labels, t_ms, Stored::Histogram(Arc::new(h)));
    }

    fn put(&self, labels: &Labels, t_ms: i64, v: Stored) {
        let mut map = match self.series.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let samples = map.entry(labels.clone()).or_default();
        match samples.binary_search_by_key(&t_ms, |s| s.0) {
            Ok(i) => samples[i].1 = v,
            Err(i) => samples.insert(i, (t_ms, v)),
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
        Ok(self
            .select_mixed(matchers, start_ms, end_ms)?
            .into_iter()
            .filter(|s| !s.samples.is_empty())
            .map(|s| RawSeries {
                labels: s.labels,
                samples: s.samples,
            })
            .collect())
    }

    fn select_mixed(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<MixedSeries>, Error> {
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
            let mut series = MixedSeries {
                labels: labels.clone(),
                ..Default::default()
            };
            for (t, v) in &samples[lo..hi] {
                match v {
                    Stored::Float(f) => series.samples.push((*t, *f)),
                    Stored::Histogram(h) => series.histograms.push((*t, h.clone())),
                }
            }
            out.push(series);
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
