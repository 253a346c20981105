//! The LogQL engine: evaluates log queries (streams of entries) and metric
//! queries (range and vector aggregations, binary operations) against a
//! [`LogSource`].
//!
//! Semantics follow Loki's: a range aggregation at step `t` reads the
//! half-open window `(t - offset - range, t - offset]`; log queries read
//! `[start, end)` and apply the entry limit across streams in timestamp
//! order; result series that carry `__error__` fail the query.

mod log;
mod metric;
pub(crate) mod pipeline;
mod pushdown;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use lucia_common::labels::Labels;
use lucia_logql::ast;

use crate::QueryError;
use crate::source::{Direction, LogSource};

/// Loki's hard cap on points per series in a range query.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Per-query limits (Loki's `limits_config` names in the docs).
#[derive(Debug, Clone)]
pub struct Limits {
    /// `max_entries_limit_per_query`: the largest `limit` a log query may ask for.
    pub max_entries_per_query: usize,
    /// `max_query_series`: the most series a metric query may return.
    pub max_series: usize,
    /// `max_query_length`: the longest `end - start` (zero disables the check).
    pub max_query_length: Duration,
    /// `query_timeout`.
    pub query_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries_per_query: 5000,
            max_series: 500,
            max_query_length: Duration::from_secs(721 * 3600),
            query_timeout: Duration::from_secs(60),
        }
    }
}

/// Parameters of a range query. Times are Unix nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct RangeParams {
    pub start: i64,
    pub end: i64,
    /// Metric queries: the distance between evaluation steps (must be > 0).
    pub step: Duration,
    /// Log queries: return at most one entry per stream per `interval`.
    pub interval: Option<Duration>,
    pub direction: Direction,
    /// Log queries: the most entries returned across all streams.
    pub limit: usize,
}

/// The outcome of a query: its data and Loki's `stats` numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub data: ResultData,
    pub stats: Statistics,
}

/// Loki's four result types.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultData {
    Streams(Vec<StreamResult>),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
    Scalar { ts: i64, value: f64 },
}

impl ResultData {
    /// Loki's `resultType` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Streams(_) => "streams",
            Self::Vector(_) => "vector",
            Self::Matrix(_) => "matrix",
            Self::Scalar { .. } => "scalar",
        }
    }
}

/// One stream of a log query result: every entry shares the final label set
/// `labels` (stream labels, structured metadata and parsed labels together).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamResult {
    pub labels: Labels,
    pub entries: Vec<ResultEntry>,
}

/// A log line after the pipeline, with the label categories Loki's
/// `categorize-labels` encoding reports per entry: `labels` minus
/// `structured_metadata` minus `parsed` are the stream labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultEntry {
    /// Unix nanoseconds.
    pub ts: i64,
    pub line: String,
    pub structured_metadata: Labels,
    pub parsed: Labels,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    /// Unix nanoseconds.
    pub ts: i64,
    pub value: f64,
}

/// One series of a range query result; points are `(unix nanoseconds, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// What the query read and how long it took (Loki's `stats.summary`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statistics {
    /// Bytes of lines and structured metadata read from the source.
    pub bytes_processed: u64,
    /// Entries read from the source.
    pub lines_processed: u64,
    /// Entries returned (log queries) or samples computed (metric queries).
    pub total_entries_returned: u64,
    pub exec_time: Duration,
}

impl Statistics {
    fn count_read(&mut self, streams: &[crate::source::StreamData]) {
        for stream in streams {
            self.lines_processed += stream.entries.len() as u64;
            self.bytes_processed += stream.entries.iter().map(|e| e.size() as u64).sum::<u64>();
        }
    }
}

/// The LogQL engine over one source.
#[derive(Debug, Clone)]
pub struct Engine<S: LogSource> {
    source: S,
    limits: Limits,
}

impl<S: LogSource> Engine<S> {
    pub fn new(source: S, limits: Limits) -> Self {
        Self { source, limits }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A range query: log queries return streams, metric queries a matrix
    /// (a scalar query returns one series without labels).
    pub async fn query_range(
        &self,
        tenant: &str,
        expr: &ast::Expr,
        params: RangeParams,
    ) -> Result<QueryResult, QueryError> {
        if params.end < params.start {
            return Err(QueryError::BadRequest(
                "end timestamp must not be before start time".to_string(),
            ));
        }
        self.check_length(params.start, params.end)?;
        let started = Instant::now();
        let run = async {
            match expr {
                ast::Expr::Log(log) => self.eval_log(tenant, log, &params).await,
                ast::Expr::Metric(metric) => {
                    let steps = steps(params.start, params.end, params.step)?;
                    self.eval_metric(tenant, metric, &steps, false).await
                }
            }
        };
        self.finish(run, started).await
    }

    /// An instant query: metric queries evaluate at `ts` and return a vector
    /// (or a scalar). Loki does not run log queries as instant queries.
    pub async fn query_instant(
        &self,
        tenant: &str,
        expr: &ast::Expr,
        ts: i64,
        _direction: Direction,
        _limit: usize,
    ) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let metric = match expr {
            ast::Expr::Log(_) => {
                return Err(QueryError::BadRequest(
                    "log queries are not supported as an instant query type, please change your query to a range query type".to_string(),
                ));
            }
            ast::Expr::Metric(metric) => metric,
        };
        let steps = [ts];
        let run = self.eval_metric(tenant, metric, &steps, true);
        self.finish(run, started).await
    }

    async fn finish(
        &self,
        run: impl std::future::Future<Output = Result<QueryResult, QueryError>>,
        started: Instant,
    ) -> Result<QueryResult, QueryError> {
        let timeout = self.limits.query_timeout;
        let mut result = if timeout.is_zero() {
            run.await?
        } else {
            tokio::time::timeout(timeout, run)
                .await
                .map_err(|_| QueryError::Timeout(format!("{timeout:?}")))??
        };
        result.stats.exec_time = started.elapsed();
        Ok(result)
    }

    fn check_length(&self, start: i64, end: i64) -> Result<(), QueryError> {
        let max = self.limits.max_query_length;
        if max.is_zero() {
            return Ok(());
        }
        let length = end.saturating_sub(start);
        if length > i64::try_from(max.as_nanos()).unwrap_or(i64::MAX) {
            return Err(QueryError::Limit(format!(
                "the query time range exceeds the limit (query length: {}, limit: {}): narrow the time range",
                lucia_common::duration::format_prometheus_duration(Duration::from_nanos(
                    length.max(0) as u64
                )),
                lucia_common::duration::format_prometheus_duration(max),
            )));
        }
        Ok(())
    }
}

/// The evaluation timestamps of a range query: `start, start + step, ...,
/// <= end`.
fn steps(start: i64, end: i64, step: Duration) -> Result<Vec<i64>, QueryError> {
    let step = i64::try_from(step.as_nanos()).unwrap_or(i64::MAX);
    if step <= 0 {
        return Err(QueryError::BadRequest(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
                .to_string(),
        ));
    }
    let count = (end - start) / step + 1;
    if count > MAX_POINTS_PER_SERIES {
        return Err(QueryError::BadRequest(format!(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX): {count} points asked"
        )));
    }
    Ok((0..count).map(|i| start + i * step).collect())
}
