//! Time-series storage, scraping, remote write and the PromQL engine: the
//! `tsdb` role.
//!
//! - [`storage`]: head, WAL, rocksdb index and chunks, compaction, retention;
//! - [`remote_write`]: `POST /api/v1/write`;
//! - [`promql`]: the PromQL engine.

pub mod api;
pub mod append;
pub mod promql;
pub mod remote_write;
pub mod storage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use lucia_common::wal::FsyncPolicy;
use serde::Deserialize;

use crate::storage::{Storage, StorageMetrics, StorageOptions};

/// The role's configuration (the `tsdb` section of the config file; the
/// command line's `--storage.tsdb.*` flags override it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the TSDB keeps its data [default: `<data.dir>/tsdb`].
    pub path: Option<PathBuf>,
    /// How long samples are kept, relative to the newest (15d).
    pub retention_time: ConfigDuration,
    /// Oldest blocks are deleted while the TSDB is larger, e.g. `512MB`.
    pub retention_size: Option<String>,
    /// Samples up to this much older than the newest are still accepted.
    pub out_of_order_time_window: ConfigDuration,
    /// `always` (default): a write is acknowledged after its WAL record is
    /// fsynced (group commit); `never`: after write(2).
    pub wal_fsync: FsyncPolicy,
    /// How often the head is checkpointed so old WAL segments go.
    pub checkpoint_interval: ConfigDuration,
    /// Whether the API answers `/api/v1/rules` and `/api/v1/alerts` (empty)
    /// itself; off in `lucia all`, where the ruler serves them.
    #[serde(skip)]
    pub rules_api: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            path: None,
            retention_time: ConfigDuration::from_secs(15 * 24 * 3600),
            retention_size: None,
            out_of_order_time_window: ConfigDuration::from_secs(0),
            wal_fsync: FsyncPolicy::Always,
            checkpoint_interval: ConfigDuration::from_secs(5 * 60),
            rules_api: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("invalid tsdb.retention_size {0:?}: use a number with a unit such as 512MB or 10GB")]
    RetentionSize(String),
}

/// Parses Prometheus' byte sizes (`B KB MB GB TB PB EB`, powers of 1024).
pub fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit {
        "B" => 0,
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        "PB" => 50,
        "EB" => 60,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// The storage options the config describes, under `data_dir` by default.
pub fn storage_options(
    config: &Config,
    data_dir: &std::path::Path,
) -> Result<StorageOptions, Error> {
    let mut opts =
        StorageOptions::new(config.path.clone().unwrap_or_else(|| data_dir.join("tsdb")));
    opts.retention_time = config.retention_time.0;
    opts.retention_size = match &config.retention_size {
        None => None,
        Some(s) if s.is_empty() || s == "0" => None,
        Some(s) => Some(parse_byte_size(s).ok_or_else(|| Error::RetentionSize(s.clone()))?),
    };
    opts.out_of_order_window = config.out_of_order_time_window.0;
    opts.fsync = config.wal_fsync;
    opts.checkpoint_interval = config.checkpoint_interval.0;
    Ok(opts)
}

/// Starts the role on the process's shared listener.
pub async fn start(config: Config, ctx: RoleContext) -> Result<Role, Error> {
    let ready = ctx.readiness.register("tsdb");
    let opts = storage_options(&config, &ctx.data_dir)?;
    let storage_dir = opts.dir.clone();
    let metrics = StorageMetrics::default();
    metrics.register(&ctx.metrics);
    let checkpoint_every = opts.checkpoint_interval.max(Duration::from_secs(1));
    let storage = tokio::task::spawn_blocking(move || Storage::open(opts, metrics))
        .await
        .map_err(|e| storage::StorageError::Task(e.to_string()))??;
    tokio::spawn(maintenance(
        storage.clone(),
        checkpoint_every,
        ctx.shutdown.clone(),
    ));
    let mut api_state = api::ApiState::new(Arc::new(StorageBackend(storage.clone())));
    api_state.multi_tenant = ctx.multi_tenant;
    api_state.rules_api = config.rules_api;
    api_state.flags = [
        ("storage.tsdb.path", storage_dir.display().to_string()),
        (
            "storage.tsdb.retention.time",
            config.retention_time.to_string(),
        ),
        (
            "storage.tsdb.retention.size",
            config.retention_size.clone().unwrap_or_else(|| "0B".into()),
        ),
        (
            "storage.tsdb.out-of-order-time-window",
            config.out_of_order_time_window.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let router = remote_write::router(remote_write::WriteState {
        appender: storage.clone(),
        multi_tenant: ctx.multi_tenant,
    })
    .merge(api::router(api_state));
    ready.set(true);
    let shutdown = ctx.shutdown.clone();
    let stopped = async move {
        shutdown.cancelled().await;
        if let Err(e) = storage.close().await {
            tracing::error!(err = %e, "tsdb: closing storage failed");
        }
    };
    Ok(Role::new("tsdb", router, stopped))
}

/// The Prometheus API's view of the storage.
struct StorageBackend(Arc<Storage>);

impl api::QueryBackend for StorageBackend {
    fn source(&self, tenant: &str) -> Arc<dyn promql::SeriesSource> {
        Arc::new(self.0.tenant(tenant))
    }
}

/// Compaction and retention every minute, checkpoints on their interval.
async fn maintenance(storage: Arc<Storage>, checkpoint_every: Duration, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(60).min(checkpoint_every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = last_checkpoint.elapsed() >= checkpoint_every;
        if let Err(e) = storage.maintain(due).await {
            tracing::error!(err = %e, "tsdb maintenance failed");
        } else if due {
            last_checkpoint = tokio::time::Instant::now();
        }
    }
}

/// Runs the role on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}
