//! Alertmanager's black-box acceptance scenarios (its
//! `test/with_api_v2/acceptance` tests, read as a specification) against
//! the router: the same configurations, the same pushes at the same times,
//! the same expected notifications in the same time windows, and the same
//! tolerance of 150 ms on alert times. As there, times are seconds from the
//! start of the test, an alert without `Active` is posted without a start
//! time (the server sets it), and a collector fails on a missing batch and
//! on any notification beyond the expected ones.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{Answer, Receiver, Router, client, tempdir};

/// The acceptance tests' tolerance on alert times.
const TOLERANCE: Duration = Duration::from_millis(150);

/// The test's clock: relative seconds from its start.
struct Clock {
    base: Instant,
    wall: DateTime<Utc>,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            base: Instant::now(),
            wall: Utc::now(),
        }
    }

    fn time(&self, rel: f64) -> DateTime<Utc> {
        self.wall + chrono::Duration::microseconds((rel * 1e6) as i64)
    }

    fn instant(&self, rel: f64) -> Instant {
        self.base + Duration::from_secs_f64(rel)
    }

    async fn until(&self, rel: f64) {
        tokio::time::sleep_until(self.instant(rel)).await;
    }

    fn relative(&self, at: Instant) -> f64 {
        at.duration_since(self.base).as_secs_f64()
    }
}

/// An alert with relative times (0 = not set), like the acceptance tests'
/// `Alert(...).Active(...)`.
#[derive(Clone)]
struct TestAlert {
    labels: Value,
    annotations: Value,
    starts: f64,
    ends: f64,
}

fn alert(pairs: &[&str]) -> TestAlert {
    let mut labels = serde_json::Map::new();
    for kv in pairs.chunks(2) {
        labels.insert(kv[0].to_string(), json!(kv[1]));
    }
    TestAlert {
        labels: Value::Object(labels),
        annotations: json!({}),
        starts: 0.0,
        ends: 0.0,
    }
}

impl TestAlert {
    fn active(mut self, times: &[f64]) -> Self {
        self.starts = times[0];
        if let Some(end) = times.get(1) {
            self.ends = *end;
        }
        self
    }

    fn annotate(mut self, name: &str, value: &str) -> Self {
        self.annotations[name] = json!(value);
        self
    }

    fn postable(&self, clock: &Clock) -> Value {
        let mut a = json!({"labels": self.labels, "annotations": self.annotations});
        if self.starts > 0.0 {
            a["startsAt"] = json!(clock.time(self.starts).to_rfc3339());
        }
        if self.ends > 0.0 {
            a["endsAt"] = json!(clock.time(self.ends).to_rfc3339());
        }
        a
    }

    /// Equal as the acceptance tests compare: labels, annotations, and
    /// times within the tolerance (an unset time only equals Go's zero).
    fn matches(&self, got: &Value, clock: &Clock) -> bool {
        let time_eq = |rel: f64, v: &Value| {
            let t = DateTime::parse_from_rfc3339(v.as_str().unwrap_or(""))
                .unwrap()
                .with_timezone(&Utc);
            let zero = t.timestamp() <= -62135596800;
            if rel == 0.0 {
                return zero;
            }
            !zero && (t - clock.time(rel)).abs() <= chrono::Duration::from_std(TOLERANCE).unwrap()
        };
        got["labels"] == self.labels
            && got["annotations"] == self.annotations
            && time_eq(self.starts, &got["startsAt"])
            && time_eq(self.ends, &got["endsAt"])
    }
}

/// Posts alerts to the router at a relative time.
async fn push(router: &Router, clock: &Clock, at: f64, alerts: &[TestAlert]) {
    clock.until(at).await;
    let body = Value::Array(alerts.iter().map(|a| a.postable(clock)).collect());
    let resp = router.post_alerts(body).await;
    assert_eq!(resp.status(), 200, "push at {at}");
}

/// Expected batches per time window, checked against what a receiver got
/// by the end of the last window.
struct Collector {
    name: &'static str,
    hook: Receiver,
    wants: Vec<(f64, f64, Vec<TestAlert>)>,
}

impl Collector {
    async fn start(name: &'static str, answer: Answer) -> Collector {
        Collector {
            name,
            hook: Receiver::answering(answer).await,
            wants: Vec::new(),
        }
    }

    fn want(&mut self, from: f64, to: f64, alerts: &[TestAlert]) {
        self.wants.push((from, to, alerts.to_vec()));
    }

    fn latest(&self) -> f64 {
        self.wants.iter().map(|w| w.1).fold(0.0, f64::max)
    }

    /// The acceptance tests' `Check`: every expected batch arrived within
    /// its window, no notification was empty, and the total number of
    /// alerts received equals the total expected.
    fn check(&mut self, clock: &Clock) {
        let got: Vec<(f64, Vec<Value>)> = self
            .hook
            .pending_timed()
            .into_iter()
            .map(|(t, n)| (clock.relative(t), n["alerts"].as_array().unwrap().clone()))
            .collect();
        let report = got
            .iter()
            .map(|(t, alerts)| {
                let list: Vec<String> = alerts
                    .iter()
                    .map(|a| {
                        format!(
                            "{} {} {}..{}",
                            a["labels"], a["annotations"], a["startsAt"], a["endsAt"]
                        )
                    })
                    .collect();
                format!("  @{t:.2}s: {}", list.join("; "))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut failures = Vec::new();
        for (from, to, exp) in &self.wants {
            let in_window: Vec<&Vec<Value>> = got
                .iter()
                .filter(|(t, _)| t >= from && t <= to)
                .map(|(_, a)| a)
                .collect();
            let found = (exp.is_empty() && in_window.is_empty())
                || in_window.iter().any(|batch| {
                    batch.len() == exp.len()
                        && exp
                            .iter()
                            .all(|e| batch.iter().any(|a| e.matches(a, clock)))
                });
            if !found {
                let names: Vec<String> = exp.iter().map(|e| e.labels.to_string()).collect();
                failures.push(format!("no batch [{}] in [{from}, {to}]", names.join(", ")));
            }
        }
        if got.iter().any(|(_, a)| a.is_empty()) {
            failures.push("received an empty notification".to_string());
        }
        let expected: usize = self.wants.iter().map(|w| w.2.len()).sum();
        let received: usize = got.iter().map(|(_, a)| a.len()).sum();
        if expected != received {
            failures.push(format!(
                "expected a total of {expected} alerts, got {received}"
            ));
        }
        assert!(
            failures.is_empty(),
            "collector {}: {}\nreceived:\n{report}",
            self.name,
            failures.join("; ")
        );
    }
}

/// Starts the router with `config` (`{url}`s replaced by the collectors'
/// webhook URLs, in order). As in Alertmanager's tests, the clock started
/// before the server.
async fn start(dir: &std::path::Path, config: &str, collectors: &[&Collector]) -> Router {
    let mut text = config.to_string();
    for c in collectors {
        text = text.replacen("{url}", &c.hook.url, 1);
    }
    Router::start(dir, &text, false).await
}

/// Waits until the last window has closed, then checks every collector.
async fn finish(router: Router, clock: &Clock, collectors: &mut [&mut Collector]) {
    let latest = collectors.iter().map(|c| c.latest()).fold(0.0, f64::max);
    clock.until(latest).await;
    for c in collectors.iter_mut() {
        c.check(clock);
    }
    router.stop().await;
}

const FAST: &str = r#"
route:
  receiver: "default"
  group_by: [alertname]
  group_wait:      1s
  group_interval:  1s
  repeat_interval: 1ms

receivers:
- name: "default"
  webhook_configs:
  - url: '{url}'
    send_resolved: true
"#;

async fn merge_alerts(with_ends_at: bool) {
    // Prometheus (2.4+) sends firing alerts with endsAt = startsAt + 3s.
    let range = |ts: f64| {
        if with_ends_at {
            vec![ts, ts + 3.0]
        } else {
            vec![ts]
        }
    };
    let clock = Clock::start();
    let dir = tempdir();
    let mut co = Collector::start("webhook", Answer::Ok).await;
    let router = start(dir.path(), FAST, &[&co]).await;
    let test = || alert(&["alertname", "test"]);
    let ann = |v: &str| test().annotate("ann", v);

    co.want(2.0, 2.5, &[test().active(&[1.0])]);
    co.want(3.0, 3.5, &[ann("v1").active(&[1.0])]);
    co.want(4.0, 4.5, &[ann("v2").active(&[1.0])]);
    co.want(5.0, 5.5, &[ann("v3").active(&[1.0, 4.8])]);
    co.want(6.0, 6.5, &[test().active(&[5.0])]);

    // The start stays at the earliest time, also when a later push carries
    // an earlier start.
    push(&router, &clock, 1.0, &[test().active(&range(1.1))]).await;
    push(&router, &clock, 1.2, &[test().active(&[1.0])]).await;
    push(&router, &clock, 2.1, &[ann("v1").active(&range(2.0))]).await;
    // Annotations come from the most recent push.
    push(&router, &clock, 3.6, &[ann("v2").active(&range(1.5))]).await;
    // Resolved twice: the latest end wins.
    push(&router, &clock, 4.6, &[ann("v2").active(&[3.0, 4.5])]).await;
    push(&router, &clock, 4.8, &[ann("v3").active(&[2.9, 4.8])]).await;
    push(&router, &clock, 4.8, &[ann("v3").active(&[2.9, 4.1])]).await;
    // Firing again after the resolution: no overlap, no merge.
    push(&router, &clock, 5.3, &[test().active(&range(5.0))]).await;
    finish(router, &clock, &mut [&mut co]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_merge_alerts() {
    merge_alerts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_merge_alerts_with_ends_at() {
    merge_alerts(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_repeat() {
    let clock = Clock::start();
    let dir = tempdir();
    let mut co = Collector::start("webhook", Answer::Ok).await;
    let config = FAST.replace("    send_resolved: true\n", "");
    let router = start(dir.path(), &config, &[&co]).await;
    let test = || alert(&["alertname", "test"]);
    co.want(2.0, 2.5, &[test().active(&[1.0])]);
    co.want(3.0, 3.5, &[test().active(&[1.0])]);
    co.want(4.0, 4.5, &[test().active(&[1.0, 3.0])]);
    push(&router, &clock, 1.0, &[test().active(&[1.0])]).await;
    push(&router, &clock, 3.5, &[test().active(&[1.0, 3.0])]).await;
    finish(router, &clock, &mut [&mut co]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_retry() {
    // Two webhooks in one receiver; the second swallows what it gets
    // until 4.5 s. The first still gets only its own schedule, and the
    // second gets the next repeat.
    let config = r#"
route:
  receiver: "default"
  group_by: [alertname]
  group_wait:      1s
  group_interval:  2s
  repeat_interval: 3s

receivers:
- name: "default"
  webhook_configs:
  - url: '{url}'
  - url: '{url}'
"#;
    let clock = Clock::start();
    let dir = tempdir();
    let mut co1 = Collector::start("webhook", Answer::Ok).await;
    let mut co2 = Collector::start("webhook_failing", Answer::DropUntil(clock.instant(4.5))).await;
    let router = start(dir.path(), config, &[&co1, &co2]).await;
    let test1 = || alert(&["alertname", "test1"]);
    co1.want(2.0, 2.5, &[test1().active(&[1.0])]);
    co1.want(6.0, 6.5, &[test1().active(&[1.0])]);
    co2.want(6.0, 6.5, &[test1().active(&[1.0])]);
    push(&router, &clock, 1.0, &[test1()]).await;
    finish(router, &clock, &mut [&mut co1, &mut co2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_batching() {
    let config = r#"
route:
  receiver: "default"
  group_by: []
  group_wait:      1s
  group_interval:  1s
  # use a value slightly below the 5s interval to avoid timing issues
  repeat_interval: 4900ms

receivers:
- name: "default"
  webhook_configs:
  - url: '{url}'
"#;
    let clock = Clock::start();
    let dir = tempdir();
    let mut co = Collector::start("webhook", Answer::Ok).await;
    let router = start(dir.path(), config, &[&co]).await;
    let a = |name: &str, start: f64| alert(&["alertname", name]).active(&[start]);
    let all = [
        a("test1", 1.0),
        a("test5", 1.0),
        a("test2", 1.5),
        a("test3", 1.5),
        a("test4", 1.6),
    ];
    co.want(2.0, 2.5, &all[..2]);
    co.want(4.1, 4.5, &all);
    // No change: nothing more until the repeat interval has passed.
    co.want(9.1, 9.5, &all);
    push(&router, &clock, 1.1, &[a("test1", 1.0)]).await;
    push(&router, &clock, 1.7, &[a("test5", 1.0)]).await;
    push(&router, &clock, 3.3, &all[2..]).await;
    finish(router, &clock, &mut [&mut co]).await;
}

const RESOLVE: &str = r#"
global:
  resolve_timeout: 10s

route:
  receiver: "default"
  group_by: [alertname]
  group_wait: 1s
  group_interval: 5s

receivers:
- name: "default"
  webhook_configs:
  - url: '{url}'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_resolved() {
    let clock = Clock::start();
    let dir = tempdir();
    let mut co = Collector::start("webhook", Answer::Ok).await;
    let router = start(dir.path(), RESOLVE, &[&co]).await;
    let v = |l: &str| alert(&["alertname", "test", "lbl", l]);
    co.want(
        2.0,
        2.5,
        &[
            v("v1").active(&[1.0]),
            v("v2").active(&[1.0]),
            v("v3").active(&[1.0]),
        ],
    );
    // Resolved by resolve_timeout (10 s after the push).
    co.want(
        12.0,
        13.0,
        &[
            v("v1").active(&[1.0, 11.0]),
            v("v2").active(&[1.0, 11.0]),
            v("v3").active(&[1.0, 11.0]),
        ],
    );
    push(&router, &clock, 1.0, &[v("v1"), v("v2"), v("v3")]).await;
    finish(router, &clock, &mut [&mut co]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_resolved_filter() {
    // Resolved alerts a webhook does not send still count as notified, so
    // that a later flush is not ambiguous.
    let config = RESOLVE.replace(
        "  - url: '{url}'\n",
        "  - url: '{url}'\n    send_resolved: true\n  - url: '{url}'\n    send_resolved: false\n",
    );
    let clock = Clock::start();
    let dir = tempdir();
    let mut co1 = Collector::start("webhook1", Answer::Ok).await;
    let mut co2 = Collector::start("webhook2", Answer::Ok).await;
    let router = start(dir.path(), &config, &[&co1, &co2]).await;
    let v = |l: &str| alert(&["alertname", "test", "lbl", l]);
    co1.want(2.0, 2.5, &[v("v1").active(&[1.0]), v("v2").active(&[1.0])]);
    co1.want(
        7.0,
        7.5,
        &[
            v("v1").active(&[1.0, 4.0]),
            v("v2").active(&[1.0]),
            v("v3").active(&[3.0]),
        ],
    );
    // v2 resolved by the timeout.
    co1.want(
        12.0,
        12.5,
        &[v("v2").active(&[1.0, 11.0]), v("v3").active(&[3.0])],
    );
    co2.want(2.0, 2.5, &[v("v1").active(&[1.0]), v("v2").active(&[1.0])]);
    co2.want(7.0, 7.5, &[v("v2").active(&[1.0]), v("v3").active(&[3.0])]);
    // Nothing new fires: no notification after the group interval.
    co2.want(12.0, 12.5, &[]);
    push(&router, &clock, 1.0, &[v("v1"), v("v2")]).await;
    push(
        &router,
        &clock,
        3.0,
        &[v("v1").active(&[1.0, 4.0]), v("v3")],
    )
    .await;
    push(&router, &clock, 8.0, &[v("v3").active(&[3.0])]).await;
    finish(router, &clock, &mut [&mut co1, &mut co2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_reload() {
    // The first alert is not notified twice, and timers restart at the
    // reload (the 6 s group interval counts from 3 s).
    let config = r#"
route:
  receiver: "default"
  group_by: []
  group_wait:      1s
  group_interval:  6s
  repeat_interval: 10m

receivers:
- name: "default"
  webhook_configs:
  - url: '{url}'
"#;
    let clock = Clock::start();
    let dir = tempdir();
    let mut co = Collector::start("webhook", Answer::Ok).await;
    let router = start(dir.path(), config, &[&co]).await;
    let test = |n: &str| alert(&["alertname", n]);
    co.want(2.0, 2.5, &[test("test1").active(&[1.0])]);
    co.want(
        9.0,
        9.5,
        &[test("test1").active(&[1.0]), test("test2").active(&[4.0])],
    );
    push(&router, &clock, 1.0, &[test("test1")]).await;
    clock.until(3.0).await;
    let resp = router.reload().await;
    assert_eq!(resp.status(), 200);
    push(&router, &clock, 4.0, &[test("test2")]).await;
    finish(router, &clock, &mut [&mut co]).await;
}

const EVERY_SECOND: &str = r#"
route:
  receiver: "default"
  group_by: []
  group_wait:      1s
  group_interval:  1s
  repeat_interval: 1ms

receivers:
- name: "default"
  webhook_configs:
  - url: '{url}'
"#;

/// Creates a silence with relative times; returns its ID.
async fn silence(
    router: &Router,
    clock: &Clock,
    at: f64,
    window: (f64, f64),
    matcher: (&str, &str, bool),
) -> String {
    clock.until(at).await;
    let resp = client()
        .post(format!("{}/api/v2/silences", router.url))
        .json(&json!({
            "matchers": [{"name": matcher.0, "value": matcher.1, "isRegex": matcher.2}],
            "startsAt": clock.time(window.0).to_rfc3339(),
            "endsAt": clock.time(window.1).to_rfc3339(),
            "comment": "some comment",
            "createdBy": "admin@example.com",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["silenceID"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_silencing() {
    let clock = Clock::start();
    let dir = tempdir();
    let mut co = Collector::start("webhook", Answer::Ok).await;
    let router = start(dir.path(), EVERY_SECOND, &[&co]).await;
    let t = |n: &str| alert(&["alertname", n]).active(&[1.0]);
    co.want(2.0, 2.5, &[t("test1"), t("test2")]);
    co.want(3.0, 3.5, &[t("test2")]);
    co.want(4.0, 4.5, &[t("test2")]);
    // The silence is over: both again.
    co.want(5.0, 5.5, &[t("test1"), t("test2")]);
    push(&router, &clock, 1.0, &[t("test1")]).await;
    push(&router, &clock, 1.0, &[t("test2")]).await;
    // A silence from 2.5 s to 4.5 s on the first alert.
    silence(
        &router,
        &clock,
        2.3,
        (2.5, 4.5),
        ("alertname", "test1", false),
    )
    .await;
    finish(router, &clock, &mut [&mut co]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_silence_delete() {
    let clock = Clock::start();
    let dir = tempdir();
    let mut co = Collector::start("webhook", Answer::Ok).await;
    let router = start(dir.path(), EVERY_SECOND, &[&co]).await;
    let t = |n: &str| alert(&["alertname", n]).active(&[1.0]);
    co.want(3.5, 4.5, &[t("test1"), t("test2")]);
    push(&router, &clock, 1.0, &[t("test1")]).await;
    push(&router, &clock, 1.0, &[t("test2")]).await;
    // Everything silenced for a long time; the silence is deleted at 3.5 s.
    let id = silence(
        &router,
        &clock,
        1.3,
        (1.5, 100.0),
        ("alertname", ".+", true),
    )
    .await;
    clock.until(3.5).await;
    let resp = client()
        .delete(format!("{}/api/v2/silence/{id}", router.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    finish(router, &clock, &mut [&mut co]).await;
}

const INHIBIT: &str = r#"
route:
  receiver: "default"
  group_by: []
  group_wait:      1s
  group_interval:  1s
  repeat_interval: 1s

receivers:
- name: "default"
  webhook_configs:
  - url: '{url}'

inhibit_rules:
- source_match:
    alertname: JobDown
  target_match:
    alertname: InstanceDown
  equal:
    - job
    - zone
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_inhibiting() {
    // An inhibited alert is notified again as soon as the inhibiting one
    // resolves.
    let clock = Clock::start();
    let dir = tempdir();
    let mut co = Collector::start("webhook", Answer::Ok).await;
    let router = start(dir.path(), INHIBIT, &[&co]).await;
    let a = |name: &str, zone: &str| alert(&["alertname", name, "job", "testjob", "zone", zone]);
    co.want(
        2.0,
        2.5,
        &[
            a("test1", "aa").active(&[1.0]),
            a("InstanceDown", "aa").active(&[1.0]),
            a("InstanceDown", "ab").active(&[1.0]),
        ],
    );
    co.want(
        3.0,
        3.5,
        &[
            a("test1", "aa").active(&[1.0]),
            a("InstanceDown", "ab").active(&[1.0]),
            a("JobDown", "aa").active(&[2.2]),
        ],
    );
    co.want(
        4.0,
        4.5,
        &[
            a("test1", "aa").active(&[1.0]),
            a("InstanceDown", "aa").active(&[1.0]),
            a("InstanceDown", "ab").active(&[1.0]),
            a("JobDown", "aa").active(&[2.2, 3.6]),
        ],
    );
    push(&router, &clock, 1.0, &[a("test1", "aa")]).await;
    push(&router, &clock, 1.0, &[a("InstanceDown", "aa")]).await;
    push(&router, &clock, 1.0, &[a("InstanceDown", "ab")]).await;
    push(&router, &clock, 2.2, &[a("JobDown", "aa")]).await;
    push(
        &router,
        &clock,
        3.6,
        &[a("JobDown", "aa").active(&[2.2, 3.6])],
    )
    .await;
    finish(router, &clock, &mut [&mut co]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_always_inhibiting() {
    // When the inhibited and the inhibiting alert resolve together, the
    // last notification has both.
    let clock = Clock::start();
    let dir = tempdir();
    let mut co = Collector::start("webhook", Answer::Ok).await;
    let router = start(dir.path(), INHIBIT, &[&co]).await;
    let a = |name: &str| alert(&["alertname", name, "job", "testjob", "zone", "aa"]);
    co.want(2.0, 2.5, &[a("JobDown").active(&[1.0])]);
    co.want(
        3.0,
        3.5,
        &[
            a("InstanceDown").active(&[1.0, 2.6]),
            a("JobDown").active(&[1.0, 2.6]),
        ],
    );
    push(&router, &clock, 1.0, &[a("InstanceDown")]).await;
    push(&router, &clock, 1.0, &[a("JobDown")]).await;
    push(&router, &clock, 2.6, &[a("JobDown").active(&[1.0, 2.6])]).await;
    push(
        &router,
        &clock,
        2.6,
        &[a("InstanceDown").active(&[1.0, 2.6])],
    )
    .await;
    finish(router, &clock, &mut [&mut co]).await;
}
