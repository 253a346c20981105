//! Log queries: select, run the pipeline per stream, regroup entries by
//! their final label set, and keep the first `limit` entries across all
//! streams in the query direction.

use std::collections::{BTreeMap, HashSet};

use lucia_common::labels::Labels;
use lucia_logql::ast;

use super::pipeline::Pipeline;
use super::{Engine, QueryResult, RangeParams, ResultData, ResultEntry, Statistics, StreamResult};
use crate::QueryError;
use crate::source::{Direction, LogSource, SelectRequest};

impl<S: LogSource> Engine<S> {
    pub(super) async fn eval_log(
        &self,
        tenant: &str,
        log: &ast::LogExpr,
        params: &RangeParams,
    ) -> Result<QueryResult, QueryError> {
        let max = self.limits.max_entries_per_query;
        if max > 0 && params.limit > max {
            return Err(QueryError::Limit(format!(
                "max entries limit per query exceeded, limit > max_entries_limit_per_query ({} > {max})",
                params.limit
            )));
        }
        let limit = if params.limit == 0 {
            if max > 0 { max } else { usize::MAX }
        } else {
            params.limit
        };
        let pipeline = Pipeline::compile(log, None)?;
        let streams = self
            .source
            .select(SelectRequest {
                tenant: tenant.to_string(),
                matchers: log.matchers.clone(),
                start: params.start,
                end: params.end,
                direction: params.direction,
                limit: if log.stages.is_empty() { limit } else { 0 },
                line_filter: super::pushdown::line_pushdown(&log.stages),
            })
            .await?;
        let mut stats = Statistics::default();
        stats.count_read(&streams);
        let interval = params
            .interval
            .map(|i| i64::try_from(i.as_nanos()).unwrap_or(i64::MAX))
            .filter(|i| *i > 0);

        // Every processed entry, tagged with its final labels.
        let mut all: Vec<(Labels, ResultEntry)> = Vec::new();
        for stream in &streams {
            let mut per_stream = pipeline.for_stream(&stream.labels);
            let mut entries: Vec<&lucia_common::chunk::Entry> = stream
                .entries
                .iter()
                .filter(|e| e.ts >= params.start && e.ts < params.end)
                .collect();
            sort_entries(&mut entries, params.direction);
            let mut last_kept: Option<i64> = None;
            for entry in entries {
                if let (Some(interval), Some(last)) = (interval, last_kept)
                    && (entry.ts - last).abs() < interval
                {
                    continue;
                }
                let Some((line, labels)) =
                    per_stream.process(entry.ts, &entry.line, &entry.metadata)
                else {
                    continue;
                };
                last_kept = Some(entry.ts);
                all.push((
                    labels.labels().clone(),
                    ResultEntry {
                        ts: entry.ts,
                        line,
                        structured_metadata: labels.structured_metadata().clone(),
                        parsed: labels.parsed().clone(),
                    },
                ));
            }
        }

        // Order across streams: by time in the query direction, ties by
        // labels then line, so that the limit cuts deterministically.
        all.sort_by(|(la, a), (lb, b)| {
            let by_time = match params.direction {
                Direction::Forward => a.ts.cmp(&b.ts),
                Direction::Backward => b.ts.cmp(&a.ts),
            };
            by_time
                .then_with(|| la.cmp(lb))
                .then_with(|| a.line.cmp(&b.line))
        });
        let mut seen: HashSet<(Labels, i64, String)> = HashSet::new();
        let mut grouped: BTreeMap<Labels, Vec<ResultEntry>> = BTreeMap::new();
        let mut kept = 0usize;
        for (labels, entry) in all {
            if kept >= limit {
                break;
            }
            if !seen.insert((labels.clone(), entry.ts, entry.line.clone())) {
                continue;
            }
            kept += 1;
            grouped.entry(labels).or_default().push(entry);
        }
        stats.total_entries_returned = kept as u64;
        let streams = grouped
            .into_iter()
            .map(|(labels, entries)| StreamResult { labels, entries })
            .collect();
        Ok(QueryResult {
            data: ResultData::Streams(streams),
            stats,
        })
    }
}

fn sort_entries(entries: &mut [&lucia_common::chunk::Entry], direction: Direction) {
    match direction {
        Direction::Forward => entries.sort_by_key(|e| e.ts),
        Direction::Backward => entries.sort_by_key(|e| std::cmp::Reverse(e.ts)),
    }
}
