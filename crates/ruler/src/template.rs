//! Alert label and annotation templates: Go `text/template` (the common
//! engine) with Prometheus' data (`$labels`, `$value`, `$externalLabels`,
//! `$externalURL`) and template functions.

use std::collections::BTreeMap;
use std::sync::Arc;

use lucia_common::gotemplate::{
    FuncMap, Templates, Value, format_go_layout, humanize_duration, sprintf,
};

use crate::Sample;

/// What Prometheus defines before every alert template.
const DEFS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// Runs a query for the `query` template function.
pub type QueryFn = Arc<dyn Fn(&str) -> Result<Vec<Sample>, String> + Send + Sync>;

/// Checks that `text` parses as a template with Prometheus' functions.
pub fn check(text: &str) -> Result<(), String> {
    if !text.contains("{{") {
        return Ok(());
    }
    let mut t = Templates::new(funcs(None, ""));
    t.add("__check__", &format!("{DEFS}{text}"))
        .map_err(|e| e.to_string())
}

/// Expands alert templates for one alert.
pub struct Expander {
    templates: Templates,
    data: Value,
}

impl Expander {
    pub fn new(
        labels: &BTreeMap<String, String>,
        value: f64,
        external_labels: &BTreeMap<String, String>,
        external_url: &str,
        query: Option<QueryFn>,
    ) -> Self {
        let data = Value::Struct(
            [
                ("Labels".to_string(), Value::string_map(labels)),
                (
                    "ExternalLabels".to_string(),
                    Value::string_map(external_labels),
                ),
                ("ExternalURL".to_string(), Value::str(external_url)),
                ("Value".to_string(), Value::Float(value)),
            ]
            .into_iter()
            .collect(),
        );
        Self {
            templates: Templates::new(funcs(query, external_url)),
            data,
        }
    }

    /// Expands `text`; a failure becomes Prometheus' `<error expanding
    /// template: …>` text.
    pub fn expand(&self, name: &str, text: &str) -> String {
        if !text.contains("{{") {
            return text.to_string();
        }
        let mut t = self.templates.clone();
        let result = t
            .add(name, &format!("{DEFS}{text}"))
            .and_then(|()| t.execute(name, &self.data));
        match result {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("<error expanding template: {e}>");
                tracing::warn!(template = name, error = %e, "expanding alert template failed");
                msg
            }
        }
    }
}

fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Str(s) => s
            .trim()
            .parse::<f64>()
            .or_else(|_| match s.trim() {
                "+Inf" | "Inf" | "inf" => Ok(f64::INFINITY),
                "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
                "NaN" => Ok(f64::NAN),
                _ => Err(()),
            })
            .map_err(|()| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
        Value::Duration(ns) => Ok(*ns as f64 / 1e9),
        Value::Time(t) => Ok(t.timestamp_millis() as f64 / 1e3),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(format!("can't convert {other} to float")),
    }
}

fn arg(args: &[Value], i: usize, name: &str) -> Result<Value, String> {
    args.get(i)
        .cloned()
        .ok_or_else(|| format!("wrong number of args for {name}"))
}

fn g4(v: f64) -> String {
    sprintf("%.4g", &[Value::Float(v)])
}

/// Prometheus' `humanize`.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", g4(v))
}

/// Prometheus' `humanize1024`.
pub fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", g4(v))
}

fn unix_time(v: f64) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    if v.is_nan() || v.is_infinite() {
        return None;
    }
    let secs = v.floor();
    let nanos = ((v - secs) * 1e9).round() as u32;
    chrono::DateTime::from_timestamp(secs as i64, nanos.min(999_999_999)).map(|t| t.fixed_offset())
}

/// Prometheus' `humanizeTimestamp`: Go's default time format in UTC.
pub fn humanize_timestamp(v: f64) -> String {
    match unix_time(v) {
        Some(t) => format_go_layout("2006-01-02 15:04:05.999999999 -0700 MST", &t),
        None => g4(v),
    }
}

fn sample_value(s: &Sample) -> Value {
    Value::Struct(
        [
            ("Labels".to_string(), Value::string_map(&s.labels)),
            ("Value".to_string(), Value::Float(s.value)),
        ]
        .into_iter()
        .collect(),
    )
}

fn field(v: &Value, name: &str) -> Value {
    match v {
        Value::Struct(m) | Value::Map(m) => m.get(name).cloned().unwrap_or(Value::Nil),
        _ => Value::Nil,
    }
}

fn go_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

/// Go's regexp replacement template (`$1`, `${name}`) in Rust regex's syntax.
fn go_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| e.to_string())
}

/// Prometheus' template functions on top of Go's builtins.
pub fn funcs(query: Option<QueryFn>, external_url: &str) -> FuncMap {
    let mut m = FuncMap::default();
    m.insert("humanize", |a| {
        Ok(Value::Str(humanize(to_float(&arg(a, 0, "humanize")?)?)))
    });
    m.insert("humanize1024", |a| {
        Ok(Value::Str(humanize1024(to_float(&arg(
            a,
            0,
            "humanize1024",
        )?)?)))
    });
    m.insert("humanizeDuration", |a| {
        Ok(Value::Str(humanize_duration(to_float(&arg(
            a,
            0,
            "humanizeDuration",
        )?)?)))
    });
    m.insert("humanizePercentage", |a| {
        Ok(Value::Str(format!(
            "{}%",
            g4(to_float(&arg(a, 0, "humanizePercentage")?)? * 100.0)
        )))
    });
    m.insert("humanizeTimestamp", |a| {
        Ok(Value::Str(humanize_timestamp(to_float(&arg(
            a,
            0,
            "humanizeTimestamp",
        )?)?)))
    });
    m.insert("toTime", |a| {
        let v = to_float(&arg(a, 0, "toTime")?)?;
        unix_time(v)
            .map(Value::Time)
            .ok_or_else(|| format!("cannot convert {v} to time.Time"))
    });
    m.insert("toDuration", |a| {
        let v = to_float(&arg(a, 0, "toDuration")?)?;
        Ok(Value::Duration((v * 1e9).round() as i64))
    });
    m.insert("parseDuration", |a| {
        let s = arg(a, 0, "parseDuration")?.as_string();
        lucia_common::duration::parse_prometheus_duration(&s)
            .map(|d| Value::Float(d.as_secs_f64()))
            .map_err(|e| e.to_string())
    });
    m.insert("title", |a| {
        Ok(Value::Str(go_title(&arg(a, 0, "title")?.as_string())))
    });
    m.insert("toUpper", |a| {
        Ok(Value::Str(arg(a, 0, "toUpper")?.as_string().to_uppercase()))
    });
    m.insert("toLower", |a| {
        Ok(Value::Str(arg(a, 0, "toLower")?.as_string().to_lowercase()))
    });
    m.insert("match", |a| {
        let re = go_regex(&arg(a, 0, "match")?.as_string())?;
        Ok(Value::Bool(re.is_match(&arg(a, 1, "match")?.as_string())))
    });
    m.insert("reReplaceAll", |a| {
        let re = go_regex(&arg(a, 0, "reReplaceAll")?.as_string())?;
        let repl = arg(a, 1, "reReplaceAll")?.as_string();
        let text = arg(a, 2, "reReplaceAll")?.as_string();
        Ok(Value::Str(
            re.replace_all(&text, repl.as_str()).into_owned(),
        ))
    });
    m.insert("safeHtml", |a| {
        Ok(Value::Str(arg(a, 0, "safeHtml")?.as_string()))
    });
    m.insert("stripPort", |a| {
        let s = arg(a, 0, "stripPort")?.as_string();
        let out = if let Some(rest) = s.strip_prefix('[') {
            rest.split(']').next().unwrap_or(rest).to_string()
        } else {
            match s.rsplit_once(':') {
                Some((host, port))
                    if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) =>
                {
                    host.to_string()
                }
                _ => s.clone(),
            }
        };
        Ok(Value::Str(out))
    });
    m.insert("stripDomain", |a| {
        let s = arg(a, 0, "stripDomain")?.as_string();
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => {
                (h.to_string(), format!(":{p}"))
            }
            _ => (s.clone(), String::new()),
        };
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(Value::Str(s));
        }
        let short = host.split('.').next().unwrap_or(&host).to_string();
        Ok(Value::Str(format!("{short}{port}")))
    });
    m.insert("first", |a| match arg(a, 0, "first")? {
        Value::List(l) => l
            .first()
            .cloned()
            .ok_or_else(|| "first() called on vector with no elements".to_string()),
        _ => Err("first() called on a non-vector".into()),
    });
    m.insert("label", |a| {
        let name = arg(a, 0, "label")?.as_string();
        let s = arg(a, 1, "label")?;
        Ok(match field(&s, "Labels") {
            Value::Map(m) => m.get(&name).cloned().unwrap_or(Value::str("")),
            _ => Value::str(""),
        })
    });
    m.insert("value", |a| Ok(field(&arg(a, 0, "value")?, "Value")));
    m.insert("strvalue", |a| {
        Ok(match field(&arg(a, 0, "strvalue")?, "Labels") {
            Value::Map(m) => m.get("__value__").cloned().unwrap_or(Value::str("")),
            _ => Value::str(""),
        })
    });
    m.insert("sortByLabel", |a| {
        let name = arg(a, 0, "sortByLabel")?.as_string();
        match arg(a, 1, "sortByLabel")? {
            Value::List(mut l) => {
                l.sort_by_key(|s| match field(s, "Labels") {
                    Value::Map(m) => m.get(&name).map(Value::as_string).unwrap_or_default(),
                    _ => String::new(),
                });
                Ok(Value::List(l))
            }
            _ => Err("sortByLabel called on a non-vector".into()),
        }
    });
    m.insert("args", |a| {
        Ok(Value::Map(
            a.iter()
                .enumerate()
                .map(|(i, v)| (format!("arg{i}"), v.clone()))
                .collect(),
        ))
    });
    let url = external_url.to_string();
    m.insert("externalURL", move |_| Ok(Value::Str(url.clone())));
    let prefix = external_url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        .unwrap_or_default();
    m.insert("pathPrefix", move |_| Ok(Value::Str(prefix.clone())));
    m.insert("graphLink", |a| {
        let expr = arg(a, 0, "graphLink")?.as_string();
        Ok(Value::Str(graph_link(&expr, 0)))
    });
    m.insert("tableLink", |a| {
        let expr = arg(a, 0, "tableLink")?.as_string();
        Ok(Value::Str(graph_link(&expr, 1)))
    });
    m.insert("query", move |a| {
        let q = arg(a, 0, "query")?.as_string();
        match &query {
            Some(run) => Ok(Value::List(run(&q)?.iter().map(sample_value).collect())),
            None => Err("query is not available here".into()),
        }
    });
    m
}

/// Prometheus' `graphLink` (tab 0) and `tableLink` (tab 1).
pub fn graph_link(expr: &str, tab: u8) -> String {
    let escaped: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    format!("/graph?g0.expr={escaped}&g0.tab={tab}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str) -> String {
        let labels: BTreeMap<String, String> =
            [("instance".to_string(), "host:9100".to_string())].into();
        let ext: BTreeMap<String, String> = [("cluster".to_string(), "eu".to_string())].into();
        let query: QueryFn = Arc::new(|q: &str| {
            Ok(vec![Sample {
                labels: [("q".to_string(), q.to_string())].into(),
                value: 42.0,
            }])
        });
        Expander::new(&labels, 1234.5678, &ext, "http://lucia:3100", Some(query)).expand("t", text)
    }

    #[test]
    fn prometheus_data_and_functions() {
        assert_eq!(
            expand("{{ $labels.instance }} {{ $value }}"),
            "host:9100 1234.5678"
        );
        assert_eq!(
            expand("{{ $externalLabels.cluster }} {{ $externalURL }}"),
            "eu http://lucia:3100"
        );
        assert_eq!(expand("{{ humanize $value }}"), "1.235k");
        assert_eq!(expand("{{ humanize 0.00123 }}"), "1.23m");
        assert_eq!(expand("{{ humanize1024 1048576.0 }}"), "1Mi");
        assert_eq!(expand("{{ humanizePercentage 0.1234 }}"), "12.34%");
        assert_eq!(expand("{{ humanizeDuration 3725.0 }}"), "1h 2m 5s");
        assert_eq!(
            expand("{{ humanizeTimestamp 1.0 }}"),
            "1970-01-01 00:00:01 +0000 UTC"
        );
        assert_eq!(expand("{{ printf \"%.1f\" $value }}"), "1234.6");
        assert_eq!(
            expand("{{ title \"hello world\" }} {{ toUpper \"a\" }}"),
            "Hello World A"
        );
        assert_eq!(
            expand("{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}"),
            "host"
        );
        assert_eq!(expand("{{ stripPort $labels.instance }}"), "host");
        assert_eq!(
            expand(
                "{{ with query \"up\" }}{{ . | first | value }} {{ . | first | label \"q\" }}{{ end }}"
            ),
            "42 up"
        );
        assert_eq!(expand("{{ $labels.missing }}"), "");
        assert!(expand("{{ nope }}").starts_with("<error expanding template"));
        assert!(check("{{ humanize $value }}").is_ok());
        assert!(check("{{ if }}").is_err());
    }
}
