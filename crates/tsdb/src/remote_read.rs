//! Prometheus remote read (`POST /api/v1/read`, samples response type) and
//! the query fan-out across tsdb members built on it.
//!
//! Every member answers remote reads; a request carrying
//! `X-Lucia-Local-Only: true` (what members send each other) is answered
//! from the member's own storage, any other from the union of all members.
//! A query on any member reads its own storage and every peer's through
//! remote read, and merges series with the same labels (equal timestamps
//! once), so it sees what one node holding everything would.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lucia_proto::prometheus::{
    Label, LabelMatcher as PbMatcher, Query, QueryResult, ReadRequest, ReadResponse, Sample,
    TimeSeries, label_matcher, read_request,
};
use prost::Message as _;

use crate::promql::{self, LabelMatcher, Labels, MatchOp, RawSeries, SeriesSource};

/// The header members set on reads that must not fan out again.
pub const LOCAL_ONLY: &str = "x-lucia-local-only";

/// Where the handler reads: a source per tenant, local or fanned out.
pub trait ReadBackend: Send + Sync + 'static {
    fn source(&self, tenant: &str, local_only: bool) -> Arc<dyn SeriesSource>;
}

#[derive(Clone)]
pub struct ReadState {
    pub backend: Arc<dyn ReadBackend>,
    pub multi_tenant: bool,
}

fn bad_request(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, format!("{}\n", msg.into())).into_response()
}

fn to_matcher(m: &PbMatcher) -> Result<LabelMatcher, promql::Error> {
    let op = match label_matcher::Type::try_from(m.r#type) {
        Ok(label_matcher::Type::Eq) => MatchOp::Equal,
        Ok(label_matcher::Type::Neq) => MatchOp::NotEqual,
        Ok(label_matcher::Type::Re) => MatchOp::Regex,
        Ok(label_matcher::Type::Nre) => MatchOp::NotRegex,
        Err(_) => {
            return Err(promql::Error::Parse(format!(
                "unknown matcher type {}",
                m.r#type
            )));
        }
    };
    LabelMatcher::new(&m.name, op, &m.value)
}

fn from_matcher(m: &LabelMatcher) -> PbMatcher {
    let t = match m.op {
        MatchOp::Equal => label_matcher::Type::Eq,
        MatchOp::NotEqual => label_matcher::Type::Neq,
        MatchOp::Regex => label_matcher::Type::Re,
        MatchOp::NotRegex => label_matcher::Type::Nre,
    };
    PbMatcher {
        r#type: t as i32,
        name: m.name.clone(),
        value: m.value.clone(),
    }
}

fn to_timeseries(s: RawSeries) -> TimeSeries {
    TimeSeries {
        labels: s
            .labels
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
        samples: s
            .samples
            .into_iter()
            .map(|(timestamp, value)| Sample { value, timestamp })
            .collect(),
        exemplars: vec![],
    }
}

/// `POST /api/v1/read`.
pub async fn handle(State(state): State<ReadState>, headers: HeaderMap, body: Bytes) -> Response {
    let tenant = match lucia_common::tenant::tenant_from_headers(&headers, state.multi_tenant) {
        Ok(t) => t,
        Err(e) => return bad_request(e.to_string()),
    };
    let local_only = headers
        .get(LOCAL_ONLY)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let raw = match crate::remote_write::decompress(&body) {
        Ok(raw) => raw,
        Err(e) => return bad_request(e),
    };
    let req = match ReadRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("body is not a protobuf ReadRequest: {e}")),
    };
    if !req.accepted_response_types.is_empty()
        && !req
            .accepted_response_types
            .contains(&(read_request::ResponseType::Samples as i32))
    {
        return bad_request("only the SAMPLES response type is supported");
    }
    let source = state.backend.source(&tenant, local_only);
    let result = tokio::task::spawn_blocking(move || {
        let mut results = Vec::with_capacity(req.queries.len());
        for q in req.queries {
            let matchers = q
                .matchers
                .iter()
                .map(to_matcher)
                .collect::<Result<Vec<_>, _>>()?;
            let series = source.select(&matchers, q.start_timestamp_ms, q.end_timestamp_ms)?;
            results.push(QueryResult {
                timeseries: series.into_iter().map(to_timeseries).collect(),
            });
        }
        Ok::<_, promql::Error>(ReadResponse { results })
    })
    .await;
    let resp = match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(promql::Error::Parse(m))) => return bad_request(m),
        Ok(Err(e)) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("read task failed: {e}\n"),
            )
                .into_response();
        }
    };
    let body = match snap::raw::Encoder::new().compress_vec(&resp.encode_to_vec()) {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("snappy: {e}\n")).into_response();
        }
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            ),
            (header::CONTENT_ENCODING, HeaderValue::from_static("snappy")),
        ],
        body,
    )
        .into_response()
}

pub fn router(state: ReadState) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/read", axum::routing::post(handle))
        .with_state(state)
}

/// Reads series from one peer (its own storage only).
pub async fn read_peer(
    client: &reqwest::Client,
    base_url: &str,
    tenant: &str,
    matchers: &[LabelMatcher],
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<RawSeries>, String> {
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start_ms,
            end_timestamp_ms: end_ms,
            matchers: matchers.iter().map(from_matcher).collect(),
            hints: None,
        }],
        accepted_response_types: vec![read_request::ResponseType::Samples as i32],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .map_err(|e| e.to_string())?;
    let resp = client
        .post(format!("{}/api/v1/read", base_url.trim_end_matches('/')))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .header(LOCAL_ONLY, "true")
        .header("X-Scope-OrgID", tenant)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("tsdb member {base_url}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("tsdb member {base_url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "tsdb member {base_url} answered {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&bytes)
        .map_err(|e| format!("tsdb member {base_url}: bad snappy: {e}"))?;
    let resp = ReadResponse::decode(raw.as_slice())
        .map_err(|e| format!("tsdb member {base_url}: bad ReadResponse: {e}"))?;
    Ok(resp
        .results
        .into_iter()
        .flat_map(|r| r.timeseries)
        .map(|ts| RawSeries {
            labels: ts.labels.into_iter().map(|l| (l.name, l.value)).collect(),
            samples: ts
                .samples
                .into_iter()
                .map(|s| (s.timestamp, s.value))
                .collect(),
        })
        .collect())
}

/// A source over the local storage and every peer.
pub struct FanoutSource {
    pub local: Arc<dyn SeriesSource>,
    pub peers: Vec<String>,
    pub tenant: String,
    pub client: reqwest::Client,
    pub runtime: tokio::runtime::Handle,
}

impl SeriesSource for FanoutSource {
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<RawSeries>, promql::Error> {
        let mut merged: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for s in self.local.select(matchers, start_ms, end_ms)? {
            merged.entry(s.labels).or_default().extend(s.samples);
        }
        // The peers' reads run on a helper thread driving the runtime, so
        // this works from async and blocking contexts alike.
        let peers = self.peers.clone();
        let (client, tenant, runtime) = (
            self.client.clone(),
            self.tenant.clone(),
            self.runtime.clone(),
        );
        let matchers_owned = matchers.to_vec();
        let remote = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    runtime.block_on(async {
                        let reads = peers.iter().map(|peer| {
                            read_peer(&client, peer, &tenant, &matchers_owned, start_ms, end_ms)
                        });
                        futures::future::join_all(reads).await
                    })
                })
                .join()
        })
        .map_err(|_| promql::Error::Source("fan-out thread panicked".into()))?;
        for result in remote {
            for s in result.map_err(promql::Error::Source)? {
                merged.entry(s.labels).or_default().extend(s.samples);
            }
        }
        Ok(merged
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|x| x.0);
                samples.dedup_by_key(|x| x.0);
                RawSeries { labels, samples }
            })
            .collect())
    }
}
