//! A small async Consul client. (Stub: filled by the Consul work.)

use serde::Deserialize;

/// Where Consul is and how to talk to it (the `consul` config section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// host:port or URL of the Consul agent, e.g. `consul:8500`.
    pub address: String,
    /// ACL token sent as `X-Consul-Token`.
    #[serde(default)]
    pub acl_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("cannot reach consul at {address}: {reason}")]
    Unreachable { address: String, reason: String },
}
