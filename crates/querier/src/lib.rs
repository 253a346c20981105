//! The querier role: the LogQL engine and Loki's HTTP read API.

pub mod source;

/// Errors of a query, mapped once to HTTP status codes.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad input: a parse error, an invalid parameter. HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// A query limit was hit (entries, series, range). HTTP 400, as Loki.
    #[error("{0}")]
    Limit(String),
    /// The query ran longer than `query_timeout`. HTTP 504? Loki answers 504.
    #[error("query timed out after {0}: narrow the time range or the selector")]
    Timeout(String),
    /// Ingesters or the store failed. HTTP 500.
    #[error("{0}")]
    Internal(String),
}
