//! Time-series storage, scraping, remote write and the PromQL engine: the
//! `tsdb` role.
//!
//! - [`storage`]: head, WAL, rocksdb index and chunks, compaction, retention;
//! - [`remote_write`]: `POST /api/v1/write`;
//! - [`remote_read`]: `POST /api/v1/read` and the fan-out across members;
//! - [`scrape`]: scraping and service discovery;
//! - [`api`]: Prometheus' HTTP API;
//! - [`scrape`]: scraping with service discovery and the targets API;
//! - [`promql`]: the PromQL engine.

pub mod api;
pub mod append;
pub mod promql;
pub mod remote_read;
pub mod remote_write;
pub mod scrape;
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
    /// The ring of tsdb members that split the scrape targets (with
    /// `kvstore.store: consul`, several tsdb processes shard by it).
    pub ring: lucia_common::ring::RingConfig,
    /// Other tsdb members (base URLs such as `http://tsdb-2:9090`) whose
    /// data queries include, besides the ring's members.
    pub peers: Vec<String>,
    /// What to scrape; set from the config file's `global` and
    /// `scrape_configs` (Prometheus' sections), not from this section.
    #[serde(skip)]
    pub scrape: ScrapeSetup,
    /// Whether the API answers `/api/v1/rules` and `/api/v1/alerts` (empty)
    /// itself; off in `lucia all`, where the ruler serves them.
    #[serde(skip)]
    pub rules_api: bool,
}

/// What the role scrapes.
#[derive(Debug, Clone, Default)]
pub enum ScrapeSetup {
    /// Nothing.
    #[default]
    Nothing,
    /// The process itself (`lucia all` without `scrape_configs`).
    Itself,
    /// A Prometheus `global` + `scrape_configs`.
    Config(Box<scrape::config::ScrapeFileConfig>),
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
            ring: lucia_common::ring::RingConfig::default(),
            peers: Vec::new(),
            scrape: ScrapeSetup::Nothing,
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
    #[error(transparent)]
    Scrape(#[from] scrape::ScrapeError),
    #[error(transparent)]
    Ring(#[from] lucia_common::ring::RingError),
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
    let scrape_stop = Shutdown::new();
    // Several tsdb members (a Consul ring): they split the scrape targets
    // and answer queries over each other's data.
    let mut lifecycler = None;
    let mut ring = None;
    let instance_id = format!("tsdb-{}", ctx.advertise_addr);
    if config.ring.kvstore.store == lucia_common::ring::KvStore::Consul {
        ring = Some(
            lucia_common::ring::watch(
                &config.ring,
                "tsdb",
                ctx.consul.as_ref(),
                scrape_stop.clone(),
            )
            .await?,
        );
        let mut member = lucia_common::ring::Lifecycler::join(
            &config.ring,
            "tsdb",
            instance_id.clone(),
            ctx.advertise_addr.to_string(),
            &storage_dir.join("tokens.json"),
            ctx.consul.as_ref(),
        )
        .await?;
        member
            .set_state(lucia_common::ring::InstanceState::Active)
            .await?;
        lifecycler = Some(member);
    }
    let backend = Arc::new(StorageBackend {
        storage: storage.clone(),
        static_peers: config.peers.clone(),
        ring: ring.clone(),
        own_addr: ctx.advertise_addr.to_string(),
        client: lucia_common::http_client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Io(std::io::Error::other(e)))?,
        runtime: tokio::runtime::Handle::current(),
    });

    let mut api_state = api::ApiState::new(backend.clone());
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
    let mut router = remote_write::router(remote_write::WriteState {
        appender: storage.clone(),
        multi_tenant: ctx.multi_tenant,
    })
    .merge(remote_read::router(remote_read::ReadState {
        backend,
        multi_tenant: ctx.multi_tenant,
    }))
    .merge(api::router(api_state));

    // Held until shutdown: dropping the manager stops its pools.
    let mut scrape_manager = None;
    let scrape_config = match config.scrape {
        ScrapeSetup::Nothing => None,
        ScrapeSetup::Itself => Some(self_scrape_config(ctx.advertise_addr)?),
        ScrapeSetup::Config(c) => Some(*c),
    };
    if let Some(scrape_config) = scrape_config {
        let mut options = scrape::ScrapeOptions::new(ctx.metrics.clone(), scrape_stop.clone());
        if let Some(ring) = ring {
            // Each member scrapes the targets the ring gives it.
            // Twice the heartbeat: every member has seen a ring change
            // before the new owner of a target starts scraping it.
            let handoff = (config.ring.heartbeat_period.0 * 2).max(Duration::from_secs(2));
            options.sharding = Some(scrape::Sharding::from_ring(
                ring,
                instance_id,
                handoff,
                scrape_stop.clone(),
            ));
        }
        let manager = scrape::ScrapeManager::start(&scrape_config, storage.clone(), options)?;
        router = router.merge(manager.router());
        scrape_manager = Some(manager);
    }
    ready.set(true);
    let shutdown = ctx.shutdown.clone();
    let stopped = async move {
        shutdown.cancelled().await;
        scrape_stop.cancel();
        drop(scrape_manager);
        if let Some(member) = lifecycler
            && let Err(e) = member.leave().await
        {
            tracing::warn!(err = %e, "tsdb: cannot leave the ring");
        }
        if let Err(e) = storage.close().await {
            tracing::error!(err = %e, "tsdb: closing storage failed");
        }
    };
    Ok(Role::new("tsdb", router, stopped))
}

/// `lucia all` without scrape configs scrapes itself every 15 s.
fn self_scrape_config(
    addr: std::net::SocketAddr,
) -> Result<scrape::config::ScrapeFileConfig, Error> {
    let target = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let yaml = format!(
        "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: lucia\n    static_configs:\n      - targets: ['{target}']\n"
    );
    Ok(scrape::config::ScrapeFileConfig::parse(
        std::path::Path::new("<built-in self-scrape config>"),
        &yaml,
    )?)
}

/// The query side's view of the storage: the local one, or the union of
/// every tsdb member's when there are peers.
struct StorageBackend {
    storage: Arc<Storage>,
    static_peers: Vec<String>,
    ring: Option<lucia_common::ring::Ring>,
    own_addr: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl StorageBackend {
    /// Base URLs of the other members: the configured ones and the ring's
    /// ACTIVE members.
    fn peers(&self) -> Vec<String> {
        let mut peers = self.static_peers.clone();
        if let Some(ring) = &self.ring {
            for member in ring.snapshot().instances() {
                if member.addr != self.own_addr
                    && member.state == lucia_common::ring::InstanceState::Active
                {
                    peers.push(format!("http://{}", member.addr));
                }
            }
        }
        peers
    }

    fn source_for(&self, tenant: &str, local_only: bool) -> Arc<dyn promql::SeriesSource> {
        let local: Arc<dyn promql::SeriesSource> = Arc::new(self.storage.tenant(tenant));
        let peers = if local_only { Vec::new() } else { self.peers() };
        if peers.is_empty() {
            return local;
        }
        Arc::new(remote_read::FanoutSource {
            local,
            peers,
            tenant: tenant.to_string(),
            client: self.client.clone(),
            runtime: self.runtime.clone(),
        })
    }
}

impl api::QueryBackend for StorageBackend {
    fn source(&self, tenant: &str) -> Arc<dyn promql::SeriesSource> {
        self.source_for(tenant, false)
    }
}

impl remote_read::ReadBackend for StorageBackend {
    fn source(&self, tenant: &str, local_only: bool) -> Arc<dyn promql::SeriesSource> {
        self.source_for(tenant, local_only)
    }
}

/// A checkpoint is also taken once the WAL grows past this, so a fast
/// ingest does not fill the disk with segments between checkpoints.
const WAL_CHECKPOINT_BYTES: u64 = 256 << 20;

/// Compaction, retention and the WAL size are checked every 10 s;
/// checkpoints come on their interval or when the WAL is large.
async fn maintenance(storage: Arc<Storage>, checkpoint_every: Duration, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(10).min(checkpoint_every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = last_checkpoint.elapsed() >= checkpoint_every
            || storage.wal_size() > WAL_CHECKPOINT_BYTES;
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
