//! Integration tests of the tsdb crate (one binary).

mod promql_conformance;
mod scrape;
