//! Engine tests over hand-built syntax trees and a `MemorySource`.

use std::time::Duration;

use lucia_common::chunk::Entry;
use lucia_common::labels::Labels;
use lucia_common::matchers::{MatchOp, Matcher, parse_selector};
use lucia_logql::ast::{self, Expr, LogExpr, MetricExpr, RangeOp, Stage, VectorOp};

use super::*;
use crate::memory_source::MemorySource;

const S: i64 = 1_000_000_000;

fn entry(ts_s: i64, line: &str) -> Entry {
    Entry {
        ts: ts_s * S,
        line: line.to_string(),
        metadata: Vec::new(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn log(selector: &str, stages: Vec<Stage>) -> LogExpr {
    LogExpr {
        matchers: parse_selector(selector).unwrap(),
        stages,
    }
}

fn contains(text: &str) -> Stage {
    Stage::LineFilter(ast::LineFilter {
        op: ast::LineFilterOp::Contains,
        values: vec![ast::LineFilterValue::Text(text.to_string())],
    })
}

/// Three streams with interleaved timestamps:
/// a: 1 "a1", 4 "a4", 7 "a7"; b: 2 "b2", 5 "b5"; c: 3 "c3", 4 "c4".
fn engine() -> Engine<MemorySource> {
    let source = MemorySource::new();
    source.push(
        "t",
        labels(&[("app", "a")]),
        [entry(1, "a1"), entry(4, "a4"), entry(7, "a7")],
    );
    source.push(
        "t",
        labels(&[("app", "b")]),
        [entry(2, "b2"), entry(5, "b5")],
    );
    source.push(
        "t",
        labels(&[("app", "c")]),
        [entry(3, "c3"), entry(4, "c4")],
    );
    source.push("other", labels(&[("app", "a")]), [entry(1, "secret")]);
    Engine::new(source, Limits::default())
}

fn range(start_s: i64, end_s: i64, direction: Direction, limit: usize) -> RangeParams {
    RangeParams {
        start: start_s * S,
        end: end_s * S,
        step: Duration::from_secs(1),
        interval: None,
        direction,
        limit,
    }
}

/// `(labels' app, [(ts seconds, line)])` per stream.
fn streams(result: QueryResult) -> Vec<(String, Vec<(i64, String)>)> {
    let ResultData::Streams(streams) = result.data else {
        panic!("expected streams, got {:?}", result.data);
    };
    streams
        .into_iter()
        .map(|s| {
            (
                s.labels.get("app").unwrap_or("").to_string(),
                s.entries.into_iter().map(|e| (e.ts / S, e.line)).collect(),
            )
        })
        .collect()
}

fn owned(want: &[(&str, &[(i64, &str)])]) -> Vec<(String, Vec<(i64, String)>)> {
    want.iter()
        .map(|(app, entries)| {
            (
                app.to_string(),
                entries.iter().map(|(t, l)| (*t, l.to_string())).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn backward_limit_takes_the_newest_entries_across_streams() {
    let e = engine();
    let q = Expr::Log(log(r#"{app=~"a|b|c"}"#, vec![]));
    let got = streams(
        e.query_range("t", &q, range(0, 10, Direction::Backward, 3))
            .await
            .unwrap(),
    );
    // Newest three: a7, b5, then the tie at 4 broken by labels (a before c).
    assert_eq!(
        got,
        owned(&[("a", &[(7, "a7"), (4, "a4")]), ("b", &[(5, "b5")])])
    );
}

#[tokio::test]
async fn forward_limit_takes_the_oldest_entries_across_streams() {
    let e = engine();
    let q = Expr::Log(log(r#"{app=~"a|b|c"}"#, vec![]));
    let result = e
        .query_range("t", &q, range(0, 10, Direction::Forward, 4))
        .await
        .unwrap();
    assert_eq!(result.stats.total_entries_returned, 4);
    assert_eq!(result.stats.lines_processed, 7);
    assert_eq!(
        streams(result),
        owned(&[
            ("a", &[(1, "a1"), (4, "a4")]),
            ("b", &[(2, "b2")]),
            ("c", &[(3, "c3")])
        ])
    );
}

#[tokio::test]
async fn range_end_is_exclusive_and_filters_apply_before_the_limit() {
    let e = engine();
    let q = Expr::Log(log(r#"{app=~"a|b|c"}"#, vec![contains("4")]));
    let got = streams(
        e.query_range("t", &q, range(4, 7, Direction::Backward, 10))
            .await
            .unwrap(),
    );
    assert_eq!(got, owned(&[("a", &[(4, "a4")]), ("c", &[(4, "c4")])]));
    // [4, 7) leaves a7 out even without a filter.
    let q = Expr::Log(log(r#"{app="a"}"#, vec![]));
    let got = streams(
        e.query_range("t", &q, range(4, 7, Direction::Forward, 10))
            .await
            .unwrap(),
    );
    assert_eq!(got, owned(&[("a", &[(4, "a4")])]));
}

#[tokio::test]
async fn streams_merge_by_final_labels_and_duplicates_drop() {
    let source = MemorySource::new();
    source.push(
        "t",
        labels(&[("app", "x"), ("pod", "1")]),
        [entry(1, "same"), entry(3, "p1")],
    );
    source.push(
        "t",
        labels(&[("app", "x"), ("pod", "2")]),
        [entry(1, "same"), entry(2, "p2")],
    );
    let e = Engine::new(source, Limits::default());
    let q = Expr::Log(log(
        r#"{app="x"}"#,
        vec![Stage::Drop(vec![ast::LabelSelector::Name(
            "pod".to_string(),
        )])],
    ));
    let got = streams(
        e.query_range("t", &q, range(0, 10, Direction::Backward, 100))
            .await
            .unwrap(),
    );
    assert_eq!(
        got,
        owned(&[("x", &[(3, "p1"), (2, "p2"), (1, "same")])]),
        "one stream, newest first, the shared line once"
    );
}

#[tokio::test]
async fn tenants_are_isolated() {
    let e = engine();
    let q = Expr::Log(log(r#"{app="a"}"#, vec![]));
    let got = streams(
        e.query_range("other", &q, range(0, 10, Direction::Forward, 10))
            .await
            .unwrap(),
    );
    assert_eq!(got, owned(&[("a", &[(1, "secret")])]));
}

#[tokio::test]
async fn limits_answer_with_clear_errors() {
    let e = Engine::new(
        engine().source().clone(),
        Limits {
            max_entries_per_query: 2,
            max_query_length: Duration::from_secs(5),
            ..Limits::default()
        },
    );
    let q = Expr::Log(log(r#"{app="a"}"#, vec![]));
    let err = e
        .query_range("t", &q, range(0, 5, Direction::Forward, 3))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueryError::Limit(m) if m.contains("max entries limit per query exceeded, limit > max_entries_limit_per_query (3 > 2)")),
        "{err}"
    );
    let err = e
        .query_range("t", &q, range(0, 6, Direction::Forward, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueryError::Limit(m) if m.contains("query time range exceeds the limit")),
        "{err}"
    );
    let err = e
        .query_instant("t", &q, 5 * S, Direction::Backward, 10)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not supported as an instant query")
    );
}

fn count_over(selector: &str, range_s: u64, offset_s: u64) -> ast::RangeAggregation {
    ast::RangeAggregation {
        op: RangeOp::CountOverTime,
        range: ast::LogRange {
            log: log(selector, vec![]),
            range: Duration::from_secs(range_s),
            unwrap: None,
            offset: Duration::from_secs(offset_s),
        },
        param: None,
        grouping: None,
    }
}

fn matrix(result: QueryResult) -> Vec<(Labels, Vec<(i64, f64)>)> {
    let ResultData::Matrix(m) = result.data else {
        panic!("expected a matrix, got {:?}", result.data);
    };
    m.into_iter()
        .map(|s| {
            (
                s.labels,
                s.points.into_iter().map(|(t, v)| (t / S, v)).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn count_over_time_uses_left_open_windows() {
    let e = engine();
    let q = Expr::Metric(MetricExpr::Range(count_over(r#"{app="a"}"#, 3, 0)));
    // Windows (t-3, t]: t=4 → (1,4] = {4}, t=7 → (4,7] = {7} (4 is on the
    // open edge), t=10 → (7,10] is empty: no point.
    let got = matrix(
        e.query_range(
            "t",
            &q,
            RangeParams {
                step: Duration::from_secs(3),
                ..range(4, 10, Direction::Backward, 0)
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        got,
        vec![(labels(&[("app", "a")]), vec![(4, 1.0), (7, 1.0)])]
    );
    // The offset shifts the window back: at t=7 offset 3 → (1, 4] = {4}.
    let q = Expr::Metric(MetricExpr::Range(count_over(r#"{app="a"}"#, 3, 3)));
    let got = e
        .query_instant("t", &q, 7 * S, Direction::Backward, 0)
        .await
        .unwrap();
    assert_eq!(
        got.data,
        ResultData::Vector(vec![Sample {
            labels: labels(&[("app", "a")]),
            ts: 7 * S,
            value: 1.0
        }])
    );
}

#[tokio::test]
async fn vector_aggregation_and_binary_ops() {
    let e = engine();
    let sum = MetricExpr::Vector(ast::VectorAggregation {
        op: VectorOp::Sum,
        expr: Box::new(MetricExpr::Range(count_over(r#"{app=~"a|b|c"}"#, 10, 0))),
        param: None,
        grouping: None,
    });
    let q = Expr::Metric(MetricExpr::Binary(ast::BinaryExpr {
        op: ast::BinaryOp::Mul,
        lhs: Box::new(sum),
        rhs: Box::new(MetricExpr::Literal(2.0)),
        return_bool: false,
        matching: None,
    }));
    let got = e
        .query_instant("t", &q, 10 * S, Direction::Backward, 0)
        .await
        .unwrap();
    assert_eq!(
        got.data,
        ResultData::Vector(vec![Sample {
            labels: Labels::new(),
            ts: 10 * S,
            value: 14.0
        }])
    );

    let topk = Expr::Metric(MetricExpr::Vector(ast::VectorAggregation {
        op: VectorOp::Topk,
        expr: Box::new(MetricExpr::Range(count_over(r#"{app=~"a|b|c"}"#, 10, 0))),
        param: Some(1),
        grouping: None,
    }));
    let got = e
        .query_instant("t", &topk, 10 * S, Direction::Backward, 0)
        .await
        .unwrap();
    let ResultData::Vector(v) = got.data else {
        panic!()
    };
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].labels, labels(&[("app", "a")]));
    assert_eq!(v[0].value, 3.0);
}

#[tokio::test]
async fn absent_over_time_reports_the_selector_labels() {
    let e = engine();
    let mut ra = count_over(r#"{app="b", pod=~".+"}"#, 2, 0);
    ra.op = RangeOp::AbsentOverTime;
    ra.range.log.matchers = vec![
        Matcher::new(MatchOp::Equal, "app", "b").unwrap(),
        Matcher::new(MatchOp::Regex, "x", ".*").unwrap(),
    ];
    let q = Expr::Metric(MetricExpr::Range(ra));
    // b has entries at 2 and 5: windows (t-2, t] at 2,4,6,8 → present, absent, present, absent.
    let got = matrix(
        e.query_range(
            "t",
            &q,
            RangeParams {
                step: Duration::from_secs(2),
                ..range(2, 8, Direction::Backward, 0)
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        got,
        vec![(labels(&[("app", "b")]), vec![(4, 1.0), (8, 1.0)])]
    );
}

#[tokio::test]
async fn error_series_fail_the_query_and_series_limit_applies() {
    let source = MemorySource::new();
    source.push("t", labels(&[("app", "a"), ("v", "oops")]), [entry(1, "x")]);
    let e = Engine::new(
        source.clone(),
        Limits {
            max_series: 1,
            ..Limits::default()
        },
    );
    let mut ra = count_over(r#"{app="a"}"#, 10, 0);
    ra.op = RangeOp::SumOverTime;
    ra.range.unwrap = Some(ast::Unwrap {
        label: "v".to_string(),
        conversion: None,
        post_filters: vec![],
    });
    let q = Expr::Metric(MetricExpr::Range(ra.clone()));
    let err = e
        .query_instant("t", &q, 5 * S, Direction::Backward, 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SampleExtractionErr"), "{err}");
    // A filter on __error__ after unwrap drops the failing sample.
    ra.range.unwrap = Some(ast::Unwrap {
        label: "v".to_string(),
        conversion: None,
        post_filters: vec![ast::LabelFilter::String(
            Matcher::new(MatchOp::Equal, "__error__", "").unwrap(),
        )],
    });
    let q = Expr::Metric(MetricExpr::Range(ra));
    let got = e
        .query_instant("t", &q, 5 * S, Direction::Backward, 0)
        .await
        .unwrap();
    assert_eq!(got.data, ResultData::Vector(vec![]));

    source.push("t", labels(&[("app", "a"), ("v", "1")]), [entry(1, "x")]);
    let q = Expr::Metric(MetricExpr::Range(count_over(r#"{app="a"}"#, 10, 0)));
    let err = e
        .query_instant("t", &q, 5 * S, Direction::Backward, 0)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueryError::Limit(m) if m.contains("maximum of series (1)")),
        "{err}"
    );
}

#[tokio::test]
async fn validation_messages_match_loki() {
    let e = engine();
    let mut ra = count_over(r#"{app="a"}"#, 10, 0);
    ra.grouping = Some(ast::Grouping {
        without: false,
        labels: vec!["app".to_string()],
    });
    let err = e
        .query_instant(
            "t",
            &Expr::Metric(MetricExpr::Range(ra)),
            S,
            Direction::Backward,
            0,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("grouping not allowed for count_over_time aggregation")
    );
    let mut ra = count_over(r#"{app="a"}"#, 10, 0);
    ra.op = RangeOp::AvgOverTime;
    let err = e
        .query_instant(
            "t",
            &Expr::Metric(MetricExpr::Range(ra)),
            S,
            Direction::Backward,
            0,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid aggregation avg_over_time without unwrap")
    );
}

#[test]
fn quantile_and_counter_rate_follow_prometheus() {
    assert_eq!(
        metric_fns::quantile(0.4, vec![5.0, 1.0, 2.0, 3.0, 4.0]),
        2.6
    );
    assert_eq!(metric_fns::quantile(1.5, vec![1.0]), f64::INFINITY);
    // c=100 @90s, 130 @120s over (60s, 120s]: 30 extrapolated to 60s / 60s = 1.
    let w = [(90 * S, 100.0), (120 * S, 130.0)];
    assert!((metric_fns::counter_rate(&w, 60 * S, 120 * S) - 1.0).abs() < 1e-9);
}

mod metric_fns {
    pub(super) use super::super::metric::{counter_rate, quantile};
}
