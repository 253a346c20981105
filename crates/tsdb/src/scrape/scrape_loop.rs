//! One target's scrape loop: fetch, parse, label, append, report, and write
//! staleness markers, as Prometheus' `scrapeLoop` does.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lucia_common::Shutdown;
use lucia_common::labels::{is_valid_label_name, is_valid_metric_name};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

use super::config::{PoolConfig, ScrapeProtocol};
use super::metrics::ScrapeMetrics;
use super::parser::{self, Format};
use super::target::{LabelMap, TargetSpec, sample_labels};
use crate::append::{SampleAppender, SeriesSamples};
use crate::promql::stale_nan;

/// `up`, `scrape_duration_seconds`, … : the series every scrape reports.
pub const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

const USER_AGENT: &str = concat!("Lucia/", env!("CARGO_PKG_VERSION"));

/// Health of a target as the targets API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Unknown,
    Up,
    Down,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Up => "up",
            HealthState::Down => "down",
        }
    }
}

/// The last scrape of a target.
#[derive(Debug, Clone)]
pub struct Health {
    pub state: HealthState,
    pub last_error: String,
    pub last_scrape: Option<SystemTime>,
    pub last_duration: Duration,
}

/// A target as its loop and the targets API share it.
#[derive(Debug)]
pub struct TargetStatus {
    pub pool: String,
    pub spec: TargetSpec,
    /// Labels before relabeling, updated when discovery changes labels
    /// that relabeling then removes (the target stays the same).
    pub discovered: Mutex<LabelMap>,
    pub health: Mutex<Health>,
    /// Set by the pool when the target must not be scraped (target_limit).
    pub forced_error: Mutex<Option<String>>,
}

impl TargetStatus {
    pub fn new(pool: String, spec: TargetSpec) -> Self {
        Self {
            pool,
            discovered: Mutex::new(spec.discovered.clone()),
            spec,
            health: Mutex::new(Health {
                state: HealthState::Unknown,
                last_error: String::new(),
                last_scrape: None,
                last_duration: Duration::ZERO,
            }),
            forced_error: Mutex::new(None),
        }
    }
}

/// What a loop remembers between scrapes.
#[derive(Debug, Default)]
pub struct SeriesCache {
    /// Series as written in the body → labels after relabeling (`None`:
    /// dropped by `metric_relabel_configs`).
    relabeled: HashMap<String, Option<Arc<LabelMap>>>,
    /// Series of the last scrape → whether staleness is tracked for it
    /// (not for samples with their own timestamp).
    last: HashMap<Arc<LabelMap>, bool>,
    /// When the last scrape ran (ms), if any.
    last_scrape_ms: Option<i64>,
}

/// Why a loop stops.
pub enum Stop {
    /// The target went away: write staleness markers after two intervals
    /// unless it came back.
    Removed,
    /// A new loop takes the target over: hand it the cache, write nothing.
    Handover(oneshot::Sender<SeriesCache>),
    /// Another member owns the target now, or the manager stops: write
    /// nothing.
    Quiet,
}

/// What every loop of a pool shares.
pub struct LoopContext<A> {
    pub appender: Arc<A>,
    pub tenant: Arc<str>,
    pub http: reqwest::Client,
    pub pool: Arc<PoolConfig>,
    pub metrics: ScrapeMetrics,
    pub shutdown: Shutdown,
    /// Whether the pool still has a target with this key (end-of-run
    /// staleness is skipped for targets that came back).
    pub is_active: Arc<dyn Fn(u64) -> bool + Send + Sync>,
}

impl<A> Clone for LoopContext<A> {
    fn clone(&self) -> Self {
        Self {
            appender: self.appender.clone(),
            tenant: self.tenant.clone(),
            http: self.http.clone(),
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            is_active: self.is_active.clone(),
        }
    }
}

/// A running loop.
pub struct LoopHandle {
    stop: Option<oneshot::Sender<Stop>>,
    pub status: Arc<TargetStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl LoopHandle {
    pub fn stop(mut self, how: Stop) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(how);
        }
    }

    /// Stops the loop and takes its series over for a loop with a new
    /// config (waits for a scrape in flight to finish). Relabeling results
    /// are dropped: the new config may relabel differently.
    pub async fn handover(self) -> SeriesCache {
        let (tx, rx) = oneshot::channel();
        self.stop(Stop::Handover(tx));
        let mut cache = rx.await.unwrap_or_default();
        cache.relabeled.clear();
        cache
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

pub fn spawn<A: SampleAppender>(
    ctx: LoopContext<A>,
    status: Arc<TargetStatus>,
    cache: SeriesCache,
) -> LoopHandle {
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(run(ctx, status.clone(), cache, rx));
    LoopHandle {
        stop: Some(tx),
        status,
        task,
    }
}

fn now_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long until the target's slot in the interval: Prometheus spreads
/// targets over the interval by their hash, at fixed phases.
fn first_delay(key: u64, interval: Duration) -> Duration {
    let interval_ns = interval.as_nanos().max(1);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let offset = u128::from(key) % interval_ns;
    let phase = now_ns % interval_ns;
    let wait = (offset + interval_ns - phase) % interval_ns;
    Duration::from_nanos(wait as u64)
}

async fn run<A: SampleAppender>(
    ctx: LoopContext<A>,
    status: Arc<TargetStatus>,
    mut cache: SeriesCache,
    mut stop: oneshot::Receiver<Stop>,
) {
    let interval = status.spec.interval;
    let start = tokio::time::Instant::now() + first_delay(status.spec.key, interval);
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return,
            how = &mut stop => {
                match how {
                    Ok(Stop::Handover(tx)) => { let _ = tx.send(cache); }
                    Ok(Stop::Removed) => end_of_run(&ctx, &status, cache, ticker).await,
                    Ok(Stop::Quiet) | Err(_) => {}
                }
                return;
            }
            _ = ticker.tick() => {}
        }
        scrape_and_report(&ctx, &status, &mut cache).await;
    }
}

/// Prometheus' `endOfRunStaleness`: wait for the next scrape time (the
/// markers' timestamp), one more interval and 10%, then mark every series
/// stale unless the target came back.
async fn end_of_run<A: SampleAppender>(
    ctx: &LoopContext<A>,
    status: &TargetStatus,
    cache: SeriesCache,
    mut ticker: tokio::time::Interval,
) {
    if cache.last_scrape_ms.is_none() {
        return;
    }
    let interval = status.spec.interval;
    let stale_ms = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        _ = ticker.tick() => now_ms(SystemTime::now()),
    };
    tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        _ = ticker.tick() => {}
    }
    tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        _ = tokio::time::sleep(interval / 10) => {}
    }
    if (ctx.is_active)(status.spec.key) {
        return;
    }
    let mut batch: Vec<SeriesSamples> = cache
        .last
        .iter()
        .filter(|(_, tracked)| **tracked)
        .map(|(labels, _)| SeriesSamples {
            labels: (**labels).clone(),
            samples: vec![(stale_ms, stale_nan())],
        })
        .collect();
    for name in REPORT_SERIES {
        batch.push(SeriesSamples {
            labels: report_labels(name, &status.spec.public),
            samples: vec![(stale_ms, stale_nan())],
        });
    }
    append(ctx, batch).await;
}

fn report_labels(name: &str, target: &LabelMap) -> LabelMap {
    let mut labels = target.clone();
    labels.insert("__name__".into(), name.to_string());
    labels
}

/// Counts of one scrape, for the report series.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    scraped: usize,
    post_relabel: usize,
    series_added: usize,
}

async fn scrape_and_report<A: SampleAppender>(
    ctx: &LoopContext<A>,
    status: &TargetStatus,
    cache: &mut SeriesCache,
) {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let ts = now_ms(started_at);
    let forced = status.forced_error.lock().clone();
    let fetched = match forced {
        Some(err) => Err(err),
        None => fetch(ctx, &status.spec).await,
    };
    let mut counts = Counts::default();
    let outcome = fetched.and_then(|(body, format)| {
        build_samples(ctx, status, cache, &body, format, ts, &mut counts)
    });
    let (mut batch, current, error) = match outcome {
        Ok((batch, current)) => (batch, current, None),
        Err(err) => (Vec::new(), HashMap::new(), Some(err)),
    };
    // Series of the last scrape that are gone get a staleness marker.
    for (labels, tracked) in &cache.last {
        if *tracked && !current.contains_key(labels) {
            batch.push(SeriesSamples {
                labels: (**labels).clone(),
                samples: vec![(ts, stale_nan())],
            });
        }
    }
    cache.last = current;
    cache.last_scrape_ms = Some(ts);
    if error.is_some() {
        counts.series_added = 0;
    }
    let duration = started.elapsed();
    let up = if error.is_none() { 1.0 } else { 0.0 };
    let values = [
        up,
        duration.as_secs_f64(),
        counts.scraped as f64,
        counts.post_relabel as f64,
        counts.series_added as f64,
    ];
    for (name, value) in REPORT_SERIES.into_iter().zip(values) {
        batch.push(SeriesSamples {
            labels: report_labels(name, &status.spec.public),
            samples: vec![(ts, value)],
        });
    }
    ctx.metrics
        .scrape_result(&ctx.pool.job_name, error.is_none());
    if let Some(err) = &error {
        tracing::debug!(target_url = %status.spec.url, %err, "scrape failed");
    }
    {
        let mut health = status.health.lock();
        health.state = if error.is_none() {
            HealthState::Up
        } else {
            HealthState::Down
        };
        health.last_error = error.unwrap_or_default();
        health.last_scrape = Some(started_at);
        health.last_duration = duration;
    }
    append(ctx, batch).await;
}

async fn append<A: SampleAppender>(ctx: &LoopContext<A>, batch: Vec<SeriesSamples>) {
    match ctx.appender.append(&ctx.tenant, batch).await {
        Ok(report) => {
            if report.rejected > 0 {
                ctx.metrics.samples_rejected.inc_by(report.rejected as u64);
                tracing::debug!(
                    job = %ctx.pool.job_name,
                    rejected = report.rejected,
                    reason = report.first_rejection.as_deref().unwrap_or(""),
                    "storage rejected scraped samples"
                );
            }
        }
        Err(err) => {
            ctx.metrics.append_failures.inc();
            tracing::warn!(job = %ctx.pool.job_name, %err, "cannot store scraped samples");
        }
    }
}

type Current = HashMap<Arc<LabelMap>, bool>;

/// Parses the body into the scrape's series; any error fails the whole
/// scrape, as in Prometheus.
fn build_samples<A>(
    ctx: &LoopContext<A>,
    status: &TargetStatus,
    cache: &mut SeriesCache,
    body: &str,
    format: Format,
    ts: i64,
    counts: &mut Counts,
) -> Result<(Vec<SeriesSamples>, Current), String> {
    let pool = &ctx.pool;
    let scrape = &pool.scrape;
    let exposition = parser::parse(body, format).map_err(|e| e.to_string())?;
    counts.scraped = exposition.samples.len();
    let mut relabeled = HashMap::with_capacity(cache.relabeled.len().max(16));
    let mut current: Current = HashMap::with_capacity(exposition.samples.len());
    let mut batch = Vec::with_capacity(exposition.samples.len() + REPORT_SERIES.len());
    let mut limit_exceeded = false;
    let mut duplicates = 0u64;
    for sample in &exposition.samples {
        let labels = match cache.relabeled.remove(sample.series) {
            Some(labels) => labels,
            None => {
                let labels = sample_labels(
                    &sample.name,
                    &sample.labels,
                    &status.spec.public,
                    scrape.honor_labels,
                    &scrape.metric_relabel_configs,
                );
                if let Some(labels) = &labels {
                    check_series(labels, pool)?;
                }
                labels.map(Arc::new)
            }
        };
        relabeled.insert(sample.series.to_string(), labels.clone());
        let Some(labels) = labels else {
            continue;
        };
        counts.post_relabel += 1;
        if pool.sample_limit > 0 && counts.post_relabel as u64 > pool.sample_limit {
            limit_exceeded = true;
            continue;
        }
        if current.contains_key(&labels) {
            duplicates += 1;
            continue;
        }
        let (t, tracked) = match sample.timestamp_ms {
            Some(t) if scrape.honor_timestamps => (t, scrape.track_timestamps_staleness),
            _ => (ts, true),
        };
        if !cache.last.contains_key(&labels) {
            counts.series_added += 1;
        }
        current.insert(labels.clone(), tracked);
        batch.push(SeriesSamples {
            labels: (*labels).clone(),
            samples: vec![(t, sample.value)],
        });
    }
    cache.relabeled = relabeled;
    if duplicates > 0 {
        ctx.metrics.duplicate_timestamps.inc_by(duplicates);
    }
    if limit_exceeded {
        ctx.metrics.exceeded_sample_limit.inc();
        return Err("sample limit exceeded".into());
    }
    Ok((batch, current))
}

/// Prometheus' checks of a new series: a valid name, valid label names,
/// and the label limits.
fn check_series(labels: &LabelMap, pool: &PoolConfig) -> Result<(), String> {
    let name = labels.get("__name__").map(String::as_str).unwrap_or("");
    if name.is_empty() {
        return Err("missing metric name (__name__ label)".into());
    }
    if !is_valid_metric_name(name) || !labels.keys().all(|k| is_valid_label_name(k)) {
        return Err(format!(
            "invalid metric name or label names: {}",
            format_labels(labels)
        ));
    }
    let limits = pool.label_limits;
    let short = |s: &str| s.chars().take(50).collect::<String>();
    if limits.label_limit > 0 && labels.len() as u64 > limits.label_limit {
        return Err(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
            short(name),
            labels.len(),
            limits.label_limit
        ));
    }
    for (k, v) in labels {
        if limits.name_length > 0 && k.len() as u64 > limits.name_length {
            return Err(format!(
                "label_name_length_limit exceeded (metric: {}, label name: {}, length: {}, limit: {})",
                short(name),
                short(k),
                k.len(),
                limits.name_length
            ));
        }
        if limits.value_length > 0 && v.len() as u64 > limits.value_length {
            return Err(format!(
                "label_value_length_limit exceeded (metric: {}, label name: {}, value: {:?}, length: {}, limit: {})",
                short(name),
                short(k),
                short(v),
                v.len(),
                limits.value_length
            ));
        }
    }
    Ok(())
}

fn format_labels(labels: &LabelMap) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Error text of a request failure with its causes (`connection refused`).
fn describe(err: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut last = String::new();
    while let Some(cause) = source {
        last = cause.to_string();
        source = cause.source();
    }
    if err.is_timeout() {
        text.push_str("context deadline exceeded");
    } else if err.is_connect() {
        text.push_str("connect: ");
        text.push_str(if last.is_empty() {
            "connection failed"
        } else {
            &last
        });
    } else if !last.is_empty() {
        text.push_str(&last);
    } else {
        text.push_str(&err.to_string());
    }
    text
}

/// GETs the target and returns its body and format.
async fn fetch<A>(ctx: &LoopContext<A>, spec: &TargetSpec) -> Result<(String, Format), String> {
    let pool = &ctx.pool;
    let url = &spec.url;
    let auth = pool.scrape.http().authorization_header()?;
    let timeout = spec.timeout;
    let mut request = ctx
        .http
        .get(url)
        .header(reqwest::header::ACCEPT, &pool.accept_header)
        .header(
            reqwest::header::ACCEPT_ENCODING,
            if pool.scrape.enable_compression {
                "gzip"
            } else {
                "identity"
            },
        )
        .header(reqwest::header::USER_AGENT, USER_AGENT)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", timeout.as_secs_f64()),
        )
        .timeout(timeout);
    if let Some(auth) = auth {
        request = request.header(reqwest::header::AUTHORIZATION, auth);
    }
    let limit = pool.body_size_limit;
    let work = async {
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("Get {url:?}: {}", describe(&e)))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!(
                "server returned HTTP status {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ));
        }
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let gzip = header(reqwest::header::CONTENT_ENCODING).eq_ignore_ascii_case("gzip");
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("Get {url:?}: {}", describe(&e)))?
        {
            body.extend_from_slice(&chunk);
            if limit > 0 && !gzip && body.len() as u64 > limit {
                ctx.metrics.exceeded_body_size_limit.inc();
                return Err("body size limit exceeded".into());
            }
        }
        Ok((body, content_type, gzip))
    };
    let (body, content_type, gzip) = match tokio::time::timeout(timeout, work).await {
        Ok(result) => result?,
        Err(_) => return Err(format!("Get {url:?}: context deadline exceeded")),
    };
    let body = if gzip {
        let decoder = flate2::read::GzDecoder::new(body.as_slice());
        let mut out = Vec::new();
        let cap = if limit > 0 { limit + 1 } else { u64::MAX };
        decoder
            .take(cap)
            .read_to_end(&mut out)
            .map_err(|e| format!("cannot decompress the gzip body: {e}"))?;
        if limit > 0 && out.len() as u64 > limit {
            ctx.metrics.exceeded_body_size_limit.inc();
            return Err("body size limit exceeded".into());
        }
        out
    } else {
        body
    };
    let format = match Format::from_content_type(&content_type) {
        Some(format) => format,
        None => match pool.fallback_protocol {
            Some(p) if p.is_openmetrics() => Format::OpenMetrics,
            Some(ScrapeProtocol::PrometheusProto) | None => {
                return Err(if content_type.is_empty() {
                    "non-compliant scrape target sending blank Content-Type and no fallback_scrape_protocol specified for target".to_string()
                } else {
                    format!(
                        "received unsupported Content-Type {content_type:?} and no fallback_scrape_protocol specified for target"
                    )
                });
            }
            Some(_) => Format::PrometheusText,
        },
    };
    let text =
        String::from_utf8(body).map_err(|e| format!("the scrape body is not valid UTF-8: {e}"))?;
    Ok((text, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_scrape_is_within_one_interval() {
        for key in [0, 1, u64::MAX, 12345678901234] {
            let d = first_delay(key, Duration::from_secs(15));
            assert!(d < Duration::from_secs(15));
        }
    }
}
