//! Recording and alerting rules over PromQL and LogQL: the `ruler` role.
//!
//! - [`rulefile`]: Prometheus' rule file format (plus `type: logql`);
//! - [`group`]: evaluation, the alert state machine, for-state restore;
//! - [`template`]: alert templates with Prometheus' functions;
//! - [`remote`]: queries (tsdb, querier), remote write, Alertmanager API v2;
//! - [`manager`]: the evaluation loop and the Loki ruler API's storage;
//! - [`api`]: `/api/v1/rules`, `/api/v1/alerts` and Loki's ruler API;
//! - [`unittest`]: `lucia rules test` and `lucia rules check`.

pub mod api;
pub mod group;
pub mod manager;
pub mod remote;
pub mod rulefile;
pub mod template;
pub mod unittest;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use serde::Deserialize;

/// A label set.
pub type Labels = BTreeMap<String, String>;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Vector(Vec<Sample>),
    Scalar(f64),
    String(String),
    /// Series with their (ms, value) points.
    Matrix(Vec<(Labels, Vec<(i64, f64)>)>),
}

/// The role's configuration (the `ruler` section of the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Globs of Prometheus rule files (tenant `fake`).
    pub rule_files: Vec<String>,
    /// How often groups without an `interval` are evaluated (1m).
    pub evaluation_interval: ConfigDuration,
    /// Labels added to alerts sent to Alertmanager (where they lack them)
    /// and available to templates as `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// The URL alerts link back to (`generatorURL`, `$externalURL`).
    pub external_url: Option<String>,
    /// The Prometheus HTTP API and remote write of tsdb [default: Consul's
    /// `lucia-tsdb`, or this process in `lucia all`].
    pub tsdb_url: Option<String>,
    /// The Loki HTTP API of the querier [default: Consul's `lucia-querier`,
    /// or this process in `lucia all`].
    pub querier_url: Option<String>,
    /// Alertmanager API v2 base URLs [default: Consul's `lucia-alert-router`
    /// instances].
    pub alertmanager_urls: Vec<String>,
    /// Where the Loki ruler API keeps rule groups [default: `<data.dir>/rules`].
    pub rule_path: Option<PathBuf>,
    /// Alerts are re-sent this often while active (1m, Prometheus'
    /// `--rules.alert.resend-delay`).
    pub resend_delay: ConfigDuration,
    /// `--rules.alert.for-outage-tolerance` (1h).
    pub for_outage_tolerance: ConfigDuration,
    /// `--rules.alert.for-grace-period` (10m).
    pub for_grace_period: ConfigDuration,
    /// Timeout of one query or write (2m).
    pub query_timeout: ConfigDuration,
    /// Timeout of one Alertmanager request (10s).
    pub notification_timeout: ConfigDuration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rule_files: Vec::new(),
            evaluation_interval: ConfigDuration::from_secs(60),
            external_labels: BTreeMap::new(),
            external_url: None,
            tsdb_url: None,
            querier_url: None,
            alertmanager_urls: Vec::new(),
            rule_path: None,
            resend_delay: ConfigDuration::from_secs(60),
            for_outage_tolerance: ConfigDuration::from_secs(3600),
            for_grace_period: ConfigDuration::from_secs(600),
            query_timeout: ConfigDuration::from_secs(120),
            notification_timeout: ConfigDuration::from_secs(10),
        }
    }
}

impl Config {
    /// Points every unset URL at `addr` (`lucia all`: every role on one
    /// listener; the alert-router under `/alertmanager`).
    pub fn default_to_local(&mut self, addr: std::net::SocketAddr) {
        let base = format!("http://{addr}");
        self.tsdb_url.get_or_insert_with(|| base.clone());
        self.querier_url.get_or_insert_with(|| base.clone());
        if self.alertmanager_urls.is_empty() {
            self.alertmanager_urls.push(format!("{base}/alertmanager"));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Rules(Vec<rulefile::RuleError>),
    #[error("invalid ruler config: {0}")]
    Config(String),
}

/// Starts the role on the process's shared listener.
pub async fn start(config: Config, ctx: RoleContext) -> Result<Role, Error> {
    let ready = ctx.readiness.register("ruler");
    let endpoints = Arc::new(remote::Endpoints::default());
    if let Some(url) = &config.tsdb_url {
        *endpoints.tsdb.write() = vec![url.clone()];
    }
    if let Some(url) = &config.querier_url {
        *endpoints.querier.write() = vec![url.clone()];
    }
    *endpoints.alertmanagers.write() = config.alertmanager_urls.clone();
    let external_url = config
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", ctx.advertise_addr))
        .trim_end_matches('/')
        .to_string();
    *endpoints.external_url.write() = external_url.clone();
    if let Some(consul) = &ctx.consul {
        if config.tsdb_url.is_none() {
            remote::discover(
                consul,
                "lucia-tsdb",
                endpoints.clone(),
                |e| &e.tsdb,
                ctx.shutdown.clone(),
            );
        }
        if config.querier_url.is_none() {
            remote::discover(
                consul,
                "lucia-querier",
                endpoints.clone(),
                |e| &e.querier,
                ctx.shutdown.clone(),
            );
        }
        if config.alertmanager_urls.is_empty() {
            remote::discover(
                consul,
                "lucia-alert-router",
                endpoints.clone(),
                |e| &e.alertmanagers,
                ctx.shutdown.clone(),
            );
        }
    }
    let http = remote::Http::new(endpoints, config.query_timeout.0).map_err(Error::Config)?;
    let metrics = remote::NotifierMetrics::default();
    metrics.register(&ctx.metrics);
    let notifier = remote::Notifier::start(
        http.clone(),
        config.external_labels.clone(),
        config.notification_timeout.0,
        metrics,
        ctx.shutdown.clone(),
    );
    let settings = manager::Settings {
        evaluation_interval: config
            .evaluation_interval
            .0
            .max(std::time::Duration::from_millis(1)),
        external_labels: config.external_labels.clone(),
        external_url,
        resend_delay: config.resend_delay.0,
        outage_tolerance: config.for_outage_tolerance.0,
        grace_period: config.for_grace_period.0,
        rules_dir: config
            .rule_path
            .clone()
            .unwrap_or_else(|| ctx.data_dir.join("rules")),
    };
    std::fs::create_dir_all(&settings.rules_dir)?;
    let manager = manager::Manager::new(settings, http, notifier, ctx.shutdown.clone());
    manager.load_files(&config.rule_files)?;
    manager.sync().await;
    let router = api::router(api::ApiState {
        manager: manager.clone(),
        multi_tenant: ctx.multi_tenant,
    });
    ready.set(true);
    let shutdown = ctx.shutdown.clone();
    let stopped = async move {
        shutdown.cancelled().await;
        manager.stop().await;
    };
    Ok(Role::new("ruler", router, stopped))
}

/// Runs the role on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}
