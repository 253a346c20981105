//! `lucia bench alerts`: the same alert workload into Lucia's alert-router
//! or an Alertmanager, through API v2 (`POST /api/v2/alerts`), as fast as
//! the server accepts it.
//!
//! The alerts look like a large Prometheus' firing alerts: `--alertnames`
//! rule names over instances, with job, severity and cluster labels, a
//! summary and a description, a generator URL and an hour-long `endsAt`
//! (as Prometheus sends), so that every alert stays active. Each request
//! holds `--batch` alerts; `--concurrency` requests are in flight. With
//! `--passes 2` the same alerts are posted again (Prometheus re-sends its
//! firing alerts every minute), which measures updates of known alerts.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde_json::{Value, json};

#[derive(Args, Clone)]
pub struct AlertsBenchArgs {
    /// The server's base URL (Lucia or Alertmanager)
    #[arg(long, default_value = "http://127.0.0.1:9093")]
    url: String,
    /// Number of distinct alerts
    #[arg(long, default_value_t = 100_000)]
    alerts: usize,
    /// Distinct alert names (rules); the instances make up the rest
    #[arg(long, default_value_t = 50)]
    alertnames: usize,
    /// Alerts per request
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent requests in flight
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How many times the whole set is posted (later passes update known alerts)
    #[arg(long, default_value_t = 2)]
    passes: usize,
}

fn alert(i: usize, names: usize, starts: &str, ends: &str) -> Value {
    let rule = i % names;
    let instance = i / names;
    json!({
        "labels": {
            "alertname": format!("BenchAlert{rule}"),
            "instance": format!("host-{instance}:9100"),
            "job": "node",
            "severity": if rule.is_multiple_of(5) { "critical" } else { "warning" },
            "cluster": format!("cluster-{}", instance % 10),
        },
        "annotations": {
            "summary": format!("BenchAlert{rule} on host-{instance}:9100"),
            "description": format!("value {} is above the threshold", i % 1000),
        },
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": format!("http://prometheus:9090/graph?g0.expr=bench_{rule}%3E1"),
    })
}

pub async fn alerts(args: AlertsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.alertnames > 0, "--alertnames must be positive");
    let now = chrono::Utc::now();
    let starts = now.to_rfc3339();
    let ends = (now + chrono::Duration::hours(1)).to_rfc3339();
    // Bodies are encoded up front so the load tool's own JSON work does
    // not count against the server.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.alerts)
            .step_by(args.batch.max(1))
            .map(|first| {
                let last = (first + args.batch.max(1)).min(args.alerts);
                let batch: Vec<Value> = (first..last)
                    .map(|i| alert(i, args.alertnames, &starts, &ends))
                    .collect();
                serde_json::to_vec(&batch)
            })
            .collect::<Result<_, _>>()?,
    );
    let client = lucia_common::http_client::client();
    let url = format!("{}/api/v2/alerts", args.url.trim_end_matches('/'));
    for pass in 1..=args.passes.max(1) {
        let began = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..args.concurrency.max(1) {
            let (client, url, bodies, next) =
                (client.clone(), url.clone(), bodies.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    crate::bench_remote_write::post_until_accepted(
                        &client,
                        &url,
                        &[("Content-Type", "application/json")],
                        body.clone(),
                    )
                    .await?;
                }
            }));
        }
        for w in workers {
            w.await??;
        }
        let secs = began.elapsed().as_secs_f64();
        println!(
            "pass {pass}: posted {} alerts in {} requests in {secs:.2} s: {:.0} alerts/s",
            args.alerts,
            bodies.len(),
            args.alerts as f64 / secs
        );
    }
    Ok(())
}
