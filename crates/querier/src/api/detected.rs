//! Field detection for `detected_fields`: structured metadata, and the
//! fields of lines that are JSON objects or logfmt.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::source::StreamData;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Field {
    pub values: BTreeSet<String>,
    /// `json`, `logfmt`; empty for structured metadata.
    pub parsers: BTreeSet<&'static str>,
    pub kind: Kind,
    /// The keys leading to a JSON field, for `| json name="a.b"`.
    pub json_path: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Unknown,
    Int,
    Float,
    Boolean,
    Duration,
    Bytes,
    String,
}

impl Kind {
    fn of(value: &str) -> Self {
        if value.parse::<i64>().is_ok() {
            Kind::Int
        } else if value.parse::<f64>().is_ok() {
            Kind::Float
        } else if matches!(
            value,
            "t" | "T" | "true" | "TRUE" | "True" | "f" | "F" | "false" | "FALSE" | "False"
        ) {
            // What Go's strconv.ParseBool accepts (Loki's detection).
            Kind::Boolean
        } else if value.chars().any(|c| c.is_ascii_alphabetic())
            && value.starts_with(|c: char| c.is_ascii_digit())
            && lucia_common::duration::parse_go_duration(value).is_ok()
        {
            Kind::Duration
        } else if is_bytes(value) {
            Kind::Bytes
        } else {
            Kind::String
        }
    }

    /// The type that holds both (ints widen to floats, anything else to string).
    fn merge(self, other: Kind) -> Kind {
        match (self, other) {
            (Kind::Unknown, k) | (k, Kind::Unknown) => k,
            (a, b) if a == b => a,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            _ => Kind::String,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Boolean => "boolean",
            Kind::Duration => "duration",
            Kind::Bytes => "bytes",
            Kind::Unknown | Kind::String => "string",
        }
    }
}

/// The fields of the first `line_limit` entries.
pub fn detect(streams: &[StreamData], line_limit: usize) -> BTreeMap<String, Field> {
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    let mut add =
        |name: &str, value: &str, parser: Option<&'static str>, path: Option<Vec<String>>| {
            let field = fields.entry(name.to_string()).or_default();
            if field.json_path.is_none() {
                field.json_path = path;
            }
            field.kind = field.kind.merge(Kind::of(value));
            field.values.insert(value.to_string());
            if let Some(p) = parser {
                field.parsers.insert(p);
            }
        };
    for entry in streams
        .iter()
        .flat_map(|s| s.entries.iter())
        .take(line_limit)
    {
        for (name, value) in &entry.metadata {
            add(name, value, None, None);
        }
        let line = entry.line.trim();
        if line.starts_with('{')
            && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line)
        {
            let mut flat = Vec::new();
            flatten_json("", &mut Vec::new(), &Value::Object(map), &mut flat);
            for (name, path, value) in flat {
                add(&name, &value, Some("json"), Some(path));
            }
            continue;
        }
        for (name, value) in logfmt(line) {
            add(&name, &value, Some("logfmt"), None);
        }
    }
    fields
}

/// A size such as `10MB`, `1.5 GiB` or `512kb` (Loki detects these with
/// go-humanize's ParseBytes).
fn is_bytes(value: &str) -> bool {
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(number_end);
    if number.is_empty() || number.replace(',', "").parse::<f64>().is_err() {
        return false;
    }
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    matches!(unit, "" | "k" | "m" | "g" | "t" | "p" | "e" | "z" | "y")
}

/// `detected_fields` entries, as Loki lists them.
pub fn fields_json(fields: &BTreeMap<String, Field>, limit: usize) -> Vec<Value> {
    fields
        .iter()
        .take(limit)
        .map(|(name, f)| {
            let parsers: Value = if f.parsers.is_empty() {
                Value::Null
            } else {
                json!(f.parsers)
            };
            let mut field = json!({
                "label": name,
                "type": f.kind.as_str(),
                "cardinality": f.values.len(),
                "parsers": parsers,
            });
            if let Some(path) = &f.json_path {
                field["jsonPath"] = json!(path);
            }
            field
        })
        .collect()
}

/// Nested keys joined with `_`, as Loki's json parser names them, with
/// the original keys that lead to each value.
fn flatten_json(
    prefix: &str,
    path: &mut Vec<String>,
    value: &Value,
    out: &mut Vec<(String, Vec<String>, String)>,
) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = sanitize(k);
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}_{key}")
                };
                path.push(k.clone());
                flatten_json(&name, path, v, out);
                path.pop();
            }
        }
        Value::Array(_) | Value::Null => {}
        Value::String(s) => out.push((prefix.to_string(), path.clone(), s.clone())),
        other => out.push((prefix.to_string(), path.clone(), other.to_string())),
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `key=value` pairs of a logfmt line (values may be double-quoted).
fn logfmt(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = &rest[key_end..];
        if !rest.starts_with('=') {
            // A bare word: not logfmt.
            if !key.is_empty() && key.contains(|c: char| !c.is_ascii_alphanumeric()) {
                return Vec::new();
            }
            continue;
        }
        rest = &rest[1..];
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let Some(end) = end else { return out };
            let value = quoted[..end].replace("\\\"", "\"");
            rest = &quoted[end + 1..];
            value
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let value = rest[..end].to_string();
            rest = &rest[end..];
            value
        };
        if !key.is_empty() {
            out.push((sanitize(key), value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucia_common::chunk::Entry;
    use lucia_common::labels::Labels;

    #[test]
    fn detects_logfmt_json_and_metadata() {
        let entries = vec![
            Entry {
                ts: 1,
                line: r#"level=info msg="hello world" took=15ms status=200"#.into(),
                metadata: vec![("trace_id".into(), "abc".into())],
            },
            Entry {
                ts: 2,
                line: r#"{"level":"error","req":{"status":500.5}}"#.into(),
                metadata: vec![],
            },
        ];
        let streams = vec![StreamData {
            labels: Labels::from_pairs([("app", "a")]),
            entries,
        }];
        let fields = detect(&streams, 1000);
        assert_eq!(fields["level"].values.len(), 2);
        assert_eq!(fields["level"].parsers, BTreeSet::from(["json", "logfmt"]));
        assert_eq!(fields["msg"].values.iter().next().unwrap(), "hello world");
        assert_eq!(fields["took"].kind, Kind::Duration);
        assert_eq!(fields["status"].kind, Kind::Int);
        assert_eq!(fields["req_status"].kind, Kind::Float);
        assert_eq!(Kind::of("10MB"), Kind::Bytes);
        assert_eq!(Kind::of("1.5 GiB"), Kind::Bytes);
        assert_eq!(Kind::of("True"), Kind::Boolean);
        assert_eq!(Kind::of("15ms"), Kind::Duration);
        assert_eq!(Kind::of("GET"), Kind::String);
        assert!(fields["trace_id"].parsers.is_empty());
        let listed = fields_json(&fields, 1000);
        let trace = listed.iter().find(|f| f["label"] == "trace_id").unwrap();
        assert_eq!(trace["parsers"], Value::Null);
        assert!(trace.get("jsonPath").is_none());
        let nested = listed.iter().find(|f| f["label"] == "req_status").unwrap();
        assert_eq!(nested["jsonPath"], json!(["req", "status"]));
        assert_eq!(fields_json(&fields, 2).len(), 2);
        assert!(logfmt("just some words").is_empty());
    }
}
