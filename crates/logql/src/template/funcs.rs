//! Template functions: Go's builtins, Loki's own and the sprig subset Loki
//! enables.

use std::fmt::Write;

use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeZone, Utc};

use super::{TemplateData, TemplateError, Value};

const FUNCTIONS: &[&str] = &[
    // Go builtins
    "and",
    "or",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "urlquery",
    "html",
    "js",
    "slice",
    // Loki
    "ToLower",
    "ToUpper",
    "Replace",
    "Trim",
    "TrimLeft",
    "TrimRight",
    "TrimPrefix",
    "TrimSuffix",
    "TrimSpace",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "count",
    "urldecode",
    "urlencode",
    "bytes",
    "duration",
    "duration_seconds",
    "unixEpochMillis",
    "unixEpochNanos",
    "toDateInZone",
    "unixToTime",
    "alignLeft",
    "alignRight",
    "b64dec",
    "__line__",
    "__timestamp__",
    // sprig
    "b64enc",
    "lower",
    "upper",
    "title",
    "trunc",
    "substr",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "indent",
    "nindent",
    "replace",
    "repeat",
    "trim",
    "trimAll",
    "trimSuffix",
    "trimPrefix",
    "int",
    "float64",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "addf",
    "subf",
    "mulf",
    "divf",
    "max",
    "min",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "fromJson",
    "date",
    "toDate",
    "now",
    "unixEpoch",
    "default",
];

pub fn is_function(name: &str) -> bool {
    FUNCTIONS.contains(&name)
}

fn exec(msg: impl Into<String>) -> TemplateError {
    TemplateError::Exec(msg.into())
}

fn want(name: &str, args: &[Value], n: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return Err(exec(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Nil => String::new(),
        other => other.to_string(),
    }
}

/// sprig's toInt64 (cast): unparsable strings are 0.
fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => *b as i64,
        Value::Str(t) => t.trim().parse::<i64>().unwrap_or(0),
        Value::Time(ns, _) => ns / 1_000_000_000,
        _ => 0,
    }
}

fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => *b as i64 as f64,
        Value::Str(t) => t.trim().parse::<f64>().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn compare(name: &str, a: &Value, b: &Value) -> Result<std::cmp::Ordering, TemplateError> {
    if let (Some(x), Some(y)) = (as_number(a), as_number(b)) {
        return x
            .partial_cmp(&y)
            .ok_or_else(|| exec(format!("{name}: cannot compare NaN")));
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) if name == "eq" || name == "ne" => Ok(x.cmp(y)),
        (Value::Nil, Value::Nil) => Ok(std::cmp::Ordering::Equal),
        _ => Err(exec(format!(
            "error calling {name}: incompatible types for comparison"
        ))),
    }
}

pub fn call(name: &str, args: Vec<Value>, data: &dyn TemplateData) -> Result<Value, TemplateError> {
    use Value::*;
    Ok(match name {
        "and" => {
            let mut last = Nil;
            for a in args {
                if !a.truthy() {
                    return Ok(a);
                }
                last = a;
            }
            last
        }
        "or" => {
            let mut last = Nil;
            for a in args {
                if a.truthy() {
                    return Ok(a);
                }
                last = a;
            }
            last
        }
        "not" => {
            want(name, &args, 1)?;
            Bool(!args[0].truthy())
        }
        "eq" => {
            if args.len() < 2 {
                return Err(exec("missing argument for comparison"));
            }
            let mut any = false;
            for b in &args[1..] {
                if compare(name, &args[0], b)? == std::cmp::Ordering::Equal {
                    any = true;
                }
            }
            Bool(any)
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want(name, &args, 2)?;
            let o = compare(name, &args[0], &args[1])?;
            Bool(match name {
                "ne" => o.is_ne(),
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "len" => {
            want(name, &args, 1)?;
            Int(match &args[0] {
                Str(t) => t.len() as i64,
                List(l) => l.len() as i64,
                Map(m) => m.len() as i64,
                _ => return Err(exec("len of a value that has no length")),
            })
        }
        "index" => {
            let mut it = args.into_iter();
            let mut v = it.next().unwrap_or(Nil);
            for key in it {
                v = match (v, key) {
                    (List(l), k) => {
                        let i = to_i64(&k);
                        l.into_iter()
                            .nth(usize::try_from(i).map_err(|_| exec("index out of range"))?)
                            .ok_or_else(|| exec(format!("index out of range: {i}")))?
                    }
                    (Map(m), k) => {
                        let k = s(&k);
                        m.into_iter()
                            .find(|(n, _)| *n == k)
                            .map(|(_, v)| v)
                            .unwrap_or(Nil)
                    }
                    (Str(t), k) => {
                        let i = to_i64(&k);
                        let b = usize::try_from(i)
                            .ok()
                            .and_then(|i| t.as_bytes().get(i).copied())
                            .ok_or_else(|| exec(format!("index out of range: {i}")))?;
                        Int(b as i64)
                    }
                    _ => return Err(exec("can't index item")),
                };
            }
            v
        }
        "slice" => {
            let t = s(args.first().unwrap_or(&Nil));
            let from = args.get(1).map(to_i64).unwrap_or(0).max(0) as usize;
            let to = args
                .get(2)
                .map(|v| to_i64(v).max(0) as usize)
                .unwrap_or(t.len());
            Str(t
                .get(from..to)
                .ok_or_else(|| exec("slice index out of range"))?
                .to_string())
        }
        "print" => {
            let mut out = String::new();
            for (i, a) in args.iter().enumerate() {
                let is_str = matches!(a, Str(_));
                if i > 0 && !is_str && !matches!(args[i - 1], Str(_)) {
                    out.push(' ');
                }
                out.push_str(&s(a));
            }
            Str(out)
        }
        "println" => {
            let parts: Vec<String> = args.iter().map(s).collect();
            Str(parts.join(" ") + "\n")
        }
        "printf" => {
            let Some(f) = args.first() else {
                return Err(exec(
                    "wrong number of args for printf: want at least 1 got 0",
                ));
            };
            Str(sprintf(&s(f), &args[1..]))
        }
        "urlquery" | "urlencode" => {
            want(name, &args, 1)?;
            Str(query_escape(&s(&args[0])))
        }
        "html" => {
            want(name, &args, 1)?;
            Str(s(&args[0])
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&#34;")
                .replace('\'', "&#39;"))
        }
        "js" => {
            want(name, &args, 1)?;
            let mut out = String::new();
            for c in s(&args[0]).chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\'' => out.push_str("\\'"),
                    '"' => out.push_str("\\\""),
                    '<' => out.push_str("\\u003C"),
                    '>' => out.push_str("\\u003E"),
                    c => out.push(c),
                }
            }
            Str(out)
        }
        "ToLower" | "lower" => {
            want(name, &args, 1)?;
            Str(s(&args[0]).to_lowercase())
        }
        "ToUpper" | "upper" => {
            want(name, &args, 1)?;
            Str(s(&args[0]).to_uppercase())
        }
        "title" => {
            want(name, &args, 1)?;
            let mut out = String::new();
            let mut prev_letter = false;
            for c in s(&args[0]).chars() {
                if !prev_letter {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
            }
            Str(out)
        }
        "Replace" => {
            want(name, &args, 4)?;
            let n = to_i64(&args[3]);
            let src = s(&args[0]);
            Str(if n < 0 {
                src.replace(&s(&args[1]), &s(&args[2]))
            } else {
                src.replacen(&s(&args[1]), &s(&args[2]), n as usize)
            })
        }
        "replace" => {
            want(name, &args, 3)?;
            Str(s(&args[2]).replace(&s(&args[0]), &s(&args[1])))
        }
        "Trim" => {
            want(name, &args, 2)?;
            let cut = s(&args[1]);
            Str(s(&args[0]).trim_matches(|c| cut.contains(c)).to_string())
        }
        "trimAll" => {
            want(name, &args, 2)?;
            let cut = s(&args[0]);
            Str(s(&args[1]).trim_matches(|c| cut.contains(c)).to_string())
        }
        "TrimLeft" => {
            want(name, &args, 2)?;
            let cut = s(&args[1]);
            Str(s(&args[0])
                .trim_start_matches(|c| cut.contains(c))
                .to_string())
        }
        "TrimRight" => {
            want(name, &args, 2)?;
            let cut = s(&args[1]);
            Str(s(&args[0])
                .trim_end_matches(|c| cut.contains(c))
                .to_string())
        }
        "TrimPrefix" | "trimPrefix" | "TrimSuffix" | "trimSuffix" => {
            want(name, &args, 2)?;
            let (text, fix) = if name.starts_with('T') {
                (s(&args[0]), s(&args[1]))
            } else {
                (s(&args[1]), s(&args[0]))
            };
            let out = if name.ends_with("Prefix") {
                text.strip_prefix(fix.as_str())
            } else {
                text.strip_suffix(fix.as_str())
            };
            Str(out.map(str::to_string).unwrap_or(text))
        }
        "TrimSpace" | "trim" => {
            want(name, &args, 1)?;
            Str(s(&args[0]).trim().to_string())
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            want(name, &args, 3)?;
            let re = regex::Regex::new(&s(&args[0]))
                .map_err(|e| exec(format!("error calling {name}: {e}")))?;
            let src = s(&args[1]);
            let repl = s(&args[2]);
            Str(if name == "regexReplaceAll" {
                re.replace_all(&src, repl.as_str()).into_owned()
            } else {
                re.replace_all(&src, regex::NoExpand(&repl)).into_owned()
            })
        }
        "count" => {
            want(name, &args, 2)?;
            let re = regex::Regex::new(&s(&args[0]))
                .map_err(|e| exec(format!("error calling count: {e}")))?;
            Int(re.find_iter(&s(&args[1])).count() as i64)
        }
        "urldecode" => {
            want(name, &args, 1)?;
            Str(query_unescape(&s(&args[0]))?)
        }
        "bytes" => {
            want(name, &args, 1)?;
            Float(
                crate::pipeline::parse_bytes(&s(&args[0]))
                    .map_err(|e| exec(format!("error calling bytes: {e}")))? as f64,
            )
        }
        "duration" | "duration_seconds" => {
            want(name, &args, 1)?;
            Float(
                crate::pipeline::parse_go_duration(&s(&args[0]))
                    .map_err(|e| exec(format!("error calling {name}: {e}")))?
                    as f64
                    / 1e9,
            )
        }
        "alignLeft" | "alignRight" => {
            want(name, &args, 2)?;
            let n = to_i64(&args[0]).max(0) as usize;
            let src = s(&args[1]);
            let len = src.chars().count();
            Str(if len >= n {
                src.chars().take(n).collect()
            } else if name == "alignLeft" {
                format!("{src}{}", " ".repeat(n - len))
            } else {
                format!("{}{src}", " ".repeat(n - len))
            })
        }
        "b64enc" => {
            want(name, &args, 1)?;
            Str(base64::engine::general_purpose::STANDARD.encode(s(&args[0])))
        }
        "b64dec" => {
            want(name, &args, 1)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s(&args[0]))
                .map_err(|e| exec(format!("error calling b64dec: {e}")))?;
            Str(String::from_utf8_lossy(&bytes).into_owned())
        }
        "__line__" => Str(data.line().to_string()),
        "__timestamp__" => Time(data.timestamp_nanos(), 0),
        "now" => Time(Utc::now().timestamp_nanos_opt().unwrap_or(0), 0),
        "trunc" => {
            want(name, &args, 2)?;
            let n = to_i64(&args[0]);
            let t = s(&args[1]);
            let len = t.len() as i64;
            Str(if n >= 0 && len > n {
                byte_slice(&t, 0, n as usize)
            } else if n < 0 && len + n > 0 {
                byte_slice(&t, (len + n) as usize, t.len())
            } else {
                t
            })
        }
        "substr" => {
            want(name, &args, 3)?;
            let (start, end) = (to_i64(&args[0]), to_i64(&args[1]));
            let t = s(&args[2]);
            let len = t.len() as i64;
            Str(if start < 0 {
                byte_slice(&t, 0, end.clamp(0, len) as usize)
            } else if end < 0 || end > len {
                byte_slice(&t, start.min(len) as usize, t.len())
            } else {
                byte_slice(&t, start.min(end) as usize, end as usize)
            })
        }
        "contains" | "hasPrefix" | "hasSuffix" => {
            want(name, &args, 2)?;
            let (needle, hay) = (s(&args[0]), s(&args[1]));
            Bool(match name {
                "contains" => hay.contains(&needle),
                "hasPrefix" => hay.starts_with(&needle),
                _ => hay.ends_with(&needle),
            })
        }
        "indent" | "nindent" => {
            want(name, &args, 2)?;
            let pad = " ".repeat(to_i64(&args[0]).max(0) as usize);
            let body = format!("{pad}{}", s(&args[1]).replace('\n', &format!("\n{pad}")));
            Str(if name == "nindent" {
                format!("\n{body}")
            } else {
                body
            })
        }
        "repeat" => {
            want(name, &args, 2)?;
            Str(s(&args[1]).repeat(to_i64(&args[0]).clamp(0, 1 << 20) as usize))
        }
        "int" => {
            want(name, &args, 1)?;
            Int(to_i64(&args[0]))
        }
        "float64" => {
            want(name, &args, 1)?;
            Float(to_f64(&args[0]))
        }
        "add" => Int(args.iter().map(to_i64).fold(0i64, i64::wrapping_add)),
        "mul" => Int(args.iter().map(to_i64).fold(1i64, i64::wrapping_mul)),
        "sub" | "div" | "mod" => {
            want(name, &args, 2)?;
            let (a, b) = (to_i64(&args[0]), to_i64(&args[1]));
            Int(match name {
                "sub" => a.wrapping_sub(b),
                _ if b == 0 => {
                    return Err(exec(format!(
                        "error calling {name}: integer divide by zero"
                    )));
                }
                "div" => a.wrapping_div(b),
                _ => a.wrapping_rem(b),
            })
        }
        "addf" => Float(args.iter().map(to_f64).sum()),
        "mulf" => Float(args.iter().map(to_f64).product()),
        "subf" | "divf" => {
            let mut it = args.iter().map(to_f64);
            let first = it.next().unwrap_or(0.0);
            Float(it.fold(
                first,
                |acc, x| if name == "subf" { acc - x } else { acc / x },
            ))
        }
        "max" | "min" => {
            let mut it = args.iter().map(to_i64);
            let first = it.next().unwrap_or(0);
            Int(it.fold(
                first,
                |a, x| if name == "max" { a.max(x) } else { a.min(x) },
            ))
        }
        "maxf" | "minf" => {
            let mut it = args.iter().map(to_f64);
            let first = it.next().unwrap_or(0.0);
            Float(it.fold(
                first,
                |a, x| if name == "maxf" { a.max(x) } else { a.min(x) },
            ))
        }
        "ceil" | "floor" => {
            want(name, &args, 1)?;
            let x = to_f64(&args[0]);
            Float(if name == "ceil" { x.ceil() } else { x.floor() })
        }
        "round" => {
            if args.len() < 2 || args.len() > 3 {
                return Err(exec("wrong number of args for round: want 2 or 3"));
            }
            let x = to_f64(&args[0]);
            let p = to_i64(&args[1]).clamp(-300, 300) as i32;
            let half = args.get(2).map(to_f64).unwrap_or(0.5);
            let pow = 10f64.powi(p);
            let digit = pow * x;
            let (int, frac) = (digit.trunc(), digit.fract());
            let r = if frac.abs() >= half {
                int + frac.signum()
            } else {
                int
            };
            Float(r / pow)
        }
        "default" => match args.len() {
            1 => args.into_iter().next().unwrap_or(Nil),
            2 => {
                let mut it = args.into_iter();
                let def = it.next().unwrap_or(Nil);
                let given = it.next().unwrap_or(Nil);
                if given.truthy() { given } else { def }
            }
            n => {
                return Err(exec(format!(
                    "wrong number of args for default: want 2 got {n}"
                )));
            }
        },
        "fromJson" => {
            want(name, &args, 1)?;
            serde_json::from_str::<serde_json::Value>(&s(&args[0]))
                .map(json_to_value)
                .unwrap_or(Nil)
        }
        "unixEpoch" | "unixEpochMillis" | "unixEpochNanos" => {
            want(name, &args, 1)?;
            let ns = time_nanos(&args[0])?;
            match name {
                "unixEpoch" => Str(ns.div_euclid(1_000_000_000).to_string()),
                "unixEpochMillis" => Int(ns.div_euclid(1_000_000)),
                _ => Int(ns),
            }
        }
        "unixToTime" => {
            want(name, &args, 1)?;
            let t = s(&args[0]);
            let v: i64 = t
                .parse()
                .map_err(|_| exec(format!("unable to parse time '{t}': invalid syntax")))?;
            let ns = match t.trim_start_matches('-').len() {
                10 => v.saturating_mul(1_000_000_000),
                13 => v.saturating_mul(1_000_000),
                16 => v.saturating_mul(1_000),
                19 => v,
                _ => {
                    return Err(exec(format!(
                        "unable to parse time '{t}': use 10, 13, 16 or 19 digits"
                    )));
                }
            };
            Time(ns, 0)
        }
        "date" => {
            want(name, &args, 2)?;
            let (ns, off) = match &args[1] {
                Time(ns, off) => (*ns, *off),
                other => (to_i64(other).saturating_mul(1_000_000_000), 0),
            };
            Str(format_go_layout(&s(&args[0]), ns, off))
        }
        "toDate" | "toDateInZone" => {
            let (layout, zone, value) = if name == "toDate" {
                want(name, &args, 2)?;
                (s(&args[0]), "UTC".to_string(), s(&args[1]))
            } else {
                want(name, &args, 3)?;
                (s(&args[0]), s(&args[1]), s(&args[2]))
            };
            if !matches!(zone.as_str(), "UTC" | "" | "Local" | "Etc/UTC") {
                return Err(exec(format!(
                    "error calling {name}: unknown time zone {zone}: only UTC is supported"
                )));
            }
            match parse_go_layout(&layout, &value) {
                Some(ns) => Time(ns, 0),
                None => {
                    return Err(exec(format!(
                        "error calling {name}: cannot parse {value:?} as {layout:?}"
                    )));
                }
            }
        }
        _ => return Err(exec(format!("function {name:?} not defined"))),
    })
}

fn byte_slice(t: &str, from: usize, to: usize) -> String {
    String::from_utf8_lossy(
        &t.as_bytes()[from.min(t.len())..to.min(t.len()).max(from.min(t.len()))],
    )
    .into_owned()
}

fn time_nanos(v: &Value) -> Result<i64, TemplateError> {
    match v {
        Value::Time(ns, _) => Ok(*ns),
        _ => Err(exec("wrong type for value; expected time.Time")),
    }
}

fn json_to_value(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::Str(s),
        serde_json::Value::Array(a) => Value::List(a.into_iter().map(json_to_value).collect()),
        serde_json::Value::Object(m) => {
            Value::Map(m.into_iter().map(|(k, v)| (k, json_to_value(v))).collect())
        }
    }
}

fn query_escape(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for b in t.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn query_unescape(t: &str) -> Result<String, TemplateError> {
    let b = t.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = t
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        exec(format!(
                            "error calling urldecode: invalid URL escape {:?}",
                            t.get(i..(i + 3).min(t.len())).unwrap_or("%")
                        ))
                    })?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)` with
/// `%v`'s exponent threshold of 21).
pub fn format_go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..21).contains(&exp) {
        let s = format!("{f}");
        return s;
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.abs())
}

fn to_datetime(ns: i64, off: i32) -> DateTime<FixedOffset> {
    let offset = FixedOffset::east_opt(off).unwrap_or(Utc.fix());
    offset.timestamp_nanos(ns)
}

/// Go's `time.Time.String()`.
pub fn format_time_default(ns: i64, off: i32) -> String {
    let dt = to_datetime(ns, off);
    let frac = dt.timestamp_subsec_nanos();
    let mut out = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    if frac != 0 {
        let f = format!("{frac:09}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push_str(&dt.format(" %z").to_string());
    out.push_str(if off == 0 { " UTC" } else { "" });
    out
}

/// Go layout tokens and their chrono equivalents, longest first.
const LAYOUT: &[(&str, &str)] = &[
    ("January", "%B"),
    ("Monday", "%A"),
    ("Z07:00", "%:z"),
    ("-07:00", "%:z"),
    ("-0700", "%z"),
    (".000000000", "%.9f"),
    (".000000", "%.6f"),
    (".000", "%.3f"),
    (".999999999", "%.f"),
    (".999999", "%.f"),
    (".999", "%.f"),
    ("2006", "%Y"),
    ("Jan", "%b"),
    ("Mon", "%a"),
    ("MST", "%Z"),
    ("01", "%m"),
    ("02", "%d"),
    ("_2", "%e"),
    ("15", "%H"),
    ("03", "%I"),
    ("04", "%M"),
    ("05", "%S"),
    ("06", "%y"),
    ("PM", "%p"),
    ("pm", "%P"),
    ("1", "%-m"),
    ("2", "%-d"),
    ("3", "%-I"),
    ("4", "%-M"),
    ("5", "%-S"),
];

fn layout_to_strftime(layout: &str) -> String {
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (go, fmt) in LAYOUT {
            if let Some(r) = rest.strip_prefix(go) {
                out.push_str(fmt);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

pub fn format_go_layout(layout: &str, ns: i64, off: i32) -> String {
    let fmt = layout_to_strftime(layout);
    let dt = to_datetime(ns, off);
    let mut out = String::new();
    if write!(out, "{}", dt.format(&fmt)).is_err() {
        return layout.to_string();
    }
    out
}

/// Parses `value` with a Go time layout (`2006-01-02 15:04:05`), to nanoseconds.
pub fn parse_go_layout(layout: &str, value: &str) -> Option<i64> {
    let fmt = layout_to_strftime(layout).replace("%-", "%");
    if let Ok(dt) = DateTime::parse_from_str(value, &fmt) {
        return dt.timestamp_nanos_opt();
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(value, &fmt) {
        return dt.and_utc().timestamp_nanos_opt();
    }
    chrono::NaiveDate::parse_from_str(value, &fmt)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|dt| dt.and_utc().timestamp_nanos_opt())
}

/// Go's `fmt.Sprintf` for the common verbs.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = chars.peek() {
            if "+-# 0".contains(f) {
                flags.push(f);
                chars.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let body = match verb {
            'v' | 's' => {
                let mut t = s(arg);
                if verb == 's'
                    && let Some(p) = prec
                {
                    t = t.chars().take(p).collect();
                }
                t
            }
            'q' => format!("{:?}", s(arg)),
            'd' => match arg {
                Value::Int(_) | Value::Bool(_) => {
                    let v = to_i64(arg);
                    if flags.contains('+') && v >= 0 {
                        format!("+{v}")
                    } else {
                        v.to_string()
                    }
                }
                other => format!("%!d({})", s(other)),
            },
            'f' | 'F' | 'e' | 'g' => match arg {
                Value::Float(_) | Value::Int(_) => {
                    let v = to_f64(arg);
                    let body = match verb {
                        'e' => format!("{:.*e}", prec.unwrap_or(6), v),
                        'g' => format_go_float(v),
                        _ => format!("{:.*}", prec.unwrap_or(6), v),
                    };
                    if flags.contains('+') && v >= 0.0 {
                        format!("+{body}")
                    } else {
                        body
                    }
                }
                other => format!("%!{verb}({})", s(other)),
            },
            't' => match arg {
                Value::Bool(b) => b.to_string(),
                other => format!("%!t({})", s(other)),
            },
            'x' | 'X' => {
                let t = match arg {
                    Value::Int(i) => format!("{i:x}"),
                    other => s(other).bytes().map(|b| format!("{b:02x}")).collect(),
                };
                if verb == 'X' { t.to_uppercase() } else { t }
            }
            'c' => char::from_u32(to_i64(arg) as u32)
                .map(String::from)
                .unwrap_or_default(),
            other => format!("%!{other}({})", s(arg)),
        };
        let w: usize = width.parse().unwrap_or(0);
        let len = body.chars().count();
        if len >= w {
            out.push_str(&body);
        } else if flags.contains('-') {
            out.push_str(&body);
            out.push_str(&" ".repeat(w - len));
        } else if flags.contains('0') && matches!(verb, 'd' | 'f' | 'F' | 'e' | 'x' | 'X') {
            let (sign, digits) = match body.strip_prefix('-') {
                Some(d) => ("-", d),
                None => ("", body.as_str()),
            };
            out.push_str(sign);
            out.push_str(&"0".repeat(w - len));
            out.push_str(digits);
        } else {
            out.push_str(&" ".repeat(w - len));
            out.push_str(&body);
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..].iter().map(s).collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}
