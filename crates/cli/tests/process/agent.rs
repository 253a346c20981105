//! `lucia agent` as a process shipping a growing file into `lucia all`:
//! SIGKILLed mid-stream and restarted, no line is lost, and the only
//! duplicates are one contiguous run (the batch in flight at the kill).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Lucia, free_port};

fn start_agent(config: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lucia"))
        .arg("agent")
        // Promtail's single-dash flag spelling.
        .arg(format!("-config.file={}", config.display()))
        .arg("--server.http-listen-port")
        .arg(port.to_string())
        .arg("--log.level")
        .arg("warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn lucia agent")
}

/// Line numbers stored in Lucia for `{job="agent"}`, with their counts.
async fn stored(lucia: &Lucia) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for (_, _, line) in lucia.query_all(r#"{job="agent"}"#).await {
        if let Some(n) = line.strip_prefix("line ").and_then(|n| n.parse().ok()) {
            *counts.entry(n).or_default() += 1;
        }
    }
    counts
}

async fn wait_for_lines(lucia: &Lucia, n: usize) -> BTreeMap<usize, usize> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = stored(lucia).await;
        if counts.len() >= n || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigkill_loses_no_line() {
    let data = tempfile::tempdir().expect("tempdir");
    let lucia_port = free_port();
    let lucia_dir = data.path().join("lucia");
    std::fs::create_dir_all(&lucia_dir).expect("mkdir");
    let lucia = Lucia::start(&lucia_dir, lucia_port, "").await;

    let logs = data.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let log = logs.join("app.log");
    let config = data.path().join("promtail.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server:
  http_listen_port: 9080
positions:
  filename: {dir}/positions.yaml
target_config:
  sync_period: 200ms
clients:
  - url: http://127.0.0.1:{lucia_port}/loki/api/v1/push
    batchwait: 100ms
    batchsize: 4096
scrape_configs:
  - job_name: app
    static_configs:
      - targets: [localhost]
        labels:
          job: agent
          __path__: {dir}/logs/*.log
"#,
            dir = data.path().display()
        ),
    )
    .expect("write config");

    // A writer appending 20 lines every 20 ms.
    let total = 3000;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("open log");
            for chunk in 0..total / 20 {
                for i in 0..20 {
                    writeln!(f, "line {}", chunk * 20 + i).expect("write");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let agent_port = free_port();
    let mut agent = Lucia::adopt(start_agent(&config, agent_port), agent_port).await;
    let before = wait_for_lines(&lucia, 500).await;
    assert!(before.len() >= 500, "only {} lines shipped", before.len());
    agent.kill();

    // Let the file grow while the agent is down, then restart it.
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .expect("join")
        .expect("writer");
    let mut agent = Lucia::adopt(start_agent(&config, agent_port), agent_port).await;
    let counts = wait_for_lines(&lucia, total).await;
    agent.terminate();

    let missing: Vec<usize> = (0..total).filter(|n| !counts.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost: {missing:?}",
        missing.len()
    );
    let duplicated: Vec<usize> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    eprintln!(
        "{} lines stored before the kill, {} sent twice",
        before.len(),
        duplicated.len()
    );
    if let (Some(first), Some(last)) = (duplicated.first(), duplicated.last()) {
        assert_eq!(
            last - first + 1,
            duplicated.len(),
            "duplicates are not one batch: {duplicated:?}"
        );
        assert!(duplicated.len() <= 1000, "{} duplicates", duplicated.len());
    }
}
