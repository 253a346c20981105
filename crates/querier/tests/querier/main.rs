//! Integration tests of the querier crate: one test binary.

mod api;
mod conformance;
