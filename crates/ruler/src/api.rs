//! The ruler's HTTP API: Prometheus' `/api/v1/rules` and `/api/v1/alerts`
//! (as Grafana reads them) and Loki's ruler API for managing rule groups
//! per namespace (`/loki/api/v1/rules…`, plus Loki's
//! `/prometheus/api/v1/rules` and `/alerts` for its LogQL groups).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::SecondsFormat;
use lucia_common::tenant::{TenantError, tenant_from_headers};
use serde_json::{Value as Json, json};

use crate::group::{Alert, Group, RuleState};
use crate::manager::Manager;
use crate::rulefile::{self, Language, RuleKind};

#[derive(Clone)]
pub struct ApiState {
    pub manager: Arc<Manager>,
    pub multi_tenant: bool,
}

/// The API's errors, each mapped once to a status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Tenant(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_data",
            ApiError::NotFound(_) => "not_found",
            ApiError::Tenant(_) | ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"status": "error", "errorType": self.error_type(), "error": self.to_string()});
        (self.status(), axum::Json(body)).into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

type St = State<ApiState>;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/prometheus/api/v1/rules", get(loki_prom_rules))
        .route("/prometheus/api/v1/alerts", get(loki_prom_alerts))
        .route("/loki/api/v1/rules", get(list_rules))
        .route(
            "/loki/api/v1/rules/{namespace}",
            get(get_namespace).post(set_group).delete(delete_namespace),
        )
        .route(
            "/loki/api/v1/rules/{namespace}/{group}",
            get(get_group).delete(delete_group),
        )
        .with_state(state)
}

fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Go's `time.Time` in RFC 3339 (the zero time when never).
fn rfc3339(ms: Option<i64>) -> String {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`.
pub fn format_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

fn alert_json(a: &Alert) -> Json {
    let mut j = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339(Some(a.active_at)),
        "value": format_e(a.value),
    });
    if let Some(since) = a.keep_firing_since {
        j["keepFiringSince"] = json!(rfc3339(Some(since)));
    }
    j
}

fn rule_json(r: &RuleState, with_alerts: bool) -> Json {
    let mut j = json!({
        "name": r.rule.name,
        "query": r.rule.expr,
        "health": r.health.as_str(),
        "evaluationTime": r.eval_duration.as_secs_f64(),
        "lastEvaluation": rfc3339(r.last_eval),
    });
    if let Some(e) = &r.last_error {
        j["lastError"] = json!(e);
    }
    match r.rule.kind {
        RuleKind::Alerting => {
            j["type"] = json!("alerting");
            j["state"] = json!(r.state().as_str());
            j["duration"] = json!(r.rule.for_.as_secs_f64());
            j["keepFiringFor"] = json!(r.rule.keep_firing_for.as_secs_f64());
            j["labels"] = json!(r.labels);
            j["annotations"] = json!(r.rule.annotations);
            if with_alerts {
                j["alerts"] = Json::Array(r.active.values().map(alert_json).collect());
            }
        }
        RuleKind::Recording => {
            j["type"] = json!("recording");
            if !r.labels.is_empty() {
                j["labels"] = json!(r.labels);
            }
        }
    }
    j
}

/// Query parameters that may repeat (`rule_name[]`…).
fn params(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn tenant_groups(
    st: &ApiState,
    headers: &HeaderMap,
    only: Option<Language>,
) -> Result<Vec<Group>, ApiError> {
    let tenant = tenant_from_headers(headers, st.multi_tenant)?;
    Ok(st
        .manager
        .groups()
        .into_iter()
        .filter(|g| g.tenant == tenant && only.is_none_or(|l| g.def.language == l))
        .collect())
}

fn rules_response(groups: Vec<Group>, q: Option<&str>) -> Result<Response, ApiError> {
    let p = params(q);
    let values = |key: &str| -> Vec<String> {
        p.iter()
            .filter(|(k, _)| k == key || k.strip_suffix("[]") == Some(key))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let typ = values("type")
        .pop()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (want_alert, want_record) = match typ.as_str() {
        "" => (true, true),
        "alert" => (true, false),
        "record" => (false, true),
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid parameter \"type\": not supported value {other:?}"
            )));
        }
    };
    let names = values("rule_name");
    let group_names = values("rule_group");
    let files = values("file");
    let exclude_alerts = values("exclude_alerts").pop().is_some_and(|v| v == "true");
    let mut out = Vec::new();
    for g in groups {
        if (!group_names.is_empty() && !group_names.contains(&g.def.name))
            || (!files.is_empty() && !files.contains(&g.def.file))
        {
            continue;
        }
        let rules: Vec<Json> = g
            .rules
            .iter()
            .filter(|r| match r.rule.kind {
                RuleKind::Alerting => want_alert,
                RuleKind::Recording => want_record,
            })
            .filter(|r| names.is_empty() || names.contains(&r.rule.name))
            .map(|r| rule_json(r, !exclude_alerts))
            .collect();
        if rules.is_empty() && (!names.is_empty() || !typ.is_empty()) {
            continue;
        }
        out.push(json!({
            "name": g.def.name,
            "file": g.def.file,
            "rules": rules,
            "interval": g.interval.as_secs_f64(),
            "limit": g.def.limit,
            "evaluationTime": g.eval_duration.as_secs_f64(),
            "lastEvaluation": rfc3339(g.last_eval),
        }));
    }
    Ok(success(json!({"groups": out})))
}

fn alerts_response(groups: Vec<Group>) -> Response {
    let alerts: Vec<Json> = groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .flat_map(|r| r.active.values())
        .filter(|a| a.state != crate::group::AlertState::Inactive)
        .map(alert_json)
        .collect();
    success(json!({"alerts": alerts}))
}

async fn rules(
    State(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    rules_response(tenant_groups(&st, &headers, None)?, q.as_deref())
}

async fn alerts(State(st): St, headers: HeaderMap) -> Result<Response, ApiError> {
    Ok(alerts_response(tenant_groups(&st, &headers, None)?))
}

async fn loki_prom_rules(
    State(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    rules_response(
        tenant_groups(&st, &headers, Some(Language::Logql))?,
        q.as_deref(),
    )
}

async fn loki_prom_alerts(State(st): St, headers: HeaderMap) -> Result<Response, ApiError> {
    Ok(alerts_response(tenant_groups(
        &st,
        &headers,
        Some(Language::Logql),
    )?))
}

// ---- Loki's ruler API ----

fn yaml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], body).into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "success", "data": null, "errorType": "", "error": ""})),
    )
        .into_response()
}

const NO_RULE_GROUPS: &str = "no rule groups found";

fn namespace_yaml(namespace: &str, groups: &[rulefile::RuleGroup], out: &mut String) {
    out.push_str(&serde_json::to_string(namespace).unwrap_or_default());
    out.push_str(":\n");
    for g in groups {
        rulefile::group_to_yaml(&g.source, "    ", out);
    }
}

async fn list_rules(State(st): St, headers: HeaderMap) -> Result<Response, ApiError> {
    let tenant = tenant_from_headers(&headers, st.multi_tenant)?;
    let mut out = String::new();
    for (t, namespace, groups) in st.manager.api_namespaces() {
        if t == tenant && !groups.is_empty() {
            namespace_yaml(&namespace, &groups, &mut out);
        }
    }
    if out.is_empty() {
        return Err(ApiError::NotFound(NO_RULE_GROUPS.into()));
    }
    Ok(yaml(out))
}

async fn get_namespace(
    State(st): St,
    headers: HeaderMap,
    Path(namespace): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_from_headers(&headers, st.multi_tenant)?;
    let groups = st.manager.namespace_groups(&tenant, &namespace);
    if groups.is_empty() {
        return Err(ApiError::NotFound(NO_RULE_GROUPS.into()));
    }
    let mut out = String::new();
    namespace_yaml(&namespace, &groups, &mut out);
    Ok(yaml(out))
}

async fn get_group(
    State(st): St,
    headers: HeaderMap,
    Path((namespace, group)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = tenant_from_headers(&headers, st.multi_tenant)?;
    let groups = st.manager.namespace_groups(&tenant, &namespace);
    let Some(g) = groups.iter().find(|g| g.name == group) else {
        return Err(ApiError::NotFound("group does not exist".into()));
    };
    let mut out = String::new();
    rulefile::group_to_yaml(&g.source, "", &mut out);
    // A single group is a mapping, not a list item.
    let out = out.strip_prefix("- ").unwrap_or(&out).replace("\n  ", "\n");
    Ok(yaml(out))
}

async fn set_group(
    State(st): St,
    headers: HeaderMap,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant_from_headers(&headers, st.multi_tenant)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("rule group is not UTF-8".into()))?;
    let group = rulefile::parse_group(&namespace, text, Language::Logql).map_err(|errs| {
        ApiError::BadRequest(
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    st.manager.set_group(&tenant, &namespace, group)?;
    st.manager.sync().await;
    Ok(accepted())
}

async fn delete_namespace(
    State(st): St,
    headers: HeaderMap,
    Path(namespace): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_from_headers(&headers, st.multi_tenant)?;
    if !st.manager.delete(&tenant, &namespace, None)? {
        return Err(ApiError::NotFound(NO_RULE_GROUPS.into()));
    }
    st.manager.sync().await;
    Ok(accepted())
}

async fn delete_group(
    State(st): St,
    headers: HeaderMap,
    Path((namespace, group)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = tenant_from_headers(&headers, st.multi_tenant)?;
    if !st.manager.delete(&tenant, &namespace, Some(&group))? {
        return Err(ApiError::NotFound("group does not exist".into()));
    }
    st.manager.sync().await;
    Ok(accepted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_go() {
        assert_eq!(format_e(1.0), "1e+00");
        assert_eq!(format_e(1.5), "1.5e+00");
        assert_eq!(format_e(0.00012), "1.2e-04");
        assert_eq!(format_e(12345.0), "1.2345e+04");
        assert_eq!(format_e(f64::NAN), "NaN");
    }
}
