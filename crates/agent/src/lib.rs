//! Log shipper compatible with Promtail: reads Promtail's configuration
//! file, tails files found by `__path__` globs, runs `pipeline_stages`, and
//! pushes batches (protobuf + snappy) to Loki-compatible endpoints.
//!
//! Delivery: positions advance only after a batch was acknowledged (or
//! definitively rejected), so after a crash at most the batch in flight is
//! sent again. Memory is bounded: at most [`QUEUE_CAPACITY`] entries wait
//! in the queue plus one batch (`batchsize`) per client; when they are
//! full, reading stops until the clients catch up.

pub mod client;
pub mod config;
pub mod consul;
pub mod docker;
pub mod glob;
pub mod metrics;
pub mod positions;
pub mod push_api;
pub mod stage_metrics;
pub mod stages;
pub mod syslog;
pub mod tail;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::server::{ProcessConfig, ReadyFlag, Role, RoleContext};
use tokio::sync::mpsc;

pub use crate::config::Config;
use crate::metrics::AgentMetrics;
use crate::positions::Positions;
use crate::stages::Pipeline;
use crate::tail::{Shipment, Tailer};
use lucia_common::relabel::LabelMap;

/// Entries read and not yet taken into a batch.
pub const QUEUE_CAPACITY: usize = 10_000;

/// Bytes that all tailers together may have read and not yet queued: with
/// many files, each one's read buffer of entries waiting for queue space
/// would otherwise add up (1,000 files held over 600 MiB in the benchmark).
pub const READ_BUDGET_BYTES: usize = 16 << 20;

/// How often tailed files are checked for new data, rotation and truncation.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Positions(#[from] positions::PositionsError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Pipeline(#[from] stages::StageError),
    #[error("no clients configured (and not --dry-run)")]
    NoClients,
}

/// Options that come from the command line rather than the file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print entries to stdout instead of pushing; positions are not saved.
    pub dry_run: bool,
    /// Print what every pipeline stage changes to stderr.
    pub inspect: bool,
}

/// Starts the agent on the process's shared listener.
pub async fn start(config: Config, options: Options, ctx: RoleContext) -> Result<Role, Error> {
    let inspect = options.inspect;
    let ready = ctx.readiness.register("agent");
    let metrics = AgentMetrics::register(&ctx.metrics);
    let positions = Positions::load(
        &config.positions.filename,
        config.positions.ignore_invalid_yaml,
    )?;
    let sink = if options.dry_run {
        client::Sink::Stdout
    } else {
        if config.clients.is_empty() {
            return Err(Error::NoClients);
        }
        client::Sink::Clients(
            config
                .clients
                .iter()
                .cloned()
                .map(client::Client::new)
                .collect::<Result<_, _>>()?,
        )
    };
    let batch_wait = config
        .clients
        .iter()
        .map(|c| c.batchwait.0)
        .min()
        .unwrap_or(Duration::from_secs(1));
    let batch_size = config
        .clients
        .iter()
        .map(|c| c.batchsize)
        .min()
        .unwrap_or(1024 * 1024);
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    // Cancelled after the tailers stopped, when the final batch may give up
    // retrying (its entries are not acknowledged, so nothing is lost).
    let abort = Shutdown::new();
    let shipper = tokio::spawn(client::ship(
        rx,
        sink,
        batch_wait,
        batch_size,
        positions.clone(),
        metrics.clone(),
        abort.clone(),
        client::ReadLimits::new(&config.limits_config),
    ));
    let stop = ctx.shutdown.child_token();
    let mut push_servers = Vec::new();
    for sc in &config.scrape_configs {
        let Some(push) = &sc.loki_push_api else {
            continue;
        };
        let addr = push.listen_address();
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(job = %sc.job_name, addr = %listener.local_addr()?, "loki_push_api listening");
        let mut pipeline = Pipeline::new(&sc.pipeline_stages, &metrics.custom)?;
        pipeline.set_inspect(inspect);
        push_servers.push(tokio::spawn(push_api::serve(
            listener,
            push.clone(),
            sc.relabel_configs.clone(),
            pipeline,
            tx.clone(),
            stop.clone(),
        )));
    }
    for sc in &config.scrape_configs {
        let Some(syslog) = &sc.syslog else {
            continue;
        };
        let listener = tokio::net::TcpListener::bind(syslog.listen_address.as_str()).await?;
        tracing::info!(job = %sc.job_name, addr = %listener.local_addr()?, "syslog listening");
        let mut pipeline = Pipeline::new(&sc.pipeline_stages, &metrics.custom)?;
        pipeline.set_inspect(inspect);
        push_servers.push(tokio::spawn(syslog::serve(
            listener,
            syslog.clone(),
            sc.relabel_configs.clone(),
            pipeline,
            tx.clone(),
            stop.clone(),
        )));
    }
    let sync_period = config
        .target_config
        .sync_period
        .0
        .max(Duration::from_millis(10));
    let manager = tokio::spawn(manage(
        config.clone(),
        positions.clone(),
        tx,
        metrics,
        stop.clone(),
        ready,
        sync_period,
        inspect,
    ));
    let syncer = {
        let positions = positions.clone();
        let stop = stop.clone();
        let period = config
            .positions
            .sync_period
            .0
            .max(Duration::from_millis(10));
        let dry_run = options.dry_run;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(period) => {}
                }
                if !dry_run && let Err(err) = positions.save() {
                    tracing::error!(%err, "cannot save positions");
                }
            }
        })
    };
    let dry_run = options.dry_run;
    let stopped = async move {
        let _ = manager.await;
        for server in push_servers {
            let _ = server.await;
        }
        // Give the final batch a bounded time to be delivered.
        let mut shipper = shipper;
        if tokio::time::timeout(Duration::from_secs(10), &mut shipper)
            .await
            .is_err()
        {
            abort.cancel();
            let _ = shipper.await;
        }
        let _ = syncer.await;
        if !dry_run && let Err(err) = positions.save() {
            tracing::error!(%err, "cannot save positions");
        }
    };
    Ok(Role::new("agent", axum::Router::new(), stopped))
}

/// Runs the agent on its own listener until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    options: Options,
    process: ProcessConfig,
    shutdown: Shutdown,
) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, options, ctx)).await
}

/// Something to follow: a file, or a container's logs.
enum Want {
    File {
        labels: LabelMap,
        job: usize,
    },
    Docker {
        host: String,
        id: String,
        labels: LabelMap,
        job: usize,
    },
}

struct Running {
    stop: Shutdown,
    task: tokio::task::JoinHandle<()>,
    missing_syncs: u32,
}

/// Re-evaluates targets every `sync_period`, starting a tailer per new file
/// and stopping the tailers of files gone for two periods.
#[allow(clippy::too_many_arguments)]
async fn manage(
    config: Config,
    positions: Positions,
    tx: mpsc::Sender<Shipment>,
    metrics: AgentMetrics,
    stop: Shutdown,
    ready: ReadyFlag,
    sync_period: Duration,
    inspect: bool,
) {
    let mut running: HashMap<String, Running> = HashMap::new();
    let custom = metrics.custom.clone();
    let read_budget = tail::ReadBudget::new(READ_BUDGET_BYTES);
    let consul = consul::ConsulTargets::start(&config, &stop, &metrics.consul_rpc_failures);
    loop {
        let mut wanted: BTreeMap<String, Want> = discover(&config, &consul)
            .into_iter()
            .map(|(path, (labels, job))| (path, Want::File { labels, job }))
            .collect();
        for (job, sc) in config.scrape_configs.iter().enumerate() {
            for sd in &sc.docker_sd_configs {
                match docker::discover(sd).await {
                    Ok(containers) => {
                        for c in containers {
                            wanted
                                .entry(docker::cursor_key(&c.id))
                                .or_insert(Want::Docker {
                                    host: sd.host.clone(),
                                    id: c.id,
                                    labels: c.labels,
                                    job,
                                });
                        }
                    }
                    Err(err) => tracing::warn!(job = %sc.job_name, %err, "docker discovery failed"),
                }
            }
        }
        // Tailers that ended on their own (a container's log stream whose
        // queue closed, ...) are started again.
        running.retain(|_, r| !r.task.is_finished());
        for (key, want) in &wanted {
            if let Some(r) = running.get_mut(key) {
                r.missing_syncs = 0;
                continue;
            }
            let job = match want {
                Want::File { job, .. } | Want::Docker { job, .. } => *job,
            };
            let Some(sc) = config.scrape_configs.get(job) else {
                continue;
            };
            let mut pipeline = match Pipeline::new(&sc.pipeline_stages, &custom) {
                Ok(p) => p,
                Err(err) => {
                    tracing::error!(job = %sc.job_name, %err, "invalid pipeline");
                    continue;
                }
            };
            pipeline.set_inspect(inspect);
            let tailer_stop = stop.child_token();
            let task = match want {
                Want::File { labels, .. } => {
                    tracing::info!(path = %key, "tailing");
                    let tailer = Tailer::new(
                        key,
                        labels.clone(),
                        pipeline,
                        tx.clone(),
                        positions.clone(),
                        metrics.clone(),
                        tail::LineLimits {
                            max_line_size: config
                                .limits_config
                                .max_line_size
                                .and_then(|n| usize::try_from(n.0).ok()),
                            truncate: config.limits_config.max_line_size_truncate,
                        },
                        read_budget.clone(),
                    );
                    tokio::spawn(tailer.run(tailer_stop.clone(), POLL_INTERVAL))
                }
                Want::Docker {
                    host, id, labels, ..
                } => {
                    tracing::info!(container = %id, "following container logs");
                    tokio::spawn(docker::tail(
                        host.clone(),
                        id.clone(),
                        labels.clone(),
                        sc.relabel_configs.clone(),
                        pipeline,
                        tx.clone(),
                        positions.clone(),
                        tailer_stop.clone(),
                        sync_period,
                    ))
                }
            };
            running.insert(
                key.clone(),
                Running {
                    stop: tailer_stop,
                    task,
                    missing_syncs: 0,
                },
            );
        }
        let mut gone = Vec::new();
        for (path, r) in running.iter_mut() {
            if !wanted.contains_key(path) {
                r.missing_syncs += 1;
                if r.missing_syncs >= 2 {
                    gone.push(path.clone());
                }
            }
        }
        for path in gone {
            if let Some(r) = running.remove(&path) {
                tracing::info!(%path, "stopped tailing");
                r.stop.cancel();
                let _ = r.task.await;
            }
        }
        ready.set(true);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(sync_period) => {}
            _ = consul.changed() => {}
        }
    }
    for (_, r) in running.drain() {
        r.stop.cancel();
        let _ = r.task.await;
    }
}

/// The target groups of a scrape config: its static ones, those read
/// from `file_sd_configs` files (with `__meta_filepath`) and those Consul
/// discovery found.
fn target_groups(
    sc: &config::ScrapeConfig,
    discovered: Vec<config::StaticConfig>,
) -> Vec<config::StaticConfig> {
    let mut groups = sc.static_configs.clone();
    groups.extend(discovered);
    for sd in &sc.file_sd_configs {
        for pattern in &sd.files {
            let files = match glob::Glob::new(pattern) {
                Ok(g) => g.walk(),
                Err(err) => {
                    tracing::warn!(%pattern, %err, "invalid file_sd_configs glob");
                    continue;
                }
            };
            for file in files {
                match read_target_file(&file) {
                    Ok(found) => groups.extend(found.into_iter().map(|mut g| {
                        g.labels
                            .insert("__meta_filepath".to_string(), file.display().to_string());
                        g
                    })),
                    Err(err) => {
                        tracing::warn!(file = %file.display(), %err, "cannot read targets file")
                    }
                }
            }
        }
    }
    groups
}

fn read_target_file(path: &std::path::Path) -> Result<Vec<config::StaticConfig>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        lucia_common::config::parse(path, &text).map_err(|e| e.to_string())
    }
}

/// The files every scrape config's targets match now: path → (labels, job).
pub fn discover(
    config: &Config,
    consul: &consul::ConsulTargets,
) -> BTreeMap<String, (LabelMap, usize)> {
    let mut out = BTreeMap::new();
    for (job, sc) in config.scrape_configs.iter().enumerate() {
        for st in &target_groups(sc, consul.static_groups(job)) {
            let targets: Vec<&str> = if st.targets.is_empty() {
                vec!["localhost"]
            } else {
                st.targets.iter().map(String::as_str).collect()
            };
            for target in targets {
                let mut labels = st.labels.clone();
                labels.insert("__address__".to_string(), target.to_string());
                let Some(labels) = lucia_common::relabel::relabel(labels, &sc.relabel_configs)
                else {
                    continue;
                };
                let Some(pattern) = labels.get("__path__") else {
                    continue;
                };
                let glob = match glob::Glob::new(pattern) {
                    Ok(g) => g,
                    Err(err) => {
                        tracing::warn!(%pattern, %err, "invalid __path__");
                        continue;
                    }
                };
                let exclude = labels
                    .get("__path_exclude__")
                    .filter(|p| !p.is_empty())
                    .and_then(|p| glob::Glob::new(p).ok());
                let base: LabelMap = labels
                    .iter()
                    .filter(|(k, _)| !k.starts_with("__"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for file in glob.walk() {
                    let Some(path) = file.to_str() else { continue };
                    if exclude.as_ref().is_some_and(|e| e.is_match(path)) {
                        continue;
                    }
                    let mut labels = base.clone();
                    labels.insert("filename".to_string(), path.to_string());
                    out.entry(path.to_string()).or_insert((labels, job));
                }
            }
        }
    }
    out
}
