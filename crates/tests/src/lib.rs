//! Test support: the fake Consul and the in-process cluster harness.
