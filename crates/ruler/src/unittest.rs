//! `lucia rules test` (promtool's rule unit tests) and `lucia rules check`
//! (`promtool check rules`). The PromQL engine is injected ([`TestEngine`]),
//! so the ruler does not depend on tsdb.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lucia_common::duration::{format_prometheus_duration, parse_prometheus_duration};
use serde::Deserialize;

use crate::group::{AlertState, Appender, EvalContext, Group, QueryEngine, STALE_NAN};
use crate::rulefile::{self, Language, RuleKind};
use crate::{Labels, QueryValue};

/// A fresh in-memory PromQL engine over its own storage: appended samples
/// are visible to later queries.
pub trait TestEngine: QueryEngine + Appender {}
impl<T: QueryEngine + Appender> TestEngine for T {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    value: f64,
}

/// Parses a series description: `name{a="b"}` or `{a="b"}`.
pub fn parse_metric(text: &str) -> Result<Labels, String> {
    let t = text.trim();
    if t.is_empty() || t == "{}" {
        return Ok(Labels::new());
    }
    let expr = promql_parser::parser::parse(t).map_err(|e| format!("bad series {t:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("bad series {t:?}: not a metric"));
    };
    let mut labels = Labels::new();
    if let Some(name) = vs.name {
        labels.insert("__name__".into(), name);
    }
    for m in vs.matchers.matchers {
        if m.op != promql_parser::label::MatchOp::Equal {
            return Err(format!("bad series {t:?}: only = matchers"));
        }
        labels.insert(m.name, m.value);
    }
    Ok(labels)
}

fn parse_number(s: &str) -> Result<f64, String> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad number {s:?}")),
    }
}

/// Expands promtool's values notation: `1 2 _ stale 1+2x3 5-1x2 7x2 _x3`.
/// `None` is a missing sample.
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in text.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if tok == "stale" {
            out.push(Some(STALE_NAN));
            continue;
        }
        let Some((left, times)) = tok.rsplit_once('x') else {
            out.push(Some(parse_number(tok)?));
            continue;
        };
        let n: u64 = times.parse().map_err(|_| format!("bad values {tok:?}"))?;
        if left == "_" {
            out.extend(std::iter::repeat_n(None, n as usize));
            continue;
        }
        let bytes = left.as_bytes();
        let split = (1..bytes.len())
            .find(|&i| matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
        let (start, step) = match split {
            Some(i) => {
                let step = parse_number(&left[i + 1..])?;
                let step = if bytes[i] == b'-' { -step } else { step };
                (parse_number(&left[..i])?, step)
            }
            None => (parse_number(left)?, 0.0),
        };
        let mut v = start;
        for _ in 0..=n {
            out.push(Some(v));
            v += step;
        }
    }
    Ok(out)
}

fn duration(s: &Option<String>, default: Duration) -> Result<Duration, String> {
    match s.as_deref() {
        None | Some("") => Ok(default),
        Some(s) => parse_prometheus_duration(s).map_err(|e| format!("bad duration {s:?}: {e}")),
    }
}

fn fmt_labels(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}={}", serde_json::to_string(v).unwrap_or_default());
    }
    s.push('}');
    s
}

fn fmt_alerts(list: &[(Labels, Labels)]) -> String {
    if list.is_empty() {
        return "[]".into();
    }
    let mut s = String::from("[\n");
    for (i, (l, a)) in list.iter().enumerate() {
        let _ = write!(
            s,
            "            {i}:\n              Labels:{}\n              Annotations:{}\n",
            fmt_labels(l),
            fmt_labels(a)
        );
    }
    s.push_str("            ]");
    s
}

/// Runs one test file; returns what to print and whether it passed.
pub fn run_file(path: &Path, new_engine: &dyn Fn() -> Arc<dyn TestEngine>) -> (String, bool) {
    let mut out = format!("Unit Testing:  {}\n", path.display());
    match run_file_inner(path, new_engine) {
        Ok(errors) if errors.is_empty() => {
            out.push_str("  SUCCESS\n\n");
            (out, true)
        }
        Ok(errors) => {
            out.push_str("  FAILED:\n");
            for e in errors {
                out.push_str(&e);
                out.push('\n');
            }
            out.push('\n');
            (out, false)
        }
        Err(e) => {
            let _ = writeln!(out, "  FAILED:\n    {e}\n");
            (out, false)
        }
    }
}

fn run_file_inner(
    path: &Path,
    new_engine: &dyn Fn() -> Arc<dyn TestEngine>,
) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: TestFile =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let eval_interval = duration(&file.evaluation_interval, Duration::from_secs(60))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let globs: Vec<String> = file
        .rule_files
        .iter()
        .map(|f| {
            let p = PathBuf::from(f);
            if p.is_absolute() { p } else { dir.join(p) }
                .display()
                .to_string()
        })
        .collect();
    let mut groups = Vec::new();
    for p in crate::manager::expand_globs(&globs).map_err(|e| e.to_string())? {
        let loaded = rulefile::load_file(&p, Language::Promql).map_err(|errs| {
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n    ")
        })?;
        groups.extend(loaded);
    }
    if !file.group_eval_order.is_empty() {
        let order: HashMap<&str, usize> = file
            .group_eval_order
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        for g in &groups {
            if !order.contains_key(g.name.as_str()) {
                return Err(format!("group {:?} is missing in group_eval_order", g.name));
            }
        }
        groups.sort_by_key(|g| order.get(g.name.as_str()).copied().unwrap_or(usize::MAX));
    }
    let mut errors = Vec::new();
    for tg in &file.tests {
        errors.extend(run_group(tg, &groups, eval_interval, new_engine())?);
    }
    Ok(errors)
}

fn run_group(
    tg: &TestGroup,
    defs: &[rulefile::RuleGroup],
    eval_interval: Duration,
    engine: Arc<dyn TestEngine>,
) -> Result<Vec<String>, String> {
    let interval_ms = duration(&tg.interval, eval_interval)?.as_millis() as i64;
    let eval_ms = (eval_interval.as_millis() as i64).max(1);
    let mut input = Vec::new();
    for s in &tg.input_series {
        let labels = parse_metric(&s.series)?;
        for (i, v) in expand_values(&s.values)?.into_iter().enumerate() {
            if let Some(v) = v {
                input.push((labels.clone(), i as i64 * interval_ms, v));
            }
        }
    }
    engine.append(&input)?;
    let name_prefix = if tg.name.is_empty() {
        String::new()
    } else {
        format!("    name: {},\n", tg.name)
    };
    let mut groups: Vec<Group> = defs
        .iter()
        .map(|d| {
            let mut g = Group::new(d.clone(), "fake".into(), eval_interval);
            g.set_restored();
            g
        })
        .collect();
    let ctx = EvalContext {
        engine: engine.clone(),
        appender: engine.clone(),
        external_labels: tg.external_labels.clone(),
        external_url: tg.external_url.clone(),
    };
    let parse_time = |s: &str| -> Result<i64, String> {
        parse_prometheus_duration(s)
            .map(|d| d.as_millis() as i64)
            .map_err(|e| format!("bad eval_time {s:?}: {e}"))
    };
    let mut alert_tests: BTreeMap<i64, Vec<&AlertTest>> = BTreeMap::new();
    for t in &tg.alert_rule_test {
        alert_tests
            .entry(parse_time(&t.eval_time)?)
            .or_default()
            .push(t);
    }
    let mut max_t = alert_tests.keys().next_back().copied().unwrap_or(0);
    for t in &tg.promql_expr_test {
        max_t = max_t.max(parse_time(&t.eval_time)?);
    }
    let mut errors = Vec::new();
    let alert_times: Vec<i64> = alert_tests.keys().copied().collect();
    let mut curr = 0;
    let mut ts = 0;
    while ts <= max_t {
        let mut eval_errs = Vec::new();
        for g in &mut groups {
            g.eval(ts, &ctx);
            for r in &g.rules {
                if let Some(e) = &r.last_error {
                    eval_errs.push(format!(
                        "    rule: {}, time: {}, err: {e}",
                        r.rule.name,
                        format_prometheus_duration(Duration::from_millis(ts as u64))
                    ));
                }
            }
        }
        if !eval_errs.is_empty() {
            return Ok(eval_errs);
        }
        while curr < alert_times.len()
            && ts <= alert_times[curr]
            && alert_times[curr] < ts + eval_ms
        {
            let t = alert_times[curr];
            for test in &alert_tests[&t] {
                let mut got: Vec<(Labels, Labels)> = groups
                    .iter()
                    .flat_map(|g| g.rules.iter())
                    .filter(|r| r.rule.kind == RuleKind::Alerting && r.rule.name == test.alertname)
                    .flat_map(|r| r.active.values())
                    .filter(|a| a.state == AlertState::Firing)
                    .map(|a| (a.labels.clone(), a.annotations.clone()))
                    .collect();
                let mut exp: Vec<(Labels, Labels)> = test
                    .exp_alerts
                    .iter()
                    .map(|a| {
                        let mut l = a.exp_labels.clone();
                        l.insert("alertname".into(), test.alertname.clone());
                        (l, a.exp_annotations.clone())
                    })
                    .collect();
                got.sort();
                exp.sort();
                if got != exp {
                    errors.push(format!(
                        "{name_prefix}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                        test.alertname,
                        test.eval_time,
                        fmt_alerts(&exp),
                        fmt_alerts(&got)
                    ));
                }
            }
            curr += 1;
        }
        ts += eval_ms;
    }
    for test in &tg.promql_expr_test {
        let t = parse_time(&test.eval_time)?;
        let got = match engine.instant(&test.expr, t) {
            Ok(QueryValue::Vector(v)) => v.into_iter().map(|s| (s.labels, s.value)).collect(),
            Ok(QueryValue::Scalar(f)) => vec![(Labels::new(), f)],
            Ok(_) => {
                errors.push(format!(
                    "{name_prefix}    expr: {:?}, time: {}, err: rule result is not a vector or scalar",
                    test.expr, test.eval_time
                ));
                continue;
            }
            Err(e) => {
                errors.push(format!(
                    "{name_prefix}    expr: {:?}, time: {}, err: {e}",
                    test.expr, test.eval_time
                ));
                continue;
            }
        };
        let mut got: Vec<(Labels, f64)> = got;
        let mut exp = Vec::new();
        for s in &test.exp_samples {
            exp.push((parse_metric(&s.labels)?, s.value));
        }
        got.sort_by(|a, b| a.0.cmp(&b.0));
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        let same = got.len() == exp.len()
            && got
                .iter()
                .zip(&exp)
                .all(|(g, e)| g.0 == e.0 && (g.1 == e.1));
        if !same {
            let show = |v: &[(Labels, f64)]| {
                let items: Vec<String> = v
                    .iter()
                    .map(|(l, f)| {
                        format!(
                            "{} {}",
                            fmt_labels(l),
                            crate::api::format_e(*f).to_uppercase()
                        )
                    })
                    .collect();
                items.join(", ")
            };
            errors.push(format!(
                "{name_prefix}    expr: {:?}, time: {},\n        exp: {}\n        got: {}",
                test.expr,
                test.eval_time,
                show(&exp),
                show(&got)
            ));
        }
    }
    Ok(errors)
}

/// `promtool check rules` for one file: what to print and whether it passed.
pub fn check_file(path: &Path) -> (String, bool) {
    let mut out = format!("Checking {}\n", path.display());
    match rulefile::load_file(path, Language::Promql) {
        Ok(groups) => {
            let n: usize = groups.iter().map(|g| g.rules.len()).sum();
            let _ = writeln!(out, "  SUCCESS: {n} rules found\n");
            (out, true)
        }
        Err(errs) => {
            out.push_str("  FAILED:\n");
            for e in errs {
                let _ = writeln!(out, "{e}");
            }
            out.push('\n');
            (out, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_notation() {
        let v = expand_values("1 _ 1+2x2 5-1x1 7x1 _x2 stale -1e-3 Inf").unwrap();
        let f: Vec<String> = v
            .iter()
            .map(|x| match x {
                None => "_".into(),
                Some(f) if f.to_bits() == STALE_NAN.to_bits() => "stale".into(),
                Some(f) => f.to_string(),
            })
            .collect();
        assert_eq!(
            f,
            [
                "1", "_", "1", "3", "5", "5", "4", "7", "7", "_", "_", "stale", "-0.001", "inf"
            ]
        );
        assert!(expand_values("1+x").is_err());
    }

    #[test]
    fn metrics_parse() {
        let l = parse_metric("up{job=\"a\", instance=\"b\"}").unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(parse_metric("{}").unwrap().len(), 0);
        assert!(parse_metric("up{job=~\"a\"}").is_err());
    }
}
