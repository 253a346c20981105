//! `lucia bench push`: an end-to-end load generator for the push API.
//!
//! Reads log lines from a file (e.g. `../shared/tools/genlogs.py` output),
//! spreads them over `--streams` streams, encodes every push body up front
//! (so the generator spends its CPU on sending, not encoding), then sends
//! them with `--concurrency` connections and reports throughput in MB/s of
//! raw line bytes acknowledged with 204.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use lucia_proto::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
use prost::Message as _;

#[derive(Args, Clone)]
pub struct PushBenchArgs {
    /// Push endpoint
    #[arg(long, default_value = "http://127.0.0.1:3100/loki/api/v1/push")]
    url: String,
    /// File of log lines, one per line
    #[arg(long)]
    input: PathBuf,
    /// Number of distinct streams
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Raw line bytes per push request
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Concurrent requests in flight
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Tenant (X-Scope-OrgID)
    #[arg(long)]
    tenant: Option<String>,
}

struct Body {
    bytes: Vec<u8>,
    raw_bytes: u64,
    lines: u64,
}

pub async fn push(args: PushBenchArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot open {}", args.input.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .context("cannot read input")?;
    anyhow::ensure!(!lines.is_empty(), "input file is empty");
    let streams = args.streams.max(1);
    let labels: Vec<String> = (0..streams)
        .map(|s| {
            format!(
                "{{job=\"bench\", service_name=\"svc-{}\", stream=\"{s}\"}}",
                s % 20
            )
        })
        .collect();
    let base_ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64
        - 600_000_000_000;

    let prepare = Instant::now();
    let mut bodies = Vec::new();
    let mut per_stream: Vec<Vec<EntryAdapter>> = vec![Vec::new(); streams];
    let mut raw = 0u64;
    let mut count = 0u64;
    let mut encoder = snap::raw::Encoder::new();
    for (i, line) in lines.into_iter().enumerate() {
        // One microsecond apart keeps every stream's entries in order.
        let ts = base_ts + i as i64 * 1000;
        raw += line.len() as u64;
        count += 1;
        per_stream[i % streams].push(EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(ts)),
            line,
            structured_metadata: vec![],
        });
        if raw as usize >= args.batch_bytes {
            bodies.push(encode(&mut encoder, &labels, &mut per_stream, raw, count)?);
            raw = 0;
            count = 0;
        }
    }
    if count > 0 {
        bodies.push(encode(&mut encoder, &labels, &mut per_stream, raw, count)?);
    }
    let total_raw: u64 = bodies.iter().map(|b| b.raw_bytes).sum();
    eprintln!(
        "prepared {} requests, {:.1} MB of raw lines, in {:.1}s",
        bodies.len(),
        total_raw as f64 / 1e6,
        prepare.elapsed().as_secs_f64()
    );

    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let ok_bytes = Arc::new(AtomicU64::new(0));
    let ok_lines = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let client = lucia_common::http_client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (bodies, next, ok_bytes, ok_lines, failures, client) = (
            bodies.clone(),
            next.clone(),
            ok_bytes.clone(),
            ok_lines.clone(),
            failures.clone(),
            client.clone(),
        );
        let url = args.url.clone();
        let tenant = args.tenant.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let mut request = client
                    .post(&url)
                    .header("Content-Type", "application/x-protobuf")
                    .body(body.bytes.clone());
                if let Some(tenant) = &tenant {
                    request = request.header("X-Scope-OrgID", tenant);
                }
                match request.send().await {
                    Ok(resp) if resp.status() == 204 => {
                        ok_bytes.fetch_add(body.raw_bytes, Ordering::Relaxed);
                        ok_lines.fetch_add(body.lines, Ordering::Relaxed);
                    }
                    Ok(resp) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            let status = resp.status();
                            eprintln!(
                                "push failed: {status} {}",
                                resp.text().await.unwrap_or_default()
                            );
                        }
                    }
                    Err(err) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("push failed: {err}");
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = ok_bytes.load(Ordering::Relaxed) as f64;
    println!(
        "pushed {} lines, {:.1} MB raw in {:.2}s: {:.1} MB/s, {:.0} lines/s, {} failed requests",
        ok_lines.load(Ordering::Relaxed),
        bytes / 1e6,
        secs,
        bytes / 1e6 / secs,
        ok_lines.load(Ordering::Relaxed) as f64 / secs,
        failures.load(Ordering::Relaxed)
    );
    Ok(())
}

fn encode(
    encoder: &mut snap::raw::Encoder,
    labels: &[String],
    per_stream: &mut [Vec<EntryAdapter>],
    raw_bytes: u64,
    lines: u64,
) -> anyhow::Result<Body> {
    let streams = per_stream
        .iter_mut()
        .enumerate()
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(s, entries)| StreamAdapter {
            labels: labels[s].clone(),
            entries: std::mem::take(entries),
            hash: 0,
        })
        .collect();
    let request = PushRequest { streams };
    Ok(Body {
        bytes: encoder.compress_vec(&request.encode_to_vec())?,
        raw_bytes,
        lines,
    })
}
