//! Scraping end to end: in-test targets, a Python prometheus-client
//! target, the Debian node exporter, a garbage target, staleness, file and
//! Consul discovery, reloads and sharding.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use lucia_common::Shutdown;
use lucia_common::metrics::Metrics;
use lucia_tests::fake_consul::FakeConsul;
use lucia_tsdb::append::{AppendError, AppendReport, SampleAppender, SeriesSamples};
use lucia_tsdb::promql::is_stale_nan;
use lucia_tsdb::scrape::parser::{self, Format};
use lucia_tsdb::scrape::{ScrapeFileConfig, ScrapeManager, ScrapeOptions, Sharding};
use parking_lot::Mutex;
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_secs(30);

type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct Stored {
    tenant: String,
    labels: Labels,
    t: i64,
    v: f64,
}

/// A SampleAppender that keeps everything in memory.
struct MemoryAppender {
    samples: Mutex<Vec<Stored>>,
    changed: watch::Sender<u64>,
}

impl MemoryAppender {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            samples: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        })
    }

    fn all(&self) -> Vec<Stored> {
        self.samples.lock().clone()
    }

    /// Waits until `pred` holds for what was stored; panics after TIMEOUT.
    async fn wait_until(&self, what: &str, pred: impl Fn(&[Stored]) -> bool) {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            rx.borrow_and_update();
            if pred(&self.samples.lock()) {
                return;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => panic!("timed out waiting for {what}"),
            }
        }
    }
}

impl SampleAppender for MemoryAppender {
    fn append(
        &self,
        tenant: &str,
        batch: Vec<SeriesSamples>,
    ) -> impl std::future::Future<Output = Result<AppendReport, AppendError>> + Send {
        let tenant = tenant.to_string();
        async move {
            let mut appended = 0;
            {
                let mut samples = self.samples.lock();
                for series in batch {
                    for (t, v) in series.samples {
                        appended += 1;
                        samples.push(Stored {
                            tenant: tenant.clone(),
                            labels: series.labels.clone(),
                            t,
                            v,
                        });
                    }
                }
            }
            self.changed.send_modify(|n| *n += 1);
            Ok(AppendReport {
                appended,
                ..Default::default()
            })
        }
    }
}

fn has(labels: &Labels, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
}

/// The last value of the series matching `want` (an exact match of those
/// labels), excluding nothing.
fn latest(samples: &[Stored], want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| has(&s.labels, want))
        .max_by_key(|s| s.t)
        .map(|s| s.v)
}

fn stale_seen(samples: &[Stored], want: &[(&str, &str)]) -> bool {
    samples
        .iter()
        .any(|s| has(&s.labels, want) && is_stale_nan(s.v))
}

/// An in-test target whose body the test sets.
struct TestTarget {
    addr: SocketAddr,
    state: Arc<TargetState>,
    _stop: Shutdown,
}

struct TargetState {
    content_type: Mutex<String>,
    body: Mutex<String>,
    last_headers: Mutex<Option<HeaderMap>>,
    hits: AtomicUsize,
    gzip: AtomicBool,
    /// Query strings of the requests, for the sharding test.
    queries: Mutex<Vec<String>>,
}

impl TestTarget {
    async fn start(content_type: &str, body: &str) -> Self {
        let state = Arc::new(TargetState {
            content_type: Mutex::new(content_type.to_string()),
            body: Mutex::new(body.to_string()),
            last_headers: Mutex::new(None),
            hits: AtomicUsize::new(0),
            gzip: AtomicBool::new(false),
            queries: Mutex::new(Vec::new()),
        });
        let handler_state = state.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |headers: HeaderMap, uri: axum::http::Uri| {
                let state = handler_state.clone();
                async move {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    state
                        .queries
                        .lock()
                        .push(uri.query().unwrap_or("").to_string());
                    let wants_gzip = headers
                        .get(header::ACCEPT_ENCODING)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("gzip"));
                    *state.last_headers.lock() = Some(headers);
                    let body = state.body.lock().clone();
                    let content_type = state.content_type.lock().clone();
                    if wants_gzip && state.gzip.load(Ordering::SeqCst) {
                        let mut enc = flate2::write::GzEncoder::new(
                            Vec::new(),
                            flate2::Compression::default(),
                        );
                        enc.write_all(body.as_bytes()).unwrap();
                        let bytes = enc.finish().unwrap();
                        (
                            [
                                (header::CONTENT_TYPE, content_type),
                                (header::CONTENT_ENCODING, "gzip".to_string()),
                            ],
                            bytes,
                        )
                            .into_response()
                    } else {
                        ([(header::CONTENT_TYPE, content_type)], body).into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Shutdown::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        Self {
            addr,
            state,
            _stop: stop,
        }
    }

    fn set_body(&self, body: &str) {
        *self.state.body.lock() = body.to_string();
    }
}

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn config(yaml: &str) -> ScrapeFileConfig {
    ScrapeFileConfig::parse(std::path::Path::new("prometheus.yml"), yaml).unwrap()
}

fn start(
    yaml: &str,
    appender: Arc<MemoryAppender>,
) -> (ScrapeManager<MemoryAppender>, Shutdown, Metrics) {
    let shutdown = Shutdown::new();
    let metrics = Metrics::new();
    let options = ScrapeOptions::new(metrics.clone(), shutdown.clone());
    let manager = ScrapeManager::start(&config(yaml), appender, options).unwrap();
    (manager, shutdown, metrics)
}

/// Waits until the targets API shows `pred`.
async fn wait_targets(
    manager: &ScrapeManager<MemoryAppender>,
    what: &str,
    pred: impl Fn(&lucia_tsdb::scrape::TargetsSnapshot) -> bool,
) {
    // The targets view has no change notification: poll it.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if pred(&manager.targets()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:#?}",
            manager.targets()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_an_in_test_target_with_labels_reports_and_staleness() {
    let target = TestTarget::start(
        TEXT,
        "# TYPE requests_total counter\nrequests_total{code=\"200\",job=\"exposed\"} 7\nrequests_total{code=\"500\"} 1\ntemp 21.5 1000\n",
    )
    .await;
    target.state.gzip.store(true, Ordering::SeqCst);
    let appender = MemoryAppender::new();
    let yaml = format!(
        r#"
scrape_configs:
  - job_name: app
    scrape_interval: 1s
    scrape_timeout: 500ms
    static_configs:
      - targets: ['{}']
        labels: {{env: test}}
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: 'ignored_.*', action: drop}}
"#,
        target.addr
    );
    let (manager, shutdown, _) = start(&yaml, appender.clone());
    let instance = target.addr.to_string();
    let base = [
        ("job", "app"),
        ("instance", instance.as_str()),
        ("env", "test"),
    ];
    appender
        .wait_until("the first scrape", |s| {
            latest(s, &[("__name__", "up"), ("job", "app")]).is_some()
        })
        .await;
    let samples = appender.all();
    assert!(samples.iter().all(|s| s.tenant == "fake"));
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, &str)> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    assert_eq!(latest(&samples, &with(&[("__name__", "up")])), Some(1.0));
    assert_eq!(
        latest(
            &samples,
            &with(&[
                ("__name__", "requests_total"),
                ("code", "200"),
                ("exported_job", "exposed")
            ])
        ),
        Some(7.0)
    );
    assert_eq!(
        latest(
            &samples,
            &with(&[("__name__", "requests_total"), ("code", "500")])
        ),
        Some(1.0)
    );
    // honor_timestamps (default true): the sample's own timestamp.
    let temp: Vec<&Stored> = samples
        .iter()
        .filter(|s| has(&s.labels, &[("__name__", "temp")]))
        .collect();
    assert_eq!(temp[0].t, 1000);
    assert_eq!(temp[0].v, 21.5);
    for (name, value) in [
        ("scrape_samples_scraped", 3.0),
        ("scrape_samples_post_metric_relabeling", 3.0),
        ("scrape_series_added", 3.0),
    ] {
        assert_eq!(
            latest(&samples, &with(&[("__name__", name)])),
            Some(value),
            "{name}"
        );
    }
    let duration = latest(&samples, &with(&[("__name__", "scrape_duration_seconds")])).unwrap();
    assert!(duration > 0.0 && duration < 0.5);
    // What Prometheus sends.
    let headers = target.state.last_headers.lock().clone().unwrap();
    assert_eq!(
        headers[header::ACCEPT],
        "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=underscores;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    );
    assert_eq!(headers[header::ACCEPT_ENCODING], "gzip");
    assert_eq!(headers["X-Prometheus-Scrape-Timeout-Seconds"], "0.5");

    // A series that disappears gets a staleness marker at the next scrape.
    target.set_body("# TYPE requests_total counter\nrequests_total{code=\"200\"} 8\n");
    appender
        .wait_until("the stale marker of the vanished series", |s| {
            stale_seen(s, &[("__name__", "requests_total"), ("code", "500")])
        })
        .await;
    let samples = appender.all();
    assert!(
        !stale_seen(&samples, &[("__name__", "temp")]),
        "series with explicit timestamps are not marked stale"
    );
    assert!(!stale_seen(&samples, &[("__name__", "up")]));

    // The targets API.
    let snapshot = manager.targets();
    let t = snapshot.active.first().unwrap();
    assert_eq!(t.health, "up");
    assert_eq!(t.scrape_pool, "app");
    assert_eq!(t.scrape_url, format!("http://{}/metrics", target.addr));
    assert_eq!(t.scrape_interval, "1s");
    assert_eq!(t.scrape_timeout, "500ms");
    assert_eq!(t.labels.get("env").map(String::as_str), Some("test"));
    assert_eq!(t.discovered_labels["__address__"], instance);
    assert!(t.last_scrape.ends_with('Z') && !t.last_scrape.starts_with("0001"));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_target_is_down_and_others_keep_going() {
    let good = TestTarget::start(TEXT, "ok 1\n").await;
    let html = TestTarget::start("text/html", "<html><body>not metrics</body></html>").await;
    let broken = TestTarget::start(TEXT, "this is {not the format\n").await;
    let appender = MemoryAppender::new();
    let yaml = format!(
        "scrape_configs:\n  - job_name: mixed\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{}', '{}', '{}', '127.0.0.1:1']\n",
        good.addr, html.addr, broken.addr
    );
    let (manager, shutdown, _) = start(&yaml, appender.clone());
    let up = |addr: String| {
        move |s: &[Stored]| latest(s, &[("__name__", "up"), ("instance", addr.as_str())]).is_some()
    };
    for addr in [
        good.addr.to_string(),
        html.addr.to_string(),
        broken.addr.to_string(),
        "127.0.0.1:1".into(),
    ] {
        appender
            .wait_until(&format!("up of {addr}"), up(addr.clone()))
            .await;
    }
    // Two more scrapes of the good target while the others fail.
    let hits = good.state.hits.load(Ordering::SeqCst);
    appender
        .wait_until("more scrapes of the good target", |_| {
            good.state.hits.load(Ordering::SeqCst) >= hits + 2
        })
        .await;
    let samples = appender.all();
    let up_of = |addr: &str| latest(&samples, &[("__name__", "up"), ("instance", addr)]);
    assert_eq!(up_of(&good.addr.to_string()), Some(1.0));
    assert_eq!(up_of(&html.addr.to_string()), Some(0.0));
    assert_eq!(up_of(&broken.addr.to_string()), Some(0.0));
    assert_eq!(up_of("127.0.0.1:1"), Some(0.0));
    assert_eq!(latest(&samples, &[("__name__", "ok")]), Some(1.0));
    assert!(latest(&samples, &[("__name__", "this")]).is_none());
    wait_targets(&manager, "errors of every failing target", |snap| {
        snap.active.len() == 4 && snap.active.iter().filter(|t| t.health == "down").count() == 3
    })
    .await;
    let snap = manager.targets();
    let error_of = |addr: String| {
        snap.active
            .iter()
            .find(|t| t.labels["instance"] == addr)
            .map(|t| t.last_error.clone())
            .unwrap()
    };
    assert!(
        error_of(html.addr.to_string()).contains("unsupported Content-Type \"text/html\""),
        "{snap:#?}"
    );
    assert!(
        error_of(broken.addr.to_string()).contains("line 1"),
        "{snap:#?}"
    );
    assert!(
        error_of("127.0.0.1:1".into()).contains("connect"),
        "{snap:#?}"
    );
    assert_eq!(error_of(good.addr.to_string()), "");

    // The HTTP API in Prometheus' envelope.
    let server = serve(manager.router()).await;
    let body: serde_json::Value = lucia_common::http_client::client()
        .get(format!("http://{server}/api/v1/targets?state=active"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["activeTargets"].as_array().unwrap().len(), 4);
    assert_eq!(body["data"]["droppedTargets"], serde_json::json!([]));
    let t = &body["data"]["activeTargets"][0];
    for field in [
        "discoveredLabels",
        "labels",
        "scrapePool",
        "scrapeUrl",
        "globalUrl",
        "lastError",
        "lastScrape",
        "lastScrapeDuration",
        "health",
        "scrapeInterval",
        "scrapeTimeout",
    ] {
        assert!(t.get(field).is_some(), "{field} missing in {t}");
    }
    let pools: serde_json::Value = lucia_common::http_client::client()
        .get(format!("http://{server}/api/v1/scrape_pools"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pools["data"]["scrapePools"], serde_json::json!(["mixed"]));
    let all: serde_json::Value = lucia_common::http_client::client()
        .get(format!("http://{server}/api/v1/targets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all["data"]["droppedTargetCounts"],
        serde_json::json!({"mixed": 0})
    );
    shutdown.cancel();
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_limit_fails_the_scrape() {
    let target = TestTarget::start(TEXT, "a 1\nb 2\nc 3\n").await;
    let appender = MemoryAppender::new();
    let yaml = format!(
        "scrape_configs:\n  - job_name: limited\n    scrape_interval: 1s\n    sample_limit: 2\n    static_configs: [{{targets: ['{}']}}]\n",
        target.addr
    );
    let (manager, shutdown, _) = start(&yaml, appender.clone());
    appender
        .wait_until("a scrape", |s| latest(s, &[("__name__", "up")]).is_some())
        .await;
    let samples = appender.all();
    assert_eq!(latest(&samples, &[("__name__", "up")]), Some(0.0));
    assert_eq!(
        latest(&samples, &[("__name__", "scrape_samples_scraped")]),
        Some(3.0)
    );
    assert!(latest(&samples, &[("__name__", "a")]).is_none());
    wait_targets(&manager, "the error", |s| {
        s.active
            .first()
            .is_some_and(|t| t.last_error == "sample limit exceeded")
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_target_goes_stale_and_reload_keeps_others() {
    let keep = TestTarget::start(TEXT, "kept 1\n").await;
    let gone = TestTarget::start(TEXT, "leaving 1\n").await;
    let appender = MemoryAppender::new();
    let yaml = |targets: &str, extra: &str| {
        format!(
            "scrape_configs:\n  - job_name: stays\n    scrape_interval: 1s\n    static_configs: [{{targets: ['{}']}}]\n  - job_name: changes\n    scrape_interval: 1s\n{extra}    static_configs: [{{targets: [{targets}]}}]\n",
            keep.addr
        )
    };
    let both = format!("'{}'", gone.addr);
    let (manager, shutdown, _) = start(&yaml(&both, ""), appender.clone());
    appender
        .wait_until("both targets scraped", |s| {
            latest(s, &[("__name__", "kept")]).is_some()
                && latest(s, &[("__name__", "leaving")]).is_some()
        })
        .await;
    wait_targets(&manager, "both up", |s| {
        s.active.iter().all(|t| t.health == "up") && s.active.len() == 2
    })
    .await;
    // The same config again: nothing restarts (health stays up).
    manager.reload(&config(&yaml(&both, ""))).unwrap();
    assert!(manager.targets().active.iter().all(|t| t.health == "up"));
    // A changed job keeps its series: no staleness markers on reload.
    manager
        .reload(&config(&yaml(&both, "    sample_limit: 100\n")))
        .unwrap();
    let hits = gone.state.hits.load(Ordering::SeqCst);
    appender
        .wait_until("a scrape after the reload", |_| {
            gone.state.hits.load(Ordering::SeqCst) >= hits + 2
        })
        .await;
    assert!(!stale_seen(&appender.all(), &[("__name__", "leaving")]));
    // An invalid config is refused and changes nothing.
    let bad = "scrape_configs:\n  - job_name: x\n    scrape_interval: 1s\n    scrape_timeout: 5s\n";
    assert!(manager.reload(&config_unchecked(bad)).is_err());
    // The target leaves: its series and report series go stale after
    // about two intervals; the other job's do not.
    manager.reload(&config(&yaml("", ""))).unwrap();
    appender
        .wait_until("end-of-run staleness", |s| {
            stale_seen(s, &[("__name__", "leaving")])
                && stale_seen(s, &[("__name__", "up"), ("job", "changes")])
        })
        .await;
    let samples = appender.all();
    assert!(!stale_seen(&samples, &[("__name__", "kept")]));
    assert!(!stale_seen(
        &samples,
        &[("__name__", "up"), ("job", "stays")]
    ));
    assert_eq!(manager.targets().active.len(), 1);
    shutdown.cancel();
}

fn config_unchecked(yaml: &str) -> ScrapeFileConfig {
    lucia_common::config::parse(std::path::Path::new("p.yml"), yaml).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_follows_file_changes() {
    let a = TestTarget::start(TEXT, "from_a 1\n").await;
    let b = TestTarget::start(TEXT, "from_b 2\n").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.json");
    std::fs::write(
        &file,
        format!(
            r#"[{{"targets": ["{}"], "labels": {{"team": "a"}}}}]"#,
            a.addr
        ),
    )
    .unwrap();
    let appender = MemoryAppender::new();
    let yaml = format!(
        "scrape_configs:\n  - job_name: files\n    scrape_interval: 1s\n    file_sd_configs:\n      - files: ['{}/*.json']\n",
        dir.path().display()
    );
    let (manager, shutdown, _) = start(&yaml, appender.clone());
    appender
        .wait_until("target a", |s| {
            latest(s, &[("__name__", "from_a"), ("team", "a")]).is_some()
        })
        .await;
    let snap = manager.targets();
    assert_eq!(
        snap.active[0].discovered_labels["__meta_filepath"],
        file.display().to_string()
    );
    std::fs::write(&file, format!(r#"[{{"targets": ["{}"]}}]"#, b.addr)).unwrap();
    appender
        .wait_until("target b", |s| {
            latest(s, &[("__name__", "from_b")]).is_some()
        })
        .await;
    wait_targets(&manager, "only target b", |s| {
        s.active.len() == 1 && s.active[0].labels["instance"] == b.addr.to_string()
    })
    .await;
    appender
        .wait_until("a goes stale", |s| stale_seen(s, &[("__name__", "from_a")]))
        .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_sd_adds_and_removes_targets() {
    let consul = FakeConsul::start().await;
    let target = TestTarget::start(TEXT, "consul_found 1\n").await;
    let client = lucia_common::consul::ConsulClient::new(&consul.config()).unwrap();
    let register =
        |id: &str, name: &str, tags: Vec<&str>| lucia_common::consul::ServiceRegistration {
            id: id.into(),
            name: name.into(),
            tags: tags.into_iter().map(String::from).collect(),
            address: "127.0.0.1".into(),
            port: target.addr.port(),
            meta: BTreeMap::from([("version".to_string(), "1.2".to_string())]),
            check: None,
        };
    client
        .register_service(&register("web-1", "web", vec!["metrics", "prod"]))
        .await
        .unwrap();
    client
        .register_service(&register("db-1", "db", vec!["other"]))
        .await
        .unwrap();
    let appender = MemoryAppender::new();
    let yaml = format!(
        r#"
scrape_configs:
  - job_name: consul
    scrape_interval: 1s
    consul_sd_configs:
      - server: '{}'
        tags: [metrics]
        refresh_interval: 100ms
    relabel_configs:
      - {{source_labels: [__meta_consul_service], target_label: service}}
      - {{source_labels: [__meta_consul_service_id], target_label: instance}}
  - job_name: by-name
    scrape_interval: 1s
    consul_sd_configs:
      - server: '{}'
        services: [api]
        refresh_interval: 100ms
"#,
        consul.address(),
        consul.address()
    );
    let (manager, shutdown, _) = start(&yaml, appender.clone());
    wait_targets(&manager, "the consul target", |s| {
        s.active.iter().any(|t| t.scrape_pool == "consul")
    })
    .await;
    let snap = manager.targets();
    let t = snap
        .active
        .iter()
        .find(|t| t.scrape_pool == "consul")
        .unwrap();
    let d = &t.discovered_labels;
    let port = target.addr.port().to_string();
    let address = format!("127.0.0.1:{port}");
    for (k, v) in [
        ("__address__", address.as_str()),
        ("__meta_consul_address", "127.0.0.1"),
        ("__meta_consul_dc", "dc1"),
        ("__meta_consul_health", "passing"),
        ("__meta_consul_node", "fake-consul"),
        ("__meta_consul_service", "web"),
        ("__meta_consul_service_address", "127.0.0.1"),
        ("__meta_consul_service_id", "web-1"),
        ("__meta_consul_service_metadata_version", "1.2"),
        ("__meta_consul_service_port", port.as_str()),
        ("__meta_consul_tagged_address_lan", "127.0.0.1"),
        ("__meta_consul_tags", ",metrics,prod,"),
        ("job", "consul"),
    ] {
        assert_eq!(d.get(k).map(String::as_str), Some(v), "{k} in {d:#?}");
    }
    assert_eq!(t.labels["service"], "web");
    assert_eq!(t.labels["instance"], "web-1");
    assert!(
        snap.active
            .iter()
            .all(|t| t.labels.get("service").map(String::as_str) != Some("db"))
    );
    appender
        .wait_until("a scrape of the consul target", |s| {
            latest(s, &[("__name__", "consul_found"), ("service", "web")]).is_some()
        })
        .await;

    // Registering a service adds a target within one blocking query.
    let started = tokio::time::Instant::now();
    client
        .register_service(&register("api-1", "api", vec![]))
        .await
        .unwrap();
    wait_targets(&manager, "the api target", |s| {
        s.active.iter().any(|t| t.scrape_pool == "by-name")
    })
    .await;
    client
        .register_service(&register("web-2", "web", vec!["metrics"]))
        .await
        .unwrap();
    wait_targets(&manager, "web-2", |s| {
        s.active
            .iter()
            .filter(|t| t.scrape_pool == "consul")
            .count()
            == 2
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Deregistering removes it, and its series go stale.
    client.deregister_service("web-1").await.unwrap();
    client.deregister_service("api-1").await.unwrap();
    wait_targets(&manager, "web-1 and api-1 gone", |s| {
        s.active.len() == 1 && s.active[0].labels["instance"] == "web-2"
    })
    .await;
    appender
        .wait_until("web-1's series go stale", |s| {
            stale_seen(s, &[("__name__", "consul_found"), ("instance", "web-1")])
        })
        .await;
    shutdown.cancel();
    consul.stop().await;
}

/// A child process killed when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `url` answers 200 (an external process has no readiness
/// event to await).
async fn wait_http(url: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Ok(r) = lucia_common::http_client::client().get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the target exposes, fetched the way the scraper asks.
async fn expose(url: &str) -> Vec<(Labels, f64)> {
    let response = lucia_common::http_client::client()
        .get(url)
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=underscores;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        )
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.text().await.unwrap();
    let format = Format::from_content_type(&content_type).unwrap();
    parser::parse(&body, format)
        .unwrap()
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Labels = s
                .labels
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect();
            labels.insert("__name__".into(), s.name);
            (labels, s.value)
        })
        .collect()
}

/// The series of the last scrape of `job` (without job and instance).
fn last_scrape(samples: &[Stored], job: &str) -> Vec<(Labels, f64)> {
    let t = samples
        .iter()
        .filter(|s| has(&s.labels, &[("__name__", "up"), ("job", job)]))
        .map(|s| s.t)
        .max()
        .unwrap();
    samples
        .iter()
        .filter(|s| s.t == t && has(&s.labels, &[("job", job)]) && !is_stale_nan(s.v))
        .map(|s| {
            let mut labels = s.labels.clone();
            labels.remove("job");
            labels.remove("instance");
            (labels, s.v)
        })
        .filter(|(l, _)| {
            !lucia_tsdb::scrape::scrape_loop::REPORT_SERIES.contains(&l["__name__"].as_str())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_a_python_prometheus_client() {
    let check = std::process::Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .status();
    if !check.is_ok_and(|s| s.success()) {
        println!(
            "NOTICE: python3 with prometheus_client is not installed (scripts/install-test-deps.sh installs it): skipping"
        );
        return;
    }
    let port = free_port();
    let script = r#"
import sys, time
from prometheus_client import start_http_server, Counter, Gauge, Histogram, Summary, Info
c = Counter('lucia_test_requests', 'Requests.', ['method'])
c.labels('get').inc(3)
c.labels('post').inc(5)
Gauge('lucia_test_temperature_celsius', 'Temperature.').set(21.5)
h = Histogram('lucia_test_latency_seconds', 'Latency.', buckets=[0.1, 1])
for v in (0.05, 0.5, 2):
    h.observe(v)
Summary('lucia_test_size_bytes', 'Size.').observe(7)
Info('lucia_test_build', 'Build.').info({'version': '1.0'})
start_http_server(int(sys.argv[1]), addr='127.0.0.1')
time.sleep(3600)
"#;
    let _child = Child(
        std::process::Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_http(&url).await;
    let appender = MemoryAppender::new();
    let yaml = format!(
        "scrape_configs:\n  - job_name: python\n    scrape_interval: 1s\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    );
    let (_manager, shutdown, _) = start(&yaml, appender.clone());
    appender
        .wait_until("a scrape of the python target", |s| {
            latest(s, &[("__name__", "up"), ("job", "python")]).is_some()
        })
        .await;
    let samples = appender.all();
    assert_eq!(
        latest(&samples, &[("__name__", "up"), ("job", "python")]),
        Some(1.0)
    );
    for (want, value) in [
        (
            vec![("__name__", "lucia_test_requests_total"), ("method", "get")],
            3.0,
        ),
        (
            vec![
                ("__name__", "lucia_test_requests_total"),
                ("method", "post"),
            ],
            5.0,
        ),
        (vec![("__name__", "lucia_test_temperature_celsius")], 21.5),
        (
            vec![
                ("__name__", "lucia_test_latency_seconds_bucket"),
                ("le", "0.1"),
            ],
            1.0,
        ),
        (
            vec![
                ("__name__", "lucia_test_latency_seconds_bucket"),
                ("le", "1.0"),
            ],
            2.0,
        ),
        (
            vec![
                ("__name__", "lucia_test_latency_seconds_bucket"),
                ("le", "+Inf"),
            ],
            3.0,
        ),
        (vec![("__name__", "lucia_test_latency_seconds_count")], 3.0),
        (vec![("__name__", "lucia_test_latency_seconds_sum")], 2.55),
        (vec![("__name__", "lucia_test_size_bytes_sum")], 7.0),
        (
            vec![("__name__", "lucia_test_build_info"), ("version", "1.0")],
            1.0,
        ),
    ] {
        assert_eq!(latest(&samples, &want), Some(value), "{want:?}");
    }
    // Every series the target exposes is stored with its value (the
    // lucia_test_* ones do not change between the two reads).
    let stored = last_scrape(&samples, "python");
    let exposed = expose(&url).await;
    let stored_set: HashSet<Labels> = stored.iter().map(|(l, _)| l.clone()).collect();
    let exposed_set: HashSet<Labels> = exposed.iter().map(|(l, _)| l.clone()).collect();
    assert_eq!(stored_set, exposed_set);
    for (labels, value) in &exposed {
        if labels["__name__"].starts_with("lucia_test_") {
            let got = stored.iter().find(|(l, _)| l == labels).map(|(_, v)| *v);
            assert_eq!(got, Some(*value), "{labels:?}");
        }
    }
    let scraped = latest(
        &samples,
        &[("__name__", "scrape_samples_scraped"), ("job", "python")],
    );
    assert_eq!(scraped, Some(exposed.len() as f64));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_the_debian_node_exporter() {
    let binary = "prometheus-node-exporter";
    if std::process::Command::new(binary)
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "NOTICE: {binary} is not installed (scripts/install-test-deps.sh installs it): skipping"
        );
        return;
    }
    let port = free_port();
    let _child = Child(
        std::process::Command::new(binary)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_http(&url).await;
    let appender = MemoryAppender::new();
    let yaml = format!(
        "scrape_configs:\n  - job_name: node\n    scrape_interval: 2s\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    );
    let (_manager, shutdown, _) = start(&yaml, appender.clone());
    appender
        .wait_until("a scrape of the node exporter", |s| {
            latest(s, &[("__name__", "up"), ("job", "node")]).is_some()
        })
        .await;
    let samples = appender.all();
    assert_eq!(
        latest(&samples, &[("__name__", "up"), ("job", "node")]),
        Some(1.0)
    );
    let stored = last_scrape(&samples, "node");
    let exposed = expose(&url).await;
    let names = |series: &[(Labels, f64)]| -> HashSet<String> {
        series.iter().map(|(l, _)| l["__name__"].clone()).collect()
    };
    assert_eq!(names(&stored), names(&exposed));
    assert!(stored.len() > 100, "only {} series", stored.len());
    // Values that do not move between two reads are the same.
    for name in [
        "node_exporter_build_info",
        "node_memory_MemTotal_bytes",
        "node_boot_time_seconds",
    ] {
        let pick = |series: &[(Labels, f64)]| {
            series
                .iter()
                .filter(|(l, _)| l["__name__"] == name)
                .map(|(l, v)| (l.clone(), v.to_bits()))
                .collect::<Vec<_>>()
        };
        let (mut a, mut b) = (pick(&stored), pick(&exposed));
        a.sort();
        b.sort();
        assert!(!a.is_empty(), "{name} missing");
        assert_eq!(a, b, "{name}");
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_targets_and_follow_membership() {
    let target = TestTarget::start(TEXT, "sharded 1\n").await;
    let yaml = format!(
        r#"
scrape_configs:
  - job_name: sharded
    scrape_interval: 1s
    static_configs:
      - targets: [t0, t1, t2, t3, t4, t5, t6, t7]
    relabel_configs:
      - {{source_labels: [__address__], target_label: __param_target}}
      - {{source_labels: [__address__], target_label: instance}}
      - {{target_label: __address__, replacement: '{}'}}
"#,
        target.addr
    );
    // Keys are given to the members alternately as they are first seen
    // (keys hash the target's URL, whose port is random, so a rule on the
    // key's bits could give one member every target); flipped on demand.
    let flipped = Arc::new(AtomicBool::new(false));
    let assigned: Arc<std::sync::Mutex<HashMap<u64, u64>>> = Arc::default();
    let (tx, rx) = watch::channel(());
    let member = |parity: u64| {
        let flipped = flipped.clone();
        let assigned = assigned.clone();
        Sharding::new(
            move |key| {
                let mut assigned = assigned.lock().expect("no test thread panicked");
                let count = assigned.len() as u64;
                let owner = *assigned.entry(key).or_insert(count % 2);
                (owner == parity) != flipped.load(Ordering::SeqCst)
            },
            rx.clone(),
        )
    };
    let shutdown = Shutdown::new();
    let mut managers = Vec::new();
    for parity in [0, 1] {
        let mut options = ScrapeOptions::new(Metrics::new(), shutdown.clone());
        options.sharding = Some(member(parity));
        managers
            .push(ScrapeManager::start(&config(&yaml), MemoryAppender::new(), options).unwrap());
    }
    let instances = |m: &ScrapeManager<MemoryAppender>| -> HashSet<String> {
        m.targets()
            .active
            .iter()
            .map(|t| t.labels["instance"].clone())
            .collect()
    };
    let all: HashSet<String> = (0..8).map(|i| format!("t{i}")).collect();
    wait_targets(&managers[0], "both members have their targets", |_| {
        instances(&managers[0]).len() + instances(&managers[1]).len() == 8
    })
    .await;
    let (a, b) = (instances(&managers[0]), instances(&managers[1]));
    assert!(a.is_disjoint(&b));
    assert_eq!(a.union(&b).cloned().collect::<HashSet<_>>(), all);
    assert!(!a.is_empty() && !b.is_empty(), "{a:?} {b:?}");
    // Membership changes: the targets move, each to exactly one member.
    flipped.store(true, Ordering::SeqCst);
    tx.send_replace(());
    wait_targets(&managers[0], "the targets to swap", |_| {
        instances(&managers[0]) == b && instances(&managers[1]) == a
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_an_https_target_trusting_the_ca_file() {
    let ca = lucia_tests::tls::TestCa::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(dir.path());
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { ([(header::CONTENT_TYPE, TEXT)], "over_tls 42\n") }),
    );
    let addr = ca.serve_https(app).await;
    let appender = MemoryAppender::new();
    // The same target twice: with the CA, and with the system roots only.
    let yaml = format!(
        "scrape_configs:
  - job_name: trusted
    scheme: https
    scrape_interval: 1s
    tls_config: {{ca_file: '{}'}}
    static_configs: [{{targets: ['{addr}']}}]
  - job_name: untrusted
    scheme: https
    scrape_interval: 1s
    static_configs: [{{targets: ['localhost:{}']}}]
",
        ca_file.display(),
        addr.port()
    );
    let (manager, shutdown, _) = start(&yaml, appender.clone());
    appender
        .wait_until("the https scrape", |s| {
            latest(s, &[("__name__", "over_tls"), ("job", "trusted")]) == Some(42.0)
        })
        .await;
    appender
        .wait_until("the untrusted scrape", |s| {
            latest(s, &[("__name__", "up"), ("job", "untrusted")]).is_some()
        })
        .await;
    let samples = appender.all();
    assert_eq!(
        latest(&samples, &[("__name__", "up"), ("job", "trusted")]),
        Some(1.0)
    );
    assert_eq!(
        latest(&samples, &[("__name__", "up"), ("job", "untrusted")]),
        Some(0.0)
    );
    assert!(latest(&samples, &[("__name__", "over_tls"), ("job", "untrusted")]).is_none());
    wait_targets(&manager, "the certificate error", |s| {
        s.active
            .iter()
            .any(|t| t.last_error.contains("certificate"))
    })
    .await;
    shutdown.cancel();
}
