//! The PromQL engine: queries parsed with `promql-parser`, evaluated with
//! Prometheus 3 semantics over a [`SeriesSource`].
//!
//! - [`source`]: the storage seam and its label matchers;
//! - [`memory`]: an in-memory [`SeriesSource`] (tests, conformance);
//! - [`engine`]: instant and range query evaluation;
//! - [`conformance`]: the runner for Prometheus' `promqltest` files.

pub mod conformance;
pub mod engine;
mod functions;
pub mod histogram;
pub mod memory;
pub mod source;

use std::collections::BTreeMap;
use std::fmt;

pub use engine::{Engine, Value};
pub use histogram::FloatHistogram;
pub use memory::MemorySource;
pub use source::{LabelMatcher, MatchOp, MixedSeries, RawSeries, SeriesSource};

/// A label set, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// The bit pattern of Prometheus' staleness marker (a NaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True when `f` is the staleness marker (not any other NaN).
pub fn is_stale_nan(f: f64) -> bool {
    f.to_bits() == STALE_NAN_BITS
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    /// The float value (0 for a histogram sample).
    pub f: f64,
    /// The native histogram value, when the sample is one.
    pub h: Option<FloatHistogram>,
}

/// One series of a range vector (matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    /// (timestamp in ms, value), sorted by time.
    pub points: Vec<(i64, f64)>,
    /// Native histogram points, sorted by time.
    pub histograms: Vec<(i64, FloatHistogram)>,
}

/// Errors of parsing and evaluation. The message is Prometheus' own where
/// the conformance files check it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The query does not parse or does not type-check (`bad_data`).
    #[error("{0}")]
    Parse(String),
    /// The query failed during evaluation (`execution`).
    #[error("{0}")]
    Execution(String),
    /// The storage failed.
    #[error("storage: {0}")]
    Source(String),
    /// The query ran past its timeout (`timeout`).
    #[error("{0}")]
    Timeout(String),
    /// The query was canceled (`canceled`).
    #[error("{0}")]
    Canceled(String),
}

/// Formats a label set as Prometheus does: `{a="1", b="2"}`.
pub struct DisplayLabels<'a>(pub &'a Labels);

impl fmt::Display for DisplayLabels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}
