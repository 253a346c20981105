//! Prometheus' HTTP client options (`basic_auth`, `authorization`,
//! `bearer_token(_file)`, `tls_config`, proxies, …), as inlined in scrape
//! configs and service-discovery configs. Shared by tsdb's scraper and by
//! the discovery mechanisms in [`crate::discovery`].

use std::path::{Path, PathBuf};

use serde::Deserialize;
pub use serde::de::IgnoredAny;

/// Declares a config struct with Prometheus' inlined HTTP client fields
/// (`basic_auth`, `authorization`, `tls_config`, …) after its own, so that
/// unknown-field errors keep their line (serde's `flatten` loses it).
#[macro_export]
macro_rules! with_http_client_fields {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($body)*
            #[serde(default)]
            pub basic_auth: Option<$crate::http_config::BasicAuth>,
            #[serde(default)]
            pub authorization: Option<$crate::http_config::Authorization>,
            #[serde(default)]
            pub bearer_token: Option<String>,
            #[serde(default)]
            pub bearer_token_file: Option<String>,
            #[serde(default)]
            pub oauth2: Option<$crate::http_config::IgnoredAny>,
            #[serde(default)]
            pub tls_config: Option<$crate::http_config::TlsConfig>,
            #[serde(default)]
            pub proxy_url: Option<String>,
            #[serde(default)]
            pub no_proxy: Option<String>,
            #[serde(default)]
            pub proxy_from_environment: Option<bool>,
            #[serde(default)]
            pub proxy_connect_header: Option<$crate::http_config::IgnoredAny>,
            #[serde(default)]
            pub follow_redirects: Option<bool>,
            #[serde(default)]
            pub enable_http2: Option<bool>,
            #[serde(default)]
            pub http_headers: Option<$crate::http_config::IgnoredAny>,
        }

        impl $name {
            /// The HTTP client options of this section.
            pub fn http(&self) -> $crate::http_config::HttpClientConfig {
                $crate::http_config::HttpClientConfig {
                    basic_auth: self.basic_auth.clone(),
                    authorization: self.authorization.clone(),
                    bearer_token: self.bearer_token.clone(),
                    bearer_token_file: self.bearer_token_file.clone(),
                    oauth2: self.oauth2,
                    tls_config: self.tls_config.clone(),
                    proxy_url: self.proxy_url.clone(),
                    no_proxy: self.no_proxy.clone(),
                    proxy_from_environment: self.proxy_from_environment,
                    proxy_connect_header: self.proxy_connect_header,
                    follow_redirects: self.follow_redirects,
                    enable_http2: self.enable_http2,
                    http_headers: self.http_headers,
                }
            }

            pub fn set_http_directory(&mut self, dir: &::std::path::Path) {
                if let Some(b) = &mut self.basic_auth
                    && let Some(f) = &mut b.password_file
                {
                    *f = $crate::http_config::join_dir(dir, f);
                }
                if let Some(a) = &mut self.authorization
                    && let Some(f) = &mut a.credentials_file
                {
                    *f = $crate::http_config::join_dir(dir, f);
                }
                if let Some(f) = &mut self.bearer_token_file {
                    *f = $crate::http_config::join_dir(dir, f);
                }
                if let Some(tls) = &mut self.tls_config {
                    tls.set_directory(dir);
                }
            }
        }
    };
}

/// Prometheus' HTTP client options (inlined in scrape and Consul SD
/// configs). Basic auth, `authorization`, `bearer_token(_file)` and
/// `tls_config` are used; OAuth2 and proxies are accepted and ignored with
/// a warning.
#[derive(Debug, Clone, Default)]
pub struct HttpClientConfig {
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<String>,
    pub oauth2: Option<IgnoredAny>,
    pub tls_config: Option<TlsConfig>,
    pub proxy_url: Option<String>,
    pub no_proxy: Option<String>,
    pub proxy_from_environment: Option<bool>,
    pub proxy_connect_header: Option<IgnoredAny>,
    pub follow_redirects: Option<bool>,
    pub enable_http2: Option<bool>,
    pub http_headers: Option<IgnoredAny>,
}

impl HttpClientConfig {
    /// Checks the combinations Prometheus rejects; warns about options
    /// that are accepted and ignored.
    pub fn validate(&self, context: &str) -> Result<(), String> {
        let bearer = self.bearer_token.is_some() || self.bearer_token_file.is_some();
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            return Err(
                "at most one of bearer_token & bearer_token_file must be configured".into(),
            );
        }
        if self.basic_auth.is_some() && (bearer || self.authorization.is_some()) {
            return Err(
                "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured"
                    .into(),
            );
        }
        if self.authorization.is_some() && bearer {
            return Err(
                "authorization is not compatible with bearer_token & bearer_token_file".into(),
            );
        }
        if let Some(a) = &self.authorization {
            if a.credentials.is_some() && a.credentials_file.is_some() {
                return Err(
                    "at most one of authorization credentials & credentials_file must be configured"
                        .into(),
                );
            }
            if a.kind.eq_ignore_ascii_case("basic") {
                return Err(
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                        .into(),
                );
            }
        }
        if let Some(b) = &self.basic_auth
            && b.password.is_some()
            && b.password_file.is_some()
        {
            return Err(
                "at most one of basic_auth password & password_file must be configured".into(),
            );
        }
        if let Some(tls) = &self.tls_config {
            // Reads the files now, so that a bad path fails the config load.
            crate::http_client::client_config(tls).map_err(|e| e.to_string())?;
        }
        if self.oauth2.is_some() {
            tracing::warn!(%context, "oauth2 is not supported and is ignored");
        }
        if self.proxy_url.is_some() || self.proxy_from_environment == Some(true) {
            tracing::warn!(%context, "proxies are not supported and are ignored");
        }
        if self.http_headers.is_some() {
            tracing::warn!(%context, "http_headers is not supported and is ignored");
        }
        Ok(())
    }

    /// A reqwest client builder with `tls_config` applied.
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder, crate::http_client::TlsError> {
        crate::http_client::builder_with_tls(self.tls_config.as_ref())
    }

    /// The `Authorization` header value, reading credential files now.
    pub fn authorization_header(&self) -> Result<Option<String>, String> {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read credentials file {path}: {e}"))
        };
        if let Some(b) = &self.basic_auth {
            let password = match (&b.password, &b.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => read(f)?,
                (None, None) => String::new(),
            };
            let username = match (&b.username, &b.username_file) {
                (Some(u), _) => u.clone(),
                (None, Some(f)) => read(f)?,
                (None, None) => String::new(),
            };
            use base64::Engine as _;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            return Ok(Some(format!("Basic {token}")));
        }
        if let Some(a) = &self.authorization {
            let credentials = match (&a.credentials, &a.credentials_file) {
                (Some(c), _) => c.clone(),
                (None, Some(f)) => read(f)?,
                (None, None) => String::new(),
            };
            let kind = if a.kind.is_empty() { "Bearer" } else { &a.kind };
            return Ok(Some(format!("{kind} {credentials}")));
        }
        if let Some(t) = &self.bearer_token {
            return Ok(Some(format!("Bearer {t}")));
        }
        if let Some(f) = &self.bearer_token_file {
            return Ok(Some(format!("Bearer {}", read(f)?)));
        }
        Ok(None)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub username_file: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub credentials: Option<String>,
    #[serde(default)]
    pub credentials_file: Option<String>,
}

/// Prometheus' `tls_config`, applied by [`crate::http_client::client_config`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub ca_ref: Option<String>,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub cert_ref: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub key_ref: Option<String>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
}

impl TlsConfig {
    /// Resolves `ca_file`, `cert_file` and `key_file` against the folder
    /// of the configuration file.
    pub fn set_directory(&mut self, dir: &Path) {
        for f in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file]
            .into_iter()
            .flatten()
        {
            *f = join_dir(dir, f);
        }
    }
}

/// `path` relative to `dir` unless it is absolute (or empty), as Prometheus
/// resolves paths relative to the configuration file.
pub fn join_dir(dir: &Path, path: &str) -> String {
    if path.is_empty() || Path::new(path).is_absolute() {
        return path.to_string();
    }
    let joined: PathBuf = dir.join(path);
    joined.to_string_lossy().into_owned()
}
