//! The PagerDuty integration: Events API v2 (`routing_key`) or v1
//! (`service_key`), as Alertmanager sends them.

use std::collections::BTreeMap;

use serde_json::json;

use super::{NotifyEnv, NotifyError, post_json, read_secret_file};
use crate::amconfig::PagerdutyConfig;
use crate::model::Alert;

const V1_URL: &str = "https://events.pagerduty.com/generic/2010-04-15/create_event.json";

fn default_details() -> BTreeMap<String, String> {
    [
        (
            "firing",
            r#"{{ template "pagerduty.default.instances" .Alerts.Firing }}"#,
        ),
        (
            "resolved",
            r#"{{ template "pagerduty.default.instances" .Alerts.Resolved }}"#,
        ),
        ("num_firing", "{{ .Alerts.Firing | len }}"),
        ("num_resolved", "{{ .Alerts.Resolved | len }}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn truncate(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

pub async fn notify(
    c: &PagerdutyConfig,
    env: &NotifyEnv<'_>,
    alerts: &[Alert],
) -> Result<(), NotifyError> {
    let data = env.template_data(alerts);
    let r = |text: &str| env.render(text, &data);
    let firing = alerts.iter().any(|a| !a.resolved_at(env.now));
    // A stable key per group (Alertmanager uses SHA-256 of the group key).
    let dedup_key = format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(env.group_key.as_bytes())
    );
    let mut details = BTreeMap::new();
    for (k, v) in c.details.clone().unwrap_or_else(default_details) {
        details.insert(k, r(&v)?);
    }
    let description = truncate(
        r(c.description
            .as_deref()
            .unwrap_or(r#"{{ template "pagerduty.default.description" .}}"#))?,
        1024,
    );
    let client = r(c
        .client
        .as_deref()
        .unwrap_or(r#"{{ template "pagerduty.default.client" . }}"#))?;
    let client_url = r(c
        .client_url
        .as_deref()
        .unwrap_or(r#"{{ template "pagerduty.default.clientURL" . }}"#))?;
    let key = |inline: &str, file: &str| -> Result<String, NotifyError> {
        if !inline.is_empty() {
            Ok(inline.to_string())
        } else {
            read_secret_file(file)
        }
    };
    if !c.routing_key.is_empty() || !c.routing_key_file.is_empty() {
        let mut payload = json!({
            "summary": description,
            "source": if c.source.is_empty() { client.clone() } else { r(&c.source)? },
            "severity": if c.severity.is_empty() { "error".to_string() } else { r(&c.severity)? },
            "custom_details": details,
        });
        for (name, v) in [
            ("class", &c.class),
            ("component", &c.component),
            ("group", &c.group),
        ] {
            if !v.is_empty() {
                payload[name] = json!(r(v)?);
            }
        }
        let mut images = Vec::new();
        for i in &c.images {
            images.push(json!({"src": r(&i.src)?, "alt": r(&i.alt)?, "href": r(&i.href)?}));
        }
        let mut links = Vec::new();
        for l in &c.links {
            links.push(json!({"href": r(&l.href)?, "text": r(&l.text)?}));
        }
        let msg = json!({
            "routing_key": key(&c.routing_key, &c.routing_key_file)?,
            "event_action": if firing { "trigger" } else { "resolve" },
            "dedup_key": dedup_key,
            "payload": payload,
            "images": images,
            "links": links,
            "client": client,
            "client_url": client_url,
        });
        let url = c.url.clone().unwrap_or_default();
        post_json(env.client, &url, c.http_config.as_ref(), &msg).await
    } else {
        let msg = json!({
            "service_key": key(&c.service_key, &c.service_key_file)?,
            "incident_key": dedup_key,
            "event_type": if firing { "trigger" } else { "resolve" },
            "description": description,
            "client": client,
            "client_url": client_url,
            "details": details,
        });
        let url = c
            .url
            .clone()
            .filter(|u| !u.ends_with("/v2/enqueue"))
            .unwrap_or_else(|| V1_URL.to_string());
        post_json(env.client, &url, c.http_config.as_ref(), &msg).await
    }
}
