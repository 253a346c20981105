//! Test support: the fake Consul, the in-process cluster harness, and TLS
//! (a throwaway CA and an https server).

pub mod fake_consul;
pub mod ready_server;
pub mod tls;
