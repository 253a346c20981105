//! Service discovery: each provider of a scrape pool sends target groups
//! on a channel; a group replaces the pool's earlier group of the same
//! provider and source.

pub mod consul;
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
        tokio::spawn(consul::run(
            provider,
            csd.clone(),
            tx.clone(),
            stop.clone(),
            metrics.clone(),
        ));
        provider += 1;
    }
}

/// Replaces characters that may not appear in a label name with `_`
/// (Prometheus' `strutil.SanitizeLabelName`).
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes() {
        assert_eq!(sanitize_label_name("rack-id.1"), "rack_id_1");
        assert_eq!(sanitize_label_name("1a"), "_a");
    }
}
