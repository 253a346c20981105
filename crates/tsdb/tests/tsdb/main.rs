//! Integration tests of the tsdb crate (one binary).

mod api;
mod promql_conformance;
mod scrape;
