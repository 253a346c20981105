//! Loki's HTTP read API.

pub mod detected;
pub mod encode;
pub mod params;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lucia_common::Shutdown;
use lucia_common::labels::Labels;
use lucia_common::matchers::Matcher;
use lucia_common::tenant::tenant_from_headers;
use lucia_common::time::now_nanos;
use serde_json::{Value, json};

use crate::QueryError;
use crate::eval::{Evaluator, InstantQuery, RangeQuery};
use crate::limits::QueryLimits;
use crate::source::{Direction, LogSource, SelectRequest, StreamData};
use params::{Params, selector_of};

/// Loki's default `limit` of log queries.
const DEFAULT_LIMIT: usize = 100;

/// The read API's state.
pub struct Querier<S: LogSource> {
    pub(crate) eval: Evaluator<S>,
    pub(crate) limits: QueryLimits,
    pub(crate) multi_tenant: bool,
    pub(crate) tail_poll: Duration,
    pub(crate) shutdown: Shutdown,
}

impl<S: LogSource> Querier<S> {
    pub fn new(
        source: S,
        limits: QueryLimits,
        multi_tenant: bool,
        tail_poll: Duration,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            eval: Evaluator::new(source, &limits),
            limits,
            multi_tenant,
            tail_poll,
            shutdown,
        }
    }

    pub fn source(&self) -> &S {
        self.eval.source()
    }

    /// Runs `f` within the query timeout.
    async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        let timeout = self.limits.query_timeout.0;
        if timeout.is_zero() {
            return f.await;
        }
        tokio::time::timeout(timeout, f).await.map_err(|_| {
            QueryError::Timeout(lucia_common::duration::format_prometheus_duration(timeout))
        })?
    }

    /// Label sets of the streams matching `matchers` (or every stream).
    async fn series_of(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        self.limits.check_length(start, end)?;
        self.timed(
            self.source()
                .series(tenant, matchers, start, end.saturating_add(1)),
        )
        .await
    }

    /// Every entry of the streams `query` selects in the range, for the
    /// endpoints that look at lines (stats, volume, detected fields).
    async fn entries(
        &self,
        tenant: &str,
        query: &str,
        start: i64,
        end: i64,
        limit: usize,
    ) -> Result<Vec<StreamData>, QueryError> {
        let matchers = selector_of(query)?;
        self.limits.check_length(start, end)?;
        self.timed(self.source().select(SelectRequest {
            tenant: tenant.to_string(),
            matchers,
            start,
            end: end.saturating_add(1),
            direction: Direction::Backward,
            limit,
            line_filter: None,
        }))
        .await
    }
}

/// The entries the query's pipeline keeps (line filters, label filters on
/// parsed fields or levels), unchanged, for the endpoints that detect
/// fields: Logs Drilldown sends its filters in the query and expects the
/// fields and values of the matching lines only.
fn keep_matching(query: &str, streams: Vec<StreamData>) -> Result<Vec<StreamData>, QueryError> {
    let expr = lucia_logql::parse(query).map_err(|err| QueryError::BadRequest(err.to_string()))?;
    let lucia_logql::ast::Expr::Log(log) = expr else {
        return Ok(streams);
    };
    if log.stages.is_empty() {
        return Ok(streams);
    }
    let pipeline = crate::engine::pipeline::Pipeline::compile(&log, None)?;
    Ok(streams
        .into_iter()
        .filter_map(|mut stream| {
            let mut per_stream = pipeline.for_stream(&stream.labels);
            stream
                .entries
                .retain(|e| per_stream.process(e.ts, &e.line, &e.metadata).is_some());
            (!stream.entries.is_empty()).then_some(stream)
        })
        .collect())
}

/// Whether `query` has stages after its selector (then the line limit
/// applies after them, not to the selected lines).
fn has_stages(query: &str) -> bool {
    matches!(
        lucia_logql::parse(query),
        Ok(lucia_logql::ast::Expr::Log(log)) if !log.stages.is_empty()
    )
}

/// What a handler gets: the state, the tenant and the parameters.
struct Request {
    tenant: String,
    params: Params,
    headers: HeaderMap,
}

fn request(
    multi_tenant: bool,
    headers: HeaderMap,
    raw_query: Option<String>,
    body: &Bytes,
) -> Result<Request, QueryError> {
    let tenant = tenant_from_headers(&headers, multi_tenant)?;
    let params = Params::new(raw_query.as_deref(), &headers, body);
    Ok(Request {
        tenant,
        params,
        headers,
    })
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// The routes of the read API.
pub fn router<S: LogSource + 'static>(querier: Arc<Querier<S>>) -> Router {
    let mut router = Router::new();
    for prefix in ["/loki/api/v1", "/api/prom"] {
        router = router
            .route(&format!("{prefix}/query"), get(query::<S>).post(query::<S>))
            .route(
                &format!("{prefix}/query_range"),
                get(query_range::<S>).post(query_range::<S>),
            )
            .route(
                &format!("{prefix}/labels"),
                get(labels::<S>).post(labels::<S>),
            )
            .route(
                &format!("{prefix}/label"),
                get(labels::<S>).post(labels::<S>),
            )
            .route(
                &format!("{prefix}/label/{{name}}/values"),
                get(label_values::<S>).post(label_values::<S>),
            )
            .route(
                &format!("{prefix}/series"),
                get(series::<S>).post(series::<S>),
            )
            .route(&format!("{prefix}/tail"), get(crate::tail::tail::<S>));
    }
    let v1 = "/loki/api/v1";
    router
        .route(
            &format!("{v1}/index/stats"),
            get(index_stats::<S>).post(index_stats::<S>),
        )
        .route(
            &format!("{v1}/index/volume"),
            get(volume::<S>).post(volume::<S>),
        )
        .route(
            &format!("{v1}/index/volume_range"),
            get(volume_range::<S>).post(volume_range::<S>),
        )
        .route(
            &format!("{v1}/detected_labels"),
            get(detected_labels::<S>).post(detected_labels::<S>),
        )
        .route(
            &format!("{v1}/detected_fields"),
            get(detected_fields::<S>).post(detected_fields::<S>),
        )
        .route(
            &format!("{v1}/detected_field/{{name}}/values"),
            get(detected_field_values::<S>).post(detected_field_values::<S>),
        )
        .route(
            &format!("{v1}/patterns"),
            get(patterns::<S>).post(patterns::<S>),
        )
        .route(
            &format!("{v1}/format_query"),
            get(format_query::<S>).post(format_query::<S>),
        )
        .route(&format!("{v1}/status/buildinfo"), get(buildinfo))
        .route(
            &format!("{v1}/drilldown-limits"),
            get(drilldown_limits::<S>),
        )
        .with_state(querier)
}

type Answer = Result<Response, QueryError>;

fn categorize(headers: &HeaderMap) -> bool {
    headers
        .get_all(encode::ENCODING_FLAGS_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|flag| flag.trim() == encode::CATEGORIZE_LABELS)
}

async fn query<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let query = r.params.query()?.to_string();
    let time = r.params.time("time")?.unwrap_or_else(now_nanos);
    let limit = r.params.usize("limit", DEFAULT_LIMIT)?;
    q.limits.check_entries(limit)?;
    let direction = r.params.direction()?;
    let output = q
        .timed(q.eval.instant(InstantQuery {
            tenant: r.tenant,
            query,
            time,
            limit,
            direction,
        }))
        .await?;
    check_result_size(&q.limits, &output.data)?;
    let body = encode::query_response(&output, categorize(&r.headers), direction);
    Ok(axum::Json(body).into_response())
}

async fn query_range<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let query = r.params.query()?.to_string();
    let (start, end) = r.params.range()?;
    let limit = r.params.usize("limit", DEFAULT_LIMIT)?;
    let step = r.params.step(start, end)?;
    let interval = r
        .params
        .duration("interval")?
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    let direction = r.params.direction()?;
    q.limits.check_entries(limit)?;
    q.limits.check_length(start, end)?;
    let output = q
        .timed(q.eval.range(RangeQuery {
            tenant: r.tenant,
            query,
            start,
            end,
            step,
            interval,
            limit,
            direction,
        }))
        .await?;
    check_result_size(&q.limits, &output.data)?;
    let body = encode::query_response(&output, categorize(&r.headers), direction);
    Ok(axum::Json(body).into_response())
}

fn check_result_size(
    limits: &QueryLimits,
    data: &crate::eval::ResultData,
) -> Result<(), QueryError> {
    use crate::eval::ResultData;
    let count = match data {
        ResultData::Streams(s) => s.len(),
        ResultData::Vector(v) => v.len(),
        ResultData::Matrix(m) => m.len(),
        ResultData::Scalar { .. } => 0,
    };
    limits.check_series(count)
}

/// The matchers of the optional `query` parameter of the label endpoints.
fn optional_selector(params: &Params) -> Result<Vec<Matcher>, QueryError> {
    params.get("query").map_or(Ok(Vec::new()), selector_of)
}

async fn labels<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let (start, end) = r.params.range()?;
    let matchers = optional_selector(&r.params)?;
    let series = q.series_of(&r.tenant, &matchers, start, end).await?;
    let names: BTreeSet<&str> = series
        .iter()
        .flat_map(|l| l.iter().map(|l| l.name.as_str()))
        .collect();
    Ok(success(json!(names)))
}

async fn label_values<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let (start, end) = r.params.range()?;
    let matchers = optional_selector(&r.params)?;
    let series = q.series_of(&r.tenant, &matchers, start, end).await?;
    let values: BTreeSet<&str> = series.iter().filter_map(|l| l.get(&name)).collect();
    Ok(success(json!(values)))
}

async fn series<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let (start, end) = r.params.range()?;
    let selectors = r.params.all("match[]");
    let selectors = if selectors.is_empty() {
        r.params.all("match")
    } else {
        selectors
    };
    if selectors.is_empty() {
        return Err(QueryError::BadRequest(
            "match[] parameter is missing: send at least one stream selector".into(),
        ));
    }
    let mut seen = BTreeMap::new();
    for selector in selectors {
        let matchers = selector_of(selector)?;
        for labels in q.series_of(&r.tenant, &matchers, start, end).await? {
            seen.entry(labels.to_string()).or_insert(labels);
        }
    }
    q.limits.check_series(seen.len())?;
    let data: Vec<Value> = seen.values().map(encode::labels_object).collect();
    Ok(success(Value::Array(data)))
}

async fn index_stats<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let (start, end) = r.params.range()?;
    let streams = q
        .entries(&r.tenant, r.params.query()?, start, end, 0)
        .await?;
    let entries: usize = streams.iter().map(|s| s.entries.len()).sum();
    let bytes: usize = streams
        .iter()
        .flat_map(|s| s.entries.iter())
        .map(lucia_common::chunk::Entry::size)
        .sum();
    // Chunks are not counted apart: each stream with data has at least one.
    Ok(axum::Json(json!({
        "streams": streams.len(),
        "chunks": streams.len(),
        "bytes": bytes,
        "entries": entries,
    }))
    .into_response())
}

/// Bytes per group of labels: by the given `targetLabels`, else by the
/// names the selector matches on, as Loki does.
fn volume_groups(
    streams: &[StreamData],
    matchers: &[Matcher],
    params: &Params,
) -> Vec<(Labels, Vec<(i64, u64)>)> {
    let targets: Vec<String> = match params.get("targetLabels") {
        Some(t) => t
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => matchers.iter().map(|m| m.name.clone()).collect(),
    };
    let by_labels = params.get("aggregateBy") == Some("labels");
    let mut groups: BTreeMap<String, (Labels, Vec<(i64, u64)>)> = BTreeMap::new();
    for stream in streams {
        let keys: Vec<Labels> = if by_labels {
            targets
                .iter()
                .filter(|name| stream.labels.get(name).is_some())
                .map(|name| Labels::from_pairs([(name.as_str(), "")]))
                .collect()
        } else {
            let mut key = Labels::new();
            for name in &targets {
                if let Some(value) = stream.labels.get(name) {
                    key.insert(name.clone(), value);
                }
            }
            vec![if targets.is_empty() {
                stream.labels.clone()
            } else {
                key
            }]
        };
        for key in keys {
            let group = groups
                .entry(key.to_string())
                .or_insert_with(|| (key.clone(), Vec::new()));
            group
                .1
                .extend(stream.entries.iter().map(|e| (e.ts, e.size() as u64)));
        }
    }
    groups.into_values().collect()
}

async fn volume<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let (start, end) = r.params.range()?;
    let query = r.params.query()?;
    let limit = r.params.usize("limit", DEFAULT_LIMIT)?;
    let streams = q.entries(&r.tenant, query, start, end, 0).await?;
    let mut groups: Vec<(Labels, u64)> = volume_groups(&streams, &selector_of(query)?, &r.params)
        .into_iter()
        .map(|(labels, sizes)| (labels, sizes.iter().map(|(_, b)| b).sum()))
        .collect();
    groups.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
    });
    groups.truncate(limit);
    let result: Vec<Value> = groups
        .iter()
        .map(|(labels, bytes)| {
            let mut p = encode::point(end, 0.0);
            p[1] = Value::String(bytes.to_string());
            json!({"metric": encode::labels_object(labels), "value": p})
        })
        .collect();
    Ok(success(json!({"resultType": "vector", "result": result})))
}

async fn volume_range<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let (start, end) = r.params.range()?;
    let step = r.params.step(start, end)?;
    let query = r.params.query()?;
    let limit = r.params.usize("limit", DEFAULT_LIMIT)?;
    let streams = q.entries(&r.tenant, query, start, end, 0).await?;
    let mut groups = volume_groups(&streams, &selector_of(query)?, &r.params);
    groups.sort_by_key(|(_, sizes)| std::cmp::Reverse(sizes.iter().map(|(_, b)| b).sum::<u64>()));
    groups.truncate(limit);
    let result: Vec<Value> = groups
        .iter()
        .map(|(labels, sizes)| {
            // Each entry counts at the first step at or after it.
            let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
            for (ts, bytes) in sizes {
                let offset = (ts - start + step - 1).div_euclid(step);
                *buckets.entry(start + offset * step).or_default() += bytes;
            }
            let values: Vec<Value> = buckets
                .into_iter()
                .map(|(ts, bytes)| {
                    let mut p = encode::point(ts, 0.0);
                    p[1] = Value::String(bytes.to_string());
                    p
                })
                .collect();
            json!({"metric": encode::labels_object(labels), "values": values})
        })
        .collect();
    Ok(success(json!({"resultType": "matrix", "result": result})))
}

async fn detected_labels<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let (start, end) = r.params.range()?;
    let matchers = optional_selector(&r.params)?;
    let series = q.series_of(&r.tenant, &matchers, start, end).await?;
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for labels in &series {
        for l in labels.iter() {
            values.entry(&l.name).or_default().insert(&l.value);
        }
    }
    // As Loki: labels whose values are all numbers or UUIDs are IDs, not
    // worth a breakdown, except the static ones.
    const STATIC: [&str; 4] = ["cluster", "namespace", "instance", "pod"];
    let detected: Vec<Value> = values
        .iter()
        .filter(|(name, _)| !name.starts_with("__"))
        .filter(|(name, v)| STATIC.contains(name) || !v.iter().all(|v| is_id(v)))
        .map(|(name, v)| json!({"label": name, "cardinality": v.len()}))
        .collect();
    Ok(axum::Json(json!({"detectedLabels": detected})).into_response())
}

/// A number or a UUID (the forms Go's uuid.Parse reads).
fn is_id(value: &str) -> bool {
    if value.parse::<f64>().is_ok() {
        return true;
    }
    let v = value.strip_prefix("urn:uuid:").unwrap_or(value);
    let v = v
        .strip_prefix('{')
        .and_then(|v| v.strip_suffix('}'))
        .unwrap_or(v);
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    match v.len() {
        32 => hex(v),
        36 => {
            let parts: Vec<&str> = v.split('-').collect();
            parts.len() == 5
                && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts.iter().all(|p| hex(p))
        }
        _ => false,
    }
}

async fn detected_fields<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let (start, end) = r.params.range()?;
    let line_limit = r.params.usize("line_limit", 1000)?;
    let limit = r.params.usize("limit", q.limits.max_detected_fields)?;
    let query = r.params.query()?;
    let select_limit = if has_stages(query) { 0 } else { line_limit };
    let streams = q
        .entries(&r.tenant, query, start, end, select_limit)
        .await?;
    let streams = keep_matching(query, streams)?;
    let fields = detected::detect(&streams, line_limit);
    Ok(
        axum::Json(json!({"fields": detected::fields_json(&fields, limit), "limit": limit}))
            .into_response(),
    )
}

async fn detected_field_values<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    let (start, end) = r.params.range()?;
    let line_limit = r.params.usize("line_limit", 1000)?;
    let limit = r.params.usize("limit", q.limits.max_detected_fields)?;
    let query = r.params.query()?;
    let select_limit = if has_stages(query) { 0 } else { line_limit };
    let streams = q
        .entries(&r.tenant, query, start, end, select_limit)
        .await?;
    let streams = keep_matching(query, streams)?;
    let fields = detected::detect(&streams, line_limit);
    let values: Vec<&String> = fields
        .get(&name)
        .map(|f| f.values.iter().take(limit).collect())
        .unwrap_or_default();
    Ok(axum::Json(json!({"values": values, "limit": limit})).into_response())
}

/// No pattern ingester yet: a valid, empty answer.
async fn patterns<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let r = request(q.multi_tenant, headers, raw, &body)?;
    r.params.query()?;
    r.params.range()?;
    Ok(success(json!([])))
}

async fn format_query<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let params = Params::new(raw.as_deref(), &headers, &body);
    let formatted = q.eval.format(params.query()?)?;
    Ok(success(Value::String(formatted)))
}

async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

async fn drilldown_limits<S: LogSource + 'static>(State(q): State<Arc<Querier<S>>>) -> Response {
    let fmt = lucia_common::duration::format_prometheus_duration;
    axum::Json(json!({
        "limits": {
            "discover_log_levels": true,
            "discover_service_name": [
                "service", "app", "application", "app_name", "name", "app_kubernetes_io_name",
                "container", "container_name", "k8s_container_name", "component", "workload", "job",
                "k8s_job_name"
            ],
            "log_level_fields": ["level", "LEVEL", "Level", "Severity", "severity", "SEVERITY", "lvl", "LVL", "Lvl", "severity_text", "Severity_Text", "SEVERITY_TEXT"],
            "max_entries_limit_per_query": q.limits.max_entries_limit_per_query,
            "max_line_size_truncate": false,
            "max_query_bytes_read": "0B",
            "max_query_length": fmt(q.limits.max_query_length.0),
            "max_query_lookback": "0s",
            "max_query_range": "0s",
            "max_query_series": q.limits.max_query_series,
            "metric_aggregation_enabled": false,
            "pattern_persistence_enabled": false,
            "query_timeout": fmt(q.limits.query_timeout.0),
            "retention_period": "0s",
            "retention_stream": [],
            "volume_enabled": true,
            "volume_max_series": 1000
        },
        "pattern_ingester_enabled": false,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucia_common::chunk::Entry;

    #[test]
    fn detected_fields_see_only_lines_the_pipeline_keeps() {
        let entry = |ts, line: &str| Entry {
            ts,
            line: line.into(),
            metadata: vec![],
        };
        let streams = vec![StreamData {
            labels: Labels::from_pairs([("app", "a")]),
            entries: vec![entry(1, "level=info a"), entry(2, "level=error b")],
        }];
        let kept = keep_matching(r#"{app="a"} | logfmt | level="error""#, streams.clone()).unwrap();
        assert_eq!(kept[0].entries.len(), 1);
        assert_eq!(kept[0].entries[0].line, "level=error b");
        assert!(
            keep_matching(r#"{app="a"} |= "zzz""#, streams.clone())
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            keep_matching(r#"{app="a"}"#, streams).unwrap()[0]
                .entries
                .len(),
            2
        );
        assert!(has_stages(r#"{app="a"} | json"#));
        assert!(!has_stages(r#"{app="a"}"#));
    }

    #[test]
    fn ids_are_numbers_and_uuids() {
        assert!(is_id("42"));
        assert!(is_id("1.5"));
        assert!(is_id("123e4567-e89b-12d3-a456-426614174000"));
        assert!(is_id("{123e4567-e89b-12d3-a456-426614174000}"));
        assert!(is_id("123e4567e89b12d3a456426614174000"));
        assert!(!is_id("checkout"));
        assert!(!is_id("123e4567-e89b-12d3-a456-42661417400z"));
    }
}
