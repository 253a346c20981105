//! The distributor role: `POST /loki/api/v1/push`. (Stub: push handling is
//! being written.)

use lucia_common::Shutdown;
use lucia_common::ring::RingConfig;
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use serde::Deserialize;

use crate::limits::LimitsConfig;

/// The `distributor` config section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The ingester ring to write to.
    pub ring: RingConfig,
    /// Per-tenant limits (Loki's `limits_config`).
    #[serde(skip)]
    pub limits: LimitsConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("ring: {0}")]
    Ring(#[from] lucia_common::ring::RingError),
}

/// Starts the distributor on the process's shared listener.
pub async fn start(_config: Config, ctx: RoleContext) -> Result<Role, Error> {
    let ready = ctx.readiness.register("distributor");
    ready.set(true);
    Ok(Role::new("distributor", axum::Router::new(), async {}))
}

/// Runs the distributor on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}
