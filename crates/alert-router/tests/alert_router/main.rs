//! Integration tests of the alert-router: the role on a real listener, a
//! local webhook receiver, and (when installed) amtool, Alertmanager and
//! Prometheus from Debian's packages.

#![allow(clippy::unwrap_used)]

mod acceptance;
mod clients;
mod email_smtpd;
mod pipeline;
mod side_by_side;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::metrics::Metrics;
use lucia_common::server::{Readiness, RoleContext, bind, serve_roles};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A running router.
pub struct Router {
    pub addr: SocketAddr,
    pub url: String,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Router {
    /// Starts the role with the Alertmanager file `config_yaml` (written to
    /// `dir/alertmanager.yml`) and storage under `dir/data`.
    pub async fn start(dir: &Path, config_yaml: &str, multi_tenant: bool) -> Router {
        Self::start_with(dir, config_yaml, multi_tenant, None).await
    }

    pub async fn start_with(
        dir: &Path,
        config_yaml: &str,
        multi_tenant: bool,
        prefix: Option<&str>,
    ) -> Router {
        let config_file = dir.join("alertmanager.yml");
        std::fs::write(&config_file, config_yaml).unwrap();
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let ctx = RoleContext {
            advertise_addr: addr,
            metrics: Metrics::new(),
            readiness: Readiness::default(),
            shutdown: Shutdown::new(),
            data_dir: dir.to_path_buf(),
            multi_tenant,
            consul: None,
        };
        let config = lucia_alert_router::Config {
            config_file: Some(config_file),
            storage_path: Some(dir.join("data")),
            external_url: Some(format!("http://{addr}{}", prefix.unwrap_or(""))),
            route_prefix: prefix.map(str::to_string),
            ..Default::default()
        };
        let role = lucia_alert_router::start(config, ctx.clone())
            .await
            .unwrap();
        let shutdown = ctx.shutdown.clone();
        let task = tokio::spawn(async move {
            serve_roles(listener, &ctx, vec![role]).await.unwrap();
        });
        Router {
            addr,
            url: format!("http://{addr}{}", prefix.unwrap_or("")),
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }

    /// `POST /-/reload`.
    pub async fn reload(&self) -> reqwest::Response {
        client()
            .post(format!("{}/-/reload", self.url))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_alerts(&self, alerts: Value) -> reqwest::Response {
        self.post_alerts_as(None, alerts).await
    }

    pub async fn post_alerts_as(&self, tenant: Option<&str>, alerts: Value) -> reqwest::Response {
        let mut req = client()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&alerts);
        if let Some(t) = tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        req.send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str, tenant: Option<&str>) -> Value {
        let mut req = client().get(format!("{}{path}", self.url));
        if let Some(t) = tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }

    pub async fn add_silence(&self, tenant: Option<&str>, name: &str, value: &str) -> String {
        let now = chrono::Utc::now();
        let mut req = client()
            .post(format!("{}/api/v2/silences", self.url))
            .json(&json!({
                "matchers": [{"name": name, "value": value, "isRegex": false, "isEqual": true}],
                "startsAt": now.to_rfc3339(),
                "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
                "createdBy": "test",
                "comment": "integration test",
            }));
        if let Some(t) = tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        v["silenceID"].as_str().unwrap().to_string()
    }
}

pub fn client() -> reqwest::Client {
    lucia_common::http_client::client()
}

/// How a [`Receiver`] answers.
#[derive(Clone, Copy)]
pub enum Answer {
    /// 200 for every request.
    Ok,
    /// 500 for the first `n` requests, then 200.
    FailFirst(usize),
    /// 200 without keeping the payload until the instant (Alertmanager's
    /// acceptance webhook with `Func` returning true).
    DropUntil(tokio::time::Instant),
}

/// A local webhook receiver: every payload it keeps goes to the channel
/// with its arrival time.
pub struct Receiver {
    pub url: String,
    pub rx: mpsc::UnboundedReceiver<(tokio::time::Instant, Value)>,
    pub requests: Arc<AtomicUsize>,
}

impl Receiver {
    /// A receiver that fails the first `fail_first` requests with 500.
    pub async fn start(fail_first: usize) -> Receiver {
        Self::answering(Answer::FailFirst(fail_first)).await
    }

    pub async fn answering(answer: Answer) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let tx = tx.clone();
                let counter = counter.clone();
                async move {
                    let arrived = tokio::time::Instant::now();
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    match answer {
                        Answer::FailFirst(first) if n < first => {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Answer::DropUntil(until) if arrived < until => {
                            return axum::http::StatusCode::OK;
                        }
                        _ => {}
                    }
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    let _ = tx.send((arrived, v));
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            rx,
            requests,
        }
    }

    /// The next notification; fails after a generous timeout.
    pub async fn next(&mut self) -> Value {
        self.next_timed().await.1
    }

    /// The next notification with its arrival time.
    pub async fn next_timed(&mut self) -> (tokio::time::Instant, Value) {
        tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
            .await
            .expect("no webhook notification within 60 s")
            .expect("receiver closed")
    }

    /// Notifications that already arrived.
    pub fn pending(&mut self) -> Vec<Value> {
        self.pending_timed().into_iter().map(|(_, v)| v).collect()
    }

    /// Notifications that already arrived, with their arrival times.
    pub fn pending_timed(&mut self) -> Vec<(tokio::time::Instant, Value)> {
        let mut out = Vec::new();
        while let Ok(v) = self.rx.try_recv() {
            out.push(v);
        }
        out
    }
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on a free port
/// with its own storage and clustering off; killed on drop.
pub struct Alertmanager {
    pub url: String,
    child: std::process::Child,
}

impl Alertmanager {
    /// Starts the binary with `config_yaml` (written to `dir/am.yml`), or
    /// `None` with a notice when it is not installed.
    pub async fn start(dir: &Path, config_yaml: &str) -> Option<Alertmanager> {
        let bin = binary(&["alertmanager", "prometheus-alertmanager"])?;
        let config = dir.join("am.yml");
        std::fs::write(&config, config_yaml).unwrap();
        let port = free_port();
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.external-url=http://127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("am.log")).unwrap())
            .spawn()
            .unwrap();
        let mut am = Alertmanager {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let c = client();
        for _ in 0..600 {
            if am.child.try_wait().unwrap().is_some() {
                break;
            }
            if c.get(format!("{}/-/ready", am.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return Some(am);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "alertmanager did not become ready (or exited): {}",
            std::fs::read_to_string(dir.join("am.log")).unwrap_or_default()
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (for child processes that need one
/// on their command line).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A config with short timers and one webhook receiver `hook`.
pub fn config_with_webhook(url: &str, extra_route: &str, extra: &str) -> String {
    format!(
        r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
{extra_route}
receivers:
- name: hook
  webhook_configs:
  - url: {url}
{extra}
"#
    )
}

pub fn alert(labels: Value) -> Value {
    json!({"labels": labels, "annotations": {"summary": "test alert"}, "generatorURL": "http://prometheus/graph"})
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A binary from Debian's packages, or `None` (the test then skips with a
/// notice).
pub fn binary(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    eprintln!(
        "NOTICE: none of {names:?} is installed; skipping (scripts/install-test-deps.sh installs them)"
    );
    None
}
