//! A real Prometheus (Debian's 2.42) scrapes itself and remote-writes to
//! `lucia all`: once its queue is drained, every sample it sent is in Lucia,
//! read back through Lucia's PromQL API and compared with Prometheus' own
//! answer to the same query.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Lucia, free_port, installed, prom_query};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn metric(client: &reqwest::Client, addr: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        sum = Some(sum.unwrap_or(0.0) + v);
    }
    sum
}

type Samples = BTreeMap<String, Vec<(String, String)>>;

/// `query` at `time` as label set → [(t, v)] from a matrix result.
async fn matrix(client: &reqwest::Client, addr: &str, query: &str, time: f64) -> Samples {
    let body = prom_query(client, addr, query, Some(time)).await;
    assert_eq!(body["status"], "success", "{body}");
    let mut out = Samples::new();
    for s in body["data"]["result"].as_array().expect("matrix") {
        let key = s["metric"].to_string();
        let values = s["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|p| (p[0].to_string(), p[1].to_string()))
            .collect();
        out.insert(key, values);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_is_stored_completely() {
    if !installed("prometheus") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lucia_port = free_port();
    let lucia = Lucia::start(dir.path(), lucia_port, "tsdb:\n  wal_fsync: never\n").await;
    let prom_port = free_port();
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['{prom_addr}']\n  - job_name: lucia-by-prometheus\n    static_configs:\n      - targets: ['{}']\nremote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 500ms\n      max_samples_per_send: 300\n",
        lucia.addr, lucia.addr
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write prometheus config");
    let _prom = Child(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("prom").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let client = lucia_common::http_client::client();
    // Let it scrape and send for a while: at least 5,000 samples sent.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            Instant::now() < deadline,
            "prometheus did not send 5000 samples in 180 s"
        );
        if metric(
            &client,
            &prom_addr,
            "prometheus_remote_storage_samples_total",
        )
        .await
        .is_some_and(|n| n >= 5000.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Everything up to the highest sent timestamp, once nothing is pending.
    let highest = loop {
        assert!(
            Instant::now() < deadline,
            "prometheus' remote-write queue did not drain"
        );
        let pending = metric(
            &client,
            &prom_addr,
            "prometheus_remote_storage_samples_pending",
        )
        .await;
        let sent = metric(
            &client,
            &prom_addr,
            "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
        )
        .await;
        if pending == Some(0.0)
            && let Some(sent) = sent
        {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        metric(
            &client,
            &prom_addr,
            "prometheus_remote_storage_samples_failed_total"
        )
        .await,
        Some(0.0)
    );
    let query = "{__name__=~\".+\"}[10m]";
    let from_prometheus = matrix(&client, &prom_addr, query, highest).await;
    let from_lucia = matrix(&client, &lucia.addr, query, highest).await;
    assert!(
        from_prometheus.len() > 100,
        "{} series",
        from_prometheus.len()
    );
    let mut compared = 0;
    for (series, want) in &from_prometheus {
        let got = from_lucia
            .get(series)
            .unwrap_or_else(|| panic!("series {series} missing in lucia"));
        assert_eq!(got, want, "series {series}");
        compared += want.len();
    }
    // Nothing else arrived, apart from Lucia's own scrape of itself.
    for series in from_lucia.keys() {
        assert!(
            from_prometheus.contains_key(series) || series.contains("\"job\":\"lucia\""),
            "unexpected series {series}"
        );
    }
    // Fewer than were sent: range selectors leave out staleness markers.
    assert!(compared >= 3000, "{compared} samples compared");
}

/// `lucia all` without scrape configs scrapes itself; `lucia tsdb` takes a
/// Prometheus configuration file (with sections it does not use) and its
/// flag names, and scrapes what it lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lucia_scrapes_itself_and_reads_prometheus_config_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let lucia = Lucia::start(dir.path(), port, "tsdb:\n  wal_fsync: never\n").await;
    let client = lucia_common::http_client::client();
    let up = |addr: String, query: &'static str| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "{query} did not become 1 at {addr}"
                );
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let body = prom_query(&client, &addr, query, Some(now)).await;
                if body["data"]["result"][0]["value"][1] == "1" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    up(lucia.addr.clone(), "up{job=\"lucia\"}").await;

    let tsdb_port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  external_labels:\n    site: test\nrule_files: [rules.yml]\nalerting:\n  alertmanagers: []\nremote_write: []\nstorage:\n  tsdb:\n    out_of_order_time_window: 10m\nscrape_configs:\n  - job_name: other\n    static_configs:\n      - targets: ['{}']\n",
        lucia.addr
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_lucia"))
        .arg("tsdb")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb2").display()
        ))
        .arg("--storage.tsdb.retention.time=1d")
        .arg(format!("--web.listen-address=127.0.0.1:{tsdb_port}"))
        .arg(format!("--data.dir={}", dir.path().join("data2").display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("start lucia tsdb");
    let tsdb = Lucia::adopt(child, tsdb_port).await;
    up(tsdb.addr.clone(), "up{job=\"other\"}").await;
    assert!(dir.path().join("tsdb2").join("wal").is_dir());
}
