//! A scrape pool: one job's discovery providers and the scrape loops of
//! its targets, reconciled whenever discovery, the config or the
//! membership of the tsdb ring changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use lucia_common::Shutdown;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::config::PoolConfig;
use super::discovery::{self, Update};
use super::metrics::ScrapeMetrics;
use super::scrape_loop::{self, LoopContext, LoopHandle, SeriesCache, Stop, TargetStatus};
use super::sharding::Sharding;
use super::target::{LabelMap, Populated, TargetGroup, populate};
use crate::append::SampleAppender;

/// What the targets API shows of a pool.
#[derive(Default)]
pub struct PoolView {
    pub active: Vec<Arc<TargetStatus>>,
    pub dropped: Vec<LabelMap>,
    pub dropped_count: usize,
}

pub enum Command {
    Reload(Arc<PoolConfig>),
    /// The job left the config: its targets go stale.
    Remove,
}

/// What every pool of a manager shares.
pub struct Shared<A> {
    pub appender: Arc<A>,
    pub tenant: Arc<str>,
    pub metrics: ScrapeMetrics,
    pub shutdown: Shutdown,
    pub sharding: Option<Sharding>,
}

/// A running pool, as the manager holds it.
pub struct PoolHandle {
    pub commands: mpsc::UnboundedSender<Command>,
    pub view: Arc<Mutex<PoolView>>,
    pub fingerprint: String,
}

pub fn spawn<A: SampleAppender>(shared: Arc<Shared<A>>, config: Arc<PoolConfig>) -> PoolHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let view = Arc::new(Mutex::new(PoolView::default()));
    let fingerprint = config.fingerprint();
    let pool = Pool {
        http: http_client(&config),
        config,
        shared,
        groups: BTreeMap::new(),
        loops: HashMap::new(),
        active_keys: Arc::new(Mutex::new(HashSet::new())),
        view: view.clone(),
    };
    tokio::spawn(pool.run(rx));
    PoolHandle {
        commands,
        view,
        fingerprint,
    }
}

/// The next discovery update; never ready once every provider is done.
async fn next_update(updates: &mut Option<mpsc::Receiver<Update>>) -> Option<Update> {
    match updates {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn http_client(config: &PoolConfig) -> reqwest::Client {
    let follow = config.scrape.follow_redirects.unwrap_or(true);
    let policy = if follow {
        reqwest::redirect::Policy::limited(10)
    } else {
        reqwest::redirect::Policy::none()
    };
    // tls_config was read when the config loaded; a file that went bad
    // since then fails this job's https scrapes closed (no trusted root)
    // rather than trusting the system's roots instead.
    let builder = config.scrape.http().client_builder().unwrap_or_else(|err| {
        tracing::error!(job = %config.scrape.job_name, %err,
            "cannot apply tls_config: https scrapes of this job will fail");
        lucia_common::http_client::builder_trusting_nothing()
    });
    builder
        .redirect(policy)
        .no_proxy()
        .build()
        .unwrap_or_else(|err| {
            tracing::error!(%err, "cannot configure the scrape http client, using defaults");
            lucia_common::http_client::client()
        })
}

struct Pool<A> {
    config: Arc<PoolConfig>,
    shared: Arc<Shared<A>>,
    http: reqwest::Client,
    /// Current groups by (provider, source).
    groups: BTreeMap<(usize, String), TargetGroup>,
    loops: HashMap<u64, LoopHandle>,
    /// Keys of the targets this pool scrapes now.
    active_keys: Arc<Mutex<HashSet<u64>>>,
    view: Arc<Mutex<PoolView>>,
}

impl<A: SampleAppender> Pool<A> {
    fn start_discovery(&self) -> (Shutdown, mpsc::Receiver<Update>) {
        let (tx, rx) = mpsc::channel(64);
        let stop = self.shared.shutdown.child_token();
        discovery::start(&self.config, tx, stop.clone(), &self.shared.metrics);
        (stop, rx)
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (mut sd_stop, rx) = self.start_discovery();
        let mut updates = Some(rx);
        let mut membership: Option<watch::Receiver<()>> =
            self.shared.sharding.as_ref().map(Sharding::changes);
        let shutdown = self.shared.shutdown.clone();
        loop {
            let member_change = async {
                match membership.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(Command::Reload(config)) => {
                        self.shared.metrics.pool_reloads.inc();
                        let rediscover =
                            config.discovery_fingerprint() != self.config.discovery_fingerprint();
                        self.config = config;
                        self.http = http_client(&self.config);
                        if rediscover {
                            sd_stop.cancel();
                            self.groups.clear();
                            let (stop, rx) = self.start_discovery();
                            sd_stop = stop;
                            updates = Some(rx);
                        }
                        self.sync(true).await;
                    }
                    Some(Command::Remove) | None => {
                        sd_stop.cancel();
                        self.active_keys.lock().clear();
                        for (_, handle) in self.loops.drain() {
                            handle.stop(Stop::Removed);
                        }
                        *self.view.lock() = PoolView::default();
                        self.shared.metrics.pool_targets.remove(&self.job_label());
                        self.shared.metrics.discovered_targets.remove(&self.sd_label());
                        return;
                    }
                },
                update = next_update(&mut updates) => {
                    let Some(update) = update else {
                        // Every provider is done (static configs only).
                        updates = None;
                        continue;
                    };
                    self.apply(update);
                    // Take every update already queued before syncing once.
                    while let Some(update) = updates.as_mut().and_then(|rx| rx.try_recv().ok()) {
                        self.apply(update);
                    }
                    self.sync(false).await;
                }
                alive = member_change => {
                    if alive {
                        self.sync(false).await;
                    } else {
                        membership = None;
                    }
                }
            }
        }
        // Shutdown: loops stop by themselves without staleness markers.
        sd_stop.cancel();
    }

    fn apply(&mut self, update: Update) {
        for group in update.groups {
            let key = (update.provider, group.source.clone());
            if group.targets.is_empty() {
                self.groups.remove(&key);
            } else {
                self.groups.insert(key, group);
            }
        }
    }

    fn job_label(&self) -> Vec<(String, String)> {
        vec![("scrape_job".to_string(), self.config.job_name.clone())]
    }

    fn sd_label(&self) -> Vec<(String, String)> {
        vec![
            ("config".to_string(), self.config.job_name.clone()),
            ("name".to_string(), "scrape".to_string()),
        ]
    }

    fn context(&self) -> LoopContext<A> {
        let keys = self.active_keys.clone();
        LoopContext {
            appender: self.shared.appender.clone(),
            tenant: self.shared.tenant.clone(),
            http: self.http.clone(),
            pool: self.config.clone(),
            metrics: self.shared.metrics.clone(),
            shutdown: self.shared.shutdown.clone(),
            is_active: Arc::new(move |key| keys.lock().contains(&key)),
        }
    }

    /// Brings the loops in line with the groups; with `restart`, every
    /// loop is replaced (the config changed), keeping its series.
    async fn sync(&mut self, restart: bool) {
        let config = self.config.clone();
        let mut targets = Vec::new();
        let mut dropped = Vec::new();
        let mut dropped_count = 0;
        let mut seen = HashSet::new();
        for ((_, source), group) in &self.groups {
            for (i, target) in group.targets.iter().enumerate() {
                match populate(&config, target, &group.labels) {
                    Ok(Populated::Target(spec)) => {
                        if seen.insert(spec.key) {
                            targets.push(spec);
                        }
                    }
                    Ok(Populated::Dropped(labels)) => {
                        dropped_count += 1;
                        let keep = config.keep_dropped_targets;
                        if keep == 0 || (dropped.len() as u64) < keep {
                            dropped.push(labels);
                        }
                    }
                    Err(err) => tracing::warn!(
                        job = %config.job_name,
                        "creating target failed: instance {i} in group {source}: {err}"
                    ),
                }
            }
        }
        self.shared
            .metrics
            .discovered_targets
            .get_or_create(&self.sd_label())
            .set((targets.len() + dropped_count) as i64);
        if let Some(sharding) = &self.shared.sharding {
            targets.retain(|spec| sharding.owns(spec.key));
        }
        let forced = if config.target_limit > 0 && targets.len() as u64 > config.target_limit {
            self.shared.metrics.exceeded_target_limit.inc();
            Some(format!(
                "target_limit exceeded (number of targets: {}, limit: {})",
                targets.len(),
                config.target_limit
            ))
        } else {
            None
        };
        let keys: HashSet<u64> = targets.iter().map(|t| t.key).collect();
        *self.active_keys.lock() = keys.clone();
        let gone: Vec<u64> = self
            .loops
            .keys()
            .filter(|k| !keys.contains(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(handle) = self.loops.remove(&key) {
                // Still discovered but owned by another member: it goes on
                // being scraped there, so no staleness markers here.
                let elsewhere = seen.contains(&key);
                handle.stop(if elsewhere {
                    Stop::Quiet
                } else {
                    Stop::Removed
                });
            }
        }
        let ctx = self.context();
        let mut active = Vec::with_capacity(targets.len());
        for spec in targets {
            let key = spec.key;
            let handle = match self.loops.remove(&key) {
                Some(handle) if !restart && !handle.is_finished() => {
                    *handle.status.discovered.lock() = spec.discovered.clone();
                    handle
                }
                Some(handle) => {
                    let cache = handle.handover().await;
                    self.start_loop(&ctx, spec, cache)
                }
                None => self.start_loop(&ctx, spec, SeriesCache::default()),
            };
            *handle.status.forced_error.lock() = forced.clone();
            active.push(handle.status.clone());
            self.loops.insert(key, handle);
        }
        self.shared
            .metrics
            .pool_targets
            .get_or_create(&self.job_label())
            .set(active.len() as i64);
        *self.view.lock() = PoolView {
            active,
            dropped,
            dropped_count,
        };
    }

    fn start_loop(
        &self,
        ctx: &LoopContext<A>,
        spec: super::target::TargetSpec,
        cache: SeriesCache,
    ) -> LoopHandle {
        let status = Arc::new(TargetStatus::new(self.config.job_name.clone(), spec));
        scrape_loop::spawn(ctx.clone(), status, cache)
    }
}
