//! Prometheus' HTTP API (`/api/v1/...`) over the PromQL engine, as Grafana's
//! Prometheus datasource and promtool call it: the same parameters, JSON
//! envelope, value formatting, error types and status codes as Prometheus.
//!
//! The storage side is the [`QueryBackend`] trait: the role wiring
//! implements it over the real storage; tests implement it over
//! [`crate::promql::MemorySource`]. `/api/v1/targets` is served by the
//! scrape module, not here.
//!
//! Queries run on tokio's blocking pool (storage reads are synchronous)
//! with Prometheus' limits: `max_samples` and a timeout that the engine
//! checks cooperatively, so a timed-out or abandoned query stops using CPU.

mod ast;
pub mod encode;
pub mod error;
pub mod params;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lucia_common::tenant::tenant_from_headers;
use promql_parser::parser::Expr;
use serde_json::{Value as Json, json};

use crate::promql::engine::{TIMED_OUT, parse};
use crate::promql::{Engine, Labels, SeriesSource, Value};
pub use error::ApiError;
use params::{MAX_TIME_MS, MIN_TIME_MS, Params};
pub use status::{HeadStats, MetricMetadata, TsdbStat, TsdbStatus};

/// The Prometheus version `status/buildinfo` reports, so that clients which
/// pick features by version (Grafana, promtool) treat Lucia as a
/// Prometheus with the 2.x HTTP API (`limit` parameters, `format_query`).
pub const PROMETHEUS_COMPAT_VERSION: &str = "2.53.0";

/// Where the API reads a tenant's data.
pub trait QueryBackend: Send + Sync + 'static {
    /// The series of `tenant`.
    fn source(&self, tenant: &str) -> Arc<dyn SeriesSource>;

    /// `status/tsdb`: cardinality of the tenant's series, the `limit`
    /// largest entries of each list. The default reads every series
    /// through [`SeriesSource::select`]; storage with an index overrides it.
    fn tsdb_status(&self, tenant: &str, limit: usize) -> Result<TsdbStatus, crate::promql::Error> {
        status::tsdb_status_from_source(self.source(tenant).as_ref(), limit)
    }

    /// `metadata`: (metric name, its type, help and unit) as scraped; a
    /// metric may have several. Empty by default.
    fn metadata(&self, _tenant: &str) -> Vec<(String, MetricMetadata)> {
        Vec::new()
    }
}

/// Engine limits (Prometheus' `--query.*` flags).
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// `--query.lookback-delta` (5m).
    pub lookback_delta: Duration,
    /// `--query.max-samples` (50,000,000).
    pub max_samples: usize,
    /// `--query.timeout` (2m).
    pub timeout: Duration,
    /// `--enable-feature=promql-experimental-functions`: without it
    /// experimental functions and `limitk`/`limit_ratio` are parse errors.
    pub enable_experimental_functions: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            enable_experimental_functions: false,
        }
    }
}

/// What the API serves from.
#[derive(Clone)]
pub struct ApiState {
    pub backend: Arc<dyn QueryBackend>,
    pub options: QueryOptions,
    /// The YAML `status/config` shows.
    pub config_yaml: String,
    /// The command-line flags `status/flags` shows (name without dashes →
    /// value).
    pub flags: BTreeMap<String, String>,
    /// When the process started (`status/runtimeinfo`).
    pub start_time: SystemTime,
    /// Require `X-Scope-OrgID`; off means every request is tenant `fake`.
    pub multi_tenant: bool,
    /// Answer `rules` and `alerts` (empty); off when a ruler in the same
    /// process serves them.
    pub rules_api: bool,
}

impl ApiState {
    /// State with Prometheus' default limits, no config and no flags.
    pub fn new(backend: Arc<dyn QueryBackend>) -> Self {
        Self {
            backend,
            options: QueryOptions::default(),
            config_yaml: String::new(),
            flags: BTreeMap::new(),
            start_time: SystemTime::now(),
            multi_tenant: false,
            rules_api: true,
        }
    }
}

/// The routes, under `/api/v1`.
pub fn router(state: ApiState) -> Router {
    let rules_api = state.rules_api;
    let st = Arc::new(state);
    let router = Router::new();
    let router = if rules_api {
        router
            .route("/api/v1/rules", get(rules))
            .route("/api/v1/alerts", get(alerts))
    } else {
        router
    };
    router
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route(
            "/api/v1/query_exemplars",
            get(query_exemplars).post(query_exemplars),
        )
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/parse_query", get(parse_query).post(parse_query))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route(
            "/api/v1/label/{name}/values",
            get(label_values).post(label_values),
        )
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/status/config", get(config))
        .route("/api/v1/status/flags", get(flags))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo))
        .route("/api/v1/status/tsdb", get(tsdb_status))
        .with_state(st)
}

type St = State<Arc<ApiState>>;

/// A successful answer.
enum Reply {
    /// `data` already encoded as JSON.
    Raw(String, Vec<String>),
    Json(Json, Vec<String>),
    /// Prometheus answers 204 when there is no data at all.
    NoContent,
}

fn respond(result: Result<Reply, ApiError>) -> Response {
    let (data, warnings) = match result {
        Err(err) => return err.into_response(),
        Ok(Reply::NoContent) => return StatusCode::NO_CONTENT.into_response(),
        Ok(Reply::Raw(data, w)) => (data, w),
        Ok(Reply::Json(data, w)) => (data.to_string(), w),
    };
    let mut body = String::with_capacity(data.len() + 64);
    body.push_str("{\"status\":\"success\",\"data\":");
    body.push_str(&data);
    if !warnings.is_empty() {
        body.push_str(",\"warnings\":");
        body.push_str(&json!(warnings).to_string());
    }
    body.push('}');
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The tenant and parameters of a request.
fn request(
    st: &ApiState,
    headers: &HeaderMap,
    raw_query: Option<&str>,
    body: &[u8],
) -> Result<(String, Params), ApiError> {
    let tenant = tenant_from_headers(headers, st.multi_tenant)?;
    Ok((tenant, Params::new(raw_query, headers, body)))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Sets the flag when dropped: the handler's future is dropped when the
/// client goes away or the query times out, and the engine then stops.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` on the blocking pool, at most `timeout` long (the engine checks
/// its own deadline; this bounds the wait if storage does not return).
async fn blocking<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce(Arc<AtomicBool>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let task = tokio::task::spawn_blocking(move || f(cancel));
    let grace = Duration::from_millis(250);
    match tokio::time::timeout(timeout.saturating_add(grace), task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(ApiError::Internal(format!("query failed: {join}"))),
        Err(_) => Err(ApiError::Timeout(TIMED_OUT.into())),
    }
}

/// Parses a query as Prometheus' engine does before running it: syntax,
/// types and, unless enabled, experimental functions.
fn parse_query_text(st: &ApiState, q: &str) -> Result<Expr, String> {
    let expr = parse_promql(q)?;
    if !st.options.enable_experimental_functions {
        check_experimental(&expr)?;
    }
    Ok(expr)
}

/// Parses PromQL with Prometheus' wording of the common errors (without
/// the line:column prefix, which `promql-parser` does not report).
fn parse_promql(q: &str) -> Result<Expr, String> {
    parse(q).map_err(|e| prometheus_wording(&e.to_string()))
}

fn prometheus_wording(msg: &str) -> String {
    let kind = |t: &str| {
        match t {
            "matrix" => "range vector",
            "vector" => "instant vector",
            other => other,
        }
        .to_string()
    };
    let re = |p: &str| regex::Regex::new(p).ok();
    if let Some(c) = re(r"^expected type (\w+) in call to function '([^']*)', got (\w+)$")
        .and_then(|r| r.captures(msg))
    {
        return format!(
            "parse error: expected type {} in call to function {:?}, got {}",
            kind(&c[1]),
            &c[2],
            kind(&c[3])
        );
    }
    if let Some(c) = re(r"^unknown function with name '([^']*)'$").and_then(|r| r.captures(msg)) {
        return format!("parse error: unknown function with name {:?}", &c[1]);
    }
    format!("parse error: {msg}")
}

fn check_experimental(expr: &Expr) -> Result<(), String> {
    match expr {
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            if op == "limitk" || op == "limit_ratio" {
                return Err(format!(
                    "parse error: {op}() is experimental and must be enabled with --enable-feature=promql-experimental-functions"
                ));
            }
            check_experimental(&a.expr)?;
            if let Some(p) = &a.param {
                check_experimental(p)?;
            }
            Ok(())
        }
        Expr::Call(c) => {
            if c.func.experimental {
                return Err(format!(
                    "parse error: function {:?} is not enabled",
                    c.func.name
                ));
            }
            c.args.args.iter().try_for_each(|a| check_experimental(a))
        }
        Expr::Binary(b) => {
            check_experimental(&b.lhs)?;
            check_experimental(&b.rhs)
        }
        Expr::Unary(u) => check_experimental(&u.expr),
        Expr::Paren(p) => check_experimental(&p.expr),
        Expr::Subquery(s) => check_experimental(&s.expr),
        Expr::MatrixSelector(_)
        | Expr::VectorSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => Ok(()),
    }
}

/// The engine for one query, with the request's `timeout` (bounded by
/// the configured one) and `lookback_delta`.
fn engine_for(st: &ApiState, p: &Params) -> Result<(Engine, Duration), ApiError> {
    let mut timeout = st.options.timeout;
    if let Some(ns) = p.duration_nanos("timeout")? {
        let requested = Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
        if requested < timeout || timeout.is_zero() {
            timeout = requested;
        }
    }
    let mut lookback = st.options.lookback_delta;
    if let Some(v) = p.get("lookback_delta") {
        let ns = params::parse_duration_nanos(v).map_err(|e| {
            ApiError::BadData(format!("error parsing lookback delta duration: {e}"))
        })?;
        if ns > 0 {
            lookback = Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
        }
    }
    let engine = Engine {
        lookback_ms: i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX),
        max_samples: st.options.max_samples,
        timeout: (!timeout.is_zero()).then_some(timeout),
        ..Engine::default()
    };
    let wait = if timeout.is_zero() {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        timeout
    };
    Ok((engine, wait))
}

const TRUNCATED: &str = "results truncated due to limit";

/// Keeps the first `limit` series of a vector or matrix (0: all).
fn truncate_value(value: &mut Value, limit: usize, warnings: &mut Vec<String>) {
    if limit == 0 {
        return;
    }
    let truncated = match value {
        Value::Vector(v) if v.len() > limit => {
            v.truncate(limit);
            true
        }
        Value::Matrix(m) if m.len() > limit => {
            m.truncate(limit);
            true
        }
        _ => false,
    };
    if truncated {
        warnings.push(TRUNCATED.into());
    }
}

fn truncate_list<T>(list: &mut Vec<T>, limit: usize, warnings: &mut Vec<String>) {
    if limit > 0 && list.len() > limit {
        list.truncate(limit);
        warnings.push(TRUNCATED.into());
    }
}

// ---- query ----

async fn query(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    respond(query_inner(st, headers, q, body).await)
}

async fn query_inner(
    st: Arc<ApiState>,
    headers: HeaderMap,
    raw: Option<String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (tenant, p) = request(&st, &headers, raw.as_deref(), &body)?;
    let limit = p.limit()?;
    let t = p.time_or("time", now_ms())?;
    let (mut engine, wait) = engine_for(&st, &p)?;
    let text = p.get("query").unwrap_or("").to_string();
    let expr = parse_query_text(&st, &text).map_err(|e| ApiError::invalid_param("query", e))?;
    let source = st.backend.source(&tenant);
    let mut value = blocking(wait, move |cancel| {
        engine.cancel = Some(cancel);
        Ok(engine.instant_query_parsed(source.as_ref(), &expr, &text, t)?)
    })
    .await?;
    let mut warnings = Vec::new();
    truncate_value(&mut value, limit, &mut warnings);
    Ok(Reply::Raw(encode::query_data(&value, t), warnings))
}

async fn query_range(
    State(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    respond(query_range_inner(st, headers, q, body).await)
}

async fn query_range_inner(
    st: Arc<ApiState>,
    headers: HeaderMap,
    raw: Option<String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (tenant, p) = request(&st, &headers, raw.as_deref(), &body)?;
    let limit = p.limit()?;
    let start = p.time("start")?;
    let end = p.time("end")?;
    if end < start {
        return Err(ApiError::invalid_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step_ns = params::parse_duration_nanos(p.get("step").unwrap_or(""))
        .map_err(|e| ApiError::invalid_param("step", e))?;
    if step_ns <= 0 {
        return Err(ApiError::invalid_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // For safety, Prometheus limits the points per series.
    let span_ns = (i128::from(end) - i128::from(start)) * 1_000_000;
    if span_ns / i128::from(step_ns) > 11_000 {
        return Err(ApiError::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
        ));
    }
    let (mut engine, wait) = engine_for(&st, &p)?;
    let text = p.get("query").unwrap_or("").to_string();
    let expr = parse_query_text(&st, &text).map_err(ApiError::BadData)?;
    let step_ms = (step_ns / 1_000_000).max(1);
    let source = st.backend.source(&tenant);
    let matrix = blocking(wait, move |cancel| {
        engine.cancel = Some(cancel);
        Ok(engine.range_query_parsed(source.as_ref(), &expr, &text, start, end, step_ms)?)
    })
    .await?;
    let mut value = Value::Matrix(matrix);
    let mut warnings = Vec::new();
    truncate_value(&mut value, limit, &mut warnings);
    Ok(Reply::Raw(encode::query_data(&value, end), warnings))
}

async fn query_exemplars(
    State(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    respond((|| {
        let (_tenant, p) = request(&st, &headers, q.as_deref(), &body)?;
        let start = p.time_or("start", MIN_TIME_MS)?;
        let end = p.time_or("end", MAX_TIME_MS)?;
        if end < start {
            return Err(ApiError::BadData(
                "end timestamp must not be before start timestamp".into(),
            ));
        }
        let expr = parse_promql(p.get("query").unwrap_or("")).map_err(ApiError::BadData)?;
        if !has_selector(&expr) {
            return Ok(Reply::NoContent);
        }
        // Exemplars are not stored (yet): no series has any.
        Ok(Reply::Json(json!([]), Vec::new()))
    })())
}

fn has_selector(expr: &Expr) -> bool {
    match expr {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) => true,
        Expr::Aggregate(a) => has_selector(&a.expr) || a.param.as_deref().is_some_and(has_selector),
        Expr::Call(c) => c.args.args.iter().any(|a| has_selector(a)),
        Expr::Binary(b) => has_selector(&b.lhs) || has_selector(&b.rhs),
        Expr::Unary(u) => has_selector(&u.expr),
        Expr::Paren(p) => has_selector(&p.expr),
        Expr::Subquery(s) => has_selector(&s.expr),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => false,
    }
}

async fn format_query(
    State(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    respond((|| {
        let (_tenant, p) = request(&st, &headers, q.as_deref(), &body)?;
        let expr = parse_promql(p.get("query").unwrap_or(""))
            .map_err(|e| ApiError::invalid_param("query", e))?;
        Ok(Reply::Json(json!(expr.prettify()), Vec::new()))
    })())
}

async fn parse_query(
    State(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    respond((|| {
        let (_tenant, p) = request(&st, &headers, q.as_deref(), &body)?;
        let expr = parse_promql(p.get("query").unwrap_or(""))
            .map_err(|e| ApiError::invalid_param("query", e))?;
        Ok(Reply::Json(ast::translate(&expr), Vec::new()))
    })())
}

// ---- series and labels ----

async fn series(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    respond(series_inner(st, headers, q, body).await)
}

async fn series_inner(
    st: Arc<ApiState>,
    headers: HeaderMap,
    raw: Option<String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (tenant, p) = request(&st, &headers, raw.as_deref(), &body)?;
    if p.all("match[]").is_empty() {
        return Err(ApiError::BadData("no match[] parameter provided".into()));
    }
    let limit = p.limit()?;
    let start = p.time_or("start", MIN_TIME_MS)?;
    let end = p.time_or("end", MAX_TIME_MS)?;
    let sets = p
        .matcher_sets()
        .map_err(|e| ApiError::invalid_param("match[]", e))?;
    let source = st.backend.source(&tenant);
    let mut found: Vec<Labels> = blocking(st.options.timeout, move |_| {
        let mut all = BTreeSet::new();
        for set in &sets {
            all.extend(source.series(set, start, end)?);
        }
        Ok(all.into_iter().collect())
    })
    .await?;
    let mut warnings = Vec::new();
    truncate_list(&mut found, limit, &mut warnings);
    let mut out = String::from("[");
    for (i, labels) in found.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode::write_labels(&mut out, labels);
    }
    out.push(']');
    Ok(Reply::Raw(out, warnings))
}

async fn labels(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    respond(names_or_values(st, None, headers, q, body).await)
}

async fn label_values(
    State(st): St,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    respond(names_or_values(st, Some(name), headers, q, body).await)
}

/// Prometheus' legacy label name rule (`model.LabelNameRE`).
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `labels` (name `None`) or `label/<name>/values`.
async fn names_or_values(
    st: Arc<ApiState>,
    name: Option<String>,
    headers: HeaderMap,
    raw: Option<String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let (tenant, p) = request(&st, &headers, raw.as_deref(), &body)?;
    if let Some(name) = &name
        && !valid_label_name(name)
    {
        return Err(ApiError::BadData(format!("invalid label name: {name:?}")));
    }
    let limit = p.limit()?;
    let start = p.time_or("start", MIN_TIME_MS)?;
    let end = p.time_or("end", MAX_TIME_MS)?;
    let sets = p.matcher_sets().map_err(ApiError::BadData)?;
    let source = st.backend.source(&tenant);
    let mut found: Vec<String> = blocking(st.options.timeout, move |_| {
        let mut all = BTreeSet::new();
        let one = |set: &[crate::promql::LabelMatcher]| match &name {
            None => source.label_names(set, start, end),
            Some(n) => source.label_values(n, set, start, end),
        };
        if sets.is_empty() {
            all.extend(one(&[])?);
        }
        for set in &sets {
            all.extend(one(set)?);
        }
        Ok(all.into_iter().collect())
    })
    .await?;
    let mut warnings = Vec::new();
    truncate_list(&mut found, limit, &mut warnings);
    Ok(Reply::Json(json!(found), warnings))
}

async fn metadata(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    respond((|| {
        let (tenant, p) = request(&st, &headers, q.as_deref(), &[])?;
        let number = |name: &str| -> Result<i64, ApiError> {
            match p.get(name) {
                None => Ok(-1),
                Some(v) => v
                    .parse::<i64>()
                    .map_err(|_| ApiError::BadData(format!("{name} must be a number"))),
            }
        };
        let limit = number("limit")?;
        let per_metric = number("limit_per_metric")?;
        let metric = p.get("metric");
        let mut by_metric: BTreeMap<String, BTreeSet<MetricMetadata>> = BTreeMap::new();
        for (name, md) in st.backend.metadata(&tenant) {
            if metric.is_none_or(|m| m == name) {
                by_metric.entry(name).or_default().insert(md);
            }
        }
        let mut out = serde_json::Map::new();
        for (name, set) in by_metric {
            if limit >= 0 && out.len() as i64 >= limit {
                break;
            }
            let mut list: Vec<MetricMetadata> = set.into_iter().collect();
            if per_metric > 0 {
                list.truncate(usize::try_from(per_metric).unwrap_or(usize::MAX));
            }
            out.insert(name, json!(list));
        }
        Ok(Reply::Json(Json::Object(out), Vec::new()))
    })())
}

// ---- rules and alerts (answered by the ruler once it exists) ----

async fn rules(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    respond((|| {
        let (_tenant, p) = request(&st, &headers, q.as_deref(), &[])?;
        let typ = p.get("type").unwrap_or("").to_ascii_lowercase();
        if !matches!(typ.as_str(), "" | "alert" | "record") {
            return Err(ApiError::invalid_param(
                "type",
                format!("not supported value {typ:?}"),
            ));
        }
        Ok(Reply::Json(json!({"groups": []}), Vec::new()))
    })())
}

async fn alerts(State(st): St, headers: HeaderMap) -> Response {
    respond((|| {
        tenant_from_headers(&headers, st.multi_tenant)?;
        Ok(Reply::Json(json!({"alerts": []}), Vec::new()))
    })())
}

// ---- status ----

async fn buildinfo() -> Response {
    respond(Ok(Reply::Json(
        json!({
            "version": PROMETHEUS_COMPAT_VERSION,
            "revision": concat!("lucia-", env!("CARGO_PKG_VERSION")),
            "branch": "lucia",
            "buildUser": "lucia",
            "buildDate": "",
            "goVersion": "none (Lucia is written in Rust)",
        }),
        Vec::new(),
    )))
}

async fn config(State(st): St) -> Response {
    respond(Ok(Reply::Json(json!({"yaml": st.config_yaml}), Vec::new())))
}

async fn flags(State(st): St) -> Response {
    respond(Ok(Reply::Json(json!(st.flags), Vec::new())))
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

async fn runtimeinfo(State(st): St) -> Response {
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let retention = st
        .flags
        .get("storage.tsdb.retention.time")
        .cloned()
        .unwrap_or_else(|| "15d".into());
    respond(Ok(Reply::Json(
        json!({
            "startTime": rfc3339(st.start_time),
            "CWD": cwd,
            "reloadConfigSuccess": true,
            "lastConfigTime": rfc3339(st.start_time),
            "corruptionCount": 0,
            "goroutineCount": 0,
            "GOMAXPROCS": cpus,
            "GOMEMLIMIT": i64::MAX,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": retention,
        }),
        Vec::new(),
    )))
}

async fn tsdb_status(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    respond(
        async {
            let (tenant, p) = request(&st, &headers, q.as_deref(), &[])?;
            let limit = match p.get("limit") {
                None => 10,
                Some(v) => match v.parse::<i64>() {
                    Ok(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
                    _ => {
                        return Err(ApiError::BadData("limit must be a positive number".into()));
                    }
                },
            };
            let backend = st.backend.clone();
            let status = blocking(st.options.timeout, move |_| {
                Ok(backend.tsdb_status(&tenant, limit)?)
            })
            .await?;
            serde_json::to_value(status)
                .map(|v| Reply::Json(v, Vec::new()))
                .map_err(|e| ApiError::Internal(e.to_string()))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names() {
        assert!(valid_label_name("job"));
        assert!(valid_label_name("__name__"));
        assert!(valid_label_name("_a1"));
        assert!(!valid_label_name("1a"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name(""));
    }

    #[test]
    fn parse_errors_in_prometheus_words() {
        let e = |q: &str| parse_promql(q).expect_err("parse error");
        assert_eq!(
            e("rate(up)"),
            "parse error: expected type range vector in call to function \"rate\", got instant vector"
        );
        assert_eq!(
            e("foo(up)"),
            "parse error: unknown function with name \"foo\""
        );
        assert_eq!(e("sum("), "parse error: unclosed left parenthesis");
    }

    #[test]
    fn experimental_functions_need_the_flag() {
        let st = ApiState::new(Arc::new(NoData));
        assert!(parse_query_text(&st, "sort_by_label(up, \"job\")").is_err());
        assert!(parse_query_text(&st, "limitk(1, up)").is_err());
        assert!(parse_query_text(&st, "sum(rate(up[5m]))").is_ok());
        let mut on = st.clone();
        on.options.enable_experimental_functions = true;
        assert!(parse_query_text(&on, "sort_by_label(up, \"job\")").is_ok());
    }

    struct NoData;

    impl QueryBackend for NoData {
        fn source(&self, _tenant: &str) -> Arc<dyn SeriesSource> {
            Arc::new(crate::promql::MemorySource::new())
        }
    }
}
