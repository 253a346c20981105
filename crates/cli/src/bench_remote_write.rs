//! `lucia bench remote-write`: the same remote-write workload into Lucia or
//! Prometheus (`--web.enable-remote-write-receiver`), sent as fast as the
//! server accepts it.
//!
//! The data looks like node-exporter and application metrics: a quarter of
//! the series are counters with integer increments, a quarter integer
//! gauges that change now and then, a quarter float gauges (random walks
//! with two decimals), a quarter constant. Timestamps advance in steps of
//! `--interval` from `--start` (default: `--duration` before now, so both
//! servers take it as recent data); each request holds `--samples-per-series`
//! consecutive samples of `--series-per-request` series, and requests go out
//! in time order across all series (Prometheus refuses samples more than an
//! hour older than its newest).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use lucia_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message as _;

#[derive(Args, Clone)]
pub struct RemoteWriteBenchArgs {
    /// Remote-write endpoint
    #[arg(long, default_value = "http://127.0.0.1:9090/api/v1/write")]
    url: String,
    /// Number of series
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Time covered, from the start (e.g. 2h)
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    duration: Duration,
    /// Time between samples of a series
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    interval: Duration,
    /// First timestamp in Unix ms [default: now minus --duration]
    #[arg(long)]
    start: Option<i64>,
    /// Series per request
    #[arg(long, default_value_t = 500)]
    series_per_request: usize,
    /// Consecutive samples of each series per request
    #[arg(long, default_value_t = 4)]
    samples_per_series: usize,
    /// Concurrent requests in flight
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    lucia_common::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// A small deterministic generator (splitmix64) per (series, step).
fn noise(series: usize, step: usize) -> u64 {
    let mut z = (series as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((step as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The state of one series as samples are generated in time order.
#[derive(Clone, Copy)]
struct SeriesState {
    value: f64,
}

fn next_value(series: usize, step: usize, state: &mut SeriesState) -> f64 {
    let r = noise(series, step);
    match series % 4 {
        // Counter: integer increments of 0..200.
        0 => state.value += (r % 200) as f64,
        // Integer gauge: changes by ±1 one time in eight.
        1 if r.is_multiple_of(8) => state.value += if r & 256 == 0 { 1.0 } else { -1.0 },
        // Float gauge: random walk with two decimals.
        2 => {
            let delta = ((r % 201) as f64 - 100.0) / 100.0;
            state.value = ((state.value + delta) * 100.0).round() / 100.0;
        }
        // Constant.
        _ => {}
    }
    state.value
}

fn labels_of(series: usize) -> Vec<Label> {
    let metric = series % 250;
    let instance = series / 250;
    let kind = [
        "requests_total",
        "queue_length",
        "temperature_celsius",
        "info",
    ][series % 4];
    let label = |name: &str, value: String| Label {
        name: name.into(),
        value,
    };
    vec![
        label("__name__", format!("bench_{kind}_{metric}")),
        label("instance", format!("host-{instance}:9100")),
        label("job", "bench".into()),
        label("region", format!("region-{}", instance % 8)),
    ]
}

/// Posts `body` until the server takes it: 5xx and 429 are retried with
/// a growing pause, other errors end the run.
pub async fn post_until_accepted(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut req = client.post(url).body(body.clone());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_server_error() || status == 429,
            "{status}: {text}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

pub async fn remote_write(args: RemoteWriteBenchArgs) -> anyhow::Result<()> {
    let interval_ms = args.interval.as_millis() as i64;
    anyhow::ensure!(interval_ms > 0, "--interval must be positive");
    let steps = (args.duration.as_millis() as i64 / interval_ms) as usize;
    let start = args.start.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now - args.duration.as_millis() as i64
    });
    let labels: Arc<Vec<Vec<Label>>> = Arc::new((0..args.series).map(labels_of).collect());
    let states: Vec<SeriesState> = (0..args.series)
        .map(|s| SeriesState {
            value: match s % 4 {
                0 => 0.0,
                1 => (s % 50) as f64,
                2 => 40.0 + (s % 30) as f64,
                _ => 1.0,
            },
        })
        .collect();
    let client = lucia_common::http_client::client();
    let sent_samples = Arc::new(AtomicU64::new(0));
    // Like Prometheus' shards: a series always goes through the same
    // worker, so its samples arrive in order.
    let began = Instant::now();
    let mut workers = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        senders.push(tx);
        let client = client.clone();
        let url = args.url.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let Some(body) = rx.recv().await else {
                    return Ok::<_, anyhow::Error>(());
                };
                post_until_accepted(
                    &client,
                    &url,
                    &[
                        ("Content-Encoding", "snappy"),
                        ("Content-Type", "application/x-protobuf"),
                        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                    ],
                    body,
                )
                .await?;
            }
        }));
    }
    // Generate in time order; encode on this task while workers send.
    let mut states = states;
    let mut total = 0u64;
    let mut step = 0;
    while step < steps {
        let upto = (step + args.samples_per_series).min(steps);
        for (group, first) in (0..args.series)
            .step_by(args.series_per_request.max(1))
            .enumerate()
        {
            let last = (first + args.series_per_request).min(args.series);
            let mut timeseries = Vec::with_capacity(last - first);
            for s in first..last {
                let samples: Vec<Sample> = (step..upto)
                    .map(|i| Sample {
                        value: next_value(s, i, &mut states[s]),
                        timestamp: start + i as i64 * interval_ms,
                    })
                    .collect();
                total += samples.len() as u64;
                timeseries.push(TimeSeries {
                    labels: labels[s].clone(),
                    samples,
                    exemplars: vec![],
                });
            }
            let req = WriteRequest {
                timeseries,
                metadata: vec![],
            };
            let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())?;
            if senders[group % senders.len()].send(body).await.is_err() {
                break;
            }
        }
        step = upto;
        sent_samples.store(total, Ordering::Relaxed);
    }
    drop(senders);
    for w in workers {
        w.await??;
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "sent {total} samples of {} series in {secs:.1} s: {:.0} samples/s",
        args.series,
        total as f64 / secs
    );
    Ok(())
}
