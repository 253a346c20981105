//! Time-series storage, scraping, remote write and the PromQL engine.
//!
//! Not implemented yet: the role starts, serves `/ready` and `/metrics`,
//! and does nothing else.

use lucia_common::Shutdown;
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use serde::Deserialize;

/// The role's configuration (the `tsdb` section of the config file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Starts the role on the process's shared listener.
pub async fn start(_config: Config, ctx: RoleContext) -> Result<Role, Error> {
    let ready = ctx.readiness.register("tsdb");
    ready.set(true);
    Ok(Role::new("tsdb", axum::Router::new(), async {}))
}

/// Runs the role on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}

pub mod append;
pub mod promql;
pub mod scrape;
