//! End-to-end pipeline tests; expected outputs follow the conformance
//! corpus (parsers, formatters, label and line filters).

use super::*;
use crate::ast::{
    CmpOp, LabelFilter, LabelFormatOp, LabelSelector, LineFilter, LineFilterOp, LineFilterValue,
    Parser, Stage, Unwrap, UnwrapConversion,
};
use lucia_common::matchers::{MatchOp, Matcher};

fn labels(s: &str) -> Labels {
    Labels::parse(s).unwrap()
}

fn md(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Runs one line; returns (line, labels) or None.
fn run(
    stages: Vec<Stage>,
    stream: &str,
    line: &str,
    meta: &[(&str, &str)],
) -> Option<(String, String)> {
    let p = Pipeline::new(&stages).unwrap();
    let mut s = p.for_stream(&labels(stream));
    let meta = md(meta);
    s.process(0, line, &meta)
        .map(|o| (o.line.to_string(), o.labels.labels().to_string()))
}

fn lbls(stages: Vec<Stage>, stream: &str, line: &str) -> String {
    run(stages, stream, line, &[])
        .map(|(_, l)| l)
        .unwrap_or_else(|| "dropped".into())
}

fn logfmt() -> Stage {
    Stage::Parser(Parser::Logfmt {
        strict: false,
        keep_empty: false,
        expressions: vec![],
    })
}
fn logfmt_strict() -> Stage {
    Stage::Parser(Parser::Logfmt {
        strict: true,
        keep_empty: false,
        expressions: vec![],
    })
}
fn json() -> Stage {
    Stage::Parser(Parser::Json {
        expressions: vec![],
    })
}
fn string_filter(name: &str, op: MatchOp, v: &str) -> LabelFilter {
    LabelFilter::String(Matcher::new(op, name, v).unwrap())
}
fn filter(f: LabelFilter) -> Stage {
    Stage::LabelFilter(f)
}
fn no_error() -> Stage {
    filter(string_filter("__error__", MatchOp::Equal, ""))
}
fn dur(name: &str, op: CmpOp, secs: u64) -> LabelFilter {
    LabelFilter::Duration {
        name: name.into(),
        op,
        value: std::time::Duration::from_secs(secs),
    }
}
fn line_format(t: &str) -> Stage {
    Stage::LineFormat(t.into())
}
fn contains(t: &str) -> Stage {
    Stage::LineFilter(LineFilter {
        op: LineFilterOp::Contains,
        values: vec![LineFilterValue::Text(t.into())],
    })
}

#[test]
fn no_stages_returns_stream_labels() {
    let p = Pipeline::new(&[]).unwrap();
    assert!(p.is_noop());
    let mut s = p.for_stream(&labels(r#"{app="a"}"#));
    let out = s.process(1, "hello", &[]).unwrap();
    assert_eq!(out.line, "hello");
    assert_eq!(out.labels.labels().to_string(), r#"{app="a"}"#);
    assert_eq!(out.labels.hash(), labels(r#"{app="a"}"#).stable_hash());
}

#[test]
fn structured_metadata_joins_labels() {
    let (_, l) = run(vec![], r#"{app="a"}"#, "msg", &[("lvl", "error")]).unwrap();
    assert_eq!(l, r#"{app="a", lvl="error"}"#);
    let f = filter(string_filter("lvl", MatchOp::NotEqual, "error"));
    assert!(run(vec![f.clone()], r#"{app="a"}"#, "msg", &[("lvl", "error")]).is_none());
    assert!(run(vec![f], r#"{app="a"}"#, "msg", &[("lvl", "info")]).is_some());
}

#[test]
fn clashes_follow_precedence_for_every_parser() {
    let stream = r#"{app="a", sl="s", sm="s", tri="s"}"#;
    let meta = [("md", "m"), ("sm", "m"), ("tri", "m")];
    let want = r#"{app="a", md="m", md_extracted="p", sl="s", sl_extracted="p", sm="s", sm_extracted="m", tri="s", tri_extracted="p"}"#;
    let (_, l) = run(vec![logfmt()], stream, "sl=p md=p tri=p", &meta).unwrap();
    assert_eq!(l, want);
    let (_, l) = run(
        vec![json()],
        stream,
        r#"{"sl":"p","md":"p","tri":"p"}"#,
        &meta,
    )
    .unwrap();
    assert_eq!(l, want);
    let re = Stage::Parser(Parser::Regexp(
        r"sl=(?P<sl>\w+) md=(?P<md>\w+) tri=(?P<tri>\w+)".into(),
    ));
    let (_, l) = run(vec![re], stream, "sl=p md=p tri=p", &meta).unwrap();
    assert_eq!(l, want);
    let pat = Stage::Parser(Parser::Pattern("sl=<sl> md=<md> tri=<tri>".into()));
    let (_, l) = run(vec![pat], stream, "sl=p md=p tri=p", &meta).unwrap();
    assert_eq!(l, want);
    // The loser sits only under _extracted.
    let f = filter(string_filter("sl", MatchOp::Equal, "p"));
    assert!(run(vec![logfmt(), f], stream, "sl=p md=p tri=p", &meta).is_none());
}

#[test]
fn categories_are_reported() {
    let p = Pipeline::new(&[logfmt()]).unwrap();
    let mut s = p.for_stream(&labels(r#"{app="a"}"#));
    let meta = md(&[("trace", "t1")]);
    let out = s.process(0, "level=info", &meta).unwrap();
    assert_eq!(out.labels.stream().to_string(), r#"{app="a"}"#);
    assert_eq!(
        out.labels.structured_metadata().to_string(),
        r#"{trace="t1"}"#
    );
    assert_eq!(out.labels.parsed().to_string(), r#"{level="info"}"#);
}

#[test]
fn parser_errors_and_error_filter() {
    let l = lbls(vec![json()], r#"{app="a"}"#, "broken");
    assert!(l.contains(r#"__error__="JSONParserErr""#), "{l}");
    assert_eq!(
        lbls(vec![json(), no_error()], r#"{app="a"}"#, "broken"),
        "dropped"
    );
    assert_eq!(
        lbls(vec![json(), no_error()], r#"{app="a"}"#, r#"{"ok":1}"#),
        r#"{app="a", ok="1"}"#
    );
    let line = r#"good=1 bad="unterminated"#;
    assert_eq!(
        lbls(vec![logfmt()], r#"{app="a"}"#, line),
        r#"{app="a", good="1"}"#
    );
    assert!(lbls(vec![logfmt_strict()], r#"{app="a"}"#, line).contains("LogfmtParserErr"));
    assert_eq!(
        lbls(vec![logfmt_strict(), no_error()], r#"{app="a"}"#, line),
        "dropped"
    );
    // A __error__ filter before the parser cannot drop the line.
    let took = filter(dur("took", CmpOp::Gt, 1));
    let l = lbls(
        vec![no_error(), logfmt(), took.clone()],
        r#"{app="a"}"#,
        "took=oops",
    );
    assert!(l.contains("LabelFilterErr"), "{l}");
    // Dropping __error__ clears it.
    let drop = Stage::Drop(vec![
        LabelSelector::Name("__error__".into()),
        LabelSelector::Name("__error_details__".into()),
    ]);
    assert_eq!(
        lbls(vec![logfmt(), took, drop], r#"{app="a"}"#, "took=oops"),
        r#"{app="a", took="oops"}"#
    );
}

#[test]
fn errored_lines_against_label_filters() {
    let bad = "not json";
    let ip = filter(LabelFilter::Ip {
        name: "addr".into(),
        op: CmpOp::Eq,
        cidr: "1.2.3.0/24".into(),
    });
    assert!(lbls(vec![json(), ip], r#"{app="a"}"#, bad).contains("JSONParserErr"));
    assert_eq!(
        lbls(
            vec![json(), filter(dur("took", CmpOp::Gt, 1))],
            r#"{app="a"}"#,
            bad
        ),
        "dropped"
    );
    assert_eq!(
        lbls(
            vec![
                json(),
                filter(string_filter("addr", MatchOp::Equal, "1.2.3.4"))
            ],
            r#"{app="a"}"#,
            bad
        ),
        "dropped"
    );
    assert!(
        lbls(
            vec![
                json(),
                filter(string_filter("addr", MatchOp::NotEqual, "1.2.3.4"))
            ],
            r#"{app="a"}"#,
            bad
        )
        .contains("JSONParserErr")
    );
}

#[test]
fn unpack_then_logfmt() {
    let stages = vec![Stage::Parser(Parser::Unpack), logfmt()];
    let (line, l) = run(
        stages,
        r#"{app="a", lvl="stream"}"#,
        r#"{"lvl":"packed","_entry":"code=42"}"#,
        &[],
    )
    .unwrap();
    assert_eq!(line, "code=42");
    assert_eq!(
        l,
        r#"{app="a", code="42", lvl="stream", lvl_extracted="packed"}"#
    );
}

#[test]
fn build_errors() {
    let err = |s: Stage| Pipeline::new(&[s]).unwrap_err().to_string();
    assert!(
        err(Stage::Parser(Parser::Regexp("nocapture".into())))
            .contains("at least one named capture must be supplied")
    );
    assert!(err(Stage::Parser(Parser::Regexp("(?P<x>.)(?P<x>.)".into()))).contains("duplicate"));
    assert!(err(Stage::Parser(Parser::Regexp("(".into()))).contains("error parsing regexp"));
    assert!(
        err(Stage::Parser(Parser::Pattern("no captures here".into())))
            .contains("at least one capture is required")
    );
    assert!(
        err(Stage::Parser(Parser::Json {
            expressions: vec![("bad".into(), "user[".into())]
        }))
        .contains("cannot parse expression")
    );
    assert!(err(line_format("{{ nosuchfunc }}")).contains("not defined"));
    assert!(
        err(Stage::LabelFormat(vec![LabelFormatOp::Template {
            dst: "x".into(),
            template: "{{".into()
        }]))
        .contains("unclosed action")
    );
}

#[test]
fn line_format_and_filters() {
    let stream = r#"{app="a", level="error"}"#;
    let (line, _) = run(
        vec![line_format("L={{.level}}"), contains("L=error")],
        stream,
        "x",
        &[],
    )
    .unwrap();
    assert_eq!(line, "L=error");
    let (line, _) = run(vec![line_format("{{.level | upper}}")], stream, "x", &[]).unwrap();
    assert_eq!(line, "ERROR");
    let (line, _) = run(vec![line_format("V={{.missing}}")], stream, "x", &[]).unwrap();
    assert_eq!(line, "V=");
    let colored = line_format(r#"{{ printf "\x1b[31m%s\x1b[0m" .level }}"#);
    let (line, _) = run(vec![colored.clone()], stream, "x", &[]).unwrap();
    assert_eq!(line.len(), 14);
    let (line, _) = run(vec![colored, Stage::Decolorize], stream, "x", &[]).unwrap();
    assert_eq!(line, "error");
    let (line, _) = run(
        vec![line_format("{{ __line__ }}!"), line_format("{{__line__}}?")],
        stream,
        "x",
        &[],
    )
    .unwrap();
    assert_eq!(line, "x!?");
}

#[test]
fn label_format_rename_and_template() {
    let stream = r#"{app="a", method="get"}"#;
    let rename = |dst: &str, src: &str| LabelFormatOp::Rename {
        dst: dst.into(),
        src: src.into(),
    };
    let tmpl = |dst: &str, t: &str| LabelFormatOp::Template {
        dst: dst.into(),
        template: t.into(),
    };
    assert_eq!(
        lbls(
            vec![Stage::LabelFormat(vec![rename("verb", "method")])],
            stream,
            "msg"
        ),
        r#"{app="a", verb="get"}"#
    );
    assert_eq!(
        lbls(
            vec![Stage::LabelFormat(vec![tmpl("route", "{{.method}}-ok")])],
            stream,
            "msg"
        ),
        r#"{app="a", method="get", route="get-ok"}"#
    );
    assert_eq!(
        lbls(
            vec![Stage::LabelFormat(vec![tmpl("method", "{{.method}}!")])],
            stream,
            "msg"
        ),
        r#"{app="a", method="get!"}"#
    );
    let p = Pipeline::new(&[logfmt(), Stage::LabelFormat(vec![rename("lvl", "level")])]).unwrap();
    let mut s = p.for_stream(&labels(stream));
    let out = s.process(0, "level=info", &[]).unwrap();
    assert_eq!(out.labels.parsed().to_string(), r#"{lvl="info"}"#);
    assert!(Pipeline::new(&[Stage::LabelFormat(vec![rename("a", "b"), tmpl("a", "x")])]).is_err());
}

#[test]
fn drop_and_keep() {
    let stream = r#"{app="a", code="500", zone="eu"}"#;
    let name = |n: &str| LabelSelector::Name(n.into());
    let m = |n: &str, v: &str| LabelSelector::Matcher(Matcher::new(MatchOp::Equal, n, v).unwrap());
    assert_eq!(
        lbls(
            vec![Stage::Drop(vec![name("code"), name("zone")])],
            stream,
            "msg"
        ),
        r#"{app="a"}"#
    );
    assert_eq!(
        lbls(vec![Stage::Drop(vec![m("code", "500")])], stream, "msg"),
        r#"{app="a", zone="eu"}"#
    );
    assert_eq!(
        lbls(vec![Stage::Drop(vec![m("code", "200")])], stream, "msg"),
        r#"{app="a", code="500", zone="eu"}"#
    );
    assert_eq!(
        lbls(vec![Stage::Keep(vec![name("zone")])], stream, "msg"),
        r#"{zone="eu"}"#
    );
    assert_eq!(
        lbls(vec![Stage::Keep(vec![m("code", "500")])], stream, "msg"),
        r#"{code="500"}"#
    );
    assert_eq!(
        lbls(vec![Stage::Keep(vec![m("code", "200")])], stream, "msg"),
        "{}"
    );
    // keep leaves error labels.
    let l = lbls(vec![json(), Stage::Keep(vec![name("zone")])], stream, "bad");
    assert!(
        l.starts_with(r#"{__error__="JSONParserErr""#) && l.ends_with(r#"zone="eu"}"#),
        "{l}"
    );
}

#[test]
fn label_filter_precedence_and_or() {
    let x = |v| string_filter("x", MatchOp::Equal, v);
    let y = |v| string_filter("y", MatchOp::Equal, v);
    let z = |v| string_filter("z", MatchOp::Equal, v);
    // x="1" or y="1" and z="1" as the parser builds it.
    let f = LabelFilter::Or(
        Box::new(x("1")),
        Box::new(LabelFilter::And(Box::new(y("1")), Box::new(z("1")))),
    );
    let keep =
        |line: &str| run(vec![logfmt(), filter(f.clone())], r#"{app="a"}"#, line, &[]).is_some();
    assert!(keep("x=1 y=0 z=0"));
    assert!(keep("x=0 y=1 z=1"));
    assert!(!keep("x=0 y=1 z=0"));
}

#[test]
fn duration_and_bytes_filters() {
    let f = LabelFilter::And(
        Box::new(dur("duration", CmpOp::Gt, 60)),
        Box::new(LabelFilter::Bytes {
            name: "bytes".into(),
            op: CmpOp::Gt,
            value: 20_000_000,
        }),
    );
    let keep =
        |line: &str| run(vec![logfmt(), filter(f.clone())], r#"{app="a"}"#, line, &[]).is_some();
    assert!(keep("duration=90s bytes=25MB"));
    assert!(!keep("duration=30s bytes=25MB"));
    assert!(!keep("duration=90s bytes=10MB"));
    let l = lbls(
        vec![logfmt(), filter(dur("took", CmpOp::Gt, 1))],
        r#"{app="a"}"#,
        "took=90",
    );
    assert!(
        l.contains(r#"__error_details__="time: missing unit in duration \"90\"""#),
        "{l}"
    );
}

#[test]
fn unwrap_samples() {
    let stages = vec![logfmt()];
    let plain = Unwrap {
        label: "v".into(),
        conversion: None,
        post_filters: vec![string_filter("lvl", MatchOp::Equal, "error")],
    };
    let p = Pipeline::with_unwrap(&stages, &plain).unwrap();
    let mut s = p.for_stream(&labels(r#"{app="p"}"#));
    let (v, l) = s.process_sample(0, "v=2 lvl=error", &[]).unwrap();
    assert_eq!(v, 2.0);
    assert_eq!(l.labels().to_string(), r#"{app="p", lvl="error"}"#);
    assert!(s.process_sample(0, "v=9 lvl=info", &[]).is_none());
    assert!(
        s.process_sample(0, "lvl=error", &[]).is_none(),
        "missing label"
    );
    let (v, l) = s.process_sample(0, "v=abc lvl=error", &[]).unwrap();
    assert_eq!(v, 0.0);
    assert!(
        l.labels()
            .to_string()
            .contains(r#"__error__="SampleExtractionErr""#)
    );

    let d = Unwrap {
        label: "took".into(),
        conversion: Some(UnwrapConversion::Duration),
        post_filters: vec![],
    };
    let p = Pipeline::with_unwrap(&stages, &d).unwrap();
    let mut s = p.for_stream(&labels(r#"{app="p"}"#));
    assert_eq!(s.process_sample(0, "took=1.5s", &[]).unwrap().0, 1.5);
    let b = Unwrap {
        label: "size".into(),
        conversion: Some(UnwrapConversion::Bytes),
        post_filters: vec![],
    };
    let p = Pipeline::with_unwrap(&stages, &b).unwrap();
    let mut s = p.for_stream(&labels(r#"{app="p"}"#));
    assert_eq!(s.process_sample(0, "size=2KiB", &[]).unwrap().0, 2048.0);
    // Without an unwrap every line counts 1.
    let p = Pipeline::new(&stages).unwrap();
    let mut s = p.for_stream(&labels(r#"{app="p"}"#));
    assert_eq!(s.process_sample(0, "a=1", &[]).unwrap().0, 1.0);
}

#[test]
fn results_are_shared_between_lines() {
    let p = Pipeline::new(&[logfmt()]).unwrap();
    let mut s = p.for_stream(&labels(r#"{app="a"}"#));
    let a = s.process(0, "level=info", &[]).unwrap().labels.clone();
    let b = s.process(1, "level=info", &[]).unwrap().labels.clone();
    let c = s.process(2, "level=warn", &[]).unwrap().labels.clone();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(c.hash(), c.labels().stable_hash());
}

#[test]
fn pipeline_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Pipeline>();
    assert_send::<StreamPipeline>();
    assert_send_sync::<LabelsResult>();
}
