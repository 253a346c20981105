//! The write seam: what scraping, remote write and the ruler hand to storage.

use std::future::Future;

use crate::promql::Labels;

/// Samples of one series, sorted by time. Values keep their exact bit
/// pattern (the staleness marker is a NaN that must survive).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    /// (timestamp in ms, value).
    pub samples: Vec<(i64, f64)>,
}

/// What one append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Samples stored.
    pub appended: usize,
    /// Series that did not exist before this append.
    pub series_created: usize,
    /// Samples refused (too old, out of order beyond the window, duplicate
    /// timestamp with another value), with the first reason.
    pub rejected: usize,
    pub first_rejection: Option<String>,
}

/// Errors that refuse a whole append.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The input is invalid (bad label name, empty metric name, …): 400.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed (WAL write, disk full): 500, the client retries.
    #[error("storage: {0}")]
    Storage(String),
}

/// Where samples go. Once the returned future resolves `Ok`, the samples
/// survive a crash (they are in the WAL, fsynced per the fsync policy).
pub trait SampleAppender: Send + Sync + 'static {
    fn append(
        &self,
        tenant: &str,
        batch: Vec<SeriesSamples>,
    ) -> impl Future<Output = Result<AppendReport, AppendError>> + Send;
}
