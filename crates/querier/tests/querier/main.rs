//! Integration tests of the querier crate (one binary).

mod conformance;
