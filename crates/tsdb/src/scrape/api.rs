//! `GET /api/v1/targets`, `/api/v1/scrape_pools` and
//! `/api/v1/targets/metadata` in Prometheus' JSON envelope.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::pool::PoolView;
use super::target::LabelMap;
use lucia_common::duration::format_prometheus_duration;

/// One active target, as `activeTargets` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveTarget {
    pub discovered_labels: LabelMap,
    pub labels: LabelMap,
    pub scrape_pool: String,
    pub scrape_url: String,
    pub global_url: String,
    pub last_error: String,
    /// RFC 3339 with nanoseconds; Go's zero time before the first scrape.
    pub last_scrape: String,
    /// Seconds.
    pub last_scrape_duration: f64,
    /// `up`, `down` or `unknown`.
    pub health: String,
    pub scrape_interval: String,
    pub scrape_timeout: String,
}

/// One target dropped by relabeling.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DroppedTarget {
    pub discovered_labels: LabelMap,
    pub scrape_pool: String,
}

/// Every target of every pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetsSnapshot {
    pub active: Vec<ActiveTarget>,
    pub dropped: Vec<DroppedTarget>,
    /// Dropped targets per pool (also those beyond keep_dropped_targets).
    pub dropped_counts: BTreeMap<String, usize>,
}

impl TargetsSnapshot {
    /// The active target with this scrape URL, if any.
    pub fn by_url(&self, url: &str) -> Option<&ActiveTarget> {
        self.active.iter().find(|t| t.scrape_url == url)
    }
}

/// The pools' views, shared by the manager and the HTTP handlers.
#[derive(Clone, Default)]
pub struct TargetsRegistry {
    pools: Arc<RwLock<BTreeMap<String, Arc<Mutex<PoolView>>>>>,
}

const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl TargetsRegistry {
    pub(crate) fn insert(&self, job: String, view: Arc<Mutex<PoolView>>) {
        self.pools.write().insert(job, view);
    }

    pub(crate) fn remove(&self, job: &str) {
        self.pools.write().remove(job);
    }

    /// Names of the scrape pools, sorted.
    pub fn pool_names(&self) -> Vec<String> {
        self.pools.read().keys().cloned().collect()
    }

    pub fn snapshot(&self) -> TargetsSnapshot {
        let mut out = TargetsSnapshot::default();
        for (job, view) in self.pools.read().iter() {
            let view = view.lock();
            for status in &view.active {
                let health = status.health.lock().clone();
                let spec = &status.spec;
                out.active.push(ActiveTarget {
                    discovered_labels: status.discovered.lock().clone(),
                    labels: spec.public.clone(),
                    scrape_pool: job.clone(),
                    scrape_url: spec.url.clone(),
                    global_url: spec.url.clone(),
                    last_error: health.last_error.clone(),
                    last_scrape: health
                        .last_scrape
                        .map(rfc3339)
                        .unwrap_or_else(|| GO_ZERO_TIME.to_string()),
                    last_scrape_duration: health.last_duration.as_secs_f64(),
                    health: health.state.as_str().to_string(),
                    scrape_interval: format_prometheus_duration(spec.interval),
                    scrape_timeout: format_prometheus_duration(spec.timeout),
                });
            }
            for labels in &view.dropped {
                out.dropped.push(DroppedTarget {
                    discovered_labels: labels.clone(),
                    scrape_pool: job.clone(),
                });
            }
            out.dropped_counts.insert(job.clone(), view.dropped_count);
        }
        out
    }
}

#[derive(Debug, Default, Deserialize)]
struct TargetsQuery {
    #[serde(default)]
    state: String,
    #[serde(default, rename = "scrapePool")]
    scrape_pool: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TargetDiscovery {
    active_targets: Vec<ActiveTarget>,
    dropped_targets: Vec<DroppedTarget>,
    dropped_target_counts: Option<BTreeMap<String, usize>>,
}

/// The `data` of `GET /api/v1/targets`, filtered as Prometheus does.
fn targets_data(registry: &TargetsRegistry, state: &str, pool: &str) -> serde_json::Value {
    let state = state.to_lowercase();
    let show_active = matches!(state.as_str(), "" | "any" | "active");
    let show_dropped = matches!(state.as_str(), "" | "any" | "dropped");
    let snapshot = registry.snapshot();
    let in_pool = |p: &str| pool.is_empty() || p == pool;
    let body = TargetDiscovery {
        active_targets: if show_active {
            snapshot
                .active
                .into_iter()
                .filter(|t| in_pool(&t.scrape_pool))
                .collect()
        } else {
            Vec::new()
        },
        dropped_targets: if show_dropped {
            snapshot
                .dropped
                .into_iter()
                .filter(|t| in_pool(&t.scrape_pool))
                .collect()
        } else {
            Vec::new()
        },
        dropped_target_counts: show_dropped.then_some(snapshot.dropped_counts),
    };
    serde_json::to_value(body).unwrap_or_default()
}

fn success(data: serde_json::Value) -> axum::response::Response {
    Json(serde_json::json!({"status": "success", "data": data})).into_response()
}

async fn targets(
    State(registry): State<TargetsRegistry>,
    Query(query): Query<TargetsQuery>,
) -> axum::response::Response {
    success(targets_data(&registry, &query.state, &query.scrape_pool))
}

async fn scrape_pools(State(registry): State<TargetsRegistry>) -> axum::response::Response {
    success(serde_json::json!({"scrapePools": registry.pool_names()}))
}

async fn targets_metadata() -> axum::response::Response {
    success(serde_json::json!([]))
}

/// `GET /api/v1/targets`, `/api/v1/scrape_pools`, `/api/v1/targets/metadata`.
pub fn router(registry: TargetsRegistry) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/scrape_pools", get(scrape_pools))
        .route("/api/v1/targets/metadata", get(targets_metadata))
        .with_state(registry)
}
