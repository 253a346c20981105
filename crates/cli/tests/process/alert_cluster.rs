//! High availability of the alert-router, with real processes: three
//! `lucia alert-router`s peered with each other and one webhook receiver.
//! Alertmanager's "cluster deduplication" acceptance scenario (the same
//! alerts posted to every member, as Prometheus does, give one
//! notification per group), a silence made on one member mutes on all, a
//! SIGKILLed position-0 member does not stop notifications, and amtool's
//! `cluster show` lists every member. A second test finds the peers in
//! (the fake) Consul instead of `--cluster.peer`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lucia_tests::fake_consul::FakeConsul;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::harness::{Lucia, free_port};

/// Short timings so that the test runs in well under a minute; generous
/// enough for a loaded two-core machine (a log entry only has to travel
/// over loopback within the peer timeout).
const PEER_TIMEOUT: Duration = Duration::from_secs(3);
const GROUP_WAIT: Duration = Duration::from_secs(1);

struct Member {
    lucia: Lucia,
    web: String,
}

fn alertmanager_yml(hook: &str) -> String {
    format!(
        "
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1m
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook}
"
    )
}

/// Starts `lucia alert-router` with fast cluster timings and waits until
/// it is ready.
async fn start_member(
    dir: &Path,
    index: usize,
    web_port: u16,
    cluster_port: u16,
    extra: &[String],
) -> Member {
    let storage = dir.join(format!("member-{index}"));
    std::fs::create_dir_all(&storage).expect("storage dir");
    let web = format!("127.0.0.1:{web_port}");
    let child = Command::new(env!("CARGO_BIN_EXE_lucia"))
        .arg("alert-router")
        .arg("--config.file")
        .arg(dir.join("alertmanager.yml"))
        .arg("--storage.path")
        .arg(&storage)
        .arg("--web.listen-address")
        .arg(&web)
        .arg(format!("--web.external-url=http://{web}"))
        .arg(format!("--cluster.listen-address=127.0.0.1:{cluster_port}"))
        .arg(format!(
            "--cluster.peer-timeout={}s",
            PEER_TIMEOUT.as_secs()
        ))
        .args([
            "--cluster.gossip-interval=50ms",
            "--cluster.settle-timeout=20s",
            "--cluster.probe-interval=200ms",
            "--cluster.probe-timeout=1s",
            "--cluster.reconnect-interval=1s",
            "--cluster.pushpull-interval=5s",
            "--log.level=warn",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn lucia alert-router");
    Member {
        lucia: Lucia::adopt(child, web_port).await,
        web,
    }
}

/// A webhook receiver: every payload, with when it arrived.
async fn webhook() -> (String, mpsc::UnboundedReceiver<(Instant, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let payload: Value = serde_json::from_slice(&body).expect("webhook json");
                let _ = tx.send((Instant::now(), payload));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind webhook");
    let addr = listener.local_addr().expect("webhook address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

async fn get_json(web: &str, path: &str) -> Option<Value> {
    let resp = lucia_common::http_client::client()
        .get(format!("http://{web}{path}"))
        .send()
        .await
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.json().await.ok()
}

/// Polls `check` until it gives a value, or panics after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The cluster status of `web` once it is `ready` with `n` peers: the
/// peers' (name, address), sorted by name.
async fn ready_with_peers(web: &str, n: usize) -> Vec<(String, String)> {
    eventually(
        &format!("{web} to be ready with {n} peers"),
        Duration::from_secs(60),
        || async {
            let status = get_json(web, "/api/v2/status").await?;
            let cluster = &status["cluster"];
            let peers = cluster["peers"].as_array()?;
            if cluster["status"] != "ready" || peers.len() != n {
                return None;
            }
            Some(
                peers
                    .iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap_or_default().to_string(),
                            p["address"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            )
        },
    )
    .await
}

/// Waits until the silence at `path` (`/api/v2/silence/<id>`) is on the
/// member at `web`, and checks that it is active.
async fn wait_active_silence(web: &str, path: &str) {
    let silence = eventually(
        &format!("the silence on {web}"),
        Duration::from_secs(10),
        || get_json(web, path),
    )
    .await;
    assert_eq!(silence["status"]["state"], "active");
}

/// Creates a silence of `alertname=<value>` for an hour on the member at
/// `web` (as `tenant`, when given) and returns its id.
async fn create_silence(web: &str, tenant: Option<&str>, value: &str) -> String {
    let now = chrono::Utc::now();
    let mut request = lucia_common::http_client::client()
        .post(format!("http://{web}/api/v2/silences"))
        .json(&json!({
            "matchers": [{"name": "alertname", "value": value, "isRegex": false, "isEqual": true}],
            "startsAt": now.to_rfc3339(),
            "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
            "createdBy": "test",
            "comment": "cluster test",
        }));
    if let Some(tenant) = tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    let resp = request.send().await.expect("post silence");
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.expect("silence id")["silenceID"]
        .as_str()
        .expect("silenceID")
        .to_string()
}

async fn post_alerts(web: &str, alertnames: &[&str]) -> bool {
    let alerts: Vec<Value> = alertnames
        .iter()
        .map(|name| {
            json!({
                "labels": {"alertname": name, "instance": "i1"},
                "annotations": {"summary": "cluster test"},
                "generatorURL": "http://prometheus/graph",
            })
        })
        .collect();
    lucia_common::http_client::client()
        .post(format!("http://{web}/api/v2/alerts"))
        .json(&alerts)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// The notifications that arrive within `window`.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(Instant, Value)>,
    window: Duration,
) -> Vec<(Instant, Value)> {
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Ok(Some(n)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push(n);
    }
    out
}

fn group_of(payload: &Value) -> String {
    payload["groupLabels"]["alertname"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn cluster_deduplicates_shares_silences_and_survives_a_dead_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook, mut notifications) = webhook().await;
    std::fs::write(dir.path().join("alertmanager.yml"), alertmanager_yml(&hook))
        .expect("write config");
    let web_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut members = Vec::new();
    for i in 0..3 {
        let peers: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("--cluster.peer=127.0.0.1:{}", cluster_ports[j]))
            .collect();
        members.push(start_member(dir.path(), i, web_ports[i], cluster_ports[i], &peers).await);
    }

    // Every member sees all three, and they agree on the order.
    let mut views = Vec::new();
    for m in &members {
        views.push(ready_with_peers(&m.web, 3).await);
    }
    assert!(views.iter().all(|v| *v == views[0]), "{views:?}");
    let cluster_addresses: Vec<String> = cluster_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let mut advertised: Vec<String> = views[0].iter().map(|(_, a)| a.clone()).collect();
    advertised.sort();
    let mut expected = cluster_addresses.clone();
    expected.sort();
    assert_eq!(advertised, expected);
    // Position 0 is the member whose name sorts first.
    let first_name = &views[0][0].0;
    let first = eventually("the position-0 member", Duration::from_secs(5), || async {
        for (i, m) in members.iter().enumerate() {
            let status = get_json(&m.web, "/api/v2/status").await?;
            if status["cluster"]["name"] == first_name.as_str() {
                return Some(i);
            }
        }
        None
    })
    .await;

    // amtool lists every member (skipped when it is not installed).
    match Command::new("amtool")
        .arg(format!("--alertmanager.url=http://{}", members[1].web))
        .args(["cluster", "show", "-o", "extended"])
        .output()
    {
        Err(_) => eprintln!("amtool not installed: skipping `amtool cluster show`"),
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "amtool: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("Cluster Status:  ready"), "{stdout}");
            for (name, address) in &views[0] {
                assert!(
                    stdout.contains(name) && stdout.contains(address),
                    "{stdout}"
                );
            }
        }
    }

    // Cluster deduplication: the same alerts posted to every member give
    // one notification per group, sent by the member at position 0.
    for m in &members {
        assert!(post_alerts(&m.web, &["GroupA", "GroupB"]).await);
    }
    let posted = Instant::now();
    let got = collect(
        &mut notifications,
        GROUP_WAIT + PEER_TIMEOUT * 2 + Duration::from_secs(6),
    )
    .await;
    for (at, payload) in &got {
        let took = at.duration_since(posted);
        eprintln!(
            "group {} notified {took:?} after the alerts were posted",
            group_of(payload)
        );
        // Alertmanager's acceptance test wants it one group_wait after
        // the push, with a tolerance of a second: position 0 does not wait.
        assert!(took <= GROUP_WAIT + Duration::from_secs(1), "took {took:?}");
    }
    let mut groups: Vec<String> = got.iter().map(|(_, p)| group_of(p)).collect();
    groups.sort();
    assert_eq!(
        groups,
        vec!["GroupA", "GroupB"],
        "one notification per group: {got:?}"
    );
    for (_, payload) in &got {
        assert_eq!(
            payload["externalURL"],
            format!("http://{}", members[first].web),
            "the position-0 member notifies"
        );
    }

    // A silence made on one member mutes on every member.
    let id = create_silence(&members[(first + 1) % 3].web, None, "Silenced").await;
    let silence_path = format!("/api/v2/silence/{id}");
    for m in &members {
        wait_active_silence(&m.web, &silence_path).await;
        assert!(post_alerts(&m.web, &["Silenced"]).await);
    }
    for m in &members {
        let alerts = eventually(
            "the alert silenced on every member",
            Duration::from_secs(10),
            || async {
                let alerts = get_json(&m.web, "/api/v2/alerts?filter=alertname%3DSilenced").await?;
                (alerts[0]["status"]["silencedBy"][0] == id.as_str()).then_some(alerts)
            },
        )
        .await;
        assert_eq!(alerts[0]["status"]["state"], "suppressed");
    }
    let got = collect(
        &mut notifications,
        GROUP_WAIT + PEER_TIMEOUT * 2 + Duration::from_secs(3),
    )
    .await;
    assert!(got.is_empty(), "a silenced alert was notified: {got:?}");

    // SIGKILL the position-0 member: the others still notify, once,
    // within the peer timeout (plus a margin for a loaded machine).
    members[first].lucia.kill();
    let posted = Instant::now();
    for (i, m) in members.iter().enumerate() {
        let accepted = post_alerts(&m.web, &["AfterKill"]).await;
        assert_eq!(accepted, i != first, "only the living accept alerts");
    }
    let got = collect(
        &mut notifications,
        GROUP_WAIT + PEER_TIMEOUT * 2 + Duration::from_secs(8),
    )
    .await;
    assert_eq!(got.len(), 1, "one notification after the kill: {got:?}");
    let (at, payload) = &got[0];
    assert_eq!(group_of(payload), "AfterKill");
    assert_ne!(
        payload["externalURL"],
        format!("http://{}", members[first].web)
    );
    let took = at.duration_since(posted);
    eprintln!("notified {took:?} after the alert was posted to the survivors");
    assert!(
        took <= GROUP_WAIT + PEER_TIMEOUT + Duration::from_secs(5),
        "the notification took {took:?}"
    );
    // The dead member leaves the peer lists.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    for i in &survivors {
        ready_with_peers(&members[*i].web, 2).await;
    }

    // A new member with empty storage gets the silences and the log in
    // its first full sync: it shows the silence, and the same alerts
    // posted to it alone are not notified again.
    let peers: Vec<String> = survivors
        .iter()
        .map(|i| format!("--cluster.peer=127.0.0.1:{}", cluster_ports[*i]))
        .collect();
    let newcomer = start_member(dir.path(), 3, free_port(), free_port(), &peers).await;
    ready_with_peers(&newcomer.web, 3).await;
    wait_active_silence(&newcomer.web, &silence_path).await;
    assert!(post_alerts(&newcomer.web, &["GroupA", "GroupB"]).await);
    let got = collect(
        &mut notifications,
        GROUP_WAIT + PEER_TIMEOUT * 2 + Duration::from_secs(3),
    )
    .await;
    assert!(got.is_empty(), "the new member notified again: {got:?}");
}

#[tokio::test]
async fn cluster_peers_come_from_consul() {
    let consul = FakeConsul::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook, _notifications) = webhook().await;
    std::fs::write(dir.path().join("alertmanager.yml"), alertmanager_yml(&hook))
        .expect("write config");
    let mut members = Vec::new();
    for i in 0..2 {
        let consul_flag = format!("--consul.address={}", consul.address());
        members.push(start_member(dir.path(), i, free_port(), free_port(), &[consul_flag]).await);
    }
    let a = ready_with_peers(&members[0].web, 2).await;
    let b = ready_with_peers(&members[1].web, 2).await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn cluster_replicates_each_tenant_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook, _notifications) = webhook().await;
    std::fs::write(dir.path().join("alertmanager.yml"), alertmanager_yml(&hook))
        .expect("write config");
    let cluster_ports = [free_port(), free_port()];
    let mut members = Vec::new();
    for i in 0..2 {
        let flags = vec![
            "--auth.enabled".to_string(),
            format!("--cluster.peer=127.0.0.1:{}", cluster_ports[1 - i]),
        ];
        members.push(start_member(dir.path(), i, free_port(), cluster_ports[i], &flags).await);
    }
    ready_with_peers(&members[1].web, 2).await;
    let id = create_silence(&members[0].web, Some("team-a"), "X").await;
    let client = lucia_common::http_client::client();
    let silences_of = |tenant: &'static str| {
        let client = client.clone();
        let web = members[1].web.clone();
        async move {
            let resp = client
                .get(format!("http://{web}/api/v2/silences"))
                .header("X-Scope-OrgID", tenant)
                .send()
                .await
                .ok()?;
            resp.json::<Value>().await.ok()
        }
    };
    eventually(
        "team-a's silence on the other member",
        Duration::from_secs(10),
        || async {
            let list = silences_of("team-a").await?;
            (list[0]["id"] == id.as_str()).then_some(())
        },
    )
    .await;
    let other = silences_of("team-b").await.expect("team-b's silences");
    assert_eq!(other, json!([]), "a silence crossed tenants");
}
