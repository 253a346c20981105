//! PromQL engine latency on in-memory data shaped like `lucia bench
//! remote-write`'s (each metric name has 200 series over 25 instances of 8
//! regions; 2 hours of 15 s samples): the dashboard mix of
//! `scripts/bench-promql.sh`, without storage, so that the evaluator's own
//! cost shows. Run: `cargo bench -p lucia-tsdb --bench promql`.

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use lucia_tsdb::promql::{Engine, Labels, MemorySource};

const SERIES_PER_METRIC: usize = 200;
const STEP_MS: i64 = 15_000;
const HOURS: i64 = 2;

fn labels(name: &str, instance: usize, extra: Option<(&str, String)>) -> Labels {
    let mut l = BTreeMap::from([
        ("__name__".to_string(), name.to_string()),
        ("instance".to_string(), format!("host-{instance}:9100")),
        ("job".to_string(), "bench".to_string()),
        ("region".to_string(), format!("region-{}", instance % 8)),
    ]);
    if let Some((k, v)) = extra {
        l.insert(k.to_string(), v);
    }
    l
}

fn source() -> MemorySource {
    let src = MemorySource::new();
    let points = HOURS * 3600 * 1000 / STEP_MS;
    for i in 0..SERIES_PER_METRIC {
        // Counters get an `le` label for the histogram_quantile query, as
        // eight buckets of 25 instances each.
        let le = ["0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"][i % 8].to_string();
        let counter = labels("bench_requests_total_0", i / 8, Some(("le", le)));
        let counter4 = labels("bench_requests_total_4", i, None);
        let gauge = labels("bench_queue_length_1", i, None);
        let temp = labels("bench_temperature_celsius_2", i, None);
        let info = labels("bench_info_3", i, None);
        let mut c = 0.0;
        for p in 0..points {
            let t = p * STEP_MS;
            c += ((i as i64 * 7 + p) % 13) as f64;
            src.append(&counter, t, c * (1 + i % 8) as f64);
            src.append(&counter4, t, c);
            src.append(&gauge, t, ((i as i64 + p) % 50) as f64);
            src.append(&temp, t, 40.0 + ((i as i64 * 3 + p) % 30) as f64 / 10.0);
            src.append(&info, t, 1.0);
        }
    }
    src
}

fn bench(c: &mut Criterion) {
    let src = source();
    let engine = Engine::default();
    let end = HOURS * 3600 * 1000 - 30_000;
    let start = end - 3600 * 1000;
    let range_queries = [
        ("sum_rate", "sum(rate(bench_requests_total_0[5m]))"),
        (
            "sum_by_rate",
            "sum by (region) (rate(bench_requests_total_0[5m]))",
        ),
        ("topk_rate", "topk(5, rate(bench_requests_total_4[5m]))"),
        ("avg_by", "avg by (region) (bench_queue_length_1)"),
        (
            "max_over_time",
            "max_over_time(bench_temperature_celsius_2[10m])",
        ),
        (
            "histogram_quantile",
            "histogram_quantile(0.9, sum by (le) (rate(bench_requests_total_0[5m])))",
        ),
        ("count_by", "count by (region) (bench_info_3)"),
        ("quantile", "quantile(0.99, bench_temperature_celsius_2)"),
        (
            "ratio",
            "bench_queue_length_1 / on(instance) group_left bench_info_3",
        ),
    ];
    let mut group = c.benchmark_group("range_1h_step_60s");
    for (name, query) in range_queries {
        group.bench_function(name, |b| {
            b.iter(|| engine.range_query(&src, query, start, end, 60_000))
        });
    }
    group.finish();
    c.bench_function("instant_sum", |b| {
        b.iter(|| engine.instant_query(&src, "sum(bench_queue_length_1)", end))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
