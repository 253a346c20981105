//! Alertmanager's configuration file: parsing (strict, errors naming the
//! file, line and field), defaults, validation, and the route tree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lucia_common::duration::ConfigDuration;
use lucia_common::http_config::TlsConfig;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::matcher::{MatchType, Matcher, Matchers, parse_matchers};
use crate::model::LabelSet;
use crate::timeinterval::{TimeInterval, TimeIntervalSpec};

pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub global: Option<GlobalConfig>,
    #[serde(default)]
    pub route: Option<RouteConfig>,
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    #[serde(default)]
    pub templates: Vec<String>,
    #[serde(default)]
    pub mute_time_intervals: Vec<NamedTimeInterval>,
    #[serde(default)]
    pub time_intervals: Vec<NamedTimeInterval>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    pub resolve_timeout: ConfigDuration,
    pub http_config: Option<HttpConfig>,
    pub smtp_from: String,
    pub smtp_hello: String,
    pub smtp_smarthost: String,
    pub smtp_auth_username: String,
    pub smtp_auth_password: String,
    pub smtp_auth_password_file: String,
    pub smtp_auth_secret: String,
    pub smtp_auth_identity: String,
    pub smtp_require_tls: bool,
    pub smtp_tls_config: Option<TlsConfig>,
    pub slack_api_url: Option<String>,
    pub slack_api_url_file: Option<String>,
    pub pagerduty_url: String,
    pub opsgenie_api_url: Option<String>,
    pub opsgenie_api_key: Option<String>,
    pub opsgenie_api_key_file: Option<String>,
    pub wechat_api_url: Option<String>,
    pub wechat_api_secret: Option<String>,
    pub wechat_api_corp_id: Option<String>,
    pub victorops_api_url: Option<String>,
    pub victorops_api_key: Option<String>,
    pub victorops_api_key_file: Option<String>,
    pub telegram_api_url: Option<String>,
    pub webex_api_url: Option<String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            resolve_timeout: ConfigDuration::from_secs(300),
            http_config: None,
            smtp_from: String::new(),
            smtp_hello: "localhost".to_string(),
            smtp_smarthost: String::new(),
            smtp_auth_username: String::new(),
            smtp_auth_password: String::new(),
            smtp_auth_password_file: String::new(),
            smtp_auth_secret: String::new(),
            smtp_auth_identity: String::new(),
            smtp_require_tls: true,
            smtp_tls_config: None,
            slack_api_url: None,
            slack_api_url_file: None,
            pagerduty_url: "https://events.pagerduty.com/v2/enqueue".to_string(),
            opsgenie_api_url: None,
            opsgenie_api_key: None,
            opsgenie_api_key_file: None,
            wechat_api_url: None,
            wechat_api_secret: None,
            wechat_api_corp_id: None,
            victorops_api_url: None,
            victorops_api_key: None,
            victorops_api_key_file: None,
            telegram_api_url: None,
            webex_api_url: None,
        }
    }
}

lucia_common::with_http_client_fields! {
    /// Prometheus' `http_config` (authentication and `tls_config` are
    /// applied; the rest is accepted), with common's fields and checks.
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HttpConfig {
        /// The client of an `http_config` with a `tls_config`, built when the
        /// configuration loads (so that a bad file fails the load, as in
        /// Alertmanager, and the connection pool lives as long as the config).
        /// `None`: the router's shared client.
        #[serde(skip)]
        pub client: Option<reqwest::Client>,
    }
}

impl HttpConfig {
    /// Resolves the TLS files against the config file's folder (as
    /// Alertmanager does) and builds the client of a `tls_config`.
    fn prepare(&mut self, dir: &Path) -> Result<(), String> {
        let Some(tls) = &mut self.tls_config else {
            return Ok(());
        };
        tls.set_directory(dir);
        let client = lucia_common::http_client::builder_with_tls(Some(tls))
            .map_err(|e| format!("http_config.{e}"))?
            .build()
            .map_err(|e| format!("http_config: cannot build the http client: {e}"))?;
        self.client = Some(client);
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub receiver: Option<String>,
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    #[serde(default, rename = "match")]
    pub match_: BTreeMap<String, String>,
    #[serde(default)]
    pub match_re: BTreeMap<String, String>,
    #[serde(default)]
    pub matchers: Vec<String>,
    #[serde(default)]
    pub mute_time_intervals: Vec<String>,
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub group_wait: Option<ConfigDuration>,
    #[serde(default)]
    pub group_interval: Option<ConfigDuration>,
    #[serde(default)]
    pub repeat_interval: Option<ConfigDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InhibitRuleConfig {
    pub source_match: BTreeMap<String, String>,
    pub source_match_re: BTreeMap<String, String>,
    pub source_matchers: Vec<String>,
    pub target_match: BTreeMap<String, String>,
    pub target_match_re: BTreeMap<String, String>,
    pub target_matchers: Vec<String>,
    pub equal: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedTimeInterval {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
    #[serde(default)]
    pub slack_configs: Vec<SlackConfig>,
    #[serde(default)]
    pub pagerduty_configs: Vec<PagerdutyConfig>,
    // Accepted so that Alertmanager files load; not sent to (a warning
    // names them at load).
    #[serde(default)]
    pub discord_configs: Vec<IgnoredAny>,
    #[serde(default)]
    pub opsgenie_configs: Vec<IgnoredAny>,
    #[serde(default)]
    pub wechat_configs: Vec<IgnoredAny>,
    #[serde(default)]
    pub pushover_configs: Vec<IgnoredAny>,
    #[serde(default)]
    pub victorops_configs: Vec<IgnoredAny>,
    #[serde(default)]
    pub sns_configs: Vec<IgnoredAny>,
    #[serde(default)]
    pub telegram_configs: Vec<IgnoredAny>,
    #[serde(default)]
    pub webex_configs: Vec<IgnoredAny>,
}

impl ReceiverConfig {
    fn unsupported(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (name, n) in [
            ("discord_configs", self.discord_configs.len()),
            ("opsgenie_configs", self.opsgenie_configs.len()),
            ("wechat_configs", self.wechat_configs.len()),
            ("pushover_configs", self.pushover_configs.len()),
            ("victorops_configs", self.victorops_configs.len()),
            ("sns_configs", self.sns_configs.len()),
            ("telegram_configs", self.telegram_configs.len()),
            ("webex_configs", self.webex_configs.len()),
        ] {
            if n > 0 {
                out.push(name);
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub send_resolved: Option<bool>,
    pub http_config: Option<HttpConfig>,
    pub url: Option<String>,
    pub url_file: Option<String>,
    pub max_alerts: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    pub send_resolved: Option<bool>,
    pub to: String,
    pub from: String,
    pub hello: String,
    pub smarthost: String,
    pub auth_username: String,
    pub auth_password: String,
    pub auth_password_file: String,
    pub auth_secret: String,
    pub auth_identity: String,
    pub headers: BTreeMap<String, String>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub require_tls: Option<bool>,
    pub tls_config: Option<TlsConfig>,
    /// true: TLS from the first byte; false: never (STARTTLS if
    /// `require_tls`); unset: only when the smarthost's port is 465.
    pub force_implicit_tls: Option<bool>,
    /// The rustls configuration of `tls_config`, built when the
    /// configuration loads (so that a bad file fails the load).
    #[serde(skip)]
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackField {
    pub title: String,
    pub value: String,
    pub short: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackAction {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub url: String,
    pub style: String,
    pub name: String,
    pub value: String,
    pub confirm: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    pub send_resolved: Option<bool>,
    pub http_config: Option<HttpConfig>,
    pub api_url: Option<String>,
    pub api_url_file: Option<String>,
    pub channel: String,
    pub username: Option<String>,
    pub color: Option<String>,
    pub title: Option<String>,
    pub title_link: Option<String>,
    pub pretext: Option<String>,
    pub text: Option<String>,
    pub fields: Vec<SlackField>,
    pub short_fields: bool,
    pub footer: Option<String>,
    pub fallback: Option<String>,
    pub callback_id: Option<String>,
    pub icon_emoji: Option<String>,
    pub icon_url: Option<String>,
    pub image_url: String,
    pub thumb_url: String,
    pub link_names: bool,
    pub mrkdwn_in: Option<Vec<String>>,
    pub actions: Vec<SlackAction>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagerdutyLink {
    pub href: String,
    pub text: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagerdutyImage {
    pub src: String,
    pub alt: String,
    pub href: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagerdutyConfig {
    pub send_resolved: Option<bool>,
    pub http_config: Option<HttpConfig>,
    pub service_key: String,
    pub service_key_file: String,
    pub routing_key: String,
    pub routing_key_file: String,
    pub url: Option<String>,
    pub client: Option<String>,
    pub client_url: Option<String>,
    pub description: Option<String>,
    pub details: Option<BTreeMap<String, String>>,
    pub images: Vec<PagerdutyImage>,
    pub links: Vec<PagerdutyLink>,
    pub source: String,
    pub severity: String,
    pub class: String,
    pub component: String,
    pub group: String,
}

/// Options a route hands to the groups it creates.
#[derive(Debug, Clone)]
pub struct RouteOpts {
    pub receiver: String,
    pub group_by: BTreeSet<String>,
    pub group_by_all: bool,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub mute_time_intervals: Vec<String>,
    pub active_time_intervals: Vec<String>,
}

/// A node of the compiled route tree.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique in the tree (preorder index).
    pub id: usize,
    /// Alertmanager's route key: parent keys and matchers, `{}/{a="b"}`.
    pub key: String,
    pub opts: RouteOpts,
    pub matchers: Matchers,
    pub continue_: bool,
    pub routes: Vec<Route>,
}

impl Route {
    /// The routes an alert with `labels` goes to (depth first, left to
    /// right; `continue` lets siblings match too).
    pub fn matching(&self, labels: &LabelSet) -> Vec<&Route> {
        if !self.matchers.matches(labels) {
            return Vec::new();
        }
        let mut all = Vec::new();
        for child in &self.routes {
            let matches = child.matching(labels);
            let matched = !matches.is_empty();
            all.extend(matches);
            if matched && !child.continue_ {
                break;
            }
        }
        if all.is_empty() {
            all.push(self);
        }
        all
    }

    /// The group labels of `labels` on this route.
    pub fn group_labels(&self, labels: &LabelSet) -> LabelSet {
        labels
            .iter()
            .filter(|(k, _)| self.opts.group_by_all || self.opts.group_by.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a Route)) {
        visit(self);
        for r in &self.routes {
            r.walk(visit);
        }
    }
}

/// A compiled inhibition rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Matchers,
    pub target: Matchers,
    pub equal: Vec<String>,
}

/// A receiver with its integrations (defaults applied).
#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub webhooks: Vec<WebhookConfig>,
    pub emails: Vec<EmailConfig>,
    pub slacks: Vec<SlackConfig>,
    pub pagerduties: Vec<PagerdutyConfig>,
}

/// The loaded configuration.
pub struct AmConfig {
    pub global: GlobalConfig,
    pub route: Arc<Route>,
    pub inhibit_rules: Vec<InhibitRule>,
    pub receivers: BTreeMap<String, Receiver>,
    pub time_intervals: HashMap<String, Vec<TimeInterval>>,
    /// Template files (globs resolved against the config file's folder).
    pub template_files: Vec<PathBuf>,
    /// The file's text with secrets masked (`/api/v2/status`).
    pub original: String,
    /// The default templates and the template files.
    pub templates: lucia_common::gotemplate::Templates,
}

impl std::fmt::Debug for AmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmConfig")
            .field("route", &self.route)
            .field("receivers", &self.receivers.keys())
            .field("inhibit_rules", &self.inhibit_rules.len())
            .finish_non_exhaustive()
    }
}

/// A loading error naming the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AmConfigError {
    #[error(transparent)]
    File(#[from] lucia_common::config::ConfigError),
    #[error("config file {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// The configuration used when no file is given: one route to a receiver
/// `default` without integrations.
pub const DEFAULT_CONFIG: &str = "route:\n  receiver: default\nreceivers:\n- name: default\n";

impl AmConfig {
    pub fn load(path: &Path) -> Result<Self, AmConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            lucia_common::config::ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, AmConfigError> {
        let file: FileConfig = lucia_common::config::parse(path, text)?;
        let invalid = |field: &str, message: String| AmConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let global = file.global.clone().unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new("."));

        // Receivers.
        let mut receivers = BTreeMap::new();
        for (i, rc) in file.receivers.iter().enumerate() {
            let field = format!("receivers[{i}]");
            if rc.name.is_empty() {
                return Err(invalid(&field, "missing name in receiver".to_string()));
            }
            if receivers.contains_key(&rc.name) {
                return Err(invalid(
                    &field,
                    format!("notification config name {:?} is not unique", rc.name),
                ));
            }
            let unsupported = rc.unsupported();
            if !unsupported.is_empty() {
                tracing::warn!(receiver = %rc.name, integrations = ?unsupported,
                    "integrations not supported by lucia are ignored");
            }
            let mut recv = Receiver {
                name: rc.name.clone(),
                webhooks: Vec::new(),
                emails: Vec::new(),
                slacks: Vec::new(),
                pagerduties: Vec::new(),
            };
            for (j, w) in rc.webhook_configs.iter().enumerate() {
                let field = format!("{field}.webhook_configs[{j}]");
                let mut w = w.clone();
                match (&w.url, &w.url_file) {
                    (None, None) => {
                        return Err(invalid(
                            &field,
                            "one of url or url_file must be configured".to_string(),
                        ));
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            &field,
                            "at most one of url & url_file must be configured".to_string(),
                        ));
                    }
                    (Some(url), None) => check_url(url).map_err(|m| invalid(&field, m))?,
                    _ => {}
                }
                w.send_resolved.get_or_insert(true);
                if w.http_config.is_none() {
                    w.http_config.clone_from(&global.http_config);
                }
                if let Some(h) = &mut w.http_config {
                    h.prepare(dir).map_err(|m| invalid(&field, m))?;
                }
                recv.webhooks.push(w);
            }
            for (j, e) in rc.email_configs.iter().enumerate() {
                let field = format!("{field}.email_configs[{j}]");
                let mut e = e.clone();
                if e.to.is_empty() {
                    return Err(invalid(
                        &field,
                        "missing to address in email config".to_string(),
                    ));
                }
                if e.smarthost.is_empty() {
                    if global.smtp_smarthost.is_empty() {
                        return Err(invalid(&field, "no global SMTP smarthost set".to_string()));
                    }
                    e.smarthost.clone_from(&global.smtp_smarthost);
                }
                if e.from.is_empty() {
                    if global.smtp_from.is_empty() {
                        return Err(invalid(&field, "no global SMTP from set".to_string()));
                    }
                    e.from.clone_from(&global.smtp_from);
                }
                if e.hello.is_empty() {
                    e.hello.clone_from(&global.smtp_hello);
                }
                if e.auth_username.is_empty() {
                    e.auth_username.clone_from(&global.smtp_auth_username);
                }
                if e.auth_password.is_empty() && e.auth_password_file.is_empty() {
                    e.auth_password.clone_from(&global.smtp_auth_password);
                    e.auth_password_file
                        .clone_from(&global.smtp_auth_password_file);
                }
                if e.auth_secret.is_empty() {
                    e.auth_secret.clone_from(&global.smtp_auth_secret);
                }
                if e.auth_identity.is_empty() {
                    e.auth_identity.clone_from(&global.smtp_auth_identity);
                }
                e.require_tls.get_or_insert(global.smtp_require_tls);
                if e.tls_config.is_none() {
                    e.tls_config.clone_from(&global.smtp_tls_config);
                }
                // Alertmanager resolves only http_config paths against the
                // config's folder; email's too, so that one config works
                // whatever the process's working directory.
                let mut tls = e.tls_config.clone().unwrap_or_default();
                tls.set_directory(dir);
                let config = lucia_common::http_client::client_config(&tls)
                    .map_err(|m| invalid(&field, m.to_string()))?;
                e.tls_config = Some(tls);
                e.tls = Some(std::sync::Arc::new(config));
                e.send_resolved.get_or_insert(false);
                // Header names are case-insensitive; Alertmanager title-cases them.
                let mut headers = BTreeMap::new();
                for (k, v) in &e.headers {
                    let normalized = title_case_header(k);
                    if headers.insert(normalized.clone(), v.clone()).is_some() {
                        return Err(invalid(
                            &field,
                            format!("duplicate header {normalized:?} in email config"),
                        ));
                    }
                }
                e.headers = headers;
                recv.emails.push(e);
            }
            for (j, s) in rc.slack_configs.iter().enumerate() {
                let field = format!("{field}.slack_configs[{j}]");
                let mut s = s.clone();
                if s.api_url.is_some() && s.api_url_file.is_some() {
                    return Err(invalid(
                        &field,
                        "at most one of api_url & api_url_file must be configured".to_string(),
                    ));
                }
                if s.api_url.is_none() && s.api_url_file.is_none() {
                    if global.slack_api_url.is_none() && global.slack_api_url_file.is_none() {
                        return Err(invalid(
                            &field,
                            "no global Slack API URL set either inline or in a file".to_string(),
                        ));
                    }
                    s.api_url.clone_from(&global.slack_api_url);
                    s.api_url_file.clone_from(&global.slack_api_url_file);
                }
                if let Some(url) = &s.api_url {
                    check_url(url).map_err(|m| invalid(&field, m))?;
                }
                s.send_resolved.get_or_insert(false);
                if s.http_config.is_none() {
                    s.http_config.clone_from(&global.http_config);
                }
                if let Some(h) = &mut s.http_config {
                    h.prepare(dir).map_err(|m| invalid(&field, m))?;
                }
                recv.slacks.push(s);
            }
            for (j, p) in rc.pagerduty_configs.iter().enumerate() {
                let field = format!("{field}.pagerduty_configs[{j}]");
                let mut p = p.clone();
                if p.routing_key.is_empty()
                    && p.service_key.is_empty()
                    && p.routing_key_file.is_empty()
                    && p.service_key_file.is_empty()
                {
                    return Err(invalid(
                        &field,
                        "missing service or routing key in PagerDuty config".to_string(),
                    ));
                }
                if p.url.is_none() {
                    p.url = Some(global.pagerduty_url.clone());
                }
                if let Some(url) = &p.url {
                    check_url(url).map_err(|m| invalid(&field, m))?;
                }
                p.send_resolved.get_or_insert(true);
                if p.http_config.is_none() {
                    p.http_config.clone_from(&global.http_config);
                }
                if let Some(h) = &mut p.http_config {
                    h.prepare(dir).map_err(|m| invalid(&field, m))?;
                }
                recv.pagerduties.push(p);
            }
            receivers.insert(rc.name.clone(), recv);
        }

        // Time intervals.
        let mut time_intervals = HashMap::new();
        for (section, list) in [
            ("mute_time_intervals", &file.mute_time_intervals),
            ("time_intervals", &file.time_intervals),
        ] {
            for (i, ti) in list.iter().enumerate() {
                let field = format!("{section}[{i}]");
                if ti.name.is_empty() {
                    return Err(invalid(&field, "missing name in time interval".to_string()));
                }
                if time_intervals.contains_key(&ti.name) {
                    return Err(invalid(
                        &field,
                        format!("time interval {:?} is not unique", ti.name),
                    ));
                }
                let mut parsed = Vec::new();
                for (j, spec) in ti.time_intervals.iter().enumerate() {
                    parsed.push(
                        TimeInterval::parse(spec)
                            .map_err(|m| invalid(&format!("{field}.time_intervals[{j}]"), m))?,
                    );
                }
                time_intervals.insert(ti.name.clone(), parsed);
            }
        }

        // Routes.
        let Some(root) = &file.route else {
            return Err(invalid("route", "no routes provided".to_string()));
        };
        if root.receiver.as_deref().unwrap_or("").is_empty() {
            return Err(invalid(
                "route.receiver",
                "root route must specify a default receiver".to_string(),
            ));
        }
        if !root.match_.is_empty() || !root.match_re.is_empty() || !root.matchers.is_empty() {
            return Err(invalid(
                "route",
                "root route must not have any matchers".to_string(),
            ));
        }
        if !root.mute_time_intervals.is_empty() {
            return Err(invalid(
                "route.mute_time_intervals",
                "root route must not have any mute time intervals".to_string(),
            ));
        }
        if !root.active_time_intervals.is_empty() {
            return Err(invalid(
                "route.active_time_intervals",
                "root route must not have any active time intervals".to_string(),
            ));
        }
        if root.continue_ {
            return Err(invalid(
                "route.continue",
                "cannot have continue in root route".to_string(),
            ));
        }
        let defaults = RouteOpts {
            receiver: String::new(),
            group_by: BTreeSet::new(),
            group_by_all: false,
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            mute_time_intervals: Vec::new(),
            active_time_intervals: Vec::new(),
        };
        let mut next_id = 0;
        let route = build_route(
            root,
            &defaults,
            None,
            "route",
            &mut next_id,
            &receivers,
            &time_intervals,
        )
        .map_err(|(field, m)| invalid(&field, m))?;

        // Inhibition rules.
        let mut inhibit_rules = Vec::new();
        for (i, r) in file.inhibit_rules.iter().enumerate() {
            let field = format!("inhibit_rules[{i}]");
            let source = compile_matchers(&r.source_match, &r.source_match_re, &r.source_matchers)
                .map_err(|m| invalid(&field, m))?;
            let target = compile_matchers(&r.target_match, &r.target_match_re, &r.target_matchers)
                .map_err(|m| invalid(&field, m))?;
            for name in &r.equal {
                if !lucia_common::labels::is_valid_label_name(name) {
                    return Err(invalid(
                        &format!("{field}.equal"),
                        format!("invalid label name {name:?}"),
                    ));
                }
            }
            inhibit_rules.push(InhibitRule {
                source,
                target,
                equal: r.equal.clone(),
            });
        }

        // Templates: globs relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        let mut template_files = Vec::new();
        for pattern in &file.templates {
            let full = if Path::new(pattern).is_absolute() {
                PathBuf::from(pattern)
            } else {
                base.join(pattern)
            };
            template_files.extend(glob_files(&full).map_err(|m| invalid("templates", m))?);
        }

        let templates =
            crate::templates::load(&template_files).map_err(|m| invalid("templates", m))?;

        Ok(Self {
            templates,
            global,
            route: Arc::new(route),
            inhibit_rules,
            receivers,
            time_intervals,
            template_files,
            original: mask_secrets(text),
        })
    }

    /// The default configuration (no file).
    pub fn default_config() -> Self {
        match Self::parse(Path::new("<default>"), DEFAULT_CONFIG) {
            Ok(c) => c,
            Err(err) => unreachable!("the built-in default config is valid: {err}"),
        }
    }

    /// Whether `at` is inside any interval named in `names`.
    pub fn in_time_intervals(&self, at: crate::model::Time, names: &[String]) -> bool {
        names.iter().any(|n| {
            self.time_intervals
                .get(n)
                .is_some_and(|list| list.iter().any(|ti| ti.contains(at)))
        })
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url == "<secret>" {
        return Ok(());
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("unsupported scheme for URL {url:?}: use http or https"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("missing host for URL {url:?}"));
    }
    Ok(())
}

fn title_case_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// `match`, `match_re` and `matchers` combined and sorted.
fn compile_matchers(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
    matchers: &[String],
) -> Result<Matchers, String> {
    let mut out = Vec::new();
    for (k, v) in eq {
        if !lucia_common::labels::is_valid_label_name(k) {
            return Err(format!("invalid label name {k:?}"));
        }
        out.push(Matcher::new(MatchType::Equal, k, v)?);
    }
    for (k, v) in re {
        if !lucia_common::labels::is_valid_label_name(k) {
            return Err(format!("invalid label name {k:?}"));
        }
        out.push(
            Matcher::new(MatchType::Regexp, k, v)
                .map_err(|_| format!("invalid regexp value for {k:?}"))?,
        );
    }
    for line in matchers {
        out.extend(parse_matchers(line)?);
    }
    let mut m = Matchers(out);
    m.sort();
    Ok(m)
}

#[allow(clippy::too_many_arguments)]
fn build_route(
    rc: &RouteConfig,
    parent: &RouteOpts,
    parent_key: Option<&str>,
    field: &str,
    next_id: &mut usize,
    receivers: &BTreeMap<String, Receiver>,
    intervals: &HashMap<String, Vec<TimeInterval>>,
) -> Result<Route, (String, String)> {
    let err = |f: &str, m: String| (f.to_string(), m);
    let mut opts = parent.clone();
    if let Some(r) = rc.receiver.as_ref().filter(|r| !r.is_empty()) {
        if !receivers.contains_key(r) {
            return Err(err(
                &format!("{field}.receiver"),
                format!("undefined receiver {r:?} used in route"),
            ));
        }
        opts.receiver = r.clone();
    }
    if let Some(group_by) = &rc.group_by {
        let mut set = BTreeSet::new();
        let mut all = false;
        for l in group_by {
            if l == "..." {
                all = true;
            } else if !lucia_common::labels::is_valid_label_name(l) {
                return Err(err(
                    &format!("{field}.group_by"),
                    format!("invalid label name {l:?} in group_by list"),
                ));
            } else if !set.insert(l.clone()) {
                return Err(err(
                    &format!("{field}.group_by"),
                    format!("duplicated label {l:?} in group_by"),
                ));
            }
        }
        if all && !set.is_empty() {
            return Err(err(
                &format!("{field}.group_by"),
                "cannot have wildcard group_by (`...`) and other other labels at the same time"
                    .to_string(),
            ));
        }
        opts.group_by = set;
        opts.group_by_all = all;
    }
    if let Some(d) = rc.group_wait {
        opts.group_wait = d.0;
    }
    if let Some(d) = rc.group_interval {
        if d.0.is_zero() {
            return Err(err(
                &format!("{field}.group_interval"),
                "group_interval cannot be zero".to_string(),
            ));
        }
        opts.group_interval = d.0;
    }
    if let Some(d) = rc.repeat_interval {
        if d.0.is_zero() {
            return Err(err(
                &format!("{field}.repeat_interval"),
                "repeat_interval cannot be zero".to_string(),
            ));
        }
        opts.repeat_interval = d.0;
    }
    for (list, name) in [
        (&rc.mute_time_intervals, "mute_time_intervals"),
        (&rc.active_time_intervals, "active_time_intervals"),
    ] {
        for ti in list {
            if !intervals.contains_key(ti) {
                return Err(err(
                    &format!("{field}.{name}"),
                    format!("undefined time interval {ti:?} used in route"),
                ));
            }
        }
    }
    opts.mute_time_intervals.clone_from(&rc.mute_time_intervals);
    opts.active_time_intervals
        .clone_from(&rc.active_time_intervals);
    let matchers = compile_matchers(&rc.match_, &rc.match_re, &rc.matchers)
        .map_err(|m| err(&format!("{field}.matchers"), m))?;
    let key = match parent_key {
        Some(p) => format!("{p}/{matchers}"),
        None => matchers.to_string(),
    };
    let id = *next_id;
    *next_id += 1;
    let mut routes = Vec::new();
    for (i, child) in rc.routes.iter().enumerate() {
        routes.push(build_route(
            child,
            &opts,
            Some(&key),
            &format!("{field}.routes[{i}]"),
            next_id,
            receivers,
            intervals,
        )?);
    }
    Ok(Route {
        id,
        key,
        opts,
        matchers,
        continue_: rc.continue_,
        routes,
    })
}

/// Files matching a glob with `*` and `?` in the last path component.
fn glob_files(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let text = pattern.to_string_lossy();
    if !text.contains(['*', '?', '[']) {
        return Ok(if pattern.exists() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let re = regex::Regex::new(&format!(
        "^{}$",
        regex::escape(&name)
            .replace(r"\*", ".*")
            .replace(r"\?", ".")
    ))
    .map_err(|e| format!("invalid template glob {text:?}: {e}"))?;
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if re.is_match(&entry.file_name().to_string_lossy()) {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

const SECRET_KEYS: &[&str] = &[
    "smtp_auth_password",
    "smtp_auth_secret",
    "slack_api_url",
    "opsgenie_api_key",
    "wechat_api_secret",
    "victorops_api_key",
    "auth_password",
    "auth_secret",
    "service_key",
    "routing_key",
    "api_key",
    "api_secret",
    "password",
    "credentials",
    "bearer_token",
    "client_secret",
    "token",
    "user_key",
    "bot_token",
    "webhook_url",
    // tls_config's inline private key (PEM, usually a block scalar)
    "key",
];

/// Replaces the values of secret fields by `<secret>`, as Alertmanager's
/// `/api/v2/status` does; Slack's `api_url` is a secret URL.
pub fn mask_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_slack = false;
    let mut slack_indent = 0;
    // Inside the block scalar (`key: |`) of a masked field: lines indented
    // deeper than this are dropped.
    let mut masked_block: Option<usize> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(block_indent) = masked_block {
            if trimmed.is_empty() || indent > block_indent {
                continue;
            }
            masked_block = None;
        }
        let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if body.starts_with("slack_configs:") {
            in_slack = true;
            slack_indent = indent;
        } else if in_slack
            && !trimmed.is_empty()
            && indent <= slack_indent
            && !trimmed.starts_with('-')
        {
            in_slack = false;
        }
        let masked = body.split_once(':').and_then(|(key, value)| {
            let key = key.trim();
            let value = value.trim();
            let secret = SECRET_KEYS.contains(&key) || (in_slack && key == "api_url");
            (secret && !value.is_empty() && !value.starts_with('#')).then(|| {
                if value.starts_with('|') || value.starts_with('>') {
                    masked_block = Some(indent);
                }
                let prefix_len = line.len() - body.len();
                format!("{}{key}: <secret>", &line[..prefix_len])
            })
        });
        out.push_str(masked.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AmConfig, String> {
        AmConfig::parse(Path::new("/etc/am.yml"), text).map_err(|e| e.to_string())
    }

    const FULL: &str = r#"
global:
  resolve_timeout: 1m
  smtp_smarthost: localhost:25
  smtp_from: am@example.org
route:
  receiver: team-a
  group_by: [alertname]
  routes:
  - matchers: ['severity="critical"', 'team=~"a|b"']
    receiver: pager
    continue: true
  - match: {service: db}
    match_re: {env: prod.*}
    receiver: team-a
    group_by: ['...']
    group_wait: 1s
inhibit_rules:
- source_matchers: [severity="critical"]
  target_matchers: [severity="warning"]
  equal: [alertname]
time_intervals:
- name: nights
  time_intervals:
  - times: [{start_time: '00:00', end_time: '06:00'}]
receivers:
- name: team-a
  webhook_configs:
  - url: http://127.0.0.1:5001/hook
  email_configs:
  - to: a@example.org
    auth_password: hunter2
- name: pager
  pagerduty_configs:
  - routing_key: abc
"#;

    #[test]
    fn masks_an_inline_tls_key_block() {
        let text = "receivers:\n- name: a\n  webhook_configs:\n  - url: http://x\n    http_config:\n      tls_config:\n        key: |\n          -----BEGIN PRIVATE KEY-----\n          c2VjcmV0\n          -----END PRIVATE KEY-----\n        insecure_skip_verify: true\n";
        let masked = mask_secrets(text);
        assert!(masked.contains("        key: <secret>\n"), "{masked}");
        assert!(
            !masked.contains("c2VjcmV0") && !masked.contains("BEGIN"),
            "{masked}"
        );
        assert!(
            masked.contains("        insecure_skip_verify: true"),
            "{masked}"
        );
    }

    #[test]
    fn parses_a_full_file() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.global.resolve_timeout.0, Duration::from_secs(60));
        assert_eq!(c.route.opts.receiver, "team-a");
        assert_eq!(c.route.opts.group_wait, DEFAULT_GROUP_WAIT);
        assert_eq!(c.route.key, "{}");
        assert_eq!(
            c.route.routes[0].key,
            r#"{}/{severity="critical",team=~"a|b"}"#
        );
        assert_eq!(c.route.routes[1].key, r#"{}/{env=~"prod.*",service="db"}"#);
        assert!(c.route.routes[1].opts.group_by_all);
        assert_eq!(c.route.routes[1].opts.group_wait, Duration::from_secs(1));
        let r = &c.receivers["team-a"];
        assert_eq!(r.webhooks[0].send_resolved, Some(true));
        assert_eq!(r.emails[0].smarthost, "localhost:25");
        assert_eq!(r.emails[0].send_resolved, Some(false));
        assert!(c.original.contains("auth_password: <secret>"));
        assert!(!c.original.contains("hunter2"));
        let labels: LabelSet = [
            ("severity", "critical"),
            ("team", "a"),
            ("service", "db"),
            ("env", "prod"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let m: Vec<usize> = c.route.matching(&labels).iter().map(|r| r.id).collect();
        assert_eq!(m, vec![1, 2]);
        let other: LabelSet = [("x".to_string(), "y".to_string())].into();
        assert_eq!(c.route.matching(&other)[0].id, 0);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = parse("route:\n  receiver: x\nreceivers:\n- name: y\n").unwrap_err();
        assert!(
            e.contains("/etc/am.yml")
                && e.contains("route.receiver")
                && e.contains("undefined receiver \"x\""),
            "{e}"
        );
        let e = parse("route:\n  receiver: x\n  recevier: y\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("recevier"), "{e}");
        let e = parse("receivers:\n- name: x\n").unwrap_err();
        assert!(e.contains("no routes provided"), "{e}");
        let e = parse("route:\n  receiver: x\n  group_by: ['...', a]\nreceivers:\n- name: x\n")
            .unwrap_err();
        assert!(e.contains("wildcard"), "{e}");
        let e = parse("route:\n  receiver: x\nreceivers:\n- name: x\n  webhook_configs:\n  - {}\n")
            .unwrap_err();
        assert!(
            e.contains("receivers[0].webhook_configs[0]") && e.contains("url"),
            "{e}"
        );
        let e = parse(
            "route:\n  receiver: x\n  routes:\n  - matchers: ['a=~\"(\"']\nreceivers:\n- name: x\n",
        )
        .unwrap_err();
        assert!(e.contains("route.routes[0].matchers"), "{e}");
        let e = parse("route:\n  receiver: x\n  routes:\n  - mute_time_intervals: [nope]\nreceivers:\n- name: x\n").unwrap_err();
        assert!(e.contains("undefined time interval"), "{e}");
        assert!(parse("route:\n  receiver: x\nreceivers:\n- name: x\n  opsgenie_configs:\n  - api_key: k\n").is_ok());
    }

    #[test]
    fn default_config_loads() {
        let c = AmConfig::default_config();
        assert_eq!(c.route.opts.receiver, "default");
        assert!(c.receivers.contains_key("default"));
    }
}
