//! The `global` and `scrape_configs` sections of a Prometheus configuration
//! file, read unchanged (Prometheus' field names and defaults).
//!
//! [`ScrapeFileConfig`] is a whole Prometheus file: the sections scraping
//! does not use (`alerting`, `rule_files`, `remote_write`, …) are accepted
//! and ignored. [`GlobalConfig`] and [`ScrapeConfig`] are plain structs so
//! that Lucia's own config file can embed them as top-level keys.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub use lucia_common::discovery::consul::ConsulSdConfig;
use lucia_common::duration::{ConfigDuration, format_prometheus_duration};
use lucia_common::http_config::join_dir;
pub use lucia_common::http_config::{Authorization, BasicAuth, HttpClientConfig, TlsConfig};
use lucia_common::labels::is_valid_label_name;
use lucia_common::relabel::RelabelConfig;
use lucia_common::with_http_client_fields;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

use super::ScrapeError;

/// A Prometheus configuration file, of which scraping reads `global` and
/// `scrape_configs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeFileConfig {
    #[serde(default)]
    pub global: GlobalConfig,
    #[serde(default, deserialize_with = "null_default")]
    pub scrape_configs: Vec<ScrapeConfig>,
    // Sections of a Prometheus file that scraping does not use.
    #[serde(default, skip_serializing)]
    pub alerting: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub rule_files: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub remote_write: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub remote_read: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub storage: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub tracing: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub otlp: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    pub runtime: Option<IgnoredAny>,
    /// Not supported: rejected by [`ScrapeFileConfig::validate`].
    #[serde(default)]
    pub scrape_config_files: Vec<String>,
}

impl ScrapeFileConfig {
    /// A config of just these two sections (what Lucia's own file embeds).
    pub fn new(global: GlobalConfig, scrape_configs: Vec<ScrapeConfig>) -> Self {
        Self {
            global,
            scrape_configs,
            ..Default::default()
        }
    }

    /// Reads a Prometheus configuration file; relative paths in it are
    /// resolved against the file's directory, as Prometheus does.
    pub fn load(path: &Path, expand_env: bool) -> Result<Self, ScrapeError> {
        let mut config: Self = lucia_common::config::load(path, expand_env)?;
        if let Some(dir) = path.parent() {
            config.set_directory(dir);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses YAML text (no path resolution).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ScrapeError> {
        let config: Self = lucia_common::config::parse(path, text)?;
        config.validate()?;
        Ok(config)
    }

    /// Makes relative file paths (file SD patterns, password and token
    /// files) relative to `dir`.
    pub fn set_directory(&mut self, dir: &Path) {
        for sc in &mut self.scrape_configs {
            sc.set_directory(dir);
        }
    }

    /// Checks everything Prometheus checks when it loads the file.
    pub fn validate(&self) -> Result<(), ScrapeError> {
        self.pools().map(|_| ())
    }

    /// The resolved config of every scrape pool (globals applied).
    pub fn pools(&self) -> Result<Vec<PoolConfig>, ScrapeError> {
        if !self.scrape_config_files.is_empty() {
            return Err(ScrapeError::Config(
                "scrape_config_files is not supported: put the scrape configs under scrape_configs"
                    .into(),
            ));
        }
        self.global.validate()?;
        let mut seen = std::collections::HashSet::new();
        let mut pools = Vec::with_capacity(self.scrape_configs.len());
        for sc in &self.scrape_configs {
            if !seen.insert(sc.job_name.clone()) {
                return Err(ScrapeError::Config(format!(
                    "found multiple scrape configs with job name {:?}: job names must be unique",
                    sc.job_name
                )));
            }
            pools.push(sc.resolve(&self.global)?);
        }
        Ok(pools)
    }
}

/// Prometheus' `global` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    pub scrape_interval: ConfigDuration,
    pub scrape_timeout: Option<ConfigDuration>,
    pub scrape_protocols: Option<Vec<ScrapeProtocol>>,
    pub evaluation_interval: ConfigDuration,
    pub rule_query_offset: Option<ConfigDuration>,
    #[serde(deserialize_with = "null_default")]
    pub external_labels: BTreeMap<String, String>,
    pub query_log_file: Option<String>,
    pub scrape_failure_log_file: Option<String>,
    pub body_size_limit: ByteSize,
    pub sample_limit: u64,
    pub target_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    pub keep_dropped_targets: u64,
    pub metric_name_validation_scheme: Option<String>,
    pub metric_name_escaping_scheme: Option<String>,
    pub scrape_native_histograms: Option<bool>,
    pub convert_classic_histograms_to_nhcb: Option<bool>,
    pub always_scrape_classic_histograms: Option<bool>,
    pub extra_scrape_metrics: Option<bool>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            scrape_interval: ConfigDuration::from_secs(60),
            scrape_timeout: None,
            scrape_protocols: None,
            evaluation_interval: ConfigDuration::from_secs(60),
            rule_query_offset: None,
            external_labels: BTreeMap::new(),
            query_log_file: None,
            scrape_failure_log_file: None,
            body_size_limit: ByteSize(0),
            sample_limit: 0,
            target_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            keep_dropped_targets: 0,
            metric_name_validation_scheme: None,
            metric_name_escaping_scheme: None,
            scrape_native_histograms: None,
            convert_classic_histograms_to_nhcb: None,
            always_scrape_classic_histograms: None,
            extra_scrape_metrics: None,
        }
    }
}

const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

impl GlobalConfig {
    /// The effective global scrape timeout: 10s, or the interval if shorter.
    pub fn effective_scrape_timeout(&self) -> Duration {
        match self.scrape_timeout {
            Some(t) if !t.0.is_zero() => t.0,
            _ => DEFAULT_SCRAPE_TIMEOUT.min(self.scrape_interval.0),
        }
    }

    fn validate(&self) -> Result<(), ScrapeError> {
        let fail = |m: String| Err(ScrapeError::Config(format!("global: {m}")));
        if self.scrape_interval.0.is_zero() {
            return fail("scrape_interval must be greater than 0".into());
        }
        if let Some(t) = self.scrape_timeout
            && t.0 > self.scrape_interval.0
        {
            return fail("global scrape timeout greater than scrape interval".into());
        }
        for name in self.external_labels.keys() {
            if !is_valid_label_name(name) {
                return fail(format!(
                    "{name:?} is not a valid label name in external_labels"
                ));
            }
        }
        if let Some(protocols) = &self.scrape_protocols {
            check_protocols(protocols).or_else(fail)?;
        }
        check_validation_scheme(self.metric_name_validation_scheme.as_deref()).or_else(fail)?;
        Ok(())
    }
}

with_http_client_fields! {
/// One entry of `scrape_configs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default = "yes")]
    pub honor_timestamps: bool,
    #[serde(default)]
    pub track_timestamps_staleness: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub scrape_interval: Option<ConfigDuration>,
    #[serde(default)]
    pub scrape_timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub scrape_protocols: Option<Vec<ScrapeProtocol>>,
    #[serde(default)]
    pub fallback_scrape_protocol: Option<ScrapeProtocol>,
    #[serde(default)]
    pub scrape_native_histograms: Option<bool>,
    #[serde(default)]
    pub always_scrape_classic_histograms: Option<bool>,
    #[serde(default)]
    pub convert_classic_histograms_to_nhcb: Option<bool>,
    #[serde(default)]
    pub scrape_failure_log_file: Option<String>,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default = "yes")]
    pub enable_compression: bool,
    #[serde(default)]
    pub body_size_limit: ByteSize,
    #[serde(default)]
    pub sample_limit: u64,
    #[serde(default)]
    pub target_limit: u64,
    #[serde(default)]
    pub label_limit: u64,
    #[serde(default)]
    pub label_name_length_limit: u64,
    #[serde(default)]
    pub label_value_length_limit: u64,
    #[serde(default)]
    pub native_histogram_bucket_limit: u64,
    #[serde(default)]
    pub native_histogram_min_bucket_factor: f64,
    #[serde(default)]
    pub keep_dropped_targets: u64,
    #[serde(default)]
    pub metric_name_validation_scheme: Option<String>,
    #[serde(default)]
    pub metric_name_escaping_scheme: Option<String>,
    #[serde(default)]
    pub extra_scrape_metrics: Option<bool>,

    // Service discovery.
    #[serde(default, deserialize_with = "null_default")]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default, deserialize_with = "null_default")]
    pub file_sd_configs: Vec<FileSdConfig>,
    #[serde(default, deserialize_with = "null_default")]
    pub consul_sd_configs: Vec<ConsulSdConfig>,

    #[serde(default, deserialize_with = "null_default")]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(default, deserialize_with = "null_default")]
    pub metric_relabel_configs: Vec<RelabelConfig>,
}
}

fn yes() -> bool {
    true
}
fn default_metrics_path() -> String {
    "/metrics".into()
}
fn default_scheme() -> String {
    "http".into()
}

impl ScrapeConfig {
    /// A config for `job_name` with every other field at its default.
    pub fn new(job_name: impl Into<String>) -> Self {
        let job_name: String = job_name.into();
        #[allow(clippy::expect_used)]
        serde_json::from_value(serde_json::json!({ "job_name": job_name }))
            .expect("a scrape config of just a job name deserializes")
    }

    pub fn set_directory(&mut self, dir: &Path) {
        for fsd in &mut self.file_sd_configs {
            for pattern in &mut fsd.files {
                *pattern = join_dir(dir, pattern);
            }
        }
        self.set_http_directory(dir);
        for consul in &mut self.consul_sd_configs {
            consul.set_http_directory(dir);
        }
    }

    /// Applies the globals and checks the job as Prometheus does.
    pub fn resolve(&self, global: &GlobalConfig) -> Result<PoolConfig, ScrapeError> {
        let job = &self.job_name;
        let err = |m: String| ScrapeError::Config(format!("scrape config {job:?}: {m}"));
        if job.is_empty() {
            return Err(ScrapeError::Config("job_name is empty".into()));
        }
        let interval = match self.scrape_interval {
            Some(i) if !i.0.is_zero() => i.0,
            _ => global.scrape_interval.0,
        };
        if let Some(t) = self.scrape_timeout
            && t.0 > interval
        {
            return Err(err(format!(
                "scrape timeout greater than scrape interval for scrape config with job name {job:?}"
            )));
        }
        let timeout = match self.scrape_timeout {
            Some(t) if !t.0.is_zero() => t.0,
            _ => global.effective_scrape_timeout().min(interval),
        };
        match self.scheme.as_str() {
            "http" | "https" => {}
            other => {
                return Err(err(format!("unknown scheme {other:?}: use http or https")));
            }
        }
        if !self.metrics_path.starts_with('/') {
            return Err(err(format!(
                "metrics_path {:?} must start with /",
                self.metrics_path
            )));
        }
        if let Some(protocols) = &self.scrape_protocols {
            check_protocols(protocols).map_err(err)?;
        }
        if let Some(fallback) = self.fallback_scrape_protocol
            && fallback == ScrapeProtocol::PrometheusProto
        {
            return Err(err(
                "fallback_scrape_protocol PrometheusProto is not supported".into(),
            ));
        }
        check_validation_scheme(self.metric_name_validation_scheme.as_deref()).map_err(err)?;
        for (i, rc) in self.relabel_configs.iter().enumerate() {
            rc.validate()
                .map_err(|e| err(format!("relabel_configs[{i}]: {e}")))?;
        }
        for (i, rc) in self.metric_relabel_configs.iter().enumerate() {
            rc.validate()
                .map_err(|e| err(format!("metric_relabel_configs[{i}]: {e}")))?;
        }
        for (i, sc) in self.static_configs.iter().enumerate() {
            for name in sc.labels.keys() {
                if !is_valid_label_name(name) {
                    return Err(err(format!(
                        "static_configs[{i}]: {name:?} is not a valid label name"
                    )));
                }
            }
            // Prometheus: URLs are not allowed as targets without relabeling.
            if self.relabel_configs.is_empty() {
                for t in &sc.targets {
                    if t.contains('/') {
                        return Err(err(format!(
                            "{t:?} is not a valid hostname: \"host:port\" without a scheme or path, or add relabel_configs"
                        )));
                    }
                }
            }
        }
        for (i, fsd) in self.file_sd_configs.iter().enumerate() {
            fsd.validate()
                .map_err(|e| err(format!("file_sd_configs[{i}]: {e}")))?;
        }
        for (i, csd) in self.consul_sd_configs.iter().enumerate() {
            csd.validate()
                .map_err(|e| err(format!("consul_sd_configs[{i}]: {e}")))?;
        }
        self.http().validate(job).map_err(err)?;
        let pick = |own: u64, global: u64| if own == 0 { global } else { own };
        let protocols = self
            .scrape_protocols
            .clone()
            .or_else(|| global.scrape_protocols.clone())
            .unwrap_or_else(|| ScrapeProtocol::DEFAULT.to_vec());
        Ok(PoolConfig {
            job_name: job.clone(),
            interval,
            timeout,
            accept_header: accept_header(&protocols),
            body_size_limit: pick(self.body_size_limit.0, global.body_size_limit.0),
            sample_limit: pick(self.sample_limit, global.sample_limit),
            target_limit: pick(self.target_limit, global.target_limit),
            label_limits: LabelLimits {
                label_limit: pick(self.label_limit, global.label_limit),
                name_length: pick(self.label_name_length_limit, global.label_name_length_limit),
                value_length: pick(
                    self.label_value_length_limit,
                    global.label_value_length_limit,
                ),
            },
            keep_dropped_targets: pick(self.keep_dropped_targets, global.keep_dropped_targets),
            fallback_protocol: self.fallback_scrape_protocol,
            scrape: self.clone(),
        })
    }
}

/// A scrape config with the globals applied: what a scrape pool runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub job_name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub accept_header: String,
    /// Bytes, 0 for no limit.
    pub body_size_limit: u64,
    pub sample_limit: u64,
    pub target_limit: u64,
    pub label_limits: LabelLimits,
    pub keep_dropped_targets: u64,
    pub fallback_protocol: Option<ScrapeProtocol>,
    /// The job's config as written.
    pub scrape: ScrapeConfig,
}

impl PoolConfig {
    /// A fingerprint of everything that affects the pool: two configs with
    /// the same fingerprint run the same way.
    pub fn fingerprint(&self) -> String {
        format!("{self:?}")
    }

    /// A fingerprint of the service discovery part only.
    pub fn discovery_fingerprint(&self) -> String {
        format!(
            "{:?}{:?}{:?}",
            self.scrape.static_configs, self.scrape.file_sd_configs, self.scrape.consul_sd_configs
        )
    }

    pub fn interval_string(&self) -> String {
        format_prometheus_duration(self.interval)
    }

    pub fn timeout_string(&self) -> String {
        format_prometheus_duration(self.timeout)
    }
}

/// `label_limit`, `label_name_length_limit`, `label_value_length_limit`
/// (0 means no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelLimits {
    pub label_limit: u64,
    pub name_length: u64,
    pub value_length: u64,
}

/// The exposition formats Prometheus can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScrapeProtocol {
    PrometheusProto,
    PrometheusText004,
    PrometheusText100,
    OpenMetricsText001,
    OpenMetricsText100,
}

impl ScrapeProtocol {
    /// Prometheus' `DefaultScrapeProtocols`, in order of preference.
    pub const DEFAULT: [ScrapeProtocol; 4] = [
        ScrapeProtocol::OpenMetricsText100,
        ScrapeProtocol::OpenMetricsText001,
        ScrapeProtocol::PrometheusText100,
        ScrapeProtocol::PrometheusText004,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScrapeProtocol::PrometheusProto => "PrometheusProto",
            ScrapeProtocol::PrometheusText004 => "PrometheusText0.0.4",
            ScrapeProtocol::PrometheusText100 => "PrometheusText1.0.0",
            ScrapeProtocol::OpenMetricsText001 => "OpenMetricsText0.0.1",
            ScrapeProtocol::OpenMetricsText100 => "OpenMetricsText1.0.0",
        }
    }

    fn header(self) -> &'static str {
        match self {
            ScrapeProtocol::PrometheusProto => {
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
            }
            ScrapeProtocol::PrometheusText004 => "text/plain;version=0.0.4",
            ScrapeProtocol::PrometheusText100 => "text/plain;version=1.0.0",
            ScrapeProtocol::OpenMetricsText001 => "application/openmetrics-text;version=0.0.1",
            ScrapeProtocol::OpenMetricsText100 => "application/openmetrics-text;version=1.0.0",
        }
    }

    /// Whether the body is OpenMetrics text (else Prometheus text).
    pub fn is_openmetrics(self) -> bool {
        matches!(
            self,
            ScrapeProtocol::OpenMetricsText001 | ScrapeProtocol::OpenMetricsText100
        )
    }
}

impl<'de> Deserialize<'de> for ScrapeProtocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        [
            ScrapeProtocol::PrometheusProto,
            ScrapeProtocol::PrometheusText004,
            ScrapeProtocol::PrometheusText100,
            ScrapeProtocol::OpenMetricsText001,
            ScrapeProtocol::OpenMetricsText100,
        ]
        .into_iter()
        .find(|p| p.name() == text)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown scrape protocol {text}, supported: [OpenMetricsText0.0.1 \
                 OpenMetricsText1.0.0 PrometheusProto PrometheusText0.0.4 PrometheusText1.0.0]"
            ))
        })
    }
}

fn check_protocols(protocols: &[ScrapeProtocol]) -> Result<(), String> {
    if protocols.is_empty() {
        return Err("scrape_protocols cannot be empty".into());
    }
    if protocols.contains(&ScrapeProtocol::PrometheusProto) {
        return Err(
            "scrape protocol PrometheusProto is not supported: use the text formats (OpenMetricsText1.0.0, PrometheusText0.0.4, …)"
                .into(),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for p in protocols {
        if !seen.insert(*p) {
            return Err(format!(
                "duplicated protocol in scrape_protocols, got {protocols:?}"
            ));
        }
    }
    Ok(())
}

fn check_validation_scheme(scheme: Option<&str>) -> Result<(), String> {
    match scheme {
        None | Some("") | Some("legacy") => Ok(()),
        Some("utf8") => {
            tracing::warn!(
                "metric_name_validation_scheme utf8: Lucia accepts legacy metric and label names only; targets are asked to escape names with underscores"
            );
            Ok(())
        }
        Some(other) => Err(format!(
            "unknown metric_name_validation_scheme {other:?}: use legacy or utf8"
        )),
    }
}

/// Prometheus' `Accept` header for these protocols (`acceptHeader` in
/// scrape.go), with underscore escaping since Lucia keeps legacy names.
pub fn accept_header(protocols: &[ScrapeProtocol]) -> String {
    let mut weight = 6; // len(ScrapeProtocolsHeaders) + 1
    let mut values = Vec::with_capacity(protocols.len() + 1);
    for p in protocols {
        let mut value = p.header().to_string();
        if matches!(
            p,
            ScrapeProtocol::PrometheusText100 | ScrapeProtocol::OpenMetricsText100
        ) {
            value.push_str(";escaping=underscores");
        }
        value.push_str(&format!(";q=0.{weight}"));
        values.push(value);
        weight -= 1;
    }
    values.push(format!("*/*;q=0.{weight}"));
    values.join(",")
}

/// `static_configs` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub targets: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
}

/// `file_sd_configs` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    #[serde(default = "default_file_refresh")]
    pub refresh_interval: ConfigDuration,
}

fn default_file_refresh() -> ConfigDuration {
    ConfigDuration::from_secs(300)
}

impl FileSdConfig {
    fn validate(&self) -> Result<(), String> {
        if self.files.is_empty() {
            return Err("file service discovery config must contain at least one path name".into());
        }
        for pattern in &self.files {
            let valid_ext = [".json", ".yml", ".yaml", ".JSON", ".YML", ".YAML"]
                .iter()
                .any(|ext| pattern.ends_with(ext));
            let (dir, last) = match pattern.rsplit_once('/') {
                Some((dir, last)) => (dir, last),
                None => ("", pattern.as_str()),
            };
            if !valid_ext || dir.contains('*') || last.matches('*').count() > 1 {
                return Err(format!(
                    "path name {pattern:?} is not valid for file discovery: it must end in .json, .yml or .yaml, and only its last component may hold one *"
                ));
            }
        }
        Ok(())
    }
}

/// A size in bytes: a number, or a number with a unit (`B`, `KB`, `KiB`,
/// `MB`, `MiB`, `GB`, `GiB`, `TB`, `TiB`; all base 2, as Prometheus'
/// `Base2Bytes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("invalid size {text:?}: expected e.g. 10MB"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "KiB" | "K" => 1 << 10,
            "MB" | "MiB" | "M" => 1 << 20,
            "GB" | "GiB" | "G" => 1 << 30,
            "TB" | "TiB" | "T" => 1 << 40,
            other => return Err(format!("invalid size {text:?}: unknown unit {other:?}")),
        };
        number
            .checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {text:?}: too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// YAML `null` (a key with no value) is the default, as in Go.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ScrapeFileConfig, String> {
        ScrapeFileConfig::parse(Path::new("prometheus.yml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn prometheus_file_with_every_section() {
        let config = parse(
            r#"
global:
  scrape_interval: 15s
  evaluation_interval: 30s
  external_labels: {cluster: dante}
alerting:
  alertmanagers:
    - static_configs: [{targets: ['am:9093']}]
rule_files: [rules/*.yml]
remote_write:
  - url: http://x/api/v1/write
storage:
  tsdb: {out_of_order_time_window: 10m}
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['localhost:9090']
        labels: {env: prod}
  - job_name: node
    scrape_interval: 5s
    scrape_timeout: 2s
    metrics_path: /m
    params: {module: [a, b]}
    honor_labels: true
    honor_timestamps: false
    sample_limit: 100
    label_limit: 10
    basic_auth: {username: u, password: p}
    tls_config: {insecure_skip_verify: true}
    file_sd_configs:
      - files: ['targets/*.json']
        refresh_interval: 1m
    consul_sd_configs:
      - server: consul:8500
        services: [api]
        tags: [metrics]
        node_meta: {rack: a}
        token: secret
    relabel_configs:
      - source_labels: [__meta_consul_service]
        target_label: service
    metric_relabel_configs:
      - regex: go_.*
        source_labels: [__name__]
        action: drop
"#,
        )
        .unwrap();
        let pools = config.pools().unwrap();
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].interval, Duration::from_secs(15));
        assert_eq!(pools[0].timeout, Duration::from_secs(10));
        assert_eq!(pools[1].interval, Duration::from_secs(5));
        assert_eq!(pools[1].timeout, Duration::from_secs(2));
        assert_eq!(pools[1].interval_string(), "5s");
        assert_eq!(pools[1].sample_limit, 100);
        assert!(pools[1].scrape.honor_labels);
        assert!(!pools[1].scrape.honor_timestamps);
        assert!(pools[0].scrape.honor_timestamps);
        assert_eq!(pools[1].scrape.params["module"], vec!["a", "b"]);
        let consul = &pools[1].scrape.consul_sd_configs[0];
        assert!(consul.allow_stale);
        assert_eq!(consul.tag_separator, ",");
        assert_eq!(consul.refresh_interval, ConfigDuration::from_secs(30));
        assert_eq!(
            pools[1]
                .scrape
                .http()
                .authorization_header()
                .unwrap()
                .unwrap(),
            "Basic dTpw"
        );
        assert_eq!(config.global.external_labels["cluster"], "dante");
    }

    #[test]
    fn defaults() {
        let config = parse("scrape_configs:\n  - job_name: a\n").unwrap();
        let pool = &config.pools().unwrap()[0];
        assert_eq!(pool.interval, Duration::from_secs(60));
        assert_eq!(pool.timeout, Duration::from_secs(10));
        assert_eq!(pool.scrape.metrics_path, "/metrics");
        assert_eq!(pool.scrape.scheme, "http");
        assert!(pool.scrape.enable_compression);
        // A global interval shorter than 10s bounds the timeout.
        let config =
            parse("global: {scrape_interval: 5s}\nscrape_configs:\n  - job_name: a\n").unwrap();
        assert_eq!(config.pools().unwrap()[0].timeout, Duration::from_secs(5));
        let empty = parse("").unwrap();
        assert!(empty.scrape_configs.is_empty());
    }

    #[test]
    fn accept_header_is_prometheus() {
        assert_eq!(
            accept_header(&ScrapeProtocol::DEFAULT),
            "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,\
             application/openmetrics-text;version=0.0.1;q=0.5,\
             text/plain;version=1.0.0;escaping=underscores;q=0.4,\
             text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        );
    }

    #[test]
    fn errors_say_what_to_fix() {
        let err = parse("scrape_configs:\n  - job_name: a\n    scrape_intervl: 5s\n").unwrap_err();
        assert!(
            err.contains("scrape_intervl") && err.contains("line 3"),
            "{err}"
        );
        let err = parse(
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n",
        )
        .unwrap_err();
        assert!(
            err.contains("scrape timeout greater than scrape interval"),
            "{err}"
        );
        let err = parse("scrape_configs:\n  - job_name: a\n  - job_name: a\n").unwrap_err();
        assert!(err.contains("multiple scrape configs"), "{err}");
        let err = parse(
            "scrape_configs:\n  - job_name: a\n    static_configs: [{targets: ['http://x:1/m']}]\n",
        )
        .unwrap_err();
        assert!(err.contains("not a valid hostname"), "{err}");
        let err = parse(
            "scrape_configs:\n  - job_name: a\n    relabel_configs: [{action: hashmod, target_label: x}]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("relabel_configs[0]") && err.contains("modulus"),
            "{err}"
        );
        let err =
            parse("scrape_configs:\n  - job_name: a\n    file_sd_configs: [{files: [x.txt]}]\n")
                .unwrap_err();
        assert!(err.contains("not valid for file discovery"), "{err}");
        let err =
            parse("scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs: []\n").unwrap_err();
        assert!(err.contains("kubernetes_sd_configs"), "{err}");
        let err =
            parse("scrape_configs:\n  - job_name: a\n    scrape_protocols: [PrometheusProto]\n")
                .unwrap_err();
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn constructors_take_the_defaults() {
        let sc = ScrapeConfig::new("job");
        assert_eq!(sc.job_name, "job");
        assert!(sc.honor_timestamps && sc.enable_compression);
        assert_eq!(sc.metrics_path, "/metrics");
        let consul = ConsulSdConfig::new("consul:8500");
        assert!(consul.allow_stale);
        assert_eq!(consul.refresh_interval, ConfigDuration::from_secs(30));
        let file = ScrapeFileConfig::new(GlobalConfig::default(), vec![sc]);
        assert_eq!(file.pools().unwrap()[0].interval, Duration::from_secs(60));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("0").unwrap().0, 0);
        assert_eq!(ByteSize::parse("1KB").unwrap().0, 1024);
        assert_eq!(ByteSize::parse("10MiB").unwrap().0, 10 << 20);
        assert!(ByteSize::parse("10 parsecs").is_err());
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let mut config = parse(
            "scrape_configs:\n  - job_name: a\n    bearer_token_file: tok\n    file_sd_configs: [{files: ['sd/*.yml', '/abs/x.json']}]\n",
        )
        .unwrap();
        config.set_directory(Path::new("/etc/prometheus"));
        let sc = &config.scrape_configs[0];
        assert_eq!(
            sc.file_sd_configs[0].files,
            vec!["/etc/prometheus/sd/*.yml", "/abs/x.json"]
        );
        assert_eq!(sc.bearer_token_file.as_deref(), Some("/etc/prometheus/tok"));
    }
}
