//! Batching and pushing to Loki-compatible endpoints: protobuf with snappy,
//! per-tenant requests, retries with exponential backoff on 429, 5xx and
//! connection errors.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::labels::Labels;
use lucia_proto::logproto::{
    EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::metrics::AgentMetrics;
use crate::positions::{Position, Positions};
use crate::tail::Shipment;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client {url}: {message}")]
    Build { url: String, message: String },
}

/// One configured client.
pub struct Client {
    config: ClientConfig,
    http: reqwest::Client,
    host: String,
    auth: Option<Auth>,
}

enum Auth {
    Basic(String, Option<String>),
    Bearer(String),
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let build_err = |message: String| ClientError::Build {
            url: config.url.clone(),
            message,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .user_agent(concat!("lucia-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| build_err(e.to_string()))?;
        let auth = if let Some(basic) = &config.basic_auth {
            let password = match (&basic.password, &basic.password_file) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(file)) => Some(
                    std::fs::read_to_string(file)
                        .map_err(|e| build_err(format!("password_file {}: {e}", file.display())))?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            };
            Some(Auth::Basic(basic.username.clone(), password))
        } else if let Some(token) = &config.bearer_token {
            Some(Auth::Bearer(token.clone()))
        } else if let Some(file) = &config.bearer_token_file {
            Some(Auth::Bearer(
                std::fs::read_to_string(file)
                    .map_err(|e| build_err(format!("bearer_token_file {}: {e}", file.display())))?
                    .trim()
                    .to_string(),
            ))
        } else {
            None
        };
        let host = config
            .url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or(&config.url)
            .to_string();
        Ok(Self {
            config,
            http,
            host,
            auth,
        })
    }

    /// Pushes `entries` (all tenants), retrying as configured. Gives up when
    /// `stop` is cancelled (the entries are then not acknowledged).
    async fn push(&self, entries: &[Shipment], metrics: &AgentMetrics, stop: &Shutdown) -> bool {
        let mut by_tenant: BTreeMap<Option<&str>, Vec<&Shipment>> = BTreeMap::new();
        for s in entries {
            let tenant = s
                .entry
                .tenant
                .as_deref()
                .or(self.config.tenant_id.as_deref());
            by_tenant.entry(tenant).or_default().push(s);
        }
        for (tenant, shipments) in by_tenant {
            let (body, count, bytes) = match self.encode(&shipments) {
                Ok(encoded) => encoded,
                Err(err) => {
                    tracing::error!(%err, "cannot compress a batch");
                    continue;
                }
            };
            if count == 0 {
                continue;
            }
            if !self.send(tenant, body, count, bytes, metrics, stop).await {
                return false;
            }
        }
        true
    }

    fn encode(&self, shipments: &[&Shipment]) -> Result<(Vec<u8>, u64, u64), snap::Error> {
        let mut streams: BTreeMap<String, Vec<EntryAdapter>> = BTreeMap::new();
        let mut count = 0;
        let mut bytes = 0;
        for s in shipments {
            let e = &s.entry;
            let mut labels: BTreeMap<&str, &str> = self
                .config
                .external_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            for (k, v) in &e.labels {
                if !k.starts_with("__") {
                    labels.insert(k, v);
                }
            }
            if labels.is_empty() {
                tracing::warn!(line = %e.line, "entry without labels dropped");
                continue;
            }
            let key = Labels::from_pairs(labels).to_string();
            count += 1;
            bytes += e.line.len() as u64;
            streams.entry(key).or_default().push(EntryAdapter {
                timestamp: Some(Timestamp::from_unix_nanos(e.timestamp)),
                line: e.line.clone(),
                structured_metadata: e
                    .structured_metadata
                    .iter()
                    .map(|(name, value)| LabelPairAdapter {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            });
        }
        let request = PushRequest {
            streams: streams
                .into_iter()
                .map(|(labels, entries)| StreamAdapter {
                    labels,
                    entries,
                    hash: 0,
                })
                .collect(),
        };
        let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())?;
        Ok((body, count, bytes))
    }

    async fn send(
        &self,
        tenant: Option<&str>,
        body: Vec<u8>,
        count: u64,
        bytes: u64,
        metrics: &AgentMetrics,
        stop: &Shutdown,
    ) -> bool {
        let backoff = &self.config.backoff_config;
        let mut delay = backoff.min_period.0;
        let host_labels = vec![("host".to_string(), self.host.clone())];
        let mut attempt = 0;
        loop {
            let mut request = self
                .http
                .post(&self.config.url)
                .header("Content-Type", "application/x-protobuf")
                .body(body.clone());
            if let Some(tenant) = tenant {
                request = request.header("X-Scope-OrgID", tenant);
            }
            for (k, v) in &self.config.headers {
                request = request.header(k, v);
            }
            request = match &self.auth {
                Some(Auth::Basic(user, password)) => request.basic_auth(user, password.as_ref()),
                Some(Auth::Bearer(token)) => request.bearer_auth(token),
                None => request,
            };
            let retry_reason = match request.send().await {
                Ok(resp) if resp.status().is_success() => {
                    metrics
                        .sent_entries
                        .get_or_create(&host_labels)
                        .inc_by(count);
                    metrics.sent_bytes.get_or_create(&host_labels).inc_by(bytes);
                    return true;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let rate_limited = status.as_u16() == 429;
                    if rate_limited && self.config.drop_rate_limited_batches {
                        tracing::warn!(url = %self.config.url, %status, "rate limited batch dropped");
                        metrics.dropped(&self.host, "rate_limited", count, bytes);
                        return true;
                    }
                    if !rate_limited && !status.is_server_error() {
                        tracing::error!(url = %self.config.url, %status, body = %text.trim(), entries = count, "batch rejected, dropped");
                        metrics.dropped(&self.host, "rejected", count, bytes);
                        return true;
                    }
                    format!("{status}: {}", text.trim())
                }
                Err(err) => format!("{err}"),
            };
            if attempt >= backoff.max_retries {
                tracing::error!(url = %self.config.url, error = %retry_reason, entries = count, "batch dropped after all retries");
                metrics.dropped(&self.host, "max_retries", count, bytes);
                return true;
            }
            attempt += 1;
            metrics.batch_retries.get_or_create(&host_labels).inc();
            tracing::warn!(url = %self.config.url, error = %retry_reason, retry_in = ?delay, "push failed, retrying");
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(backoff.max_period.0.max(backoff.min_period.0));
        }
    }
}

/// Where batches go.
pub enum Sink {
    Clients(Vec<Client>),
    /// `--dry-run`: print entries to stdout.
    Stdout,
}

/// Collects entries into batches and ships them; records positions once a
/// batch was acknowledged by every client. Ends when every sender is gone;
/// `abort` makes it give up retrying (used on shutdown).
pub async fn ship(
    mut rx: mpsc::Receiver<Shipment>,
    sink: Sink,
    batch_wait: Duration,
    batch_size: usize,
    positions: Positions,
    metrics: AgentMetrics,
    abort: Shutdown,
) {
    let mut batch: Vec<Shipment> = Vec::new();
    let mut bytes = 0usize;
    let mut deadline: Option<Instant> = None;
    loop {
        let flush = tokio::select! {
            received = rx.recv() => match received {
                Some(s) => {
                    bytes += s.entry.line.len();
                    batch.push(s);
                    metrics.queued_entries.set(batch.len() as i64);
                    deadline.get_or_insert_with(|| Instant::now() + batch_wait);
                    bytes >= batch_size
                }
                None => break,
            },
            _ = sleep_until(deadline) => true,
        };
        if flush {
            if !flush_batch(&batch, &sink, &positions, &metrics, &abort).await {
                return;
            }
            batch.clear();
            bytes = 0;
            deadline = None;
            metrics.queued_entries.set(0);
        }
    }
    if !batch.is_empty() {
        flush_batch(&batch, &sink, &positions, &metrics, &abort).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn flush_batch(
    batch: &[Shipment],
    sink: &Sink,
    positions: &Positions,
    metrics: &AgentMetrics,
    abort: &Shutdown,
) -> bool {
    match sink {
        Sink::Clients(clients) => {
            for client in clients {
                if !client.push(batch, metrics, abort).await {
                    return false;
                }
            }
        }
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            for s in batch {
                let labels =
                    Labels::from_pairs(s.entry.labels.iter().filter(|(k, _)| !k.starts_with("__")));
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}",
                    lucia_common::time::format_rfc3339_nanos(s.entry.timestamp),
                    labels,
                    s.entry.line
                );
            }
            return true;
        }
    }
    for s in batch {
        if let Some((path, file)) = &s.source {
            positions.set(
                path,
                Position {
                    offset: s.entry.offset,
                    file: *file,
                },
            );
        }
    }
    // Saved after every acknowledged batch (not only every sync_period), so
    // that a SIGKILL re-sends at most the batch in flight.
    if let Err(err) = positions.save() {
        tracing::error!(%err, "cannot save positions");
    }
    true
}
