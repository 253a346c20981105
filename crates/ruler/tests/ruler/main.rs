//! Integration tests of the ruler: a fake tsdb / querier / Alertmanager
//! (axum, recording what it receives) and the ruler role started in
//! process on `127.0.0.1:0`.
#![allow(clippy::unwrap_used)]

mod alertmanager;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use lucia_common::Shutdown;
use lucia_common::server::{Readiness, RoleContext};
use lucia_proto::prometheus::WriteRequest;
use parking_lot::Mutex;
use prost::Message;
use serde_json::{Value, json};
use tokio::sync::Notify;

pub type Labels = BTreeMap<String, String>;

/// What the fake backend answers and what it received.
#[derive(Default)]
pub struct Fake {
    /// expr → vector answered by both query APIs.
    pub answers: Mutex<BTreeMap<String, Vec<(Labels, f64)>>>,
    /// (path, tenant, query, time) of every query.
    pub queries: Mutex<Vec<(String, String, String, String)>>,
    /// (tenant, labels, t, v) of every written sample.
    pub written: Mutex<Vec<(String, Labels, i64, f64)>>,
    /// (tenant, body) of every alert POST.
    pub alerts: Mutex<Vec<(String, Value)>>,
    pub changed: Notify,
}

type St = State<Arc<Fake>>;

fn tenant(h: &HeaderMap) -> String {
    h.get("X-Scope-OrgID")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn query(
    State(f): St,
    h: HeaderMap,
    RawQuery(q): RawQuery,
    path: axum::http::Uri,
) -> axum::Json<Value> {
    let params: BTreeMap<String, String> = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let expr = params.get("query").cloned().unwrap_or_default();
    let time = params.get("time").cloned().unwrap_or_default();
    f.queries
        .lock()
        .push((path.path().to_string(), tenant(&h), expr.clone(), time));
    if expr.starts_with("ALERTS_FOR_STATE{") {
        let mut series: BTreeMap<Labels, Vec<Value>> = BTreeMap::new();
        for (_, l, t, v) in f.written.lock().iter() {
            if l.get("__name__").map(String::as_str) == Some("ALERTS_FOR_STATE") && !v.is_nan() {
                series
                    .entry(l.clone())
                    .or_default()
                    .push(json!([*t as f64 / 1000.0, v.to_string()]));
            }
        }
        let result: Vec<Value> = series
            .into_iter()
            .map(|(l, values)| json!({"metric": l, "values": values}))
            .collect();
        return axum::Json(
            json!({"status": "success", "data": {"resultType": "matrix", "result": result}}),
        );
    }
    let answer = f.answers.lock().get(&expr).cloned().unwrap_or_default();
    let result: Vec<Value> = answer
        .iter()
        .map(|(l, v)| json!({"metric": l, "value": [1.0, v.to_string()]}))
        .collect();
    f.changed.notify_waiters();
    axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
}

async fn write(State(f): St, h: HeaderMap, body: Bytes) -> axum::http::StatusCode {
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    let req = WriteRequest::decode(raw.as_slice()).unwrap();
    let t = tenant(&h);
    {
        let mut w = f.written.lock();
        for ts in req.timeseries {
            let labels: Labels = ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
            for s in ts.samples {
                w.push((t.clone(), labels.clone(), s.timestamp, s.value));
            }
        }
    }
    f.changed.notify_waiters();
    axum::http::StatusCode::NO_CONTENT
}

async fn alerts(State(f): St, h: HeaderMap, axum::Json(body): axum::Json<Value>) -> &'static str {
    f.alerts.lock().push((tenant(&h), body));
    f.changed.notify_waiters();
    ""
}

/// Starts the fake; returns it and its base URL.
pub async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/api/v1/query", get(query))
        .route("/loki/api/v1/query", get(query))
        .route("/api/v1/write", post(write))
        .route("/api/v2/alerts", post(alerts))
        .route("/ready", get(|| async { "ready" }))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, format!("http://{addr}"))
}

impl Fake {
    /// Waits (30 s at most) until `check` holds, re-checking on every change.
    pub async fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Fake) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.changed.notified();
            if let Some(v) = check(self) {
                return v;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}");
            }
        }
    }

    pub fn answer(&self, expr: &str, samples: Vec<(Labels, f64)>) {
        self.answers.lock().insert(expr.to_string(), samples);
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A running ruler.
pub struct Ruler {
    pub url: String,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Ruler {
    pub async fn start(config: lucia_ruler::Config, data_dir: &Path, multi_tenant: bool) -> Self {
        Self::start_with(config, data_dir, multi_tenant, None).await
    }

    pub async fn start_with(
        config: lucia_ruler::Config,
        data_dir: &Path,
        multi_tenant: bool,
        consul: Option<lucia_common::consul::ConsulConfig>,
    ) -> Self {
        let (listener, addr): (_, SocketAddr) =
            lucia_common::server::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
        let shutdown = Shutdown::new();
        let ctx = RoleContext {
            advertise_addr: addr,
            metrics: lucia_common::metrics::Metrics::new(),
            readiness: Readiness::default(),
            shutdown: shutdown.clone(),
            data_dir: data_dir.to_path_buf(),
            multi_tenant,
            consul,
        };
        let role = lucia_ruler::start(config, ctx.clone()).await.unwrap();
        let task = tokio::spawn(async move {
            lucia_common::server::serve_roles(listener, &ctx, vec![role])
                .await
                .unwrap();
        });
        Self {
            url: format!("http://{addr}"),
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }

    pub async fn get(&self, path: &str, tenant: &str) -> (u16, String) {
        let r = lucia_common::http_client::client()
            .get(format!("{}{path}", self.url))
            .header("X-Scope-OrgID", tenant)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path, "fake").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

pub fn config(fake: &str, rule_file: Option<&Path>) -> lucia_ruler::Config {
    lucia_ruler::Config {
        rule_files: rule_file
            .map(|p| vec![p.display().to_string()])
            .unwrap_or_default(),
        evaluation_interval: lucia_common::duration::ConfigDuration::from_secs(1),
        tsdb_url: Some(fake.to_string()),
        querier_url: Some(fake.to_string()),
        alertmanager_urls: vec![fake.to_string()],
        external_labels: [("cluster".to_string(), "test".to_string())].into(),
        for_grace_period: lucia_common::duration::ConfigDuration::from_secs(1),
        ..Default::default()
    }
}

const RULES: &str = r#"groups:
  - name: basics
    interval: 1s
    rules:
      - record: job:up:sum
        expr: sum(up)
      - alert: Down
        expr: up == 0
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} is down ({{ $value }}) in {{ $externalLabels.cluster }}"
"#;

fn write_rules(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("rules.yml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_sent_and_results_written() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, url) = start_fake().await;
    fake.answer("sum(up)", vec![(Labels::new(), 2.0)]);
    fake.answer(
        "up == 0",
        vec![(
            labels(&[("__name__", "up"), ("instance", "h:1"), ("job", "node")]),
            0.0,
        )],
    );
    let rules = write_rules(dir.path(), RULES);
    let ruler = Ruler::start(config(&url, Some(&rules)), dir.path(), false).await;

    let sent = fake
        .wait_for("a firing alert", |f| {
            f.alerts.lock().iter().find_map(|(t, body)| {
                body.as_array()?
                    .iter()
                    .find(|a| a["labels"]["alertname"] == "Down")
                    .map(|a| (t.clone(), a.clone()))
            })
        })
        .await;
    let (tenant, alert) = sent;
    assert_eq!(tenant, "fake");
    assert_eq!(alert["labels"]["cluster"], "test", "{alert}");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(alert["labels"]["instance"], "h:1");
    assert!(alert["labels"].get("__name__").is_none());
    assert_eq!(alert["annotations"]["summary"], "h:1 is down (0) in test");
    let starts = chrono::DateTime::parse_from_rfc3339(alert["startsAt"].as_str().unwrap()).unwrap();
    let ends = chrono::DateTime::parse_from_rfc3339(alert["endsAt"].as_str().unwrap()).unwrap();
    // endsAt is 4 resend delays (1m) ahead while firing.
    assert_eq!((ends - starts).num_seconds(), 240, "{alert}");
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .contains("/graph?g0.expr=up+%3D%3D+0")
    );

    // Recorded series and ALERTS in tsdb, for tenant fake.
    fake.wait_for("recorded series and ALERTS", |f| {
        let w = f.written.lock();
        let rec = w.iter().any(|(t, l, _, v)| {
            t == "fake" && l.get("__name__").map(String::as_str) == Some("job:up:sum") && *v == 2.0
        });
        let alerts = w.iter().any(|(_, l, _, v)| {
            l.get("__name__").map(String::as_str) == Some("ALERTS")
                && l.get("alertstate").map(String::as_str) == Some("firing")
                && *v == 1.0
        });
        (rec && alerts).then_some(())
    })
    .await;

    // The APIs.
    let rules_json = ruler.json("/api/v1/rules").await;
    let group = &rules_json["data"]["groups"][0];
    assert_eq!(group["name"], "basics");
    assert_eq!(group["interval"], 1.0);
    assert_eq!(group["rules"][0]["type"], "recording");
    assert_eq!(group["rules"][0]["health"], "ok");
    assert_eq!(group["rules"][1]["type"], "alerting");
    assert_eq!(group["rules"][1]["state"], "firing");
    assert_eq!(group["rules"][1]["alerts"][0]["value"], "0e+00");
    let only_rec = ruler.json("/api/v1/rules?type=record").await;
    assert_eq!(
        only_rec["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let alerts_json = ruler.json("/api/v1/alerts").await;
    assert_eq!(alerts_json["data"]["alerts"][0]["state"], "firing");
    assert_eq!(ruler.get("/api/v1/rules?type=bad", "fake").await.0, 400);

    // The condition clears: the alert is sent resolved (endsAt = resolve time).
    fake.answer("up == 0", vec![]);
    fake.wait_for("a resolved alert", |f| {
        f.alerts.lock().iter().find_map(|(_, body)| {
            body.as_array()?.iter().find_map(|a| {
                let starts = chrono::DateTime::parse_from_rfc3339(a["startsAt"].as_str()?).ok()?;
                let ends = chrono::DateTime::parse_from_rfc3339(a["endsAt"].as_str()?).ok()?;
                ((ends - starts).num_seconds() < 60).then_some(())
            })
        })
    })
    .await;
    // A stale marker ends the ALERTS series.
    fake.wait_for("a stale ALERTS marker", |f| {
        f.written
            .lock()
            .iter()
            .any(|(_, l, _, v)| {
                l.get("__name__").map(String::as_str) == Some("ALERTS") && v.is_nan()
            })
            .then_some(())
    })
    .await;
    ruler.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluations_run_at_consistent_times() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, url) = start_fake().await;
    let text = "groups:\n  - name: timing\n    interval: 200ms\n    rules:\n      - record: r\n        expr: vector(1)\n";
    let rules = write_rules(dir.path(), text);
    let ruler = Ruler::start(config(&url, Some(&rules)), dir.path(), false).await;
    let times = fake
        .wait_for("five evaluations", |f| {
            let times: Vec<f64> = f
                .queries
                .lock()
                .iter()
                .filter(|q| q.2 == "vector(1)")
                .map(|q| q.3.parse().unwrap())
                .collect();
            (times.len() >= 5).then_some(times)
        })
        .await;
    let ms: Vec<i64> = times.iter().map(|t| (t * 1000.0).round() as i64).collect();
    for pair in ms.windows(2) {
        // A missed tick skips whole intervals; times stay on the grid.
        assert_eq!((pair[1] - pair[0]) % 200, 0, "{ms:?}");
        assert!(pair[1] > pair[0], "{ms:?}");
    }
    let offset = ms[0].rem_euclid(200);
    assert!(ms.iter().all(|t| t.rem_euclid(200) == offset), "{ms:?}");
    ruler.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_for_state() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, url) = start_fake().await;
    fake.answer(
        "up == 0",
        vec![(labels(&[("__name__", "up"), ("instance", "h:1")]), 0.0)],
    );
    let text = "groups:\n  - name: slow\n    interval: 200ms\n    rules:\n      - alert: SlowDown\n        expr: up == 0\n        for: 1h\n";
    let rules = write_rules(dir.path(), text);
    let ruler = Ruler::start(config(&url, Some(&rules)), dir.path(), false).await;
    // Wait until the pending state has been written a few times.
    fake.wait_for("ALERTS_FOR_STATE samples", |f| {
        let n = f
            .written
            .lock()
            .iter()
            .filter(|(_, l, _, _)| {
                l.get("__name__").map(String::as_str) == Some("ALERTS_FOR_STATE")
            })
            .count();
        (n >= 5).then_some(())
    })
    .await;
    let before = ruler.json("/api/v1/alerts").await;
    let active_before = before["data"]["alerts"][0]["activeAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(before["data"]["alerts"][0]["state"], "pending");
    ruler.stop().await;
    let (_, _, down_at, value) = fake
        .written
        .lock()
        .iter()
        .rfind(|(_, l, _, _)| l.get("__name__").map(String::as_str) == Some("ALERTS_FOR_STATE"))
        .cloned()
        .unwrap();

    // Down for a while, then back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restart = chrono::Utc::now();
    let ruler = Ruler::start(config(&url, Some(&rules)), dir.path(), false).await;
    let after = loop {
        let a = ruler.json("/api/v1/alerts").await;
        if a["data"]["alerts"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
        {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(chrono::Utc::now() - restart < chrono::TimeDelta::seconds(30));
    };
    let active_after = chrono::DateTime::parse_from_rfc3339(
        after["data"]["alerts"][0]["activeAt"].as_str().unwrap(),
    )
    .unwrap();
    let active_before = chrono::DateTime::parse_from_rfc3339(&active_before).unwrap();
    // The time spent pending before the outage is kept: activeAt moved by
    // the downtime, well before the restart.
    let pending_before = down_at / 1000 - value as i64;
    let pending_after = restart.timestamp() - active_after.timestamp();
    assert!(
        pending_after >= pending_before - 1,
        "before {active_before}, after {active_after}, pending {pending_before}s"
    );
    assert!(
        active_after > active_before,
        "before {active_before}, after {active_after}"
    );
    // Milliseconds: the pending time before the outage is about a second,
    // so whole seconds can tie.
    assert!(
        active_after.timestamp_millis() < restart.timestamp_millis(),
        "after {active_after}, restart {restart}"
    );
    ruler.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_ruler_api_manages_logql_groups_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, url) = start_fake().await;
    let expr = "sum(rate({app=\"x\"} |= \"error\" [1m])) > 0";
    fake.answer(expr, vec![(Labels::new(), 3.0)]);
    let ruler = Ruler::start(config(&url, None), dir.path(), true).await;
    let client = lucia_common::http_client::client();
    let group = format!(
        "name: errors\ninterval: 1s\nrules:\n  - alert: ManyErrors\n    expr: '{expr}'\n    annotations:\n      summary: 'errors: {{{{ $value }}}}'\n  - record: app:errors:rate\n    expr: 'sum(rate({{app=\"x\"}}[1m]))'\n"
    );
    let r = client
        .post(format!("{}/loki/api/v1/rules/team-a", ruler.url))
        .header("X-Scope-OrgID", "tenant1")
        .body(group.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    // Bad LogQL is refused, naming the rule.
    let r = client
        .post(format!("{}/loki/api/v1/rules/team-a", ruler.url))
        .header("X-Scope-OrgID", "tenant1")
        .body("name: bad\nrules:\n  - alert: X\n    expr: 'sum(rate({app=\"x\"'\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("rule 1, \\\"X\\\""));

    let (status, body) = ruler.get("/loki/api/v1/rules", "tenant1").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"team-a\":") && body.contains("ManyErrors"),
        "{body}"
    );
    let (status, body) = ruler
        .get("/loki/api/v1/rules/team-a/errors", "tenant1")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("name: \"errors\""), "{body}");
    // Another tenant sees nothing.
    assert_eq!(ruler.get("/loki/api/v1/rules", "tenant2").await.0, 404);

    // The group runs against the querier as tenant1 and alerts.
    fake.wait_for("a LogQL alert", |f| {
        f.alerts.lock().iter().find_map(|(t, body)| {
            (t == "tenant1" && body.to_string().contains("ManyErrors")).then_some(())
        })
    })
    .await;
    assert!(
        fake.queries
            .lock()
            .iter()
            .any(|q| q.0 == "/loki/api/v1/query" && q.1 == "tenant1")
    );
    let (_, body) = ruler.get("/prometheus/api/v1/rules", "tenant1").await;
    assert!(body.contains("ManyErrors"), "{body}");
    let (_, body) = ruler.get("/api/v1/alerts", "tenant2").await;
    assert!(!body.contains("ManyErrors"), "{body}");

    // Rules survive a restart.
    ruler.stop().await;
    let ruler = Ruler::start(config(&url, None), dir.path(), true).await;
    let (status, body) = ruler.get("/loki/api/v1/rules/team-a", "tenant1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("app:errors:rate"), "{body}");
    let r = client
        .delete(format!("{}/loki/api/v1/rules/team-a/errors", ruler.url))
        .header("X-Scope-OrgID", "tenant1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(
        ruler.get("/loki/api/v1/rules/team-a", "tenant1").await.0,
        404
    );
    let (_, body) = ruler.get("/api/v1/rules", "tenant1").await;
    assert!(!body.contains("errors"), "{body}");
    ruler.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rule_files_name_file_group_rule_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(
        dir.path(),
        "groups:\n  - name: g\n    rules:\n      - alert: Bad\n        expr: 'sum(up'\n",
    );
    let (_, url) = start_fake().await;
    let (_listener, addr) = lucia_common::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let ctx = RoleContext {
        advertise_addr: addr,
        metrics: lucia_common::metrics::Metrics::new(),
        readiness: Readiness::default(),
        shutdown: Shutdown::new(),
        data_dir: dir.path().to_path_buf(),
        multi_tenant: false,
        consul: None,
    };
    let err = match lucia_ruler::start(config(&url, Some(&rules)), ctx).await {
        Ok(_) => panic!("bad rules accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("rules.yml:4: group \"g\", rule 1, \"Bad\": could not parse expression"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_discovered_in_consul() {
    use lucia_common::consul::{ConsulClient, HttpCheck, ServiceRegistration};
    let dir = tempfile::tempdir().unwrap();
    let consul = lucia_tests::fake_consul::FakeConsul::start().await;
    let mut consul_config = consul.config();
    consul_config.check_interval = lucia_common::duration::ConfigDuration::from_millis(100);
    let (fake, url) = start_fake().await;
    fake.answer("sum(up)", vec![(Labels::new(), 1.0)]);
    fake.answer("up == 0", vec![(labels(&[("instance", "h:1")]), 0.0)]);
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let client = ConsulClient::new(&consul_config).unwrap();
    for name in ["lucia-tsdb", "lucia-alert-router"] {
        client
            .register_service(&ServiceRegistration {
                id: format!("{name}-1"),
                name: name.to_string(),
                tags: vec![],
                address: addr.ip().to_string(),
                port: addr.port(),
                meta: BTreeMap::new(),
                check: Some(HttpCheck::new(format!("{url}/ready"), &consul_config)),
            })
            .await
            .unwrap();
    }
    let rules = write_rules(dir.path(), RULES);
    let mut cfg = config(&url, Some(&rules));
    cfg.tsdb_url = None;
    cfg.querier_url = None;
    cfg.alertmanager_urls = vec![];
    let ruler = Ruler::start_with(cfg, dir.path(), false, Some(consul_config)).await;
    fake.wait_for("an alert through consul discovery", |f| {
        f.alerts
            .lock()
            .iter()
            .any(|(_, b)| b.to_string().contains("\"Down\""))
            .then_some(())
    })
    .await;
    assert!(
        fake.written
            .lock()
            .iter()
            .any(|(_, l, _, _)| l["__name__"] == "job:up:sum")
    );
    ruler.stop().await;
    consul.stop().await;
}
