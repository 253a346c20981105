//! Distributor tests over HTTP, against fake ingesters (gRPC servers that
//! record what they receive) registered in an in-process ring.

// The helpers below are test code too (clippy only exempts `#[test]` fns).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lucia_common::Shutdown;
use lucia_common::metrics::Metrics;
use lucia_common::ring::{InProcessRing, InstanceDesc, InstanceState};
use lucia_common::server::{Readiness, RoleContext, bind, serve_roles};
use lucia_common::tenant::ORG_ID_METADATA;
use lucia_ingester::distributor;
use lucia_ingester::limits::LimitsConfig;
use lucia_proto::ingester::ingester_server::{Ingester, IngesterServer};
use lucia_proto::ingester::{QueryRequest, QueryResponse, SeriesRequest, SeriesResponse};
use lucia_proto::logproto::{
    EntryAdapter, LabelPairAdapter, PushRequest, PushResponse, StreamAdapter, Timestamp,
};
use parking_lot::Mutex;
use prost::Message;
use tonic::{Request, Response, Status};

/// What a fake ingester received: (tenant, request).
type Received = Arc<Mutex<Vec<(String, PushRequest)>>>;

struct FakeIngester {
    received: Received,
    fail: Option<tonic::Code>,
}

#[tonic::async_trait]
impl Ingester for FakeIngester {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        if let Some(code) = self.fail {
            return Err(Status::new(code, "fake ingester told to fail"));
        }
        let tenant = request
            .metadata()
            .get(ORG_ID_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_string();
        self.received.lock().push((tenant, request.into_inner()));
        Ok(Response::new(PushResponse {}))
    }

    type QueryStream = tokio_stream::Empty<Result<QueryResponse, Status>>;

    async fn query(
        &self,
        _request: Request<QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        Err(Status::unimplemented("fake ingester"))
    }

    async fn series(
        &self,
        _request: Request<SeriesRequest>,
    ) -> Result<Response<SeriesResponse>, Status> {
        Err(Status::unimplemented("fake ingester"))
    }
}

struct Cluster {
    url: String,
    http: reqwest::Client,
    ingesters: Vec<Received>,
    ring: Arc<InProcessRing>,
    shutdown: Shutdown,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

static NEXT_PREFIX: AtomicUsize = AtomicUsize::new(0);

/// Starts one fake ingester per entry of `fails` (failing with that code
/// when set), registers them in a ring of its own, and a distributor.
async fn start(
    fails: &[Option<tonic::Code>],
    replication_factor: usize,
    configure: impl FnOnce(&mut distributor::Config),
) -> Cluster {
    let shutdown = Shutdown::new();
    let prefix = format!(
        "distributor-test-{}-{}/",
        std::process::id(),
        NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
    );
    let ring = InProcessRing::get(&format!("{prefix}ingester"));
    let mut ingesters = Vec::new();
    for (i, fail) in fails.iter().enumerate() {
        let received = Received::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let service = IngesterServer::new(FakeIngester {
            received: received.clone(),
            fail: *fail,
        });
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        ring.upsert(InstanceDesc {
            id: format!("ingester-{i}"),
            addr: addr.to_string(),
            tokens: (0..16).map(|t| t * 268_435_456 + i as u32 * 1000).collect(),
            state: InstanceState::Active,
            heartbeat: 0,
        });
        ingesters.push(received);
    }

    let mut config = distributor::Config::default();
    config.ring.kvstore.prefix = prefix;
    config.ring.replication_factor = replication_factor;
    configure(&mut config);
    let (listener, advertise_addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let ctx = RoleContext {
        advertise_addr,
        metrics: Metrics::new(),
        readiness: Readiness::default(),
        shutdown: shutdown.clone(),
        data_dir: std::env::temp_dir(),
        multi_tenant: true,
        consul: None,
    };
    let role = distributor::start(config, ctx.clone()).await.unwrap();
    tokio::spawn(async move { serve_roles(listener, &ctx, vec![role]).await.unwrap() });
    Cluster {
        url: format!("http://{advertise_addr}"),
        http: lucia_common::http_client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap(),
        ingesters,
        ring,
        shutdown,
    }
}

fn now_nanos() -> i64 {
    lucia_common::time::now_nanos()
}

fn timestamp(nanos: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    })
}

fn snappy_proto(request: &PushRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

impl Cluster {
    async fn post(
        &self,
        content_type: &str,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut request = self
            .http
            .post(format!("{}/loki/api/v1/push", self.url))
            .header("Content-Type", content_type)
            .header("X-Scope-OrgID", "team-a")
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header("Content-Encoding", encoding);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn push_json(&self, json: &serde_json::Value) -> (u16, String) {
        self.post("application/json", None, serde_json::to_vec(json).unwrap())
            .await
    }

    /// Every stream every ingester received, with the tenant.
    fn received(&self, ingester: usize) -> Vec<(String, StreamAdapter)> {
        self.ingesters[ingester]
            .lock()
            .iter()
            .flat_map(|(tenant, request)| {
                request
                    .streams
                    .iter()
                    .map(move |s| (tenant.clone(), s.clone()))
            })
            .collect()
    }
}

fn metadata(entry: &EntryAdapter, name: &str) -> Option<String> {
    entry
        .structured_metadata
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.clone())
}

#[tokio::test]
async fn json_push_is_enriched_and_canonical() {
    let cluster = start(&[None], 1, |_| {}).await;
    let ts = now_nanos();
    let (status, body) = cluster
        .push_json(&serde_json::json!({
            "streams": [{
                "stream": {"job": "api", "env": "prod"},
                "values": [
                    [ts.to_string(), r#"{"level":"warn","msg":"slow"}"#],
                    [(ts + 1).to_string(), "ts=1 level=error msg=boom"],
                    [(ts + 2).to_string(), "plain DEBUG line"],
                    [(ts + 3).to_string(), "nothing to see", {"trace_id": "abc"}],
                    [(ts + 4).to_string(), "x", {"severity": "INFO"}],
                ],
                "unknown": "ignored",
            }]
        }))
        .await;
    assert_eq!((status, body.as_str()), (204, ""));
    let received = cluster.received(0);
    assert_eq!(received.len(), 1);
    let (tenant, stream) = &received[0];
    assert_eq!(tenant, "team-a");
    assert_eq!(
        stream.labels,
        r#"{env="prod", job="api", service_name="api"}"#
    );
    let levels: Vec<_> = stream
        .entries
        .iter()
        .map(|e| metadata(e, "detected_level").unwrap())
        .collect();
    assert_eq!(levels, ["warn", "error", "debug", "unknown", "info"]);
    assert_eq!(
        metadata(&stream.entries[3], "trace_id").as_deref(),
        Some("abc")
    );
    assert_eq!(stream.entries[0].timestamp, timestamp(ts));
}

#[tokio::test]
async fn snappy_protobuf_push() {
    let cluster = start(&[None], 1, |_| {}).await;
    let ts = now_nanos();
    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{zone="b", app="web"}"#.into(),
            entries: vec![EntryAdapter {
                timestamp: timestamp(ts),
                line: "GET / 200".into(),
                structured_metadata: vec![LabelPairAdapter {
                    name: "detected_level".into(),
                    value: "INFO".into(),
                }],
            }],
            hash: 0,
        }],
    };
    let (status, body) = cluster
        .post("application/x-protobuf", None, snappy_proto(&request))
        .await;
    assert_eq!((status, body.as_str()), (204, ""));
    let received = cluster.received(0);
    let stream = &received[0].1;
    assert_eq!(
        stream.labels,
        r#"{app="web", service_name="web", zone="b"}"#
    );
    assert_eq!(stream.entries[0].line, "GET / 200");
    assert_eq!(stream.entries[0].structured_metadata.len(), 1);
    assert_eq!(
        metadata(&stream.entries[0], "detected_level").as_deref(),
        Some("info")
    );
}

#[tokio::test]
async fn gzip_json_and_deflate_protobuf() {
    let cluster = start(&[None], 1, |_| {}).await;
    let ts = now_nanos();
    let json = serde_json::json!({"streams":[{"stream":{"foo":"bar"},"values":[[ts.to_string(),"gz line"]]}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(&json).unwrap()).unwrap();
    let (status, body) = cluster
        .post("application/json", Some("gzip"), gz.finish().unwrap())
        .await;
    assert_eq!((status, body.as_str()), (204, ""));

    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{foo="bar"}"#.into(),
            entries: vec![EntryAdapter {
                timestamp: timestamp(ts + 1),
                line: "deflate line".into(),
                structured_metadata: vec![],
            }],
            hash: 0,
        }],
    };
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    deflate.write_all(&snappy_proto(&request)).unwrap();
    let (status, body) = cluster
        .post(
            "application/x-protobuf",
            Some("deflate"),
            deflate.finish().unwrap(),
        )
        .await;
    assert_eq!((status, body.as_str()), (204, ""));

    let lines: Vec<_> = cluster
        .received(0)
        .into_iter()
        .flat_map(|(_, s)| s.entries.into_iter().map(|e| e.line))
        .collect();
    assert_eq!(lines, ["gz line", "deflate line"]);
    // service_name falls back to unknown_service.
    assert!(
        cluster.received(0)[0]
            .1
            .labels
            .contains(r#"service_name="unknown_service""#)
    );
}

#[tokio::test]
async fn bad_bodies_are_rejected_with_reasons() {
    let cluster = start(&[None], 1, |c| c.max_recv_msg_size = 4096).await;
    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{app="x"}"#.into(),
            entries: vec![EntryAdapter {
                timestamp: timestamp(now_nanos()),
                line: "a line".into(),
                structured_metadata: vec![],
            }],
            hash: 0,
        }],
    };
    let raw = request.encode_to_vec();
    let truncated = snap::raw::Encoder::new()
        .compress_vec(&raw[..raw.len() - 2])
        .unwrap();
    let (status, body) = cluster
        .post("application/x-protobuf", None, truncated)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid protobuf body"), "{body}");

    let (status, body) = cluster.post("application/x-protobuf", None, raw).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("snappy") || body.contains("protobuf"),
        "{body}"
    );

    let (status, body) = cluster
        .post(
            "application/json",
            None,
            br#"{"streams": [{"stream": "#.to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("invalid JSON body"), "{body}");

    let (status, body) = cluster
        .post("application/json", Some("gzip"), b"not gzip".to_vec())
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid gzip request body"), "{body}");

    let (status, body) = cluster
        .post("application/json", None, vec![b' '; 5000])
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max_recv_msg_size"), "{body}");

    let response = cluster
        .http
        .post(format!("{}/loki/api/v1/push", cluster.url))
        .header("Content-Type", "application/json")
        .body(r#"{"streams":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401, "no X-Scope-OrgID");
    let response = cluster
        .http
        .post(format!("{}/loki/api/v1/push", cluster.url))
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", "..")
        .body(r#"{"streams":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "invalid X-Scope-OrgID");

    let (status, body) = cluster.push_json(&serde_json::json!({"streams": []})).await;
    assert_eq!((status, body.as_str()), (204, ""), "an empty push is fine");
    assert!(cluster.received(0).is_empty());
}

#[tokio::test]
async fn invalid_streams_and_entries_get_specific_messages() {
    let cluster = start(&[None], 1, |c| c.limits.max_line_size = 100).await;
    let ts = now_nanos();
    let too_many: serde_json::Map<String, serde_json::Value> = (0..16)
        .map(|i| (format!("l{i}"), serde_json::Value::from("v")))
        .collect();
    let hour = 3_600_000_000_000i64;
    let (status, body) = cluster
        .push_json(&serde_json::json!({"streams": [
            {"stream": {"app": "ok"}, "values": [
                [ts.to_string(), "kept"],
                [ts.to_string(), "x".repeat(200)],
                ["1000000000", "ancient"],
                [(ts + hour).to_string(), "from the future"],
            ]},
            {"stream": {}, "values": [[ts.to_string(), "no labels"]]},
            {"stream": {"bad-name": "x"}, "values": [[ts.to_string(), "bad"]]},
            {"stream": too_many, "values": [[ts.to_string(), "many"]]},
        ]}))
        .await;
    assert_eq!(status, 400, "{body}");
    for expected in [
        "max entry size '100' bytes exceeded for stream '{app=\"ok\"}' while adding an entry with length '200' bytes",
        "entry for stream '{app=\"ok\"}' has timestamp too old: 1970-01-01T00:00:01Z, oldest acceptable timestamp is:",
        "entry for stream '{app=\"ok\"}' has timestamp too new:",
        "error at least one label pair is required per stream",
        "error parsing labels '{bad-name=\"x\"}' with error: invalid label name \"bad-name\"",
        "has 16 label names; limit 15",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in {body}");
    }
    // The valid entry was still ingested.
    let received = cluster.received(0);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].1.entries.len(), 1);
    assert_eq!(received[0].1.entries[0].line, "kept");

    // Invalid label syntax in protobuf.
    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{app="x""#.into(),
            entries: vec![EntryAdapter {
                timestamp: timestamp(ts),
                line: "l".into(),
                structured_metadata: vec![],
            }],
            hash: 0,
        }],
    };
    let (status, body) = cluster
        .post("application/x-protobuf", None, snappy_proto(&request))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.starts_with("error parsing labels '{app=\"x\"'"),
        "{body}"
    );

    let metrics = cluster
        .http
        .get(format!("{}/metrics", cluster.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"lucia_discarded_samples_total{reason="line_too_long",tenant="team-a"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"lucia_distributor_lines_received_total{tenant="team-a"} 8"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn rate_limit_rejects_the_whole_push() {
    // 1 KiB/s with a 1 KiB burst.
    let cluster = start(&[None], 1, |c| {
        c.limits = LimitsConfig {
            ingestion_rate_mb: 1.0 / 1024.0,
            ingestion_burst_size_mb: 1.0 / 1024.0,
            ..LimitsConfig::default()
        }
    })
    .await;
    let ts = now_nanos().to_string();
    let small =
        serde_json::json!({"streams":[{"stream":{"a":"1"},"values":[[ts, "x".repeat(600)]]}]});
    assert_eq!(cluster.push_json(&small).await.0, 204);
    let (status, body) = cluster.push_json(&small).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body.trim_end(),
        "ingestion rate limit exceeded for user team-a (limit: 1024 bytes/sec) while attempting to ingest 1 lines totaling 600 bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased"
    );
    assert_eq!(
        cluster.received(0).len(),
        1,
        "the rejected push was not forwarded"
    );
}

#[tokio::test]
async fn replication_succeeds_on_quorum() {
    let push = |ts: i64| {
        serde_json::json!({"streams":[
            {"stream":{"app":"a"},"values":[[ts.to_string(),"one"]]},
            {"stream":{"app":"b"},"values":[[ts.to_string(),"two"]]},
        ]})
    };
    let ts = now_nanos();

    let cluster = start(&[None, Some(tonic::Code::Unavailable), None], 3, |_| {}).await;
    let (status, body) = cluster.push_json(&push(ts)).await;
    assert_eq!((status, body.as_str()), (204, ""));
    // Both healthy replicas hold both streams (quorum 2 of 3 needs both).
    assert_eq!(cluster.received(0).len(), 2);
    assert_eq!(cluster.received(2).len(), 2);

    let cluster = start(
        &[
            None,
            Some(tonic::Code::Unavailable),
            Some(tonic::Code::Internal),
        ],
        3,
        |_| {},
    )
    .await;
    let (status, body) = cluster.push_json(&push(ts)).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("fake ingester told to fail"), "{body}");

    // An ingester's InvalidArgument is the client's problem.
    let cluster = start(&[Some(tonic::Code::InvalidArgument)], 1, |_| {}).await;
    let (status, body) = cluster.push_json(&push(ts)).await;
    assert_eq!(
        (status, body.trim_end()),
        (400, "fake ingester told to fail")
    );

    let cluster = start(&[Some(tonic::Code::ResourceExhausted)], 1, |_| {}).await;
    assert_eq!(cluster.push_json(&push(ts)).await.0, 429);

    // RF 3 but a single ingester: no quorum possible.
    let cluster = start(&[None], 3, |_| {}).await;
    let (status, body) = cluster.push_json(&push(ts)).await;
    assert_eq!(
        (status, body.trim_end()),
        (503, "at least 2 live replicas required, could only find 1")
    );
    assert!(cluster.received(0).is_empty());
}

#[tokio::test]
async fn unreachable_ingester_counts_as_a_failure() {
    let cluster = start(&[None, None], 3, |_| {}).await;
    // A member nobody listens on: a port bound, then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cluster.ring.upsert(InstanceDesc {
        id: "dead".into(),
        addr: dead.to_string(),
        tokens: vec![7, 70_000, 7_000_000],
        state: InstanceState::Active,
        heartbeat: 0,
    });
    let ring: serde_json::Value = cluster
        .http
        .get(format!("{}/ring", cluster.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let members = ring["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0]["id"], "dead");
    assert_eq!(members[0]["state"], "ACTIVE");
    assert_eq!(members[1]["tokens"], 16);

    let push = serde_json::json!({"streams":[{"stream":{"a":"1"},"values":[[now_nanos().to_string(),"x"]]}]});
    let (status, body) = cluster.push_json(&push).await;
    assert_eq!(
        (status, body.as_str()),
        (204, ""),
        "2 live of RF 3 is a quorum"
    );

    cluster.ring.remove("ingester-1");
    let (status, body) = cluster.push_json(&push).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains(&format!("push to ingester {dead} failed")),
        "{body}"
    );
}

#[tokio::test]
async fn large_push_is_fully_delivered() {
    let cluster = start(&[None, None, None], 3, |_| {}).await;
    let ts = now_nanos();
    // Over the size at which decoding moves to the blocking pool.
    let values: Vec<_> = (0..4000)
        .map(|i| serde_json::json!([(ts + i).to_string(), format!("line {i} {}", "x".repeat(90))]))
        .collect();
    let (status, body) = cluster
        .push_json(&serde_json::json!({"streams":[{"stream":{"app":"big"},"values":values}]}))
        .await;
    assert_eq!((status, body.as_str()), (204, ""));
    // At least a quorum (2 of 3) holds every line; a third may still be in flight.
    let complete = (0..3)
        .filter(|&i| {
            cluster
                .received(i)
                .iter()
                .map(|(_, s)| s.entries.len())
                .sum::<usize>()
                == 4000
        })
        .count();
    assert!(complete >= 2, "only {complete} replicas hold every line");
}
