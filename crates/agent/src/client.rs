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
        let http = lucia_common::http_client::builder_with_tls(config.tls_config.as_ref())
            .map_err(|e| build_err(e.to_string()))?
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
    async fn push(&self, entries: &[&Shipment], metrics: &AgentMetrics, stop: &Shutdown) -> bool {
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

impl Sink {
    /// The `host` label of each client's metrics.
    fn hosts(&self) -> Vec<String> {
        match self {
            Sink::Clients(clients) => clients.iter().map(|c| c.host.clone()).collect(),
            Sink::Stdout => vec![String::new()],
        }
    }
}

/// `limits_config`'s read rate and stream limits, applied to every entry on
/// its way into a batch. Promtail applies the rate after each pipeline and
/// the stream limit per batch; here every source (files, containers,
/// syslog, relayed pushes) feeds one queue, so this one place covers all.
#[derive(Debug, Default)]
pub struct ReadLimits {
    rate: Option<TokenBucket>,
    /// Drop entries over the rate (counted) rather than slow reading down.
    drop: bool,
    /// Distinct streams (tenant and labels) per batch; 0: unlimited.
    max_streams: usize,
}

impl ReadLimits {
    pub fn new(config: &crate::config::LimitsConfig) -> Self {
        let rate = config.readline_rate_enabled.then(|| {
            TokenBucket::new(
                config.readline_rate.unwrap_or(10_000.0),
                config.readline_burst.unwrap_or(10_000),
            )
        });
        Self {
            rate,
            drop: config.readline_rate_drop.unwrap_or(true),
            max_streams: config.max_streams.map_or(0, |n| n as usize),
        }
    }

    /// Without `drop`: how long to wait before the next entry may pass.
    fn throttle(&mut self) -> Option<Duration> {
        match &mut self.rate {
            Some(bucket) if !self.drop => bucket.borrow(std::time::Instant::now()),
            _ => None,
        }
    }

    /// Whether `s` goes into the batch whose streams are `streams`; counts
    /// the entries it drops.
    fn admit(
        &mut self,
        s: &Shipment,
        streams: &mut std::collections::HashSet<String>,
        metrics: &AgentMetrics,
        hosts: &[String],
    ) -> bool {
        if self.drop
            && let Some(bucket) = &mut self.rate
            && !bucket.try_take(std::time::Instant::now())
        {
            metrics.rate_limited_line();
            return false;
        }
        if self.max_streams > 0 {
            let key = stream_key(s);
            if !streams.contains(&key) {
                if streams.len() >= self.max_streams {
                    for host in hosts {
                        metrics.dropped(host, "stream_limited", 1, s.entry.line.len() as u64);
                    }
                    return false;
                }
                streams.insert(key);
            }
        }
        true
    }
}

/// The tenant and the labels that are sent: what makes a stream.
fn stream_key(s: &Shipment) -> String {
    let labels = Labels::from_pairs(s.entry.labels.iter().filter(|(k, _)| !k.starts_with("__")));
    format!("{}\u{0}{labels}", s.entry.tenant.as_deref().unwrap_or(""))
}

/// A token bucket of `rate` tokens a second holding at most `burst`, as
/// Go's `rate.Limiter` that Promtail uses.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            last: std::time::Instant::now(),
        }
    }

    fn refill(&mut self, now: std::time::Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if there is one.
    fn try_take(&mut self, now: std::time::Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes a token, borrowing it if there is none: returns how long to
    /// wait until it is paid back (Go's `Limiter.Wait`).
    fn borrow(&mut self, now: std::time::Instant) -> Option<Duration> {
        self.refill(now);
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64((-self.tokens / self.rate).min(3600.0)))
    }
}

/// Entries collected for the next push; `send[i]` is false for entries a
/// limit dropped (their positions still advance with the batch).
#[derive(Default)]
struct Batch {
    entries: Vec<Shipment>,
    send: Vec<bool>,
    streams: std::collections::HashSet<String>,
    bytes: usize,
}

impl Batch {
    fn clear(&mut self) {
        self.entries.clear();
        self.send.clear();
        self.streams.clear();
        self.bytes = 0;
    }
}

/// Collects entries into batches and ships them; records positions once a
/// batch was acknowledged by every client. Ends when every sender is gone;
/// `abort` makes it give up retrying (used on shutdown).
#[allow(clippy::too_many_arguments)]
pub async fn ship(
    mut rx: mpsc::Receiver<Shipment>,
    sink: Sink,
    batch_wait: Duration,
    batch_size: usize,
    positions: Positions,
    metrics: AgentMetrics,
    abort: Shutdown,
    mut limits: ReadLimits,
) {
    let hosts = sink.hosts();
    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    loop {
        let flush = tokio::select! {
            received = rx.recv() => match received {
                Some(s) => {
                    if let Some(wait) = limits.throttle() {
                        // Over the read rate without drop: the queue fills
                        // while this waits, which slows every reader down.
                        // A batch that falls due meanwhile is pushed first.
                        let until = Instant::now() + wait;
                        if deadline.is_some_and(|d| d <= until) {
                            if !flush_batch(&batch, &sink, &positions, &metrics, &abort).await {
                                return;
                            }
                            batch.clear();
                            deadline = None;
                            metrics.queued_entries.set(0);
                        }
                        tokio::time::sleep_until(until).await;
                    }
                    let send = limits.admit(&s, &mut batch.streams, &metrics, &hosts);
                    if send {
                        batch.bytes += s.entry.line.len();
                    }
                    batch.entries.push(s);
                    batch.send.push(send);
                    metrics.queued_entries.set(batch.entries.len() as i64);
                    deadline.get_or_insert_with(|| Instant::now() + batch_wait);
                    batch.bytes >= batch_size
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
            deadline = None;
            metrics.queued_entries.set(0);
        }
    }
    if !batch.entries.is_empty() {
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
    batch: &Batch,
    sink: &Sink,
    positions: &Positions,
    metrics: &AgentMetrics,
    abort: &Shutdown,
) -> bool {
    let sendable: Vec<&Shipment> = batch
        .entries
        .iter()
        .zip(&batch.send)
        .filter_map(|(s, send)| send.then_some(s))
        .collect();
    match sink {
        Sink::Clients(clients) => {
            for client in clients {
                if !client.push(&sendable, metrics, abort).await {
                    return false;
                }
            }
        }
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            for s in sendable {
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
    for s in &batch.entries {
        if let Some((path, file)) = &s.source {
            positions.set(
                path,
                Position {
                    offset: s.entry.offset,
                    file: *file,
                    fingerprint: s.entry.fingerprint,
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
