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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub http_listen_address: Option<SocketAddr>,
}

impl FileConfig {
    pub fn load(path: &Path, expand_env: bool) -> Result<Self, lucia_common::config::ConfigError> {
        lucia_common::config::load(path, expand_env)
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
