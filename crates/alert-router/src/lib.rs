//! The alert-router role: an Alertmanager drop-in. It reads Alertmanager's
//! configuration file, serves API v2 (amtool, Grafana, Prometheus), groups
//! alerts with Alertmanager's timers, inhibits, silences, deduplicates
//! through a notification log, retries, and notifies webhook receivers.
//! Silences and the notification log persist under the storage path and,
//! with clustering on, are shared with the peers (`cluster`).

pub mod amconfig;
pub mod api;
pub mod cluster;
pub mod matcher;
pub mod metrics;
pub mod model;
pub mod nflog;
pub mod notify;
pub mod persist;
pub mod silences;
pub mod state;
pub mod templates;
pub mod timeinterval;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

use crate::amconfig::AmConfig;
use crate::metrics::RouterMetrics;
use crate::state::Shared;

/// The role's configuration (the `alert_router` section of Lucia's file,
/// or `lucia alert-router`'s Alertmanager-style flags).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Alertmanager configuration file; without one, a single route
    /// to a receiver `default` without integrations.
    pub config_file: Option<PathBuf>,
    /// Where silences and the notification log live [default: the data
    /// dir's `alertmanager` folder].
    pub storage_path: Option<PathBuf>,
    /// The URL the router is reached at (links in notifications).
    pub external_url: Option<String>,
    /// Prefix of every route [default: the external URL's path, or `/`].
    pub route_prefix: Option<String>,
    /// How long expired silences are kept.
    pub data_retention: ConfigDuration,
    /// High availability with other routers [default: off; `lucia
    /// alert-router` listens on `0.0.0.0:9094` as Alertmanager does].
    pub cluster: cluster::ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            config_file: None,
            storage_path: None,
            external_url: None,
            route_prefix: None,
            data_retention: ConfigDuration::from_secs(120 * 3600),
            cluster: cluster::ClusterConfig::default(),
        }
    }
}

/// Errors of the role and its API, mapped once to HTTP status codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] amconfig::AmConfigError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Tenant(#[from] lucia_common::tenant::TenantError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Tenant(lucia_common::tenant::TenantError::Missing) => StatusCode::UNAUTHORIZED,
            Error::Tenant(_) => StatusCode::BAD_REQUEST,
            Error::Io(_) | Error::Config(_) | Error::Internal(_) | Error::Cluster(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<AmConfig, Error> {
    Ok(match path {
        Some(p) => AmConfig::load(p)?,
        None => AmConfig::default_config(),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A ULID-like node name (26 Crockford base32 characters), as
/// Alertmanager's cluster peers have.
fn node_name() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let ms = Utc::now().timestamp_millis().max(0) as u128;
    let value = (ms << 80) | (rand::random::<u128>() & ((1u128 << 80) - 1));
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// The route prefix: the flag, else the external URL's path, else `/`.
fn route_prefix(config: &Config, external_url: &str) -> String {
    let prefix = match &config.route_prefix {
        Some(p) => p.clone(),
        None => external_url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_default(),
    };
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        format!("/{trimmed}")
    }
}

/// Starts the role on the process's shared listener.
pub async fn start(config: Config, ctx: RoleContext) -> Result<Role, Error> {
    let ready = ctx.readiness.register("alert_router");
    let am = load_config(config.config_file.as_ref())?;
    let storage_path = config
        .storage_path
        .clone()
        .unwrap_or_else(|| ctx.data_dir.join("alertmanager"));
    std::fs::create_dir_all(&storage_path)?;
    let external_url = config.external_url.clone().unwrap_or_else(|| {
        let prefix = config.route_prefix.clone().unwrap_or_default();
        format!(
            "http://{}:{}{}",
            hostname(),
            ctx.advertise_addr.port(),
            prefix.trim_end_matches('/')
        )
    });
    let prefix = route_prefix(&config, &external_url);
    let metrics = RouterMetrics::default();
    metrics.register(&ctx.metrics);
    metrics.config_last_reload_successful.set(1);
    metrics
        .config_last_reload_success_timestamp
        .set(Utc::now().timestamp());
    let client = lucia_common::http_client::builder()
        .build()
        .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
    let cluster_start = cluster::Cluster::start(cluster::StartOptions {
        config: &config.cluster,
        name: node_name(),
        web_addr: ctx.advertise_addr,
        consul: ctx.consul.clone(),
        metrics: &ctx.metrics,
        shutdown: ctx.shutdown.clone(),
    })
    .await?;
    let cluster_member = cluster_start
        .as_ref()
        .map(|started| started.cluster.clone());
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::new(am)),
        external_url: external_url.trim_end_matches('/').to_string(),
        storage_path,
        multi_tenant: ctx.multi_tenant,
        data_retention: config.data_retention.0,
        metrics,
        client,
        tenants: Mutex::new(Default::default()),
        shutdown: ctx.shutdown.clone(),
        started: Utc::now(),
        cluster: cluster_member.clone(),
    });
    // Tenants first, so that the first full sync already carries their
    // silences and log.
    shared.load_tenants()?;
    let cluster_stopped = cluster_start.map(|started| {
        let replicated: Arc<dyn cluster::Replicated> = shared.clone();
        started.run(Arc::downgrade(&replicated))
    });

    let config_file = config.config_file.clone();
    let reload_shared = shared.clone();
    let reload = Arc::new(move || -> Result<(), Error> {
        match load_config(config_file.as_ref()) {
            Ok(am) => {
                reload_shared.apply_config(Arc::new(am));
                reload_shared.metrics.config_last_reload_successful.set(1);
                reload_shared
                    .metrics
                    .config_last_reload_success_timestamp
                    .set(Utc::now().timestamp());
                tracing::info!("alert-router configuration reloaded");
                Ok(())
            }
            Err(err) => {
                reload_shared.metrics.config_last_reload_successful.set(0);
                tracing::error!(%err, "alert-router configuration reload failed, keeping the old one");
                Err(err)
            }
        }
    });
    spawn_sighup(reload.clone(), ctx.shutdown.clone());

    let maint = shared.clone();
    let maint_stop = ctx.shutdown.clone();
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tokio::select! {
                _ = maint_stop.cancelled() => break,
                _ = tick.tick() => maint.maintenance(),
            }
        }
    });

    let router = api::router(
        api::ApiState {
            shared: shared.clone(),
            reload,
        },
        &prefix,
    );
    tracing::info!(prefix = %prefix, external_url = %shared.external_url, "alert-router started");
    ready.set(true);
    let stop = ctx.shutdown.clone();
    let stopped = async move {
        stop.cancelled().await;
        let _ = maintenance.await;
        if let Some(cluster_stopped) = cluster_stopped {
            cluster_stopped.await;
        }
        shared.snapshot_all();
    };
    let role = Role::new("alert_router", router, stopped);
    Ok(match &cluster_member {
        Some(c) => role.with_meta(cluster::discovery::META_KEY, c.address.clone()),
        None => role,
    })
}

fn spawn_sighup(reload: Arc<dyn Fn() -> Result<(), Error> + Send + Sync>, stop: Shutdown) {
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(h) => h,
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGHUP");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP received, reloading the alert-router configuration");
                    let _ = reload();
                }
            }
        }
    });
}

/// Runs the role on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let c = Config::default();
        assert_eq!(route_prefix(&c, "http://h:9093"), "/");
        assert_eq!(route_prefix(&c, "http://h:9093/am/"), "/am");
        let c = Config {
            route_prefix: Some("alertmanager".to_string()),
            ..Config::default()
        };
        assert_eq!(route_prefix(&c, "http://h:9093/x"), "/alertmanager");
        assert_eq!(node_name().len(), 26);
    }

    #[test]
    fn cluster_block_of_lucias_file() {
        // Off unless configured (`lucia all`).
        let c: Config = serde_saphyr::from_str("config_file: am.yml\n").unwrap();
        assert!(!c.cluster.enabled());
        let c: Config = serde_saphyr::from_str(
            "cluster:\n  listen_address: 0.0.0.0:9094\n  peers: [am-2:9094]\n  peer_timeout: 5s\n",
        )
        .unwrap();
        assert!(c.cluster.enabled());
        assert_eq!(c.cluster.peers, vec!["am-2:9094".to_string()]);
        assert_eq!(c.cluster.peer_timeout, ConfigDuration::from_secs(5));
        assert_eq!(c.cluster.gossip_interval, ConfigDuration::from_millis(200));
        assert!(serde_saphyr::from_str::<Config>("cluster:\n  nope: 1\n").is_err());
    }
}
