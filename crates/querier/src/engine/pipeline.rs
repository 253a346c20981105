//! The engine's view of a query pipeline: per stream, turn an entry into a
//! processed line (or a sample) with its final label set, or drop it. A
//! thin adapter over `lucia_logql::pipeline`.

use std::sync::Arc;

use lucia_common::labels::Labels;
use lucia_common::matchers::{MatchOp, Matcher};
use lucia_logql::ast;
use lucia_logql::pipeline as lp;
pub(crate) use lucia_logql::pipeline::LabelsResult;

use crate::QueryError;

pub(crate) const ERROR_LABEL: &str = lp::labels::ERROR_LABEL;

/// A compiled pipeline, shared by every stream of a query.
pub(crate) struct Pipeline(lp::Pipeline);

impl Pipeline {
    pub(crate) fn compile(
        log: &ast::LogExpr,
        unwrap: Option<&ast::Unwrap>,
    ) -> Result<Self, QueryError> {
        let compiled = match unwrap {
            Some(u) => lp::Pipeline::with_unwrap(&log.stages, u),
            None => lp::Pipeline::new(&log.stages),
        };
        compiled
            .map(Self)
            .map_err(|e| QueryError::BadRequest(e.to_string()))
    }

    pub(crate) fn for_stream(&self, labels: &Labels) -> StreamPipeline {
        StreamPipeline(self.0.for_stream(labels))
    }
}

pub(crate) struct StreamPipeline(lp::StreamPipeline);

impl StreamPipeline {
    /// Runs a log line through the stages: `None` when a stage drops it.
    pub(crate) fn process(
        &mut self,
        ts: i64,
        line: &str,
        metadata: &[(String, String)],
    ) -> Option<(String, Arc<LabelsResult>)> {
        let out = self.0.process(ts, line, metadata)?;
        Some((out.line.to_string(), out.labels.clone()))
    }

    /// The sample of one line: the processed line's byte length when
    /// `bytes`, else the unwrapped value (1 without unwrap).
    pub(crate) fn extract(
        &mut self,
        ts: i64,
        line: &str,
        metadata: &[(String, String)],
        bytes: bool,
    ) -> Option<(f64, Arc<LabelsResult>)> {
        if bytes {
            let out = self.0.process(ts, line, metadata)?;
            return Some((out.line.len() as f64, out.labels.clone()));
        }
        let (value, labels) = self.0.process_sample(ts, line, metadata)?;
        Some((value, labels.clone()))
    }
}

/// The labels `absent_over_time` reports: the selector's equality matchers
/// (a name matched twice is left out).
pub(crate) fn absent_labels(matchers: &[Matcher]) -> Labels {
    let mut labels = Labels::new();
    let mut seen_twice = Vec::new();
    for m in matchers {
        if labels.get(&m.name).is_some() || seen_twice.contains(&m.name) {
            labels.remove(&m.name);
            seen_twice.push(m.name.clone());
            continue;
        }
        if m.op == MatchOp::Equal {
            labels.insert(m.name.clone(), m.value.clone());
        } else {
            seen_twice.push(m.name.clone());
        }
    }
    labels
}
