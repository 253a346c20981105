//! Service discovery: each provider of a scrape pool sends target groups
//! on a channel; a group replaces the pool's earlier group of the same
//! provider and source.

pub mod file;

use lucia_common::Shutdown;
use tokio::sync::mpsc;

use super::config::PoolConfig;
use super::metrics::ScrapeMetrics;
use super::target::{ADDRESS, LabelMap, TargetGroup};

/// A batch of groups from provider number `provider`.
#[derive(Debug)]
pub struct Update {
    pub provider: usize,
    pub groups: Vec<TargetGroup>,
}

pub type UpdateSender = mpsc::Sender<Update>;

/// The groups of `static_configs` (source = the index, as Prometheus).
pub fn static_groups(pool: &PoolConfig) -> Vec<TargetGroup> {
    pool.scrape
        .static_configs
        .iter()
        .enumerate()
        .map(|(i, sc)| TargetGroup {
            source: i.to_string(),
            labels: sc.labels.clone(),
            targets: sc
                .targets
                .iter()
                .map(|t| LabelMap::from([(ADDRESS.to_string(), t.clone())]))
                .collect(),
        })
        .collect()
}

/// Starts every provider of `pool`; they stop when `stop` is cancelled.
/// Provider 0 is `static_configs`, then file SD configs, then Consul ones.
pub fn start(pool: &PoolConfig, tx: UpdateSender, stop: Shutdown, metrics: &ScrapeMetrics) {
    let mut provider = 0;
    let groups = static_groups(pool);
    if !groups.is_empty() {
        let tx = tx.clone();
        // The channel has room; a full channel only delays the send.
        tokio::spawn(async move {
            let _ = tx.send(Update { provider, groups }).await;
        });
    }
    provider += 1;
    for fsd in &pool.scrape.file_sd_configs {
        tokio::spawn(file::run(
            provider,
            fsd.clone(),
            tx.clone(),
            stop.clone(),
            metrics.clone(),
        ));
        provider += 1;
    }
    for csd in &pool.scrape.consul_sd_configs {
        // Consul discovery lives in common (the agent uses it too); its
        // batches are tagged with the provider number here.
        let (groups_tx, mut groups_rx) = mpsc::channel(1);
        tokio::spawn(lucia_common::discovery::consul::run(
            csd.clone(),
            groups_tx,
            stop.clone(),
            metrics.consul_rpc_failures.clone(),
        ));
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(groups) = groups_rx.recv().await {
                if tx.send(Update { provider, groups }).await.is_err() {
                    break;
                }
            }
        });
        provider += 1;
    }
}
