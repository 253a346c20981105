//! A small async Consul HTTP client: agent service registration, health
//! queries and the KV store, with blocking queries.
//!
//! Written here rather than taken from `consulrs`, which is unmaintained and
//! has no health queries. Only the endpoints Lucia uses are covered.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::duration::ConfigDuration;

/// Where Consul is and how to talk to it (the `consul` config section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// host:port or `http://host:port` of the Consul agent, e.g. `consul:8500`.
    pub address: String,
    /// ACL token sent as `X-Consul-Token`.
    #[serde(default)]
    pub acl_token: Option<String>,
    /// How often Consul runs the `/ready` check of each registered service.
    #[serde(default = "default_check_interval")]
    pub check_interval: ConfigDuration,
    /// How long one check may take before it counts as failed.
    #[serde(default = "default_check_timeout")]
    pub check_timeout: ConfigDuration,
    /// Consul removes a service whose check stayed critical this long.
    #[serde(default = "default_deregister_after")]
    pub deregister_critical_service_after: ConfigDuration,
    /// Longest wait of one blocking query.
    #[serde(default = "default_wait")]
    pub wait: ConfigDuration,
}

fn default_check_interval() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}
fn default_check_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}
fn default_deregister_after() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}
fn default_wait() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}

impl ConsulConfig {
    /// A config with every optional field at its default.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            acl_token: None,
            check_interval: default_check_interval(),
            check_timeout: default_check_timeout(),
            deregister_critical_service_after: default_deregister_after(),
            wait: default_wait(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("invalid consul.address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("cannot reach consul at {address} ({what}): {source}")]
    Unreachable {
        address: String,
        what: String,
        source: reqwest::Error,
    },
    #[error(
        "consul at {address} denied {what}: set consul.acl_token to a token with access ({body})"
    )]
    Forbidden {
        address: String,
        what: String,
        body: String,
    },
    #[error("consul at {address} answered {status} to {what}: {body}")]
    Status {
        address: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error("consul at {address} sent an invalid answer to {what}: {reason}")]
    InvalidResponse {
        address: String,
        what: String,
        reason: String,
    },
}

/// A value read from Consul with the `X-Consul-Index` it was read at; pass
/// the index to the next read to block until something changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed<T> {
    pub index: u64,
    pub value: T,
}

/// The body of `PUT /v1/agent/service/register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRegistration {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<String>,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Port", default)]
    pub port: u16,
    #[serde(rename = "Meta", default)]
    pub meta: BTreeMap<String, String>,
    #[serde(rename = "Check", default, skip_serializing_if = "Option::is_none")]
    pub check: Option<HttpCheck>,
}

/// An HTTP check: Consul GETs `http` every `interval`; 2xx is passing.
/// Durations are Go duration strings such as `10s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCheck {
    #[serde(rename = "HTTP")]
    pub http: String,
    #[serde(rename = "Interval")]
    pub interval: String,
    #[serde(rename = "Timeout", default)]
    pub timeout: String,
    #[serde(rename = "DeregisterCriticalServiceAfter", default)]
    pub deregister_critical_service_after: String,
}

impl HttpCheck {
    /// A check of `url` with the intervals of `config`.
    pub fn new(url: String, config: &ConsulConfig) -> Self {
        Self {
            http: url,
            interval: go_duration(config.check_interval.0),
            timeout: go_duration(config.check_timeout.0),
            deregister_critical_service_after: go_duration(
                config.deregister_critical_service_after.0,
            ),
        }
    }
}

/// One entry of `GET /v1/health/service/<name>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceEntry {
    #[serde(rename = "Node")]
    pub node: Node,
    #[serde(rename = "Service")]
    pub service: AgentService,
    #[serde(rename = "Checks", default, deserialize_with = "null_default")]
    pub checks: Vec<HealthCheck>,
}

impl ServiceEntry {
    /// Whether every check (node and service) is passing, as `?passing` filters.
    pub fn is_passing(&self) -> bool {
        self.checks.iter().all(|c| c.status == "passing")
    }

    /// `address:port` of the service; Consul leaves the service address empty
    /// when it is the node's.
    pub fn addr(&self) -> String {
        let host = if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        };
        join_host_port(host, self.service.port)
    }
}

/// `host:port`, bracketing IPv6 hosts (Go's `net.JoinHostPort`).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Node {
    #[serde(rename = "Node", default)]
    pub node: String,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Datacenter", default)]
    pub datacenter: String,
    #[serde(rename = "TaggedAddresses", default, deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(rename = "Meta", default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Service")]
    pub service: String,
    #[serde(rename = "Tags", default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Port", default)]
    pub port: u16,
    #[serde(rename = "Meta", default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    /// Consul Enterprise's namespace and admin partition (empty otherwise).
    #[serde(rename = "Namespace", default)]
    pub namespace: String,
    #[serde(rename = "Partition", default)]
    pub partition: String,
    #[serde(rename = "TaggedAddresses", default, deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
}

/// One of a service's tagged addresses (`lan_ipv4`, `wan`, …).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ServiceAddress {
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Port", default)]
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    /// `passing`, `warning` or `critical`.
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "Output", default)]
    pub output: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
}

/// A KV entry with its value decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct KvPair {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A KV entry as Consul's JSON has it (value in base64, null when empty).
#[derive(Deserialize)]
struct RawKvPair {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value", default)]
    value: Option<String>,
    #[serde(rename = "Flags", default)]
    flags: u64,
    #[serde(rename = "CreateIndex", default)]
    create_index: u64,
    #[serde(rename = "ModifyIndex", default)]
    modify_index: u64,
}

/// Consul writes `null` for empty lists and maps.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Formats a duration as Go parses one (`10s`, `250ms`).
pub fn go_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Percent-encodes a URL path segment; `/` is kept when `keep_slash` (KV keys).
fn encode_path(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/');
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Client of one Consul agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsulClient {
    http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    base: String,
    config: ConsulConfig,
}

/// Slack on top of a blocking query's wait: Consul adds up to wait/16 of
/// jitter, and the answer still has to travel.
const BLOCKING_SLACK: Duration = Duration::from_secs(10);
/// Timeout of requests that do not block.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl ConsulClient {
    pub fn new(config: &ConsulConfig) -> Result<Self, ConsulError> {
        let invalid = |reason: &str| ConsulError::InvalidAddress {
            address: config.address.clone(),
            reason: reason.to_string(),
        };
        let address = config.address.trim().trim_end_matches('/');
        let host_port = if let Some(rest) = address.strip_prefix("http://") {
            rest
        } else if address.starts_with("https://") {
            return Err(invalid(
                "https is not supported: use http:// to a local consul agent",
            ));
        } else if address.contains("://") {
            return Err(invalid("only http:// addresses are supported"));
        } else {
            address
        };
        if host_port.is_empty() || host_port.contains('/') {
            return Err(invalid("expected host:port or http://host:port"));
        }
        let http = crate::http_client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|err| invalid(&format!("cannot build the http client: {err}")))?;
        Ok(Self {
            http,
            base: format!("http://{host_port}"),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ConsulConfig {
        &self.config
    }

    /// The base URL requests go to, e.g. `http://consul:8500`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Registers (or re-registers: Consul replaces by ID) a service.
    pub async fn register_service(&self, reg: &ServiceRegistration) -> Result<(), ConsulError> {
        let what = format!("registering service {}", reg.id);
        let request = self
            .request(reqwest::Method::PUT, "/v1/agent/service/register")
            .json(reg);
        self.send(request, &what, false).await?;
        Ok(())
    }

    /// Removes a service from the agent (and its checks).
    pub async fn deregister_service(&self, id: &str) -> Result<(), ConsulError> {
        let what = format!("deregistering service {id}");
        let path = format!("/v1/agent/service/deregister/{}", encode_path(id, false));
        self.send(self.request(reqwest::Method::PUT, &path), &what, false)
            .await?;
        Ok(())
    }

    /// The instances of service `name` with their checks; only those whose
    /// checks all pass when `passing_only`. With `index > 0` this blocks
    /// until the result changes past `index` or `wait` (default: the
    /// config's) has passed.
    pub async fn health_service(
        &self,
        name: &str,
        passing_only: bool,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<Indexed<Vec<ServiceEntry>>, ConsulError> {
        let what = format!("health query of service {name}");
        let mut path = format!("/v1/health/service/{}?", encode_path(name, false));
        if passing_only {
            path.push_str("passing&");
        }
        let request = self.blocking(&path, index, wait);
        let response = self.send(request, &what, false).await?;
        let index = header_index(&response);
        let value = self.json(response, &what).await?;
        Ok(Indexed { index, value })
    }

    /// The KV entry `key`, `None` if there is none (blocking as in
    /// [`Self::health_service`]).
    pub async fn kv_get(
        &self,
        key: &str,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<Indexed<Option<KvPair>>, ConsulError> {
        let what = format!("reading key {key}");
        let path = format!("/v1/kv/{}?", encode_path(key, true));
        let listed = self.kv_read(&path, &what, index, wait).await?;
        Ok(Indexed {
            index: listed.index,
            value: listed.value.into_iter().find(|pair| pair.key == key),
        })
    }

    /// Every KV entry whose key starts with `prefix` (blocking as in
    /// [`Self::health_service`]).
    pub async fn kv_list(
        &self,
        prefix: &str,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<Indexed<Vec<KvPair>>, ConsulError> {
        let what = format!("listing keys under {prefix}");
        let path = format!("/v1/kv/{}?recurse&", encode_path(prefix, true));
        self.kv_read(&path, &what, index, wait).await
    }

    /// Writes `value` at `key`. With `cas`, only if the key's ModifyIndex is
    /// still `cas` (0: only if the key does not exist). Returns whether the
    /// write happened, as Consul does.
    pub async fn kv_put(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u64>,
    ) -> Result<bool, ConsulError> {
        let what = format!("writing key {key}");
        let mut path = format!("/v1/kv/{}", encode_path(key, true));
        if let Some(cas) = cas {
            path.push_str(&format!("?cas={cas}"));
        }
        let request = self
            .request(reqwest::Method::PUT, &path)
            .body(value.to_vec());
        let response = self.send(request, &what, false).await?;
        self.json(response, &what).await
    }

    /// Deletes `key` (a missing key is not an error, as in Consul).
    pub async fn kv_delete(&self, key: &str) -> Result<(), ConsulError> {
        let what = format!("deleting key {key}");
        let path = format!("/v1/kv/{}", encode_path(key, true));
        let response = self
            .send(self.request(reqwest::Method::DELETE, &path), &what, false)
            .await?;
        let _: bool = self.json(response, &what).await?;
        Ok(())
    }

    async fn kv_read(
        &self,
        path: &str,
        what: &str,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<Indexed<Vec<KvPair>>, ConsulError> {
        let request = self.blocking(path, index, wait);
        // 404 is Consul's "no such key"; the index header still counts.
        let response = self.send(request, what, true).await?;
        let index = header_index(&response);
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Indexed {
                index,
                value: Vec::new(),
            });
        }
        let raw: Vec<RawKvPair> = self.json(response, what).await?;
        let mut pairs = Vec::with_capacity(raw.len());
        for pair in raw {
            let value = match pair.value {
                Some(text) => base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|err| self.invalid(what, format!("value of {}: {err}", pair.key)))?,
                None => Vec::new(),
            };
            pairs.push(KvPair {
                key: pair.key,
                value,
                flags: pair.flags,
                create_index: pair.create_index,
                modify_index: pair.modify_index,
            });
        }
        Ok(Indexed {
            index,
            value: pairs,
        })
    }

    /// A GET of `path` (ending in `?` or `&`) with the blocking parameters.
    fn blocking(&self, path: &str, index: u64, wait: Option<Duration>) -> reqwest::RequestBuilder {
        let wait = wait.unwrap_or(self.config.wait.0);
        let mut path = path.to_string();
        let timeout = if index > 0 {
            path.push_str(&format!("index={index}&wait={}", go_duration(wait)));
            wait + wait / 16 + BLOCKING_SLACK
        } else {
            REQUEST_TIMEOUT
        };
        let path = path.trim_end_matches(['?', '&']).to_string();
        self.request(reqwest::Method::GET, &path).timeout(timeout)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(REQUEST_TIMEOUT);
        if let Some(token) = &self.config.acl_token {
            request = request.header("X-Consul-Token", token);
        }
        request
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        allow_not_found: bool,
    ) -> Result<reqwest::Response, ConsulError> {
        let response = request
            .send()
            .await
            .map_err(|source| ConsulError::Unreachable {
                address: self.base.clone(),
                what: what.to_string(),
                source,
            })?;
        let status = response.status();
        if status.is_success() || (allow_not_found && status == reqwest::StatusCode::NOT_FOUND) {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let body = body.trim().to_string();
        if status == reqwest::StatusCode::FORBIDDEN || status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ConsulError::Forbidden {
                address: self.base.clone(),
                what: what.to_string(),
                body,
            });
        }
        Err(ConsulError::Status {
            address: self.base.clone(),
            what: what.to_string(),
            status: status.as_u16(),
            body,
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
        what: &str,
    ) -> Result<T, ConsulError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ConsulError::Unreachable {
                address: self.base.clone(),
                what: what.to_string(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|err| self.invalid(what, err.to_string()))
    }

    fn invalid(&self, what: &str, reason: String) -> ConsulError {
        ConsulError::InvalidResponse {
            address: self.base.clone(),
            what: what.to_string(),
            reason,
        }
    }
}

/// The `X-Consul-Index` of a response, 0 when missing or invalid (the next
/// read then does not block, which is always safe).
fn header_index(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The index to send with the next blocking query after one answered
/// `received` having sent `sent`: Consul's rule is to start over from 0
/// when the index goes backwards (e.g. after a snapshot restore).
pub fn next_index(sent: u64, received: u64) -> u64 {
    if received < sent { 0 } else { received }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let client = |a: &str| ConsulClient::new(&ConsulConfig::new(a)).map(|c| c.base.clone());
        assert_eq!(client("consul:8500").unwrap(), "http://consul:8500");
        assert_eq!(
            client("http://127.0.0.1:8500/").unwrap(),
            "http://127.0.0.1:8500"
        );
        let err = client("https://consul:8501").unwrap_err().to_string();
        assert!(err.contains("https is not supported"), "{err}");
        assert!(client("").is_err());
        assert!(client("consul:8500/v1").is_err());
    }

    #[test]
    fn config_defaults() {
        let config: ConsulConfig =
            serde_json::from_str(r#"{"address":"consul:8500","wait":"5s"}"#).unwrap();
        assert_eq!(config.check_interval, ConfigDuration::from_secs(10));
        assert_eq!(config.check_timeout, ConfigDuration::from_secs(5));
        assert_eq!(
            config.deregister_critical_service_after,
            ConfigDuration::from_secs(60)
        );
        assert_eq!(config.wait, ConfigDuration::from_secs(5));
    }

    #[test]
    fn registration_uses_consul_field_names() {
        let mut config = ConsulConfig::new("consul:8500");
        config.check_interval = ConfigDuration::from_millis(1500);
        let reg = ServiceRegistration {
            id: "lucia-ingester-10.0.0.1-3100".into(),
            name: "lucia-ingester".into(),
            tags: vec!["metrics".into()],
            address: "10.0.0.1".into(),
            port: 3100,
            meta: BTreeMap::new(),
            check: Some(HttpCheck::new("http://10.0.0.1:3100/ready".into(), &config)),
        };
        let json = serde_json::to_value(&reg).unwrap();
        assert_eq!(json["ID"], "lucia-ingester-10.0.0.1-3100");
        assert_eq!(json["Name"], "lucia-ingester");
        assert_eq!(json["Port"], 3100);
        assert_eq!(json["Check"]["HTTP"], "http://10.0.0.1:3100/ready");
        assert_eq!(json["Check"]["Interval"], "1500ms");
        assert_eq!(json["Check"]["Timeout"], "5s");
        assert_eq!(json["Check"]["DeregisterCriticalServiceAfter"], "60s");
    }

    #[test]
    fn health_entries_parse_consul_json() {
        // Shape of Consul's documented /v1/health/service answer, trimmed.
        let text = r#"[{
            "Node": {"ID": "40e4a748", "Node": "foobar", "Address": "10.1.10.12",
                     "Datacenter": "dc1", "TaggedAddresses": null, "Meta": null},
            "Service": {"ID": "redis", "Service": "redis", "Tags": null, "Address": "",
                        "Meta": null, "Port": 8000, "Weights": {"Passing": 10, "Warning": 1}},
            "Checks": [
                {"Node": "foobar", "CheckID": "serfHealth", "Name": "Serf Health Status",
                 "Status": "passing", "Notes": "", "Output": "", "ServiceID": "", "ServiceName": ""},
                {"Node": "foobar", "CheckID": "service:redis", "Name": "Service 'redis' check",
                 "Status": "critical", "Output": "", "ServiceID": "redis", "ServiceName": "redis"}
            ]
        }]"#;
        let entries: Vec<ServiceEntry> = serde_json::from_str(text).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].addr(),
            "10.1.10.12:8000",
            "falls back to the node address"
        );
        assert!(!entries[0].is_passing());
        assert!(entries[0].service.tags.is_empty());
    }

    #[test]
    fn encodes_paths_and_durations() {
        assert_eq!(encode_path("a b/c", true), "a%20b/c");
        assert_eq!(encode_path("a/b", false), "a%2Fb");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(next_index(10, 5), 0);
        assert_eq!(next_index(10, 12), 12);
    }
}
