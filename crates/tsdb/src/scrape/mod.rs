//! Prometheus-compatible scraping: the `global` and `scrape_configs`
//! sections of a Prometheus file, static, file and Consul service
//! discovery, relabeling, the text and OpenMetrics formats, `up` and the
//! `scrape_*` series, staleness markers, the targets API, and sharding of
//! targets between tsdb members.
//!
//! The role starts a [`ScrapeManager`] with its config, a
//! [`SampleAppender`] and [`ScrapeOptions`]; [`ScrapeManager::reload`]
//! applies a new config; [`ScrapeManager::router`] serves the targets API.

pub mod api;
pub mod config;
pub mod discovery;
pub mod metrics;
pub mod parser;
mod pool;
pub mod scrape_loop;
pub mod sharding;
pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;

use lucia_common::Shutdown;
use lucia_common::metrics::Metrics;
use parking_lot::Mutex;

pub use api::{ActiveTarget, DroppedTarget, TargetsRegistry, TargetsSnapshot};
pub use config::{GlobalConfig, ScrapeConfig, ScrapeFileConfig};
pub use sharding::Sharding;

use crate::append::SampleAppender;
use metrics::ScrapeMetrics;
use pool::{Command, PoolHandle, Shared};

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error(transparent)]
    File(#[from] lucia_common::config::ConfigError),
    #[error("invalid scrape configuration: {0}")]
    Config(String),
}

/// How a [`ScrapeManager`] runs.
pub struct ScrapeOptions {
    /// The tenant scraped samples are stored under (`fake` by default, the
    /// single-tenant name).
    pub tenant: String,
    /// Where the scraper's own metrics go.
    pub metrics: Metrics,
    /// Stops every loop and discovery (no staleness markers: a restart
    /// resumes where this left off).
    pub shutdown: Shutdown,
    /// Which targets this member scrapes; `None`: all of them.
    pub sharding: Option<Sharding>,
}

impl ScrapeOptions {
    pub fn new(metrics: Metrics, shutdown: Shutdown) -> Self {
        Self {
            tenant: "fake".into(),
            metrics,
            shutdown,
            sharding: None,
        }
    }
}

/// Runs a scrape pool per job. Cheap to clone.
pub struct ScrapeManager<A: SampleAppender> {
    shared: Arc<Shared<A>>,
    pools: Arc<Mutex<BTreeMap<String, PoolHandle>>>,
    registry: TargetsRegistry,
}

impl<A: SampleAppender> Clone for ScrapeManager<A> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            pools: self.pools.clone(),
            registry: self.registry.clone(),
        }
    }
}

impl<A: SampleAppender> ScrapeManager<A> {
    /// Validates `config` and starts scraping (inside a tokio runtime).
    pub fn start(
        config: &ScrapeFileConfig,
        appender: Arc<A>,
        options: ScrapeOptions,
    ) -> Result<Self, ScrapeError> {
        let shared = Arc::new(Shared {
            appender,
            tenant: options.tenant.into(),
            metrics: ScrapeMetrics::register(&options.metrics),
            shutdown: options.shutdown,
            sharding: options.sharding,
        });
        let manager = Self {
            shared,
            pools: Arc::new(Mutex::new(BTreeMap::new())),
            registry: TargetsRegistry::default(),
        };
        manager.reload(config)?;
        Ok(manager)
    }

    /// Applies a new config: pools of unchanged jobs keep running
    /// untouched, changed jobs keep the loops' series (no spurious
    /// staleness), removed jobs' targets get staleness markers. An invalid
    /// config changes nothing.
    pub fn reload(&self, config: &ScrapeFileConfig) -> Result<(), ScrapeError> {
        let configs = match config.pools() {
            Ok(configs) => configs,
            Err(err) => {
                self.shared.metrics.pool_reloads_failed.inc();
                return Err(err);
            }
        };
        let mut pools = self.pools.lock();
        let wanted: BTreeMap<String, Arc<config::PoolConfig>> = configs
            .into_iter()
            .map(|c| (c.job_name.clone(), Arc::new(c)))
            .collect();
        let removed: Vec<String> = pools
            .keys()
            .filter(|job| !wanted.contains_key(*job))
            .cloned()
            .collect();
        for job in removed {
            if let Some(handle) = pools.remove(&job) {
                let _ = handle.commands.send(Command::Remove);
            }
            self.registry.remove(&job);
        }
        for (job, config) in wanted {
            match pools.get_mut(&job) {
                Some(handle) => {
                    let fingerprint = config.fingerprint();
                    if handle.fingerprint != fingerprint {
                        handle.fingerprint = fingerprint;
                        let _ = handle.commands.send(Command::Reload(config));
                    }
                }
                None => {
                    let handle = pool::spawn(self.shared.clone(), config);
                    self.registry.insert(job.clone(), handle.view.clone());
                    pools.insert(job, handle);
                }
            }
        }
        Ok(())
    }

    /// Every active and dropped target with its last scrape.
    pub fn targets(&self) -> TargetsSnapshot {
        self.registry.snapshot()
    }

    /// The pools' views, for the Prometheus API (which may live elsewhere).
    pub fn registry(&self) -> TargetsRegistry {
        self.registry.clone()
    }

    /// `GET /api/v1/targets`, `/api/v1/scrape_pools`,
    /// `/api/v1/targets/metadata`.
    pub fn router(&self) -> axum::Router {
        api::router(self.registry.clone())
    }
}
