use super::*;
use crate::promql::{MatchOp, is_stale_nan, stale_nan};

const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % 7_200_000;

pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn m(name: &str, op: MatchOp, value: &str) -> LabelMatcher {
    LabelMatcher::new(name, op, value).unwrap()
}

fn open(dir: &Path) -> Arc<Storage> {
    let mut opts = StorageOptions::new(dir);
    opts.fsync = FsyncPolicy::Never;
    Storage::open(opts, StorageMetrics::default()).unwrap()
}

fn series(name: &str, job: &str, samples: Vec<(i64, f64)>) -> SeriesSamples {
    SeriesSamples {
        labels: labels(&[("__name__", name), ("job", job)]),
        samples,
    }
}

fn read(s: &Arc<Storage>, tenant: &str, matchers: &[LabelMatcher]) -> Vec<RawSeries> {
    let mut v = s
        .tenant(tenant)
        .select(matchers, i64::MIN, i64::MAX)
        .unwrap();
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    v
}

#[tokio::test]
async fn appends_are_read_back_through_head_chunks_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // 3 hours of 15 s samples: several cut chunks and one block boundary.
    let samples: Vec<(i64, f64)> = (0..720).map(|i| (T0 + i * 15_000, i as f64)).collect();
    let mut with_stale = samples.clone();
    with_stale.push((T0 + 720 * 15_000, stale_nan()));
    let r = s
        .append_batch(
            "t",
            vec![
                series("up", "a", with_stale.clone()),
                series("up", "b", samples.clone()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.appended, 1441);
    assert_eq!(r.series_created, 2);
    let got = read(&s, "t", &[m("job", MatchOp::Equal, "a")]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples.len(), 721);
    assert!(is_stale_nan(got[0].samples[720].1));

    // Compact the first block: the reads are the same, older samples are
    // refused from then on.
    s.compact_before(T0 + 7_200_000).unwrap();
    let again = read(&s, "t", &[m("job", MatchOp::Equal, "a")]);
    assert_eq!(again[0].samples.len(), 721);
    assert_eq!(again[0].samples[..720], got[0].samples[..720]);
    let late = s
        .append_batch("t", vec![series("up", "a", vec![(T0 + 1, 1.0)])])
        .await
        .unwrap();
    assert_eq!(late.rejected, 1);
    assert!(late.first_rejection.unwrap().contains("out of bounds"));
    // Other tenants see nothing.
    assert!(read(&s, "other", &[m("__name__", MatchOp::Equal, "up")]).is_empty());
}

#[tokio::test]
async fn matchers_select_like_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut batch = vec![];
    for (job, inst) in [("api", "1"), ("api", "2"), ("db", "1")] {
        batch.push(SeriesSamples {
            labels: labels(&[("__name__", "up"), ("job", job), ("instance", inst)]),
            samples: vec![(T0, 1.0)],
        });
    }
    batch.push(SeriesSamples {
        labels: labels(&[("__name__", "other")]),
        samples: vec![(T0, 1.0)],
    });
    s.append_batch("t", batch).await.unwrap();
    let count = |ms: &[LabelMatcher]| read(&s, "t", ms).len();
    assert_eq!(count(&[m("__name__", MatchOp::Equal, "up")]), 3);
    assert_eq!(count(&[m("job", MatchOp::NotEqual, "api")]), 2);
    assert_eq!(count(&[m("job", MatchOp::Regex, "a.*")]), 2);
    assert_eq!(count(&[m("job", MatchOp::NotRegex, "a.*|d.*")]), 1);
    assert_eq!(count(&[m("job", MatchOp::Equal, "")]), 1);
    assert_eq!(
        count(&[
            m("__name__", MatchOp::Equal, "up"),
            m("instance", MatchOp::Equal, "1")
        ]),
        2
    );
    let reader = s.tenant("t");
    assert_eq!(
        reader.label_names(&[], i64::MIN, i64::MAX).unwrap(),
        vec!["__name__", "instance", "job"]
    );
    assert_eq!(
        reader.label_values("job", &[], i64::MIN, i64::MAX).unwrap(),
        vec!["api", "db"]
    );
    assert_eq!(
        reader
            .label_values(
                "instance",
                &[m("job", MatchOp::Equal, "db")],
                i64::MIN,
                i64::MAX
            )
            .unwrap(),
        vec!["1"]
    );
}

#[tokio::test]
async fn replay_restores_every_acknowledged_sample_once() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<(i64, f64)> = (0..500)
        .map(|i| (T0 + i * 10_000, i as f64 * 0.5))
        .collect();
    {
        let s = open(dir.path());
        s.append_batch("t", vec![series("m", "a", all[..200].to_vec())])
            .await
            .unwrap();
        s.checkpoint().await.unwrap();
        s.append_batch("t", vec![series("m", "a", all[200..].to_vec())])
            .await
            .unwrap();
        // Dropped without closing, like a crash after the acks.
    }
    let s = open(dir.path());
    let got = read(&s, "t", &[]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples, all);
    // Appends continue the restored series rather than creating another.
    let r = s
        .append_batch("t", vec![series("m", "a", vec![(T0 + 10_000_000, 1.0)])])
        .await
        .unwrap();
    assert_eq!(r.series_created, 0);
    s.close().await.unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(read(&s, "t", &[])[0].samples.len(), 501);
}

#[tokio::test]
async fn head_holds_cut_chunks_across_restart_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    // 3 hours of 15 s samples: cut chunks on both sides of a block boundary.
    let all: Vec<(i64, f64)> = (0..720).map(|i| (T0 + i * 15_000, i as f64)).collect();
    {
        let s = open(dir.path());
        s.append_batch("t", vec![series("m", "a", all.clone())])
            .await
            .unwrap();
        // The cut chunks are now in rocksdb only, not in the WAL.
        s.checkpoint().await.unwrap();
    }
    let s = open(dir.path());
    let windows = [
        (T0, T0 + 10_800_000),
        (T0 + 7_000_000, T0 + 7_400_000),
        (T0 + 9_000_000, T0 + 9_100_000),
    ];
    let check = |s: &Arc<Storage>| {
        for (from, to) in windows {
            let got = s.tenant("t").select(&[], from, to).unwrap();
            let want: Vec<_> = all
                .iter()
                .copied()
                .filter(|x| x.0 >= from && x.0 <= to)
                .collect();
            assert_eq!(got.len(), 1, "window {from}..{to}");
            assert_eq!(got[0].samples, want, "window {from}..{to}");
        }
    };
    check(&s);
    s.compact_before(T0 + 7_200_000).unwrap();
    check(&s);
    // A retry of a sample in a cut (not open) chunk is accepted silently;
    // another value at its timestamp is a duplicate.
    let r = s
        .append_batch("t", vec![series("m", "a", vec![all[500]])])
        .await
        .unwrap();
    assert_eq!((r.appended, r.rejected), (0, 0));
    let r = s
        .append_batch("t", vec![series("m", "a", vec![(all[500].0, -1.0)])])
        .await
        .unwrap();
    assert_eq!(r.rejected, 1);
    assert!(r.first_rejection.unwrap().contains("duplicate"));
}

#[tokio::test]
async fn out_of_order_window_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StorageOptions::new(dir.path());
    opts.fsync = FsyncPolicy::Never;
    opts.out_of_order_window = Duration::from_secs(600);
    let s = Storage::open(opts, StorageMetrics::default()).unwrap();
    s.append_batch("t", vec![series("m", "a", vec![(T0 + 1_000_000, 1.0)])])
        .await
        .unwrap();
    let r = s
        .append_batch(
            "t",
            vec![series(
                "m",
                "a",
                vec![
                    (T0 + 900_000, 2.0),
                    (T0 + 1_000_000, 1.0),
                    (T0 + 100_000, 3.0),
                ],
            )],
        )
        .await
        .unwrap();
    // Within the window, an exact duplicate (ignored), beyond the window.
    assert_eq!((r.appended, r.rejected), (1, 1));
    assert!(r.first_rejection.unwrap().contains("out of order"));
    let r = s
        .append_batch("t", vec![series("m", "a", vec![(T0 + 1_000_000, 5.0)])])
        .await
        .unwrap();
    assert_eq!(r.rejected, 1);
    let got = read(&s, "t", &[]);
    assert_eq!(
        got[0].samples,
        vec![(T0 + 900_000, 2.0), (T0 + 1_000_000, 1.0)]
    );
}

#[tokio::test]
async fn invalid_labels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for bad in [
        labels(&[]),
        labels(&[("__name__", "up"), ("bad-name", "x")]),
        labels(&[("__name__", "1up")]),
        labels(&[("__name__", "up"), ("a", "nul\0")]),
    ] {
        let err = s
            .append_batch(
                "t",
                vec![SeriesSamples {
                    labels: bad.clone(),
                    samples: vec![(T0, 1.0)],
                }],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::Invalid(_)), "{bad:?}: {err}");
    }
}

#[tokio::test]
async fn retention_deletes_old_chunks_and_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StorageOptions::new(dir.path());
    opts.fsync = FsyncPolicy::Never;
    opts.retention_time = Duration::from_secs(6 * 3600);
    let s = Storage::open(opts, StorageMetrics::default()).unwrap();
    s.append_batch(
        "t",
        vec![series("old", "a", vec![(T0, 1.0), (T0 + 60_000, 2.0)])],
    )
    .await
    .unwrap();
    let day: Vec<(i64, f64)> = (0..24 * 60).map(|i| (T0 + i * 60_000, 1.0)).collect();
    s.append_batch("t", vec![series("new", "a", day)])
        .await
        .unwrap();
    s.maintain(true).await.unwrap();
    assert!(read(&s, "t", &[m("__name__", MatchOp::Equal, "old")]).is_empty());
    let kept = read(&s, "t", &[m("__name__", MatchOp::Equal, "new")]);
    let first = kept[0].samples[0].0;
    assert!(first >= T0 + 16 * 3_600_000, "{first}");
    assert_eq!(
        s.tenant("t")
            .label_values("__name__", &[], i64::MIN, i64::MAX)
            .unwrap(),
        vec!["new"]
    );
}
