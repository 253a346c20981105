//! Alertmanager's HTTP API v2 (as 0.25 serves it), `/-/healthy`,
//! `/-/ready` and `/-/reload`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;
use crate::matcher::{MatchType, Matcher, parse_matcher};
use crate::model::{
    Alert, LabelSet, alert_order, fingerprint_string, format_rfc3339_millis, is_zero,
    labelset_before, parse_time, zero_time,
};
use crate::silences::{ApiMatcher, NewSilence, Silence, SilenceError, SilenceState};
use crate::state::{Shared, Tenant};

/// The Alertmanager release whose API v2 this serves.
pub const ALERTMANAGER_VERSION: &str = "0.25.0";

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub shared: Arc<Shared>,
    pub reload: Arc<dyn Fn() -> Result<(), Error> + Send + Sync>,
}

/// The routes, under `prefix` (`/` or `/alertmanager`, without a trailing
/// slash unless it is `/`).
pub fn router(state: ApiState, prefix: &str) -> Router {
    let api = Router::new()
        .route("/api/v2/status", get(status))
        .route("/api/v2/receivers", get(receivers))
        .route("/api/v2/alerts", get(get_alerts).post(post_alerts))
        .route("/api/v2/alerts/groups", get(get_groups))
        .route("/api/v2/silences", get(get_silences).post(post_silences))
        .route(
            "/api/v2/silence/{id}",
            get(get_silence).delete(delete_silence),
        )
        .route("/-/healthy", get(ok).head(ok))
        .route("/-/ready", get(ok).head(ok))
        .route("/-/reload", post(reload).put(reload))
        .with_state(state);
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        api
    } else {
        Router::new().nest(prefix, api)
    }
}

async fn ok() -> &'static str {
    "OK"
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Errors of the API, answered as Alertmanager does: a JSON string.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(err = %self, "api request failed");
        }
        json_response(status, &Value::String(self.to_string()))
    }
}

fn tenant(state: &ApiState, headers: &HeaderMap) -> Result<Arc<Tenant>, Error> {
    let name = lucia_common::tenant::tenant_from_headers(headers, state.shared.multi_tenant)?;
    state
        .shared
        .tenant(&name)
        .map_err(|e| Error::Internal(format!("cannot open the tenant's state: {e}")))
}

/// Query parameters, with repeated keys kept.
fn query_params(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

fn bool_param(params: &[(String, String)], name: &str) -> Result<bool, Error> {
    match params.iter().rev().find(|(k, _)| k == name) {
        None => Ok(true),
        Some((_, v)) => match v.as_str() {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(Error::BadRequest(format!(
                "{name} must be true or false, not {other:?}"
            ))),
        },
    }
}

fn filters(params: &[(String, String)]) -> Result<Vec<Matcher>, Error> {
    params
        .iter()
        .filter(|(k, _)| k == "filter")
        .map(|(_, v)| parse_matcher(v).map_err(Error::BadRequest))
        .collect()
}

fn receiver_filter(params: &[(String, String)]) -> Result<Option<regex::Regex>, Error> {
    match params.iter().find(|(k, _)| k == "receiver") {
        Some((_, r)) if !r.is_empty() => regex::Regex::new(&format!("^(?:{r})$"))
            .map(Some)
            .map_err(|e| Error::BadRequest(format!("failed to parse receiver param: {e}"))),
        _ => Ok(None),
    }
}

/// Alertmanager's `matchFilterLabels`: an empty-valued filter matches an
/// absent label.
fn match_filter_labels(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| {
        let v = labels.get(&m.name);
        let negative = matches!(m.kind, MatchType::NotEqual | MatchType::NotRegexp);
        if m.value.is_empty() && (v.is_some() == negative) {
            return true;
        }
        m.matches(v.map(String::as_str).unwrap_or(""))
    })
}

async fn status(State(state): State<ApiState>) -> Response {
    let shared = &state.shared;
    let config = shared.config();
    // As Alertmanager: without clustering only `disabled` and no peers;
    // with it this member's name, `settling` or `ready`, and every live
    // member (itself included) sorted by name.
    let cluster = match &shared.cluster {
        None => json!({"status": "disabled", "peers": []}),
        Some(c) => {
            let status = c.status();
            json!({
                "name": status.name,
                "status": status.status,
                "peers": status.peers.iter()
                    .map(|p| json!({"name": p.name, "address": p.address}))
                    .collect::<Vec<_>>(),
            })
        }
    };
    json_response(
        StatusCode::OK,
        &json!({
            "cluster": cluster,
            "config": {"original": config.original},
            "uptime": format_rfc3339_millis(&shared.started),
            "versionInfo": {
                "branch": "lucia",
                "buildDate": "",
                "buildUser": "lucia",
                "goVersion": "none (rust)",
                "revision": concat!("lucia-", env!("CARGO_PKG_VERSION")),
                // The API level served: amtool warns when it differs from its own.
                "version": ALERTMANAGER_VERSION,
            },
        }),
    )
}

async fn receivers(State(state): State<ApiState>) -> Response {
    let config = state.shared.config();
    let list: Vec<Value> = config
        .receivers
        .keys()
        .map(|name| json!({ "name": name }))
        .collect();
    json_response(StatusCode::OK, &Value::Array(list))
}

fn labels_json(l: &LabelSet) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

struct AlertStatus {
    silenced_by: Vec<String>,
    inhibited_by: Vec<String>,
}

impl AlertStatus {
    fn state(&self) -> &'static str {
        if self.silenced_by.is_empty() && self.inhibited_by.is_empty() {
            "active"
        } else {
            "suppressed"
        }
    }
}

fn alert_json(a: &Alert, status: &AlertStatus, receivers: &[String]) -> Value {
    let mut v = json!({
        "annotations": labels_json(&a.annotations),
        "endsAt": format_rfc3339_millis(&a.ends_at),
        "fingerprint": fingerprint_string(a.fingerprint()),
        "receivers": receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "startsAt": format_rfc3339_millis(&a.starts_at),
        "status": {
            "inhibitedBy": status.inhibited_by,
            "silencedBy": status.silenced_by,
            "state": status.state(),
        },
        "updatedAt": format_rfc3339_millis(&a.updated_at),
        "labels": labels_json(&a.labels),
    });
    if !a.generator_url.is_empty()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert(
            "generatorURL".to_string(),
            Value::String(a.generator_url.clone()),
        );
    }
    v
}

struct AlertFilter {
    matchers: Vec<Matcher>,
    receiver: Option<regex::Regex>,
    active: bool,
    silenced: bool,
    inhibited: bool,
    unprocessed: bool,
}

impl AlertFilter {
    fn parse(params: &[(String, String)]) -> Result<Self, Error> {
        Ok(Self {
            matchers: filters(params)?,
            receiver: receiver_filter(params)?,
            active: bool_param(params, "active")?,
            silenced: bool_param(params, "silenced")?,
            inhibited: bool_param(params, "inhibited")?,
            unprocessed: bool_param(params, "unprocessed")?,
        })
    }

    /// The alert's JSON when it passes the filter.
    fn apply(&self, state: &ApiState, tenant: &Tenant, a: &Alert) -> Option<Value> {
        let config = state.shared.config();
        let receivers: Vec<String> = config
            .route
            .matching(&a.labels)
            .iter()
            .map(|r| r.opts.receiver.clone())
            .collect();
        if let Some(re) = &self.receiver
            && !receivers.iter().any(|r| re.is_match(r))
        {
            return None;
        }
        self.status(state, tenant, a)
            .map(|status| alert_json(a, &status, &receivers))
    }

    /// The alert's status when it passes the label and state filters (not
    /// the receiver filter).
    fn status(&self, state: &ApiState, tenant: &Tenant, a: &Alert) -> Option<AlertStatus> {
        let now = Utc::now();
        let config = state.shared.config();
        if !match_filter_labels(&self.matchers, &a.labels) {
            return None;
        }
        if a.resolved_at(now) {
            return None;
        }
        let status = AlertStatus {
            silenced_by: tenant.silences.mutes(&a.labels, now),
            inhibited_by: tenant.inhibited_by(&a.labels, &config),
        };
        let st = status.state();
        if (!self.active && st == "active")
            || (!self.silenced && !status.silenced_by.is_empty())
            || (!self.inhibited && !status.inhibited_by.is_empty())
        {
            return None;
        }
        let _ = self.unprocessed; // every alert is processed on arrival
        Some(status)
    }
}

async fn get_alerts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let tenant = tenant(&state, &headers)?;
    let filter = AlertFilter::parse(&query_params(q))?;
    let alerts: Vec<Arc<Alert>> = tenant.alerts.lock().values().cloned().collect();
    let mut out: Vec<(String, Value)> = alerts
        .iter()
        .filter_map(|a| {
            filter
                .apply(&state, &tenant, a)
                .map(|v| (fingerprint_string(a.fingerprint()), v))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(out.into_iter().map(|(_, v)| v).collect()),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostableAlert {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "startsAt")]
    starts_at: Option<String>,
    #[serde(default, rename = "endsAt")]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
}

fn opt_time(s: &Option<String>) -> Result<crate::model::Time, String> {
    match s.as_deref() {
        None | Some("") => Ok(zero_time()),
        Some(t) => parse_time(t),
    }
}

async fn post_alerts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let tenant = tenant(&state, &headers)?;
    let posted: Vec<PostableAlert> = serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!(
            "parsing alerts body failed: {e}: send a JSON array of alerts with labels"
        ))
    })?;
    let now = Utc::now();
    let resolve_timeout =
        chrono::Duration::from_std(state.shared.config().global.resolve_timeout.0)
            .unwrap_or(chrono::Duration::minutes(5));
    let mut valid = Vec::with_capacity(posted.len());
    let mut errors = Vec::new();
    for p in posted {
        let (starts_at, ends_at) = match (opt_time(&p.starts_at), opt_time(&p.ends_at)) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(e), _) | (_, Err(e)) => {
                errors.push(e);
                state.shared.metrics.alerts_invalid.inc();
                continue;
            }
        };
        let mut alert = Alert {
            labels: p.labels.unwrap_or_default(),
            annotations: p.annotations.unwrap_or_default(),
            starts_at,
            ends_at,
            generator_url: p.generator_url.unwrap_or_default(),
            updated_at: now,
            timeout: false,
        };
        if is_zero(&alert.starts_at) {
            alert.starts_at = if is_zero(&alert.ends_at) {
                now
            } else {
                alert.ends_at
            };
        }
        if is_zero(&alert.ends_at) {
            alert.timeout = true;
            alert.ends_at = now + resolve_timeout;
        }
        alert.labels.retain(|_, v| !v.is_empty());
        if let Err(e) = alert.validate() {
            errors.push(e);
            state.shared.metrics.alerts_invalid.inc();
            continue;
        }
        valid.push(alert);
    }
    tenant.put(&state.shared, valid);
    if !errors.is_empty() {
        return Err(Error::BadRequest(errors.join(";")));
    }
    Ok(StatusCode::OK.into_response())
}

async fn get_groups(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let tenant = tenant(&state, &headers)?;
    let filter = AlertFilter::parse(&query_params(q))?;
    // The groups the receiver filter keeps, with the alerts that pass.
    type Kept = (Arc<crate::state::AggrGroup>, Vec<(Alert, AlertStatus)>);
    let mut kept: Vec<Kept> = Vec::new();
    for g in tenant.groups() {
        if let Some(re) = &filter.receiver
            && !re.is_match(&g.opts.receiver)
        {
            continue;
        }
        let mut members = g.alerts();
        members.sort_by(|a, b| alert_order(&a.labels, &b.labels));
        let alerts: Vec<(Alert, AlertStatus)> = members
            .into_iter()
            .filter_map(|a| filter.status(&state, &tenant, &a).map(|st| (a, st)))
            .collect();
        if !alerts.is_empty() {
            kept.push((g, alerts));
        }
    }
    // As in Alertmanager, an alert's receivers here are those of the kept
    // groups it is in (sorted; Alertmanager's order is its map's).
    let mut receivers: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (g, alerts) in &kept {
        for (a, _) in alerts {
            receivers
                .entry(a.fingerprint())
                .or_default()
                .push(g.opts.receiver.clone());
        }
    }
    receivers.values_mut().for_each(|r| r.sort());
    let mut groups: Vec<(LabelSet, String, Value)> = kept
        .iter()
        .map(|(g, alerts)| {
            let alerts: Vec<Value> = alerts
                .iter()
                .map(|(a, st)| {
                    let names = receivers.get(&a.fingerprint()).cloned().unwrap_or_default();
                    alert_json(a, st, &names)
                })
                .collect();
            (
                g.labels.clone(),
                g.opts.receiver.clone(),
                json!({
                    "alerts": alerts,
                    "labels": labels_json(&g.labels),
                    "receiver": {"name": g.opts.receiver},
                }),
            )
        })
        .collect();
    // Alertmanager's `AlertGroups` order: by group labels (`Before`), then
    // receiver.
    groups.sort_by(|a, b| {
        if a.0 == b.0 {
            a.1.cmp(&b.1)
        } else if labelset_before(&a.0, &b.0) {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        }
    });
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(groups.into_iter().map(|(_, _, v)| v).collect()),
    ))
}

fn silence_json(s: &Silence, now: crate::model::Time) -> Value {
    json!({
        "id": s.id,
        "status": {"state": s.state(now).as_str()},
        "updatedAt": format_rfc3339_millis(&s.updated_at),
        "comment": s.comment,
        "createdBy": s.created_by,
        "endsAt": format_rfc3339_millis(&s.ends_at),
        "matchers": s.matchers,
        "startsAt": format_rfc3339_millis(&s.starts_at),
    })
}

async fn get_silences(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let tenant = tenant(&state, &headers)?;
    let matchers = filters(&query_params(q))?;
    let now = Utc::now();
    let mut list: Vec<Silence> = tenant
        .silences
        .all()
        .into_iter()
        .filter(|s| {
            let sms: BTreeMap<String, String> = s
                .matchers
                .iter()
                .map(|m| (m.name.clone(), m.value.clone()))
                .collect();
            match_filter_labels(&matchers, &sms)
        })
        .collect();
    let rank = |st: SilenceState| match st {
        SilenceState::Active => 0,
        SilenceState::Pending => 1,
        SilenceState::Expired => 2,
    };
    list.sort_by(|a, b| {
        let (sa, sb) = (a.state(now), b.state(now));
        rank(sa).cmp(&rank(sb)).then_with(|| match sa {
            SilenceState::Active => a.ends_at.cmp(&b.ends_at),
            SilenceState::Pending => a.starts_at.cmp(&b.starts_at),
            SilenceState::Expired => b.ends_at.cmp(&a.ends_at),
        })
    });
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(list.iter().map(|s| silence_json(s, now)).collect()),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostableSilence {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<ApiMatcher>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "createdBy")]
    created_by: String,
    comment: String,
}

async fn post_silences(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let tenant = tenant(&state, &headers)?;
    let p: PostableSilence = serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!(
            "parsing silence body failed: {e}: send matchers, startsAt, endsAt, createdBy and comment"
        ))
    })?;
    if p.matchers.is_empty() {
        return Err(Error::BadRequest(
            "matchers in body should have at least 1 items".to_string(),
        ));
    }
    let starts_at = parse_time(&p.starts_at).map_err(Error::BadRequest)?;
    let ends_at = parse_time(&p.ends_at).map_err(Error::BadRequest)?;
    if ends_at <= starts_at {
        return Err(Error::BadRequest(
            "Failed to create silence: start time must be before end time".to_string(),
        ));
    }
    if ends_at < Utc::now() {
        return Err(Error::BadRequest(
            "Failed to create silence: end time can't be in the past".to_string(),
        ));
    }
    let id = tenant
        .silences
        .set(NewSilence {
            id: p.id,
            matchers: p.matchers,
            starts_at,
            ends_at,
            created_by: p.created_by,
            comment: p.comment,
        })
        .map_err(|e| match e {
            SilenceError::NotFound => Error::NotFound("silence not found".to_string()),
            other => Error::BadRequest(format!("Failed to create silence: {other}")),
        })?;
    Ok(json_response(StatusCode::OK, &json!({ "silenceID": id })))
}

fn check_uuid(id: &str) -> Result<(), Error> {
    let ok = id.len() == 36
        && id.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "silenceID in path must be of type uuid: {id:?}"
        )))
    }
}

async fn get_silence(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    check_uuid(&id)?;
    let tenant = tenant(&state, &headers)?;
    let s = tenant
        .silences
        .get(&id)
        .ok_or_else(|| Error::NotFound(format!("silence {id} not found")))?;
    Ok(json_response(StatusCode::OK, &silence_json(&s, Utc::now())))
}

async fn delete_silence(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    check_uuid(&id)?;
    let tenant = tenant(&state, &headers)?;
    tenant.silences.expire(&id).map_err(|e| match e {
        SilenceError::NotFound => Error::NotFound(format!("silence {id} not found")),
        other => Error::BadRequest(other.to_string()),
    })?;
    Ok(StatusCode::OK.into_response())
}

async fn reload(State(state): State<ApiState>) -> Result<Response, Error> {
    (state.reload)().map_err(|e| Error::Internal(format!("failed to reload config: {e}")))?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_labels_like_alertmanager() {
        let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        let m = |s: &str| vec![parse_matcher(s).unwrap()];
        assert!(match_filter_labels(&m("a=1"), &labels));
        assert!(!match_filter_labels(&m("a=2"), &labels));
        assert!(match_filter_labels(&m("b=\"\""), &labels));
        assert!(match_filter_labels(&m("a=~\"1|2\""), &labels));
        assert!(match_filter_labels(&m("b!=x"), &labels));
        assert!(check_uuid("cc3e9bf9-b3d0-4fea-88f0-77ac49033b57").is_ok());
        assert!(check_uuid("abc").is_err());
    }
}
