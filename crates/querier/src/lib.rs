//! The querier role: the LogQL engine and Loki's HTTP read API.

pub mod api;
pub mod cluster;
pub mod conformance;
pub mod engine;
pub mod eval;
pub mod limits;
pub mod memory_source;
pub mod source;
pub mod tail;

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::ring::RingConfig;
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use lucia_common::store::{ChunkStore, StorageConfig};
use serde::Deserialize;

pub use crate::limits::QueryLimits;

/// Errors of a query, mapped once to HTTP status codes.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad input: a parse error, an invalid parameter. HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// A query limit was hit (entries, series, range). HTTP 400, as Loki.
    #[error("{0}")]
    Limit(String),
    /// The query ran longer than `query_timeout`. HTTP 504, as Loki.
    #[error("query timed out after {0}: narrow the time range or the selector")]
    Timeout(String),
    /// Ingesters or the store failed. HTTP 500.
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    pub fn status(&self) -> StatusCode {
        match self {
            QueryError::BadRequest(_) | QueryError::Limit(_) => StatusCode::BAD_REQUEST,
            QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Loki answers query errors in plain text with the status code.
impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(err = %self, "query failed");
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response()
    }
}

impl From<lucia_common::tenant::TenantError> for QueryError {
    fn from(err: lucia_common::tenant::TenantError) -> Self {
        QueryError::BadRequest(err.to_string())
    }
}

/// The `querier` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The ingester ring to read recent data from.
    pub ring: RingConfig,
    /// Timeout of one call to one ingester.
    pub remote_timeout: ConfigDuration,
    /// How often a tail connection polls for new entries.
    pub tail_poll_period: ConfigDuration,
    /// Most entries a log query may ask for (`limit` parameter).
    pub max_entries_limit_per_query: usize,
    /// Most series (or streams) a query may return.
    pub max_query_series: usize,
    /// Longest time range of a query.
    pub max_query_length: ConfigDuration,
    /// How long a query may run.
    pub query_timeout: ConfigDuration,
    /// Recent data lives in the ingesters for this long (kept for Loki
    /// config compatibility: the store and the ingesters are both always
    /// asked, and their answers deduplicated).
    pub query_ingesters_within: ConfigDuration,
    /// Most fields `detected_fields` returns, and values per field.
    pub max_detected_fields: usize,
    /// Where flushed chunks are read from (the top-level `storage` section).
    #[serde(skip)]
    pub storage: StorageConfig,
}

impl Default for Config {
    fn default() -> Self {
        let defaults = QueryLimits::default();
        Self {
            ring: RingConfig::default(),
            remote_timeout: ConfigDuration::from_secs(30),
            tail_poll_period: ConfigDuration::from_secs(1),
            max_entries_limit_per_query: defaults.max_entries_limit_per_query,
            max_query_series: defaults.max_query_series,
            max_query_length: defaults.max_query_length,
            query_timeout: defaults.query_timeout,
            query_ingesters_within: ConfigDuration::from_secs(3 * 3600),
            max_detected_fields: defaults.max_detected_fields,
            storage: StorageConfig::default(),
        }
    }
}

impl Config {
    /// The query limits of this config.
    pub fn limits(&self) -> QueryLimits {
        QueryLimits {
            max_entries_limit_per_query: self.max_entries_limit_per_query,
            max_query_series: self.max_query_series,
            max_query_length: self.max_query_length,
            query_timeout: self.query_timeout,
            max_detected_fields: self.max_detected_fields,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("ring: {0}")]
    Ring(#[from] lucia_common::ring::RingError),
    #[error(transparent)]
    Store(#[from] lucia_common::store::StoreError),
}

/// Starts the role on the process's shared listener.
pub async fn start(config: Config, ctx: RoleContext) -> Result<Role, Error> {
    let ready = ctx.readiness.register("querier");
    let ring = lucia_common::ring::watch(
        &config.ring,
        "ingester",
        ctx.consul.as_ref(),
        ctx.shutdown.clone(),
    )
    .await?;
    let store = ChunkStore::from_config(&config.storage, &ctx.data_dir)?;
    let source = cluster::ClusterSource::new(
        ring,
        config.ring.replication_factor,
        Some(store),
        config.remote_timeout.0,
    );
    let querier = Arc::new(api::Querier::new(
        source,
        config.limits(),
        ctx.multi_tenant,
        config.tail_poll_period.0,
        ctx.shutdown.clone(),
    ));
    let router = api::router(querier);
    ready.set(true);
    Ok(Role::new("querier", router, async {}))
}

/// Runs the role on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}
