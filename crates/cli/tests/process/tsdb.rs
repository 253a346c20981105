//! Remote write survives SIGKILL: samples pushed by 4 concurrent writers,
//! the process killed while they push, restarted, the writers resume from
//! what was acknowledged; afterwards the storage holds every sample exactly
//! once with its value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lucia_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use lucia_tsdb::promql::SeriesSource as _;
use prost::Message as _;

use crate::harness::{Lucia, free_port, prom_query};

const SERIES: usize = 1000;
const WRITERS: usize = 4;
const SERIES_PER_REQUEST: usize = 50;
const SAMPLES_PER_REQUEST: usize = 20;
/// Samples per series in the whole test.
const TOTAL_PER_SERIES: usize = 400;
const STEP_MS: i64 = 15_000;
const CONFIG: &str = "tsdb:\n  wal_fsync: always\n";

fn value(series: usize, i: usize) -> f64 {
    (series * 1000 + i) as f64 * 0.25
}

fn body(series: &[usize], from: usize, to: usize, base: i64) -> Vec<u8> {
    let req = WriteRequest {
        timeseries: series
            .iter()
            .map(|&s| TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "crash_test_metric".into(),
                    },
                    Label {
                        name: "series".into(),
                        value: s.to_string(),
                    },
                ],
                samples: (from..to)
                    .map(|i| Sample {
                        value: value(s, i),
                        timestamp: base + i as i64 * STEP_MS,
                    })
                    .collect(),
                exemplars: vec![],
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

/// Pushes writer `w`'s series from `from` to `TOTAL_PER_SERIES` samples;
/// returns the number of samples per series acknowledged, stopping at the
/// first failure (the process is gone).
async fn writer(url: String, w: usize, from: usize, base: i64, acked: Arc<AtomicU64>) -> usize {
    let client = lucia_common::http_client::client();
    let mine: Vec<usize> = (0..SERIES).filter(|s| s % WRITERS == w).collect();
    let mut done = from;
    while done < TOTAL_PER_SERIES {
        let to = (done + SAMPLES_PER_REQUEST).min(TOTAL_PER_SERIES);
        // A round is acknowledged once every group of it is.
        for group in mine.chunks(SERIES_PER_REQUEST) {
            let sent = client
                .post(&url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body(group, done, to, base))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 204 => {
                    acked.fetch_add((group.len() * (to - done)) as u64, Ordering::Relaxed);
                }
                Ok(r) => panic!("remote write answered {}: {:?}", r.status(), r.text().await),
                Err(_) => return done,
            }
        }
        done = to;
    }
    done
}

/// Runs the writers from `from` (samples per series done, per writer);
/// with `kill_at`, SIGKILLs the process once that many samples are
/// acknowledged. Returns where each writer got to.
async fn push_all(
    lucia: &mut Lucia,
    from: &[usize],
    base: i64,
    kill_at: Option<u64>,
) -> Vec<usize> {
    let url = format!("http://{}/api/v1/write", lucia.addr);
    let acked = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(url.clone(), w, from[w], base, acked.clone())))
        .collect();
    if let Some(threshold) = kill_at {
        while acked.load(Ordering::Relaxed) < threshold && !handles.iter().all(|h| h.is_finished())
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        lucia.kill();
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("writer task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_remote_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = 1_700_000_000_000;
    let mut lucia = Lucia::start(dir.path(), port, CONFIG).await;
    // Kill while the writers are mid-way (about 40% acknowledged).
    let threshold = (SERIES * TOTAL_PER_SERIES * 2 / 5) as u64;
    let resume = push_all(&mut lucia, &[0; WRITERS], base, Some(threshold)).await;
    assert!(resume.iter().all(|&d| d < TOTAL_PER_SERIES), "{resume:?}");

    // Restart; every writer resends its round that was in flight (stored
    // or not: identical samples must not be doubled nor refused) and pushes
    // to the end.
    let mut lucia = Lucia::start(dir.path(), port, CONFIG).await;
    let done = push_all(&mut lucia, &resume, base, None).await;
    assert!(done.iter().all(|&d| d == TOTAL_PER_SERIES), "{done:?}");
    lucia.terminate();

    // Read the storage directly.
    let mut opts = lucia_tsdb::storage::StorageOptions::new(dir.path().join("tsdb"));
    opts.fsync = lucia_common::wal::FsyncPolicy::Never;
    let storage =
        lucia_tsdb::storage::Storage::open(opts, Default::default()).expect("open storage");
    let got = storage
        .tenant("fake")
        .select(&[], i64::MIN, i64::MAX)
        .expect("select");
    let mut by_series = BTreeMap::new();
    for s in got {
        // `lucia all` also scrapes itself (when depends on the port's
        // place in the interval): only the test's own series count.
        if s.labels.get("__name__").map(String::as_str) != Some("crash_test_metric") {
            continue;
        }
        let idx: usize = s.labels["series"].parse().expect("series label");
        by_series.insert(idx, s.samples);
    }
    assert_eq!(by_series.len(), SERIES);
    for (s, samples) in by_series {
        let want: Vec<(i64, f64)> = (0..TOTAL_PER_SERIES)
            .map(|i| (base + i as i64 * STEP_MS, value(s, i)))
            .collect();
        assert_eq!(samples, want, "series {s}");
    }
}

fn start_tsdb(dir: &std::path::Path, name: &str, port: u16, peer_port: u16) -> std::process::Child {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!("tsdb:\n  wal_fsync: never\n  peers: ['http://127.0.0.1:{peer_port}']\n"),
    )
    .expect("write config");
    std::process::Command::new(env!("CARGO_BIN_EXE_lucia"))
        .arg("tsdb")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--data.dir={}", dir.join(name).display()))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start lucia tsdb")
}

/// Two tsdb members, each holding part of the data (one series only on
/// each, one series split in time between them): a query on either answers
/// over the union, as one node holding everything would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_fan_out_over_tsdb_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pa, pb) = (free_port(), free_port());
    let a = Lucia::adopt(start_tsdb(dir.path(), "a", pa, pb), pa).await;
    let b = Lucia::adopt(start_tsdb(dir.path(), "b", pb, pa), pb).await;
    let client = lucia_common::http_client::client();
    let base = 1_700_000_000_000i64;
    let push = |addr: String, series: Vec<usize>, from: usize, to: usize| {
        let client = client.clone();
        async move {
            let r = client
                .post(format!("http://{addr}/api/v1/write"))
                .header("Content-Encoding", "snappy")
                .body(body(&series, from, to, base))
                .send()
                .await
                .expect("push");
            assert_eq!(r.status(), 204);
        }
    };
    push(a.addr.clone(), vec![1], 0, 10).await;
    push(b.addr.clone(), vec![2], 0, 10).await;
    push(a.addr.clone(), vec![3], 0, 5).await;
    push(b.addr.clone(), vec![3], 5, 10).await;
    let t = (base + 9 * STEP_MS) as f64 / 1000.0;
    for member in [&a, &b] {
        let r = prom_query(&client, &member.addr, "count(crash_test_metric)", Some(t)).await;
        assert_eq!(r["data"]["result"][0]["value"][1], "3", "{r}");
        let r = prom_query(
            &client,
            &member.addr,
            "count_over_time(crash_test_metric{series=\"3\"}[10m])",
            Some(t),
        )
        .await;
        assert_eq!(r["data"]["result"][0]["value"][1], "10", "{r}");
        let r = prom_query(&client, &member.addr, "sum(crash_test_metric)", Some(t)).await;
        let want: f64 = [1, 2, 3].iter().map(|&s| value(s, 9)).sum();
        assert_eq!(r["data"]["result"][0]["value"][1], want.to_string(), "{r}");
    }
}

/// Bad remote-write input gets 400 with the reason, and loses nothing
/// already accepted (nor the valid series of a partly refused request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_remote_writes_get_400_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let lucia = Lucia::start(dir.path(), port, CONFIG).await;
    let client = lucia_common::http_client::client();
    let url = format!("http://{}/api/v1/write", lucia.addr);
    let base = 1_700_000_000_000i64;
    let post = |body: Vec<u8>| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client
                .post(&url)
                .header("Content-Encoding", "snappy")
                .body(body)
                .send()
                .await
                .expect("post");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(post(body(&[1], 0, 10, base)).await.0, 204);

    let snappy = |req: &WriteRequest| {
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .expect("snappy")
    };
    let series = |labels: &[(&str, &str)], t: i64, v: f64| TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: vec![Sample {
            value: v,
            timestamp: t,
        }],
        exemplars: vec![],
    };
    // A 20-byte snappy header claiming 100 MB of content.
    let mut huge_claim = Vec::new();
    let mut n: u64 = 100 << 20;
    while n >= 0x80 {
        huge_claim.push((n as u8) | 0x80);
        n >>= 7;
    }
    huge_claim.push(n as u8);
    huge_claim.extend_from_slice(&[0; 16]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"plain text, not snappy".to_vec(), "snappy"),
        (
            snap::raw::Encoder::new()
                .compress_vec(&[0xff; 64])
                .expect("snappy"),
            "protobuf",
        ),
        (
            snappy(&WriteRequest {
                timeseries: vec![series(&[("__name__", "m"), ("bad-name", "x")], base, 1.0)],
                metadata: vec![],
            }),
            "invalid label name",
        ),
        (
            snappy(&WriteRequest {
                timeseries: vec![series(&[("__name__", "1m")], base, 1.0)],
                metadata: vec![],
            }),
            "invalid metric name",
        ),
        (huge_claim, "larger than the limit"),
        (vec![0u8; (32 << 20) + 10], "larger than the limit"),
    ];
    for (bad, reason) in cases {
        let (status, text) = post(bad).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(reason), "{reason:?} not in {text:?}");
    }
    // Refused samples (another value at a stored timestamp; an older
    // timestamp), alongside a valid new series: 400 with the reasons, the
    // new series kept.
    for (t, reason) in [
        (base + 2 * STEP_MS, "duplicate sample for timestamp"),
        (base + 2 * STEP_MS + 1, "out of order sample"),
    ] {
        let (status, text) = post(snappy(&WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "crash_test_metric"), ("series", "1")],
                    t,
                    -5.0,
                ),
                series(&[("__name__", "other_metric")], base, 7.0),
            ],
            metadata: vec![],
        }))
        .await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(reason), "{reason:?} not in {text:?}");
    }

    let t = (base + 9 * STEP_MS) as f64 / 1000.0;
    let r = prom_query(
        &client,
        &lucia.addr,
        "count_over_time(crash_test_metric[10m])",
        Some(t),
    )
    .await;
    assert_eq!(r["data"]["result"][0]["value"][1], "10", "{r}");
    let r = prom_query(
        &client,
        &lucia.addr,
        "sum_over_time(crash_test_metric[10m])",
        Some(t),
    )
    .await;
    let want: f64 = (0..10).map(|i| value(1, i)).sum();
    assert_eq!(r["data"]["result"][0]["value"][1], want.to_string(), "{r}");
    let r = prom_query(&client, &lucia.addr, "other_metric", Some(t)).await;
    assert_eq!(r["data"]["result"][0]["value"][1], "7", "{r}");
}
