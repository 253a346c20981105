//! An in-memory [`LogSource`]: streams of entries held in a map, for the
//! `.logqltest` conformance runner, unit tests and tools.

use std::collections::BTreeMap;
use std::sync::Arc;

use lucia_common::chunk::Entry;
use lucia_common::labels::Labels;
use lucia_common::matchers::{Matcher, matches_all};
use parking_lot::RwLock;

use crate::QueryError;
use crate::source::{Direction, LogSource, SelectRequest, StreamData};

type Streams = BTreeMap<Labels, Vec<Entry>>;

/// Streams per tenant; clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    tenants: Arc<RwLock<BTreeMap<String, Streams>>>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends entries to a stream (created if new). Entries are kept sorted
    /// by time; an entry equal to an existing one (same time, line and
    /// metadata) is dropped, as replicas are.
    pub fn push(&self, tenant: &str, labels: Labels, entries: impl IntoIterator<Item = Entry>) {
        let mut tenants = self.tenants.write();
        let stream = tenants
            .entry(tenant.to_string())
            .or_default()
            .entry(labels)
            .or_default();
        stream.extend(entries);
        stream.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.line.cmp(&b.line)));
        stream.dedup_by(|a, b| a.ts == b.ts && a.line == b.line && a.metadata == b.metadata);
    }

    /// Removes every stream of every tenant.
    pub fn clear(&self) {
        self.tenants.write().clear();
    }

    /// How many entries the tenant holds.
    pub fn len(&self, tenant: &str) -> usize {
        self.tenants
            .read()
            .get(tenant)
            .map_or(0, |s| s.values().map(Vec::len).sum())
    }

    fn matching<T>(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mut f: impl FnMut(&Labels, &[Entry]) -> Option<T>,
    ) -> Vec<T> {
        let tenants = self.tenants.read();
        let Some(streams) = tenants.get(tenant) else {
            return Vec::new();
        };
        streams
            .iter()
            .filter(|(labels, _)| matches_all(matchers, labels))
            .filter_map(|(labels, entries)| f(labels, entries))
            .collect()
    }
}

/// The entries of a sorted slice in `[start, end)`.
fn in_range(entries: &[Entry], start: i64, end: i64) -> &[Entry] {
    let from = entries.partition_point(|e| e.ts < start);
    let to = entries.partition_point(|e| e.ts < end);
    &entries[from..to.max(from)]
}

impl LogSource for MemorySource {
    async fn select(&self, request: SelectRequest) -> Result<Vec<StreamData>, QueryError> {
        if request.end < request.start {
            return Err(QueryError::BadRequest(
                "end timestamp must not be before start time".to_string(),
            ));
        }
        Ok(
            self.matching(&request.tenant, &request.matchers, |labels, entries| {
                let selected = in_range(entries, request.start, request.end);
                if selected.is_empty() {
                    return None;
                }
                let mut entries: Vec<Entry> = match request.direction {
                    Direction::Forward => selected.to_vec(),
                    Direction::Backward => selected.iter().rev().cloned().collect(),
                };
                if request.limit > 0 {
                    entries.truncate(request.limit);
                }
                Some(StreamData {
                    labels: labels.clone(),
                    entries,
                })
            }),
        )
    }

    async fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        Ok(self.matching(tenant, matchers, |labels, entries| {
            (!in_range(entries, start, end).is_empty()).then(|| labels.clone())
        }))
    }
}

#[cfg(test)]
mod tests {
    use lucia_common::matchers::parse_selector;

    use super::*;

    fn entry(ts: i64, line: &str) -> Entry {
        Entry {
            ts,
            line: line.to_string(),
            metadata: Vec::new(),
        }
    }

    #[tokio::test]
    async fn selects_by_matchers_range_and_direction() {
        let source = MemorySource::new();
        let a = Labels::from_pairs([("app", "a")]);
        source.push(
            "t",
            a.clone(),
            [entry(3, "c"), entry(1, "a"), entry(2, "b")],
        );
        source.push("t", a.clone(), [entry(2, "b")]);
        source.push("t", Labels::from_pairs([("app", "b")]), [entry(1, "x")]);
        source.push("other", a.clone(), [entry(1, "secret")]);
        assert_eq!(source.len("t"), 4, "the duplicate is dropped");

        let request = |direction, limit| SelectRequest {
            tenant: "t".to_string(),
            matchers: parse_selector(r#"{app="a"}"#).unwrap(),
            start: 1,
            end: 3,
            direction,
            limit,
            line_filter: None,
        };
        let got = source.select(request(Direction::Forward, 0)).await.unwrap();
        assert_eq!(got.len(), 1);
        let lines: Vec<&str> = got[0].entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["a", "b"], "end is exclusive");
        let got = source
            .select(request(Direction::Backward, 1))
            .await
            .unwrap();
        assert_eq!(got[0].entries[0].line, "b");
        assert_eq!(got[0].entries.len(), 1);

        let series = source
            .series("t", &parse_selector(r#"{app=~".+"}"#).unwrap(), 0, 10)
            .await
            .unwrap();
        assert_eq!(series.len(), 2);
        let none = source
            .series("t", &parse_selector(r#"{app="a"}"#).unwrap(), 4, 10)
            .await
            .unwrap();
        assert!(none.is_empty());
    }
}
