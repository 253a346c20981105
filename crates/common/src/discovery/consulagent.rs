//! Promtail's `consulagent_sd_configs`: the services registered with the
//! local Consul agent (`/v1/agent/services`), each instance with the
//! agent's aggregated health (`/v1/agent/health/service/name/<name>`),
//! labelled `__meta_consulagent_*`. Unlike `consul_sd_configs` this polls
//! every `refresh_interval` (the agent endpoints have no blocking
//! queries), as Promtail does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::consul::{Client, ConsulSdConfig, RETRY_INTERVAL, should_watch};
use super::{ADDRESS, TargetGroup, TargetLabels, joined_tags};
use crate::Shutdown;
use crate::consul::{AgentService, join_host_port};
use crate::duration::ConfigDuration;
use crate::http_config::TlsConfig;
use crate::relabel::LabelMap;

const PREFIX: &str = "__meta_consulagent_";

/// A `consulagent_sd_configs` entry (Promtail's fields and defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulAgentSdConfig {
    #[serde(default = "default_server")]
    pub server: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub datacenter: String,
    #[serde(default = "default_tag_separator")]
    pub tag_separator: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "yes")]
    pub allow_stale: bool,
    #[serde(default = "default_refresh")]
    pub refresh_interval: ConfigDuration,
    #[serde(default)]
    pub services: Option<Vec<String>>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Accepted; Promtail does not use it either.
    #[serde(default)]
    pub node_meta: Option<BTreeMap<String, String>>,
    /// Applied when `scheme` is https.
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
}

fn default_server() -> String {
    "localhost:8500".into()
}
fn default_tag_separator() -> String {
    ",".into()
}
fn default_scheme() -> String {
    "http".into()
}
fn yes() -> bool {
    true
}
fn default_refresh() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}

impl ConsulAgentSdConfig {
    /// Checks what Promtail checks when it loads the config.
    pub fn validate(&self) -> Result<(), String> {
        if self.server.trim().is_empty() {
            return Err("consulagent SD configuration requires a server address".into());
        }
        super::consul::check_scheme(&self.scheme)?;
        if let Some(tls) = &self.tls_config {
            crate::http_client::client_config(tls).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The same connection as a `consul_sd_configs` entry, for the client.
    fn as_consul(&self) -> ConsulSdConfig {
        let mut c = ConsulSdConfig::new(self.server.clone());
        c.token = self.token.clone();
        c.tag_separator = self.tag_separator.clone();
        c.scheme = self.scheme.clone();
        c.username = self.username.clone();
        c.password = self.password.clone();
        c.tls_config = self.tls_config.clone();
        c.allow_stale = self.allow_stale;
        c.refresh_interval = self.refresh_interval;
        c.services = self.services.clone().unwrap_or_default();
        c.tags = self.tags.clone().unwrap_or_default();
        c
    }
}

/// What `/v1/agent/self` says about the agent.
#[derive(Debug, Default, Deserialize)]
struct AgentSelf {
    #[serde(rename = "Config", default)]
    config: AgentSelfConfig,
    #[serde(rename = "Member", default)]
    member: AgentMember,
    #[serde(rename = "Meta", default)]
    meta: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct AgentSelfConfig {
    #[serde(rename = "Datacenter", default)]
    datacenter: String,
    #[serde(rename = "NodeName", default)]
    node_name: String,
}

#[derive(Debug, Default, Deserialize)]
struct AgentMember {
    #[serde(rename = "Addr", default)]
    addr: String,
}

/// One entry of `/v1/agent/health/service/name/<name>`.
#[derive(Debug, Deserialize)]
pub struct AgentServiceHealth {
    #[serde(rename = "AggregatedStatus", default)]
    pub aggregated_status: String,
    #[serde(rename = "Service")]
    pub service: AgentService,
}

/// The target group of service `name` on the agent described by `agent`,
/// labelled as Promtail does.
fn service_group(
    name: &str,
    datacenter: &str,
    tag_separator: &str,
    agent: &AgentSelf,
    instances: &[AgentServiceHealth],
) -> TargetGroup {
    let mut group_labels = LabelMap::new();
    group_labels.insert(format!("{PREFIX}service"), name.to_string());
    group_labels.insert(format!("{PREFIX}dc"), datacenter.to_string());
    let targets = instances
        .iter()
        .map(|instance| {
            let service = &instance.service;
            // The agent's own address when the service has none.
            let host = if service.address.is_empty() {
                &agent.member.addr
            } else {
                &service.address
            };
            let mut labels = TargetLabels::default();
            labels.set(ADDRESS, join_host_port(host, service.port));
            labels.set(format!("{PREFIX}address"), agent.member.addr.as_str());
            labels.set(format!("{PREFIX}node"), agent.config.node_name.as_str());
            labels.set(
                format!("{PREFIX}tags"),
                joined_tags(&service.tags, tag_separator),
            );
            labels.set(format!("{PREFIX}service_address"), service.address.as_str());
            labels.set(format!("{PREFIX}service_port"), service.port.to_string());
            labels.set(format!("{PREFIX}service_id"), service.id.as_str());
            labels.set(
                format!("{PREFIX}health"),
                instance.aggregated_status.as_str(),
            );
            labels.set_prefixed(
                &format!("{PREFIX}metadata_"),
                agent.meta.clone().unwrap_or_default(),
            );
            labels.set_prefixed(&format!("{PREFIX}service_metadata_"), service.meta.clone());
            labels.set_prefixed(
                &format!("{PREFIX}tagged_address_"),
                service
                    .tagged_addresses
                    .iter()
                    .map(|(k, v)| (k, format!("{}:{}", v.address, v.port))),
            );
            labels.into_map()
        })
        .collect();
    TargetGroup {
        source: name.to_string(),
        labels: group_labels,
        targets,
    }
}

/// Runs one `consulagent_sd_configs` entry until `stop`, sending batches
/// of groups on `tx`; failed requests count in `rpc_failures`.
pub async fn run(
    config: ConsulAgentSdConfig,
    tx: mpsc::Sender<Vec<TargetGroup>>,
    stop: Shutdown,
    rpc_failures: Counter,
) {
    let consul = config.as_consul();
    let client = match Client::new(&consul) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%err, "consulagent_sd: cannot start");
            return;
        }
    };
    let every = config.refresh_interval.0.max(Duration::from_millis(10));
    let mut watched: BTreeSet<String> = BTreeSet::new();
    loop {
        let wait = match poll(&client, &config, &consul, &mut watched, &tx, &rpc_failures).await {
            Ok(true) => every,
            Ok(false) => return,
            Err(err) => {
                rpc_failures.inc();
                tracing::error!(%err, "consulagent_sd: error refreshing services");
                RETRY_INTERVAL.max(every)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One refresh: every watched service's group, and an empty group for each
/// one that went away. `Ok(false)` once nobody listens.
async fn poll(
    client: &Client,
    config: &ConsulAgentSdConfig,
    consul: &ConsulSdConfig,
    watched: &mut BTreeSet<String>,
    tx: &mpsc::Sender<Vec<TargetGroup>>,
    rpc_failures: &Counter,
) -> Result<bool, String> {
    let (agent, _) = client
        .get::<AgentSelf>("/v1/agent/self", Vec::new(), 0)
        .await?;
    let datacenter = if config.datacenter.is_empty() {
        agent.config.datacenter.clone()
    } else {
        config.datacenter.clone()
    };
    let (services, _) = client
        .get::<BTreeMap<String, AgentService>>("/v1/agent/services", Vec::new(), 0)
        .await?;
    let mut names: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for service in services.values() {
        names
            .entry(service.service.as_str())
            .or_default()
            .extend(service.tags.iter().cloned());
    }
    let mut groups = Vec::new();
    let mut now_watched = BTreeSet::new();
    for (name, tags) in names {
        if !should_watch(consul, name, &tags) {
            continue;
        }
        let path = format!(
            "/v1/agent/health/service/name/{}",
            form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
        );
        now_watched.insert(name.to_string());
        // 429 and 503 are the agent's way to say warning and critical.
        let answer = client
            .get_accepting::<Vec<AgentServiceHealth>>(&path, Vec::new(), 0, &[429, 503])
            .await;
        let instances = match answer {
            Ok((instances, _)) => instances,
            Err(err) => {
                // Keep the service's last group rather than drop its targets.
                rpc_failures.inc();
                tracing::warn!(service = %name, %err, "consulagent_sd: error refreshing service");
                continue;
            }
        };
        groups.push(service_group(
            name,
            &datacenter,
            &config.tag_separator,
            &agent,
            &instances,
        ));
    }
    for gone in watched.difference(&now_watched) {
        groups.push(TargetGroup {
            source: gone.clone(),
            ..Default::default()
        });
    }
    *watched = now_watched;
    Ok(tx.send(groups).await.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_as_promtail() {
        let agent: AgentSelf = serde_json::from_str(
            r#"{"Config": {"Datacenter": "dc1", "NodeName": "node1"},
                "Member": {"Addr": "10.0.0.1"}, "Meta": {"rack-id": "r1"}}"#,
        )
        .unwrap();
        let instances: Vec<AgentServiceHealth> = serde_json::from_str(
            r#"[{"AggregatedStatus": "warning",
                 "Service": {"ID": "api-1", "Service": "api", "Tags": ["a", "b"],
                             "Address": "", "Port": 8080, "Meta": {"log-path": "/x"},
                             "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.1", "Port": 8080}}},
                 "Checks": []}]"#,
        )
        .unwrap();
        let group = service_group("api", "dc1", ",", &agent, &instances);
        assert_eq!(group.source, "api");
        assert_eq!(group.labels["__meta_consulagent_service"], "api");
        assert_eq!(group.labels["__meta_consulagent_dc"], "dc1");
        let t = &group.targets[0];
        assert_eq!(t[ADDRESS], "10.0.0.1:8080");
        assert_eq!(t["__meta_consulagent_node"], "node1");
        assert_eq!(t["__meta_consulagent_tags"], ",a,b,");
        assert_eq!(t["__meta_consulagent_health"], "warning");
        assert_eq!(t["__meta_consulagent_metadata_rack_id"], "r1");
        assert_eq!(t["__meta_consulagent_service_metadata_log_path"], "/x");
        assert_eq!(
            t["__meta_consulagent_tagged_address_lan_ipv4"],
            "10.0.0.1:8080"
        );
    }
}
