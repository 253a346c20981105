//! Acknowledged pushes survive SIGKILL: 1,000,000 lines over 1,000 streams,
//! the process killed in the middle, every acknowledged line there exactly
//! once after the restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::join_all;

use crate::harness::{Lucia, count_via_querier, free_port, push_body};

const CONFIG: &str = "
limits_config:
  ingestion_rate_mb: 100000
  ingestion_burst_size_mb: 100000
  max_global_streams_per_user: 100000
";

/// Acknowledged lines: (stream, timestamp, line).
type Acked = std::sync::Mutex<Vec<(usize, i64, String)>>;

fn total_lines() -> usize {
    std::env::var("LUCIA_CRASH_TEST_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

const STREAMS: usize = 1000;
const WORKERS: usize = 4;
const STREAMS_PER_PUSH: usize = 10;
const LINES_PER_STREAM_PER_PUSH: usize = 50;

/// Pushes the lines of `worker` (its share of streams, sequence numbers
/// `from_seq..to_seq` per stream) until done or an error; records what was
/// acknowledged. Stops at the first failed push.
async fn push_worker(
    url: String,
    worker: usize,
    resume: Arc<HashMap<usize, usize>>,
    to_seq: usize,
    base_ts: i64,
    acked: Arc<Acked>,
    acked_lines: Arc<AtomicU64>,
) {
    let client = lucia_common::http_client::client();
    let streams: Vec<usize> = (0..STREAMS).filter(|s| s % WORKERS == worker).collect();
    let mut seq = streams
        .iter()
        .map(|s| resume.get(s).copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    while seq < to_seq {
        let end = (seq + LINES_PER_STREAM_PER_PUSH).min(to_seq);
        for group in streams.chunks(STREAMS_PER_PUSH) {
            let mut batch = Vec::new();
            let mut lines = Vec::new();
            for &s in group {
                let from = seq.max(resume.get(&s).copied().unwrap_or(0));
                if from >= end {
                    continue;
                }
                let entries: Vec<(i64, String)> = (from..end)
                    .map(|i| {
                        let ts = base_ts + i as i64 * 1_000_000;
                        (ts, format!("level=info stream={s} seq={i} msg=\"crash test line\" pad=abcdefghijklmnopqrstuvwxyz"))
                    })
                    .collect();
                lines.extend(entries.iter().map(|(ts, line)| (s, *ts, line.clone())));
                batch.push((format!("{{job=\"crash\", stream=\"{s}\"}}"), entries));
            }
            if batch.is_empty() {
                continue;
            }
            let result = client
                .post(&url)
                .header("Content-Type", "application/x-protobuf")
                .body(push_body(batch))
                .send()
                .await;
            match result {
                Ok(resp) if resp.status() == 204 => {
                    acked_lines.fetch_add(lines.len() as u64, Ordering::Relaxed);
                    acked.lock().expect("acked lock").extend(lines);
                }
                Ok(resp) => panic!("push answered {}: {:?}", resp.status(), resp.text().await),
                Err(_) => return, // the process is gone
            }
        }
        seq = end;
    }
}

async fn push_range(
    lucia: &Lucia,
    resume: HashMap<usize, usize>,
    to_seq: usize,
    base_ts: i64,
    acked: Arc<Acked>,
    kill_after: Option<u64>,
) -> u64 {
    let resume = Arc::new(resume);
    let url = format!("http://{}/loki/api/v1/push", lucia.addr);
    let acked_lines = Arc::new(AtomicU64::new(0));
    let workers = (0..WORKERS).map(|w| {
        tokio::spawn(push_worker(
            url.clone(),
            w,
            resume.clone(),
            to_seq,
            base_ts,
            acked.clone(),
            acked_lines.clone(),
        ))
    });
    let handles: Vec<_> = workers.collect();
    if let Some(threshold) = kill_after {
        // Watch progress and return once the threshold is passed; the caller kills.
        loop {
            if acked_lines.load(Ordering::Relaxed) >= threshold
                || handles.iter().all(|h| h.is_finished())
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for h in &handles {
            h.abort();
        }
    }
    for r in join_all(handles).await {
        if let Err(err) = r
            && err.is_panic()
        {
            std::panic::resume_unwind(err.into_panic());
        }
    }
    acked_lines.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_lines_survive_sigkill_exactly_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let per_stream = total_lines() / STREAMS;
    let base_ts = lucia_now_nanos() - 3_600_000_000_000 / 2;
    let acked: Arc<Acked> = Arc::default();

    let mut lucia = Lucia::start(data.path(), port, CONFIG).await;
    let half = (total_lines() / 2) as u64;
    // Push everything but kill once half is acknowledged: pushes in flight
    // at the kill may or may not be kept, acknowledged ones must be.
    let pushed = push_range(
        &lucia,
        HashMap::new(),
        per_stream,
        base_ts,
        acked.clone(),
        Some(half),
    )
    .await;
    lucia.kill();
    assert!(
        pushed >= half,
        "only {pushed} lines acknowledged before the kill"
    );

    // Restart and push the rest of every stream, from the first line that
    // was not acknowledged: lines in flight at the kill are sent again and
    // must not be stored twice.
    let mut lucia = Lucia::start(data.path(), port, CONFIG).await;
    let acked_before_kill = acked.lock().expect("lock").len();
    let resume_from: HashMap<usize, usize> = {
        let mut max_seq = HashMap::new();
        for (s, ts, _) in acked.lock().expect("lock").iter() {
            let seq = ((ts - base_ts) / 1_000_000) as usize + 1;
            let e = max_seq.entry(*s).or_insert(0);
            *e = (*e).max(seq);
        }
        max_seq
    };
    push_range(
        &lucia,
        resume_from,
        per_stream,
        base_ts,
        acked.clone(),
        None,
    )
    .await;

    let got = lucia.query_all(r#"{job="crash"}"#).await;
    let mut seen: HashMap<(i64, String), usize> = HashMap::with_capacity(got.len());
    for (_, ts, line) in got {
        *seen.entry((ts, line)).or_default() += 1;
    }
    let duplicates = seen.values().filter(|&&n| n > 1).count();
    assert_eq!(duplicates, 0, "{duplicates} lines stored more than once");
    let acked: Vec<(usize, i64, String)> = std::mem::take(&mut *acked.lock().expect("lock"));
    let missing: Vec<_> = acked
        .iter()
        .filter(|(_, ts, line)| !seen.contains_key(&(*ts, line.clone())))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged lines lost after SIGKILL (first 5): {missing:?}"
    );
    assert_eq!(
        acked.len(),
        STREAMS * per_stream,
        "every line acknowledged once in the end"
    );
    eprintln!(
        "acknowledged before kill: {acked_before_kill}, acknowledged in all: {}, stored: {}",
        acked.len(),
        seen.len()
    );

    // The querier sees every line once while it is in the ingester (WAL
    // replayed)...
    let expected = (STREAMS * per_stream) as u64;
    assert_eq!(
        count_via_querier(&lucia.addr, r#"{job="crash"}"#).await,
        expected
    );
    // ...and once flushed to the store after a clean stop.
    lucia.terminate();
    let lucia = Lucia::start(data.path(), port, CONFIG).await;
    assert!(
        lucia.query_all(r#"{job="crash"}"#).await.is_empty(),
        "the ingester flushed everything on shutdown"
    );
    assert_eq!(
        count_via_querier(&lucia.addr, r#"{job="crash"}"#).await,
        expected
    );
}

fn lucia_now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}
