//! The querier role: the LogQL engine and Loki's HTTP read API.

pub mod conformance;
pub mod engine;
pub mod memory_source;
pub mod source;

/// Errors of a query, mapped once to HTTP status codes.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad input: a parse error, an invalid parameter. HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// A query limit was hit (entries, series, range). HTTP 400, as Loki.
    #[error("{0}")]
    Limit(String),
    /// The query ran longer than `query_timeout`. HTTP 504? Loki answers 504.
    #[error("query timed out after {0}: narrow the time range or the selector")]
    Timeout(String),
    /// Ingesters or the store failed. HTTP 500.
    #[error("{0}")]
    Internal(String),
}

use lucia_common::Shutdown;
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use serde::Deserialize;

/// The `querier` section of the config file. (Being filled: the HTTP API is
/// not served yet.)
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
    let ready = ctx.readiness.register("querier");
    ready.set(true);
    Ok(Role::new("querier", axum::Router::new(), async {}))
}

/// Runs the role on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}
