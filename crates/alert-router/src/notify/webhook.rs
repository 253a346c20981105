//! The webhook integration: Alertmanager's version 4 payload.

use serde::Serialize;

use super::{Data, NotifyEnv, NotifyError, post_json, read_secret_file, truncate};
use crate::amconfig::WebhookConfig;
use crate::model::Alert;

#[derive(Serialize)]
struct Message {
    #[serde(flatten)]
    data: Data,
    version: &'static str,
    #[serde(rename = "groupKey")]
    group_key: String,
    #[serde(rename = "truncatedAlerts")]
    truncated_alerts: u64,
}

pub async fn notify(
    config: &WebhookConfig,
    env: &NotifyEnv<'_>,
    alerts: &[Alert],
) -> Result<(), NotifyError> {
    let (alerts, truncated) = truncate(alerts, config.max_alerts);
    let msg = Message {
        data: env.data(alerts),
        version: "4",
        group_key: env.group_key.to_string(),
        truncated_alerts: truncated,
    };
    let url = match (&config.url, &config.url_file) {
        (Some(u), _) => u.clone(),
        (None, Some(f)) => read_secret_file(f)?,
        (None, None) => return Err(NotifyError::fatal("webhook without url")),
    };
    post_json(env.client, &url, config.http_config.as_ref(), &msg).await
}
