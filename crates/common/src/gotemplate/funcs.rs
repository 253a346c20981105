//! Go's builtin template functions and Go formatting (`printf`, floats,
//! time layouts, durations).

use std::cmp::Ordering;

use chrono::{DateTime, Datelike, FixedOffset, Timelike};

use super::{FuncMap, Value};

fn want(args: &[Value], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!("wrong number of args: want {n} got {}", args.len()))
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Duration(d) => Some(*d as f64),
        _ => None,
    }
}

fn compare(a: &Value, b: &Value) -> Result<Ordering, String> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Time(x), Value::Time(y)) => Ok(x.cmp(y)),
        _ => match (as_f64(a), as_f64(b)) {
            (Some(x), Some(y)) => x
                .partial_cmp(&y)
                .ok_or_else(|| "incomparable NaN".to_string()),
            _ => Err("incompatible types for comparison".to_string()),
        },
    }
}

fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Nil, Value::Nil) => Ok(true),
        (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
        (Value::Str(_), Value::Str(_))
        | (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_))
        | (Value::Time(_), Value::Time(_))
        | (Value::Duration(_), Value::Duration(_)) => compare(a, b).map(|o| o == Ordering::Equal),
        _ => Err("incompatible types for comparison".to_string()),
    }
}

fn to_index(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        _ => Err(format!("cannot index with {v}")),
    }
}

pub(super) fn register_builtins(m: &mut FuncMap) {
    m.insert("not", |a| {
        want(a, 1)?;
        Ok(Value::Bool(!a[0].truthy()))
    });
    m.insert("eq", |a| {
        if a.len() < 2 {
            return Err("missing argument for comparison".to_string());
        }
        for b in &a[1..] {
            if equal(&a[0], b)? {
                return Ok(Value::Bool(true));
            }
        }
        Ok(Value::Bool(false))
    });
    m.insert("ne", |a| {
        want(a, 2)?;
        Ok(Value::Bool(!equal(&a[0], &a[1])?))
    });
    m.insert("lt", |a| {
        want(a, 2)?;
        Ok(Value::Bool(compare(&a[0], &a[1])? == Ordering::Less))
    });
    m.insert("le", |a| {
        want(a, 2)?;
        Ok(Value::Bool(compare(&a[0], &a[1])? != Ordering::Greater))
    });
    m.insert("gt", |a| {
        want(a, 2)?;
        Ok(Value::Bool(compare(&a[0], &a[1])? == Ordering::Greater))
    });
    m.insert("ge", |a| {
        want(a, 2)?;
        Ok(Value::Bool(compare(&a[0], &a[1])? != Ordering::Less))
    });
    m.insert("len", |a| {
        want(a, 1)?;
        Ok(Value::Int(match &a[0] {
            Value::Str(s) => s.len() as i64,
            Value::List(l) => l.len() as i64,
            Value::Map(m) | Value::Struct(m) => m.len() as i64,
            Value::Nil => 0,
            other => return Err(format!("len of type {other}")),
        }))
    });
    m.insert("index", |a| {
        let Some((first, keys)) = a.split_first() else {
            return Err("index of untyped nil".to_string());
        };
        let mut v = first.clone();
        for k in keys {
            v = match v {
                Value::List(l) => {
                    let i = to_index(k)?;
                    l.get(usize::try_from(i).map_err(|_| format!("index out of range: {i}"))?)
                        .cloned()
                        .ok_or_else(|| format!("index out of range: {i}"))?
                }
                Value::Map(m) => m
                    .get(&k.as_string())
                    .cloned()
                    .unwrap_or(Value::Str(String::new())),
                Value::Str(s) => {
                    let i = to_index(k)?;
                    Value::Int(
                        *s.as_bytes()
                            .get(i as usize)
                            .ok_or_else(|| format!("index out of range: {i}"))?
                            as i64,
                    )
                }
                Value::Nil => return Err("index of untyped nil".to_string()),
                other => return Err(format!("can't index item of type {other}")),
            };
        }
        Ok(v)
    });
    m.insert("slice", |a| {
        let Some((first, idx)) = a.split_first() else {
            return Err("slice of untyped nil".to_string());
        };
        let idx: Vec<usize> = idx
            .iter()
            .map(|v| to_index(v).map(|i| i.max(0) as usize))
            .collect::<Result<_, _>>()?;
        match first {
            Value::Str(s) => {
                let from = idx.first().copied().unwrap_or(0);
                let to = idx.get(1).copied().unwrap_or(s.len());
                s.get(from..to)
                    .map(Value::str)
                    .ok_or_else(|| format!("slice bounds out of range [{from}:{to}]"))
            }
            Value::List(l) => {
                let from = idx.first().copied().unwrap_or(0);
                let to = idx.get(1).copied().unwrap_or(l.len());
                l.get(from..to)
                    .map(|s| Value::List(s.to_vec()))
                    .ok_or_else(|| format!("slice bounds out of range [{from}:{to}]"))
            }
            other => Err(format!("can't slice item of type {other}")),
        }
    });
    m.insert("print", |a| Ok(Value::Str(go_sprint(a))));
    m.insert("println", |a| {
        let parts: Vec<String> = a.iter().map(Value::as_string).collect();
        Ok(Value::Str(parts.join(" ") + "\n"))
    });
    m.insert("printf", |a| {
        let Some((f, rest)) = a.split_first() else {
            return Err("printf needs a format".to_string());
        };
        Ok(Value::Str(sprintf(&f.as_string(), rest)))
    });
    m.insert("html", |a| Ok(Value::Str(html_escape(&go_sprint(a)))));
    m.insert("js", |a| {
        let s = go_sprint(a);
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '"' => out.push_str("\\\""),
                '<' => out.push_str("\\u003C"),
                '>' => out.push_str("\\u003E"),
                '&' => out.push_str("\\u0026"),
                '=' => out.push_str("\\u003D"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        Ok(Value::Str(out))
    });
    m.insert("urlquery", |a| {
        let s = go_sprint(a);
        Ok(Value::Str(
            form_urlencoded::byte_serialize(s.as_bytes()).collect(),
        ))
    });
}

/// Go's `fmt.Sprint`: spaces between operands when neither is a string.
fn go_sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&a.as_string());
    }
    out
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `%v` for floats (`strconv.FormatFloat(f, 'g', -1, 64)` with Go's
/// exponent rules).
pub fn format_go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let exp = f.abs().log10().floor() as i32;
    if !(-4..21).contains(&exp) {
        let s = format!("{f:e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    format!("{f}")
}

fn format_g(f: f64, precision: Option<usize>) -> String {
    let Some(p) = precision else {
        return format_go_float(f);
    };
    let p = p.max(1);
    if f == 0.0 {
        return "0".to_string();
    }
    let exp = f.abs().log10().floor() as i32;
    if exp < -4 || exp >= p as i32 {
        let s = format!("{:.*e}", p - 1, f);
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.')
        } else {
            mant
        };
        let e: i32 = e.parse().unwrap_or(0);
        format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        let s = format!("{f:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

/// Go's `fmt.Sprintf` for the common verbs: `%s %v %d %f %g %e %q %x %X
/// %t %%`, with flags `-+ 0`, width and precision.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let chars: Vec<char> = format.chars().collect();
    let mut i = 0;
    let mut arg = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while i < chars.len() {
            match chars[i] {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            i += 1;
        }
        let mut width = None;
        while i < chars.len() && chars[i].is_ascii_digit() {
            width = Some(width.unwrap_or(0) * 10 + chars[i].to_digit(10).unwrap_or(0) as usize);
            i += 1;
        }
        let mut precision = None;
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            let mut p = 0;
            while i < chars.len() && chars[i].is_ascii_digit() {
                p = p * 10 + chars[i].to_digit(10).unwrap_or(0) as usize;
                i += 1;
            }
            precision = Some(p);
        }
        let Some(&verb) = chars.get(i) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(v) = args.get(arg) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        arg += 1;
        let sign = |s: String, neg: bool| -> String {
            if neg {
                s
            } else if plus {
                format!("+{s}")
            } else if space {
                format!(" {s}")
            } else {
                s
            }
        };
        let body = match (verb, v) {
            ('d', Value::Int(n)) => sign(n.to_string(), *n < 0),
            ('d', Value::Float(f)) => format!("%!d(float64={})", format_go_float(*f)),
            ('f' | 'F', _) if as_f64(v).is_some() => {
                let f = as_f64(v).unwrap_or(0.0);
                sign(format!("{:.*}", precision.unwrap_or(6), f), f < 0.0)
            }
            ('e', _) if as_f64(v).is_some() => {
                let f = as_f64(v).unwrap_or(0.0);
                let s = format!("{:.*e}", precision.unwrap_or(6), f);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let e: i32 = e.parse().unwrap_or(0);
                sign(
                    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()),
                    f < 0.0,
                )
            }
            ('g', _) if as_f64(v).is_some() => {
                let f = as_f64(v).unwrap_or(0.0);
                sign(format_g(f, precision), f < 0.0)
            }
            ('s' | 'v', _) => {
                let s = v.as_string();
                match precision {
                    Some(p) if verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            ('q', _) => format!("{:?}", v.as_string()),
            ('t', Value::Bool(b)) => b.to_string(),
            ('x', Value::Int(n)) => format!("{n:x}"),
            ('X', Value::Int(n)) => format!("{n:X}"),
            ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('X', Value::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
            ('c', Value::Int(n)) => char::from_u32(*n as u32)
                .map(String::from)
                .unwrap_or_default(),
            (verb, v) => format!("%!{verb}({v})"),
        };
        let len = body.chars().count();
        match width {
            Some(w) if w > len => {
                let pad = w - len;
                if minus {
                    out.push_str(&body);
                    out.push_str(&" ".repeat(pad));
                } else if zero && as_f64(v).is_some() {
                    let (s, digits) = match body.strip_prefix(['-', '+']) {
                        Some(d) => (&body[..1], d),
                        None => ("", body.as_str()),
                    };
                    out.push_str(s);
                    out.push_str(&"0".repeat(pad));
                    out.push_str(digits);
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(&body);
                }
            }
            _ => out.push_str(&body),
        }
    }
    if arg < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[arg..]
            .iter()
            .map(|v| format!("{}={v}", super::type_name(v)))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

/// Formats a time with a Go layout (`2006-01-02T15:04:05Z07:00`).
pub fn format_go_layout(layout: &str, t: &DateTime<FixedOffset>) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let offset = t.offset().local_minus_utc();
    let zone = |colon: bool, seconds: bool, z: bool| -> String {
        if z && offset == 0 {
            return "Z".to_string();
        }
        let sign = if offset < 0 { '-' } else { '+' };
        let o = offset.abs();
        let (h, m, s) = (o / 3600, (o / 60) % 60, o % 60);
        match (colon, seconds) {
            (true, true) => format!("{sign}{h:02}:{m:02}:{s:02}"),
            (true, false) => format!("{sign}{h:02}:{m:02}"),
            (false, true) => format!("{sign}{h:02}{m:02}{s:02}"),
            (false, false) => format!("{sign}{h:02}{m:02}"),
        }
    };
    let mut out = String::new();
    let mut rest = layout;
    let month = t.month0() as usize;
    let wd = t.weekday().num_days_from_sunday() as usize;
    while !rest.is_empty() {
        let table: &[(&str, String)] = &[
            ("January", MONTHS[month].to_string()),
            ("Jan", MONTHS[month][..3].to_string()),
            ("Monday", DAYS[wd].to_string()),
            ("Mon", DAYS[wd][..3].to_string()),
            (
                "MST",
                if offset == 0 {
                    "UTC".to_string()
                } else {
                    zone(false, false, false)
                },
            ),
            ("2006", format!("{:04}", t.year())),
            ("Z07:00:00", zone(true, true, true)),
            ("-07:00:00", zone(true, true, false)),
            ("Z07:00", zone(true, false, true)),
            ("-07:00", zone(true, false, false)),
            ("Z0700", zone(false, false, true)),
            ("-0700", zone(false, false, false)),
            (
                "Z07",
                if offset == 0 {
                    "Z".to_string()
                } else {
                    zone(false, false, false)[..3].to_string()
                },
            ),
            ("-07", zone(false, false, false)[..3].to_string()),
            ("01", format!("{:02}", t.month())),
            ("02", format!("{:02}", t.day())),
            ("_2", format!("{:>2}", t.day())),
            ("002", format!("{:03}", t.ordinal())),
            ("15", format!("{:02}", t.hour())),
            ("03", format!("{:02}", t.hour12().1)),
            ("04", format!("{:02}", t.minute())),
            ("05", format!("{:02}", t.second())),
            ("06", format!("{:02}", t.year() % 100)),
            ("PM", if t.hour12().0 { "PM" } else { "AM" }.to_string()),
            ("pm", if t.hour12().0 { "pm" } else { "am" }.to_string()),
            ("1", t.month().to_string()),
            ("2", t.day().to_string()),
            ("3", t.hour12().1.to_string()),
            ("4", t.minute().to_string()),
            ("5", t.second().to_string()),
        ];
        // Fractional seconds: .000 / .999 (and , variants).
        if let Some(frac) = rest.strip_prefix('.').or_else(|| rest.strip_prefix(',')) {
            let n0 = frac.chars().take_while(|c| *c == '0').count();
            let n9 = frac.chars().take_while(|c| *c == '9').count();
            let digits = n0.max(n9);
            if digits > 0 && !frac[digits..].starts_with(|c: char| c.is_ascii_digit()) {
                let nanos = format!("{:09}", t.nanosecond());
                let mut f = nanos[..digits.min(9)].to_string();
                if n9 > 0 {
                    f = f.trim_end_matches('0').to_string();
                }
                if !f.is_empty() {
                    out.push(rest.chars().next().unwrap_or('.'));
                    out.push_str(&f);
                }
                rest = &frac[digits..];
                continue;
            }
        }
        if let Some((tok, val)) = table.iter().find(|(tok, _)| rest.starts_with(tok)) {
            out.push_str(val);
            rest = &rest[tok.len()..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `150ms`, `0s`.
pub fn format_go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let neg = nanos < 0;
    let n = nanos.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if n < 1_000_000 {
        return format!("{sign}{}µs", trim(format!("{:.3}", n as f64 / 1e3)));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", trim(format!("{:.6}", n as f64 / 1e6)));
    }
    let total_secs = n / 1_000_000_000;
    let frac = n % 1_000_000_000;
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let secs = if frac == 0 {
        s.to_string()
    } else {
        trim(format!("{s}.{frac:09}"))
    };
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h{m}m{secs}s"));
    } else if m > 0 {
        out.push_str(&format!("{m}m{secs}s"));
    } else {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// Prometheus' `humanizeDuration` of seconds: `1d 2h 3m 4s`, `1.5s`, `20ms`.
pub fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return format!("{v}");
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", format_g(v, Some(4)));
    }
    if v == 0.0 {
        return "0s".to_string();
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", format_g(v, Some(4)))
}
