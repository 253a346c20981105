//! What the HTTP API asks of query evaluation, and the results it encodes.
//!
//! [`Evaluator`] is the API's one entry point into evaluation: it parses
//! LogQL with `lucia_logql` and runs it on the [`crate::engine::Engine`].

use std::time::Duration;

use lucia_logql::ast::Expr;

use crate::QueryError;
use crate::engine::{Engine, Limits, RangeParams};
use crate::limits::QueryLimits;
use crate::source::{Direction, LogSource};

/// A range query (`query_range`).
#[derive(Debug, Clone)]
pub struct RangeQuery {
    pub tenant: String,
    pub query: String,
    /// Unix nanoseconds, both inclusive as in Loki.
    pub start: i64,
    pub end: i64,
    /// Nanoseconds between points of a metric query.
    pub step: i64,
    /// Nanoseconds between entries of a log query (0 = every entry).
    pub interval: i64,
    pub limit: usize,
    pub direction: Direction,
}

/// An instant query (`query`).
#[derive(Debug, Clone)]
pub struct InstantQuery {
    pub tenant: String,
    pub query: String,
    /// Unix nanoseconds.
    pub time: i64,
    pub limit: usize,
    pub direction: Direction,
}

pub use crate::engine::{
    QueryResult as QueryOutput, ResultData, ResultEntry, Sample, Series, Statistics as Stats,
    StreamResult,
};

/// Evaluates queries against a [`LogSource`].
pub struct Evaluator<S: LogSource> {
    engine: Engine<S>,
}

impl<S: LogSource> Evaluator<S> {
    pub fn new(source: S, limits: &QueryLimits) -> Self {
        let limits = Limits {
            max_entries_per_query: limits.max_entries_limit_per_query,
            max_series: limits.max_query_series,
            max_query_length: limits.max_query_length.0,
            // The API wraps every request in the query timeout itself.
            query_timeout: Duration::ZERO,
        };
        Self {
            engine: Engine::new(source, limits),
        }
    }

    pub fn source(&self) -> &S {
        self.engine.source()
    }

    /// Whether `query` selects log lines (as opposed to a metric query).
    pub fn is_log_query(&self, query: &str) -> Result<bool, QueryError> {
        Ok(matches!(parse(query)?, Expr::Log(_)))
    }

    /// Pretty-prints `query` (`format_query`).
    pub fn format(&self, query: &str) -> Result<String, QueryError> {
        Ok(lucia_logql::format_query(&parse(query)?))
    }

    pub async fn range(&self, q: RangeQuery) -> Result<QueryOutput, QueryError> {
        let expr = parse(&q.query)?;
        // Loki's range includes `end` for log queries; the engine reads
        // [start, end).
        let end = match expr {
            Expr::Log(_) => q.end.saturating_add(1),
            Expr::Metric(_) => q.end,
        };
        let params = RangeParams {
            start: q.start,
            end,
            step: Duration::from_nanos(q.step.max(1) as u64),
            interval: (q.interval > 0).then(|| Duration::from_nanos(q.interval as u64)),
            direction: q.direction,
            limit: q.limit,
        };
        self.engine.query_range(&q.tenant, &expr, params).await
    }

    pub async fn instant(&self, q: InstantQuery) -> Result<QueryOutput, QueryError> {
        let expr = parse(&q.query)?;
        self.engine
            .query_instant(&q.tenant, &expr, q.time, q.direction, q.limit)
            .await
    }
}

fn parse(query: &str) -> Result<Expr, QueryError> {
    if query.trim().is_empty() {
        return Err(QueryError::BadRequest(
            "query parameter is empty: send a LogQL query in `query`".into(),
        ));
    }
    lucia_logql::parse(query).map_err(|err| QueryError::BadRequest(err.to_string()))
}
