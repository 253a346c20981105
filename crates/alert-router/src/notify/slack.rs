//! The Slack integration: an incoming-webhook (or chat.postMessage)
//! message with one attachment, as Alertmanager sends it.

use serde::Serialize;
use serde_json::Value;

use super::{NotifyEnv, NotifyError, post_json, read_secret_file};
use crate::amconfig::SlackConfig;
use crate::model::Alert;

#[derive(Serialize)]
struct Field {
    title: String,
    value: String,
    short: bool,
}

#[derive(Serialize, Default)]
struct Attachment {
    #[serde(skip_serializing_if = "String::is_empty")]
    title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    title_link: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pretext: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    text: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    fallback: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    callback_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<Field>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    actions: Vec<Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    image_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    thumb_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    footer: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    color: String,
    mrkdwn_in: Vec<String>,
}

#[derive(Serialize)]
struct Request {
    #[serde(skip_serializing_if = "String::is_empty")]
    channel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    icon_emoji: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    icon_url: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    link_names: bool,
    attachments: Vec<Attachment>,
}

fn or_default(v: &Option<String>, default: &str) -> String {
    v.clone().unwrap_or_else(|| default.to_string())
}

pub async fn notify(
    c: &SlackConfig,
    env: &NotifyEnv<'_>,
    alerts: &[Alert],
) -> Result<(), NotifyError> {
    let data = env.template_data(alerts);
    let r = |text: &str| env.render(text, &data);
    let mut att = Attachment {
        title: r(&or_default(
            &c.title,
            r#"{{ template "slack.default.title" . }}"#,
        ))?,
        title_link: r(&or_default(
            &c.title_link,
            r#"{{ template "slack.default.titlelink" . }}"#,
        ))?,
        pretext: r(&or_default(
            &c.pretext,
            r#"{{ template "slack.default.pretext" . }}"#,
        ))?,
        text: r(&or_default(
            &c.text,
            r#"{{ template "slack.default.text" . }}"#,
        ))?,
        fallback: r(&or_default(
            &c.fallback,
            r#"{{ template "slack.default.fallback" . }}"#,
        ))?,
        callback_id: r(&or_default(
            &c.callback_id,
            r#"{{ template "slack.default.callbackid" . }}"#,
        ))?,
        image_url: r(&c.image_url)?,
        thumb_url: r(&c.thumb_url)?,
        footer: r(&or_default(
            &c.footer,
            r#"{{ template "slack.default.footer" . }}"#,
        ))?,
        color: r(&or_default(
            &c.color,
            r#"{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}"#,
        ))?,
        mrkdwn_in: c
            .mrkdwn_in
            .clone()
            .unwrap_or_else(|| vec!["fallback".into(), "pretext".into(), "text".into()]),
        ..Default::default()
    };
    for f in &c.fields {
        att.fields.push(Field {
            title: r(&f.title)?,
            value: r(&f.value)?,
            short: f.short.unwrap_or(c.short_fields),
        });
    }
    for a in &c.actions {
        att.actions.push(serde_json::json!({
            "type": r(&a.kind)?, "text": r(&a.text)?, "url": r(&a.url)?,
            "style": r(&a.style)?, "name": r(&a.name)?, "value": r(&a.value)?,
        }));
    }
    let req = Request {
        channel: r(&c.channel)?,
        username: r(&or_default(
            &c.username,
            r#"{{ template "slack.default.username" . }}"#,
        ))?,
        icon_emoji: r(&or_default(
            &c.icon_emoji,
            r#"{{ template "slack.default.iconemoji" . }}"#,
        ))?,
        icon_url: r(&or_default(
            &c.icon_url,
            r#"{{ template "slack.default.iconurl" . }}"#,
        ))?,
        link_names: c.link_names,
        attachments: vec![att],
    };
    let url = match (&c.api_url, &c.api_url_file) {
        (Some(u), _) => u.clone(),
        (None, Some(f)) => read_secret_file(f)?,
        _ => return Err(NotifyError::fatal("slack config without api_url")),
    };
    post_json(env.client, &url, c.http_config.as_ref(), &req).await
}
