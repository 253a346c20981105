//! Tests that run the `lucia` binary as a real process: crash safety under
//! SIGKILL. One test binary for the cli crate.

mod agent;
mod alert_cluster;
mod cluster;
mod crash;
mod gateway;
mod harness;
mod prometheus;
mod promql_side_by_side;
mod rules;
mod shutdown;
mod tsdb;
