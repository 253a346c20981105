//! Where the engine reads log entries from.
//!
//! [`LogSource`] is the one seam between the LogQL engine and storage: the
//! cluster implementation asks every ingester (recent data, gRPC) and the
//! object store (flushed chunks) and merges them, dropping the duplicates
//! that replication creates; the in-memory implementation backs the
//! `.logqltest` conformance runner and unit tests.

use std::future::Future;
use std::sync::Arc;

use lucia_common::chunk::{Entry, LineFilter};
use lucia_common::labels::Labels;
use lucia_common::matchers::Matcher;

/// Which end of the time range to read first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    Forward,
    #[default]
    Backward,
}

/// A request for the raw entries of matching streams.
#[derive(Debug, Clone)]
pub struct SelectRequest {
    pub tenant: String,
    pub matchers: Vec<Matcher>,
    /// Unix nanoseconds, start inclusive, end exclusive.
    pub start: i64,
    pub end: i64,
    pub direction: Direction,
    /// Most entries the caller will use in total (0 = all): a hint a source
    /// may use to stop early for log queries. Metric queries pass 0.
    pub limit: usize,
    /// Lines that fail this filter may be left out (the engine still runs
    /// the whole pipeline on what comes back).
    pub line_filter: Option<LinePushdown>,
}

/// A line filter a source may apply while it decodes.
#[derive(Clone)]
pub struct LinePushdown(pub Arc<dyn LineFilter>);

impl std::fmt::Debug for LinePushdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinePushdown")
    }
}

/// One stream's entries, sorted by timestamp in the requested direction,
/// without duplicates (same timestamp and line).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamData {
    pub labels: Labels,
    pub entries: Vec<Entry>,
}

/// Storage the engine reads.
pub trait LogSource: Send + Sync {
    fn select(
        &self,
        request: SelectRequest,
    ) -> impl Future<Output = Result<Vec<StreamData>, crate::QueryError>> + Send;

    /// The label sets of streams matching `matchers` with data in
    /// [start, end) (for `series`, `labels` and `label values`).
    fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> impl Future<Output = Result<Vec<Labels>, crate::QueryError>> + Send;
}
