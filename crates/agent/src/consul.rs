//! `consul_sd_configs` and `consulagent_sd_configs` of the agent's scrape
//! configs: the discoveries in [`lucia_common::discovery`] (Prometheus'
//! semantics and `__meta_consul_*` labels, and Promtail's
//! `__meta_consulagent_*` ones) run one watch per config; this keeps the
//! latest target groups so that every target sync relabels them like
//! static and file targets. A change in Consul starts a sync at once
//! rather than at the next `sync_period`.

use std::collections::BTreeMap;
use std::sync::Arc;

use lucia_common::Shutdown;
use lucia_common::discovery::{ADDRESS, TargetGroup};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, mpsc};

use crate::config::{Config, StaticConfig};

/// Groups by (scrape config, consul config, source); an empty group (a
/// service that went away) is removed, which stops its files' tailers.
type Groups = BTreeMap<(usize, usize, String), TargetGroup>;

/// The target groups every `consul_sd_configs` watch found so far.
#[derive(Clone, Default)]
pub struct ConsulTargets {
    groups: Arc<Mutex<Groups>>,
    changed: Arc<Notify>,
}

impl ConsulTargets {
    /// Starts a watch per `consul_sd_configs` and `consulagent_sd_configs`
    /// entry; they end with `stop`.
    /// Failed requests count in `rpc_failures`.
    pub fn start(config: &Config, stop: &Shutdown, rpc_failures: &Counter) -> Self {
        let targets = Self::default();
        for (job, sc) in config.scrape_configs.iter().enumerate() {
            let mut sd = 0;
            for csd in &sc.consul_sd_configs {
                let tx = targets.receive(job, sd);
                tokio::spawn(lucia_common::discovery::consul::run(
                    csd.clone(),
                    tx,
                    stop.clone(),
                    rpc_failures.clone(),
                ));
                sd += 1;
            }
            for casd in &sc.consulagent_sd_configs {
                let tx = targets.receive(job, sd);
                tokio::spawn(lucia_common::discovery::consulagent::run(
                    casd.clone(),
                    tx,
                    stop.clone(),
                    rpc_failures.clone(),
                ));
                sd += 1;
            }
        }
        targets
    }

    /// A channel whose batches update the groups of discovery `sd` of
    /// scrape config `job`; it ends when the discovery drops its sender.
    fn receive(&self, job: usize, sd: usize) -> mpsc::Sender<Vec<TargetGroup>> {
        let (tx, mut rx) = mpsc::channel::<Vec<TargetGroup>>(1);
        let targets = self.clone();
        tokio::spawn(async move {
            while let Some(groups) = rx.recv().await {
                targets.update(job, sd, groups);
            }
        });
        tx
    }

    fn update(&self, job: usize, sd: usize, groups: Vec<TargetGroup>) {
        {
            let mut all = self.groups.lock();
            for group in groups {
                let key = (job, sd, group.source.clone());
                if group.targets.is_empty() {
                    all.remove(&key);
                } else {
                    all.insert(key, group);
                }
            }
        }
        self.changed.notify_one();
    }

    /// Resolves once the groups changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The targets of scrape config number `job`, one static group per
    /// target (its group's labels under its own).
    pub fn static_groups(&self, job: usize) -> Vec<StaticConfig> {
        let all = self.groups.lock();
        all.range((job, 0, String::new())..)
            .take_while(|((j, _, _), _)| *j == job)
            .flat_map(|(_, group)| {
                group.targets.iter().map(|target| {
                    let mut labels = group.labels.clone();
                    labels.extend(target.iter().map(|(k, v)| (k.clone(), v.clone())));
                    let address = labels.remove(ADDRESS).unwrap_or_default();
                    StaticConfig {
                        targets: vec![address],
                        labels,
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(source: &str, addrs: &[&str]) -> TargetGroup {
        TargetGroup {
            source: source.into(),
            labels: [("__meta_consul_service".to_string(), source.to_string())].into(),
            targets: addrs
                .iter()
                .map(|a| [(ADDRESS.to_string(), a.to_string())].into())
                .collect(),
        }
    }

    #[test]
    fn groups_replace_and_empty_groups_remove() {
        let targets = ConsulTargets::default();
        targets.update(
            0,
            0,
            vec![group("api", &["a:1", "b:2"]), group("web", &["c:3"])],
        );
        targets.update(1, 0, vec![group("other", &["d:4"])]);
        let found = targets.static_groups(0);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].targets, vec!["a:1"]);
        assert_eq!(found[0].labels["__meta_consul_service"], "api");
        assert!(!found[0].labels.contains_key(ADDRESS));
        targets.update(0, 0, vec![group("api", &[])]);
        let found = targets.static_groups(0);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].labels["__meta_consul_service"], "web");
        assert_eq!(targets.static_groups(1).len(), 1);
        assert!(targets.static_groups(2).is_empty());
    }
}
