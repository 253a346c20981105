//! Notifications: the data every integration renders (Alertmanager's
//! template data), the integrations, and retries with backoff.

pub mod email;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::amconfig::{
    EmailConfig, HttpConfig, PagerdutyConfig, Receiver, SlackConfig, WebhookConfig,
};
use crate::model::{Alert, LabelSet, Time, fingerprint_string, format_rfc3339_nano, zero_time};

/// Serializes a time the way Go's `encoding/json` does.
fn ser_time<S: serde::Serializer>(t: &Time, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339_nano(t))
}

/// One alert of a notification.
#[derive(Debug, Clone, Serialize)]
pub struct AlertData {
    pub status: String,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    #[serde(rename = "startsAt", serialize_with = "ser_time")]
    pub starts_at: Time,
    #[serde(rename = "endsAt", serialize_with = "ser_time")]
    pub ends_at: Time,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Alertmanager's template data.
#[derive(Debug, Clone, Serialize)]
pub struct Data {
    pub receiver: String,
    pub status: String,
    pub alerts: Vec<AlertData>,
    #[serde(rename = "groupLabels")]
    pub group_labels: LabelSet,
    #[serde(rename = "commonLabels")]
    pub common_labels: LabelSet,
    #[serde(rename = "commonAnnotations")]
    pub common_annotations: LabelSet,
    #[serde(rename = "externalURL")]
    pub external_url: String,
}

fn common(sets: &[&LabelSet]) -> LabelSet {
    let Some(first) = sets.first() else {
        return LabelSet::new();
    };
    let mut out: LabelSet = (*first).clone();
    for s in &sets[1..] {
        out.retain(|k, v| s.get(k) == Some(v));
        if out.is_empty() {
            break;
        }
    }
    out
}

/// Go's `regexp.QuoteMeta`, which Alertmanager applies to the receiver
/// name of the template data. It escapes fewer characters than
/// `regex::escape` (not `-`, `#`, `&` or `~`), so `team-a` stays `team-a`.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Data {
    /// Builds the data for `alerts` (firing alerts carry a zero end time,
    /// as Alertmanager's flush leaves them).
    pub fn new(
        receiver: &str,
        group_labels: &LabelSet,
        alerts: &[Alert],
        external_url: &str,
        now: Time,
    ) -> Self {
        let firing = alerts.iter().any(|a| !a.resolved_at(now));
        let data_alerts = alerts
            .iter()
            .map(|a| {
                let resolved = a.resolved_at(now);
                AlertData {
                    status: if resolved { "resolved" } else { "firing" }.to_string(),
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at: a.starts_at,
                    ends_at: if resolved { a.ends_at } else { zero_time() },
                    generator_url: a.generator_url.clone(),
                    fingerprint: fingerprint_string(a.fingerprint()),
                }
            })
            .collect();
        let labels: Vec<&LabelSet> = alerts.iter().map(|a| &a.labels).collect();
        let annotations: Vec<&LabelSet> = alerts.iter().map(|a| &a.annotations).collect();
        Self {
            receiver: quote_meta(receiver),
            status: if firing { "firing" } else { "resolved" }.to_string(),
            alerts: data_alerts,
            group_labels: group_labels.clone(),
            common_labels: common(&labels),
            common_annotations: common(&annotations),
            external_url: external_url.to_string(),
        }
    }
}

/// A failed notification attempt.
#[derive(Debug, Clone)]
pub struct NotifyError {
    pub retry: bool,
    pub message: String,
}

impl NotifyError {
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            retry: true,
            message: message.into(),
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retry: false,
            message: message.into(),
        }
    }
}

/// One integration of a receiver.
#[derive(Debug, Clone)]
pub enum Integration {
    Webhook(WebhookConfig),
    Email(EmailConfig),
    Slack(SlackConfig),
    Pagerduty(PagerdutyConfig),
}

impl Integration {
    /// The integrations of a receiver with their index per kind.
    pub fn of(receiver: &Receiver) -> Vec<(Integration, usize)> {
        let mut out = Vec::new();
        for (i, c) in receiver.emails.iter().enumerate() {
            out.push((Integration::Email(c.clone()), i));
        }
        for (i, c) in receiver.pagerduties.iter().enumerate() {
            out.push((Integration::Pagerduty(c.clone()), i));
        }
        for (i, c) in receiver.slacks.iter().enumerate() {
            out.push((Integration::Slack(c.clone()), i));
        }
        for (i, w) in receiver.webhooks.iter().enumerate() {
            out.push((Integration::Webhook(w.clone()), i));
        }
        out
    }

    pub fn name(&self) -> &'static str {
        match self {
            Integration::Webhook(_) => "webhook",
            Integration::Email(_) => "email",
            Integration::Slack(_) => "slack",
            Integration::Pagerduty(_) => "pagerduty",
        }
    }

    pub fn send_resolved(&self) -> bool {
        match self {
            Integration::Webhook(c) => c.send_resolved.unwrap_or(true),
            Integration::Email(c) => c.send_resolved.unwrap_or(false),
            Integration::Slack(c) => c.send_resolved.unwrap_or(false),
            Integration::Pagerduty(c) => c.send_resolved.unwrap_or(true),
        }
    }

    pub async fn notify(&self, env: &NotifyEnv<'_>, alerts: &[Alert]) -> Result<(), NotifyError> {
        match self {
            Integration::Webhook(c) => webhook::notify(c, env, alerts).await,
            Integration::Email(c) => email::notify(c, env, alerts).await,
            Integration::Slack(c) => slack::notify(c, env, alerts).await,
            Integration::Pagerduty(c) => pagerduty::notify(c, env, alerts).await,
        }
    }
}

/// What an integration needs besides its own config.
pub struct NotifyEnv<'a> {
    pub client: &'a reqwest::Client,
    pub receiver: &'a str,
    pub group_key: &'a str,
    pub group_labels: &'a LabelSet,
    pub external_url: &'a str,
    pub templates: &'a lucia_common::gotemplate::Templates,
    pub now: Time,
}

impl NotifyEnv<'_> {
    pub fn data(&self, alerts: &[Alert]) -> Data {
        Data::new(
            self.receiver,
            self.group_labels,
            alerts,
            self.external_url,
            self.now,
        )
    }

    /// The data of `alerts` as template values.
    pub fn template_data(&self, alerts: &[Alert]) -> lucia_common::gotemplate::Value {
        crate::templates::data_value(&self.data(alerts))
    }

    /// Renders a config field's template.
    pub fn render(
        &self,
        text: &str,
        data: &lucia_common::gotemplate::Value,
    ) -> Result<String, NotifyError> {
        self.templates
            .render(text, data)
            .map_err(|e| NotifyError::fatal(format!("template: {e}")))
    }
}

/// Reads a secret from a file (trailing newline trimmed).
pub fn read_secret_file(path: &str) -> Result<String, NotifyError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| NotifyError::fatal(format!("cannot read {path}: {e}")))
}

/// Applies `http_config` authentication to a request.
pub fn apply_http_config(
    mut req: reqwest::RequestBuilder,
    cfg: Option<&HttpConfig>,
) -> Result<reqwest::RequestBuilder, NotifyError> {
    let Some(cfg) = cfg else {
        return Ok(req);
    };
    let header = cfg
        .http()
        .authorization_header()
        .map_err(NotifyError::fatal)?;
    if let Some(value) = header {
        req = req.header("Authorization", value);
    }
    Ok(req)
}

/// Sends a JSON body and maps the answer like Alertmanager's retrier: 2xx
/// is success, 5xx and 429 are retried, other codes are not.
pub async fn post_json<T: Serialize>(
    client: &reqwest::Client,
    url: &str,
    http_config: Option<&HttpConfig>,
    body: &T,
) -> Result<(), NotifyError> {
    let bytes = serde_json::to_vec(body).map_err(|e| NotifyError::fatal(e.to_string()))?;
    // An http_config with a tls_config has its own client.
    let client = http_config
        .and_then(|h| h.client.as_ref())
        .unwrap_or(client);
    let req = client
        .post(url)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("Alertmanager/0.25.0 lucia/", env!("CARGO_PKG_VERSION")),
        )
        .body(bytes);
    let req = apply_http_config(req, http_config)?;
    let resp = req.send().await.map_err(|e| {
        NotifyError::retry(format!(
            "request to {} failed: {}",
            redact(url),
            lucia_common::http_client::error_chain(&e)
        ))
    })?;
    check_status(resp).await
}

pub async fn check_status(resp: reqwest::Response) -> Result<(), NotifyError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(256).collect();
    let message = format!("unexpected status code {}: {body}", status.as_u16());
    if status.is_server_error() || status.as_u16() == 429 {
        Err(NotifyError::retry(message))
    } else {
        Err(NotifyError::fatal(message))
    }
}

/// A URL without its query and user info, for logs.
pub fn redact(url: &str) -> String {
    let no_query = url.split('?').next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let host_path = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
            format!("{scheme}://{host_path}")
        }
        None => no_query.to_string(),
    }
}

/// Exponential backoff like Alertmanager's (cenkalti/backoff defaults:
/// 500 ms, ×1.5, ±50% jitter, at most 60 s); the first try is immediate.
pub struct Backoff {
    next: Duration,
    first: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(500),
            first: true,
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        if self.first {
            self.first = false;
            return Duration::ZERO;
        }
        let base = self.next;
        self.next = (self.next.mul_f64(1.5)).min(Duration::from_secs(60));
        let jitter: f64 = rand::random::<f64>() - 0.5; // ±50%
        base.mul_f64(1.0 + jitter)
    }
}

/// Truncates to `max` alerts (0 = no limit), returning how many were cut.
pub fn truncate(alerts: &[Alert], max: u64) -> (&[Alert], u64) {
    if max == 0 || alerts.len() as u64 <= max {
        return (alerts, 0);
    }
    let max = max as usize;
    (&alerts[..max], (alerts.len() - max) as u64)
}

/// A sorted map, for JSON payload fields.
pub type KV = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn http_config_sets_the_authorization_header() {
        let header = |yaml: &str| {
            let cfg: HttpConfig = serde_saphyr::from_str(yaml).expect("http_config");
            let client = lucia_common::http_client::client();
            let request = apply_http_config(client.get("http://localhost/"), Some(&cfg))
                .expect("apply")
                .build()
                .expect("request");
            request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        assert_eq!(
            header("basic_auth:\n  username: u\n  password: p\n").as_deref(),
            Some("Basic dTpw")
        );
        assert_eq!(
            header("authorization:\n  credentials: t\n").as_deref(),
            Some("Bearer t")
        );
        assert_eq!(
            header("authorization:\n  type: Token\n  credentials: t\n").as_deref(),
            Some("Token t")
        );
        assert_eq!(header("bearer_token: b\n").as_deref(), Some("Bearer b"));
        assert_eq!(header("follow_redirects: true\n"), None);
    }

    fn alert(pairs: &[(&str, &str)], resolved: bool) -> Alert {
        let now = Utc::now();
        Alert {
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary".to_string(), "s".to_string())].into(),
            starts_at: now - chrono::Duration::minutes(5),
            ends_at: if resolved {
                now - chrono::Duration::minutes(1)
            } else {
                now + chrono::Duration::minutes(5)
            },
            generator_url: String::new(),
            updated_at: now,
            timeout: false,
        }
    }

    #[test]
    fn data_has_common_labels_and_zero_end_for_firing() {
        let alerts = vec![
            alert(&[("alertname", "A"), ("job", "x")], false),
            alert(&[("alertname", "A"), ("job", "y")], true),
        ];
        let gl: LabelSet = [("alertname".to_string(), "A".to_string())].into();
        let d = Data::new("team.a", &gl, &alerts, "http://am:9093", Utc::now());
        assert_eq!(d.receiver, r"team\.a");
        assert_eq!(quote_meta("db-all #1 (x)"), r"db-all #1 \(x\)");
        assert_eq!(d.status, "firing");
        assert_eq!(d.common_labels.len(), 1);
        assert_eq!(d.common_annotations.len(), 1);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(json["alerts"][1]["status"], "resolved");
    }

    #[test]
    fn backoff_grows() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(), Duration::ZERO);
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(250) && d1 <= Duration::from_millis(750));
        assert_eq!(
            redact("https://u:p@hooks.slack.com/x?token=1"),
            "https://hooks.slack.com/x"
        );
    }
}
