//! Ingester tests over gRPC.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::metrics::Metrics;
use lucia_common::server::{Readiness, RoleContext, bind, serve_roles};
use lucia_common::store::ChunkStore;
use lucia_ingester::ingester::{Config, StorageConfig, start};
use lucia_proto::ingester::ingester_client::IngesterClient;
use lucia_proto::ingester::{Direction, QueryRequest, SeriesRequest};
use lucia_proto::logproto::{
    EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp,
};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_secs(60);
const BASE: i64 = 1_767_225_600_000_000_000;

struct Running {
    addr: std::net::SocketAddr,
    shutdown: Shutdown,
    server: JoinHandle<std::io::Result<()>>,
    readiness: Readiness,
}

fn config(prefix: &str) -> Config {
    let mut config = Config::default();
    config.ring.kvstore.prefix = prefix.to_string();
    config.instance_id = Some("ingester-test".into());
    // Nothing is flushed or checkpointed in the background during a test.
    config.flush_check_period = ConfigDuration::from_secs(3600);
    config.wal.checkpoint_duration = ConfigDuration::from_secs(3600);
    config.storage = StorageConfig::default();
    config
}

async fn run(data_dir: &Path, prefix: &str) -> Running {
    let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let ctx = RoleContext {
        advertise_addr: addr,
        metrics: Metrics::new(),
        readiness: Readiness::default(),
        shutdown: Shutdown::new(),
        data_dir: data_dir.to_path_buf(),
        multi_tenant: true,
        consul: None,
    };
    let role = start(config(prefix), ctx.clone()).await.unwrap();
    let readiness = ctx.readiness.clone();
    let shutdown = ctx.shutdown.clone();
    let server = tokio::spawn(async move { serve_roles(listener, &ctx, vec![role]).await });
    Running {
        addr,
        shutdown,
        server,
        readiness,
    }
}

impl Running {
    async fn client(&self) -> IngesterClient<Channel> {
        IngesterClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Graceful stop: flush, leave the ring, clean the WAL.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.server)
            .await
            .expect("ingester stops in time")
            .unwrap()
            .unwrap();
    }

    /// A crash: the server goes away without flushing anything.
    async fn crash(self) {
        self.server.abort();
        let _ = self.server.await;
    }
}

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "test-ingester-{}-{}/",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn entry(ts: i64, line: String) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(Timestamp {
            seconds: ts / 1_000_000_000,
            nanos: (ts % 1_000_000_000) as i32,
        }),
        line,
        structured_metadata: vec![LabelPairAdapter {
            name: "trace_id".into(),
            value: format!("{ts:x}"),
        }],
    }
}

fn tenant_request<T>(tenant: &str, msg: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    request
        .metadata_mut()
        .insert("x-scope-orgid", tenant.parse().unwrap());
    request
}

const STREAMS: [&str; 3] = [
    r#"{app="api", env="prod"}"#,
    r#"{app="api", env="dev"}"#,
    r#"{app="web", env="prod"}"#,
];

/// Pushes 3 streams × 300 entries in batches; returns them per stream.
async fn push_all(client: &mut IngesterClient<Channel>) -> Vec<(String, Vec<EntryAdapter>)> {
    let mut expected: Vec<(String, Vec<EntryAdapter>)> = STREAMS
        .iter()
        .map(|s| (s.to_string(), Vec::new()))
        .collect();
    for batch in 0..10 {
        let mut request = PushRequest::default();
        for (i, labels) in STREAMS.iter().enumerate() {
            let entries: Vec<EntryAdapter> = (0..30)
                .map(|j| {
                    let n = batch * 30 + j;
                    entry(
                        BASE + n * 1_000_000 + i as i64,
                        format!("level=info stream={i} n={n} msg=\"hello {n}\""),
                    )
                })
                .collect();
            expected[i].1.extend(entries.clone());
            request.streams.push(StreamAdapter {
                labels: labels.to_string(),
                entries,
                hash: 0,
            });
        }
        client
            .push(tenant_request("team-a", request))
            .await
            .expect("push is accepted");
    }
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    expected
}

async fn query(
    client: &mut IngesterClient<Channel>,
    tenant: &str,
    selector: &str,
    limit: u32,
    direction: Direction,
) -> Vec<(String, Vec<EntryAdapter>)> {
    let request = QueryRequest {
        selector: selector.into(),
        start: BASE,
        end: BASE + 3_600_000_000_000,
        limit,
        direction: direction as i32,
    };
    let mut stream = client
        .query(tenant_request(tenant, request))
        .await
        .unwrap()
        .into_inner();
    let mut out: Vec<(String, Vec<EntryAdapter>)> = Vec::new();
    while let Some(response) = stream.message().await.unwrap() {
        for s in response.streams {
            match out.iter_mut().find(|(l, _)| *l == s.labels) {
                Some((_, e)) => e.extend(s.entries),
                None => out.push((s.labels, s.entries)),
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every entry in the store for `tenant`, per stream, sorted by time.
async fn stored(data_dir: &Path, tenant: &str) -> Vec<(String, Vec<(i64, String)>)> {
    let store = ChunkStore::from_config(&StorageConfig::default(), data_dir).unwrap();
    let mut out: Vec<(String, Vec<(i64, String)>)> = Vec::new();
    for item in store.list_index(tenant, 0, i64::MAX).await.unwrap() {
        let chunk = store.fetch_chunk(&item.key).await.unwrap();
        assert_eq!(chunk.labels, item.labels);
        assert_eq!(chunk.entries.len() as u64, item.entries);
        let lines = chunk.entries.into_iter().map(|e| (e.ts, e.line));
        match out.iter_mut().find(|(l, _)| *l == chunk.labels) {
            Some((_, e)) => e.extend(lines),
            None => out.push((chunk.labels, lines.collect())),
        }
    }
    for (_, e) in &mut out {
        e.sort();
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn lines(streams: &[(String, Vec<EntryAdapter>)]) -> Vec<(String, Vec<(i64, String)>)> {
    streams
        .iter()
        .map(|(l, e)| {
            let ts = |e: &EntryAdapter| {
                let t = e.timestamp.unwrap_or_default();
                t.seconds * 1_000_000_000 + i64::from(t.nanos)
            };
            let mut lines: Vec<(i64, String)> = e.iter().map(|e| (ts(e), e.line.clone())).collect();
            lines.sort();
            (l.clone(), lines)
        })
        .collect()
}

#[tokio::test]
async fn push_query_restart_and_flush_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix();

    let ingester = run(dir.path(), &prefix).await;
    assert!(
        ingester.readiness.not_ready().is_empty(),
        "ready once started"
    );
    let mut client = ingester.client().await;
    let expected = push_all(&mut client).await;

    let got = query(
        &mut client,
        "team-a",
        r#"{app=~".+"}"#,
        0,
        Direction::Forward,
    )
    .await;
    assert_eq!(got, expected, "everything, with metadata, in time order");
    assert!(
        query(
            &mut client,
            "team-b",
            r#"{app=~".+"}"#,
            0,
            Direction::Forward
        )
        .await
        .is_empty(),
        "tenants are isolated"
    );

    let newest = query(
        &mut client,
        "team-a",
        r#"{env="prod"}"#,
        5,
        Direction::Backward,
    )
    .await;
    let total: usize = newest.iter().map(|(_, e)| e.len()).sum();
    assert_eq!(total, 5);
    assert!(newest.iter().all(|(l, _)| l.contains(r#"env="prod""#)));
    let web = &newest.iter().find(|(l, _)| l.contains("web")).unwrap().1;
    assert!(
        web.windows(2).all(|w| {
            let key = |e: &EntryAdapter| e.timestamp.map(|t| (t.seconds, t.nanos));
            key(&w[0]) > key(&w[1])
        }),
        "backward order"
    );

    let series = client
        .series(tenant_request(
            "team-a",
            SeriesRequest {
                selector: r#"{app="api"}"#.into(),
                start: 0,
                end: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .series;
    assert_eq!(series, vec![STREAMS[1].to_string(), STREAMS[0].to_string()]);

    // Too old for the out-of-order window: rejected, the other entry kept.
    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: STREAMS[0].into(),
            entries: vec![
                entry(BASE - 7_200_000_000_000, "too old".into()),
                entry(BASE + 299_000_000, "level=info late but fine".into()),
            ],
            hash: 0,
        }],
    };
    let status = client
        .push(tenant_request("team-a", request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("entry too far behind"),
        "{status:?}"
    );
    let mut expected = expected;
    let late = entry(BASE + 299_000_000, "level=info late but fine".into());
    let prod = expected.iter_mut().find(|(l, _)| l == STREAMS[0]).unwrap();
    prod.1.push(late);
    prod.1
        .sort_by_key(|e| e.timestamp.map(|t| (t.seconds, t.nanos)));

    // A retried push is dropped as duplicate entries.
    let retry = PushRequest {
        streams: vec![StreamAdapter {
            labels: STREAMS[2].into(),
            entries: expected[2].1[290..].to_vec(),
            hash: 0,
        }],
    };
    client.push(tenant_request("team-a", retry)).await.unwrap();

    // Crash: nothing flushed, everything comes back from the WAL, once.
    ingester.crash().await;
    assert!(
        stored(dir.path(), "team-a").await.is_empty(),
        "nothing flushed yet"
    );
    let ingester = run(dir.path(), &prefix).await;
    let mut client = ingester.client().await;
    let got = query(
        &mut client,
        "team-a",
        r#"{app=~".+"}"#,
        0,
        Direction::Forward,
    )
    .await;
    assert_eq!(got, expected, "replayed exactly once");

    // Graceful stop flushes every chunk, head blocks included.
    ingester.stop().await;
    assert_eq!(stored(dir.path(), "team-a").await, lines(&expected));

    // After a clean stop, memory starts empty: no entry is served twice.
    let ingester = run(dir.path(), &prefix).await;
    let mut client = ingester.client().await;
    assert!(
        query(
            &mut client,
            "team-a",
            r#"{app=~".+"}"#,
            0,
            Direction::Forward
        )
        .await
        .is_empty()
    );
    ingester.stop().await;
    assert_eq!(stored(dir.path(), "team-a").await, lines(&expected));
}

#[tokio::test]
async fn stream_limit_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let ctx = RoleContext {
        advertise_addr: addr,
        metrics: Metrics::new(),
        readiness: Readiness::default(),
        shutdown: Shutdown::new(),
        data_dir: dir.path().to_path_buf(),
        multi_tenant: true,
        consul: None,
    };
    let mut config = config(&unique_prefix());
    config.limits.max_global_streams_per_user = 2;
    let role = start(config, ctx.clone()).await.unwrap();
    let shutdown = ctx.shutdown.clone();
    let server = tokio::spawn(async move { serve_roles(listener, &ctx, vec![role]).await });
    let mut client = IngesterClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let request = PushRequest {
        streams: STREAMS
            .iter()
            .map(|labels| StreamAdapter {
                labels: labels.to_string(),
                entries: vec![entry(BASE, "x".into())],
                hash: 0,
            })
            .collect(),
    };
    let status = client
        .push(tenant_request("team-a", request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("max_global_streams_per_user"));
    let got = query(
        &mut client,
        "team-a",
        r#"{app=~".+"}"#,
        0,
        Direction::Forward,
    )
    .await;
    assert_eq!(got.len(), 2, "the streams within the limit are kept");

    let status = client
        .push(tonic::Request::new(PushRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "tenant required"
    );

    shutdown.cancel();
    tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
