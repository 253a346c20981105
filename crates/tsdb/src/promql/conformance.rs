//! Runner for Prometheus' `promqltest` files (the executable specification
//! of PromQL semantics).
//!
//! A file is a sequence of commands: `load <interval>` (and
//! `load_with_nhcb`, whose classic series are loaded; the native histograms
//! it would add are not), `clear`, and `eval instant at <t> <query>` /
//! `eval range from <t0> to <t1> step <s> <query>` (also the older
//! `eval_fail`/`eval_ordered`/`eval_warn`/`eval_info` forms) with indented
//! expectations. Every `eval` is one case; a case the runner cannot run
//! (native histogram values, unsupported syntax) counts as failed.
//! Annotation expectations (`expect warn`, `expect info`, ...) are not
//! checked: the engine produces no annotations yet.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;

use super::engine::{Engine, Value};
use super::histogram::{CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram};
use super::memory::MemorySource;
use super::{DisplayLabels, Labels, METRIC_NAME, stale_nan};

/// One value of a series line: a float or a native histogram (and whether
/// its counter reset hint was written out).
#[derive(Debug, Clone, PartialEq)]
enum SeqVal {
    F(f64),
    H(FloatHistogram, bool),
}

impl SeqVal {
    fn float(&self) -> Option<f64> {
        match self {
            SeqVal::F(f) => Some(*f),
            SeqVal::H(..) => None,
        }
    }
}

/// Parses `{{schema:1 sum:2 count:3 buckets:[1 2] ...}}`; returns the
/// histogram and whether `counter_reset_hint` was given.
fn parse_histogram(s: &str) -> Result<(FloatHistogram, bool), String> {
    let body = s
        .strip_prefix("{{")
        .and_then(|b| b.strip_suffix("}}"))
        .ok_or_else(|| format!("invalid histogram {s:?}"))?;
    let mut h = FloatHistogram::default();
    let mut hint_set = false;
    let (mut buckets, mut n_buckets) = (Vec::new(), Vec::new());
    let (mut offset, mut n_offset) = (0i32, 0i32);
    let mut rest = body.trim();
    let int = |v: &str| -> Result<i32, String> {
        v.parse::<i32>()
            .map_err(|_| format!("invalid integer {v:?} in {s:?}"))
    };
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("invalid histogram {s:?}"))?;
        let key = rest[..colon].trim();
        rest = rest[colon + 1..].trim_start();
        let value;
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| format!("unclosed [ in {s:?}"))?;
            value = &r[..end];
            rest = r[end + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = &rest[..end];
            rest = rest[end..].trim_start();
        }
        let list =
            || -> Result<Vec<f64>, String> { value.split_whitespace().map(parse_float).collect() };
        match key {
            "schema" => h.schema = int(value)?,
            "sum" => h.sum = parse_float(value)?,
            "count" => h.count = parse_float(value)?,
            "z_bucket" => h.zero_count = parse_float(value)?,
            "z_bucket_w" => h.zero_threshold = parse_float(value)?,
            "custom_values" => h.custom_values = list()?,
            "buckets" => buckets = list()?,
            "n_buckets" => n_buckets = list()?,
            "offset" => offset = int(value)?,
            "n_offset" => n_offset = int(value)?,
            "counter_reset_hint" => {
                hint_set = true;
                h.counter_reset_hint = match value {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    other => return Err(format!("invalid counter_reset_hint {other:?}")),
                };
            }
            other => return Err(format!("unknown histogram key {other:?}")),
        }
    }
    for (i, c) in buckets.into_iter().enumerate() {
        h.positive.insert(offset + i as i32, c);
    }
    for (i, c) in n_buckets.into_iter().enumerate() {
        h.negative.insert(n_offset + i as i32, c);
    }
    Ok((h, hint_set))
}

/// Expands a histogram token: `{{…}}`, `{{…}}x3`, `{{…}}+{{…}}x3`,
/// `{{…}}-{{…}}x3`.
fn expand_histogram(token: &str, out: &mut Vec<Option<SeqVal>>) -> Result<(), String> {
    let end = token
        .find("}}")
        .ok_or_else(|| format!("invalid histogram {token:?}"))?
        + 2;
    let (base, base_hint) = parse_histogram(&token[..end])?;
    let rest = &token[end..];
    if rest.is_empty() {
        out.push(Some(SeqVal::H(base, base_hint)));
        return Ok(());
    }
    if let Some(n) = rest.strip_prefix('x') {
        let n: usize = n
            .parse()
            .map_err(|_| format!("invalid repetition in {token:?}"))?;
        for _ in 0..=n {
            out.push(Some(SeqVal::H(base.clone(), base_hint)));
        }
        return Ok(());
    }
    let sign = match rest.as_bytes().first() {
        Some(b'+') => 1.0,
        Some(b'-') => -1.0,
        _ => return Err(format!("invalid histogram series {token:?}")),
    };
    let rest = &rest[1..];
    let end = rest
        .find("}}")
        .ok_or_else(|| format!("invalid histogram {token:?}"))?
        + 2;
    let (inc, hint) = parse_histogram(&rest[..end])?;
    let n: usize = rest[end..]
        .strip_prefix('x')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("invalid repetition in {token:?}"))?;
    let mut cur = base;
    out.push(Some(SeqVal::H(cur.clone(), hint)));
    for _ in 0..n {
        if cur.schema > inc.schema {
            return Err(format!(
                "error combining histograms: cannot merge from schema {} to {}",
                inc.schema, cur.schema
            ));
        }
        let r = if sign > 0.0 {
            cur.add(&inc)
        } else {
            cur.sub(&inc)
        };
        r.map_err(|_| "error combining histograms: incompatible schemas".to_string())?;
        out.push(Some(SeqVal::H(cur.clone(), hint)));
    }
    Ok(())
}

/// promqltest's comparison of histograms (after removing empty buckets).
fn histograms_match(exp: &FloatHistogram, got: &FloatHistogram, hint_set: bool) -> bool {
    let mut exp = exp.clone();
    exp.compact();
    let mut got = got.clone();
    got.compact();
    let buckets = |a: &std::collections::BTreeMap<i32, f64>,
                   b: &std::collections::BTreeMap<i32, f64>| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|((i, x), (j, y))| i == j && almost_equal(*x, *y))
    };
    exp.schema == got.schema
        && almost_equal(exp.count, got.count)
        && almost_equal(exp.sum, got.sum)
        && (!exp.uses_custom_buckets() || exp.custom_values == got.custom_values)
        && exp.zero_threshold == got.zero_threshold
        && almost_equal(exp.zero_count, got.zero_count)
        && buckets(&exp.positive, &got.positive)
        && buckets(&exp.negative, &got.negative)
        && (!hint_set || exp.counter_reset_hint == got.counter_reset_hint)
}

/// Relative tolerance of value comparisons.
const EPSILON: f64 = 1e-6;

/// The outcome of one file.
#[derive(Debug, Clone, Default)]
pub struct FileReport {
    pub name: String,
    pub passed: usize,
    pub failed: usize,
    /// One message per failed case: `file:line: command: reason`.
    pub failures: Vec<String>,
    /// Series lines of `load` commands that could not be loaded (native
    /// histogram values); the cases that need them fail.
    pub load_errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Runs one `.test` file.
pub fn run_file(path: &Path) -> Result<FileReport, ConformanceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConformanceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(run_text(&name, &text))
}

fn is_indented_or_blank(line: &str) -> bool {
    line.trim().is_empty() || line.starts_with(' ') || line.starts_with('\t')
}

fn is_comment_or_blank(line: &str) -> bool {
    let l = line.trim();
    l.is_empty() || l.starts_with('#')
}

/// Runs the text of a `.test` file.
pub fn run_text(name: &str, text: &str) -> FileReport {
    let mut report = FileReport {
        name: name.to_string(),
        ..Default::default()
    };
    let source = MemorySource::new();
    let engine = Engine::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let raw = lines[i];
        i += 1;
        if is_comment_or_blank(raw) {
            continue;
        }
        let line = raw.trim();
        let block_start = i;
        while i < lines.len() && is_indented_or_blank(lines[i]) && !lines[i].trim().is_empty() {
            i += 1;
        }
        let block: Vec<(usize, &str)> = (block_start..i)
            .map(|j| (j + 1, lines[j].trim()))
            .filter(|(_, l)| !l.starts_with('#'))
            .collect();
        let mut fail = |reason: String| {
            report.failed += 1;
            report
                .failures
                .push(format!("{name}:{lineno}: {line}: {reason}"));
        };
        if line == "clear" {
            source.clear();
        } else if let Some(rest) = line
            .strip_prefix("load_with_nhcb ")
            .or_else(|| line.strip_prefix("load "))
        {
            let nhcb = line.starts_with("load_with_nhcb");
            match parse_duration(rest.trim()) {
                Ok(interval) => {
                    let mut loaded = Vec::new();
                    for (n, l) in &block {
                        match load_line(&source, l, interval) {
                            Ok(series) => loaded.push(series),
                            Err(err) => report.load_errors.push(format!("{name}:{n}: {err}")),
                        }
                    }
                    if nhcb {
                        load_nhcb(&source, &loaded, interval);
                    }
                }
                Err(err) => fail(err),
            }
        } else if line.starts_with("eval") {
            match run_eval(&engine, &source, line, &block) {
                Ok(()) => report.passed += 1,
                Err(reason) => fail(reason),
            }
        } else {
            fail("unknown command".into());
        }
    }
    report
}

/// Parses a Prometheus duration (`1h30m`, `10s53ms`, `0`); a bare number
/// is seconds. Returns milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    let mut total: i64 = 0;
    let mut rest = s;
    let neg = if let Some(r) = rest.strip_prefix('-') {
        rest = r;
        true
    } else {
        false
    };
    if rest.is_empty() {
        return Err(format!("invalid duration {s:?}"));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult: i64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(format!("invalid duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(n.checked_mul(mult).ok_or("duration overflows")?)
            .ok_or("duration overflows")?;
    }
    Ok(if neg { -total } else { total })
}

/// Parses a float as promqltest writes them.
fn parse_float(s: &str) -> Result<f64, String> {
    match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => return Ok(f64::INFINITY),
        "-inf" => return Ok(f64::NEG_INFINITY),
        "nan" => return Ok(f64::NAN),
        "stale" => return Ok(stale_nan()),
        _ => {}
    }
    if let Ok(f) = s.parse::<f64>() {
        return Ok(f);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X"))
        && let Ok(n) = u64::from_str_radix(hex, 16)
    {
        let f = n as f64;
        return Ok(if neg { -f } else { f });
    }
    Err(format!("invalid number {s:?}"))
}

/// Splits values at whitespace outside `{{ … }}`.
fn tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start: Option<usize> = None;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() && depth == 0 {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
        } else {
            if start.is_none() {
                start = Some(i);
            }
            if bytes[i..].starts_with(b"{{") {
                depth += 1;
                i += 1;
            } else if bytes[i..].starts_with(b"}}") {
                depth = depth.saturating_sub(1);
                i += 1;
            }
        }
        i += 1;
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// Expands one value token (`1`, `_`, `stale`, `1+2x3`, `5x2`, `_x3`).
fn expand_token(token: &str, out: &mut Vec<Option<SeqVal>>) -> Result<(), String> {
    if token.starts_with("{{") {
        return expand_histogram(token, out);
    }
    if token == "_" {
        out.push(None);
        return Ok(());
    }
    let Some(xpos) = token.rfind('x') else {
        out.push(Some(SeqVal::F(parse_float(token)?)));
        return Ok(());
    };
    let head = &token[..xpos];
    let times: usize = token[xpos + 1..]
        .parse()
        .map_err(|_| format!("invalid repetition in {token:?}"))?;
    if head == "_" {
        out.extend(std::iter::repeat_n(None, times));
        return Ok(());
    }
    let bytes = head.as_bytes();
    let op = (1..bytes.len())
        .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    let (start, delta) = match op {
        Some(i) => (parse_float(&head[..i])?, parse_float(&head[i..])?),
        None => (parse_float(head)?, 0.0),
    };
    let mut v = start;
    for _ in 0..=times {
        out.push(Some(SeqVal::F(v)));
        v += delta;
    }
    Ok(())
}

fn expand_values(values: &str) -> Result<Vec<Option<SeqVal>>, String> {
    let mut out = Vec::new();
    for tok in tokens(values) {
        expand_token(tok, &mut out)?;
    }
    Ok(out)
}

/// Unquotes a `"…"`, `'…'` or `` `…` `` string at the start of `s`;
/// returns it and the rest.
fn take_quoted(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let Some((_, q)) = chars.next() else {
        return Err("expected a quoted string".into());
    };
    if !matches!(q, '"' | '\'' | '`') {
        return Err(format!("expected a quoted string at {s:?}"));
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Ok((out, &s[i + 1..]));
        }
        if c == '\\' && q != '`' {
            let Some((_, e)) = chars.next() else { break };
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'x' => {
                    let hex: String = chars.by_ref().take(2).map(|x| x.1).collect();
                    let b = u8::from_str_radix(&hex, 16).map_err(|_| "invalid \\x escape")?;
                    out.push(char::from(b));
                }
                'u' => {
                    let hex: String = chars.by_ref().take(4).map(|x| x.1).collect();
                    let n = u32::from_str_radix(&hex, 16).map_err(|_| "invalid \\u escape")?;
                    out.push(char::from_u32(n).ok_or("invalid \\u escape")?);
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
    }
    Err(format!("unterminated string in {s:?}"))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses `name{a="b", ...} rest` or `{...} rest`; returns labels and rest.
fn parse_series(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let name_end = s.find(|c: char| !is_name_char(c)).unwrap_or(s.len());
    if name_end > 0 {
        labels.insert(METRIC_NAME.to_string(), s[..name_end].to_string());
    }
    let mut rest = &s[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r.trim_start();
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (lname, r) = if rest.starts_with('"') || rest.starts_with('\'') {
                let (n, r) = take_quoted(rest)?;
                (n, r)
            } else {
                let end = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
                if end == 0 {
                    return Err(format!("invalid label set at {rest:?}"));
                }
                (rest[..end].to_string(), &rest[end..])
            };
            let r = r.trim_start();
            if let Some(r) = r.strip_prefix('=') {
                let (value, r) = take_quoted(r.trim_start())?;
                labels.insert(lname, value);
                rest = r.trim_start();
            } else {
                // A quoted metric name alone.
                labels.insert(METRIC_NAME.to_string(), lname);
                rest = r;
            }
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        }
    }
    Ok((labels, rest))
}

/// Loads the samples of a series line; returns its labels and values.
fn load_line(
    source: &MemorySource,
    line: &str,
    interval: i64,
) -> Result<(Labels, Vec<Option<SeqVal>>), String> {
    let (labels, rest) = parse_series(line)?;
    let values = expand_values(rest)?;
    for (i, v) in values.iter().enumerate() {
        let t = i as i64 * interval;
        match v {
            Some(SeqVal::F(f)) => source.append(&labels, t, *f),
            Some(SeqVal::H(h, _)) => source.append_histogram(&labels, t, h.clone()),
            None => {}
        }
    }
    Ok((labels, values))
}

/// A classic histogram at one timestamp, gathered for `load_with_nhcb`.
#[derive(Default)]
struct TempHistogram {
    /// (upper bound, cumulative count), sorted by bound.
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: f64,
    invalid: bool,
}

impl TempHistogram {
    fn set_bucket(&mut self, le: f64, count: f64) {
        if count < 0.0 {
            self.invalid = true;
            return;
        }
        let i = self.buckets.partition_point(|b| b.0 < le);
        if self.buckets.get(i).is_some_and(|b| b.0 == le) {
            return;
        }
        if (i > 0 && count < self.buckets[i - 1].1)
            || self.buckets.get(i).is_some_and(|b| count > b.1)
        {
            self.invalid = true;
            return;
        }
        self.buckets.insert(i, (le, count));
    }

    /// The native histogram with custom buckets, as Prometheus converts it.
    fn convert(mut self) -> Option<FloatHistogram> {
        if self.invalid {
            return None;
        }
        let count = match self.count {
            Some(c) => c,
            None => self.buckets.last()?.1,
        };
        if self.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
            self.buckets.push((f64::INFINITY, count));
        }
        if self.buckets.last().is_some_and(|b| b.1 != count) {
            return None;
        }
        let integer = self.buckets.iter().all(|b| b.1 == b.1.round()) && count == count.round();
        let mut h = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count,
            sum: self.sum,
            custom_values: self.buckets[..self.buckets.len() - 1]
                .iter()
                .map(|b| b.0)
                .collect(),
            ..Default::default()
        };
        let mut prev = 0.0;
        let deltas: Vec<f64> = self
            .buckets
            .iter()
            .map(|b| {
                let d = b.1 - prev;
                prev = b.1;
                d
            })
            .collect();
        // Integer histograms are compacted keeping runs of up to two empty
        // buckets inside the span; float ones drop every empty bucket.
        let max_empty = if integer { 2 } else { 0 };
        let first = deltas.iter().position(|d| *d != 0.0);
        let last = deltas.iter().rposition(|d| *d != 0.0);
        if let (Some(first), Some(last)) = (first, last) {
            let mut i = first;
            while i <= last {
                if deltas[i] == 0.0 {
                    let run = deltas[i..=last].iter().take_while(|d| **d == 0.0).count();
                    if run <= max_empty {
                        for j in i..i + run {
                            h.positive.insert(j as i32, 0.0);
                        }
                    }
                    i += run;
                    continue;
                }
                h.positive.insert(i as i32, deltas[i]);
                i += 1;
            }
        }
        Some(h)
    }
}

/// `load_with_nhcb`: the classic histograms of the loaded lines (`_bucket`,
/// `_count` and `_sum` series) also become native histograms with custom
/// buckets under the base name.
fn load_nhcb(source: &MemorySource, lines: &[(Labels, Vec<Option<SeqVal>>)], interval: i64) {
    let mut temps: std::collections::BTreeMap<
        Labels,
        std::collections::BTreeMap<i64, TempHistogram>,
    > = Default::default();
    for (labels, values) in lines {
        let name = labels.get(METRIC_NAME).map(String::as_str).unwrap_or("");
        let (kind, base) = if let Some(b) = name.strip_suffix("_bucket") {
            (0, b)
        } else if let Some(b) = name.strip_suffix("_count") {
            (1, b)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (2, b)
        } else {
            continue;
        };
        let le = if kind == 0 {
            match labels.get("le").map(|l| parse_float(l)) {
                Some(Ok(le)) if !le.is_nan() => Some(le),
                _ => continue,
            }
        } else {
            None
        };
        let mut key = labels.clone();
        key.insert(METRIC_NAME.to_string(), base.to_string());
        key.remove("le");
        let per_t = temps.entry(key).or_default();
        for (i, v) in values.iter().enumerate() {
            let Some(SeqVal::F(f)) = v else { continue };
            let temp = per_t.entry(i as i64 * interval).or_default();
            match le {
                Some(le) => temp.set_bucket(le, *f),
                None if kind == 1 => {
                    if *f < 0.0 {
                        temp.invalid = true;
                    }
                    temp.count = Some(*f);
                }
                None => temp.sum = *f,
            }
        }
    }
    for (labels, per_t) in temps {
        for (t, temp) in per_t {
            if let Some(h) = temp.convert() {
                source.append_histogram(&labels, t, h);
            }
        }
    }
}

enum Expect {
    Fail {
        msg: Option<String>,
        regex: Option<Regex>,
    },
    String(String),
    Scalar(f64),
    /// Expected series, in file order.
    Series(Vec<(Labels, Vec<Option<SeqVal>>)>),
}

struct EvalCmd<'a> {
    range: Option<(i64, i64, i64)>,
    at: i64,
    query: &'a str,
    ordered: bool,
    /// `expect range vector from .. to .. step ..` for an instant query.
    matrix_times: Option<(i64, i64, i64)>,
    expect: Expect,
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

fn parse_range_spec(s: &str) -> Result<((i64, i64, i64), &str), String> {
    let (kw, rest) = split_word(s);
    if kw != "from" {
        return Err(format!("expected 'from' in {s:?}"));
    }
    let (from, rest) = split_word(rest);
    let (kw, rest) = split_word(rest);
    if kw != "to" {
        return Err(format!("expected 'to' in {s:?}"));
    }
    let (to, rest) = split_word(rest);
    let (kw, rest) = split_word(rest);
    if kw != "step" {
        return Err(format!("expected 'step' in {s:?}"));
    }
    let (step, rest) = split_word(rest);
    Ok((
        (
            parse_duration(from)?,
            parse_duration(to)?,
            parse_duration(step)?,
        ),
        rest,
    ))
}

fn parse_eval<'a>(line: &'a str, block: &[(usize, &str)]) -> Result<EvalCmd<'a>, String> {
    let (cmd, rest) = split_word(line);
    let mut fail = false;
    let mut ordered = false;
    match cmd {
        "eval" | "eval_warn" | "eval_info" => {}
        "eval_fail" => fail = true,
        "eval_ordered" => ordered = true,
        other => return Err(format!("unknown command {other:?}")),
    }
    let (kind, rest) = split_word(rest);
    let (range, at, query) = match kind {
        "instant" => {
            let (kw, rest) = split_word(rest);
            if kw != "at" {
                return Err("expected 'at'".into());
            }
            let (t, q) = split_word(rest);
            (None, parse_duration(t)?, q)
        }
        "range" => {
            let (spec, q) = parse_range_spec(rest)?;
            (Some(spec), 0, q)
        }
        other => return Err(format!("unknown eval kind {other:?}")),
    };
    let mut msg = None;
    let mut regex = None;
    let mut string = None;
    let mut matrix_times = None;
    let mut series = Vec::new();
    let mut scalar = None;
    for (n, l) in block {
        if let Some(e) = l.strip_prefix("expect ") {
            let e = e.trim();
            if e == "fail" {
                fail = true;
            } else if let Some(m) = e.strip_prefix("fail msg:") {
                fail = true;
                msg = Some(m.trim().to_string());
            } else if let Some(r) = e.strip_prefix("fail regex:") {
                fail = true;
                regex = Some(Regex::new(r.trim()).map_err(|e| format!("line {n}: {e}"))?);
            } else if e == "ordered" {
                ordered = true;
            } else if let Some(s) = e.strip_prefix("string") {
                string = Some(take_quoted(s.trim())?.0);
            } else if let Some(r) = e.strip_prefix("range vector") {
                matrix_times = Some(parse_range_spec(r)?.0);
            } else if e.starts_with("warn")
                || e.starts_with("no_warn")
                || e.starts_with("info")
                || e.starts_with("no_info")
            {
                // Annotations are not checked.
            } else {
                return Err(format!("line {n}: unknown expectation {l:?}"));
            }
        } else if let Some(m) = l.strip_prefix("expected_fail_message") {
            msg = Some(m.trim().to_string());
        } else if let Some(r) = l.strip_prefix("expected_fail_regexp") {
            regex = Some(Regex::new(r.trim()).map_err(|e| format!("line {n}: {e}"))?);
        } else if let Ok(f) = parse_float(l) {
            scalar = Some(f);
        } else {
            let (labels, rest) = parse_series(l).map_err(|e| format!("line {n}: {e}"))?;
            let values = expand_values(rest).map_err(|e| format!("line {n}: {e}"))?;
            series.push((labels, values));
        }
    }
    let expect = if fail {
        Expect::Fail { msg, regex }
    } else if let Some(s) = string {
        Expect::String(s)
    } else if let Some(f) = scalar {
        Expect::Scalar(f)
    } else {
        Expect::Series(series)
    };
    Ok(EvalCmd {
        range,
        at,
        query,
        ordered,
        matrix_times,
        expect,
    })
}

/// Prometheus' `almost.Equal`.
fn almost_equal(a: f64, b: f64) -> bool {
    use super::is_stale_nan;
    if is_stale_nan(a) || is_stale_nan(b) {
        return is_stale_nan(a) && is_stale_nan(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < EPSILON * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

fn run_eval(
    engine: &Engine,
    source: &MemorySource,
    line: &str,
    block: &[(usize, &str)],
) -> Result<(), String> {
    let cmd = parse_eval(line, block)?;
    let result = match cmd.range {
        Some((start, end, step)) => engine
            .range_query(source, cmd.query, start, end, step)
            .map(Value::Matrix),
        None => engine.instant_query(source, cmd.query, cmd.at),
    };
    let value = match (result, &cmd.expect) {
        (Err(err), Expect::Fail { msg, regex }) => {
            let text = err.to_string();
            if let Some(m) = msg
                && *m != text
            {
                return Err(format!("expected error {m:?}, got {text:?}"));
            }
            if let Some(r) = regex
                && !r.is_match(&text)
            {
                return Err(format!("expected error matching {r}, got {text:?}"));
            }
            return Ok(());
        }
        (Err(err), _) => return Err(format!("unexpected error: {err}")),
        (Ok(_), Expect::Fail { .. }) => return Err("expected an error, got a result".into()),
        (Ok(v), _) => v,
    };
    match (value, &cmd.expect) {
        (Value::String(got), Expect::String(want)) => {
            if got == *want {
                Ok(())
            } else {
                Err(format!("expected string {want:?}, got {got:?}"))
            }
        }
        (Value::Scalar(got), Expect::Scalar(want)) => {
            if almost_equal(got, *want) {
                Ok(())
            } else {
                Err(format!("expected scalar {want}, got {got}"))
            }
        }
        (Value::Vector(got), Expect::Series(want)) => {
            let expected: HashMap<&Labels, (usize, &Vec<Option<SeqVal>>)> = want
                .iter()
                .enumerate()
                .map(|(i, (l, v))| (l, (i, v)))
                .collect();
            for (pos, s) in got.iter().enumerate() {
                let Some((epos, vals)) = expected.get(&s.labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has value {}",
                        DisplayLabels(&s.labels),
                        sample_value(s)
                    ));
                };
                if cmd.ordered && *epos != pos {
                    return Err(format!(
                        "expected metric {} at position {} but was at {}",
                        DisplayLabels(&s.labels),
                        epos + 1,
                        pos + 1
                    ));
                }
                let want = match (vals.first(), &s.h) {
                    (Some(Some(SeqVal::F(f))), None) => *f,
                    (Some(Some(SeqVal::H(w, hint))), Some(h)) => {
                        if !histograms_match(w, h, *hint) {
                            return Err(format!(
                                "expected {} for {} but got {}",
                                w.test_expression(),
                                DisplayLabels(&s.labels),
                                h.test_expression()
                            ));
                        }
                        continue;
                    }
                    _ => {
                        return Err(format!(
                            "expected {:?} for {} but got {}",
                            vals.first(),
                            DisplayLabels(&s.labels),
                            sample_value(s)
                        ));
                    }
                };
                if !almost_equal(want, s.f) {
                    return Err(format!(
                        "expected {want} for {} but got {}",
                        DisplayLabels(&s.labels),
                        s.f
                    ));
                }
            }
            if got.len() != want.len() {
                return Err(format!(
                    "expected {} series, got {}: {}",
                    want.len(),
                    got.len(),
                    got.iter()
                        .map(|s| format!("{} {}", DisplayLabels(&s.labels), sample_value(s)))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            Ok(())
        }
        (Value::Matrix(got), Expect::Series(want)) => {
            let (start, _end, step) = match (cmd.range, cmd.matrix_times) {
                (Some(r), _) => r,
                (None, Some(r)) => r,
                (None, None) => return Err("got a range vector, expected no range".into()),
            };
            let expected: HashMap<&Labels, &Vec<Option<SeqVal>>> =
                want.iter().map(|(l, v)| (l, v)).collect();
            for s in &got {
                let Some(vals) = expected.get(&s.labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has points {:?}",
                        DisplayLabels(&s.labels),
                        s.points
                    ));
                };
                let at = |i: usize| start + i as i64 * step;
                let want_points: Vec<(i64, f64)> = vals
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.as_ref().and_then(SeqVal::float).map(|f| (at(i), f)))
                    .collect();
                let want_hists: Vec<(i64, &FloatHistogram, bool)> = vals
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match v {
                        Some(SeqVal::H(h, hint)) => Some((at(i), h, *hint)),
                        _ => None,
                    })
                    .collect();
                let ok = want_points.len() == s.points.len()
                    && want_points
                        .iter()
                        .zip(&s.points)
                        .all(|(w, g)| w.0 == g.0 && almost_equal(w.1, g.1))
                    && want_hists.len() == s.histograms.len()
                    && want_hists
                        .iter()
                        .zip(&s.histograms)
                        .all(|(w, g)| w.0 == g.0 && histograms_match(w.1, &g.1, w.2));
                if !ok {
                    return Err(format!(
                        "for {} expected {:?} {:?}, got {:?} {:?}",
                        DisplayLabels(&s.labels),
                        want_points,
                        want_hists
                            .iter()
                            .map(|w| (w.0, w.1.test_expression()))
                            .collect::<Vec<_>>(),
                        s.points,
                        s.histograms
                            .iter()
                            .map(|g| (g.0, g.1.test_expression()))
                            .collect::<Vec<_>>()
                    ));
                }
            }
            if got.len() != want.len() {
                let missing: Vec<String> = want
                    .iter()
                    .filter(|(l, _)| !got.iter().any(|s| s.labels == *l))
                    .map(|(l, _)| DisplayLabels(l).to_string())
                    .collect();
                return Err(format!(
                    "expected metrics not found: {}",
                    missing.join(", ")
                ));
            }
            Ok(())
        }
        (got, _) => Err(format!("result of another type than expected: {got:?}")),
    }
}

fn sample_value(s: &super::Sample) -> String {
    match &s.h {
        Some(h) => h.test_expression(),
        None => s.f.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_values() {
        let v = expand_values("1+2x2 _ 5x1 -1-1x1 stale _x2 1e-3").expect("expand");
        assert_eq!(v.len(), 12);
        let v: Vec<Option<f64>> = v
            .iter()
            .map(|x| x.as_ref().and_then(SeqVal::float))
            .collect();
        assert_eq!(&v[..3], &[Some(1.0), Some(3.0), Some(5.0)]);
        assert_eq!(v[3], None);
        assert_eq!(&v[4..8], &[Some(5.0), Some(5.0), Some(-1.0), Some(-2.0)]);
        assert!(v[8].is_some_and(crate::promql::is_stale_nan));
        assert_eq!(&v[9..], &[None, None, Some(0.001)]);
        let h = expand_values("{{count:2 buckets:[1 1]}}+{{count:1 buckets:[1]}}x2")
            .expect("histograms");
        assert_eq!(h.len(), 3);
        assert!(matches!(&h[2], Some(SeqVal::H(x, false)) if x.count == 4.0));
        assert!(expand_values("{{schema:1 bogus:2}}").is_err());
    }

    #[test]
    fn parses_durations_and_series() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("10s53ms"), Ok(10_053));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("5x").is_err());
        let (l, rest) = parse_series(r#"foo{a="b\"c", d='e'} 1 2"#).expect("series");
        assert_eq!(l.get("__name__").map(String::as_str), Some("foo"));
        assert_eq!(l.get("a").map(String::as_str), Some("b\"c"));
        assert_eq!(l.get("d").map(String::as_str), Some("e"));
        assert_eq!(rest.trim(), "1 2");
    }

    #[test]
    fn runs_a_small_file_and_counts_failures() {
        let text = "load 1m\n  up{job=\"a\"} 0+1x10\n\neval instant at 5m up\n  up{job=\"a\"} 5\n\neval instant at 5m up\n  up{job=\"a\"} 6\n\neval instant at 0m histogram_count(up)\n  {} {{count:1}}\n\neval range from 0 to 2m step 1m up * 2\n  {job=\"a\"} 0 2 4\n\neval instant at 0m foo(\n  expect fail\n";
        let r = run_text("t", text);
        assert_eq!((r.passed, r.failed), (3, 2), "{:?}", r.failures);
    }
}
