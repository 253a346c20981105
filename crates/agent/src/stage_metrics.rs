//! The `metrics` stage: counters, gauges and histograms computed from log
//! entries, exposed on the agent's `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use lucia_common::duration::ConfigDuration;
use lucia_common::metrics::Metrics;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;

use crate::stages::{Entry, StageError};

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub max_idle_duration: Option<ConfigDuration>,
    #[serde(default)]
    pub config: MetricActionConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricActionConfig {
    pub value: Option<String>,
    pub match_all: Option<bool>,
    pub count_entry_bytes: Option<bool>,
    pub action: Option<String>,
    pub buckets: Option<Vec<f64>>,
}

#[derive(Clone)]
struct Buckets(Arc<Vec<f64>>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

#[derive(Clone)]
enum FamilyKind {
    Counter(Family<Labels, Counter<f64, AtomicU64>>),
    Gauge(Family<Labels, Gauge<f64, AtomicU64>>),
    Histogram(Family<Labels, Histogram, Buckets>),
}

/// The families of every `metrics` stage of the process, registered once
/// and shared by the pipelines of every tailed file.
#[derive(Clone)]
pub struct CustomMetrics {
    registry: Metrics,
    families: Arc<Mutex<HashMap<String, FamilyKind>>>,
}

impl CustomMetrics {
    pub fn new(registry: Metrics) -> Self {
        Self {
            registry,
            families: Arc::default(),
        }
    }

    /// A registry nobody reads (for validating a configuration).
    pub fn detached() -> Self {
        Self::new(Metrics::new())
    }
}

#[derive(Clone, Copy)]
enum Action {
    Inc,
    Add,
    Set,
    Dec,
    Sub,
}

pub struct MetricStage {
    metrics: Vec<OneMetric>,
}

struct OneMetric {
    family: FamilyKind,
    source: String,
    value: Option<String>,
    match_all: bool,
    count_bytes: bool,
    action: Action,
}

fn invalid(message: String) -> StageError {
    StageError::Invalid {
        stage: "metrics",
        message,
    }
}

impl MetricStage {
    pub fn new(
        configs: &BTreeMap<String, MetricConfig>,
        custom: &CustomMetrics,
    ) -> Result<Self, StageError> {
        let mut metrics = Vec::new();
        for (name, c) in configs {
            let prefix = c.prefix.as_deref().unwrap_or("promtail_custom_");
            let full = format!("{prefix}{name}");
            if !lucia_common::labels::is_valid_metric_name(&full) {
                return Err(invalid(format!("invalid metric name {full:?}")));
            }
            let help = c.description.clone().unwrap_or_else(|| full.clone());
            let kind = c.kind.to_ascii_lowercase();
            let action = match (kind.as_str(), c.config.action.as_deref()) {
                ("counter", None | Some("inc")) => Action::Inc,
                ("counter", Some("add")) => Action::Add,
                ("gauge", Some("set")) => Action::Set,
                ("gauge", Some("inc")) => Action::Inc,
                ("gauge", Some("dec")) => Action::Dec,
                ("gauge", Some("add")) => Action::Add,
                ("gauge", Some("sub")) => Action::Sub,
                ("histogram", None) => Action::Add,
                ("counter" | "gauge" | "histogram", action) => {
                    return Err(invalid(format!(
                        "metric {name}: action {action:?} is not valid for a {kind}"
                    )));
                }
                _ => {
                    return Err(invalid(format!(
                        "metric {name}: type must be Counter, Gauge or Histogram, not {:?}",
                        c.kind
                    )));
                }
            };
            let match_all = c.config.match_all.unwrap_or(false);
            if match_all && c.config.value.is_some() {
                return Err(invalid(format!(
                    "metric {name}: match_all and value cannot both be set"
                )));
            }
            let family = {
                let mut families = custom.families.lock();
                match families.get(&full) {
                    Some(f) => f.clone(),
                    None => {
                        let f = match kind.as_str() {
                            "counter" => {
                                let f = Family::default();
                                let base = full.strip_suffix("_total").unwrap_or(&full);
                                custom.registry.register(base, &help, f.clone());
                                FamilyKind::Counter(f)
                            }
                            "gauge" => {
                                let f = Family::default();
                                custom.registry.register(&full, &help, f.clone());
                                FamilyKind::Gauge(f)
                            }
                            _ => {
                                let buckets = c.config.buckets.clone().unwrap_or_else(|| {
                                    vec![
                                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                        10.0,
                                    ]
                                });
                                let f = Family::new_with_constructor(Buckets(Arc::new(buckets)));
                                custom.registry.register(&full, &help, f.clone());
                                FamilyKind::Histogram(f)
                            }
                        };
                        families.insert(full.clone(), f.clone());
                        f
                    }
                }
            };
            metrics.push(OneMetric {
                family,
                source: c.source.clone().unwrap_or_else(|| name.clone()),
                value: c.config.value.clone(),
                match_all,
                count_bytes: c.config.count_entry_bytes.unwrap_or(false),
                action,
            });
        }
        Ok(Self { metrics })
    }

    pub fn observe(&self, entry: &Entry) {
        let labels: Labels = entry
            .labels
            .iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for m in &self.metrics {
            let extracted = entry.extracted.get(&m.source);
            match &m.family {
                FamilyKind::Counter(f) => {
                    let amount = if m.match_all {
                        if m.count_bytes {
                            entry.line.len() as f64
                        } else {
                            1.0
                        }
                    } else {
                        let Some(v) = extracted else { continue };
                        if m.value.as_ref().is_some_and(|want| want != v) {
                            continue;
                        }
                        match m.action {
                            Action::Add => match v.trim().parse::<f64>() {
                                Ok(x) if x >= 0.0 => x,
                                _ => continue,
                            },
                            _ => 1.0,
                        }
                    };
                    f.get_or_create(&labels).inc_by(amount);
                }
                FamilyKind::Gauge(f) => {
                    let Some(v) = extracted else { continue };
                    if m.value.as_ref().is_some_and(|want| want != v) {
                        continue;
                    }
                    let parsed = v.trim().parse::<f64>();
                    let g = f.get_or_create(&labels);
                    match (m.action, parsed) {
                        (Action::Inc, _) => {
                            g.inc_by(1.0);
                        }
                        (Action::Dec, _) => {
                            g.dec_by(1.0);
                        }
                        (Action::Set, Ok(x)) => {
                            g.set(x);
                        }
                        (Action::Add, Ok(x)) => {
                            g.inc_by(x);
                        }
                        (Action::Sub, Ok(x)) => {
                            g.dec_by(x);
                        }
                        _ => {}
                    }
                }
                FamilyKind::Histogram(f) => {
                    let Some(Ok(x)) = extracted.map(|v| v.trim().parse::<f64>()) else {
                        continue;
                    };
                    f.get_or_create(&labels).observe(x);
                }
            }
        }
    }
}
