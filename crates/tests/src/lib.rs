//! Test support: the fake Consul and the in-process cluster harness.

pub mod fake_consul;
pub mod ready_server;
