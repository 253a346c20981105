//! Invalid queries: the message says what is wrong and where.

use lucia_logql::parse;

/// (query, expected message substring, line, column)
const INVALID: &[(&str, &str, usize, usize)] = &[
    ("", "syntax error: unexpected $end", 1, 1),
    (
        r#"{app="a""#,
        "syntax error: unexpected $end, expecting , or }",
        1,
        9,
    ),
    (
        r#"{}"#,
        "queries require at least one regexp or equality matcher that does not have an empty-compatible value",
        1,
        1,
    ),
    (
        r#"{app=~".*"}"#,
        "queries require at least one regexp or equality matcher",
        1,
        1,
    ),
    (
        r#"{app=""}"#,
        "queries require at least one regexp or equality matcher",
        1,
        1,
    ),
    (r#"{app=~"("}"#, "error parsing regexp", 1, 7),
    (
        r#"{app='a'}"#,
        "single-quoted strings are not supported",
        1,
        6,
    ),
    (
        r#"{app="a"} |= "x" |= "#,
        "syntax error: unexpected $end, expecting STRING or ip",
        1,
        21,
    ),
    (r#"{app="a"} |~ "(""#, "error parsing regexp", 1, 14),
    (
        r#"{app="a"} |> "<verb> /api""#,
        "named captures are not allowed",
        1,
        14,
    ),
    (
        r#"{app="a"} |= ip("notanip")"#,
        "ip: invalid pattern",
        1,
        17,
    ),
    (r#"{app="a"} |= ip("")"#, "ip: invalid pattern", 1, 17),
    (
        r#"{app="a"} |~ "x" or ip("10.0.0.0/8")"#,
        "ip: invalid operation",
        1,
        21,
    ),
    (
        r#"{app="a"} | logfmt | addr == ip("10.0.0.0/8")"#,
        "syntax error: unexpected ip",
        1,
        30,
    ),
    (
        r#"{app="a"} | logfmt | addr > ip("10.0.0.0/8")"#,
        "syntax error: unexpected ip",
        1,
        29,
    ),
    (
        r#"{app="a"} | logfmt | addr = ip("bogus")"#,
        "ip: invalid pattern",
        1,
        32,
    ),
    (
        r#"{app="a"} | logfmt | code > 0x10"#,
        "unable to parse literal as a float",
        1,
        29,
    ),
    (
        r#"{app="a"} | logfmt | size > 1mb"#,
        "syntax error: unexpected $end",
        1,
        32,
    ),
    (
        r#"{app="a"} | logfmt | code == "200""#,
        "syntax error: unexpected STRING",
        1,
        30,
    ),
    (
        r#"{app="a"} | logfmt | code >"#,
        "syntax error: unexpected $end",
        1,
        28,
    ),
    (
        r#"{app="a"} | regexp "nocapture""#,
        "at least one named capture must be supplied",
        1,
        20,
    ),
    (
        r#"{app="a"} | regexp "(?P<x>.)(?P<x>.)""#,
        "duplicate extracted label name",
        1,
        20,
    ),
    (r#"{app="a"} | regexp "(""#, "error parsing regexp", 1, 20),
    (
        r#"{app="a"} | pattern "no captures here""#,
        "at least one capture is required",
        1,
        21,
    ),
    (
        r#"{app="a"} | pattern "<a><b>""#,
        "consecutive capture",
        1,
        21,
    ),
    (
        r#"{app="a"} | pattern "<a> <a>""#,
        "duplicate capture",
        1,
        21,
    ),
    (
        r#"{app="a"} | drop"#,
        "syntax error: unexpected $end, expecting IDENTIFIER",
        1,
        17,
    ),
    (
        r#"count_over_time({app="a"} | keep [1m])"#,
        "expecting IDENTIFIER",
        1,
        34,
    ),
    (
        r#"{app="a"} | label_format a"#,
        "syntax error: unexpected $end, expecting =",
        1,
        27,
    ),
    (r#"{app="a"} | line_format"#, "expecting STRING", 1, 24),
    (
        r#"{app="a"} | json bad"x""#,
        "syntax error: unexpected STRING",
        1,
        21,
    ),
    (
        r#"{app="a"} | unwrap x"#,
        "unwrap is only allowed inside a range aggregation",
        1,
        13,
    ),
    (
        r#"{app="a"}[5m]"#,
        "only allowed inside a range aggregation",
        1,
        10,
    ),
    (r#"{app="a"} [1.5h]"#, "not a valid duration string", 1, 11),
    (
        r#"rate({app="a"}[5m"#,
        "missing closing ']' in duration",
        1,
        15,
    ),
    (
        r#"rate({app="a"})"#,
        "syntax error: unexpected ), expecting RANGE",
        1,
        15,
    ),
    (
        r#"rate({app="a"}[5m]) by (x)"#,
        "grouping not allowed for rate aggregation",
        1,
        1,
    ),
    (
        r#"count_over_time({app="a"}[5m]) without (x)"#,
        "grouping not allowed for count_over_time aggregation",
        1,
        1,
    ),
    (
        r#"count_over_time({app="a"} | unwrap x [5m])"#,
        "invalid aggregation count_over_time with unwrap",
        1,
        1,
    ),
    (
        r#"sum_over_time({app="a"}[5m])"#,
        "invalid aggregation sum_over_time without unwrap",
        1,
        1,
    ),
    (
        r#"quantile_over_time({app="a"} | unwrap x [5m])"#,
        "parameter required for operation quantile_over_time",
        1,
        1,
    ),
    (
        r#"quantile_over_time(-0.1, {app="a"} | unwrap x [5m])"#,
        "syntax error: unexpected -",
        1,
        20,
    ),
    (
        r#"rate(0.5, {app="a"}[5m])"#,
        "parameter 0.5 not supported for operation rate",
        1,
        6,
    ),
    (
        r#"sum_over_time({app="a"} | unwrap x | json [5m])"#,
        "only label filters may follow unwrap",
        1,
        38,
    ),
    (
        r#"rate({app="a"}[5m] offset 5)"#,
        "syntax error: unexpected NUMBER, expecting DURATION",
        1,
        27,
    ),
    (
        r#"topk(1.5, rate({app="a"}[5m]))"#,
        "invalid parameter topk(1.5,",
        1,
        1,
    ),
    (
        r#"topk(0, rate({app="a"}[5m]))"#,
        "invalid parameter (must be greater than 0)",
        1,
        1,
    ),
    (
        r#"topk(rate({app="a"}[5m]))"#,
        "parameter required for operation topk",
        1,
        1,
    ),
    (
        r#"sum(2, rate({app="a"}[5m]))"#,
        "unsupported parameter for operation sum(2,",
        1,
        1,
    ),
    (
        r#"sort by (a) (rate({app="a"}[5m]))"#,
        "sort and sort_desc doesn't allow grouping",
        1,
        1,
    ),
    (
        r#"approx_topk(2, rate({app="a"}[5m])) by (a)"#,
        "grouping not allowed for approx_topk aggregation",
        1,
        1,
    ),
    (
        r#"sum by (a) (rate({app="a"}[5m])) by (b)"#,
        "syntax error: unexpected by",
        1,
        34,
    ),
    (
        r#"sum({app="a"})"#,
        "expected a metric query, got a log query",
        1,
        5,
    ),
    (
        r#"vector(count_over_time({app="a"}[1m]))"#,
        "syntax error: unexpected COUNT_OVER_TIME, expecting NUMBER",
        1,
        8,
    ),
    (
        r#"{app="a"} + 1"#,
        "unexpected type for left leg of binary operation (+)",
        1,
        1,
    ),
    (
        r#"1 * {app="a"} |= "x""#,
        "unexpected type for right leg of binary operation (*)",
        1,
        5,
    ),
    (
        r#"1 and rate({app="a"}[5m])"#,
        "unexpected literal for left leg of logical/set binary operation (and)",
        1,
        1,
    ),
    (
        r#"rate({app="a"}[5m]) or 2"#,
        "unexpected literal for right leg of logical/set binary operation (or)",
        1,
        24,
    ),
    (
        r#"-rate({app="a"}[5m])"#,
        "syntax error: unexpected RATE, expecting NUMBER",
        1,
        2,
    ),
    (
        r#"rate({app="a"}[5m]) + on (a"#,
        "syntax error: unexpected $end, expecting , or )",
        1,
        28,
    ),
    (
        r#"label_replace(rate({app="a"}[5m]), "d", "$1", "s", "(")"#,
        "invalid regex in label_replace",
        1,
        52,
    ),
    (
        r#"label_replace(rate({app="a"}[5m]), "d", "$1", "s")"#,
        "syntax error: unexpected ), expecting ,",
        1,
        50,
    ),
    (
        r#"(rate({app="a"}[5m])"#,
        "syntax error: unexpected $end, expecting )",
        1,
        21,
    ),
    (
        r#"rate({app="a"}[5m]))"#,
        "syntax error: unexpected )",
        1,
        20,
    ),
    (r#"1e"#, "exponent has no digits", 1, 1),
    (r#"1e400"#, "unable to parse literal as a float", 1, 1),
    (
        "{app=\"a\"}\n  | logfmt\n  | x > ip(\"1.1.1.1\")",
        "syntax error: unexpected ip",
        3,
        9,
    ),
    (
        "sum(\n  rate({app=\"a\"}[5m] offset -1h)\n)",
        "negative offsets are not supported",
        2,
        29,
    ),
    (
        r#"{app="a"} | logfmt | x > -1s"#,
        "negative durations are not supported",
        1,
        26,
    ),
    (
        r#"{app="a"} @ 5"#,
        "syntax error: unexpected IDENTIFIER",
        1,
        11,
    ),
    (
        r#"rate({app="a"}[5m]) + bool"#,
        "syntax error: unexpected $end",
        1,
        27,
    ),
];

#[test]
fn invalid_queries_report_message_and_position() {
    let mut problems = Vec::new();
    for (query, message, line, column) in INVALID {
        match parse(query) {
            Ok(expr) => problems.push(format!("{query:?} parsed as {expr}")),
            Err(err) => {
                if !err.message.contains(message) || (err.line, err.column) != (*line, *column) {
                    problems.push(format!(
                        "{query:?}: got line {}, col {}: {:?}; want line {line}, col {column}: {message:?}",
                        err.line, err.column, err.message
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn error_display_is_lokis() {
    let err = parse(r#"{app="a"} | json | x > "y""#).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"parse error at line 1, col 24: syntax error: unexpected STRING, expecting NUMBER or DURATION or BYTES or +"#
    );
    assert_eq!(err.offset, 23);
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    let err = parse(&deep).unwrap_err();
    assert!(err.message.contains("nested too deeply"), "{err}");
    let long_or = format!(r#"{{app="a"}} | {}"#, vec![r#"x="1""#; 5000].join(" or "));
    assert!(parse(&long_or).unwrap_err().message.contains("too many"));
    let huge = format!(r#"{{app="a"}} |= "{}""#, "x".repeat(200_000));
    assert!(
        parse(&huge)
            .unwrap_err()
            .message
            .contains("input size too long")
    );
}

#[test]
fn nesting_below_the_limit_parses_on_a_small_stack() {
    // Test threads have 2 MiB stacks, like tokio's workers.
    let deep = format!("{}1{}", "(".repeat(190), ")".repeat(190));
    assert!(parse(&deep).is_ok());
    let deep = format!(
        "{}count_over_time({{app=\"a\"}} | {}[5m]){}",
        "sum(".repeat(60),
        vec![r#"x="1""#; 120].join(", "),
        ")".repeat(60)
    );
    parse(&deep).unwrap();
    let nested_filters = format!(
        r#"{{app="a"}} | {}x="1"{}"#,
        "(".repeat(190),
        ")".repeat(190)
    );
    assert!(parse(&nested_filters).is_ok());
}

#[test]
fn long_chains_below_the_limit_print_on_a_small_stack() {
    let long = format!(r#"{{app="a"}} | {}"#, vec![r#"x="1""#; 490].join(", "));
    let expr = parse(&long).unwrap();
    let printed = lucia_logql::format_query(&expr);
    assert_eq!(parse(&printed).unwrap(), expr);
    let long = format!(r#"{{app="a"}} | {}"#, vec![r#"x="1""#; 490].join(" or "));
    let expr = parse(&long).unwrap();
    assert_eq!(parse(&expr.to_string()).unwrap(), expr);
}
