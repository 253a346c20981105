//! Valid queries: parse, print (compact and pretty), parse again, same tree.

use std::time::Duration;

use lucia_common::matchers::MatchOp;
use lucia_logql::ast::*;
use lucia_logql::{format_query, parse, parse_log_expr, parse_metric_expr};

pub const VALID: &[&str] = &[
    // selectors and line filters
    r#"{app="api"}"#,
    r#"{app="api", env=~"prod|dev", team!="x", pod!~"tmp-.*"}"#,
    r#"{app=`raw\d`}"#,
    r#"{app="a\"b\n\x41"}"#,
    r#"{app="api"} |= "error" != "timeout" |~ "5\\d\\d" !~ "(?i)debug" |> "<_> GET <_>" !> "<_> ok""#,
    r#"{app="api"} |= "a" or "b" or `c`"#,
    r#"{app="api"} != "a" or "b""#,
    r#"{app="api"} |= ip("10.0.0.0/8") != ip("192.168.0.1-192.168.0.9") |= ip("::1")"#,
    r#"{app="api"} |= "x" or ip("10.0.0.1")"#,
    "{app=\"api\"} # a comment\n |= \"x\"",
    r#"({app="api"} |= "x")"#,
    // parsers
    r#"{app="api"} | json"#,
    r#"{app="api"} | json first="servers[0]", ua="request.headers[\"User-Agent\"]", status"#,
    r#"{app="api"} | logfmt"#,
    r#"{app="api"} | logfmt --strict"#,
    r#"{app="api"} | logfmt --keep-empty --strict msg, lvl="level""#,
    r#"{app="api"} | logfmt --strict --keep-empty"#,
    r#"{app="api"} | regexp "(?P<method>\\w+) (?P<path>[^ ]+)""#,
    r#"{app="api"} | regexp `(?P<status>\d{3})`"#,
    r#"{app="api"} | pattern "<ip> - <_> [<ts>] \"<method> <path>\"""#,
    r#"{app="api"} | unpack"#,
    // label filters
    r#"{app="api"} | json | level="error""#,
    r#"{app="api"} | json | level=~"err.*" | level!~"debug" | x!="y""#,
    r#"{app="api"} | logfmt | status >= 500 and status < 600"#,
    r#"{app="api"} | logfmt | status == 200 or status = 201, size != 0"#,
    r#"{app="api"} | logfmt | ratio > 0.5 | ratio <= -1.5e3 | n > +3"#,
    r#"{app="api"} | logfmt | latency > 250ms or latency >= 1h5m | took < 1.5s | t == 100us"#,
    r#"{app="api"} | logfmt | size > 20KB and size <= 1.5MiB or size == 100B | s != 3GB"#,
    r#"{app="api"} | logfmt | addr = ip("10.0.0.0/8") | addr != ip("fe80::/10")"#,
    r#"{app="api"} | logfmt | (a="1" or b="2") and c="3""#,
    r#"{app="api"} | logfmt | a="1" b="2" c="3""#,
    r#"{app="api"} | logfmt | a="1", b="2" or c="3""#,
    r#"{app="api"} | logfmt | __error__="" | __error_details__!="x""#,
    r#"{app="api"} | logfmt | (a="1", b="2", c="3") and d="4""#,
    r#"{app="api"} | logfmt | (a="1", b="2", c="3") or d="4""#,
    r#"{app="api"} | logfmt | (a="1" and b="2" and c="3"), d="4" or e="5""#,
    r#"{app="api"} | logfmt | (a="1" or b="2") (c="3" or d="4") and (e="5" and f="6")"#,
    r#"{app="api"} | logfmt | a="1" or b="2", c="3" and d="4" or e="5""#,
    r#"{app="api"} | logfmt | rate > 5 | sum = "x" | bytes > 1KB"#,
    // formatting stages
    r#"{app="api"} | line_format "{{.msg}} {{ .level | upper }}""#,
    r#"{app="api"} | label_format a=b, c="{{.x}}-{{.y}}""#,
    r#"{app="api"} | decolorize"#,
    r#"{app="api"} | drop a, b="v", c=~"x.*""#,
    r#"{app="api"} | keep a, level!="debug""#,
    // range aggregations
    r#"count_over_time({app="api"}[5m])"#,
    r#"count_over_time({app="api"} |= "x" [5m])"#,
    r#"count_over_time({app="api"}[5m] |= "x")"#,
    r#"count_over_time({app="api"}[5m] offset 1h |= "x" | json)"#,
    r#"rate({app="api"} | json [1m] offset 30s)"#,
    r#"rate({app="api"}[1m]) "#,
    r#"rate_counter({app="api"} | logfmt | unwrap n [1m])"#,
    r#"bytes_over_time({app="api"}[1h])"#,
    r#"bytes_rate({app="api"}[1h])"#,
    r#"absent_over_time({app="api"}[1h])"#,
    r#"avg_over_time({app="api"} | logfmt | unwrap latency [5m]) by (path)"#,
    r#"sum_over_time({app="api"} | logfmt | unwrap bytes(size) | __error__="" [5m])"#,
    r#"max_over_time({app="api"} | logfmt | unwrap duration(d) | d > 1s or __error__!="" [5m]) without (pod)"#,
    r#"min_over_time({app="api"} | logfmt | unwrap duration_seconds(d) [5m]) by ()"#,
    r#"stddev_over_time({app="api"} | unwrap x [5m])"#,
    r#"stdvar_over_time({app="api"}[5m] | unwrap x)"#,
    r#"first_over_time({app="api"}[5m] offset 5m | logfmt | unwrap x | x > 1)"#,
    r#"last_over_time(({app="api"} | logfmt | unwrap x)[5m]) by (a)"#,
    r#"quantile_over_time(0.99, {app="api"} | json | unwrap latency [5m]) by (path)"#,
    r#"quantile_over_time(.5, ({app="api"})[5m] | unwrap latency)"#,
    r#"count_over_time(({app="api"} |= "x")[5m] offset 1m)"#,
    r#"count_over_time(({app="api"})[5m])"#,
    r#"count_over_time(({app="api"} |= "x" [5m]))"#,
    r#"COUNT_OVER_TIME({app="api"}[5m])"#,
    r#"sum_over_time({app="api"} | unwrap bytes [5m])"#,
    // vector aggregations
    r#"sum(count_over_time({app="api"}[5m]))"#,
    r#"sum by (a, b) (count_over_time({app="api"}[5m]))"#,
    r#"sum(count_over_time({app="api"}[5m])) by (a)"#,
    r#"avg without (pod) (rate({app="api"}[5m]))"#,
    r#"min(rate({app="api"}[5m])) without ()"#,
    r#"max(rate({app="api"}[5m]))"#,
    r#"count(rate({app="api"}[5m]))"#,
    r#"stddev(rate({app="api"}[5m]))"#,
    r#"stdvar(rate({app="api"}[5m]))"#,
    r#"topk(5, sum by (a) (rate({app="api"}[5m])))"#,
    r#"bottomk by (a) (3, rate({app="api"}[5m]))"#,
    r#"topk(2, rate({app="api"}[5m])) by (a)"#,
    r#"sort(rate({app="api"}[5m]))"#,
    r#"sort_desc(rate({app="api"}[5m]))"#,
    r#"approx_topk(2, rate({app="api"}[5m]))"#,
    r#"sum(5)"#,
    r#"sum(5 + rate({app="api"}[5m]))"#,
    // binary operations
    r#"1 + 2 * 3 ^ 2 ^ 0.5 - 4 / 2 % 3"#,
    r#"(1 + 2) * 3"#,
    r#"-1 + +2 - -3"#,
    r#"1e3 * 2.5E-2"#,
    r#"sum(rate({app="a"}[5m])) / sum(rate({app="b"}[5m])) * 100"#,
    r#"rate({app="a"}[5m]) > bool 0.5"#,
    r#"rate({app="a"}[5m]) == 1 or rate({app="b"}[5m]) != 2 and vector(1) unless vector(0)"#,
    r#"rate({app="a"}[5m]) >= 1 < 2 <= 3"#,
    r#"sum by (a) (rate({app="a"}[5m])) / on (a) group_left (b) sum by (a, b) (rate({app="b"}[5m]))"#,
    r#"rate({app="a"}[5m]) * ignoring (pod) group_right rate({app="b"}[5m])"#,
    r#"rate({app="a"}[5m]) + on () rate({app="b"}[5m])"#,
    r#"rate({app="a"}[5m]) + ignoring (x) group_left () rate({app="b"}[5m])"#,
    r#"vector(1)"#,
    r#"vector(0.5) + 1"#,
    r#"label_replace(rate({app="api"}[5m]), "dst", "$1", "src", "(.*)-x")"#,
    r#"label_replace(sum by (a) (rate({app="api"}[5m])), "b", "", "a", "")"#,
    r#"((rate({app="a"}[5m])))"#,
    "sum by (a) (\n  count_over_time({app=\"a\"}\n    |= \"x\"\n  [5m])\n)",
];

fn round_trip(query: &str) -> Expr {
    let expr = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let compact = expr.to_string();
    assert!(!compact.contains('\n'), "{compact}");
    let again = parse(&compact).unwrap_or_else(|e| panic!("{query}\n-> {compact}\n{e}"));
    assert_eq!(again, expr, "{query}\n-> {compact}");
    let pretty = format_query(&expr);
    let again = parse(&pretty).unwrap_or_else(|e| panic!("{query}\n-> {pretty}\n{e}"));
    assert_eq!(again, expr, "{query}\n-> {pretty}");
    // Printing is a fixed point.
    assert_eq!(format_query(&again), pretty);
    expr
}

#[test]
fn valid_queries_round_trip() {
    for query in VALID {
        round_trip(query);
    }
}

fn log(query: &str) -> LogExpr {
    parse_log_expr(query).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn metric(query: &str) -> MetricExpr {
    parse_metric_expr(query).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn filter(query: &str) -> LabelFilter {
    match log(query).stages.pop() {
        Some(Stage::LabelFilter(f)) => f,
        other => panic!("{query}: {other:?}"),
    }
}

fn name(f: &LabelFilter) -> String {
    match f {
        LabelFilter::String(m) => m.name.clone(),
        LabelFilter::And(l, r) => format!("and({},{})", name(l), name(r)),
        LabelFilter::Or(l, r) => format!("or({},{})", name(l), name(r)),
        LabelFilter::Number { name, .. }
        | LabelFilter::Duration { name, .. }
        | LabelFilter::Bytes { name, .. }
        | LabelFilter::Ip { name, .. } => name.clone(),
    }
}

#[test]
fn label_filter_precedence_is_lokis() {
    let shape = |q: &str| name(&filter(&format!(r#"{{app="x"}} | {q}"#)));
    assert_eq!(shape(r#"a="1" or b="1" and c="1""#), "or(a,and(b,c))");
    assert_eq!(shape(r#"a="1" and b="1" or c="1""#), "or(and(a,b),c)");
    assert_eq!(shape(r#"a="1" or b="1" or c="1""#), "or(or(a,b),c)");
    // A comma or juxtaposition takes everything to its right (yacc shifts).
    assert_eq!(shape(r#"a="1", b="1" or c="1""#), "and(a,or(b,c))");
    assert_eq!(shape(r#"a="1" b="1" or c="1""#), "and(a,or(b,c))");
    assert_eq!(shape(r#"a="1" or b="1", c="1""#), "or(a,and(b,c))");
    assert_eq!(shape(r#"(a="1" or b="1"), c="1""#), "and(or(a,b),c)");
}

#[test]
fn label_filter_values() {
    let f = filter(r#"{app="x"} | latency > 1h5m"#);
    assert_eq!(
        f,
        LabelFilter::Duration {
            name: "latency".into(),
            op: CmpOp::Gt,
            value: Duration::from_secs(3900)
        }
    );
    let f = filter(r#"{app="x"} | size <= 1.5MiB"#);
    assert_eq!(
        f,
        LabelFilter::Bytes {
            name: "size".into(),
            op: CmpOp::Le,
            value: 1_572_864
        }
    );
    let f = filter(r#"{app="x"} | size = 20KB"#);
    assert!(matches!(
        f,
        LabelFilter::Bytes {
            op: CmpOp::Eq,
            value: 20_000,
            ..
        }
    ));
    let f = filter(r#"{app="x"} | n != -2.5"#);
    assert!(matches!(f, LabelFilter::Number { op: CmpOp::Ne, value, .. } if value == -2.5));
    let f = filter(r#"{app="x"} | addr != ip("10.0.0.0/8")"#);
    assert!(matches!(f, LabelFilter::Ip { op: CmpOp::Ne, ref cidr, .. } if cidr == "10.0.0.0/8"));
    let f = filter(r#"{app="x"} | level =~ "err.*""#);
    assert!(
        matches!(f, LabelFilter::String(ref m) if m.op == MatchOp::Regex && m.matches_value("error"))
    );
}

#[test]
fn stages_and_ranges() {
    let l = log(
        r#"{app="x"} |= "a" or "b" | logfmt --keep-empty msg, lvl="level" | label_format a=b, c="{{.d}}""#,
    );
    assert_eq!(
        l.stages[0],
        Stage::LineFilter(LineFilter {
            op: LineFilterOp::Contains,
            values: vec![
                LineFilterValue::Text("a".into()),
                LineFilterValue::Text("b".into())
            ]
        })
    );
    assert_eq!(
        l.stages[1],
        Stage::Parser(Parser::Logfmt {
            strict: false,
            keep_empty: true,
            expressions: vec![("msg".into(), "msg".into()), ("lvl".into(), "level".into())]
        })
    );
    assert_eq!(
        l.stages[2],
        Stage::LabelFormat(vec![
            LabelFormatOp::Rename {
                dst: "a".into(),
                src: "b".into()
            },
            LabelFormatOp::Template {
                dst: "c".into(),
                template: "{{.d}}".into()
            }
        ])
    );

    // Both range positions give the same tree.
    assert_eq!(
        metric(r#"count_over_time({app="x"} |= "a" [5m] offset 1h)"#),
        metric(r#"count_over_time({app="x"}[5m] offset 1h |= "a")"#)
    );
    let MetricExpr::Range(r) =
        metric(r#"quantile_over_time(0.9, {app="x"} | unwrap bytes(size) | size > 0 [5m]) by (a)"#)
    else {
        panic!("not a range aggregation");
    };
    assert_eq!(r.param, Some(0.9));
    assert_eq!(r.range.range, Duration::from_secs(300));
    let unwrap = r.range.unwrap.as_ref().unwrap();
    assert_eq!(unwrap.conversion, Some(UnwrapConversion::Bytes));
    assert_eq!(unwrap.label, "size");
    assert_eq!(unwrap.post_filters.len(), 1);
    assert_eq!(
        r.grouping,
        Some(Grouping {
            without: false,
            labels: vec!["a".into()]
        })
    );
}

#[test]
fn binary_precedence_and_associativity() {
    let MetricExpr::Binary(b) = metric("2 ^ 3 ^ 2") else {
        panic!()
    };
    assert_eq!(*b.lhs, MetricExpr::Literal(2.0), "^ is right-associative");
    let MetricExpr::Binary(b) = metric("1 - 2 - 3") else {
        panic!()
    };
    assert_eq!(*b.rhs, MetricExpr::Literal(3.0), "- is left-associative");
    let MetricExpr::Binary(b) = metric("1 + 2 * 3") else {
        panic!()
    };
    assert_eq!(b.op, BinaryOp::Add);
    let MetricExpr::Binary(b) = metric(r#"vector(1) or vector(2) and vector(3)"#) else {
        panic!()
    };
    assert_eq!(b.op, BinaryOp::Or);
    let MetricExpr::Binary(b) =
        metric(r#"rate({a="b"}[1m]) > bool on (x) group_left (y) rate({a="c"}[1m])"#)
    else {
        panic!()
    };
    assert!(b.return_bool);
    assert_eq!(
        b.matching,
        Some(VectorMatching {
            on: true,
            labels: vec!["x".into()],
            group: Some(GroupModifier {
                left: true,
                include: vec!["y".into()]
            })
        })
    );
    let MetricExpr::Vector(v) = metric(r#"topk by (a) (5, rate({a="b"}[1m]))"#) else {
        panic!()
    };
    assert_eq!((v.op, v.param), (VectorOp::Topk, Some(5)));
}

#[test]
fn hand_built_trees_get_parentheses() {
    let lit = |v| Box::new(MetricExpr::Literal(v));
    let sum = MetricExpr::Binary(BinaryExpr {
        op: BinaryOp::Add,
        lhs: lit(1.0),
        rhs: lit(2.0),
        return_bool: false,
        matching: None,
    });
    let product = MetricExpr::Binary(BinaryExpr {
        op: BinaryOp::Mul,
        lhs: Box::new(sum),
        rhs: lit(3.0),
        return_bool: false,
        matching: None,
    });
    assert_eq!(product.to_string(), "(1 + 2) * 3");
}

#[test]
fn pretty_print_breaks_long_queries() {
    let q = r#"sum by (namespace, app) (rate({namespace="production", app="api-gateway"} |= "error" != "healthcheck" | json | status >= 500 [5m]))"#;
    let pretty = format_query(&parse(q).unwrap());
    assert!(pretty.lines().count() > 3, "{pretty}");
    assert!(pretty.lines().all(|l| l.len() <= 100), "{pretty}");
    assert!(
        pretty.starts_with("sum by (namespace, app) (\n  rate(\n"),
        "{pretty}"
    );
    let short = r#"rate({app="a"}[5m])"#;
    assert_eq!(format_query(&parse(short).unwrap()), short);
}
