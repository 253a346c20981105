//! PromQL functions and the numeric helpers they share with aggregations.

use std::cmp::Ordering;

use chrono::{DateTime, Datelike, Timelike};
use promql_parser::parser::Expr;
use regex::Regex;

use std::sync::Arc;

use super::engine::{
    El, Evaluator, LabelIndex, MSer, Mat, Val, exec, hash_labels, valid_label_name,
};
use super::histogram::{CounterResetHint, FloatHistogram};
use super::{Error, Labels, METRIC_NAME};

type Args = [Box<Expr>];

fn arg(args: &Args, i: usize) -> Result<&Expr, Error> {
    match args.get(i) {
        Some(a) => Ok(a),
        None => exec(format!("missing argument {}", i + 1)),
    }
}

fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// Evaluates the function `name` at `t`.
pub(crate) fn call(ev: &Evaluator<'_>, name: &str, args: &Args, t: i64) -> Result<Val, Error> {
    let now = t as f64 / 1000.0;
    match name {
        "time" => Ok(Val::Scalar(now)),
        "start" => Ok(Val::Scalar(ev.start as f64 / 1000.0)),
        "end" => Ok(Val::Scalar(ev.end as f64 / 1000.0)),
        "step" => Ok(Val::Scalar(ev.step as f64 / 1000.0)),
        "range" => Ok(Val::Scalar((ev.end - ev.start) as f64 / 1000.0)),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(arg(args, 0)?, t)?;
            let b = ev.eval_scalar(arg(args, 1)?, t)?;
            Ok(Val::Scalar(if name == "min_of" {
                go_min(a, b)
            } else {
                go_max(a, b)
            }))
        }
        "histogram_quantiles" => {
            let v = ev.eval_vector(arg(args, 0)?, t)?;
            let label = ev.eval_string(arg(args, 1)?, t)?;
            let mut qs = Vec::new();
            for a in args.iter().skip(2) {
                let q = ev.eval_scalar(a, t)?;
                qs.push((q, openmetrics_float(q)));
            }
            let mut out = Vec::new();
            let (natives, classic) = split_histograms(v);
            for (q, qs) in &qs {
                for (labels, h) in &natives {
                    let mut l = (**labels).clone();
                    l.insert(label.clone(), qs.clone());
                    out.push(El {
                        labels: Arc::new(l),
                        f: h.quantile(*q),
                        h: None,
                        drop: true,
                    });
                }
                for (labels, buckets) in &classic {
                    let mut l = (**labels).clone();
                    l.insert(label.clone(), qs.clone());
                    out.push(El {
                        labels: Arc::new(l),
                        f: bucket_quantile(*q, buckets.clone()),
                        h: None,
                        drop: true,
                    });
                }
            }
            Ok(Val::Vector(out))
        }
        "histogram_fraction" => {
            let lower = ev.eval_scalar(arg(args, 0)?, t)?;
            let upper = ev.eval_scalar(arg(args, 1)?, t)?;
            let v = ev.eval_vector(arg(args, 2)?, t)?;
            let (natives, classic) = split_histograms(v);
            let mut out: Vec<El> = natives
                .into_iter()
                .map(|(labels, h)| El {
                    labels,
                    f: h.fraction(lower, upper),
                    h: None,
                    drop: true,
                })
                .collect();
            out.extend(classic.into_iter().map(|(labels, buckets)| El {
                labels,
                f: bucket_fraction(lower, upper, buckets),
                h: None,
                drop: true,
            }));
            Ok(Val::Vector(out))
        }
        "pi" => Ok(Val::Scalar(std::f64::consts::PI)),
        "vector" => Ok(Val::Vector(vec![El {
            labels: Arc::default(),
            f: ev.eval_scalar(arg(args, 0)?, t)?,
            h: None,
            drop: false,
        }])),
        "scalar" => {
            let v = ev.eval_vector(arg(args, 0)?, t)?;
            let floats: Vec<f64> = v.iter().filter(|e| e.h.is_none()).map(|e| e.f).collect();
            Ok(Val::Scalar(if floats.len() == 1 {
                floats[0]
            } else {
                f64::NAN
            }))
        }
        "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" | "sgn" | "sin"
        | "cos" | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh"
        | "acosh" | "atanh" | "deg" | "rad" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sqrt" => f64::sqrt,
                "sgn" => |x: f64| {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        x
                    }
                },
                "sin" => f64::sin,
                "cos" => f64::cos,
                "tan" => f64::tan,
                "asin" => f64::asin,
                "acos" => f64::acos,
                "atan" => f64::atan,
                "sinh" => f64::sinh,
                "cosh" => f64::cosh,
                "tanh" => f64::tanh,
                "asinh" => f64::asinh,
                "acosh" => f64::acosh,
                "atanh" => f64::atanh,
                "deg" => f64::to_degrees,
                _ => f64::to_radians,
            };
            map_vector(ev.eval_vector(arg(args, 0)?, t)?, f)
        }
        "round" => {
            let v = ev.eval_vector(arg(args, 0)?, t)?;
            let to = match args.get(1) {
                Some(a) => ev.eval_scalar(a, t)?,
                None => 1.0,
            };
            let inv = 1.0 / to;
            map_vector(v, |x| (x * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let v = ev.eval_vector(arg(args, 0)?, t)?;
            let lo = ev.eval_scalar(arg(args, 1)?, t)?;
            let hi = ev.eval_scalar(arg(args, 2)?, t)?;
            if hi < lo {
                return Ok(Val::Vector(Vec::new()));
            }
            map_vector(v, |x| go_max(lo, go_min(hi, x)))
        }
        "clamp_min" => {
            let v = ev.eval_vector(arg(args, 0)?, t)?;
            let lo = ev.eval_scalar(arg(args, 1)?, t)?;
            map_vector(v, |x| go_max(lo, x))
        }
        "clamp_max" => {
            let v = ev.eval_vector(arg(args, 0)?, t)?;
            let hi = ev.eval_scalar(arg(args, 1)?, t)?;
            map_vector(v, |x| go_min(hi, x))
        }
        "timestamp" => {
            let a = unparen(arg(args, 0)?);
            let out = if let Expr::VectorSelector(vs) = a {
                ev.select_vector_ts(vs, t)?
                    .into_iter()
                    .map(|(el, ts)| El {
                        labels: el.labels,
                        f: ts as f64 / 1000.0,
                        h: None,
                        drop: true,
                    })
                    .collect()
            } else {
                ev.eval_vector(a, t)?
                    .into_iter()
                    .map(|el| El {
                        labels: el.labels,
                        f: now,
                        h: None,
                        drop: true,
                    })
                    .collect()
            };
            Ok(Val::Vector(out))
        }
        "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year" | "days_in_month"
        | "month" | "year" => {
            let v = match args.first() {
                Some(a) => ev.eval_vector(a, t)?,
                None => vec![El {
                    labels: Arc::default(),
                    f: now,
                    h: None,
                    drop: false,
                }],
            };
            let mut out = Vec::with_capacity(v.len());
            for el in v {
                if el.h.is_some() || !el.f.is_finite() {
                    continue;
                }
                let Some(d) = DateTime::from_timestamp(el.f as i64, 0) else {
                    continue;
                };
                let f = match name {
                    "minute" => d.minute() as f64,
                    "hour" => d.hour() as f64,
                    "day_of_week" => d.weekday().num_days_from_sunday() as f64,
                    "day_of_month" => d.day() as f64,
                    "day_of_year" => d.ordinal() as f64,
                    "month" => d.month() as f64,
                    "year" => d.year() as f64,
                    _ => days_in_month(d.year(), d.month()) as f64,
                };
                out.push(El {
                    labels: el.labels,
                    f,
                    h: None,
                    drop: true,
                });
            }
            Ok(Val::Vector(out))
        }
        "info" => info(ev, args, t),
        "label_replace" => label_replace(ev, args, t),
        "label_join" => label_join(ev, args, t),
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(args, 0)?, t)?;
            v.retain(|el| el.h.is_none());
            let desc = name == "sort_desc";
            v.sort_by(|a, b| match (a.f.is_nan(), b.f.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ if desc => b.f.partial_cmp(&a.f).unwrap_or(Ordering::Equal),
                _ => a.f.partial_cmp(&b.f).unwrap_or(Ordering::Equal),
            });
            Ok(Val::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut v = ev.eval_vector(arg(args, 0)?, t)?;
            let mut names = Vec::new();
            for a in &args[1.min(args.len())..] {
                names.push(ev.eval_string(a, t)?);
            }
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                for n in &names {
                    let x = a.labels.get(n).map(String::as_str).unwrap_or("");
                    let y = b.labels.get(n).map(String::as_str).unwrap_or("");
                    let o = natural_cmp(x, y);
                    if o != Ordering::Equal {
                        return if desc { o.reverse() } else { o };
                    }
                }
                let o = a.labels.cmp(&b.labels);
                if desc { o.reverse() } else { o }
            });
            Ok(Val::Vector(v))
        }
        "absent" => {
            let a = arg(args, 0)?;
            let v = ev.eval_vector(a, t)?;
            if !v.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(Val::Vector(vec![El {
                labels: Arc::new(absent_labels(a)),
                f: 1.0,
                h: None,
                drop: false,
            }]))
        }
        "absent_over_time" => {
            let a = arg(args, 0)?;
            let m = ev.eval_matrix(a, t)?;
            if m.series
                .iter()
                .any(|s| !s.points.is_empty() || !s.hists.is_empty())
            {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(Val::Vector(vec![El {
                labels: Arc::new(absent_labels(a)),
                f: 1.0,
                h: None,
                drop: false,
            }]))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(arg(args, 0)?, t)?;
            let v = ev.eval_vector(arg(args, 1)?, t)?;
            Ok(Val::Vector(histogram_quantile(q, v)))
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            // Native histograms only; float samples are ignored.
            let v = ev.eval_vector(arg(args, 0)?, t)?;
            let out = v
                .into_iter()
                .filter_map(|el| {
                    let h = el.h?;
                    let f = match name {
                        "histogram_count" => h.count,
                        "histogram_sum" => h.sum,
                        "histogram_avg" => h.sum / h.count,
                        "histogram_stddev" => h.variance().sqrt(),
                        _ => h.variance(),
                    };
                    Some(El {
                        labels: el.labels,
                        f,
                        h: None,
                        drop: true,
                    })
                })
                .collect();
            Ok(Val::Vector(out))
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(arg(args, 0)?, t)?;
            let m = ev.eval_matrix(arg(args, 1)?, t)?;
            Ok(over_time(m, true, |s, _| {
                Some(quantile(q, s.points.iter().map(|p| p.1).collect()))
            }))
        }
        "predict_linear" => {
            let m = ev.eval_matrix(arg(args, 0)?, t)?;
            let d = ev.eval_scalar(arg(args, 1)?, t)?;
            Ok(over_time(m, true, |s, _| {
                if s.points.len() < 2 {
                    return None;
                }
                let (slope, intercept) = linear_regression(&s.points, t);
                Some(slope * d + intercept)
            }))
        }
        "double_exponential_smoothing" => {
            let m = ev.eval_matrix(arg(args, 0)?, t)?;
            let sf = ev.eval_scalar(arg(args, 1)?, t)?;
            let tf = ev.eval_scalar(arg(args, 2)?, t)?;
            if !(sf > 0.0 && sf < 1.0) {
                return exec(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                ));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return exec(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                ));
            }
            Ok(over_time(m, true, |s, _| holt(&s.points, sf, tf)))
        }
        "rate"
        | "increase"
        | "delta"
        | "irate"
        | "idelta"
        | "deriv"
        | "resets"
        | "changes"
        | "avg_over_time"
        | "sum_over_time"
        | "count_over_time"
        | "min_over_time"
        | "max_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "last_over_time"
        | "first_over_time"
        | "present_over_time"
        | "mad_over_time"
        | "ts_of_first_over_time"
        | "ts_of_last_over_time"
        | "ts_of_max_over_time"
        | "ts_of_min_over_time" => {
            let m = ev.eval_matrix(arg(args, 0)?, t)?;
            let keep_name = matches!(name, "last_over_time" | "first_over_time");
            let f =
                |s: &MSer, m: &Mat| -> Option<f64> {
                    let p = &s.points;
                    if p.is_empty() {
                        return None;
                    }
                    let vals = || p.iter().map(|x| x.1);
                    match name {
                        "rate" => extrapolated_rate(p, m, true, true),
                        "increase" => extrapolated_rate(p, m, true, false),
                        "delta" => extrapolated_rate(p, m, false, false),
                        "irate" => instant_delta(p, true),
                        "idelta" => instant_delta(p, false),
                        "deriv" => {
                            if p.len() < 2 {
                                return None;
                            }
                            Some(linear_regression(p, p[0].0).0)
                        }
                        "resets" => Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
                        "changes" => Some(
                            p.windows(2)
                                .filter(|w| {
                                    !(w[1].1 == w[0].1 || (w[1].1.is_nan() && w[0].1.is_nan()))
                                })
                                .count() as f64,
                        ),
                        "avg_over_time" => Some(mean(&vals().collect::<Vec<_>>())),
                        "sum_over_time" => Some(kahan_sum(&vals().collect::<Vec<_>>())),
                        "count_over_time" => Some(p.len() as f64),
                        "present_over_time" => Some(1.0),
                        "min_over_time" => Some(vals().fold(f64::NAN, |acc, f| {
                            if acc > f || acc.is_nan() { f } else { acc }
                        })),
                        "max_over_time" => Some(vals().fold(f64::NAN, |acc, f| {
                            if acc < f || acc.is_nan() { f } else { acc }
                        })),
                        "stddev_over_time" => Some(variance(&vals().collect::<Vec<_>>()).sqrt()),
                        "stdvar_over_time" => Some(variance(&vals().collect::<Vec<_>>())),
                        "last_over_time" => p.last().map(|x| x.1),
                        "first_over_time" => p.first().map(|x| x.1),
                        "ts_of_last_over_time" => p.last().map(|x| x.0 as f64 / 1000.0),
                        "ts_of_first_over_time" => p.first().map(|x| x.0 as f64 / 1000.0),
                        "ts_of_max_over_time" | "ts_of_min_over_time" => {
                            let max = name == "ts_of_max_over_time";
                            let mut best: Option<(i64, f64)> = None;
                            for &(ts, f) in p.iter() {
                                best = match best {
                                    None => Some((ts, f)),
                                    Some((_, b))
                                        if b.is_nan() || (max && f >= b) || (!max && f <= b) =>
                                    {
                                        Some((ts, f))
                                    }
                                    keep => keep,
                                };
                            }
                            best.map(|b| b.0 as f64 / 1000.0)
                        }
                        _ => {
                            let v: Vec<f64> = vals().collect();
                            if v.iter().any(|x| x.is_nan()) {
                                return Some(f64::NAN);
                            }
                            let median = quantile(0.5, v.clone());
                            Some(quantile(
                                0.5,
                                v.into_iter().map(|x| (x - median).abs()).collect(),
                            ))
                        }
                    }
                };
            let mut out = Vec::with_capacity(m.series.len());
            for s in &m.series {
                let value = match histogram_range_fn(name, s, &m) {
                    Some(v) => v,
                    None => f(s, &m).map(|f| (f, None)),
                };
                if let Some((f, h)) = value {
                    out.push(El {
                        labels: s.labels.clone(),
                        f,
                        h,
                        drop: !keep_name || s.drop,
                    });
                }
            }
            Ok(Val::Vector(out))
        }
        other => exec(format!("function {other:?} is not supported")),
    }
}

/// A float as OpenMetrics writes it: always with a decimal point.
fn openmetrics_float(f: f64) -> String {
    let s = super::engine::format_value(f);
    if f.is_finite() && !s.contains('.') {
        format!("{s}.0")
    } else {
        s
    }
}

fn over_time(m: Mat, drop: bool, f: impl Fn(&MSer, &Mat) -> Option<f64>) -> Val {
    let mut out = Vec::with_capacity(m.series.len());
    for s in &m.series {
        if s.points.is_empty() {
            continue;
        }
        if let Some(v) = f(s, &m) {
            out.push(El {
                labels: s.labels.clone(),
                f: v,
                h: None,
                drop: drop || s.drop,
            });
        }
    }
    Val::Vector(out)
}

fn map_vector(v: Vec<El>, f: impl Fn(f64) -> f64) -> Result<Val, Error> {
    Ok(Val::Vector(
        v.into_iter()
            .filter(|el| el.h.is_none())
            .map(|el| El {
                f: f(el.f),
                h: None,
                labels: el.labels,
                drop: true,
            })
            .collect(),
    ))
}

/// Go's `math.Max` (NaN wins).
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min` (NaN wins).
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// Labels for `absent`/`absent_over_time`: the equality matchers of a
/// selector argument, except `__name__` and names matched more than once.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unparen(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let mut out = Labels::new();
    let mut repeated = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        let equal = matches!(m.op, promql_parser::label::MatchOp::Equal);
        if out.contains_key(&m.name) || repeated.contains(&m.name) {
            out.remove(&m.name);
            repeated.push(m.name.clone());
            continue;
        }
        if equal {
            out.insert(m.name.clone(), m.value.clone());
        } else {
            repeated.push(m.name.clone());
        }
    }
    out
}

/// The time info series are looked up at: that of the data of the first
/// argument (its `@` and `offset`).
fn info_time(ev: &Evaluator<'_>, e: &Expr, t: i64) -> i64 {
    match unparen(e) {
        Expr::VectorSelector(vs) => ev.effective_time(&vs.at, &vs.offset, t),
        Expr::MatrixSelector(ms) => ev.effective_time(&ms.vs.at, &ms.vs.offset, t),
        Expr::Subquery(sq) => ev.effective_time(&sq.at, &sq.offset, t),
        Expr::Call(c) => match c.args.args.iter().find(|a| {
            matches!(
                unparen(a),
                Expr::VectorSelector(_)
                    | Expr::MatrixSelector(_)
                    | Expr::Subquery(_)
                    | Expr::Call(_)
                    | Expr::Aggregate(_)
            )
        }) {
            Some(a) => info_time(ev, a, t),
            None => t,
        },
        Expr::Aggregate(a) => info_time(ev, &a.expr, t),
        _ => t,
    }
}

/// The labels that tie a series to its info series.
const IDENTIFYING_LABELS: [&str; 2] = ["instance", "job"];

/// `info(v, selector)`: adds the data labels of the info series (by default
/// `target_info`) that share the identifying labels of each element.
fn info(ev: &Evaluator<'_>, args: &Args, t: i64) -> Result<Val, Error> {
    use promql_parser::label::{MatchOp as PMatchOp, Matcher, Matchers};
    use promql_parser::parser::VectorSelector;
    let base = ev.eval_vector(arg(args, 0)?, t)?;
    let mut name_matchers: Vec<Matcher> = Vec::new();
    let mut data_matchers: Vec<Matcher> = Vec::new();
    if let Some(sel) = args.get(1) {
        let Expr::VectorSelector(vs) = unparen(sel) else {
            return exec("info(): the second argument must be a label selector");
        };
        if let Some(name) = &vs.name {
            name_matchers.push(Matcher::new(PMatchOp::Equal, METRIC_NAME, name));
        }
        for m in &vs.matchers.matchers {
            if m.name == METRIC_NAME {
                name_matchers.push(m.clone());
            } else {
                data_matchers.push(m.clone());
            }
        }
    }
    if name_matchers.is_empty() {
        name_matchers.push(Matcher::new(PMatchOp::Equal, METRIC_NAME, "target_info"));
    } else if name_matchers
        .iter()
        .all(|m| matches!(m.op, PMatchOp::NotEqual | PMatchOp::NotRe(_)))
    {
        // Only exclusions: the candidates are the info metrics.
        let re = regex::Regex::new("^(?s:.+_info)$")
            .map_err(|e| Error::Execution(format!("info(): {e}")))?;
        name_matchers.push(Matcher::new(PMatchOp::Re(re), METRIC_NAME, ".+_info"));
    }
    let is_info = |labels: &Labels| {
        let name = labels.get(METRIC_NAME).map(String::as_str).unwrap_or("");
        name_matchers.iter().all(|m| m.is_match(name))
    };
    let mut all = name_matchers.clone();
    all.extend(data_matchers.iter().cloned());
    let selector = VectorSelector::new(None, Matchers::new(all));
    let infos = ev.select_vector_ts(&selector, info_time(ev, arg(args, 0)?, t))?;
    let requires_match = data_matchers.iter().any(|m| !m.is_match(""));
    let mut out = Vec::with_capacity(base.len());
    for mut el in base {
        if is_info(&el.labels) {
            out.push(el);
            continue;
        }
        let id = |l: &Labels, k: &str| l.get(k).cloned().unwrap_or_default();
        let mut added: std::collections::BTreeMap<String, (String, i64)> = Default::default();
        let mut matched = false;
        for (info, ts) in &infos {
            if !IDENTIFYING_LABELS
                .iter()
                .all(|k| id(&info.labels, k) == id(&el.labels, k))
            {
                continue;
            }
            matched = true;
            for (k, v) in info.labels.iter() {
                if k == METRIC_NAME
                    || IDENTIFYING_LABELS.contains(&k.as_str())
                    || el.labels.contains_key(k)
                    || (!data_matchers.is_empty() && !data_matchers.iter().any(|m| &m.name == k))
                {
                    continue;
                }
                match added.get(k) {
                    Some((old, old_ts)) if *old_ts == *ts && old != v => {
                        return exec(format!(
                            "conflicting label: {k} has values {old:?} and {v:?} in info series"
                        ));
                    }
                    Some((_, old_ts)) if *old_ts >= *ts => {}
                    _ => {
                        added.insert(k.clone(), (v.clone(), *ts));
                    }
                }
            }
        }
        if !matched && requires_match {
            continue;
        }
        if !added.is_empty() {
            let labels = Arc::make_mut(&mut el.labels);
            for (k, (v, _)) in added {
                labels.insert(k, v);
            }
        }
        out.push(el);
    }
    Ok(Val::Vector(out))
}

fn check_unique(v: &[El]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    for el in v {
        if !seen.insert(&el.labels) {
            return exec(super::engine::DUPLICATE_LABELSET);
        }
    }
    Ok(())
}

fn label_replace(ev: &Evaluator<'_>, args: &Args, t: i64) -> Result<Val, Error> {
    let v = ev.eval_vector(arg(args, 0)?, t)?;
    let dst = ev.eval_string(arg(args, 1)?, t)?;
    let repl = ev.eval_string(arg(args, 2)?, t)?;
    let src = ev.eval_string(arg(args, 3)?, t)?;
    let pattern = ev.eval_string(arg(args, 4)?, t)?;
    let re = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
        Error::Execution(format!(
            "invalid regular expression in label_replace(): {e}"
        ))
    })?;
    if !valid_label_name(&dst) || ev.invalid_strings.contains_key(&dst) {
        return exec(format!(
            "invalid destination label name in label_replace(): {dst}"
        ));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut el in v {
        let value = el.labels.get(&src).cloned().unwrap_or_default();
        if let Some(caps) = re.captures(&value) {
            let mut res = String::new();
            caps.expand(&repl, &mut res);
            if res.is_empty() {
                if el.labels.contains_key(&dst) {
                    Arc::make_mut(&mut el.labels).remove(&dst);
                }
            } else if el.labels.get(&dst) != Some(&res) {
                Arc::make_mut(&mut el.labels).insert(dst.clone(), res);
            }
            if dst == METRIC_NAME {
                el.drop = false;
            }
        }
        out.push(el);
    }
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

fn label_join(ev: &Evaluator<'_>, args: &Args, t: i64) -> Result<Val, Error> {
    let v = ev.eval_vector(arg(args, 0)?, t)?;
    let dst = ev.eval_string(arg(args, 1)?, t)?;
    let sep = ev.eval_string(arg(args, 2)?, t)?;
    let mut srcs = Vec::new();
    for a in args.iter().skip(3) {
        srcs.push(ev.eval_string(a, t)?);
    }
    if !valid_label_name(&dst) || ev.invalid_strings.contains_key(&dst) {
        return exec(format!(
            "invalid destination label name in label_join(): {dst}"
        ));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut el in v {
        let joined = srcs
            .iter()
            .map(|s| el.labels.get(s).map(String::as_str).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(&sep);
        if joined.is_empty() {
            if el.labels.contains_key(&dst) {
                Arc::make_mut(&mut el.labels).remove(&dst);
            }
        } else if el.labels.get(&dst) != Some(&joined) {
            Arc::make_mut(&mut el.labels).insert(dst.clone(), joined);
        }
        if dst == METRIC_NAME {
            el.drop = false;
        }
        out.push(el);
    }
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

/// Compares strings with runs of digits compared as numbers.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        match (x.chars().next(), y.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let xe = x.find(|c: char| !c.is_ascii_digit()).unwrap_or(x.len());
                let ye = y.find(|c: char| !c.is_ascii_digit()).unwrap_or(y.len());
                let (xn, yn) = (
                    x[..xe].trim_start_matches('0'),
                    y[..ye].trim_start_matches('0'),
                );
                let o = xn.len().cmp(&yn.len()).then_with(|| xn.cmp(yn));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[xe..];
                y = &y[ye..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(&d);
                }
                x = &x[c.len_utf8()..];
                y = &y[d.len_utf8()..];
            }
        }
    }
}

/// Neumaier-compensated addition: returns the new sum and compensation.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

pub(crate) fn kahan_sum(values: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for &f in values {
        (sum, c) = kahan_inc(f, sum, c);
    }
    sum + c
}

/// The mean: a compensated sum divided by the count, switching to an
/// incremental mean once the sum would overflow.
pub(crate) fn mean(values: &[f64]) -> f64 {
    let Some((&first, rest)) = values.split_first() else {
        return f64::NAN;
    };
    let (mut sum, mut c, mut avg) = (first, 0.0, 0.0);
    let mut count = 1.0;
    let mut incremental = false;
    for &f in rest {
        count += 1.0;
        if !incremental {
            let (ns, nc) = kahan_inc(f, sum, c);
            if !ns.is_infinite() {
                (sum, c) = (ns, nc);
                continue;
            }
            incremental = true;
            avg = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (avg, c) = kahan_inc(f / count, q * avg, q * c);
    }
    if incremental {
        avg + c
    } else {
        sum / count + c / count
    }
}

/// The population variance (Welford, compensated).
pub(crate) fn variance(values: &[f64]) -> f64 {
    let (mut count, mut m, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &f in values {
        count += 1.0;
        let delta = f - (m + cm);
        (m, cm) = kahan_inc(delta / count, m, cm);
        (aux, ca) = kahan_inc(delta * (f - (m + cm)), aux, ca);
    }
    if count == 0.0 {
        return f64::NAN;
    }
    (aux + ca) / count
}

/// The φ-quantile of `values`, interpolating between neighbours.
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Least-squares fit of the points; x is seconds relative to `intercept_t`.
fn linear_regression(points: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = points.first().map(|p| p.1).unwrap_or(f64::NAN);
    let mut constant = true;
    for &(ts, f) in points {
        if f != init {
            constant = false;
        }
        n += 1.0;
        let x = (ts - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(f, sy, cy);
        (sxy, cxy) = kahan_inc(x * f, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if constant {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// rate, increase and delta: the change over the window, extrapolated to
/// its edges.
fn extrapolated_rate(p: &[(i64, f64)], m: &Mat, counter: bool, per_second: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let range_start = m.end - m.range;
    let range_end = m.end;
    let (first, last) = (p[0], p[p.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        for w in p.windows(2) {
            if w[1].1 < w[0].1 {
                result += w[0].1;
            }
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg_gap = sampled / (p.len() - 1) as f64;
    let threshold = avg_gap * 1.1;
    if to_start >= threshold {
        to_start = avg_gap / 2.0;
    }
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_gap / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if per_second {
        factor /= m.range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// irate and idelta: from the last two samples.
fn instant_delta(p: &[(i64, f64)], rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (prev, last) = (p[p.len() - 2], p[p.len() - 1]);
    let gap = last.0 - prev.0;
    if gap == 0 {
        return None;
    }
    let mut result = if rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    if rate {
        result /= gap as f64 / 1000.0;
    }
    Some(result)
}

/// Holt's double exponential smoothing.
fn holt(p: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, p[0].1);
    let mut b = p[1].1 - p[0].1;
    for (i, point) in p.iter().enumerate().skip(1) {
        let x = sf * point.1;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

fn parse_le(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// histogram_quantile over native histograms and classic buckets (series
/// with an `le` label).
fn histogram_quantile(q: f64, v: Vec<El>) -> Vec<El> {
    let (natives, classic) = split_histograms(v);
    let mut out: Vec<El> = natives
        .into_iter()
        .map(|(labels, h)| El {
            labels,
            f: h.quantile(q),
            h: None,
            drop: true,
        })
        .collect();
    out.extend(classic.into_iter().map(|(labels, buckets)| El {
        labels,
        f: bucket_quantile(q, buckets),
        h: None,
        drop: true,
    }));
    out
}

type BucketGroups = Vec<(Arc<Labels>, Vec<(f64, f64)>)>;

/// Native histograms and classic bucket groups of `v`; a native histogram
/// with the labels of a classic group (without `le`) conflicts with it and
/// both are left out.
type NativeHistograms = Vec<(Arc<Labels>, Arc<FloatHistogram>)>;

fn split_histograms(v: Vec<El>) -> (NativeHistograms, BucketGroups) {
    let mut natives = Vec::new();
    let mut floats = Vec::new();
    for el in v {
        match el.h {
            Some(h) => natives.push((el.labels, h)),
            None => floats.push(el),
        }
    }
    let mut classic = bucket_groups(floats);
    let mut kept = Vec::with_capacity(natives.len());
    for (labels, h) in natives {
        if let Some(i) = classic
            .iter()
            .position(|(l, b)| *l == labels && !b.is_empty())
        {
            classic.remove(i);
            continue;
        }
        kept.push((labels, h));
    }
    (kept, classic)
}

/// The sum (or the mean) of histograms; None when they mix exponential and
/// custom buckets.
pub(crate) fn sum_histograms(hs: &[Arc<FloatHistogram>], mean: bool) -> Option<FloatHistogram> {
    let (first, rest) = hs.split_first()?;
    let mut sum = (**first).clone();
    for h in rest {
        sum.add(h).ok()?;
    }
    if mean {
        sum.div(hs.len() as f64);
    }
    sum.compact();
    Some(sum)
}

/// Range functions over a series with native histogram samples: None when
/// the function leaves histograms to the float path, Some(None) when the
/// series yields no element.
#[allow(clippy::type_complexity)]
fn histogram_range_fn(
    name: &str,
    s: &MSer,
    m: &Mat,
) -> Option<Option<(f64, Option<Arc<FloatHistogram>>)>> {
    if s.hists.is_empty() {
        return None;
    }
    let p = &s.points;
    let hs = &s.hists;
    let hist = |h: FloatHistogram| Some(Some((0.0, Some(Arc::new(h)))));
    let float = |f: f64| Some(Some((f, None)));
    match name {
        "rate" | "increase" | "delta" => {
            if !p.is_empty() {
                return Some(None);
            }
            Some(
                histogram_extrapolated_rate(hs, m, name != "delta", name == "rate")
                    .map(|h| (0.0, Some(Arc::new(h)))),
            )
        }
        "irate" | "idelta" => {
            // The last two samples of either kind.
            let mut last: Vec<(i64, Option<&Arc<FloatHistogram>>)> = p
                .iter()
                .rev()
                .take(2)
                .map(|x| (x.0, None))
                .chain(hs.iter().rev().take(2).map(|x| (x.0, Some(&x.1))))
                .collect();
            last.sort_by_key(|x| x.0);
            if last.len() < 2 {
                return Some(None);
            }
            let (prev, cur) = (last[last.len() - 2], last[last.len() - 1]);
            let (Some(ph), Some(ch)) = (prev.1, cur.1) else {
                if prev.1.is_none() && cur.1.is_none() {
                    return None;
                }
                return Some(None);
            };
            let gap = cur.0 - prev.0;
            if gap == 0 {
                return Some(None);
            }
            let rate = name == "irate";
            let mut r = (**ch).clone();
            if (!rate || !ch.detect_reset(ph)) && r.sub(ph).is_err() {
                return Some(None);
            }
            r.counter_reset_hint = CounterResetHint::Gauge;
            r.compact();
            if rate {
                r.div(gap as f64 / 1000.0);
            }
            hist(r)
        }
        "resets" | "changes" => {
            let mut all: Vec<(i64, f64, Option<&Arc<FloatHistogram>>)> = p
                .iter()
                .map(|x| (x.0, x.1, None))
                .chain(hs.iter().map(|x| (x.0, 0.0, Some(&x.1))))
                .collect();
            all.sort_by_key(|x| x.0);
            let n = all
                .windows(2)
                .filter(|w| match (w[0].2, w[1].2) {
                    (None, None) => {
                        if name == "resets" {
                            w[1].1 < w[0].1
                        } else {
                            !(w[1].1 == w[0].1 || (w[1].1.is_nan() && w[0].1.is_nan()))
                        }
                    }
                    (Some(a), Some(b)) => {
                        if name == "resets" {
                            b.detect_reset(a)
                        } else {
                            !b.equals(a)
                        }
                    }
                    _ => true,
                })
                .count();
            float(n as f64)
        }
        "sum_over_time" | "avg_over_time" => {
            if !p.is_empty() {
                return Some(None);
            }
            let hs: Vec<Arc<FloatHistogram>> = hs.iter().map(|x| x.1.clone()).collect();
            Some(sum_histograms(&hs, name == "avg_over_time").map(|h| (0.0, Some(Arc::new(h)))))
        }
        "count_over_time" => float((p.len() + hs.len()) as f64),
        "present_over_time" => float(1.0),
        "last_over_time" | "ts_of_last_over_time" => {
            let (ht, h) = &hs[hs.len() - 1];
            match p.last() {
                Some(&(ft, f)) if ft > *ht => {
                    if name == "last_over_time" {
                        float(f)
                    } else {
                        float(ft as f64 / 1000.0)
                    }
                }
                _ if name == "last_over_time" => Some(Some((0.0, Some(h.clone())))),
                _ => float(*ht as f64 / 1000.0),
            }
        }
        "first_over_time" | "ts_of_first_over_time" => {
            let (ht, h) = &hs[0];
            match p.first() {
                Some(&(ft, f)) if ft < *ht => {
                    if name == "first_over_time" {
                        float(f)
                    } else {
                        float(ft as f64 / 1000.0)
                    }
                }
                _ if name == "first_over_time" => Some(Some((0.0, Some(h.clone())))),
                _ => float(*ht as f64 / 1000.0),
            }
        }
        _ => None,
    }
}

/// rate, increase and delta over native histograms.
fn histogram_extrapolated_rate(
    hs: &[(i64, Arc<FloatHistogram>)],
    m: &Mat,
    counter: bool,
    per_second: bool,
) -> Option<FloatHistogram> {
    if hs.len() < 2 {
        return None;
    }
    let mut result = histogram_rate(hs, counter)?;
    let range_start = m.end - m.range;
    let range_end = m.end;
    let (first_t, last_t) = (hs[0].0, hs[hs.len() - 1].0);
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg_gap = sampled / (hs.len() - 1) as f64;
    let threshold = avg_gap * 1.1;
    if to_start >= threshold {
        to_start = avg_gap / 2.0;
    }
    if counter && result.count > 0.0 && hs[0].1.count >= 0.0 {
        let to_zero = sampled * (hs[0].1.count / result.count);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_gap / 2.0;
    }
    let mut factor = if sampled != 0.0 {
        (sampled + to_start + to_end) / sampled
    } else {
        1.0
    };
    if per_second {
        factor /= m.range as f64 / 1000.0;
    }
    result.mul(factor);
    Some(result)
}

/// The increase from the first to the last histogram, corrected for
/// counter resets when `counter`.
fn histogram_rate(hs: &[(i64, Arc<FloatHistogram>)], counter: bool) -> Option<FloatHistogram> {
    let last = &hs[hs.len() - 1].1;
    let mut prev: FloatHistogram = (*hs[0].1).clone();
    let mut custom = prev.uses_custom_buckets();
    if counter {
        let second = &hs[1].1;
        if second.detect_reset(&prev) {
            prev = FloatHistogram {
                schema: second.schema,
                custom_values: second.custom_values.clone(),
                ..Default::default()
            };
            custom = second.uses_custom_buckets();
        }
    }
    if last.uses_custom_buckets() != custom {
        return None;
    }
    let mut min_schema = last.schema.min(prev.schema);
    if counter {
        for (_, h) in &hs[1..hs.len() - 1] {
            min_schema = min_schema.min(h.schema);
            if h.uses_custom_buckets() != custom {
                return None;
            }
        }
    }
    let mut h = last.copy_to_schema(min_schema);
    h.sub(&prev).ok()?;
    if counter {
        let mut prev: &FloatHistogram = &prev;
        for (_, cur) in &hs[1..] {
            if cur.detect_reset(prev) {
                h.add(prev).ok()?;
            }
            prev = cur;
        }
    }
    h.counter_reset_hint = CounterResetHint::Gauge;
    h.compact();
    Some(h)
}

/// Classic histogram buckets grouped by their labels without `le`; each
/// bucket is (upper bound, cumulative count).
fn bucket_groups(v: Vec<El>) -> BucketGroups {
    let mut groups: BucketGroups = Vec::new();
    let mut index = LabelIndex::default();
    for el in v {
        let Some(le) = el.labels.get("le").and_then(|s| parse_le(s)) else {
            continue;
        };
        let key = || el.labels.iter().filter(|(k, _)| k.as_str() != "le");
        let hash = hash_labels(key());
        let i = match index.find(hash, |i| groups[i].0.iter().eq(key())) {
            Some(i) => i,
            None => {
                let labels = key().map(|(k, v)| (k.clone(), v.clone())).collect();
                groups.push((Arc::new(labels), Vec::new()));
                index.insert(hash, groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[i].1.push((le, el.f));
    }
    groups
}

/// Sorts buckets by bound and merges buckets with the same bound; None
/// when the last bucket is not +Inf.
fn coalesce(mut buckets: Vec<(f64, f64)>) -> Option<Vec<(f64, f64)>> {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return None,
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == b.0 => last.1 += b.1,
            _ => merged.push(b),
        }
    }
    Some(merged)
}

/// The fraction of observations between `lower` and `upper`, interpolating
/// linearly inside buckets.
fn bucket_fraction(lower: f64, upper: f64, buckets: Vec<(f64, f64)>) -> f64 {
    let Some(buckets) = coalesce(buckets) else {
        return f64::NAN;
    };
    let count = buckets[buckets.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    // The cumulative count at value x.
    let rank_at = |x: f64| -> f64 {
        let mut below = 0.0;
        let mut lo = if buckets[0].0 <= 0.0 {
            f64::NEG_INFINITY
        } else {
            0.0
        };
        for &(hi, c) in &buckets {
            if x <= lo {
                return below;
            }
            if x < hi {
                if lo == f64::NEG_INFINITY {
                    return c;
                }
                return below + (c - below) * (x - lo) / (hi - lo);
            }
            below = c;
            lo = hi;
        }
        below
    };
    let lr = rank_at(lower).min(count);
    let ur = rank_at(upper).min(count);
    (ur - lr) / count
}

fn bucket_quantile(q: f64, buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let Some(mut buckets) = coalesce(buckets) else {
        return f64::NAN;
    };
    // Force monotonic counts, ignoring tiny floating point noise.
    if let Some(&(_, first)) = buckets.first() {
        let mut prev = first;
        for b in buckets.iter_mut().skip(1) {
            let cur = b.1;
            if cur == prev {
                continue;
            }
            if (cur - prev).abs() <= 1e-12 * cur.abs().max(prev.abs()) || cur < prev {
                b.1 = prev;
                continue;
            }
            prev = cur;
        }
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let n = buckets.len();
    let observations = buckets[n - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..n - 1]
        .iter()
        .position(|x| x.1 >= rank)
        .unwrap_or(n - 1);
    if b == n - 1 {
        return buckets[n - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let mut start = 0.0;
    let end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}
