//! Query limits, with Loki's names and defaults.

use lucia_common::duration::{ConfigDuration, format_prometheus_duration};

use crate::QueryError;

/// Limits of one query (part of the `querier` config section).
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Most entries a log query may ask for (`limit` parameter).
    pub max_entries_limit_per_query: usize,
    /// Most series (or streams) a query may return.
    pub max_query_series: usize,
    /// Longest time range of a query.
    pub max_query_length: ConfigDuration,
    /// How long a query may run.
    pub query_timeout: ConfigDuration,
    /// Most values `detected_fields` and `detected_field/{name}/values` return.
    pub max_detected_fields: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_entries_limit_per_query: 5000,
            max_query_series: 500,
            max_query_length: ConfigDuration::from_secs(721 * 3600),
            query_timeout: ConfigDuration::from_secs(60),
            max_detected_fields: 1000,
        }
    }
}

impl QueryLimits {
    /// Checks a log query's `limit` parameter.
    pub fn check_entries(&self, limit: usize) -> Result<(), QueryError> {
        if self.max_entries_limit_per_query > 0 && limit > self.max_entries_limit_per_query {
            return Err(QueryError::Limit(format!(
                "max entries limit per query exceeded, limit > max_entries_limit_per_query ({limit} > {})",
                self.max_entries_limit_per_query
            )));
        }
        Ok(())
    }

    /// Checks the time range [start, end] of a query (nanoseconds).
    pub fn check_length(&self, start: i64, end: i64) -> Result<(), QueryError> {
        let max = self.max_query_length.0;
        if max.is_zero() {
            return Ok(());
        }
        let length = end.saturating_sub(start).max(0) as u64;
        if u128::from(length) > max.as_nanos() {
            return Err(QueryError::Limit(format!(
                "the query time range exceeds the limit (query length: {}, limit: {})",
                format_prometheus_duration(std::time::Duration::from_nanos(length)),
                format_prometheus_duration(max)
            )));
        }
        Ok(())
    }

    /// Checks how many series or streams a result has.
    pub fn check_series(&self, count: usize) -> Result<(), QueryError> {
        if self.max_query_series > 0 && count > self.max_query_series {
            return Err(QueryError::Limit(format!(
                "maximum number of series ({}) reached for a single query; consider reducing query cardinality by adding more specific stream selectors, reduce the time range of the query, or adding more specific label filters",
                self.max_query_series
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_answer_like_loki() {
        let limits = QueryLimits::default();
        assert!(limits.check_entries(5000).is_ok());
        let err = limits.check_entries(5001).unwrap_err().to_string();
        assert!(err.contains("(5001 > 5000)"), "{err}");
        assert!(limits.check_length(0, 3600 * 1_000_000_000).is_ok());
        let err = limits
            .check_length(0, 800 * 3600 * 1_000_000_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit: 4w2d1h"), "{err}");
        assert!(limits.check_series(501).is_err());
    }
}
