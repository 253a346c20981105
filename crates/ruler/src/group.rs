//! Evaluation of one rule group: recording rules, the alert state machine
//! (inactive, pending, firing, `for`, `keep_firing_for`), `ALERTS` and
//! `ALERTS_FOR_STATE`, stale markers, for-state restore and which alerts to
//! send — Prometheus' `rules` package, synchronous and behind the
//! [`QueryEngine`] and [`Appender`] traits so that the daemon (over HTTP)
//! and `lucia rules test` (in memory) share it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rulefile::{Rule, RuleGroup, RuleKind};
use crate::template::{Expander, QueryFn};
use crate::{Labels, QueryValue, Sample};

/// Prometheus' stale marker.
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);
/// How long a resolved alert is kept (and re-sent) before it is dropped.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Evaluates expressions at a time (ms).
pub trait QueryEngine: Send + Sync {
    fn instant(&self, expr: &str, t_ms: i64) -> Result<QueryValue, String>;
}

/// Stores samples (recorded series, `ALERTS`, `ALERTS_FOR_STATE`).
pub trait Appender: Send + Sync {
    fn append(&self, samples: &[(Labels, i64, f64)]) -> Result<(), String>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule (times in ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: Labels,
    pub value: f64,
    pub state: AlertState,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    pub valid_until: i64,
    pub keep_firing_since: Option<i64>,
}

impl Alert {
    fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        let last = self.last_sent_at.unwrap_or(i64::MIN);
        if self.resolved_at.is_some_and(|r| r > last) {
            return true;
        }
        self.last_sent_at.is_none_or(|l| l + resend_delay_ms < ts)
    }
}

/// An alert as it is sent to Alertmanager (times in ms; `ends_at` is the
/// resolve time or the `ValidUntil` horizon).
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingAlert {
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: i64,
    pub ends_at: i64,
    pub generator_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// A rule with its evaluation state.
#[derive(Debug, Clone)]
pub struct RuleState {
    pub rule: Rule,
    /// The group's labels under the rule's own.
    pub labels: Labels,
    pub health: Health,
    pub last_error: Option<String>,
    /// Wall-clock time of the last evaluation (ms).
    pub last_eval: Option<i64>,
    pub eval_duration: Duration,
    /// Alerts by their label set.
    pub active: BTreeMap<Labels, Alert>,
    /// Whether the `for` state has been restored (ALERTS series are written
    /// only once it has, as Prometheus does).
    pub restored: bool,
    /// The series this rule wrote at the last evaluation (for stale markers).
    series_returned: HashSet<Labels>,
}

impl RuleState {
    pub fn new(rule: Rule, group_labels: &Labels) -> Self {
        let mut labels = group_labels.clone();
        labels.extend(rule.labels.clone());
        Self {
            rule,
            labels,
            health: Health::Unknown,
            last_error: None,
            last_eval: None,
            eval_duration: Duration::ZERO,
            active: BTreeMap::new(),
            restored: false,
            series_returned: HashSet::new(),
        }
    }

    /// The rule's state: the highest of its alerts'.
    pub fn state(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }
}

/// Everything one evaluation needs besides the group.
pub struct EvalContext {
    pub engine: Arc<dyn QueryEngine>,
    pub appender: Arc<dyn Appender>,
    pub external_labels: Labels,
    pub external_url: String,
}

/// A rule group with its state.
#[derive(Debug, Clone)]
pub struct Group {
    pub def: RuleGroup,
    pub tenant: String,
    pub interval: Duration,
    pub rules: Vec<RuleState>,
    /// Wall-clock time of the last evaluation (ms).
    pub last_eval: Option<i64>,
    pub eval_duration: Duration,
    /// The evaluation timestamp of the last evaluation (ms).
    pub last_eval_ts: Option<i64>,
}

fn now_ms() -> i64 {
    lucia_common::time::now_nanos() / 1_000_000
}

fn vector(value: QueryValue) -> Result<Vec<Sample>, String> {
    match value {
        QueryValue::Vector(v) => Ok(v),
        QueryValue::Scalar(f) => Ok(vec![Sample {
            labels: Labels::new(),
            value: f,
        }]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

impl Group {
    pub fn new(def: RuleGroup, tenant: String, default_interval: Duration) -> Self {
        let interval = def.interval_or(default_interval);
        let rules = def
            .rules
            .iter()
            .map(|r| RuleState::new(r.clone(), &def.labels))
            .collect();
        Self {
            def,
            tenant,
            interval,
            rules,
            last_eval: None,
            eval_duration: Duration::ZERO,
            last_eval_ts: None,
        }
    }

    /// A stable key: tenant, file and name.
    pub fn key(&self) -> (String, String, String) {
        (
            self.tenant.clone(),
            self.def.file.clone(),
            self.def.name.clone(),
        )
    }

    /// Takes over the state of the same rules of `old` (after a reload).
    pub fn copy_state(&mut self, old: &Group) {
        self.last_eval = old.last_eval;
        self.last_eval_ts = old.last_eval_ts;
        self.eval_duration = old.eval_duration;
        let mut by_name: HashMap<(String, String), Vec<&RuleState>> = HashMap::new();
        for r in &old.rules {
            by_name
                .entry((r.rule.name.clone(), r.rule.expr.clone()))
                .or_default()
                .push(r);
        }
        for r in &mut self.rules {
            let key = (r.rule.name.clone(), r.rule.expr.clone());
            if let Some(list) = by_name.get_mut(&key)
                && !list.is_empty()
            {
                let o = list.remove(0);
                r.health = o.health;
                r.last_error = o.last_error.clone();
                r.last_eval = o.last_eval;
                r.eval_duration = o.eval_duration;
                r.active = o.active.clone();
                r.restored = o.restored;
                r.series_returned = o.series_returned.clone();
            }
        }
    }

    /// Marks every rule restored (nothing to restore from).
    pub fn set_restored(&mut self) {
        for r in &mut self.rules {
            r.restored = true;
        }
    }

    /// Evaluates every rule at `ts` (ms), in order; recorded series are
    /// appended before the next rule runs.
    pub fn eval(&mut self, ts: i64, ctx: &EvalContext) {
        let start = Instant::now();
        let offset = self.def.query_offset.as_millis() as i64;
        let t = ts - offset;
        let limit = self.def.limit as usize;
        let interval_ms = self.interval.as_millis() as i64;
        let _ = interval_ms;
        for rule in &mut self.rules {
            let rule_start = Instant::now();
            let result = match rule.rule.kind {
                RuleKind::Recording => eval_recording(rule, t, limit, ctx),
                RuleKind::Alerting => eval_alerting(rule, ts, t, limit, ctx),
            };
            rule.eval_duration = rule_start.elapsed();
            rule.last_eval = Some(now_ms());
            let samples = match result {
                Ok(samples) => samples,
                Err(e) => {
                    tracing::warn!(group = %self.def.name, rule = %rule.rule.name, error = %e, "rule evaluation failed");
                    rule.health = Health::Err;
                    rule.last_error = Some(e);
                    continue;
                }
            };
            // Stale markers for series gone since the last evaluation.
            let current: HashSet<Labels> = samples.iter().map(|s| s.0.clone()).collect();
            let mut out = samples;
            for gone in rule.series_returned.difference(&current) {
                out.push((gone.clone(), t, STALE_NAN));
            }
            if !out.is_empty()
                && let Err(e) = ctx.appender.append(&out)
            {
                tracing::warn!(group = %self.def.name, rule = %rule.rule.name, error = %e, "writing rule results failed");
                rule.health = Health::Err;
                rule.last_error = Some(format!("writing results: {e}"));
                continue;
            }
            rule.series_returned = current;
            rule.health = Health::Ok;
            rule.last_error = None;
        }
        self.eval_duration = start.elapsed();
        self.last_eval = Some(now_ms());
        self.last_eval_ts = Some(ts);
    }

    /// The alerts due for sending at `ts` (Prometheus' `sendAlerts`).
    pub fn alerts_to_send(&mut self, ts: i64, resend_delay: Duration) -> Vec<OutgoingAlert> {
        let resend_ms = resend_delay.as_millis() as i64;
        let delta = resend_ms.max(self.interval.as_millis() as i64);
        let mut out = Vec::new();
        for rule in &mut self.rules {
            if rule.rule.kind != RuleKind::Alerting {
                continue;
            }
            let generator_url = crate::template::graph_link(&rule.rule.expr, 1);
            for alert in rule.active.values_mut() {
                if !alert.needs_sending(ts, resend_ms) {
                    continue;
                }
                alert.last_sent_at = Some(ts);
                alert.valid_until = ts + 4 * delta;
                out.push(OutgoingAlert {
                    labels: alert.labels.clone(),
                    annotations: alert.annotations.clone(),
                    starts_at: alert.fired_at.unwrap_or(alert.active_at),
                    ends_at: alert.resolved_at.unwrap_or(alert.valid_until),
                    generator_url: generator_url.clone(),
                });
            }
        }
        out
    }

    /// Restores the `for` state of pending alerts from `ALERTS_FOR_STATE`
    /// (Prometheus' `RestoreForState`); `ts` is now (ms).
    pub fn restore_for_state(
        &mut self,
        ts: i64,
        engine: &dyn QueryEngine,
        outage_tolerance: Duration,
        grace_period: Duration,
    ) {
        let tolerance_ms = outage_tolerance.as_millis() as i64;
        let grace_ms = grace_period.as_millis() as i64;
        for rule in &mut self.rules {
            if rule.rule.kind != RuleKind::Alerting {
                continue;
            }
            let hold_ms = rule.rule.for_.as_millis() as i64;
            if hold_ms == 0 || hold_ms < grace_ms {
                rule.restored = true;
                continue;
            }
            for alert in rule.active.values_mut() {
                let mut selector = String::from("ALERTS_FOR_STATE{");
                for (i, (k, v)) in alert.labels.iter().enumerate() {
                    if i > 0 {
                        selector.push(',');
                    }
                    selector.push_str(k);
                    selector.push('=');
                    selector.push_str(&serde_json::to_string(v).unwrap_or_default());
                }
                selector.push_str(&format!("}}[{tolerance_ms}ms]"));
                let last = match engine.instant(&selector, ts) {
                    Ok(QueryValue::Matrix(series)) => series
                        .into_iter()
                        .filter_map(|(_, points)| points.last().copied())
                        .max_by_key(|p| p.0),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(alert = %rule.rule.name, error = %e, "restoring the for state failed");
                        None
                    }
                };
                let Some((down_at, v)) = last else { continue };
                let down_at = down_at / 1000 * 1000;
                let mut restored_active_at = (v as i64) * 1000;
                let remaining = hold_ms - (down_at - restored_active_at);
                if remaining <= 0 {
                    // It was firing when we went down; the next evaluation
                    // makes it firing again.
                } else if remaining < grace_ms {
                    restored_active_at = ts + grace_ms - hold_ms;
                } else {
                    restored_active_at += ts - down_at;
                }
                tracing::info!(alert = %rule.rule.name, labels = ?alert.labels, active_at = restored_active_at, "restored for state");
                alert.active_at = restored_active_at;
            }
            rule.restored = true;
        }
    }
}

fn eval_recording(
    rule: &RuleState,
    t: i64,
    limit: usize,
    ctx: &EvalContext,
) -> Result<Vec<(Labels, i64, f64)>, String> {
    let result = vector(ctx.engine.instant(&rule.rule.expr, t)?)?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(result.len());
    for s in result {
        let mut labels = s.labels;
        labels.insert("__name__".into(), rule.rule.name.clone());
        for (k, v) in &rule.labels {
            if v.is_empty() {
                labels.remove(k);
            } else {
                labels.insert(k.clone(), v.clone());
            }
        }
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push((labels, t, s.value));
    }
    if limit > 0 && out.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}

fn eval_alerting(
    rule: &mut RuleState,
    ts: i64,
    t: i64,
    limit: usize,
    ctx: &EvalContext,
) -> Result<Vec<(Labels, i64, f64)>, String> {
    let result = vector(ctx.engine.instant(&rule.rule.expr, t)?)?;
    let engine = ctx.engine.clone();
    let query: QueryFn = Arc::new(move |q: &str| engine.instant(q, t).and_then(vector));
    let mut fresh: BTreeMap<Labels, Alert> = BTreeMap::new();
    for s in result {
        let mut sample_labels = s.labels.clone();
        sample_labels.remove("__name__");
        let expander = Expander::new(
            &s.labels,
            s.value,
            &ctx.external_labels,
            &ctx.external_url,
            Some(query.clone()),
        );
        let tmpl_name = format!("__alert_{}", rule.rule.name);
        let mut labels = sample_labels;
        for (k, v) in &rule.labels {
            let v = expander.expand(&tmpl_name, v);
            if v.is_empty() {
                labels.remove(k);
            } else {
                labels.insert(k.clone(), v);
            }
        }
        labels.insert("alertname".into(), rule.rule.name.clone());
        let annotations = rule
            .rule
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), expander.expand(&tmpl_name, v)))
            .collect();
        if fresh.contains_key(&labels) {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels".into(),
            );
        }
        fresh.insert(
            labels.clone(),
            Alert {
                labels,
                annotations,
                value: s.value,
                state: AlertState::Pending,
                active_at: ts,
                fired_at: None,
                resolved_at: None,
                last_sent_at: None,
                valid_until: 0,
                keep_firing_since: None,
            },
        );
    }
    let result_fps: HashSet<Labels> = fresh.keys().cloned().collect();
    for (k, a) in fresh {
        match rule.active.get_mut(&k) {
            Some(existing) if existing.state != AlertState::Inactive => {
                existing.value = a.value;
                existing.annotations = a.annotations;
            }
            _ => {
                rule.active.insert(k, a);
            }
        }
    }
    let hold_ms = rule.rule.for_.as_millis() as i64;
    let keep_ms = rule.rule.keep_firing_for.as_millis() as i64;
    let mut out = Vec::new();
    let mut active_pending = 0;
    let mut remove = Vec::new();
    for (k, a) in rule.active.iter_mut() {
        if !result_fps.contains(k) {
            let mut keep_firing = false;
            if a.state == AlertState::Firing && keep_ms > 0 {
                let since = *a.keep_firing_since.get_or_insert(ts);
                keep_firing = ts - since < keep_ms;
            }
            if a.state == AlertState::Pending
                || a.resolved_at
                    .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
            {
                remove.push(k.clone());
            }
            if a.state != AlertState::Inactive && !keep_firing {
                a.state = AlertState::Inactive;
                a.resolved_at = Some(ts);
            }
            if !keep_firing {
                continue;
            }
        } else {
            a.keep_firing_since = None;
        }
        active_pending += 1;
        if a.state == AlertState::Pending && ts - a.active_at >= hold_ms {
            a.state = AlertState::Firing;
            a.fired_at = Some(ts);
        }
        if rule.restored {
            let mut l = a.labels.clone();
            l.insert("__name__".into(), "ALERTS".into());
            l.insert("alertstate".into(), a.state.as_str().into());
            out.push((l, t, 1.0));
            let mut l = a.labels.clone();
            l.insert("__name__".into(), "ALERTS_FOR_STATE".into());
            out.push((l, t, (a.active_at / 1000) as f64));
        }
    }
    for k in remove {
        rule.active.remove(&k);
    }
    if limit > 0 && active_pending > limit {
        rule.active.clear();
        return Err(format!(
            "exceeded limit of {limit} with {active_pending} alerts"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rulefile::{Language, parse_file};
    use parking_lot::Mutex;

    /// Answers every query with the current vector.
    struct Fixed(Mutex<Vec<Sample>>);
    impl QueryEngine for Fixed {
        fn instant(&self, _expr: &str, _t: i64) -> Result<QueryValue, String> {
            Ok(QueryValue::Vector(self.0.lock().clone()))
        }
    }
    #[derive(Default)]
    struct Sink(Mutex<Vec<(Labels, i64, f64)>>);
    impl Appender for Sink {
        fn append(&self, s: &[(Labels, i64, f64)]) -> Result<(), String> {
            self.0.lock().extend_from_slice(s);
            Ok(())
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pending_firing_keep_firing_resolved() {
        let text = "groups:\n  - name: g\n    interval: 1m\n    rules:\n      - alert: Down\n        expr: up == 0\n        for: 2m\n        keep_firing_for: 1m\n        labels: {sev: page}\n        annotations: {s: '{{ $labels.job }} is {{ $value }}'}\n";
        let def = parse_file("f", text, Language::Promql).unwrap().remove(0);
        let mut g = Group::new(def, "fake".into(), Duration::from_secs(60));
        g.set_restored();
        let engine = Arc::new(Fixed(Mutex::new(vec![Sample {
            labels: labels(&[("__name__", "up"), ("job", "a")]),
            value: 0.0,
        }])));
        let sink = Arc::new(Sink::default());
        let ctx = EvalContext {
            engine: engine.clone(),
            appender: sink.clone(),
            external_labels: Labels::new(),
            external_url: String::new(),
        };
        let min = 60_000;
        let delay = Duration::from_secs(60);
        g.eval(0, &ctx);
        let a = g.rules[0].active.values().next().unwrap().clone();
        assert_eq!(a.state, AlertState::Pending);
        assert_eq!(
            a.labels,
            labels(&[("alertname", "Down"), ("job", "a"), ("sev", "page")])
        );
        assert_eq!(a.annotations["s"], "a is 0");
        assert!(g.alerts_to_send(0, delay).is_empty());
        g.eval(min, &ctx);
        assert_eq!(g.rules[0].state(), AlertState::Pending);
        g.eval(2 * min, &ctx);
        assert_eq!(g.rules[0].state(), AlertState::Firing);
        let sent = g.alerts_to_send(2 * min, delay);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].starts_at, 2 * min);
        assert_eq!(sent[0].ends_at, 2 * min + 4 * min);
        // Not resent within the resend delay.
        assert!(g.alerts_to_send(2 * min + 30_000, delay).is_empty());
        // The condition clears: kept firing for 1m, then resolved.
        engine.0.lock().clear();
        g.eval(3 * min, &ctx);
        assert_eq!(g.rules[0].state(), AlertState::Firing);
        g.eval(4 * min, &ctx);
        assert_eq!(g.rules[0].state(), AlertState::Inactive);
        let sent = g.alerts_to_send(4 * min, delay);
        assert_eq!(sent[0].ends_at, 4 * min);
        let written = sink.0.lock().clone();
        let firing = written
            .iter()
            .filter(|(l, _, v)| {
                *v == 1.0 && l.get("alertstate").map(String::as_str) == Some("firing")
            })
            .count();
        assert_eq!(firing, 2, "{written:?}");
        // Stale markers for the ALERTS series once resolved.
        assert!(
            written
                .iter()
                .any(|(_, t, v)| *t == 4 * min && v.to_bits() == STALE_NAN.to_bits())
        );
        // Dropped after the resolved retention.
        g.eval(4 * min + RESOLVED_RETENTION_MS + 1, &ctx);
        assert!(g.rules[0].active.is_empty());
    }

    #[test]
    fn recording_rules_rename_and_label() {
        let text = "groups:\n  - name: g\n    labels: {team: x}\n    rules:\n      - record: job:up\n        expr: up\n        labels: {a: b}\n";
        let def = parse_file("f", text, Language::Promql).unwrap().remove(0);
        let mut g = Group::new(def, "fake".into(), Duration::from_secs(60));
        let engine = Arc::new(Fixed(Mutex::new(vec![Sample {
            labels: labels(&[("__name__", "up"), ("job", "a")]),
            value: 3.0,
        }])));
        let sink = Arc::new(Sink::default());
        let ctx = EvalContext {
            engine,
            appender: sink.clone(),
            external_labels: Labels::new(),
            external_url: String::new(),
        };
        g.eval(1000, &ctx);
        let written = sink.0.lock().clone();
        assert_eq!(
            written,
            vec![(
                labels(&[
                    ("__name__", "job:up"),
                    ("a", "b"),
                    ("job", "a"),
                    ("team", "x")
                ]),
                1000,
                3.0
            )]
        );
        assert_eq!(g.rules[0].health, Health::Ok);
    }
}
