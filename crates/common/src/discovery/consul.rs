//! `consul_sd_configs`, as Prometheus' discovery/consul (Promtail's is the
//! same): the datacenter from `/v1/agent/self` unless configured; with a
//! `services` list and no `tags` or `filter`, one blocking health query per
//! service; otherwise a blocking watch of `/v1/catalog/services` that
//! starts and stops one health watch per matching service. Queries wait up
//! to two minutes, and a new query starts at most every `refresh_interval`.
//!
//! [`run`] sends batches of [`TargetGroup`]s, one group per service (source
//! = the service name, `__meta_consul_*` labels); a service that went away
//! is sent as an empty group so that its targets are removed.
//!
//! The discovery has its own small HTTP client rather than
//! [`crate::consul::ConsulClient`]: it needs Prometheus' options (path
//! prefix, datacenter, namespace, partition, node meta, filters, stale
//! reads, basic auth and `authorization`), which Lucia's own registration
//! never uses. The answers are decoded into [`crate::consul`]'s types.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Deserializer};
use tokio::sync::mpsc;

use super::{ADDRESS, TargetGroup, TargetLabels, joined_tags};
use crate::Shutdown;
use crate::consul::{HealthCheck, ServiceEntry};
use crate::duration::ConfigDuration;
use crate::relabel::LabelMap;

pub(super) const WATCH_TIMEOUT: Duration = Duration::from_secs(120);
pub(super) const RETRY_INTERVAL: Duration = Duration::from_secs(15);

pub const ADDRESS_LABEL: &str = "__meta_consul_address";
pub const NODE_LABEL: &str = "__meta_consul_node";
pub const METADATA_PREFIX: &str = "__meta_consul_metadata_";
pub const SERVICE_METADATA_PREFIX: &str = "__meta_consul_service_metadata_";
pub const TAGS_LABEL: &str = "__meta_consul_tags";
pub const SERVICE_LABEL: &str = "__meta_consul_service";
pub const HEALTH_LABEL: &str = "__meta_consul_health";
pub const SERVICE_ADDRESS_LABEL: &str = "__meta_consul_service_address";
pub const SERVICE_PORT_LABEL: &str = "__meta_consul_service_port";
pub const DATACENTER_LABEL: &str = "__meta_consul_dc";
pub const NAMESPACE_LABEL: &str = "__meta_consul_namespace";
pub const PARTITION_LABEL: &str = "__meta_consul_partition";
pub const TAGGED_ADDRESS_PREFIX: &str = "__meta_consul_tagged_address_";
pub const SERVICE_ID_LABEL: &str = "__meta_consul_service_id";

crate::with_http_client_fields! {
/// `consul_sd_configs` entry (Prometheus' parameters and defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulSdConfig {
    #[serde(default = "default_consul_server")]
    pub server: String,
    #[serde(default)]
    pub path_prefix: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub datacenter: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub partition: String,
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
    #[serde(default = "default_consul_refresh")]
    pub refresh_interval: ConfigDuration,
    #[serde(default, deserialize_with = "null_default")]
    pub services: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub node_meta: BTreeMap<String, String>,
    #[serde(default)]
    pub filter: String,
    #[serde(default)]
    pub health_filter: String,
}
}

fn default_consul_server() -> String {
    "localhost:8500".into()
}
fn default_tag_separator() -> String {
    ",".into()
}
fn default_consul_refresh() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}

impl ConsulSdConfig {
    /// A config for `server` with Prometheus' defaults.
    pub fn new(server: impl Into<String>) -> Self {
        let server: String = server.into();
        #[allow(clippy::expect_used)]
        serde_json::from_value(serde_json::json!({ "server": server }))
            .expect("a consul SD config of just a server deserializes")
    }

    /// Checks what Prometheus checks when it loads the config.
    pub fn validate(&self) -> Result<(), String> {
        if self.server.trim().is_empty() {
            return Err("consul SD configuration requires a server address".into());
        }
        if (self.username.is_some() || self.password.is_some()) && self.basic_auth.is_some() {
            return Err(
                "at most one of consul SD configuration username and password and basic auth can be configured"
                    .into(),
            );
        }
        if self.token.is_some() && (self.authorization.is_some() || self.oauth2.is_some()) {
            return Err(
                "at most one of consul SD token, authorization, or oauth2 can be configured".into(),
            );
        }
        check_scheme(&self.scheme)?;
        self.http().validate("consul_sd_configs")
    }
}

/// `http` or `https` (with the entry's `tls_config`).
pub(super) fn check_scheme(scheme: &str) -> Result<(), String> {
    match scheme {
        "http" | "https" => Ok(()),
        other => Err(format!(
            "scheme {other:?} is not supported for consul: use http or https"
        )),
    }
}

fn yes() -> bool {
    true
}
fn default_scheme() -> String {
    "http".into()
}

/// YAML `null` (a key with no value) is the default, as in Go.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Consul's `HealthChecks.AggregatedStatus`.
pub fn aggregated_status(checks: &[HealthCheck]) -> &'static str {
    let (mut passing, mut warning, mut critical, mut maintenance) = (false, false, false, false);
    for check in checks {
        if check.check_id == "_node_maintenance"
            || check.check_id.starts_with("_service_maintenance:")
        {
            maintenance = true;
            continue;
        }
        match check.status.as_str() {
            "passing" => passing = true,
            "warning" => warning = true,
            "critical" => critical = true,
            _ => return "",
        }
    }
    if maintenance {
        "maintenance"
    } else if critical {
        "critical"
    } else if warning {
        "warning"
    } else {
        let _ = passing;
        "passing"
    }
}

/// The target group of one service, labelled as Prometheus does.
pub fn service_group(
    name: &str,
    datacenter: &str,
    tag_separator: &str,
    entries: &[ServiceEntry],
) -> TargetGroup {
    let mut group_labels = LabelMap::new();
    group_labels.insert(SERVICE_LABEL.into(), name.to_string());
    if !datacenter.is_empty() {
        group_labels.insert(DATACENTER_LABEL.into(), datacenter.to_string());
    }
    let targets = entries
        .iter()
        .map(|entry| {
            let service = &entry.service;
            let node = &entry.node;
            let mut labels = TargetLabels::default();
            labels.set(ADDRESS, entry.addr());
            labels.set(ADDRESS_LABEL, node.address.as_str());
            labels.set(NODE_LABEL, node.node.as_str());
            labels.set(NAMESPACE_LABEL, service.namespace.as_str());
            labels.set(PARTITION_LABEL, service.partition.as_str());
            labels.set(TAGS_LABEL, joined_tags(&service.tags, tag_separator));
            labels.set(SERVICE_ADDRESS_LABEL, service.address.as_str());
            labels.set(SERVICE_PORT_LABEL, service.port.to_string());
            labels.set(SERVICE_ID_LABEL, service.id.as_str());
            labels.set(HEALTH_LABEL, aggregated_status(&entry.checks));
            labels.set_prefixed(METADATA_PREFIX, node.meta.clone());
            labels.set_prefixed(SERVICE_METADATA_PREFIX, service.meta.clone());
            labels.set_prefixed(TAGGED_ADDRESS_PREFIX, node.tagged_addresses.clone());
            labels.into_map()
        })
        .collect();
    TargetGroup {
        source: name.to_string(),
        labels: group_labels,
        targets,
    }
}

/// A small client for the endpoints discovery uses (also by
/// [`super::consulagent`]).
#[derive(Clone)]
pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    config: ConsulSdConfig,
    auth: Option<String>,
}

impl Client {
    pub(super) fn new(config: &ConsulSdConfig) -> Result<Self, String> {
        let server = config.server.trim().trim_end_matches('/');
        let server = server
            .strip_prefix("http://")
            .or_else(|| server.strip_prefix("https://"))
            .unwrap_or(server);
        let prefix = config.path_prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() || prefix.starts_with('/') {
            prefix.to_string()
        } else {
            format!("/{prefix}")
        };
        let http = config
            .http()
            .client_builder()
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the http client: {e}"))?;
        let mut auth = config.http().authorization_header()?;
        if auth.is_none() && (config.username.is_some() || config.password.is_some()) {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                config.username.as_deref().unwrap_or(""),
                config.password.as_deref().unwrap_or("")
            ));
            auth = Some(format!("Basic {token}"));
        }
        Ok(Self {
            http,
            base: format!("{}://{server}{prefix}", config.scheme),
            config: config.clone(),
            auth,
        })
    }

    /// GETs `path` with `query`; blocking when `index > 0`. Returns the
    /// answer and its `X-Consul-Index`.
    pub(super) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: Vec<(&str, String)>,
        index: u64,
    ) -> Result<(T, u64), String> {
        self.get_accepting(path, query, index, &[]).await
    }

    /// [`Self::get`], also decoding answers with a status in `also_ok`
    /// (the agent's health endpoint answers 429 or 503 with a body when a
    /// service is warning or critical).
    pub(super) async fn get_accepting<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        mut query: Vec<(&str, String)>,
        index: u64,
        also_ok: &[u16],
    ) -> Result<(T, u64), String> {
        let c = &self.config;
        if !c.datacenter.is_empty() {
            query.push(("dc", c.datacenter.clone()));
        }
        if !c.namespace.is_empty() {
            query.push(("ns", c.namespace.clone()));
        }
        if !c.partition.is_empty() {
            query.push(("partition", c.partition.clone()));
        }
        for (k, v) in &c.node_meta {
            query.push(("node-meta", format!("{k}:{v}")));
        }
        if index > 0 {
            query.push(("index", index.to_string()));
            query.push(("wait", format!("{}ms", WATCH_TIMEOUT.as_millis())));
        }
        let mut encoded = encode_query(&query);
        if c.allow_stale {
            if !encoded.is_empty() {
                encoded.push('&');
            }
            encoded.push_str("stale");
        }
        let mut url = format!("{}{path}", self.base);
        if !encoded.is_empty() {
            url.push('?');
            url.push_str(&encoded);
        }
        let mut request = self
            .http
            .get(&url)
            .timeout(WATCH_TIMEOUT + Duration::from_secs(15));
        if let Some(token) = &c.token {
            request = request.header("X-Consul-Token", token);
        }
        if let Some(auth) = &self.auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach consul at {}: {e}", self.base))?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("cannot read consul's answer to {path}: {e}"))?;
        if !status.is_success() && !also_ok.contains(&status.as_u16()) {
            let hint = if status == reqwest::StatusCode::FORBIDDEN {
                " (set token in consul_sd_configs to a token with read access)"
            } else {
                ""
            };
            return Err(format!(
                "consul answered {status} to {path}{hint}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let value = serde_json::from_slice(&body)
            .map_err(|e| format!("invalid consul answer to {path}: {e}"))?;
        Ok((value, index))
    }
}

fn encode_query(query: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        q.append_pair(k, v);
    }
    q.finish()
}

/// Runs one Consul SD config until `stop`.
/// Runs one Consul SD config until `stop`, sending batches of groups on
/// `tx`; failed requests count in `rpc_failures`
/// (`prometheus_sd_consul_rpc_failures_total` in Prometheus).
pub async fn run(
    config: ConsulSdConfig,
    tx: mpsc::Sender<Vec<TargetGroup>>,
    stop: Shutdown,
    rpc_failures: Counter,
) {
    let mut client = match Client::new(&config) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%err, "consul_sd: cannot start");
            return;
        }
    };
    // The datacenter of the agent, for __meta_consul_dc.
    let datacenter = loop {
        if !config.datacenter.is_empty() {
            break config.datacenter.clone();
        }
        match client
            .get::<serde_json::Value>("/v1/agent/self", Vec::new(), 0)
            .await
        {
            Ok((value, _)) => match value["Config"]["Datacenter"].as_str() {
                Some(dc) => break dc.to_string(),
                None => tracing::error!("consul_sd: /v1/agent/self has no Config.Datacenter"),
            },
            Err(err) => {
                rpc_failures.inc();
                tracing::error!(%err, "consul_sd: error retrieving datacenter name");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY_INTERVAL) => {}
        }
    };
    client.config.datacenter = datacenter.clone();
    let ctx = WatchContext {
        client,
        datacenter,
        tx,
        stop,
        rpc_failures,
    };
    if config.services.is_empty() || !config.tags.is_empty() || !config.filter.is_empty() {
        watch_catalog(ctx).await;
    } else {
        for name in &config.services {
            tokio::spawn(watch_service(ctx.clone(), name.clone(), ctx.stop.clone()));
        }
        ctx.stop.cancelled().await;
    }
}

#[derive(Clone)]
struct WatchContext {
    client: Client,
    datacenter: String,
    tx: mpsc::Sender<Vec<TargetGroup>>,
    stop: Shutdown,
    rpc_failures: Counter,
}

impl WatchContext {
    /// Sends unless `stop` (the watch's own token) is cancelled first.
    async fn send(&self, groups: Vec<TargetGroup>, stop: &Shutdown) -> bool {
        tokio::select! {
            biased;
            _ = stop.cancelled() => false,
            sent = self.tx.send(groups) => sent.is_ok(),
        }
    }

    fn ticker(&self) -> tokio::time::Interval {
        let every = self
            .client
            .config
            .refresh_interval
            .0
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker
    }

    /// Waits `RETRY_INTERVAL` after an error; false once stopped.
    async fn backoff(&self, stop: &Shutdown) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(RETRY_INTERVAL) => true,
        }
    }
}

pub(super) fn should_watch(config: &ConsulSdConfig, name: &str, tags: &[String]) -> bool {
    (config.services.is_empty() || config.services.iter().any(|s| s == name))
        && config.tags.iter().all(|t| tags.contains(t))
}

async fn watch_catalog(ctx: WatchContext) {
    let mut ticker = ctx.ticker();
    let mut last_index = 0u64;
    let mut watched: HashMap<String, Shutdown> = HashMap::new();
    let config = ctx.client.config.clone();
    loop {
        let mut query = Vec::new();
        if !config.filter.is_empty() {
            query.push(("filter", config.filter.clone()));
        }
        let answer = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            answer = ctx.client.get::<BTreeMap<String, Option<Vec<String>>>>("/v1/catalog/services", query, last_index) => answer,
        };
        match answer {
            Err(err) => {
                ctx.rpc_failures.inc();
                tracing::error!(%err, "consul_sd: error refreshing service list");
                if !ctx.backoff(&ctx.stop).await {
                    return;
                }
                continue;
            }
            Ok((services, index)) => {
                if index != last_index || index == 0 {
                    last_index = index;
                    for (name, tags) in &services {
                        let tags = tags.clone().unwrap_or_default();
                        if !should_watch(&config, name, &tags) || watched.contains_key(name) {
                            continue;
                        }
                        let stop = ctx.stop.child_token();
                        tokio::spawn(watch_service(ctx.clone(), name.clone(), stop.clone()));
                        watched.insert(name.clone(), stop);
                    }
                    let gone: Vec<String> = watched
                        .keys()
                        .filter(|name| !services.contains_key(*name))
                        .cloned()
                        .collect();
                    for name in gone {
                        if let Some(stop) = watched.remove(&name) {
                            stop.cancel();
                        }
                        let empty = TargetGroup {
                            source: name,
                            ..Default::default()
                        };
                        if !ctx.send(vec![empty], &ctx.stop).await {
                            return;
                        }
                    }
                    if watched.is_empty()
                        && !ctx.send(vec![TargetGroup::default()], &ctx.stop).await
                    {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
    }
}

async fn watch_service(ctx: WatchContext, name: String, stop: Shutdown) {
    let mut ticker = ctx.ticker();
    let mut last_index = 0u64;
    let config = &ctx.client.config;
    let path = format!(
        "/v1/health/service/{}",
        form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
    );
    loop {
        let mut query: Vec<(&str, String)> =
            config.tags.iter().map(|t| ("tag", t.clone())).collect();
        if !config.health_filter.is_empty() {
            query.push(("filter", config.health_filter.clone()));
        }
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            answer = ctx.client.get::<Vec<ServiceEntry>>(&path, query, last_index) => answer,
        };
        match answer {
            Err(err) => {
                ctx.rpc_failures.inc();
                tracing::error!(service = %name, %err, "consul_sd: error refreshing service");
                if !ctx.backoff(&stop).await {
                    return;
                }
                continue;
            }
            Ok((entries, index)) => {
                if index != last_index || index == 0 {
                    last_index = index;
                    let group =
                        service_group(&name, &ctx.datacenter, &config.tag_separator, &entries);
                    if !ctx.send(vec![group], &stop).await {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_as_prometheus() {
        let entries: Vec<ServiceEntry> = serde_json::from_str(
            r#"[{
              "Node": {"Node": "node1", "Address": "10.0.0.1", "Datacenter": "dc1",
                       "TaggedAddresses": {"lan": "10.0.0.1", "wan": "1.2.3.4"},
                       "Meta": {"rack-id": "r1"}},
              "Service": {"ID": "api-1", "Service": "api", "Tags": ["a", "b"], "Address": "",
                          "Port": 8080, "Meta": {"version": "1"}},
              "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
                         {"CheckID": "service:api-1", "Status": "warning"}]
            }, {
              "Node": {"Node": "node2", "Address": "10.0.0.2"},
              "Service": {"ID": "api-2", "Service": "api", "Tags": null, "Address": "::1",
                          "Port": 9, "Meta": null},
              "Checks": null
            }]"#,
        )
        .unwrap();
        let group = service_group("api", "dc1", ",", &entries);
        assert_eq!(group.source, "api");
        assert_eq!(group.labels[SERVICE_LABEL], "api");
        assert_eq!(group.labels[DATACENTER_LABEL], "dc1");
        let t = &group.targets[0];
        assert_eq!(t[ADDRESS], "10.0.0.1:8080");
        assert_eq!(t[ADDRESS_LABEL], "10.0.0.1");
        assert_eq!(t[NODE_LABEL], "node1");
        assert_eq!(t[TAGS_LABEL], ",a,b,");
        assert_eq!(t[SERVICE_PORT_LABEL], "8080");
        assert_eq!(t[SERVICE_ID_LABEL], "api-1");
        assert_eq!(t[HEALTH_LABEL], "warning");
        assert_eq!(t["__meta_consul_metadata_rack_id"], "r1");
        assert_eq!(t["__meta_consul_service_metadata_version"], "1");
        assert_eq!(t["__meta_consul_tagged_address_wan"], "1.2.3.4");
        assert!(!t.contains_key(SERVICE_ADDRESS_LABEL));
        let t = &group.targets[1];
        assert_eq!(t[ADDRESS], "[::1]:9");
        assert_eq!(t[SERVICE_ADDRESS_LABEL], "::1");
        assert_eq!(t[TAGS_LABEL], ",,");
        assert_eq!(t[HEALTH_LABEL], "passing");
    }

    #[test]
    fn health_aggregation() {
        let check = |id: &str, status: &str| HealthCheck {
            check_id: id.into(),
            name: String::new(),
            status: status.into(),
            output: String::new(),
            service_id: String::new(),
        };
        assert_eq!(aggregated_status(&[]), "passing");
        assert_eq!(
            aggregated_status(&[check("a", "passing"), check("b", "critical")]),
            "critical"
        );
        assert_eq!(
            aggregated_status(&[
                check("_node_maintenance", "critical"),
                check("b", "passing")
            ]),
            "maintenance"
        );
        assert_eq!(aggregated_status(&[check("a", "bogus")]), "");
    }

    #[test]
    fn watch_filters() {
        let mut config = ConsulSdConfig::new("x:1");
        config.tags = vec!["metrics".into()];
        assert!(should_watch(&config, "a", &["metrics".into(), "x".into()]));
        assert!(!should_watch(&config, "a", &["x".into()]));
        config.services = vec!["b".into()];
        assert!(!should_watch(&config, "a", &["metrics".into()]));
    }
}
