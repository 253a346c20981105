//! Metric queries: range aggregations over log ranges at each step, then
//! vector aggregations, binary operations and functions step by step.

use std::collections::{BTreeMap, HashMap};

use lucia_common::labels::{Labels, is_valid_label_name};
use lucia_logql::ast::{self, BinaryOp, MetricExpr, RangeOp, VectorOp};
use regex::Regex;

use super::pipeline::{ERROR_LABEL, Pipeline, absent_labels};
use super::{Engine, QueryResult, ResultData, Sample, Series, Statistics};
use crate::QueryError;
use crate::source::{Direction, LogSource, SelectRequest};

/// One element of a vector at one step.
#[derive(Debug, Clone)]
struct Point {
    labels: Labels,
    value: f64,
}

/// A value per step.
enum Value {
    Scalar(Vec<f64>),
    Vector(Vec<Vec<Point>>),
}

/// The samples of one range aggregation's log range, by series, each sorted
/// by time.
type Extracted = Vec<(Labels, Vec<(i64, f64)>)>;

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::BadRequest(msg.into())
}

/// Checks what Loki's parser checks about range aggregations.
fn validate(expr: &MetricExpr) -> Result<(), QueryError> {
    match expr {
        MetricExpr::Range(ra) => {
            let name = ra.op.as_str();
            let unwrapped = ra.range.unwrap.is_some();
            match ra.op {
                RangeOp::CountOverTime | RangeOp::BytesOverTime | RangeOp::BytesRate
                    if unwrapped =>
                {
                    return Err(bad(format!("invalid aggregation {name} with unwrap")));
                }
                RangeOp::CountOverTime
                | RangeOp::BytesOverTime
                | RangeOp::BytesRate
                | RangeOp::Rate
                | RangeOp::AbsentOverTime => {}
                _ if !unwrapped => {
                    return Err(bad(format!("invalid aggregation {name} without unwrap")));
                }
                _ => {}
            }
            let grouping_allowed = matches!(
                ra.op,
                RangeOp::AvgOverTime
                    | RangeOp::MinOverTime
                    | RangeOp::MaxOverTime
                    | RangeOp::StdvarOverTime
                    | RangeOp::StddevOverTime
                    | RangeOp::QuantileOverTime
                    | RangeOp::FirstOverTime
                    | RangeOp::LastOverTime
            );
            if ra.grouping.is_some() && !grouping_allowed {
                return Err(bad(format!("grouping not allowed for {name} aggregation")));
            }
            if ra.op == RangeOp::QuantileOverTime && ra.param.is_none() {
                return Err(bad(
                    "parameter required for quantile_over_time: write quantile_over_time(0.99, ...)",
                ));
            }
            if ra.range.range.is_zero() {
                return Err(bad(format!(
                    "invalid range for {name}: the range must be greater than zero"
                )));
            }
            Ok(())
        }
        MetricExpr::Vector(va) => {
            if va.op == VectorOp::ApproxTopk && va.grouping.is_some() {
                return Err(bad("grouping not allowed for approx_topk aggregation"));
            }
            if matches!(
                va.op,
                VectorOp::Topk | VectorOp::Bottomk | VectorOp::ApproxTopk
            ) && va.param.is_none()
            {
                return Err(bad(format!(
                    "parameter required for operation {}",
                    va.op.as_str()
                )));
            }
            validate(&va.expr)
        }
        MetricExpr::Binary(b) => {
            validate(&b.lhs)?;
            validate(&b.rhs)
        }
        MetricExpr::LabelReplace { expr, dst, .. } => {
            if !is_valid_label_name(dst) {
                return Err(bad(format!(
                    "invalid destination label name in label_replace(): {dst:?}"
                )));
            }
            validate(expr)
        }
        MetricExpr::Paren(e) => validate(e),
        MetricExpr::Literal(_) | MetricExpr::VectorLiteral(_) => Ok(()),
    }
}

fn uses_approx_topk(expr: &MetricExpr) -> bool {
    match expr {
        MetricExpr::Vector(va) => va.op == VectorOp::ApproxTopk || uses_approx_topk(&va.expr),
        MetricExpr::Binary(b) => uses_approx_topk(&b.lhs) || uses_approx_topk(&b.rhs),
        MetricExpr::LabelReplace { expr, .. } | MetricExpr::Paren(expr) => uses_approx_topk(expr),
        MetricExpr::Range(_) | MetricExpr::Literal(_) | MetricExpr::VectorLiteral(_) => false,
    }
}

fn collect_ranges<'a>(expr: &'a MetricExpr, out: &mut Vec<&'a ast::RangeAggregation>) {
    match expr {
        MetricExpr::Range(ra) => out.push(ra),
        MetricExpr::Vector(va) => collect_ranges(&va.expr, out),
        MetricExpr::Binary(b) => {
            collect_ranges(&b.lhs, out);
            collect_ranges(&b.rhs, out);
        }
        MetricExpr::LabelReplace { expr, .. } | MetricExpr::Paren(expr) => {
            collect_ranges(expr, out)
        }
        MetricExpr::Literal(_) | MetricExpr::VectorLiteral(_) => {}
    }
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl<S: LogSource> Engine<S> {
    pub(super) async fn eval_metric(
        &self,
        tenant: &str,
        expr: &MetricExpr,
        steps: &[i64],
        instant: bool,
    ) -> Result<QueryResult, QueryError> {
        validate(expr)?;
        if !instant && uses_approx_topk(expr) {
            return Err(bad(
                "approx_topk is only supported on instant queries: run it as an instant query",
            ));
        }
        let mut leaves = Vec::new();
        collect_ranges(expr, &mut leaves);
        let mut stats = Statistics::default();
        let mut data: HashMap<usize, Extracted> = HashMap::new();
        let (Some(&first), Some(&last)) = (steps.first(), steps.last()) else {
            return Err(bad("the query has no evaluation step"));
        };
        for ra in leaves {
            let extracted = self.extract(tenant, ra, first, last, &mut stats).await?;
            data.insert(ra as *const _ as usize, extracted);
        }
        let evaluator = Evaluator { steps, data: &data };
        let value = evaluator.eval(expr)?;
        let data = match value {
            Value::Scalar(values) => {
                if instant {
                    ResultData::Scalar {
                        ts: first,
                        value: values.first().copied().unwrap_or(f64::NAN),
                    }
                } else {
                    ResultData::Matrix(vec![Series {
                        labels: Labels::new(),
                        points: steps.iter().copied().zip(values).collect(),
                    }])
                }
            }
            Value::Vector(per_step) => {
                if instant {
                    let points = per_step.into_iter().next().unwrap_or_default();
                    ResultData::Vector(
                        points
                            .into_iter()
                            .map(|p| Sample {
                                labels: p.labels,
                                ts: first,
                                value: p.value,
                            })
                            .collect(),
                    )
                } else {
                    let mut series: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
                    for (ts, points) in steps.iter().zip(per_step) {
                        for p in points {
                            series.entry(p.labels).or_default().push((*ts, p.value));
                        }
                    }
                    ResultData::Matrix(
                        series
                            .into_iter()
                            .map(|(labels, points)| Series { labels, points })
                            .collect(),
                    )
                }
            }
        };
        let series_count = match &data {
            ResultData::Vector(v) => v.len(),
            ResultData::Matrix(m) => m.len(),
            _ => 0,
        };
        let max = self.limits.max_series;
        if max > 0 && series_count > max {
            return Err(QueryError::Limit(format!(
                "maximum of series ({max}) reached for a single query; narrow the selector or aggregate with sum by (...)"
            )));
        }
        stats.total_entries_returned = match &data {
            ResultData::Vector(v) => v.len() as u64,
            ResultData::Matrix(m) => m.iter().map(|s| s.points.len() as u64).sum(),
            _ => 1,
        };
        Ok(QueryResult { data, stats })
    }

    async fn extract(
        &self,
        tenant: &str,
        ra: &ast::RangeAggregation,
        first: i64,
        last: i64,
        stats: &mut Statistics,
    ) -> Result<Extracted, QueryError> {
        let range = nanos(ra.range.range);
        let offset = nanos(ra.range.offset);
        let pipeline = Pipeline::compile(&ra.range.log, ra.range.unwrap.as_ref())?;
        let start = first
            .saturating_sub(offset)
            .saturating_sub(range)
            .saturating_add(1);
        let end = last.saturating_sub(offset).saturating_add(1);
        let streams = self
            .source
            .select(SelectRequest {
                tenant: tenant.to_string(),
                matchers: ra.range.log.matchers.clone(),
                start,
                end,
                direction: Direction::Forward,
                limit: 0,
                line_filter: super::pushdown::line_pushdown(&ra.range.log.stages),
            })
            .await?;
        stats.count_read(&streams);
        let mut series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        for stream in &streams {
            let mut per_stream = pipeline.for_stream(&stream.labels);
            for entry in &stream.entries {
                if entry.ts < start || entry.ts >= end {
                    continue;
                }
                let bytes = matches!(ra.op, RangeOp::BytesOverTime | RangeOp::BytesRate);
                let Some((value, labels)) =
                    per_stream.extract(entry.ts, &entry.line, &entry.metadata, bytes)
                else {
                    continue;
                };
                series
                    .entry(labels.labels().clone())
                    .or_default()
                    .push((entry.ts, value));
            }
        }
        let mut out: Extracted = series.into_iter().collect();
        for (_, samples) in &mut out {
            samples.sort_by_key(|(ts, _)| *ts);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

struct Evaluator<'a> {
    steps: &'a [i64],
    data: &'a HashMap<usize, Extracted>,
}

fn group_labels(labels: &Labels, grouping: Option<&ast::Grouping>) -> Labels {
    match grouping {
        None => Labels::new(),
        Some(g) if g.without => Labels::from_pairs(
            labels
                .iter()
                .filter(|l| !g.labels.contains(&l.name))
                .map(|l| (l.name.clone(), l.value.clone())),
        ),
        Some(g) => Labels::from_pairs(
            labels
                .iter()
                .filter(|l| g.labels.contains(&l.name))
                .map(|l| (l.name.clone(), l.value.clone())),
        ),
    }
}

fn check_errors(points: &[Point]) -> Result<(), QueryError> {
    for p in points {
        if let Some(err) = p.labels.get(ERROR_LABEL) {
            return Err(QueryError::BadRequest(format!(
                "pipeline error: '{err}' for series: '{}'. Use a label filter to intentionally skip this error (e.g. | __error__!=\"{err}\"), or drop every error with | __error__=\"\" (also possible after unwrap)",
                p.labels
            )));
        }
    }
    Ok(())
}

impl Evaluator<'_> {
    fn eval(&self, expr: &MetricExpr) -> Result<Value, QueryError> {
        match expr {
            MetricExpr::Range(ra) => self.range(ra),
            MetricExpr::Vector(va) => {
                let inner = self.eval(&va.expr)?;
                let Value::Vector(per_step) = inner else {
                    return Err(bad(format!(
                        "{} expects a vector argument, not a scalar",
                        va.op.as_str()
                    )));
                };
                Ok(Value::Vector(
                    per_step
                        .into_iter()
                        .map(|points| aggregate(va, points))
                        .collect(),
                ))
            }
            MetricExpr::Binary(b) => {
                let lhs = self.eval(&b.lhs)?;
                let rhs = self.eval(&b.rhs)?;
                binary(b, lhs, rhs)
            }
            MetricExpr::Literal(v) => Ok(Value::Scalar(vec![*v; self.steps.len()])),
            MetricExpr::VectorLiteral(v) => Ok(Value::Vector(
                self.steps
                    .iter()
                    .map(|_| {
                        vec![Point {
                            labels: Labels::new(),
                            value: *v,
                        }]
                    })
                    .collect(),
            )),
            MetricExpr::LabelReplace {
                expr,
                dst,
                replacement,
                src,
                regex,
            } => {
                let re = Regex::new(&format!("^(?s:{regex})$")).map_err(|e| {
                    bad(format!(
                        "invalid regular expression in label_replace(): {regex:?}: {e}"
                    ))
                })?;
                let Value::Vector(per_step) = self.eval(expr)? else {
                    return Err(bad("label_replace expects a vector argument, not a scalar"));
                };
                Ok(Value::Vector(
                    per_step
                        .into_iter()
                        .map(|points| {
                            points
                                .into_iter()
                                .map(|mut p| {
                                    let value = p.labels.get(src).unwrap_or("").to_string();
                                    if let Some(caps) = re.captures(&value) {
                                        let mut out = String::new();
                                        caps.expand(replacement, &mut out);
                                        if out.is_empty() {
                                            p.labels.remove(dst);
                                        } else {
                                            p.labels.insert(dst.clone(), out);
                                        }
                                    }
                                    p
                                })
                                .collect()
                        })
                        .collect(),
                ))
            }
            MetricExpr::Paren(e) => self.eval(e),
        }
    }

    fn range(&self, ra: &ast::RangeAggregation) -> Result<Value, QueryError> {
        let key = ra as *const _ as usize;
        let empty = Vec::new();
        let extracted = self.data.get(&key).unwrap_or(&empty);
        let range = nanos(ra.range.range);
        let offset = nanos(ra.range.offset);
        let range_secs = range as f64 / 1e9;

        // With grouping, the samples of every series in a group pool together.
        let grouped: Vec<(Labels, Vec<(i64, f64)>)>;
        let series: &[(Labels, Vec<(i64, f64)>)] = match &ra.grouping {
            None => extracted,
            Some(g) => {
                let mut groups: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
                for (labels, samples) in extracted {
                    groups
                        .entry(group_labels(labels, Some(g)))
                        .or_default()
                        .extend_from_slice(samples);
                }
                for samples in groups.values_mut() {
                    samples.sort_by_key(|(ts, _)| *ts);
                }
                grouped = groups.into_iter().collect();
                &grouped
            }
        };
        let absent =
            (ra.op == RangeOp::AbsentOverTime).then(|| absent_labels(&ra.range.log.matchers));
        let mut out = Vec::with_capacity(self.steps.len());
        for &t in self.steps {
            let hi = t.saturating_sub(offset);
            let lo = hi.saturating_sub(range);
            let mut points = Vec::new();
            let mut any = false;
            for (labels, samples) in series {
                let from = samples.partition_point(|(ts, _)| *ts <= lo);
                let to = samples.partition_point(|(ts, _)| *ts <= hi);
                if from >= to {
                    continue;
                }
                any = true;
                let window = &samples[from..to];
                if absent.is_some() {
                    continue;
                }
                let value = range_value(ra.op, ra.param, window, range_secs, lo, hi);
                points.push(Point {
                    labels: labels.clone(),
                    value,
                });
            }
            if let Some(labels) = &absent
                && !any
            {
                points.push(Point {
                    labels: labels.clone(),
                    value: 1.0,
                });
            }
            check_errors(&points)?;
            out.push(points);
        }
        Ok(Value::Vector(out))
    }
}

fn range_value(
    op: RangeOp,
    param: Option<f64>,
    window: &[(i64, f64)],
    range_secs: f64,
    lo: i64,
    hi: i64,
) -> f64 {
    let n = window.len() as f64;
    let values = window.iter().map(|(_, v)| *v);
    match op {
        RangeOp::CountOverTime => n,
        RangeOp::Rate | RangeOp::BytesRate => values.sum::<f64>() / range_secs,
        RangeOp::BytesOverTime | RangeOp::SumOverTime => values.sum(),
        RangeOp::AvgOverTime => values.sum::<f64>() / n,
        RangeOp::MinOverTime => {
            values.fold(f64::NAN, |m, v| if v < m || m.is_nan() { v } else { m })
        }
        RangeOp::MaxOverTime => {
            values.fold(f64::NAN, |m, v| if v > m || m.is_nan() { v } else { m })
        }
        RangeOp::StdvarOverTime => variance(values),
        RangeOp::StddevOverTime => variance(values).sqrt(),
        RangeOp::QuantileOverTime => quantile(param.unwrap_or(f64::NAN), values.collect()),
        RangeOp::FirstOverTime => window.first().map_or(f64::NAN, |(_, v)| *v),
        RangeOp::LastOverTime => window.last().map_or(f64::NAN, |(_, v)| *v),
        RangeOp::RateCounter => counter_rate(window, lo, hi),
        RangeOp::AbsentOverTime => 1.0,
    }
}

fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        m2 += delta * (v - mean);
    }
    if count == 0.0 { f64::NAN } else { m2 / count }
}

/// Prometheus' quantile: linear interpolation between ranks.
pub(super) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// `rate_counter`: the per-second increase over `(lo, hi]` with counter
/// resets added back and Prometheus' boundary extrapolation.
pub(super) fn counter_rate(window: &[(i64, f64)], lo: i64, hi: i64) -> f64 {
    let (Some(&(first_ts, first_v)), Some(&(last_ts, last_v))) = (window.first(), window.last())
    else {
        return f64::NAN;
    };
    if window.len() < 2 {
        return 0.0;
    }
    let mut increase = last_v - first_v;
    for pair in window.windows(2) {
        if pair[1].1 < pair[0].1 {
            increase += pair[0].1;
        }
    }
    let secs = |ns: i64| ns as f64 / 1e9;
    let range = secs(hi - lo);
    let sampled = secs(last_ts - first_ts);
    let mut to_start = secs(first_ts - lo);
    let mut to_end = secs(hi - last_ts);
    let average = sampled / (window.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if increase > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / increase);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let factor = (sampled + to_start + to_end) / sampled;
    increase * factor / range
}

/// Sorts by value (ascending or descending) with NaN last either way.
fn by_value(desc: bool) -> impl Fn(&Point, &Point) -> std::cmp::Ordering {
    move |a, b| match (a.value.is_nan(), b.value.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if desc => b.value.total_cmp(&a.value),
        _ => a.value.total_cmp(&b.value),
    }
}

fn aggregate(va: &ast::VectorAggregation, points: Vec<Point>) -> Vec<Point> {
    match va.op {
        VectorOp::Sort | VectorOp::SortDesc => {
            let mut points = points;
            points.sort_by(by_value(va.op == VectorOp::SortDesc));
            return points;
        }
        VectorOp::Topk | VectorOp::Bottomk | VectorOp::ApproxTopk => {
            let k = va.param.unwrap_or(0).max(0) as usize;
            let mut groups: BTreeMap<Labels, Vec<Point>> = BTreeMap::new();
            for p in points {
                groups
                    .entry(group_labels(&p.labels, va.grouping.as_ref()))
                    .or_default()
                    .push(p);
            }
            let mut out = Vec::new();
            for (_, mut members) in groups {
                members.sort_by(by_value(va.op != VectorOp::Bottomk));
                out.extend(members.into_iter().take(k));
            }
            return out;
        }
        _ => {}
    }
    let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
    for p in points {
        groups
            .entry(group_labels(&p.labels, va.grouping.as_ref()))
            .or_default()
            .push(p.value);
    }
    groups
        .into_iter()
        .map(|(labels, values)| {
            let n = values.len() as f64;
            let value = match va.op {
                VectorOp::Sum => values.iter().sum(),
                VectorOp::Avg => values.iter().sum::<f64>() / n,
                VectorOp::Count => n,
                VectorOp::Min => values
                    .iter()
                    .fold(f64::NAN, |m, &v| if v < m || m.is_nan() { v } else { m }),
                VectorOp::Max => values
                    .iter()
                    .fold(f64::NAN, |m, &v| if v > m || m.is_nan() { v } else { m }),
                VectorOp::Stdvar => variance(values.into_iter()),
                VectorOp::Stddev => variance(values.into_iter()).sqrt(),
                _ => f64::NAN,
            };
            Point { labels, value }
        })
        .collect()
}

/// Applies an arithmetic or comparison operator: the value and whether a
/// comparison holds (always true for arithmetic).
fn apply(op: BinaryOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinaryOp::Add => (l + r, true),
        BinaryOp::Sub => (l - r, true),
        BinaryOp::Mul => (l * r, true),
        BinaryOp::Div => (l / r, true),
        BinaryOp::Mod => (l % r, true),
        BinaryOp::Pow => (l.powf(r), true),
        BinaryOp::Eq => (l, l == r),
        BinaryOp::Ne => (l, l != r),
        BinaryOp::Gt => (l, l > r),
        BinaryOp::Ge => (l, l >= r),
        BinaryOp::Lt => (l, l < r),
        BinaryOp::Le => (l, l <= r),
        BinaryOp::And | BinaryOp::Or | BinaryOp::Unless => (f64::NAN, false),
    }
}

fn is_comparison(op: BinaryOp) -> bool {
    matches!(
        op,
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le
    )
}

fn is_set(op: BinaryOp) -> bool {
    matches!(op, BinaryOp::And | BinaryOp::Or | BinaryOp::Unless)
}

fn binary(b: &ast::BinaryExpr, lhs: Value, rhs: Value) -> Result<Value, QueryError> {
    let op = b.op;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            if is_set(op) {
                return Err(bad(
                    "set operators (and, or, unless) need vectors on both sides",
                ));
            }
            Ok(Value::Scalar(
                l.into_iter()
                    .zip(r)
                    .map(|(l, r)| {
                        let (value, holds) = apply(op, l, r);
                        if is_comparison(op) {
                            if holds { 1.0 } else { 0.0 }
                        } else {
                            value
                        }
                    })
                    .collect(),
            ))
        }
        (Value::Vector(v), Value::Scalar(s)) => vector_scalar(b, v, s, false),
        (Value::Scalar(s), Value::Vector(v)) => vector_scalar(b, v, s, true),
        (Value::Vector(l), Value::Vector(r)) => Ok(Value::Vector(
            l.into_iter()
                .zip(r)
                .map(|(l, r)| vector_vector(b, l, r))
                .collect::<Result<_, _>>()?,
        )),
    }
}

fn vector_scalar(
    b: &ast::BinaryExpr,
    vector: Vec<Vec<Point>>,
    scalars: Vec<f64>,
    scalar_left: bool,
) -> Result<Value, QueryError> {
    if is_set(b.op) {
        return Err(bad(
            "set operators (and, or, unless) need vectors on both sides",
        ));
    }
    let comparison = is_comparison(b.op);
    Ok(Value::Vector(
        vector
            .into_iter()
            .zip(scalars)
            .map(|(points, s)| {
                points
                    .into_iter()
                    .filter_map(|p| {
                        let (l, r) = if scalar_left {
                            (s, p.value)
                        } else {
                            (p.value, s)
                        };
                        let (value, holds) = apply(b.op, l, r);
                        if !comparison {
                            return Some(Point {
                                labels: p.labels,
                                value,
                            });
                        }
                        if b.return_bool {
                            Some(Point {
                                labels: p.labels,
                                value: if holds { 1.0 } else { 0.0 },
                            })
                        } else {
                            holds.then_some(Point {
                                labels: p.labels,
                                value: p.value,
                            })
                        }
                    })
                    .collect()
            })
            .collect(),
    ))
}

fn signature(labels: &Labels, matching: Option<&ast::VectorMatching>) -> Labels {
    match matching {
        Some(m) if m.on => Labels::from_pairs(
            labels
                .iter()
                .filter(|l| m.labels.contains(&l.name))
                .map(|l| (l.name.clone(), l.value.clone())),
        ),
        Some(m) => Labels::from_pairs(
            labels
                .iter()
                .filter(|l| !m.labels.contains(&l.name))
                .map(|l| (l.name.clone(), l.value.clone())),
        ),
        None => labels.clone(),
    }
}

fn vector_vector(
    b: &ast::BinaryExpr,
    lhs: Vec<Point>,
    rhs: Vec<Point>,
) -> Result<Vec<Point>, QueryError> {
    let matching = b.matching.as_ref();
    let sig = |p: &Point| signature(&p.labels, matching);
    match b.op {
        BinaryOp::And => {
            let right: std::collections::HashSet<Labels> = rhs.iter().map(sig).collect();
            return Ok(lhs
                .into_iter()
                .filter(|p| right.contains(&sig(p)))
                .collect());
        }
        BinaryOp::Unless => {
            let right: std::collections::HashSet<Labels> = rhs.iter().map(sig).collect();
            return Ok(lhs
                .into_iter()
                .filter(|p| !right.contains(&sig(p)))
                .collect());
        }
        BinaryOp::Or => {
            let left: std::collections::HashSet<Labels> = lhs.iter().map(sig).collect();
            let mut out = lhs;
            out.extend(rhs.into_iter().filter(|p| !left.contains(&sig(p))));
            return Ok(out);
        }
        _ => {}
    }
    let group = matching.and_then(|m| m.group.as_ref());
    // The "one" side is indexed by signature; `many` is iterated.
    let group_right = group.is_some_and(|g| !g.left);
    let (many, one) = if group_right { (rhs, lhs) } else { (lhs, rhs) };
    let mut index: HashMap<Labels, Point> = HashMap::new();
    for p in one {
        let key = sig(&p);
        if index.contains_key(&key) {
            return Err(bad(format!(
                "found duplicate series for the match group {key} on the {} hand-side of the operation: use group_left/group_right or more matching labels",
                if group_right { "left" } else { "right" }
            )));
        }
        index.insert(key, p);
    }
    let comparison = is_comparison(b.op);
    let mut seen: std::collections::HashSet<Labels> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in many {
        let key = sig(&p);
        let Some(other) = index.get(&key) else {
            continue;
        };
        if group.is_none() && !seen.insert(key.clone()) {
            return Err(bad(format!(
                "multiple matches for labels {key}: many-to-one matching must be explicit (group_left/group_right)"
            )));
        }
        let (l, r) = if group_right {
            (other.value, p.value)
        } else {
            (p.value, other.value)
        };
        let (value, holds) = apply(b.op, l, r);
        let value = if comparison {
            if b.return_bool {
                if holds { 1.0 } else { 0.0 }
            } else if holds {
                l
            } else {
                continue;
            }
        } else {
            value
        };
        // Prometheus' result labels: one-to-one keeps the matching
        // signature, grouped matching keeps the "many" side's labels.
        let mut labels = if group.is_none() {
            key.clone()
        } else {
            p.labels.clone()
        };
        if let Some(g) = group {
            for name in &g.include {
                match other.labels.get(name) {
                    Some(v) => labels.insert(name.clone(), v.to_string()),
                    None => {
                        labels.remove(name);
                    }
                }
            }
        }
        out.push(Point { labels, value });
    }
    Ok(out)
}
