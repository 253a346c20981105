//! The `gateway` section of the config file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lucia_common::duration::ConfigDuration;
use serde::Deserialize;

/// The role's configuration (the `gateway` section of the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Static backends per role; a role without any is looked up in Consul.
    pub backends: BackendsConfig,
    /// Users, tokens and the anonymous tenant.
    pub auth: AuthConfig,
    /// A second path prefix for the Alertmanager API v2 besides `/api/v2`,
    /// e.g. `/alertmanager` (Mimir's and Cortex's layout). Empty: only
    /// `/api/v2`. Off by default: Grafana's Alertmanager datasource rejects
    /// an address that answers under both (see the README).
    pub alertmanager_prefix: String,
    /// How long connecting to a backend may take before the next one is
    /// tried or the request answers 503.
    pub connect_timeout: ConfigDuration,
    /// How long a backend that refused a connection is skipped.
    pub backend_down_for: ConfigDuration,
    /// Largest form body of a query request buffered so that it can be
    /// retried on another backend (bytes).
    pub max_retry_body_bytes: usize,
    /// TLS on the listener; plain HTTP without it.
    pub tls: Option<TlsConfig>,
    /// Trust (and client certificate) for `https://` backends, Prometheus'
    /// `tls_config` fields; without it the system's trust roots.
    pub backend_tls_config: Option<lucia_common::http_config::TlsConfig>,
    /// CORS for browsers; off when no origin is listed.
    pub cors: CorsConfig,
    /// Per-tenant request rate limits.
    pub rate_limit: RateLimitConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backends: BackendsConfig::default(),
            auth: AuthConfig::default(),
            alertmanager_prefix: String::new(),
            connect_timeout: ConfigDuration::from_secs(2),
            backend_down_for: ConfigDuration::from_secs(5),
            max_retry_body_bytes: 1 << 20,
            tls: None,
            backend_tls_config: None,
            cors: CorsConfig::default(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// Backend base URLs (`http://host:port`) per role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendsConfig {
    /// Used for every role that has no list of its own: one `lucia all`.
    pub all: Vec<String>,
    pub distributor: Vec<String>,
    pub querier: Vec<String>,
    pub tsdb: Vec<String>,
    pub ruler: Vec<String>,
    pub alert_router: Vec<String>,
}

/// Who may use the gateway, and as which tenants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Basic-auth users with bcrypt password hashes.
    pub users: Vec<UserConfig>,
    /// Bearer tokens.
    pub tokens: Vec<TokenConfig>,
    /// The tenant of every request when no users or tokens are configured.
    pub anonymous_tenant: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            tokens: Vec::new(),
            anonymous_tenant: lucia_common::tenant::DEFAULT_TENANT.to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    /// `$2b$…`/`$2y$…` hash, as `htpasswd -nbB user password` prints it.
    pub password_bcrypt: String,
    /// The tenants the user may act for; the first is the default.
    pub tenants: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for access logs (the token itself is never logged).
    #[serde(default)]
    pub name: Option<String>,
    /// The token in clear text.
    #[serde(default)]
    pub token: Option<String>,
    /// Or its SHA-256 in hex (`printf %s TOKEN | sha256sum`).
    #[serde(default)]
    pub token_sha256: Option<String>,
    pub tenants: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for changes.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: ConfigDuration,
}

fn default_reload_interval() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to call the gateway from a browser (`*` for any).
    pub allowed_origins: Vec<String>,
    /// `Access-Control-Max-Age` of preflight answers.
    pub max_age: ConfigDuration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age: ConfigDuration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per second per tenant; 0 means no limit.
    pub requests_per_second: f64,
    /// Requests a tenant may send at once (default: one second's worth).
    pub burst: u32,
    /// Overrides per tenant.
    pub tenants: BTreeMap<String, TenantRateLimit>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRateLimit {
    pub requests_per_second: f64,
    #[serde(default)]
    pub burst: u32,
}
