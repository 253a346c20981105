//! End-to-end tests of the agent: files tailed into a local receiver that
//! decodes Loki pushes (snappy + protobuf).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use lucia_agent::{Config, Options};
use lucia_common::Shutdown;
use lucia_common::server::{Readiness, RoleContext};
use lucia_proto::logproto::PushRequest;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::watch;

#[derive(Debug, Clone)]
struct Received {
    labels: String,
    line: String,
    tenant: Option<String>,
    ts: i64,
}

/// A Loki push endpoint that records what it accepted; the first
/// `fail_first` requests answer `fail_status`.
#[derive(Clone)]
struct Receiver {
    url: String,
    entries: Arc<Mutex<Vec<Received>>>,
    count: watch::Receiver<usize>,
    failed: Arc<AtomicU32>,
    failures: watch::Receiver<u32>,
}

async fn receiver(fail_first: u32, fail_status: u16) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    receiver_on(listener, fail_first, fail_status)
}

fn receiver_on(listener: tokio::net::TcpListener, fail_first: u32, fail_status: u16) -> Receiver {
    let entries = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = watch::channel(0usize);
    let tx = Arc::new(tx);
    let failed = Arc::new(AtomicU32::new(0));
    let (failures_tx, failures) = watch::channel(0u32);
    let failures_tx = Arc::new(failures_tx);
    let state = (entries.clone(), tx, failed.clone(), failures_tx);
    let app = axum::Router::new().route(
        "/loki/api/v1/push",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (entries, tx, failed, failures_tx) = state.clone();
            async move {
                if failed.load(Ordering::SeqCst) < fail_first {
                    let n = failed.fetch_add(1, Ordering::SeqCst) + 1;
                    failures_tx.send_replace(n);
                    return StatusCode::from_u16(fail_status).unwrap_or(StatusCode::IM_A_TEAPOT);
                }
                let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&body) else {
                    return StatusCode::BAD_REQUEST;
                };
                let Ok(request) = PushRequest::decode(raw.as_slice()) else {
                    return StatusCode::BAD_REQUEST;
                };
                let tenant = headers
                    .get("X-Scope-OrgID")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let mut entries = entries.lock();
                for stream in request.streams {
                    for e in stream.entries {
                        let ts = e
                            .timestamp
                            .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                            .unwrap_or_default();
                        entries.push(Received {
                            labels: stream.labels.clone(),
                            line: e.line,
                            tenant: tenant.clone(),
                            ts,
                        });
                    }
                }
                tx.send_replace(entries.len());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/loki/api/v1/push"),
        entries,
        count: rx,
        failed,
        failures,
    }
}

impl Receiver {
    /// Waits (bounded) until at least `n` entries arrived.
    async fn wait_for(&self, n: usize) {
        let mut rx = self.count.clone();
        let waited = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| *c >= n)).await;
        assert!(
            waited.is_ok(),
            "timed out waiting for {n} entries, got {}",
            self.entries.lock().len()
        );
    }

    fn lines(&self) -> Vec<String> {
        self.entries.lock().iter().map(|e| e.line.clone()).collect()
    }
}

struct Agent {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    addr: std::net::SocketAddr,
}

async fn start_agent(config: Config) -> Agent {
    let (listener, addr) = lucia_common::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let ctx = RoleContext {
        advertise_addr: addr,
        metrics: lucia_common::metrics::Metrics::new(),
        readiness: Readiness::default(),
        shutdown: shutdown.clone(),
        data_dir: std::env::temp_dir(),
        multi_tenant: false,
        consul: None,
    };
    let role = lucia_agent::start(config, Options::default(), ctx.clone())
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        lucia_common::server::serve_roles(listener, &ctx, vec![role])
            .await
            .unwrap();
    });
    Agent {
        shutdown,
        task,
        addr,
    }
}

impl Agent {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

fn config(dir: &Path, url: &str, extra_stages: &str) -> Config {
    let yaml = format!(
        r#"
server:
  http_listen_port: 9080
  grpc_listen_port: 0
positions:
  filename: {dir}/positions.yaml
  sync_period: 100ms
target_config:
  sync_period: 100ms
clients:
  - url: {url}
    batchwait: 50ms
    backoff_config:
      min_period: 50ms
      max_period: 200ms
      max_retries: 100
scrape_configs:
  - job_name: files
    static_configs:
      - targets: [localhost]
        labels:
          job: test
          __path__: {dir}/logs/**/*.log
          __path_exclude__: {dir}/logs/**/skip*.log
{extra_stages}
"#,
        dir = dir.display()
    );
    Config::parse(Path::new("test.yaml"), &yaml).unwrap()
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:05}")).collect()
}

fn assert_exactly_once(received: &[String], expected: &[String]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in received {
        *counts.entry(line.as_str()).or_default() += 1;
    }
    for line in expected {
        assert_eq!(counts.get(line.as_str()), Some(&1), "line {line:?}");
    }
    assert_eq!(received.len(), expected.len(), "unexpected extra lines");
}

fn logs_dir(dir: &Path) -> PathBuf {
    let logs = dir.join("logs/app");
    std::fs::create_dir_all(&logs).unwrap();
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_appends_rename_and_copytruncate_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(0, 500).await;
    let file = logs.join("a.log");
    append(&logs.join("skip-me.log"), numbered("skipped", 0..5));
    append(&file, numbered("first", 0..100));
    // A partial last line is held until its newline arrives.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        write!(f, "partial-").unwrap();
    }
    let agent = start_agent(config(dir.path(), &recv.url, "")).await;
    recv.wait_for(100).await;
    append(&file, ["line".to_string()]);
    let mut expected = numbered("first", 0..100);
    expected.push("partial-line".to_string());
    recv.wait_for(101).await;

    // Rotation by rename: the writer keeps writing to the old file for a
    // moment, then a new file appears under the same name.
    let mut old = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::fs::rename(&file, logs.join("a.log.1")).unwrap();
    {
        use std::io::Write;
        for line in numbered("late", 0..20) {
            writeln!(old, "{line}").unwrap();
        }
    }
    append(&file, numbered("second", 0..50));
    expected.extend(numbered("late", 0..20));
    expected.extend(numbered("second", 0..50));
    recv.wait_for(expected.len()).await;

    // Copy-truncate.
    std::fs::copy(&file, logs.join("a.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    append(&file, numbered("third", 0..10));
    expected.extend(numbered("third", 0..10));
    recv.wait_for(expected.len()).await;

    // A new file matched by `**` on the next sync.
    std::fs::create_dir_all(logs.join("deeper")).unwrap();
    append(&logs.join("deeper/b.log"), numbered("deep", 0..5));
    expected.extend(numbered("deep", 0..5));
    recv.wait_for(expected.len()).await;
    agent.stop().await;
    assert_exactly_once(&recv.lines(), &expected);
    let entries = recv.entries.lock().clone();
    let deep = entries.iter().find(|e| e.line == "deep-00000").unwrap();
    assert!(deep.labels.contains(r#"job="test""#), "{}", deep.labels);
    assert!(deep.labels.contains("deeper/b.log"), "{}", deep.labels);
    assert!(!deep.labels.contains("__path__"), "{}", deep.labels);

    // The positions file is Promtail's format and points at the end.
    let positions = std::fs::read_to_string(dir.path().join("positions.yaml")).unwrap();
    assert!(positions.starts_with("positions:\n"), "{positions}");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        positions.contains(&format!("a.log\": \"{size}\"")),
        "{positions}"
    );
}

/// Ships 50 lines, stops the agent, appends 30 more, rotates the file with
/// `rotate`, writes `new_lines` to the new file and restarts: every line
/// must arrive once, and lines appended afterwards too.
async fn rotation_while_stopped(name: &str, rotate: impl FnOnce(&Path, &Path), new_lines: usize) {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(0, 500).await;
    let file = logs.join(format!("{name}.log"));
    append(&file, numbered("before", 0..50));
    let agent = start_agent(config(dir.path(), &recv.url, "")).await;
    recv.wait_for(50).await;
    agent.stop().await;

    append(&file, numbered("stopped", 0..30));
    // The rotated file (`<name>.log.1`) is not matched by `**/*.log`.
    rotate(&file, &logs.join(format!("{name}.log.1")));
    append(&file, numbered("new", 0..new_lines));
    let agent = start_agent(config(dir.path(), &recv.url, "")).await;
    let mut expected = numbered("before", 0..50);
    expected.extend(numbered("stopped", 0..30));
    expected.extend(numbered("new", 0..new_lines));
    recv.wait_for(expected.len()).await;
    append(&file, numbered("after", 0..10));
    expected.extend(numbered("after", 0..10));
    recv.wait_for(expected.len()).await;
    agent.stop().await;
    assert_exactly_once(&recv.lines(), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_positions_including_rotation_while_stopped() {
    rotation_while_stopped(
        "r",
        |file, rotated| std::fs::rename(file, rotated).unwrap(),
        20,
    )
    .await;
}

/// logrotate's `copytruncate` while the agent is stopped, the new file
/// growing past the old position before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_truncate_while_stopped_ships_every_line_once() {
    let copy_truncate = |file: &Path, rotated: &Path| {
        std::fs::copy(file, rotated).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.set_len(0).unwrap();
    };
    rotation_while_stopped("c", copy_truncate, 120).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(5, 500).await;
    let expected = numbered("retry", 0..200);
    append(&logs.join("x.log"), expected.clone());
    let agent = start_agent(config(dir.path(), &recv.url, "")).await;
    recv.wait_for(expected.len()).await;
    assert_eq!(recv.failed.load(Ordering::SeqCst), 5);
    let ready = lucia_common::http_client::client()
        .get(format!("http://{}/ready", agent.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = lucia_common::http_client::client()
        .get(format!("http://{}/metrics", agent.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("promtail_batch_retries_total{"),
        "{metrics}"
    );
    agent.stop().await;
    assert_exactly_once(&recv.lines(), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(1, 400).await;
    append(&logs.join("x.log"), numbered("rejected", 0..3));
    let agent = start_agent(config(dir.path(), &recv.url, "")).await;
    let mut failures = recv.failures.clone();
    tokio::time::timeout(Duration::from_secs(30), failures.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
    // Later lines go through; the rejected ones are not retried.
    append(&logs.join("x.log"), numbered("accepted", 0..2));
    recv.wait_for(2).await;
    // A later batch is sent only once the previous answer was handled, so
    // once it arrived the counters of the earlier ones are up to date.
    append(&logs.join("x.log"), numbered("accepted", 2..3));
    recv.wait_for(3).await;
    let metrics = lucia_common::http_client::client()
        .get(format!("http://{}/metrics", agent.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("promtail_dropped_entries_total{host=")
            && metrics.contains("reason=\"rejected\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("promtail_sent_entries_total{"),
        "{metrics}"
    );
    agent.stop().await;
    assert_exactly_once(&recv.lines(), &numbered("accepted", 0..3));
}

/// The static-file example of Promtail's documentation with the Apache
/// access-log pipeline (regex + labels + timestamp), unchanged apart from
/// the paths.
const PROMTAIL_DOCS_EXAMPLE: &str = r#"
server:
  http_listen_port: 9080
  grpc_listen_port: 0

positions:
  filename: DIR/positions.yaml

clients:
  - url: URL

scrape_configs:
- job_name: system
  static_configs:
  - targets:
      - localhost
    labels:
      job: varlogs
      __path__: DIR/logs/*log
  pipeline_stages:
  - regex:
      expression: '^(?P<ip>\S+) (?P<identd>\S+) (?P<user>\S+) \[(?P<timestamp>[\w:/]+\s[+\\-]\d{4})\] "(?P<action>\S+)\s?(?P<path>\S+)?\s?(?P<protocol>\S+)?" (?P<status>\d{3}|-) (?P<size>\d+|-)\s?"?(?P<referer>[^"]*)"?\s?"?(?P<useragent>[^"]*)?"?$'
  - labels:
      action:
      status_code: "status"
  - timestamp:
      source: timestamp
      format: "02/Jan/2006:15:04:05 -0700"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtail_docs_config_runs_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let recv = receiver(0, 500).await;
    let yaml = PROMTAIL_DOCS_EXAMPLE
        .replace("DIR", &dir.path().display().to_string())
        .replace("URL", &recv.url);
    let path = dir.path().join("promtail.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let config = Config::load(&path, false).unwrap();
    assert_eq!(config.listen_address().map(|a| a.port()), Some(9080));
    let line = r#"192.168.1.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://example.com/" "Mozilla/4.08""#;
    append(&dir.path().join("logs/access.log"), [line.to_string()]);
    let agent = start_agent(config).await;
    recv.wait_for(1).await;
    agent.stop().await;
    let got = recv.entries.lock()[0].clone();
    assert_eq!(got.line, line);
    assert_eq!(got.ts, 971_211_336_000_000_000);
    assert!(got.labels.contains(r#"action="GET""#), "{}", got.labels);
    assert!(
        got.labels.contains(r#"status_code="200""#),
        "{}",
        got.labels
    );
    assert!(got.labels.contains(r#"job="varlogs""#), "{}", got.labels);
    assert!(got.tenant.is_none());
}

/// The error of loading `yaml` as `p.yaml`.
fn config_error(yaml: &str) -> String {
    Config::parse(Path::new("p.yaml"), yaml)
        .unwrap_err()
        .to_string()
}

#[test]
fn config_errors_name_file_line_and_field() {
    let err = Config::parse(
        Path::new("/etc/promtail.yaml"),
        "clients:\n  - url: http://x/loki/api/v1/push\n    batchwiat: 1s\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/etc/promtail.yaml") && err.contains("batchwiat") && err.contains("line 3"),
        "{err}"
    );
    let err = config_error(
        "scrape_configs:\n  - job_name: a\n    pipeline_stages:\n      - regexp:\n          expression: x\n",
    );
    assert!(err.contains("regexp") && err.contains("line 4"), "{err}");
    let err = config_error(
        "scrape_configs:\n  - job_name: a\n    pipeline_stages:\n      - regex:\n          expression: '(unclosed'\n",
    );
    assert!(err.contains("regex stage"), "{err}");
    let err = config_error("limits_config:\n  readline_rate_enabled: true\n  readline_rate: 0\n");
    assert!(
        err.contains("p.yaml") && err.contains("limits_config.readline_rate"),
        "{err}"
    );
    let consul =
        "scrape_configs:\n  - job_name: a\n    consul_sd_configs:\n      - server: c:8500\n";
    let err = config_error(&format!("{consul}        servics: [x]\n"));
    assert!(err.contains("servics") && err.contains("line 5"), "{err}");
    let err = config_error(&format!("{consul}        scheme: gopher\n"));
    assert!(
        err.contains("consul_sd_configs[0]") && err.contains("gopher"),
        "{err}"
    );
    let err = config_error(
        "clients:\n  - url: https://x/loki/api/v1/push\n    tls_config:\n      ca_file: /nonexistent/ca.pem\n",
    );
    assert!(
        err.contains("p.yaml")
            && err.contains("clients[0].tls_config.ca_file: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
    let config = Config::parse(
        Path::new("p.yaml"),
        "clients:\n  - url: http://x/loki/api/v1/push\n",
    )
    .unwrap();
    let c = &config.clients[0];
    assert_eq!(c.batchwait.0, Duration::from_secs(1));
    assert_eq!(c.batchsize, 1 << 20);
    assert_eq!(c.backoff_config.min_period.0, Duration::from_millis(500));
    assert_eq!(c.backoff_config.max_period.0, Duration::from_secs(300));
    assert_eq!(c.backoff_config.max_retries, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_targets_and_relabeling() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(0, 500).await;
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("targets.json"),
        format!(r#"[{{"targets":["localhost"],"labels":{{"__path__":"{d}/logs/app/*.log","team":"blue"}}}}]"#),
    )
    .unwrap();
    let yaml = format!(
        r#"
positions:
  filename: {d}/positions.yaml
target_config:
  sync_period: 100ms
clients:
  - url: {url}
    batchwait: 50ms
    external_labels:
      cluster: c1
scrape_configs:
  - job_name: sd
    file_sd_configs:
      - files: ['{d}/*.json']
    relabel_configs:
      - source_labels: [__meta_filepath]
        regex: '.*/(\w+)\.json'
        target_label: source
      - source_labels: [team]
        regex: red
        action: drop
    pipeline_stages:
      - tenant:
          value: acme
"#,
        url = recv.url
    );
    let config = Config::parse(Path::new("sd.yaml"), &yaml).unwrap();
    append(&logs.join("a.log"), numbered("sd", 0..3));
    let agent = start_agent(config).await;
    recv.wait_for(3).await;
    agent.stop().await;
    let entries = recv.entries.lock().clone();
    assert_exactly_once(&recv.lines(), &numbered("sd", 0..3));
    let e = &entries[0];
    assert_eq!(e.tenant.as_deref(), Some("acme"));
    for label in [
        r#"team="blue""#,
        r#"source="targets""#,
        r#"cluster="c1""#,
        "a.log",
    ] {
        assert!(e.labels.contains(label), "{label} not in {}", e.labels);
    }
    assert!(!e.labels.contains("__meta"), "{}", e.labels);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_truncated_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(0, 500).await;
    let limits = "limits_config:\n  max_line_size: 10\n  max_line_size_truncate: true\n";
    append(&logs.join("x.log"), ["short".to_string(), "a".repeat(25)]);
    let agent = start_agent(config(dir.path(), &recv.url, limits)).await;
    recv.wait_for(2).await;
    agent.stop().await;
    assert_eq!(recv.lines(), vec!["short".to_string(), "a".repeat(10)]);

    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(0, 500).await;
    let limits = "limits_config:\n  max_line_size: 10\n";
    append(&logs.join("x.log"), ["a".repeat(25), "short".to_string()]);
    let agent = start_agent(config(dir.path(), &recv.url, limits)).await;
    recv.wait_for(1).await;
    let metrics = lucia_common::http_client::client()
        .get(format!("http://{}/metrics", agent.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    agent.stop().await;
    assert_eq!(recv.lines(), vec!["short".to_string()]);
    assert!(
        metrics.contains(r#"reason="line_too_long"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_push_api_relays_json_and_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let recv = receiver(0, 500).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        r#"
positions:
  filename: {d}/positions.yaml
clients:
  - url: {url}
    batchwait: 50ms
scrape_configs:
  - job_name: push
    loki_push_api:
      server:
        http_listen_address: 127.0.0.1
        http_listen_port: {port}
        grpc_listen_port: 0
      labels:
        pushserver: push1
      use_incoming_timestamp: true
    pipeline_stages:
      - static_labels:
          relayed: "yes"
"#,
        d = dir.path().display(),
        url = recv.url
    );
    let agent = start_agent(Config::parse(Path::new("push.yaml"), &yaml).unwrap()).await;
    let client = lucia_common::http_client::client();
    let push_url = format!("http://127.0.0.1:{port}/loki/api/v1/push");
    let json =
        r#"{"streams":[{"stream":{"app":"a"},"values":[["1700000000000000001","from json"]]}]}"#;
    let resp = client
        .post(&push_url)
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", "t1")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let request = PushRequest {
        streams: vec![lucia_proto::logproto::StreamAdapter {
            labels: r#"{app="b"}"#.to_string(),
            entries: vec![lucia_proto::logproto::EntryAdapter {
                timestamp: Some(lucia_proto::logproto::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 2,
                }),
                line: "from protobuf".to_string(),
                structured_metadata: vec![],
            }],
            hash: 0,
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap();
    let resp = client
        .post(&push_url)
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = client.post(&push_url).body("garbage").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    recv.wait_for(2).await;
    agent.stop().await;
    let mut entries = recv.entries.lock().clone();
    entries.sort_by_key(|e| e.ts);
    assert_eq!(entries[0].line, "from json");
    assert_eq!(entries[0].ts, 1_700_000_000_000_000_001);
    assert_eq!(entries[0].tenant.as_deref(), Some("t1"));
    assert_eq!(
        entries[0].labels,
        r#"{app="a", pushserver="push1", relayed="yes"}"#
    );
    assert_eq!(entries[1].line, "from protobuf");
    assert_eq!(entries[1].ts, 1_700_000_000_000_000_002);
    assert!(entries[1].tenant.is_none());
}

/// A fake Docker Engine API on a unix socket: one container `flog` whose
/// log stream (multiplexed frames, chunked) holds `lines` and then ends.
async fn fake_docker(socket: &Path, lines: Arc<Mutex<Vec<(u8, String)>>>) {
    use axum::extract::{Query, RawQuery};
    let list = axum::routing::get(|RawQuery(query): RawQuery| async move {
        let query = query.unwrap_or_default();
        // The filters of the config reach the API.
        if !query.contains("filters=") || !query.contains("flog") {
            return (StatusCode::BAD_REQUEST, String::new());
        }
        let body = r#"[{"Id":"abc123","Names":["/flog"],"Labels":{"logging_jobname":"flogjob","com.example.team":"blue"},
            "HostConfig":{"NetworkMode":"bridge"},"Ports":[{"PrivatePort":80,"Type":"tcp"}],
            "NetworkSettings":{"Networks":{"bridge":{"IPAddress":"172.17.0.2","NetworkID":"n1"}}}}]"#;
        (StatusCode::OK, body.to_string())
    });
    let logs = axum::routing::get(move |Query(q): Query<BTreeMap<String, String>>| {
        let lines = lines.clone();
        async move {
            let since: f64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0.0);
            let frames: Vec<Result<Vec<u8>, std::io::Error>> = lines
                .lock()
                .iter()
                .filter(|(_, l)| {
                    // Docker's `since` has second granularity.
                    let ts = lucia_agent::stages::parse_timestamp(
                        "RFC3339Nano",
                        l.split(' ').next().unwrap_or(""),
                    )
                    .unwrap_or(0);
                    ts / 1_000_000_000 >= since as i64
                })
                .map(|(stream, l)| {
                    let payload = format!("{l}\n");
                    let mut frame = vec![*stream, 0, 0, 0];
                    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                    frame.extend_from_slice(payload.as_bytes());
                    Ok(frame)
                })
                .collect();
            axum::body::Body::from_stream(futures::stream::iter(frames))
        }
    });
    let app = axum::Router::new()
        .route("/containers/json", list)
        .route("/containers/{id}/logs", logs);
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_discovery_follows_container_logs_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let lines = Arc::new(Mutex::new(vec![
        (1u8, "2024-01-02T03:04:05.000000001Z hello".to_string()),
        (2u8, "2024-01-02T03:04:05.000000002Z oops".to_string()),
    ]));
    fake_docker(&socket, lines.clone()).await;
    let recv = receiver(0, 500).await;
    // Promtail's documented docker example, with the socket path changed.
    let yaml = format!(
        r#"
server:
  http_listen_port: 9080
  grpc_listen_port: 0
positions:
  filename: {d}/positions.yaml
target_config:
  sync_period: 100ms
clients:
  - url: {url}
    batchwait: 50ms
scrape_configs:
  - job_name: flog_scrape
    docker_sd_configs:
      - host: unix://{sock}
        refresh_interval: 5s
        filters:
          - name: name
            values: [flog]
    relabel_configs:
      - source_labels: ['__meta_docker_container_name']
        regex: '/(.*)'
        target_label: 'container'
      - source_labels: ['__meta_docker_container_log_stream']
        target_label: 'logstream'
      - source_labels: ['__meta_docker_container_label_logging_jobname']
        target_label: 'job'
"#,
        d = dir.path().display(),
        url = recv.url,
        sock = socket.display()
    );
    let config = Config::parse(Path::new("docker.yaml"), &yaml).unwrap();
    let agent = start_agent(config.clone()).await;
    recv.wait_for(2).await;
    agent.stop().await;

    // Restarted: the stream starts again at the same second, the agent
    // skips what it already shipped and takes the new line.
    let agent = start_agent(config).await;
    lines
        .lock()
        .push((1, "2024-01-02T03:04:05.000000003Z again".to_string()));
    recv.wait_for(3).await;
    agent.stop().await;
    let mut entries = recv.entries.lock().clone();
    entries.sort_by_key(|e| e.ts);
    assert_exactly_once(
        &recv.lines(),
        &["hello".to_string(), "oops".to_string(), "again".to_string()],
    );
    assert_eq!(entries[0].ts, 1_704_164_645_000_000_001);
    assert_eq!(
        entries[0].labels,
        r#"{container="flog", job="flogjob", logstream="stdout"}"#
    );
    assert!(
        entries[1].labels.contains(r#"logstream="stderr""#),
        "{}",
        entries[1].labels
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tcp_both_framings() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let recv = receiver(0, 500).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        r#"
positions:
  filename: {d}/positions.yaml
clients:
  - url: {url}
    batchwait: 50ms
scrape_configs:
  - job_name: syslog
    syslog:
      listen_address: 127.0.0.1:{port}
      idle_timeout: 60s
      label_structured_data: yes
      labels:
        job: "syslog"
      use_incoming_timestamp: true
    relabel_configs:
      - source_labels: ['__syslog_message_hostname']
        target_label: 'host'
      - source_labels: ['__syslog_message_severity']
        target_label: 'level'
      - source_labels: ['__syslog_message_sd_origin_ip']
        target_label: 'origin'
"#,
        d = dir.path().display(),
        url = recv.url
    );
    let agent = start_agent(Config::parse(Path::new("syslog.yaml"), &yaml).unwrap()).await;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let framed =
        r#"<14>1 2024-01-02T03:04:05Z web1 app 42 - [origin ip="10.0.0.1"] counted message"#;
    let mut data = format!("{} {framed}", framed.len());
    data.push_str("<11>1 2024-01-02T03:04:06Z web2 app - - - line message\n");
    socket.write_all(data.as_bytes()).await.unwrap();
    socket.flush().await.unwrap();
    recv.wait_for(2).await;
    agent.stop().await;
    let mut entries = recv.entries.lock().clone();
    entries.sort_by_key(|e| e.ts);
    assert_eq!(entries[0].line, "counted message");
    assert_eq!(entries[0].ts, 1_704_164_645_000_000_000);
    assert_eq!(
        entries[0].labels,
        r#"{host="web1", job="syslog", level="informational", origin="10.0.0.1"}"#
    );
    assert_eq!(entries[1].line, "line message");
    assert_eq!(
        entries[1].labels,
        r#"{host="web2", job="syslog", level="error"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_rotated_files_are_shipped_once() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(0, 500).await;
    let write_gz = |name: &str, lines: &[String]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for line in lines {
            writeln!(gz, "{line}").unwrap();
        }
        std::fs::write(logs.join(name), gz.finish().unwrap()).unwrap();
    };
    let mut expected = numbered("gz", 0..300);
    write_gz("old.log.1.gz", &expected);
    let yaml = format!(
        r#"
positions:
  filename: {dir}/positions.yaml
  sync_period: 100ms
target_config:
  sync_period: 100ms
clients:
  - url: {url}
    batchwait: 50ms
scrape_configs:
  - job_name: rotated
    static_configs:
      - targets: [localhost]
        labels:
          job: test
          __path__: {dir}/logs/**/*.gz
"#,
        dir = dir.path().display(),
        url = recv.url
    );
    let config = Config::parse(Path::new("gz.yaml"), &yaml).unwrap();
    let agent = start_agent(config.clone()).await;
    recv.wait_for(expected.len()).await;
    agent.stop().await;
    // A restart finds the first file fully shipped (nothing is sent again)
    // and ships the one rotated meanwhile.
    let newer = numbered("gz2", 0..50);
    write_gz("old.log.2.gz", &newer);
    expected.extend(newer);
    let agent = start_agent(config).await;
    recv.wait_for(expected.len()).await;
    agent.stop().await;
    assert_exactly_once(&recv.lines(), &expected);
}

/// The agent's `/metrics` text.
async fn metrics_text(addr: std::net::SocketAddr) -> String {
    lucia_common::http_client::client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Polls `/metrics` (bounded) until `pred` holds of its text.
async fn wait_for_metrics(addr: std::net::SocketAddr, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics_text(addr).await;
        if pred(&text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config with positions in `dir`, 100ms target syncs and one client to
/// `url` (batchwait `batchwait`), followed by `rest` (top-level sections).
fn agent_config(dir: &Path, url: &str, batchwait: &str, rest: &str) -> Config {
    let yaml = format!(
        "positions:\n  filename: {dir}/positions.yaml\ntarget_config:\n  sync_period: 100ms\n\
         clients:\n  - url: {url}\n    batchwait: {batchwait}\n{rest}",
        dir = dir.display()
    );
    Config::parse(Path::new("agent.yaml"), &yaml).unwrap()
}

/// A service whose `log_path` meta names its log files.
fn service_with_logs(
    id: &str,
    name: &str,
    tags: &[&str],
    log_path: String,
) -> lucia_common::consul::ServiceRegistration {
    lucia_common::consul::ServiceRegistration {
        id: id.into(),
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        address: "127.0.0.1".into(),
        port: 8080,
        meta: [("log_path".to_string(), log_path)].into(),
        check: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_sd_targets_are_relabelled_tailed_and_stopped() {
    use lucia_common::consul::ConsulClient;
    let consul = lucia_tests::fake_consul::FakeConsul::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let svc = dir.path().join("svc");
    std::fs::create_dir_all(&svc).unwrap();
    let recv = receiver(0, 500).await;
    let scrape = format!(
        r#"scrape_configs:
  - job_name: consul
    consul_sd_configs:
      - server: {server}
        tags: [logs]
        refresh_interval: 100ms
    relabel_configs:
      - source_labels: [__meta_consul_service_metadata_log_path]
        target_label: __path__
      - source_labels: [__meta_consul_service]
        target_label: service
      - source_labels: [__meta_consul_dc]
        target_label: dc
      - source_labels: [__meta_consul_tags]
        regex: '.*,internal,.*'
        action: drop
"#,
        server = consul.address(),
    );
    let config = agent_config(dir.path(), &recv.url, "50ms", &scrape);
    append(&svc.join("app.log"), numbered("first", 0..3));
    append(&svc.join("hidden.log"), numbered("hidden", 0..2));
    let agent = start_agent(config).await;
    let client = ConsulClient::new(&consul.config()).unwrap();
    let app = service_with_logs("app-1", "app", &["logs"], format!("{d}/svc/app.log"));
    client.register_service(&app).await.unwrap();
    // Dropped by relabeling, and one without the tag the config asks for.
    let hidden = format!("{d}/svc/hidden.log");
    let internal = service_with_logs("hidden-1", "hidden", &["logs", "internal"], hidden.clone());
    client.register_service(&internal).await.unwrap();
    let untagged = service_with_logs("other-1", "other", &[], hidden);
    client.register_service(&untagged).await.unwrap();
    recv.wait_for(3).await;
    let e = recv.entries.lock()[0].clone();
    for label in [r#"service="app""#, r#"dc="dc1""#, "app.log"] {
        assert!(e.labels.contains(label), "{label} not in {}", e.labels);
    }
    assert!(!e.labels.contains("__meta"), "{}", e.labels);
    wait_for_metrics(agent.addr, "one file tailed", |m| {
        sample(m, "promtail_files_active_total") == Some(1.0)
    })
    .await;

    // Deregistered: its file's tailer stops.
    client.deregister_service("app-1").await.unwrap();
    wait_for_metrics(agent.addr, "the tailer to stop", |m| {
        sample(m, "promtail_files_active_total") == Some(0.0)
    })
    .await;
    // Lines written meanwhile are shipped once the service is back, from
    // the saved position (nothing twice).
    append(&svc.join("app.log"), numbered("second", 0..2));
    client.register_service(&app).await.unwrap();
    recv.wait_for(5).await;
    agent.stop().await;
    let mut expected = numbered("first", 0..3);
    expected.extend(numbered("second", 0..2));
    assert_exactly_once(&recv.lines(), &expected);
    consul.stop().await;
}

/// A config tailing `logs/**/*.log` with `limits` as its `limits_config`
/// and a `batchwait` of `batchwait`; each line's stream is its prefix.
fn limits_config(dir: &Path, url: &str, limits: &str, batchwait: &str) -> Config {
    let rest = format!(
        r#"limits_config:
{limits}
scrape_configs:
  - job_name: files
    static_configs:
      - labels:
          job: test
          __path__: {dir}/logs/**/*.log
    pipeline_stages:
      - regex:
          expression: '^(?P<stream>\w+)-'
      - labels:
          stream:
"#,
        dir = dir.display()
    );
    agent_config(dir, url, batchwait, &rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readline_rate_with_drop_counts_dropped_lines() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(0, 500).await;
    let limits = "  readline_rate_enabled: true\n  readline_rate: 1\n  readline_burst: 5\n";
    append(&logs.join("x.log"), numbered("burst", 0..50));
    let agent = start_agent(limits_config(dir.path(), &recv.url, limits, "50ms")).await;
    recv.wait_for(5).await;
    let series = r#"logentry_dropped_lines_total{reason="global_rate_limiter_drop"}"#;
    // Every line is either shipped or counted as dropped.
    wait_for_metrics(agent.addr, "50 lines accounted for", |m| {
        let dropped = sample(m, series).unwrap_or(0.0);
        dropped + recv.entries.lock().len() as f64 >= 50.0
    })
    .await;
    let dropped = sample(&metrics_text(agent.addr).await, series).unwrap_or(0.0);
    agent.stop().await;
    let shipped = recv.lines().len();
    // The burst of 5 passes, then about one line a second.
    assert!((5..=15).contains(&shipped), "{shipped} lines shipped");
    assert_eq!(dropped as usize + shipped, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readline_rate_without_drop_slows_reading_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(0, 500).await;
    let limits = "  readline_rate_enabled: true\n  readline_rate: 200\n  readline_burst: 10\n  readline_rate_drop: false\n";
    append(&logs.join("x.log"), numbered("slow", 0..300));
    let started = std::time::Instant::now();
    let agent = start_agent(limits_config(dir.path(), &recv.url, limits, "50ms")).await;
    recv.wait_for(300).await;
    let elapsed = started.elapsed();
    let metrics = metrics_text(agent.addr).await;
    agent.stop().await;
    assert_exactly_once(&recv.lines(), &numbered("slow", 0..300));
    // 290 lines over the burst at 200 a second take at least 1.45 s.
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    assert!(!metrics.contains("global_rate_limiter_drop"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_streams_drops_entries_of_streams_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    let recv = receiver(0, 500).await;
    let mut lines = numbered("alpha", 0..4);
    lines.extend(numbered("beta", 0..3));
    append(&logs.join("x.log"), lines);
    // One batch (all lines are read at once, well within the batchwait)
    // may hold one stream: `beta`'s lines are dropped and counted.
    let limits = "  max_streams: 1\n";
    let agent = start_agent(limits_config(dir.path(), &recv.url, limits, "2s")).await;
    recv.wait_for(4).await;
    wait_for_metrics(agent.addr, "stream_limited drops", |m| {
        m.lines()
            .any(|l| l.contains("stream_limited") && l.ends_with(" 3"))
    })
    .await;
    agent.stop().await;
    assert_exactly_once(&recv.lines(), &numbered("alpha", 0..4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consulagent_sd_targets_are_tailed() {
    use lucia_common::consul::ConsulClient;
    let consul = lucia_tests::fake_consul::FakeConsul::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("svc")).unwrap();
    let recv = receiver(0, 500).await;
    let scrape = format!(
        r#"scrape_configs:
  - job_name: agent-services
    consulagent_sd_configs:
      - server: {server}
        services: [web]
        refresh_interval: 100ms
    relabel_configs:
      - source_labels: [__meta_consulagent_service_metadata_log_path]
        target_label: __path__
      - source_labels: [__meta_consulagent_node]
        target_label: node
      - source_labels: [__meta_consulagent_health]
        target_label: health
"#,
        server = consul.address(),
    );
    let config = agent_config(dir.path(), &recv.url, "50ms", &scrape);
    append(&dir.path().join("svc/web.log"), numbered("web", 0..2));
    append(&dir.path().join("svc/db.log"), numbered("db", 0..2));
    let agent = start_agent(config).await;
    let client = ConsulClient::new(&consul.config()).unwrap();
    for (id, name) in [("web-1", "web"), ("db-1", "db")] {
        let reg = service_with_logs(id, name, &[], format!("{d}/svc/{name}.log"));
        client.register_service(&reg).await.unwrap();
    }
    recv.wait_for(2).await;
    let e = recv.entries.lock()[0].clone();
    for label in [r#"node="fake-consul""#, r#"health="passing""#, "web.log"] {
        assert!(e.labels.contains(label), "{label} not in {}", e.labels);
    }
    client.deregister_service("web-1").await.unwrap();
    wait_for_metrics(agent.addr, "the tailer to stop", |m| {
        sample(m, "promtail_files_active_total") == Some(0.0)
    })
    .await;
    agent.stop().await;
    // `db` is not in `services`: never tailed.
    assert_exactly_once(&recv.lines(), &numbered("web", 0..2));
    consul.stop().await;
}

/// The issue's check: the receiving endpoint down (connection refused) for
/// one minute with Promtail's default client settings, then back. Reading
/// stops at the documented cap (the queue's 10,000 entries, one 1 MiB
/// batch and one 64 KiB read chunk) instead of buffering the whole file,
/// and every line arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_for_a_minute_loses_nothing_and_bounds_reading() {
    let dir = tempfile::tempdir().unwrap();
    let logs = logs_dir(dir.path());
    // A port nobody listens on until the outage ends.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/loki/api/v1/push");
    let scrape = format!(
        "scrape_configs:\n  - job_name: f\n    static_configs:\n      - labels:\n          job: t\n          __path__: {}/*.log\n",
        logs.display()
    );
    // Default batchwait (1s), batchsize (1 MiB) and backoff (500ms..5m, 10 retries).
    let config = agent_config(dir.path(), &url, "1s", &scrape);
    let total = 60_000;
    let pad = "x".repeat(90);
    append(
        &logs.join("big.log"),
        (0..total).map(|i| format!("line-{i:06} {pad}")),
    );
    let started = std::time::Instant::now();
    let agent = start_agent(config).await;
    // Reading fills the queue and one batch, then waits.
    let read = "promtail_read_lines_total";
    let series = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with(read))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    wait_for_metrics(agent.addr, "reading to fill the queue", |m| {
        series(m) >= 15_000.0
    })
    .await;
    // The outage itself: one minute from the agent's start.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    let lines_read = series(&metrics_text(agent.addr).await);
    // 10,000 queued + 1 MiB / ~102 bytes a line + one 64 KiB chunk.
    assert!(
        lines_read < 22_500.0,
        "{lines_read} lines read while the endpoint was down"
    );
    let recv = receiver_on(tokio::net::TcpListener::bind(addr).await.unwrap(), 0, 500);
    let mut count = recv.count.clone();
    let arrived =
        tokio::time::timeout(Duration::from_secs(180), count.wait_for(|n| *n >= total)).await;
    assert!(arrived.is_ok(), "only {} lines arrived", recv.lines().len());
    agent.stop().await;
    let expected: Vec<String> = (0..total).map(|i| format!("line-{i:06} {pad}")).collect();
    assert_exactly_once(&recv.lines(), &expected);
}
