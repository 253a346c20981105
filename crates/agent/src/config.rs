//! Promtail's configuration file format.
//!
//! Every section rejects unknown fields (with the file, line and field in the
//! error) except `server`, whose many Go-server tunables are accepted and
//! ignored apart from the listen address and port.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use lucia_common::config::ConfigError;
use lucia_common::duration::ConfigDuration;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::stages::StageConfig;
use lucia_common::relabel::RelabelConfig;

/// A Promtail configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub positions: PositionsConfig,
    pub clients: Vec<ClientConfig>,
    pub scrape_configs: Vec<ScrapeConfig>,
    pub target_config: TargetConfig,
    pub limits_config: LimitsConfig,
    /// Accepted and ignored (Promtail's global options).
    pub global: Option<IgnoredAny>,
    pub options: Option<IgnoredAny>,
    pub tracing: Option<IgnoredAny>,
    /// Not used by Lucia (entries are held in memory until acknowledged).
    pub wal: Option<IgnoredAny>,
}

impl Config {
    /// Loads and validates a Promtail configuration file.
    pub fn load(path: &Path, expand_env: bool) -> Result<Self, ConfigError> {
        let config: Config = lucia_common::config::load(path, expand_env)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Parses a Promtail configuration from text (for tests and tools).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = lucia_common::config::parse(path, text)?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        for (i, client) in self.clients.iter().enumerate() {
            if client.url.is_empty() {
                return Err(invalid(format!("clients[{i}]: url is required")));
            }
            if !client.url.starts_with("http://") && !client.url.starts_with("https://") {
                return Err(invalid(format!(
                    "clients[{i}].url: {:?} is not an http(s) URL",
                    client.url
                )));
            }
            if let Some(tls) = &client.tls_config {
                lucia_common::http_client::client_config(tls)
                    .map_err(|e| invalid(format!("clients[{i}].{e}")))?;
            }
        }
        let limits = &self.limits_config;
        if limits.readline_rate_enabled {
            if limits.readline_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
                return Err(invalid(
                    "limits_config.readline_rate: must be greater than 0 lines per second".into(),
                ));
            }
            if limits.readline_burst == Some(0) {
                return Err(invalid(
                    "limits_config.readline_burst: must be at least 1 line".into(),
                ));
            }
        }
        for sc in &self.scrape_configs {
            let unsupported = [
                ("kubernetes_sd_configs", sc.kubernetes_sd_configs.is_some()),
                ("journal", sc.journal.is_some()),
            ];
            for (name, present) in unsupported {
                if present {
                    return Err(invalid(format!(
                        "scrape_configs[{}].{name}: not supported by this version of lucia agent",
                        sc.job_name
                    )));
                }
            }
            crate::stages::Pipeline::new(
                &sc.pipeline_stages,
                &crate::stage_metrics::CustomMetrics::detached(),
            )
            .map_err(|err| invalid(format!("scrape_configs[{}]: {err}", sc.job_name)))?;
            if let Some(syslog) = &sc.syslog
                && syslog
                    .listen_protocol
                    .as_deref()
                    .is_some_and(|p| p != "tcp")
            {
                return Err(invalid(format!(
                    "scrape_configs[{}].syslog: only listen_protocol tcp is supported",
                    sc.job_name
                )));
            }
            for sd in &sc.docker_sd_configs {
                crate::docker::Endpoint::parse(&sd.host)
                    .map_err(|err| invalid(format!("scrape_configs[{}]: {err}", sc.job_name)))?;
            }
            let consul = sc.consul_sd_configs.iter().map(|c| c.validate());
            let consulagent = sc.consulagent_sd_configs.iter().map(|c| c.validate());
            for (field, checks) in [
                ("consul_sd_configs", consul.collect::<Vec<_>>()),
                ("consulagent_sd_configs", consulagent.collect()),
            ] {
                for (i, checked) in checks.into_iter().enumerate() {
                    checked.map_err(|err| {
                        invalid(format!(
                            "scrape_configs[{}].{field}[{i}]: {err}",
                            sc.job_name
                        ))
                    })?;
                }
            }
            for rc in &sc.relabel_configs {
                rc.validate()
                    .map_err(|err| invalid(format!("scrape_configs[{}]: {err}", sc.job_name)))?;
            }
        }
        Ok(())
    }

    /// The HTTP listen address of the `server` block, if it names one.
    pub fn listen_address(&self) -> Option<SocketAddr> {
        let port = self.server.http_listen_port?;
        let ip = self
            .server
            .http_listen_address
            .as_deref()
            .filter(|a| !a.is_empty())
            .and_then(|a| a.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Some(SocketAddr::new(ip, port))
    }
}

/// Promtail's `server` block: the listen address and port are used, every
/// other field is accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    pub http_listen_address: Option<String>,
    pub http_listen_port: Option<u16>,
    pub disable: bool,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PositionsConfig {
    pub filename: PathBuf,
    pub sync_period: ConfigDuration,
    pub ignore_invalid_yaml: bool,
}

impl Default for PositionsConfig {
    fn default() -> Self {
        Self {
            filename: PathBuf::from("/var/log/positions.yaml"),
            sync_period: ConfigDuration::from_secs(10),
            ignore_invalid_yaml: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// How often globs are re-evaluated.
    pub sync_period: ConfigDuration,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            sync_period: ConfigDuration::from_secs(10),
        }
    }
}

/// Promtail's `limits_config` (its defaults: `readline_rate` and
/// `readline_burst` 10000 when `readline_rate_enabled`,
/// `readline_rate_drop` true, `max_streams` 0 = unlimited).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub readline_rate_enabled: bool,
    pub readline_rate: Option<f64>,
    pub readline_burst: Option<u64>,
    pub readline_rate_drop: Option<bool>,
    pub max_streams: Option<u64>,
    pub max_line_size: Option<crate::stages::ByteSize>,
    pub max_line_size_truncate: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    pub url: String,
    pub tenant_id: Option<String>,
    pub batchwait: ConfigDuration,
    pub batchsize: usize,
    pub timeout: ConfigDuration,
    pub backoff_config: BackoffConfig,
    pub external_labels: BTreeMap<String, String>,
    pub basic_auth: Option<BasicAuth>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub headers: BTreeMap<String, String>,
    pub drop_rate_limited_batches: bool,
    /// Promtail's `tls_config` (Prometheus' fields), for https URLs.
    pub tls_config: Option<lucia_common::http_config::TlsConfig>,
    pub proxy_url: Option<String>,
    pub name: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            tenant_id: None,
            batchwait: ConfigDuration::from_secs(1),
            batchsize: 1024 * 1024,
            timeout: ConfigDuration::from_secs(10),
            backoff_config: BackoffConfig::default(),
            external_labels: BTreeMap::new(),
            basic_auth: None,
            bearer_token: None,
            bearer_token_file: None,
            headers: BTreeMap::new(),
            drop_rate_limited_batches: false,
            tls_config: None,
            proxy_url: None,
            name: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    pub min_period: ConfigDuration,
    pub max_period: ConfigDuration,
    pub max_retries: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min_period: ConfigDuration::from_millis(500),
            max_period: ConfigDuration::from_secs(300),
            max_retries: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub pipeline_stages: Vec<StageConfig>,
    pub static_configs: Vec<StaticConfig>,
    pub relabel_configs: Vec<RelabelConfig>,
    pub encoding: Option<String>,
    pub decompression: Option<IgnoredAny>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub docker_sd_configs: Vec<crate::docker::DockerSdConfig>,
    pub consul_sd_configs: Vec<lucia_common::discovery::consul::ConsulSdConfig>,
    pub consulagent_sd_configs: Vec<lucia_common::discovery::consulagent::ConsulAgentSdConfig>,
    pub kubernetes_sd_configs: Option<IgnoredAny>,
    pub journal: Option<IgnoredAny>,
    pub syslog: Option<crate::syslog::SyslogConfig>,
    pub loki_push_api: Option<crate::push_api::PushApiConfig>,
}

/// Prometheus file discovery: files (globs) holding target groups, in
/// YAML or JSON (`.json`), re-read on every target sync.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    pub refresh_interval: Option<ConfigDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}
