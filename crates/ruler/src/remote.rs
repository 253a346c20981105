//! The ruler's wire protocols: instant queries over the Prometheus and Loki
//! HTTP APIs, remote write of rule results, Alertmanager API v2 for alerts,
//! and discovery of the endpoints in Consul.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use lucia_common::Shutdown;
use lucia_common::consul::{ConsulClient, ConsulConfig};
use lucia_proto::prometheus as prompb;
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::group::{Appender, OutgoingAlert, QueryEngine};
use crate::rulefile::Language;
use crate::{Labels, QueryValue, Sample};

/// Where the ruler's peers are: configured URLs win, else what Consul
/// reports as passing.
#[derive(Default)]
pub struct Endpoints {
    pub tsdb: RwLock<Vec<String>>,
    pub querier: RwLock<Vec<String>>,
    pub alertmanagers: RwLock<Vec<String>>,
    /// Prefix of alerts' `generatorURL`.
    pub external_url: RwLock<String>,
}

impl Endpoints {
    fn first(list: &RwLock<Vec<String>>) -> Option<String> {
        list.read().first().cloned()
    }
    pub fn tsdb(&self) -> Option<String> {
        Self::first(&self.tsdb)
    }
    pub fn querier(&self) -> Option<String> {
        Self::first(&self.querier)
    }
}

/// Follows the passing instances of `service` in Consul into `target`
/// (blocking queries), until `shutdown`.
pub fn discover(
    consul: &ConsulConfig,
    service: &'static str,
    target: Arc<Endpoints>,
    pick: fn(&Endpoints) -> &RwLock<Vec<String>>,
    shutdown: Shutdown,
) {
    let client = match ConsulClient::new(consul) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "ruler: no consul discovery");
            return;
        }
    };
    tokio::spawn(async move {
        let mut index = 0;
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = client.health_service(service, true, index, Some(Duration::from_secs(30))) => r,
            };
            match result {
                Ok(found) => {
                    index = lucia_common::consul::next_index(index, found.index);
                    let mut urls: Vec<String> = found
                        .value
                        .iter()
                        .filter(|e| e.is_passing())
                        .map(|e| format!("http://{}", e.addr()))
                        .collect();
                    urls.sort();
                    *pick(&target).write() = urls;
                }
                Err(e) => {
                    tracing::warn!(service, error = %e, "ruler: consul discovery failed");
                    index = 0;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        }
    });
}

/// Parses a Prometheus/Loki query API answer into a value.
pub fn parse_query_response(body: &[u8]) -> Result<QueryValue, String> {
    let json: Json =
        serde_json::from_slice(body).map_err(|e| format!("bad query response: {e}"))?;
    if json["status"] != "success" {
        return Err(json["error"].as_str().unwrap_or("query failed").to_string());
    }
    let data = &json["data"];
    let result = &data["result"];
    let labels = |m: &Json| -> Labels {
        m.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let point = |p: &Json| -> Option<(i64, f64)> {
        let t = p.get(0)?.as_f64()?;
        let v = p.get(1)?.as_str()?;
        let v = match v {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            s => s.parse().ok()?,
        };
        Some(((t * 1000.0).round() as i64, v))
    };
    let list = || result.as_array().cloned().unwrap_or_default();
    match data["resultType"].as_str().unwrap_or("") {
        "vector" => Ok(QueryValue::Vector(
            list()
                .iter()
                .filter_map(|s| {
                    Some(Sample {
                        labels: labels(&s["metric"]),
                        value: point(&s["value"])?.1,
                    })
                })
                .collect(),
        )),
        "scalar" => point(result)
            .map(|p| QueryValue::Scalar(p.1))
            .ok_or_else(|| "bad scalar in query response".to_string()),
        "string" => Ok(QueryValue::String(
            result
                .get(1)
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string(),
        )),
        "matrix" => Ok(QueryValue::Matrix(
            list()
                .iter()
                .map(|s| {
                    let points = s["values"]
                        .as_array()
                        .map(|ps| ps.iter().filter_map(point).collect())
                        .unwrap_or_default();
                    (labels(&s["metric"]), points)
                })
                .collect(),
        )),
        "streams" => Err("log queries cannot be used in rules: use a metric query".into()),
        other => Err(format!("unknown result type {other:?}")),
    }
}

/// Shared HTTP plumbing.
#[derive(Clone)]
pub struct Http {
    pub client: reqwest::Client,
    pub endpoints: Arc<Endpoints>,
    pub query_timeout: Duration,
}

impl Http {
    pub fn new(endpoints: Arc<Endpoints>, query_timeout: Duration) -> Result<Self, String> {
        let client = lucia_common::http_client::builder()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            endpoints,
            query_timeout,
        })
    }

    /// One instant query.
    pub async fn query(
        &self,
        language: Language,
        tenant: &str,
        expr: &str,
        t_ms: i64,
    ) -> Result<QueryValue, String> {
        let (base, path, time) = match language {
            Language::Promql => (
                self.endpoints
                    .tsdb()
                    .ok_or("no tsdb to query: set ruler.tsdb_url or use consul")?,
                "/api/v1/query",
                format!("{}.{:03}", t_ms.div_euclid(1000), t_ms.rem_euclid(1000)),
            ),
            Language::Logql => (
                self.endpoints
                    .querier()
                    .ok_or("no querier to query: set ruler.querier_url or use consul")?,
                "/loki/api/v1/query",
                (i128::from(t_ms) * 1_000_000).to_string(),
            ),
        };
        let params: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .append_pair("time", &time)
            .finish();
        let url = format!("{}{path}?{params}", base.trim_end_matches('/'));
        let response = self
            .client
            .get(&url)
            .header("X-Scope-OrgID", tenant)
            .timeout(self.query_timeout)
            .send()
            .await
            .map_err(|e| format!("query {base}: {e}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("query {base}: {e}"))?;
        match parse_query_response(&body) {
            Ok(v) => Ok(v),
            Err(_) if !status.is_success() && serde_json::from_slice::<Json>(&body).is_err() => {
                Err(String::from_utf8_lossy(&body).trim().to_string())
            }
            Err(e) => Err(e),
        }
    }

    /// Remote-writes samples to tsdb.
    pub async fn write(&self, tenant: &str, samples: &[(Labels, i64, f64)]) -> Result<(), String> {
        let base = self
            .endpoints
            .tsdb()
            .ok_or("no tsdb to write to: set ruler.tsdb_url or use consul")?;
        let mut series: BTreeMap<&Labels, Vec<prompb::Sample>> = BTreeMap::new();
        for (labels, t, v) in samples {
            series.entry(labels).or_default().push(prompb::Sample {
                value: *v,
                timestamp: *t,
            });
        }
        let request = prompb::WriteRequest {
            timeseries: series
                .into_iter()
                .map(|(labels, samples)| prompb::TimeSeries {
                    labels: labels
                        .iter()
                        .map(|(name, value)| prompb::Label {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    samples,
                    exemplars: Vec::new(),
                })
                .collect(),
            metadata: Vec::new(),
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .map_err(|e| format!("snappy: {e}"))?;
        let url = format!("{}/api/v1/write", base.trim_end_matches('/'));
        let response = self
            .client
            .post(&url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header("X-Scope-OrgID", tenant)
            .timeout(self.query_timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("remote write to {base}: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Err(format!("remote write to {base}: {status}: {}", text.trim()))
        }
    }
}

/// A synchronous [`QueryEngine`] over HTTP, for evaluation on a blocking
/// thread.
pub struct HttpEngine {
    pub http: Http,
    pub language: Language,
    pub tenant: String,
    pub handle: tokio::runtime::Handle,
}

impl QueryEngine for HttpEngine {
    fn instant(&self, expr: &str, t_ms: i64) -> Result<QueryValue, String> {
        // Restoring `for` state asks tsdb for ALERTS_FOR_STATE whatever
        // the group's language.
        let language = if expr.starts_with("ALERTS_FOR_STATE{") {
            Language::Promql
        } else {
            self.language
        };
        self.handle
            .block_on(self.http.query(language, &self.tenant, expr, t_ms))
    }
}

/// A synchronous [`Appender`] over remote write.
pub struct HttpAppender {
    pub http: Http,
    pub tenant: String,
    pub handle: tokio::runtime::Handle,
}

impl Appender for HttpAppender {
    fn append(&self, samples: &[(Labels, i64, f64)]) -> Result<(), String> {
        self.handle.block_on(self.http.write(&self.tenant, samples))
    }
}

/// Notification counters.
#[derive(Clone, Default)]
pub struct NotifierMetrics {
    pub sent: Counter,
    pub errors: Counter,
    pub dropped: Counter,
}

impl NotifierMetrics {
    pub fn register(&self, metrics: &lucia_common::metrics::Metrics) {
        metrics.register(
            "prometheus_notifications_sent",
            "Alerts sent to Alertmanagers (per Alertmanager).",
            self.sent.clone(),
        );
        metrics.register(
            "prometheus_notifications_errors",
            "Alerts that could not be sent (per Alertmanager).",
            self.errors.clone(),
        );
        metrics.register(
            "prometheus_notifications_dropped",
            "Alerts dropped because the queue was full.",
            self.dropped.clone(),
        );
    }
}

/// Prometheus' `maxBatchSize`.
pub const MAX_BATCH: usize = 256;
const QUEUE_CAPACITY: usize = 10_000;

/// Sends alerts to every Alertmanager in batches (Prometheus' notifier).
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<(String, Vec<OutgoingAlert>)>,
    metrics: NotifierMetrics,
}

impl Notifier {
    pub fn start(
        http: Http,
        external_labels: Labels,
        timeout: Duration,
        metrics: NotifierMetrics,
        shutdown: Shutdown,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, Vec<OutgoingAlert>)>(QUEUE_CAPACITY);
        let task_metrics = metrics.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    n = rx.recv() => n,
                };
                let Some((tenant, alerts)) = next else { break };
                // Gather what else is queued for the same tenant.
                let mut batch = alerts;
                let mut later = Vec::new();
                while let Ok((t, more)) = rx.try_recv() {
                    if t == tenant {
                        batch.extend(more);
                    } else {
                        later.push((t, more));
                    }
                }
                let mut work = vec![(tenant, batch)];
                work.extend(later);
                for (tenant, alerts) in work {
                    for chunk in alerts.chunks(MAX_BATCH) {
                        send_batch(
                            &http,
                            &tenant,
                            chunk,
                            &external_labels,
                            timeout,
                            &task_metrics,
                        )
                        .await;
                    }
                }
            }
        });
        Self { tx, metrics }
    }

    /// Queues alerts of `tenant`; drops them when the queue is full.
    pub fn send(&self, tenant: &str, alerts: Vec<OutgoingAlert>) {
        if alerts.is_empty() {
            return;
        }
        let n = alerts.len() as u64;
        if self.tx.try_send((tenant.to_string(), alerts)).is_err() {
            self.metrics.dropped.inc_by(n);
            tracing::warn!(alerts = n, "ruler: notification queue full, alerts dropped");
        }
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The Alertmanager API v2 body for `alerts`, with external labels added
/// where an alert lacks them.
pub fn alerts_body(alerts: &[OutgoingAlert], external_labels: &Labels, external_url: &str) -> Json {
    Json::Array(
        alerts
            .iter()
            .map(|a| {
                let mut labels = a.labels.clone();
                for (k, v) in external_labels {
                    if labels.get(k).is_none_or(|x| x.is_empty()) {
                        labels.insert(k.clone(), v.clone());
                    }
                }
                serde_json::json!({
                    "labels": labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": rfc3339(a.ends_at),
                    "generatorURL": format!("{external_url}{}", a.generator_url),
                })
            })
            .collect(),
    )
}

async fn send_batch(
    http: &Http,
    tenant: &str,
    alerts: &[OutgoingAlert],
    external_labels: &Labels,
    timeout: Duration,
    metrics: &NotifierMetrics,
) {
    let targets = http.endpoints.alertmanagers.read().clone();
    if targets.is_empty() {
        tracing::debug!(
            alerts = alerts.len(),
            "ruler: no alertmanager to send alerts to"
        );
        return;
    }
    let external_url = http.external_url();
    let body = alerts_body(alerts, external_labels, &external_url);
    let sends = targets.iter().map(|base| {
        let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
        let request = http
            .client
            .post(&url)
            .header("X-Scope-OrgID", tenant)
            .timeout(timeout)
            .json(&body);
        async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{url}: {}", r.status())),
                Err(e) => Err(format!("{url}: {e}")),
            }
        }
    });
    let n = alerts.len() as u64;
    for result in futures::future::join_all(sends).await {
        match result {
            Ok(()) => {
                metrics.sent.inc_by(n);
            }
            Err(e) => {
                metrics.errors.inc_by(n);
                tracing::warn!(error = %e, alerts = n, "ruler: sending alerts failed");
            }
        }
    }
}

impl Http {
    fn external_url(&self) -> String {
        self.endpoints.external_url.read().clone()
    }
}
