//! Shapes of the status and metadata endpoints.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::promql::{Error, LabelMatcher, Labels, METRIC_NAME, MatchOp, SeriesSource};

/// One cardinality entry of `status/tsdb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TsdbStat {
    pub name: String,
    pub value: u64,
}

/// `headStats` of `status/tsdb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadStats {
    pub num_series: u64,
    pub num_label_pairs: u64,
    pub chunk_count: i64,
    /// ms; `i64::MAX` when empty, as Prometheus.
    pub min_time: i64,
    /// ms; `i64::MIN` when empty.
    pub max_time: i64,
}

/// The `data` of `status/tsdb`, Prometheus' `TSDBStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TsdbStatus {
    pub head_stats: HeadStats,
    pub series_count_by_metric_name: Vec<TsdbStat>,
    pub label_value_count_by_label_name: Vec<TsdbStat>,
    pub memory_in_bytes_by_label_name: Vec<TsdbStat>,
    pub series_count_by_label_value_pair: Vec<TsdbStat>,
}

/// Metadata of one metric (`metadata` endpoint).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MetricMetadata {
    /// counter, gauge, histogram, gaugehistogram, summary, info,
    /// stateset, unknown.
    #[serde(rename = "type")]
    pub kind: String,
    pub help: String,
    pub unit: String,
}

/// The top `limit` entries by value (ties by name).
fn top(counts: HashMap<String, u64>, limit: usize) -> Vec<TsdbStat> {
    let mut v: Vec<TsdbStat> = counts
        .into_iter()
        .map(|(name, value)| TsdbStat { name, value })
        .collect();
    v.sort_by(|a, b| b.value.cmp(&a.value).then_with(|| a.name.cmp(&b.name)));
    v.truncate(limit);
    v
}

/// Computes `status/tsdb` from what a [`SeriesSource`] returns: every
/// series with its samples (for the time range). Storage with an index
/// answers this from its postings instead.
pub fn tsdb_status_from_source(
    source: &dyn SeriesSource,
    limit: usize,
) -> Result<TsdbStatus, Error> {
    let all = [LabelMatcher::new(METRIC_NAME, MatchOp::Regex, ".*")?];
    let series = source.select(&all, i64::MIN, i64::MAX)?;
    let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
    let mut labels: Vec<&Labels> = Vec::with_capacity(series.len());
    for s in &series {
        if let (Some(first), Some(last)) = (s.samples.first(), s.samples.last()) {
            min_time = min_time.min(first.0);
            max_time = max_time.max(last.0);
        }
        labels.push(&s.labels);
    }
    Ok(tsdb_status_from_labels(
        labels.into_iter(),
        min_time,
        max_time,
        limit,
    ))
}

/// Computes `status/tsdb` from label sets.
pub fn tsdb_status_from_labels<'a>(
    series: impl Iterator<Item = &'a Labels>,
    min_time: i64,
    max_time: i64,
    limit: usize,
) -> TsdbStatus {
    let mut num_series = 0u64;
    let mut by_metric: HashMap<String, u64> = HashMap::new();
    let mut by_pair: HashMap<String, u64> = HashMap::new();
    let mut values: BTreeMap<&'a str, BTreeSet<&'a str>> = BTreeMap::new();
    for labels in series {
        num_series += 1;
        if let Some(name) = labels.get(METRIC_NAME) {
            *by_metric.entry(name.clone()).or_default() += 1;
        }
        for (k, v) in labels {
            *by_pair.entry(format!("{k}={v}")).or_default() += 1;
            values.entry(k.as_str()).or_default().insert(v.as_str());
        }
    }
    let num_label_pairs = values.values().map(|v| v.len() as u64).sum();
    let value_counts = values
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.len() as u64))
        .collect();
    let memory = values
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_string(),
                v.iter().map(|s| s.len() as u64).sum::<u64>(),
            )
        })
        .collect();
    TsdbStatus {
        head_stats: HeadStats {
            num_series,
            num_label_pairs,
            chunk_count: 0,
            min_time,
            max_time,
        },
        series_count_by_metric_name: top(by_metric, limit),
        label_value_count_by_label_name: top(value_counts, limit),
        memory_in_bytes_by_label_name: top(memory, limit),
        series_count_by_label_value_pair: top(by_pair, limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::MemorySource;

    #[test]
    fn cardinality_from_series() {
        let src = MemorySource::new();
        let l = |name: &str, job: &str| -> Labels {
            [("__name__".into(), name.into()), ("job".into(), job.into())].into()
        };
        src.append(&l("up", "a"), 1000, 1.0);
        src.append(&l("up", "b"), 2000, 1.0);
        src.append(&l("x", "a"), 3000, 1.0);
        let s = tsdb_status_from_source(&src, 10).expect("status");
        assert_eq!(s.head_stats.num_series, 3);
        assert_eq!(s.head_stats.num_label_pairs, 4);
        assert_eq!((s.head_stats.min_time, s.head_stats.max_time), (1000, 3000));
        assert_eq!(
            s.series_count_by_metric_name[0],
            TsdbStat {
                name: "up".into(),
                value: 2
            }
        );
        assert_eq!(s.label_value_count_by_label_name.len(), 2);
        assert_eq!(s.series_count_by_label_value_pair[0].name, "__name__=up");
        let json = serde_json::to_value(&s).expect("json");
        assert!(json["headStats"]["numLabelPairs"].is_u64());
        assert!(json["memoryInBytesByLabelName"].is_array());
    }
}
