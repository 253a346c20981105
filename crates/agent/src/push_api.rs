//! `loki_push_api` targets: a Loki push endpoint on its own port, so that
//! other shippers can relay through the agent. Pushed streams get the
//! target's labels, `relabel_configs` and `pipeline_stages`, then join the
//! same queue as tailed lines (a full queue holds the request back).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use lucia_common::Shutdown;
use lucia_proto::logproto::PushRequest;
use parking_lot::Mutex;
use prost::Message as _;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::config::ServerConfig;
use crate::stages::{Entry, Pipeline};
use crate::tail::Shipment;
use lucia_common::relabel::{LabelMap, RelabelConfig};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushApiConfig {
    pub server: ServerConfig,
    pub labels: BTreeMap<String, String>,
    pub use_incoming_timestamp: bool,
    pub max_send_msg_size: Option<u64>,
}

impl PushApiConfig {
    pub fn listen_address(&self) -> SocketAddr {
        let ip = self
            .server
            .http_listen_address
            .as_deref()
            .filter(|a| !a.is_empty())
            .and_then(|a| a.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        SocketAddr::new(ip, self.server.http_listen_port.unwrap_or(3500))
    }
}

struct Target {
    config: PushApiConfig,
    relabel: Vec<RelabelConfig>,
    pipeline: Mutex<Pipeline>,
    tx: mpsc::Sender<Shipment>,
}

/// Serves the push endpoint on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: PushApiConfig,
    relabel: Vec<RelabelConfig>,
    pipeline: Pipeline,
    tx: mpsc::Sender<Shipment>,
    stop: Shutdown,
) {
    let target = Arc::new(Target {
        config,
        relabel,
        pipeline: Mutex::new(pipeline),
        tx,
    });
    let app = axum::Router::new()
        .route(
            "/loki/api/v1/push",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let target = target.clone();
                async move { handle(&target, &headers, &body).await }
            }),
        )
        .route("/ready", axum::routing::get(|| async { "ready\n" }));
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(%err, "loki_push_api server failed");
    }
}

type Streams = Vec<(LabelMap, Vec<(i64, String, LabelMap)>)>;

async fn handle(target: &Target, headers: &HeaderMap, body: &[u8]) -> (StatusCode, String) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let streams = if content_type.starts_with("application/json") {
        decode_json(body)
    } else {
        decode_protobuf(body)
    };
    let streams = match streams {
        Ok(s) => s,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    let tenant = headers
        .get("X-Scope-OrgID")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let now = lucia_common::time::now_nanos();
    let mut out = Vec::new();
    {
        let mut pipeline = target.pipeline.lock();
        for (labels, entries) in streams {
            let mut labels = labels;
            for (k, v) in &target.config.labels {
                labels.insert(k.clone(), v.clone());
            }
            let Some(labels) = lucia_common::relabel::relabel(labels, &target.relabel) else {
                continue;
            };
            let labels: LabelMap = labels
                .into_iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .collect();
            for (ts, line, metadata) in entries {
                let ts = if target.config.use_incoming_timestamp {
                    ts
                } else {
                    now
                };
                let mut entry = Entry::new(labels.clone(), ts, line);
                entry.structured_metadata = metadata;
                entry.tenant = tenant.clone();
                pipeline.process(entry, &mut out);
            }
        }
    }
    for entry in out {
        if target
            .tx
            .send(Shipment {
                entry,
                source: None,
            })
            .await
            .is_err()
        {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down\n".to_string(),
            );
        }
    }
    (StatusCode::NO_CONTENT, String::new())
}

fn parse_labels(text: &str) -> Result<LabelMap, String> {
    let labels = lucia_common::labels::Labels::parse(text).map_err(|e| e.to_string())?;
    Ok(labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect())
}

fn decode_protobuf(body: &[u8]) -> Result<Streams, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    let request = PushRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
    request
        .streams
        .into_iter()
        .map(|s| {
            let labels = parse_labels(&s.labels)?;
            let entries = s
                .entries
                .into_iter()
                .map(|e| {
                    let ts = e.timestamp.map_or(0, |t| t.unix_nanos());
                    let metadata = e
                        .structured_metadata
                        .into_iter()
                        .map(|l| (l.name, l.value))
                        .collect();
                    (ts, e.line, metadata)
                })
                .collect();
            Ok((labels, entries))
        })
        .collect()
}

#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    stream: BTreeMap<String, String>,
    values: Vec<Vec<serde_json::Value>>,
}

fn decode_json(body: &[u8]) -> Result<Streams, String> {
    let push: JsonPush = serde_json::from_slice(body).map_err(|e| format!("json: {e}"))?;
    push.streams
        .into_iter()
        .map(|s| {
            let entries = s
                .values
                .into_iter()
                .map(|v| {
                    let ts = v
                        .first()
                        .and_then(|t| t.as_str())
                        .and_then(|t| t.parse::<i64>().ok())
                        .ok_or("each value needs a timestamp string in nanoseconds")?;
                    let line = v
                        .get(1)
                        .and_then(|l| l.as_str())
                        .ok_or("each value needs a line")?
                        .to_string();
                    let metadata = v
                        .get(2)
                        .and_then(|m| m.as_object())
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok((ts, line, metadata))
                })
                .collect::<Result<_, String>>()?;
            Ok((s.stream, entries))
        })
        .collect()
}
