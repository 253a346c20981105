//! Three ingesters with replication factor 3, a distributor, and the fake
//! Consul: one ingester is killed during ingestion; pushes keep succeeding,
//! no acknowledged line is lost, and the ring shows the dead ingester
//! UNHEALTHY, then gone once Consul deregisters it.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lucia_tests::fake_consul::FakeConsul;

use crate::harness::{Lucia, count_via_querier, free_port, push_body};

fn config(consul: &str, instance: &str, store: &Path) -> String {
    let store = store.display();
    format!(
        "
storage:
  filesystem:
    directory: {store}
consul:
  address: {consul}
  check_interval: 500ms
  deregister_critical_service_after: 3s
limits_config:
  ingestion_rate_mb: 100000
  ingestion_burst_size_mb: 100000
ingester:
  instance_id: {instance}
  ring:
    kvstore:
      store: consul
    replication_factor: 3
    heartbeat_period: 1s
distributor:
  ring:
    kvstore:
      store: consul
    replication_factor: 3
    heartbeat_period: 1s
querier:
  ring:
    kvstore:
      store: consul
    replication_factor: 3
    heartbeat_period: 1s
"
    )
}

fn spawn(role: &str, data_dir: &Path, port: u16, config: &str) -> Child {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let path = data_dir.join("lucia.yaml");
    std::fs::write(&path, config).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_lucia"))
        .arg(role)
        .arg("--config.file")
        .arg(&path)
        .arg("--http.listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data.dir")
        .arg(data_dir)
        .arg("--log.level")
        .arg("warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn lucia")
}

/// The state of `instance` in the distributor's `/ring` page, or None when
/// it is not in the ring.
async fn ring_state(distributor: &str, instance: &str) -> Option<String> {
    let body: serde_json::Value = lucia_common::http_client::client()
        .get(format!("http://{distributor}/ring"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    fn find(value: &serde_json::Value, instance: &str) -> Option<String> {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("id").and_then(|v| v.as_str()) == Some(instance) {
                    return map
                        .get("state")
                        .and_then(|v| v.as_str())
                        .map(str::to_string);
                }
                map.values().find_map(|v| find(v, instance))
            }
            serde_json::Value::Array(items) => items.iter().find_map(|v| find(v, instance)),
            _ => None,
        }
    }
    find(&body, instance)
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_writes_survive_an_ingester_loss() {
    let consul = FakeConsul::start().await;
    let consul_addr = consul.address();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");

    let mut ingesters: Vec<Lucia> = Vec::new();
    for i in 1..=3 {
        let port = free_port();
        let child = spawn(
            "ingester",
            &dir.path().join(format!("ingester-{i}")),
            port,
            &config(&consul_addr, &format!("ingester-{i}"), &store),
        );
        ingesters.push(Lucia::adopt(child, port).await);
    }
    let distributor_port = free_port();
    let distributor = Lucia::adopt(
        spawn(
            "distributor",
            &dir.path().join("distributor"),
            distributor_port,
            &config(&consul_addr, "distributor", &store),
        ),
        distributor_port,
    )
    .await;
    let dist = distributor.addr.clone();
    let querier_port = free_port();
    let querier = Lucia::adopt(
        spawn(
            "querier",
            &dir.path().join("querier"),
            querier_port,
            &config(&consul_addr, "querier", &store),
        ),
        querier_port,
    )
    .await;
    for i in 1..=3 {
        let instance = format!("ingester-{i}");
        wait_for(
            &format!("{instance} ACTIVE in the ring"),
            Duration::from_secs(60),
            async || ring_state(&dist, &instance).await.as_deref() == Some("ACTIVE"),
        )
        .await;
    }

    // Push in the background while one ingester dies.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(i64, String)>::new()));
    let pusher = {
        let (stop, acked, url) = (
            stop.clone(),
            acked.clone(),
            format!("http://{dist}/loki/api/v1/push"),
        );
        tokio::spawn(async move {
            let client = lucia_common::http_client::client();
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or_default();
            let mut seq = 0i64;
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let entries: Vec<(i64, String)> = (0..50)
                    .map(|i| (base + (seq + i) * 1000, format!("seq={}", seq + i)))
                    .collect();
                seq += 50;
                let streams = vec![(
                    format!("{{job=\"cluster\", shard=\"{}\"}}", seq % 7),
                    entries.clone(),
                )];
                let resp = client
                    .post(&url)
                    .header("Content-Type", "application/x-protobuf")
                    .body(push_body(streams))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 204 => acked.lock().expect("lock").extend(entries),
                    Ok(r) => failures.push(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(err) => failures.push(err.to_string()),
                }
            }
            failures
        })
    };

    let acked_now = || acked.lock().expect("lock").len();
    wait_for("first pushes", Duration::from_secs(60), async || {
        acked_now() >= 2000
    })
    .await;
    let mut dead = ingesters.pop().expect("three ingesters");
    dead.kill();
    let before_kill = acked_now();
    wait_for(
        "pushes after the kill",
        Duration::from_secs(60),
        async || acked_now() >= before_kill + 2000,
    )
    .await;
    wait_for(
        "ingester-3 UNHEALTHY",
        Duration::from_secs(60),
        async || ring_state(&dist, "ingester-3").await.as_deref() == Some("UNHEALTHY"),
    )
    .await;
    wait_for(
        "ingester-3 gone from the ring",
        Duration::from_secs(60),
        async || ring_state(&dist, "ingester-3").await.is_none(),
    )
    .await;
    let after_gone = acked_now();
    wait_for(
        "pushes once the ring shrank",
        Duration::from_secs(60),
        async || acked_now() >= after_gone + 1000,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let failures = pusher.await.expect("pusher");
    assert!(
        failures.is_empty(),
        "pushes failed: {:?}",
        &failures[..failures.len().min(5)]
    );

    let mut stored: HashSet<(i64, String)> = HashSet::new();
    for ingester in &ingesters {
        for (_, ts, line) in ingester.query_all(r#"{job="cluster"}"#).await {
            stored.insert((ts, line));
        }
    }
    let acked: Vec<(i64, String)> = std::mem::take(&mut *acked.lock().expect("lock"));
    let lost: Vec<_> = acked
        .iter()
        .filter(|e| !stored.contains(*e))
        .take(5)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged lines lost: {lost:?} (of {})",
        acked.len()
    );

    // The querier, with one of three replicas gone, sees each stored line
    // once although two ingesters hold it.
    let counted = count_via_querier(&querier.addr, r#"{job="cluster"}"#).await;
    assert_eq!(
        counted,
        stored.len() as u64,
        "the querier deduplicates replicas"
    );
    assert!(counted >= acked.len() as u64);
}
