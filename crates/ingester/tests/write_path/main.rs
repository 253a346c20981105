//! Integration tests of the write path crate: one test binary.

mod distributor;
mod ingester;
