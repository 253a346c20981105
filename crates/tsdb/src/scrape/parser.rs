//! The Prometheus text exposition format 0.0.4 (and 1.0.0's quoted names)
//! and the OpenMetrics 1.0 text format.
//!
//! Histograms and summaries come out as their classic series (`_bucket`,
//! `_sum`, `_count`, quantiles); `_created` series are ordinary series, as
//! Prometheus ingests them; exemplars are checked for shape and dropped.
//! Timestamps are milliseconds in the text format and (fractional) seconds
//! in OpenMetrics; both come out in milliseconds. The parser never panics
//! on any input (fuzzed with proptest).

use std::fmt;

/// The two text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (and 1.0.0).
    PrometheusText,
    /// `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    /// The format of a `Content-Type`, as Prometheus picks it; `None` for a
    /// blank, unparsable or unsupported type.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let media = content_type.split(';').next()?.trim().to_ascii_lowercase();
        match media.as_str() {
            "application/openmetrics-text" => Some(Format::OpenMetrics),
            "text/plain" => Some(Format::PrometheusText),
            _ => None,
        }
    }
}

/// One sample of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The series as written (`name{labels}`), a key for caches.
    pub series: &'a str,
    pub name: String,
    /// Label pairs in the order written (without `__name__`).
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line has a timestamp.
    pub timestamp_ms: Option<i64>,
}

/// Metadata lines (`# TYPE`, `# HELP`, `# UNIT`).
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub family: String,
    pub kind: Option<String>,
    pub help: Option<String>,
    pub unit: Option<String>,
}

/// What a scrape body holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition<'a> {
    pub samples: Vec<Sample<'a>>,
    pub metadata: Vec<Metadata>,
}

/// Why a body does not parse: the line (1-based) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole body.
pub fn parse(body: &str, format: Format) -> Result<Exposition<'_>, ParseError> {
    let mut out = Exposition::default();
    let mut saw_eof = false;
    let om = format == Format::OpenMetrics;
    let mut lines = body.split('\n').enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        let number = index + 1;
        let err = |message: String| ParseError {
            line: number,
            message,
        };
        let line = if om {
            raw
        } else {
            raw.strip_suffix('\r').unwrap_or(raw)
        };
        if saw_eof {
            // Only the newline that ends `# EOF` may follow it.
            if line.is_empty() && lines.peek().is_none() {
                break;
            }
            return Err(err("unexpected data after # EOF".into()));
        }
        if om {
            if line.is_empty() {
                if lines.peek().is_none() {
                    break;
                }
                return Err(err("unexpected empty line".into()));
            }
        } else if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if om && comment == " EOF" {
                saw_eof = true;
                continue;
            }
            parse_comment(comment, om, &mut out.metadata).map_err(err)?;
            continue;
        }
        let sample = parse_sample(line, om).map_err(err)?;
        out.samples.push(sample);
    }
    if om && !saw_eof {
        return Err(ParseError {
            line: 0,
            message: "data does not end with # EOF".into(),
        });
    }
    Ok(out)
}

fn parse_comment(comment: &str, om: bool, metadata: &mut Vec<Metadata>) -> Result<(), String> {
    let text = if om {
        match comment.strip_prefix(' ') {
            Some(t) => t,
            None => return Err("comments must start with \"# \"".into()),
        }
    } else {
        comment.trim_start_matches([' ', '\t'])
    };
    let (keyword, rest) = match text.split_once([' ', '\t']) {
        Some((k, r)) => (k, r),
        None => (text, ""),
    };
    if !matches!(keyword, "TYPE" | "HELP" | "UNIT") || (!om && keyword == "UNIT") {
        if om {
            return Err(format!(
                "expected # TYPE, # HELP, # UNIT or # EOF, got {:?}",
                truncate(comment)
            ));
        }
        return Ok(()); // An ordinary comment.
    }
    let rest = if om {
        rest
    } else {
        rest.trim_start_matches([' ', '\t'])
    };
    let (name, value) = match rest.split_once([' ', '\t']) {
        Some((n, v)) => (n, v),
        None => (rest, ""),
    };
    if !is_metric_name(name) {
        return Err(format!(
            "invalid metric name in # {keyword}: {:?}",
            truncate(name)
        ));
    }
    let entry = match metadata.last_mut() {
        Some(m) if m.family == name => m,
        _ => {
            metadata.push(Metadata {
                family: name.to_string(),
                kind: None,
                help: None,
                unit: None,
            });
            let last = metadata.len() - 1;
            &mut metadata[last]
        }
    };
    match keyword {
        "TYPE" => {
            let kind = value.trim();
            let known: &[&str] = if om {
                &[
                    "counter",
                    "gauge",
                    "histogram",
                    "gaugehistogram",
                    "summary",
                    "info",
                    "stateset",
                    "unknown",
                ]
            } else {
                &["counter", "gauge", "histogram", "summary", "untyped"]
            };
            if !known.contains(&kind) {
                return Err(format!("invalid metric type {:?}", truncate(kind)));
            }
            entry.kind = Some(kind.to_string());
        }
        "HELP" => entry.help = Some(unescape_help(value, om)),
        _ => entry.unit = Some(value.to_string()),
    }
    Ok(())
}

fn unescape_help(text: &str, om: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if om => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A cursor over one line.
struct Cursor<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.line.as_bytes().get(self.pos).copied()
    }

    fn rest(&self) -> &'a str {
        self.line.get(self.pos..).unwrap_or("")
    }

    fn skip_blanks(&mut self, om: bool) {
        if om {
            return;
        }
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected {what}, got {:?}", truncate(self.rest())))
        }
    }

    /// A bare name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (colons only for metrics).
    fn name(&mut self, metric: bool) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphabetic()
                || b == b'_'
                || (metric && b == b':')
                || (self.pos > start && b.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        self.line.get(start..self.pos).unwrap_or("")
    }

    /// A double-quoted string with `\\`, `\"` and `\n` escapes.
    fn quoted(&mut self) -> Result<String, String> {
        self.expect(b'"', "a quoted string")?;
        let mut out = String::new();
        let rest = self.rest();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                },
                '\n' => break,
                c => out.push(c),
            }
        }
        Err("unterminated quoted string".into())
    }

    /// A token up to the next blank (or the end).
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b' ' || b == b'\t' {
                break;
            }
            self.pos += 1;
        }
        self.line.get(start..self.pos).unwrap_or("")
    }
}

fn parse_sample(line: &str, om: bool) -> Result<Sample<'_>, String> {
    let mut c = Cursor { line, pos: 0 };
    c.skip_blanks(om);
    let series_start = c.pos;
    let mut name = c.name(true).to_string();
    let mut labels = Vec::new();
    let after_name = c.pos;
    c.skip_blanks(om);
    if c.peek() != Some(b'{') {
        c.pos = after_name;
    }
    if c.peek() == Some(b'{') {
        c.pos += 1;
        parse_labels(&mut c, om, &mut name, &mut labels)?;
    }
    if name.is_empty() {
        return Err(format!(
            "expected a metric name, got {:?}",
            truncate(c.line.get(series_start..).unwrap_or(""))
        ));
    }
    let series = line.get(series_start..c.pos).unwrap_or("").trim_end();
    // One blank, then the value.
    match c.peek() {
        Some(b' ') => c.pos += 1,
        Some(b'\t') if !om => c.pos += 1,
        _ => {
            return Err(format!(
                "expected a value after the metric, got {:?}",
                truncate(c.rest())
            ));
        }
    }
    c.skip_blanks(om);
    let value_text = c.token();
    let value = parse_value(value_text, om)
        .ok_or_else(|| format!("invalid value {:?}", truncate(value_text)))?;
    let mut timestamp_ms = None;
    let mut exemplar = None;
    if c.peek().is_some() {
        if om {
            c.expect(b' ', "one space after the value")?;
        } else {
            c.skip_blanks(false);
        }
        if om && c.rest().starts_with("# ") {
            exemplar = Some(c.rest());
        } else if c.peek().is_some() {
            let text = c.token();
            timestamp_ms = Some(parse_timestamp(text, om)?);
            if c.peek().is_some() {
                if om {
                    c.expect(b' ', "one space after the timestamp")?;
                    exemplar = Some(c.rest());
                } else {
                    c.skip_blanks(false);
                    if c.peek().is_some() {
                        return Err(format!(
                            "unexpected text after the sample: {:?}",
                            truncate(c.rest())
                        ));
                    }
                }
            }
        }
    }
    if let Some(text) = exemplar {
        match text.strip_prefix("# ") {
            Some(e) => check_exemplar(e)?,
            None => {
                return Err(format!(
                    "unexpected text after the sample: {:?}",
                    truncate(text)
                ));
            }
        }
    }
    check_labels(&name, &labels)?;
    Ok(Sample {
        series,
        name,
        labels,
        value,
        timestamp_ms,
    })
}

/// Parses `label="value", …}` (the `{` is consumed). A quoted string with
/// no `=` after it is the metric name (text format 1.0.0).
fn parse_labels(
    c: &mut Cursor<'_>,
    om: bool,
    name: &mut String,
    labels: &mut Vec<(String, String)>,
) -> Result<(), String> {
    loop {
        c.skip_blanks(om);
        match c.peek() {
            Some(b'}') => {
                c.pos += 1;
                return Ok(());
            }
            None => return Err("unterminated label set: expected }".into()),
            _ => {}
        }
        let label = if c.peek() == Some(b'"') {
            c.quoted()?
        } else {
            let bare = c.name(false);
            if bare.is_empty() {
                return Err(format!(
                    "expected a label name, got {:?}",
                    truncate(c.rest())
                ));
            }
            bare.to_string()
        };
        c.skip_blanks(om);
        if c.peek() == Some(b'=') {
            c.pos += 1;
            c.skip_blanks(om);
            let value = c.quoted()?;
            labels.push((label, value));
        } else if name.is_empty() && labels.is_empty() {
            *name = label;
        } else {
            return Err(format!("expected = after label {label:?}"));
        }
        c.skip_blanks(om);
        match c.peek() {
            Some(b',') => c.pos += 1,
            Some(b'}') => {}
            _ => {
                return Err(format!(
                    "expected , or }} in the label set, got {:?}",
                    truncate(c.rest())
                ));
            }
        }
    }
}

fn check_labels(name: &str, labels: &[(String, String)]) -> Result<(), String> {
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {:?}", truncate(name)));
    }
    for (i, (label, _)) in labels.iter().enumerate() {
        if !lucia_common::labels::is_valid_label_name(label) || label == "__name__" {
            return Err(format!("invalid label name {:?}", truncate(label)));
        }
        if labels[..i].iter().any(|(other, _)| other == label) {
            return Err(format!("duplicate label name {label:?}"));
        }
    }
    Ok(())
}

fn is_metric_name(name: &str) -> bool {
    lucia_common::labels::is_valid_metric_name(name)
}

fn parse_value(text: &str, om: bool) -> Option<f64> {
    if text.is_empty() {
        return None;
    }
    // Go's ParseFloat spellings that Rust's parser also takes, and no
    // others (Rust accepts "infinity" and "inf" alike).
    match text.to_ascii_lowercase().as_str() {
        "nan" => return Some(f64::NAN),
        "+inf" | "inf" | "+infinity" | "infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    if om && text.contains('_') {
        return None;
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    text.parse::<f64>().ok()
}

fn parse_timestamp(text: &str, om: bool) -> Result<i64, String> {
    let invalid = || format!("invalid timestamp {:?}", truncate(text));
    if om {
        let seconds = parse_value(text, true).ok_or_else(invalid)?;
        if !seconds.is_finite() {
            return Err(invalid());
        }
        let ms = seconds * 1000.0;
        if ms.abs() >= 9.2e18 {
            return Err(invalid());
        }
        Ok(ms as i64)
    } else {
        text.parse::<i64>().map_err(|_| invalid())
    }
}

/// `{labels} value [timestamp]` of an OpenMetrics exemplar.
fn check_exemplar(text: &str) -> Result<(), String> {
    let mut c = Cursor { line: text, pos: 0 };
    c.expect(b'{', "{ to open the exemplar's labels")?;
    let mut name = String::from("exemplar");
    let mut labels = Vec::new();
    parse_labels(&mut c, true, &mut name, &mut labels)?;
    c.expect(b' ', "a value in the exemplar")?;
    let value = c.token();
    parse_value(value, true).ok_or_else(|| format!("invalid exemplar value {value:?}"))?;
    if c.peek() == Some(b' ') {
        c.pos += 1;
        let ts = c.token();
        parse_timestamp(ts, true)?;
    }
    if c.peek().is_some() {
        return Err(format!(
            "unexpected text after the exemplar: {:?}",
            truncate(c.rest())
        ));
    }
    Ok(())
}

/// At most 50 characters of `text`, for error messages.
fn truncate(text: &str) -> String {
    match text.char_indices().nth(50) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Flat = (String, Vec<(String, String)>, f64, Option<i64>);

    fn samples(body: &str, format: Format) -> Vec<Flat> {
        parse(body, format)
            .unwrap()
            .samples
            .into_iter()
            .map(|s| (s.name, s.labels, s.value, s.timestamp_ms))
            .collect()
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn text_format() {
        let body = "# HELP http_requests_total The total number of HTTP requests.\n\
# TYPE http_requests_total counter\n\
http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{method=\"post\",code=\"400\",}    3 1395066363000\n\
\n\
# Escaping in label values:\n\
msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
metric_without_timestamp_and_labels 12.47\n\
something_weird{problem=\"division by zero\"} +Inf -3982045\n\
nan_value NaN\n\
neg -Inf\n\
\t indented{a=\"b\"}\t 1\n\
# TYPE rpc_duration_seconds summary\n\
rpc_duration_seconds{quantile=\"0.5\"} 4773\n\
rpc_duration_seconds_sum 1.7560473e+07\n\
rpc_duration_seconds_count 2693\n\
empty{} 2\n";
        let got = samples(body, Format::PrometheusText);
        assert_eq!(got.len(), 12);
        assert_eq!(
            got[0],
            (
                "http_requests_total".into(),
                l(&[("method", "post"), ("code", "200")]),
                1027.0,
                Some(1395066363000)
            )
        );
        assert_eq!(got[1].1, l(&[("method", "post"), ("code", "400")]));
        assert_eq!(
            got[2].1,
            l(&[
                ("path", "C:\\DIR\\FILE.TXT"),
                ("error", "Cannot find file:\n\"FILE.TXT\"")
            ])
        );
        assert_eq!(
            got[3],
            (
                "metric_without_timestamp_and_labels".into(),
                vec![],
                12.47,
                None
            )
        );
        assert_eq!(got[4].2, f64::INFINITY);
        assert_eq!(got[4].3, Some(-3982045));
        assert!(got[5].2.is_nan());
        assert_eq!(got[6].2, f64::NEG_INFINITY);
        assert_eq!(got[7], ("indented".into(), l(&[("a", "b")]), 1.0, None));
        assert_eq!(got[9].2, 1.7560473e7);
        assert_eq!(got[11], ("empty".into(), vec![], 2.0, None));
        let parsed = parse(body, Format::PrometheusText).unwrap();
        assert_eq!(
            parsed.samples[0].series,
            "http_requests_total{method=\"post\",code=\"200\"}"
        );
        assert_eq!(parsed.metadata[0].kind.as_deref(), Some("counter"));
        assert_eq!(
            parsed.metadata[0].help.as_deref(),
            Some("The total number of HTTP requests.")
        );
    }

    #[test]
    fn quoted_metric_names() {
        let got = samples("{\"my_metric\", a=\"1\"} 5\n", Format::PrometheusText);
        assert_eq!(got[0], ("my_metric".into(), l(&[("a", "1")]), 5.0, None));
    }

    #[test]
    fn openmetrics() {
        let body = "# TYPE acme_http_router_request_seconds summary\n\
# UNIT acme_http_router_request_seconds seconds\n\
# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.\n\
acme_http_router_request_seconds_sum{path=\"/api/v1\",method=\"GET\"} 9036.32\n\
acme_http_router_request_seconds_count{path=\"/api/v1\",method=\"GET\"} 807283.0\n\
acme_http_router_request_seconds_created{path=\"/api/v1\",method=\"GET\"} 1605281325.0\n\
# TYPE foo histogram\n\
foo_bucket{le=\"0.01\"} 0\n\
foo_bucket{le=\"+Inf\"} 17 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\n\
foo_count 17 1520879607.789\n\
# TYPE c counter\n\
c_total 3 # {a=\"b\"} 1 1520879607.789\n\
# EOF\n";
        let got = samples(body, Format::OpenMetrics);
        assert_eq!(got.len(), 7);
        assert_eq!(got[2].0, "acme_http_router_request_seconds_created");
        assert_eq!(got[4].3, Some(1520879607789));
        assert_eq!(got[5].3, Some(1520879607789));
        assert_eq!(got[6], ("c_total".into(), vec![], 3.0, None));
        let parsed = parse(body, Format::OpenMetrics).unwrap();
        assert_eq!(parsed.metadata[0].unit.as_deref(), Some("seconds"));
        // # EOF is mandatory, and nothing may follow it.
        let err = parse("a 1\n", Format::OpenMetrics).unwrap_err();
        assert!(err.to_string().contains("# EOF"), "{err}");
        let err = parse("a 1\n# EOF\nb 2\n", Format::OpenMetrics).unwrap_err();
        assert!(err.to_string().contains("after # EOF"), "{err}");
        assert!(parse("a 1\n# EOF", Format::OpenMetrics).is_ok());
    }

    #[test]
    fn garbage_fails_with_the_line() {
        for (body, wanted) in [
            ("<html><body>hello</body></html>\n", "line 1"),
            ("ok 1\nbad{a=\"1\" 2\n", "line 2"),
            ("ok 1\nbad{a=1} 2\n", "quoted string"),
            ("metric\n", "expected a value"),
            ("metric abc\n", "invalid value"),
            ("metric 1 1.5\n", "invalid timestamp"),
            ("metric 1 2 3\n", "unexpected text"),
            ("m{a=\"1\",a=\"2\"} 1\n", "duplicate label"),
            ("m{__name__=\"x\"} 1\n", "invalid label name"),
            ("m{a=\"unterminated} 1\n", "unterminated"),
        ] {
            let err = parse(body, Format::PrometheusText).unwrap_err().to_string();
            assert!(err.contains(wanted), "{body:?}: {err}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::from_content_type("text/plain; version=0.0.4; charset=utf-8"),
            Some(Format::PrometheusText)
        );
        assert_eq!(
            Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Some(Format::OpenMetrics)
        );
        assert_eq!(Format::from_content_type("text/html"), None);
        assert_eq!(Format::from_content_type(""), None);
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        fn exposition_line() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z_:]{1,8}(\\{([a-z_]{1,4}=\"[ -~]{0,6}\",?){0,3}\\})? [-+0-9.eEINaf]{1,8}( [0-9.]{1,6})?",
                "# (TYPE|HELP|UNIT|EOF) [a-z_]{0,5} [a-z ]{0,8}",
                "[ -~]{0,24}",
                ".{0,12}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn never_panics(lines in proptest::collection::vec(exposition_line(), 0..12)) {
                let body = lines.join("\n");
                let _ = parse(&body, Format::PrometheusText);
                let _ = parse(&body, Format::OpenMetrics);
            }

            #[test]
            fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let body = String::from_utf8_lossy(&bytes);
                let _ = parse(&body, Format::PrometheusText);
                let _ = parse(&body, Format::OpenMetrics);
            }

            #[test]
            fn valid_samples_round_trip(
                name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,10}",
                labels in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,6}", "[ -~\n]{0,8}", 0..4),
                value in any::<f64>(),
                ts in proptest::option::of(any::<i64>()),
            ) {
                prop_assume!(!labels.contains_key("__name__"));
                let mut line = name.clone();
                line.push('{');
                for (k, v) in &labels {
                    let escaped = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                    line.push_str(&format!("{k}=\"{escaped}\","));
                }
                line.push_str(&format!("}} {value:?}"));
                if let Some(ts) = ts {
                    line.push_str(&format!(" {ts}"));
                }
                let parsed = parse(&line, Format::PrometheusText).unwrap();
                let s = &parsed.samples[0];
                prop_assert_eq!(&s.name, &name);
                let want: Vec<(String, String)> = labels.into_iter().collect();
                prop_assert_eq!(&s.labels, &want);
                prop_assert!(s.value == value || (s.value.is_nan() && value.is_nan()));
                prop_assert_eq!(s.timestamp_ms, ts);
            }
        }
    }
}
