//! The config file: one YAML file with a section per role, Loki-style.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lucia_common::consul::ConsulConfig;
use lucia_ingester::limits::LimitsConfig;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: ServerSection,
    /// Require X-Scope-OrgID (multi-tenancy).
    pub auth_enabled: bool,
    pub data_dir: Option<PathBuf>,
    pub consul: Option<ConsulConfig>,
    pub limits_config: LimitsConfig,
    pub storage: lucia_ingester::ingester::StorageConfig,
    pub distributor: lucia_ingester::distributor::Config,
    pub ingester: lucia_ingester::ingester::Config,
    pub querier: lucia_querier::Config,
    pub tsdb: lucia_tsdb::Config,
    pub ruler: lucia_ruler::Config,
    pub alert_router: lucia_alert_router::Config,
    pub gateway: lucia_gateway::Config,
    // Prometheus' sections: a Prometheus configuration file is a valid
    // Lucia config file; tsdb scrapes what `scrape_configs` lists.
    pub global: lucia_tsdb::scrape::config::GlobalConfig,
    pub scrape_configs: Option<Vec<lucia_tsdb::scrape::config::ScrapeConfig>>,
    pub alerting: Option<serde::de::IgnoredAny>,
    pub rule_files: Option<serde::de::IgnoredAny>,
    pub remote_write: Option<serde::de::IgnoredAny>,
    pub remote_read: Option<serde::de::IgnoredAny>,
    pub tracing: Option<serde::de::IgnoredAny>,
    /// Set by [`FileConfig::load`]: relative paths in scrape configs are
    /// resolved against the file's directory.
    #[serde(skip)]
    pub directory: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub http_listen_address: Option<SocketAddr>,
}

impl FileConfig {
    pub fn load(path: &Path, expand_env: bool) -> Result<Self, lucia_common::config::ConfigError> {
        let mut config: Self = lucia_common::config::load(path, expand_env)?;
        config.directory = path.parent().map(Path::to_path_buf);
        Ok(config)
    }

    /// The scrape setup: the file's `scrape_configs`, or, for `lucia all`
    /// without them, the process itself.
    pub fn scrape_setup(&self, all: bool) -> anyhow::Result<lucia_tsdb::ScrapeSetup> {
        let Some(scrape_configs) = &self.scrape_configs else {
            return Ok(if all {
                lucia_tsdb::ScrapeSetup::Itself
            } else {
                lucia_tsdb::ScrapeSetup::Nothing
            });
        };
        let mut config = lucia_tsdb::scrape::config::ScrapeFileConfig::new(
            self.global.clone(),
            scrape_configs.clone(),
        );
        if let Some(dir) = &self.directory {
            config.set_directory(dir);
        }
        config.validate()?;
        Ok(lucia_tsdb::ScrapeSetup::Config(Box::new(config)))
    }

    pub fn distributor(&self) -> lucia_ingester::distributor::Config {
        let mut config = self.distributor.clone();
        config.limits = self.limits_config.clone();
        config
    }

    pub fn ingester(&self) -> lucia_ingester::ingester::Config {
        let mut config = self.ingester.clone();
        config.limits = self.limits_config.clone();
        config.storage = self.storage.clone();
        config
    }

    /// The alert-router in `lucia all`: under `/alertmanager` unless the
    /// section says otherwise, so that its `/-/` routes stay apart from
    /// the other roles' (as in Mimir).
    pub fn alert_router_all(&self) -> lucia_alert_router::Config {
        let mut config = self.alert_router.clone();
        if config.route_prefix.is_none() && config.external_url.is_none() {
            config.route_prefix = Some("/alertmanager".to_string());
        }
        config
    }

    pub fn querier(&self) -> lucia_querier::Config {
        let mut config = self.querier.clone();
        config.storage = self.storage.clone();
        config
    }
}
