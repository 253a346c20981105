//! Peers from Consul: every instance of `lucia-alert-router` registers
//! its cluster address in the service's meta (`cluster_address`), and each
//! member watches the service with blocking queries and probes what it
//! finds, as it does the `--cluster.peer` seeds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::consul::{ConsulClient, ConsulConfig, ServiceEntry, next_index};

use super::Cluster;

/// The Consul service the alert-routers register as.
pub const SERVICE: &str = "lucia-alert-router";
/// The service meta key that carries an instance's cluster address.
pub const META_KEY: &str = "cluster_address";

/// The cluster addresses of the service's instances. Instances without
/// the meta key run without clustering; health is not asked of Consul,
/// since the member's own probes decide liveness faster.
pub fn cluster_addresses(entries: &[ServiceEntry]) -> BTreeSet<String> {
    entries
        .iter()
        .filter_map(|e| e.service.meta.get(META_KEY))
        .filter(|a| !a.is_empty())
        .cloned()
        .collect()
}

pub async fn watch_consul(cluster: Arc<Cluster>, consul: ConsulConfig, shutdown: Shutdown) {
    let client = match ConsulClient::new(&consul) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%err, "not discovering cluster peers in consul");
            return;
        }
    };
    let mut index = 0;
    let mut failures = 0u32;
    loop {
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = client.health_service(SERVICE, false, index, None) => answer,
        };
        match answer {
            Ok(health) => {
                failures = 0;
                index = next_index(index, health.index);
                let found = cluster_addresses(&health.value);
                tracing::debug!(peers = ?found, "cluster peers from consul");
                cluster.members.lock().set_discovered(found);
            }
            Err(err) => {
                failures += 1;
                index = 0;
                tracing::warn!(%err, "watching cluster peers in consul failed, retrying");
                let delay = Duration::from_millis(200u64.saturating_mul(1 << failures.min(7)))
                    .min(Duration::from_secs(30));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
