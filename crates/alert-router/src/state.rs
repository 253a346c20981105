//! The router's state: per tenant the alerts, silences, notification log
//! and dispatcher (aggregation groups with their timers), and the
//! notification pipeline (inhibition, time intervals, silences,
//! deduplication, retries).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lucia_common::Shutdown;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::amconfig::{AmConfig, Route, RouteOpts};
use crate::cluster::{Cluster, Replicated, TenantState};
use crate::metrics::{RouterMetrics, StateLabel, StatusLabel};
use crate::model::{Alert, LabelSet, Time, alert_order, fingerprint, labelset_string};
use crate::nflog::{NotificationLog, needs_update};
use crate::notify::{Backoff, Integration, NotifyEnv};
use crate::silences::{SilenceState, Silences};

/// Process-wide state shared by every tenant.
pub struct Shared {
    pub config: RwLock<Arc<AmConfig>>,
    pub external_url: String,
    pub storage_path: PathBuf,
    pub multi_tenant: bool,
    pub data_retention: Duration,
    pub metrics: RouterMetrics,
    pub client: reqwest::Client,
    pub tenants: Mutex<HashMap<String, Arc<Tenant>>>,
    pub shutdown: Shutdown,
    pub started: Time,
    /// This member of the cluster, when clustering is on.
    pub cluster: Option<Arc<Cluster>>,
}

impl Shared {
    pub fn config(&self) -> Arc<AmConfig> {
        self.config.read().clone()
    }

    /// The tenant's state, created (and its snapshots loaded) on first use.
    pub fn tenant(&self, name: &str) -> std::io::Result<Arc<Tenant>> {
        let mut tenants = self.tenants.lock();
        if let Some(t) = tenants.get(name) {
            return Ok(t.clone());
        }
        let dir = if self.multi_tenant {
            self.storage_path.join("tenants").join(name)
        } else {
            self.storage_path.clone()
        };
        let tenant = Arc::new(Tenant {
            name: name.to_string(),
            alerts: Mutex::new(HashMap::new()),
            silences: Silences::open(Some(dir.join("silences.json")), self.data_retention)?,
            nflog: NotificationLog::open(Some(dir.join("nflog.json")))?,
            dispatcher: Mutex::new(Dispatcher::new(self.config(), self.shutdown.child_token())),
        });
        if let Some(cluster) = &self.cluster {
            let (c, tenant_name) = (cluster.clone(), name.to_string());
            tenant.silences.set_broadcast(Arc::new(
                move |silences: Vec<crate::silences::Stored>| {
                    c.broadcast(TenantState {
                        tenant: tenant_name.clone(),
                        silences,
                        nflog: Vec::new(),
                    });
                },
            ));
            let (c, tenant_name) = (cluster.clone(), name.to_string());
            tenant
                .nflog
                .set_broadcast(Arc::new(move |entry: crate::nflog::Stored| {
                    c.broadcast(TenantState {
                        tenant: tenant_name.clone(),
                        silences: Vec::new(),
                        nflog: vec![entry],
                    });
                }));
        }
        tenants.insert(name.to_string(), tenant.clone());
        Ok(tenant)
    }

    /// Loads every tenant that has a snapshot on disk (so that silences
    /// show up before the tenant's first request).
    pub fn load_tenants(self: &Arc<Self>) -> std::io::Result<()> {
        if self.multi_tenant {
            let dir = self.storage_path.join("tenants");
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if let Some(name) = e.file_name().to_str()
                        && lucia_common::tenant::validate_tenant(name).is_ok()
                    {
                        self.tenant(name)?;
                    }
                }
            }
            Ok(())
        } else {
            self.tenant(lucia_common::tenant::DEFAULT_TENANT)
                .map(|_| ())
        }
    }

    pub fn all_tenants(&self) -> Vec<Arc<Tenant>> {
        self.tenants.lock().values().cloned().collect()
    }

    /// Swaps in a new configuration: every dispatcher restarts with the
    /// new routes and is fed the current alerts again (the notification
    /// log keeps it from notifying twice).
    pub fn apply_config(self: &Arc<Self>, config: Arc<AmConfig>) {
        *self.config.write() = config.clone();
        for tenant in self.all_tenants() {
            {
                let mut d = tenant.dispatcher.lock();
                d.cancel.cancel();
                *d = Dispatcher::new(config.clone(), self.shutdown.child_token());
            }
            let alerts: Vec<Arc<Alert>> = tenant.alerts.lock().values().cloned().collect();
            for a in alerts {
                tenant.dispatch(self, a);
            }
        }
    }

    /// Periodic work: garbage collection, snapshots, gauges.
    pub fn maintenance(&self) {
        let now = Utc::now();
        let (mut active, mut suppressed) = (0i64, 0i64);
        let mut silence_counts: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut groups = 0i64;
        let config = self.config();
        for t in self.all_tenants() {
            // Resolved alerts stay a while for the API and inhibition, as
            // in Alertmanager's GC.
            let cutoff = now - chrono::Duration::minutes(5);
            t.alerts.lock().retain(|_, a| !a.resolved_at(cutoff));
            t.silences.gc(now);
            t.nflog.gc(now);
            if let Err(err) = t.nflog.snapshot() {
                tracing::error!(%err, tenant = %t.name, "cannot write the notification log");
            }
            let alerts: Vec<Arc<Alert>> = t.alerts.lock().values().cloned().collect();
            for a in alerts.iter().filter(|a| !a.resolved_at(now)) {
                if t.silences.mutes(&a.labels, now).is_empty()
                    && t.inhibited_by(&a.labels, &config).is_empty()
                {
                    active += 1;
                } else {
                    suppressed += 1;
                }
            }
            for (state, n) in t.silences.counts(now) {
                *silence_counts.entry(state.as_str()).or_default() += n;
            }
            groups += t.dispatcher.lock().groups.len() as i64;
        }
        let gauge = |s: &str| {
            self.metrics.alerts.get_or_create(&StateLabel {
                state: s.to_string(),
            })
        };
        gauge("active").set(active);
        gauge("suppressed").set(suppressed);
        gauge("unprocessed").set(0);
        for state in [
            SilenceState::Active,
            SilenceState::Pending,
            SilenceState::Expired,
        ] {
            self.metrics
                .silences
                .get_or_create(&StateLabel {
                    state: state.as_str().to_string(),
                })
                .set(silence_counts.get(state.as_str()).copied().unwrap_or(0));
        }
        self.metrics.aggregation_groups.set(groups);
    }

    /// Writes every snapshot (on shutdown).
    pub fn snapshot_all(&self) {
        for t in self.all_tenants() {
            if let Err(err) = t.silences.snapshot() {
                tracing::error!(%err, tenant = %t.name, "cannot write the silence snapshot");
            }
            if let Err(err) = t.nflog.snapshot() {
                tracing::error!(%err, tenant = %t.name, "cannot write the notification log");
            }
        }
    }
}

/// The cluster replicates every tenant's silences and notification log.
impl Replicated for Shared {
    fn full_state(&self) -> Vec<TenantState> {
        self.all_tenants()
            .iter()
            .map(|t| TenantState {
                tenant: t.name.clone(),
                silences: t.silences.export(),
                nflog: t.nflog.export(),
            })
            .collect()
    }

    fn merge(&self, states: Vec<TenantState>) {
        let now = Utc::now();
        for state in states {
            // A peer must be tenanted as this member is: a single-tenant
            // member takes only the default tenant's state.
            let acceptable = if self.multi_tenant {
                lucia_common::tenant::validate_tenant(&state.tenant).is_ok()
            } else {
                state.tenant == lucia_common::tenant::DEFAULT_TENANT
            };
            if !acceptable {
                tracing::warn!(tenant = %state.tenant, multi_tenant = self.multi_tenant,
                    "ignoring a peer's state of a tenant this member does not have: give every member the same --auth.enabled");
                continue;
            }
            let tenant = match self.tenant(&state.tenant) {
                Ok(t) => t,
                Err(err) => {
                    tracing::error!(%err, tenant = %state.tenant, "cannot open the tenant's state for a peer's changes");
                    continue;
                }
            };
            let silences = tenant.silences.merge(state.silences, now);
            let entries = tenant.nflog.merge(state.nflog, now);
            if silences + entries > 0 {
                tracing::debug!(tenant = %state.tenant, silences, entries, "merged a peer's state");
            }
        }
    }
}

/// One tenant's state.
pub struct Tenant {
    pub name: String,
    /// The alerts by fingerprint. The aggregation groups hold the same
    /// `Arc`s, so an alert's labels and annotations are in memory once.
    pub alerts: Mutex<HashMap<u64, Arc<Alert>>>,
    pub silences: Silences,
    pub nflog: NotificationLog,
    pub dispatcher: Mutex<Dispatcher>,
}

impl Tenant {
    /// Stores alerts (merging with the ones it has) and hands them to the
    /// dispatcher.
    pub fn put(&self, shared: &Arc<Shared>, alerts: Vec<Alert>) {
        for alert in alerts {
            let fp = alert.fingerprint();
            let merged = {
                let mut store = self.alerts.lock();
                let merged = match store.get(&fp) {
                    Some(old)
                        if (alert.ends_at > old.starts_at && alert.ends_at < old.ends_at)
                            || (alert.starts_at > old.starts_at
                                && alert.starts_at < old.ends_at) =>
                    {
                        Arc::new(old.merge(&alert))
                    }
                    _ => Arc::new(alert),
                };
                store.insert(fp, merged.clone());
                merged
            };
            let status = if merged.resolved() {
                "resolved"
            } else {
                "firing"
            };
            shared
                .metrics
                .alerts_received
                .get_or_create(&StatusLabel {
                    status: status.to_string(),
                })
                .inc();
            self.dispatch(shared, merged);
        }
    }

    fn dispatch(&self, shared: &Arc<Shared>, alert: Arc<Alert>) {
        let mut d = self.dispatcher.lock();
        let config = d.config.clone();
        for route in config.route.matching(&alert.labels) {
            let group_labels = route.group_labels(&alert.labels);
            let key = (route.id, fingerprint(&group_labels));
            let group = match d.groups.get(&key) {
                Some(g) => g.clone(),
                None => {
                    let g = Arc::new(AggrGroup::new(route, group_labels));
                    d.groups.insert(key, g.clone());
                    // The group's task needs the tenant; look it up by name.
                    if let Some(tenant) = shared.tenants.lock().get(&self.name).cloned() {
                        tokio::spawn(run_group(
                            g.clone(),
                            key,
                            tenant,
                            shared.clone(),
                            config.clone(),
                            d.cancel.clone(),
                        ));
                    }
                    g
                }
            };
            group.insert(alert.clone());
        }
    }

    /// The fingerprints of the firing alerts that inhibit `labels`.
    pub fn inhibited_by(&self, labels: &LabelSet, config: &AmConfig) -> Vec<String> {
        let now = Utc::now();
        let target_fp = fingerprint(labels);
        let mut out = Vec::new();
        let rules: Vec<_> = config
            .inhibit_rules
            .iter()
            .filter(|r| r.target.matches(labels))
            .collect();
        if rules.is_empty() {
            return out;
        }
        let alerts = self.alerts.lock();
        for rule in rules {
            let two_sided = rule.source.matches(labels);
            for (fp, source) in alerts.iter() {
                if *fp == target_fp || source.resolved_at(now) {
                    continue;
                }
                if !rule.source.matches(&source.labels) {
                    continue;
                }
                if two_sided && rule.target.matches(&source.labels) {
                    continue;
                }
                if rule
                    .equal
                    .iter()
                    .all(|l| source.labels.get(l) == labels.get(l))
                {
                    out.push(crate::model::fingerprint_string(*fp));
                    break;
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The aggregation groups, for `/api/v2/alerts/groups`.
    pub fn groups(&self) -> Vec<Arc<AggrGroup>> {
        self.dispatcher.lock().groups.values().cloned().collect()
    }
}

/// The aggregation groups of one tenant under one configuration.
pub struct Dispatcher {
    pub config: Arc<AmConfig>,
    pub groups: HashMap<(usize, u64), Arc<AggrGroup>>,
    pub cancel: Shutdown,
}

impl Dispatcher {
    fn new(config: Arc<AmConfig>, cancel: Shutdown) -> Self {
        Self {
            config,
            groups: HashMap::new(),
            cancel,
        }
    }
}

/// Alerts that share a route and group labels, notified together.
pub struct AggrGroup {
    pub key: String,
    pub labels: LabelSet,
    pub opts: RouteOpts,
    state: Mutex<GroupState>,
    wake: Notify,
}

struct GroupState {
    alerts: BTreeMap<u64, Arc<Alert>>,
    next: Instant,
    has_flushed: bool,
}

impl AggrGroup {
    fn new(route: &Route, labels: LabelSet) -> Self {
        Self {
            key: format!("{}:{}", route.key, labelset_string(&labels)),
            labels,
            opts: route.opts.clone(),
            state: Mutex::new(GroupState {
                alerts: BTreeMap::new(),
                next: Instant::now() + route.opts.group_wait,
                has_flushed: false,
            }),
            wake: Notify::new(),
        }
    }

    fn insert(&self, alert: Arc<Alert>) {
        let mut st = self.state.lock();
        let wait =
            chrono::Duration::from_std(self.opts.group_wait).unwrap_or(chrono::Duration::MAX);
        if !st.has_flushed && alert.starts_at + wait < Utc::now() {
            st.next = Instant::now();
            self.wake.notify_one();
        }
        st.alerts.insert(alert.fingerprint(), alert);
    }

    pub fn alerts(&self) -> Vec<Alert> {
        self.state
            .lock()
            .alerts
            .values()
            .map(|a| Alert::clone(a))
            .collect()
    }
}

async fn run_group(
    group: Arc<AggrGroup>,
    key: (usize, u64),
    tenant: Arc<Tenant>,
    shared: Arc<Shared>,
    config: Arc<AmConfig>,
    cancel: Shutdown,
) {
    loop {
        let next = group.state.lock().next;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = group.wake.notified() => continue,
            _ = tokio::time::sleep_until(next) => {}
        }
        let alerts = {
            let mut st = group.state.lock();
            if Instant::now() < st.next {
                continue;
            }
            st.next = Instant::now() + group.opts.group_interval;
            st.has_flushed = true;
            st.alerts
                .values()
                .map(|a| Alert::clone(a))
                .collect::<Vec<_>>()
        };
        if !alerts.is_empty() {
            let now = Utc::now();
            let mut alerts = alerts;
            alerts.sort_by(|a, b| alert_order(&a.labels, &b.labels));
            let notified = tokio::select! {
                _ = cancel.cancelled() => return,
                ok = notify_group(&group, &tenant, &shared, &config, &alerts, now) => ok,
            };
            if notified {
                // Drop the resolved alerts just notified, unless they were
                // updated meanwhile.
                let mut st = group.state.lock();
                for a in alerts.iter().filter(|a| a.resolved_at(now)) {
                    let fp = a.fingerprint();
                    if st.alerts.get(&fp).is_some_and(|cur| {
                        cur.updated_at == a.updated_at && cur.ends_at == a.ends_at
                    }) {
                        st.alerts.remove(&fp);
                    }
                }
            }
        }
        // An empty group ends; the dispatcher makes a new one if needed.
        let mut d = tenant.dispatcher.lock();
        if group.state.lock().alerts.is_empty() {
            if d.groups.get(&key).is_some_and(|g| Arc::ptr_eq(g, &group)) {
                d.groups.remove(&key);
            }
            return;
        }
    }
}

/// The shortest time a flush's notifications may take, retries included
/// (Alertmanager's `notify.MinTimeout`).
const MIN_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the pipeline for one flush; true when every integration succeeded.
async fn notify_group(
    group: &AggrGroup,
    tenant: &Tenant,
    shared: &Shared,
    config: &AmConfig,
    alerts: &[Alert],
    now: Time,
) -> bool {
    if let Some(cluster) = &shared.cluster {
        // As Alertmanager's gossip-settle stage: a starting member first
        // learns the peers' silences and log.
        cluster.wait_settled().await;
    }
    let mut alerts: Vec<Alert> = alerts
        .iter()
        .filter(|a| tenant.inhibited_by(&a.labels, config).is_empty())
        .cloned()
        .collect();
    if alerts.is_empty() {
        return true;
    }
    if !group.opts.active_time_intervals.is_empty()
        && !config.in_time_intervals(now, &group.opts.active_time_intervals)
    {
        tracing::debug!(group = %group.key, "not notifying: outside the active time intervals");
        return true;
    }
    if config.in_time_intervals(now, &group.opts.mute_time_intervals) {
        tracing::debug!(group = %group.key, "not notifying: inside a mute time interval");
        return true;
    }
    alerts.retain(|a| tenant.silences.mutes(&a.labels, now).is_empty());
    if alerts.is_empty() {
        return true;
    }
    if let Some(cluster) = &shared.cluster {
        // Alertmanager's cluster wait: the member at position n waits n
        // peer timeouts, so that the log entry of whoever notified first
        // reaches it and the dedup check below skips the group.
        let delay = cluster.notify_delay();
        if !delay.is_zero() {
            tracing::debug!(group = %group.key, ?delay, "waiting for the peers before notifying");
            tokio::time::sleep(delay).await;
        }
    }
    let Some(receiver) = config.receivers.get(&group.opts.receiver) else {
        tracing::error!(receiver = %group.opts.receiver, "receiver missing from the config");
        return false;
    };
    let integrations = Integration::of(receiver);
    let env = NotifyEnv {
        client: &shared.client,
        receiver: &receiver.name,
        group_key: &group.key,
        group_labels: &group.labels,
        external_url: &shared.external_url,
        templates: &config.templates,
        now,
    };
    let results = futures::future::join_all(integrations.iter().map(|(integration, idx)| {
        run_integration(integration, *idx, &env, group, tenant, shared, &alerts)
    }))
    .await;
    results.into_iter().all(|ok| ok)
}

async fn run_integration(
    integration: &Integration,
    idx: usize,
    env: &NotifyEnv<'_>,
    group: &AggrGroup,
    tenant: &Tenant,
    shared: &Shared,
    alerts: &[Alert],
) -> bool {
    let now = env.now;
    let firing: BTreeSet<u64> = alerts
        .iter()
        .filter(|a| !a.resolved_at(now))
        .map(Alert::fingerprint)
        .collect();
    let resolved: BTreeSet<u64> = alerts
        .iter()
        .filter(|a| a.resolved_at(now))
        .map(Alert::fingerprint)
        .collect();
    let log_key = format!("{}/{}/{}", env.receiver, integration.name(), idx);
    let entry = tenant.nflog.query(&group.key, &log_key);
    let send_resolved = integration.send_resolved();
    if !needs_update(
        entry.as_ref(),
        &firing,
        &resolved,
        send_resolved,
        group.opts.repeat_interval,
        now,
    ) {
        return true;
    }
    let label = RouterMetrics::integration(integration.name());
    let to_send: Vec<Alert> = if send_resolved {
        alerts.to_vec()
    } else {
        alerts
            .iter()
            .filter(|a| !a.resolved_at(now))
            .cloned()
            .collect()
    };
    if !to_send.is_empty() {
        shared.metrics.notifications.get_or_create(&label).inc();
        let attempt_all = async {
            let mut backoff = Backoff::default();
            let mut attempts = 0;
            loop {
                tokio::time::sleep(backoff.next_delay()).await;
                attempts += 1;
                shared
                    .metrics
                    .notification_requests
                    .get_or_create(&label)
                    .inc();
                match integration.notify(env, &to_send).await {
                    Ok(()) => {
                        tracing::debug!(group = %group.key, integration = %log_key, attempts, "notified");
                        return Ok(());
                    }
                    Err(err) => {
                        shared
                            .metrics
                            .notification_requests_failed
                            .get_or_create(&label)
                            .inc();
                        if !err.retry {
                            return Err(format!(
                                "{}: not retrying after {attempts} attempts: {}",
                                log_key, err.message
                            ));
                        }
                        tracing::warn!(group = %group.key, integration = %log_key, attempts,
                            err = %err.message, "notify attempt failed, will retry");
                    }
                }
            }
        };
        // Retries stop when the group interval runs out, but not before
        // Alertmanager's `MinTimeout` of 10 s, so that short intervals
        // still retry as long as Alertmanager does.
        let timeout = group.opts.group_interval.max(MIN_NOTIFY_TIMEOUT);
        let result = match tokio::time::timeout(timeout, attempt_all).await {
            Ok(r) => r,
            Err(_) => Err(format!("{log_key}: retries canceled at the group interval")),
        };
        if let Err(err) = result {
            shared
                .metrics
                .notifications_failed
                .get_or_create(&label)
                .inc();
            tracing::error!(group = %group.key, %err, "notify failed");
            return false;
        }
    }
    // Logged at the time the notification went out (after any retries),
    // as Alertmanager's SetNotifiesStage does: the repeat interval counts
    // from then.
    tenant.nflog.log(
        &group.key,
        &log_key,
        firing,
        resolved,
        Utc::now(),
        group.opts.repeat_interval * 2,
    );
    true
}
