//! The hash ring of ingesters.
//!
//! Each instance owns `num_tokens` random 32-bit tokens. A stream's replicas
//! are the first `replication_factor` distinct healthy ACTIVE instances met
//! walking clockwise from the stream's token (a hash of tenant and sorted
//! labels). Membership comes from Consul (see [`crate::consul`]) or, for
//! `lucia all` and tests, from a process-global in-memory registry.
//!
//! In Consul, each instance keeps its [`InstanceDesc`] as JSON at
//! `<kvstore.prefix><ring>/<id>`, and the process is registered as service
//! `lucia-<ring>` with a `/ready` check (see [`crate::server`]). Watchers
//! join the two by address: a failing check makes an instance UNHEALTHY, and
//! an instance whose service is gone (deregistered or reaped) leaves the ring.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::consul::{ConsulClient, ConsulConfig, ServiceEntry, next_index};
use crate::duration::ConfigDuration;
use crate::labels::Labels;

/// The `ring` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    pub kvstore: KvStoreConfig,
    /// How many ingesters receive each stream.
    pub replication_factor: usize,
    /// Tokens each ingester owns.
    pub num_tokens: usize,
    /// An instance whose heartbeat is older than this is unhealthy.
    pub heartbeat_timeout: ConfigDuration,
    /// How often an instance refreshes its heartbeat.
    pub heartbeat_period: ConfigDuration,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            kvstore: KvStoreConfig::default(),
            replication_factor: 1,
            num_tokens: 128,
            heartbeat_timeout: ConfigDuration::from_secs(60),
            heartbeat_period: ConfigDuration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvStoreConfig {
    pub store: KvStore,
    /// Key prefix of the ring in Consul's KV store.
    pub prefix: String,
}

impl Default for KvStoreConfig {
    fn default() -> Self {
        Self {
            store: KvStore::Inmemory,
            prefix: "lucia/ring/".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvStore {
    Inmemory,
    Consul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InstanceState {
    Joining,
    Active,
    Leaving,
    Unhealthy,
}

/// One member of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDesc {
    pub id: String,
    /// host:port of the instance's HTTP/gRPC listener.
    pub addr: String,
    pub tokens: Vec<u32>,
    pub state: InstanceState,
    /// Unix seconds of the last heartbeat.
    #[serde(default)]
    pub heartbeat: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("ring kvstore is consul but no consul address is configured: set consul.address")]
    NoConsul,
    #[error("consul: {0}")]
    Consul(#[from] crate::consul::ConsulError),
    #[error("tokens file {path}: {reason}")]
    TokensFile { path: String, reason: String },
    #[error("ring entry {key} in consul: {reason}")]
    Entry { key: String, reason: String },
}

/// An immutable view of the ring.
#[derive(Debug, Default)]
pub struct RingSnapshot {
    instances: Vec<InstanceDesc>,
    /// (token, index into `instances`), sorted by token.
    tokens: Vec<(u32, usize)>,
}

impl RingSnapshot {
    pub fn new(mut instances: Vec<InstanceDesc>) -> Self {
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        let mut tokens: Vec<(u32, usize)> = instances
            .iter()
            .enumerate()
            .flat_map(|(i, inst)| inst.tokens.iter().map(move |t| (*t, i)))
            .collect();
        tokens.sort_unstable();
        Self { instances, tokens }
    }

    pub fn instances(&self) -> &[InstanceDesc] {
        &self.instances
    }

    pub fn instance(&self, id: &str) -> Option<&InstanceDesc> {
        self.instances.iter().find(|i| i.id == id)
    }

    /// The write replicas of `token`: up to `replication_factor` distinct
    /// ACTIVE instances clockwise from `token`.
    pub fn replicas(&self, token: u32, replication_factor: usize) -> Vec<&InstanceDesc> {
        let mut out: Vec<&InstanceDesc> = Vec::with_capacity(replication_factor);
        if self.tokens.is_empty() || replication_factor == 0 {
            return out;
        }
        let start = self.tokens.partition_point(|(t, _)| *t < token);
        let mut seen = HashSet::with_capacity(replication_factor);
        for step in 0..self.tokens.len() {
            let (_, index) = self.tokens[(start + step) % self.tokens.len()];
            if !seen.insert(index) {
                continue;
            }
            let instance = &self.instances[index];
            if instance.state == InstanceState::Active {
                out.push(instance);
                if out.len() == replication_factor {
                    break;
                }
            }
        }
        out
    }
}

/// The ring's token of a stream: a stable hash of tenant and sorted labels.
pub fn stream_token(tenant: &str, labels: &Labels) -> u32 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(tenant.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(&labels.stable_hash().to_le_bytes());
    hasher.digest() as u32
}

/// How many successful writes a replicated push needs: `floor(RF/2) + 1`.
pub fn write_quorum(replication_factor: usize) -> usize {
    replication_factor / 2 + 1
}

/// `count` random tokens none of which is in `taken`.
pub fn generate_tokens(count: usize, taken: &HashSet<u32>) -> Vec<u32> {
    let mut tokens = HashSet::with_capacity(count);
    while tokens.len() < count {
        let token: u32 = rand::random();
        if !taken.contains(&token) {
            tokens.insert(token);
        }
    }
    let mut tokens: Vec<u32> = tokens.into_iter().collect();
    tokens.sort_unstable();
    tokens
}

/// Loads the tokens kept in `path`, or generates `count` and saves them, so
/// that an instance keeps its place in the ring across restarts.
pub fn load_or_create_tokens(path: &Path, count: usize) -> Result<Vec<u32>, RingError> {
    let fail = |reason: String| RingError::TokensFile {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let tokens: Vec<u32> = serde_json::from_slice(&bytes)
                .map_err(|err| fail(format!("invalid (delete it to regenerate): {err}")))?;
            if !tokens.is_empty() {
                return Ok(tokens);
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(fail(err.to_string())),
    }
    let tokens = generate_tokens(count, &HashSet::new());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|err| fail(err.to_string()))?;
    }
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec(&tokens).map_err(|err| fail(err.to_string()))?;
    std::fs::write(&tmp, json).map_err(|err| fail(err.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|err| fail(err.to_string()))?;
    Ok(tokens)
}

/// A live view of the ring's membership.
#[derive(Clone)]
pub struct Ring {
    rx: watch::Receiver<Arc<RingSnapshot>>,
}

impl Ring {
    pub fn from_receiver(rx: watch::Receiver<Arc<RingSnapshot>>) -> Self {
        Self { rx }
    }

    pub fn snapshot(&self) -> Arc<RingSnapshot> {
        self.rx.borrow().clone()
    }

    /// Waits until the membership changes; `false` once no source is left.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// A ring whose members live in this process (Loki's `inmemory` kvstore).
pub struct InProcessRing {
    instances: Mutex<BTreeMap<String, InstanceDesc>>,
    tx: watch::Sender<Arc<RingSnapshot>>,
}

static IN_PROCESS_RINGS: LazyLock<Mutex<HashMap<String, Arc<InProcessRing>>>> =
    LazyLock::new(Default::default);

impl InProcessRing {
    /// The process-wide ring called `key`, created on first use.
    pub fn get(key: &str) -> Arc<Self> {
        IN_PROCESS_RINGS
            .lock()
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Self {
                    instances: Mutex::new(BTreeMap::new()),
                    tx: watch::channel(Arc::new(RingSnapshot::default())).0,
                })
            })
            .clone()
    }

    pub fn upsert(&self, desc: InstanceDesc) {
        let mut instances = self.instances.lock();
        instances.insert(desc.id.clone(), desc);
        self.publish(&instances);
    }

    pub fn remove(&self, id: &str) {
        let mut instances = self.instances.lock();
        instances.remove(id);
        self.publish(&instances);
    }

    fn publish(&self, instances: &BTreeMap<String, InstanceDesc>) {
        let snapshot = RingSnapshot::new(instances.values().cloned().collect());
        self.tx.send_replace(Arc::new(snapshot));
    }

    pub fn ring(&self) -> Ring {
        Ring::from_receiver(self.tx.subscribe())
    }
}

/// An instance's membership in a ring: joins on start, heartbeats, and
/// leaves on [`Lifecycler::leave`].
pub struct Lifecycler {
    desc: InstanceDesc,
    backend: LifecyclerBackend,
}

enum LifecyclerBackend {
    InProcess(Arc<InProcessRing>),
    Consul(ConsulMember),
}

impl Lifecycler {
    /// Joins the ring `ring_name` (e.g. `ingester`) as `id` reachable at
    /// `addr`, with the tokens kept in `tokens_file` (created on first
    /// start). The instance starts JOINING; call [`Self::set_state`] with
    /// ACTIVE once it can take writes.
    pub async fn join(
        config: &RingConfig,
        ring_name: &str,
        id: String,
        addr: String,
        tokens_file: &Path,
        consul: Option<&ConsulConfig>,
    ) -> Result<Self, RingError> {
        let tokens = load_or_create_tokens(tokens_file, config.num_tokens)?;
        let desc = InstanceDesc {
            id,
            addr,
            tokens,
            state: InstanceState::Joining,
            heartbeat: chrono::Utc::now().timestamp(),
        };
        let backend = match config.kvstore.store {
            KvStore::Inmemory => {
                let ring = InProcessRing::get(&ring_key(config, ring_name));
                ring.upsert(desc.clone());
                LifecyclerBackend::InProcess(ring)
            }
            KvStore::Consul => {
                let client = ConsulClient::new(consul.ok_or(RingError::NoConsul)?)?;
                let key = format!("{}/{}", ring_key(config, ring_name), desc.id);
                let member = ConsulMember::start(client, key, desc.clone(), config).await?;
                LifecyclerBackend::Consul(member)
            }
        };
        Ok(Self { desc, backend })
    }

    pub fn id(&self) -> &str {
        &self.desc.id
    }

    pub async fn set_state(&mut self, state: InstanceState) -> Result<(), RingError> {
        self.desc.state = state;
        match &self.backend {
            LifecyclerBackend::InProcess(ring) => ring.upsert(self.desc.clone()),
            LifecyclerBackend::Consul(member) => member.set_state(state).await?,
        }
        Ok(())
    }

    /// Marks the instance LEAVING, then removes it from the ring.
    pub async fn leave(mut self) -> Result<(), RingError> {
        self.set_state(InstanceState::Leaving).await?;
        match &self.backend {
            LifecyclerBackend::InProcess(ring) => ring.remove(&self.desc.id),
            LifecyclerBackend::Consul(member) => member.leave().await?,
        }
        Ok(())
    }
}

fn ring_key(config: &RingConfig, ring_name: &str) -> String {
    format!("{}{ring_name}", config.kvstore.prefix)
}

/// How many times a CAS write is retried when another writer got between
/// our read and our write.
const CAS_ATTEMPTS: usize = 10;

/// An instance's entry in Consul's KV store, kept fresh by a heartbeat task.
struct ConsulMember {
    shared: Arc<MemberShared>,
    /// Stops the heartbeat task, also when the lifecycler is dropped
    /// without leaving (its entry then ages into UNHEALTHY).
    _heartbeat: tokio_util::sync::DropGuard,
}

struct MemberShared {
    client: ConsulClient,
    key: String,
    desc: Mutex<InstanceDesc>,
    /// Serialises writes so a heartbeat cannot interleave with set_state.
    write: tokio::sync::Mutex<()>,
    stop: crate::Shutdown,
}

impl ConsulMember {
    async fn start(
        client: ConsulClient,
        key: String,
        desc: InstanceDesc,
        config: &RingConfig,
    ) -> Result<Self, RingError> {
        let stop = crate::Shutdown::new();
        let shared = Arc::new(MemberShared {
            client,
            key,
            desc: Mutex::new(desc),
            write: tokio::sync::Mutex::new(()),
            stop: stop.clone(),
        });
        // Consul may not be up yet (compose starts everything at once): the
        // heartbeat below keeps writing the entry until it lands.
        if let Err(err) = shared.write_desc().await {
            tracing::warn!(key = %shared.key, %err, "cannot write the ring entry yet, retrying every heartbeat period");
        }
        let period = config.heartbeat_period.0.max(Duration::from_millis(10));
        let task_shared = shared.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = task_shared.stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                task_shared.desc.lock().heartbeat = chrono::Utc::now().timestamp();
                if let Err(err) = task_shared.write_desc().await {
                    tracing::warn!(key = %task_shared.key, %err, "ring heartbeat failed, retrying next period");
                }
            }
        });
        Ok(Self {
            shared,
            _heartbeat: stop.drop_guard(),
        })
    }

    async fn set_state(&self, state: InstanceState) -> Result<(), RingError> {
        {
            let mut desc = self.shared.desc.lock();
            desc.state = state;
            desc.heartbeat = chrono::Utc::now().timestamp();
        }
        self.shared.write_desc().await
    }

    async fn leave(&self) -> Result<(), RingError> {
        self.shared.stop.cancel();
        let _write = self.shared.write.lock().await;
        self.shared.client.kv_delete(&self.shared.key).await?;
        Ok(())
    }
}

impl MemberShared {
    /// Writes the current desc with check-and-set on the entry's
    /// ModifyIndex, so a concurrent writer is noticed rather than
    /// overwritten blindly; the desc is re-read on every attempt.
    async fn write_desc(&self) -> Result<(), RingError> {
        let _write = self.write.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let current = self.client.kv_get(&self.key, 0, None).await?;
            let cas = current.value.map(|pair| pair.modify_index).unwrap_or(0);
            let json = serde_json::to_vec(&*self.desc.lock()).map_err(|err| RingError::Entry {
                key: self.key.clone(),
                reason: err.to_string(),
            })?;
            if self.client.kv_put(&self.key, &json, Some(cas)).await? {
                return Ok(());
            }
        }
        Err(RingError::Entry {
            key: self.key.clone(),
            reason: format!(
                "{CAS_ATTEMPTS} check-and-set writes in a row lost: is another process using instance id {}?",
                self.desc.lock().id
            ),
        })
    }
}

/// A live view of the ring `ring_name`, from Consul or the in-process
/// registry as the config says. Stops following Consul when `shutdown` is
/// cancelled.
pub async fn watch(
    config: &RingConfig,
    ring_name: &str,
    consul: Option<&ConsulConfig>,
    shutdown: crate::Shutdown,
) -> Result<Ring, RingError> {
    match config.kvstore.store {
        KvStore::Inmemory => Ok(InProcessRing::get(&ring_key(config, ring_name)).ring()),
        KvStore::Consul => {
            let client = ConsulClient::new(consul.ok_or(RingError::NoConsul)?)?;
            let (tx, rx) = watch::channel(Arc::new(RingSnapshot::default()));
            let watcher = Arc::new(ConsulWatcher {
                state: Mutex::new(WatchState::default()),
                tx,
                heartbeat_timeout: config.heartbeat_timeout.0,
            });
            let prefix = format!("{}/", ring_key(config, ring_name));
            let service = format!("lucia-{}", ring_name.replace('_', "-"));
            let tick = config.heartbeat_period.0.max(Duration::from_millis(100));
            // Also stops when every Ring handle is gone.
            let stop = shutdown.child_token();
            tokio::spawn(watch_kv(
                client.clone(),
                prefix,
                watcher.clone(),
                stop.clone(),
            ));
            tokio::spawn(watch_health(client, service, watcher.clone(), stop.clone()));
            // Heartbeats age without any change in Consul, so the merge is
            // also redone on a timer.
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(tick);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = ticker.tick() => {
                            if watcher.tx.is_closed() {
                                stop.cancel();
                                return;
                            }
                            watcher.publish();
                        }
                    }
                }
            });
            Ok(Ring::from_receiver(rx))
        }
    }
}

struct ConsulWatcher {
    state: Mutex<WatchState>,
    tx: watch::Sender<Arc<RingSnapshot>>,
    heartbeat_timeout: Duration,
}

#[derive(Default)]
struct WatchState {
    /// Instances as written in the KV store.
    kv: Vec<InstanceDesc>,
    /// The service's registrations; `None` until the first answer, so that
    /// nothing is dropped before the catalogue is known.
    services: Option<Vec<ServiceEntry>>,
}

impl ConsulWatcher {
    fn publish(&self) {
        let instances = {
            let state = self.state.lock();
            merge_membership(
                &state.kv,
                state.services.as_deref(),
                chrono::Utc::now().timestamp(),
                self.heartbeat_timeout,
            )
        };
        self.tx.send_if_modified(|current| {
            if current.instances() == instances.as_slice() {
                return false;
            }
            *current = Arc::new(RingSnapshot::new(instances));
            true
        });
    }
}

/// The ring as Consul shows it: KV entries, dropped when their service is
/// no longer registered, UNHEALTHY when a check fails or the heartbeat is
/// older than `heartbeat_timeout`.
fn merge_membership(
    kv: &[InstanceDesc],
    services: Option<&[ServiceEntry]>,
    now: i64,
    heartbeat_timeout: Duration,
) -> Vec<InstanceDesc> {
    let mut out = Vec::with_capacity(kv.len());
    for desc in kv {
        let mut desc = desc.clone();
        if let Some(services) = services {
            // An instance may have several entries (e.g. re-registered);
            // any passing one makes it reachable.
            let mut entries = services.iter().filter(|e| same_addr(&e.addr(), &desc.addr));
            let Some(first) = entries.next() else {
                continue;
            };
            let passing = first.is_passing() || entries.any(ServiceEntry::is_passing);
            if !passing {
                desc.state = InstanceState::Unhealthy;
            }
        }
        let age = now.saturating_sub(desc.heartbeat);
        if age > 0 && age as u64 > heartbeat_timeout.as_secs() {
            desc.state = InstanceState::Unhealthy;
        }
        out.push(desc);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn same_addr(a: &str, b: &str) -> bool {
    match (
        a.parse::<std::net::SocketAddr>(),
        b.parse::<std::net::SocketAddr>(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// Backoff after the `failures`-th failed Consul query in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(7))).min(Duration::from_secs(10))
}

async fn watch_kv(
    client: ConsulClient,
    prefix: String,
    watcher: Arc<ConsulWatcher>,
    shutdown: crate::Shutdown,
) {
    let mut index = 0;
    let mut failures = 0;
    loop {
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = client.kv_list(&prefix, index, None) => answer,
        };
        match answer {
            Ok(listed) => {
                failures = 0;
                index = next_index(index, listed.index);
                let mut kv = Vec::with_capacity(listed.value.len());
                for pair in listed.value {
                    match serde_json::from_slice::<InstanceDesc>(&pair.value) {
                        Ok(desc) => kv.push(desc),
                        Err(err) => {
                            tracing::warn!(key = %pair.key, %err, "ignoring invalid ring entry")
                        }
                    }
                }
                watcher.state.lock().kv = kv;
                watcher.publish();
            }
            Err(err) => {
                tracing::warn!(%prefix, %err, "watching the ring in consul failed, retrying");
                index = 0;
                failures += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
            }
        }
    }
}

async fn watch_health(
    client: ConsulClient,
    service: String,
    watcher: Arc<ConsulWatcher>,
    shutdown: crate::Shutdown,
) {
    let mut index = 0;
    let mut failures = 0;
    loop {
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = client.health_service(&service, false, index, None) => answer,
        };
        match answer {
            Ok(health) => {
                failures = 0;
                index = next_index(index, health.index);
                watcher.state.lock().services = Some(health.value);
                watcher.publish();
            }
            Err(err) => {
                tracing::warn!(%service, %err, "watching the ring's health in consul failed, retrying");
                index = 0;
                failures += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
            }
        }
    }
}

/// The `GET /ring` page: every member with its state, token count and
/// last heartbeat.
pub fn ring_status(snapshot: &RingSnapshot) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    let members: Vec<serde_json::Value> = snapshot
        .instances()
        .iter()
        .map(|i| {
            serde_json::json!({
                "id": i.id,
                "addr": i.addr,
                "state": i.state,
                "tokens": i.tokens.len(),
                "heartbeat": i.heartbeat,
                "heartbeat_age_seconds": now.saturating_sub(i.heartbeat),
            })
        })
        .collect();
    serde_json::json!({ "members": members })
}

/// A router serving [`ring_status`] of `ring` at `GET /ring`.
pub fn ring_routes(ring: Ring) -> axum::Router {
    axum::Router::new().route(
        "/ring",
        axum::routing::get(move || {
            let ring = ring.clone();
            async move { axum::Json(ring_status(&ring.snapshot())) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, tokens: &[u32], state: InstanceState) -> InstanceDesc {
        InstanceDesc {
            id: id.into(),
            addr: format!("{id}:3100"),
            tokens: tokens.to_vec(),
            state,
            heartbeat: 0,
        }
    }

    #[test]
    fn replicas_walk_clockwise_and_skip_unhealthy() {
        let ring = RingSnapshot::new(vec![
            inst("a", &[10, 40], InstanceState::Active),
            inst("b", &[20, 50], InstanceState::Active),
            inst("c", &[30, 60], InstanceState::Unhealthy),
            inst("d", &[35], InstanceState::Active),
        ]);
        let ids = |token, rf| {
            ring.replicas(token, rf)
                .into_iter()
                .map(|i| i.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(15, 2), vec!["b", "d"]);
        assert_eq!(ids(15, 3), vec!["b", "d", "a"]);
        assert_eq!(ids(61, 1), vec!["a"], "wraps around");
        assert_eq!(ids(0, 10).len(), 3, "never more than the healthy instances");
    }

    #[test]
    fn quorum() {
        assert_eq!(write_quorum(1), 1);
        assert_eq!(write_quorum(2), 2);
        assert_eq!(write_quorum(3), 2);
        assert_eq!(write_quorum(5), 3);
    }

    #[test]
    fn tokens_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let first = load_or_create_tokens(&path, 128).unwrap();
        assert_eq!(first.len(), 128);
        assert_eq!(load_or_create_tokens(&path, 128).unwrap(), first);
    }

    #[test]
    fn in_process_ring_publishes() {
        let registry = InProcessRing::get("test-ring-publishes");
        let ring = registry.ring();
        registry.upsert(inst("x", &[1], InstanceState::Active));
        assert_eq!(ring.snapshot().instances().len(), 1);
        registry.remove("x");
        assert!(ring.snapshot().instances().is_empty());
    }

    fn entry(addr: &str, status: &str) -> ServiceEntry {
        let (host, port) = addr.rsplit_once(':').unwrap();
        serde_json::from_value(serde_json::json!({
            "Node": {"Node": "n1", "Address": "10.9.9.9"},
            "Service": {"ID": format!("lucia-ingester-{host}-{port}"), "Service": "lucia-ingester",
                        "Tags": ["metrics"], "Address": host, "Port": port.parse::<u16>().unwrap()},
            "Checks": [
                {"CheckID": "serfHealth", "Status": "passing"},
                {"CheckID": "service:x", "Status": status}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn consul_membership_merge() {
        let now = 1_000_000;
        let mut a = inst("a", &[1], InstanceState::Active);
        a.addr = "127.0.0.1:1001".into();
        a.heartbeat = now - 1;
        let mut b = a.clone();
        b.id = "b".into();
        b.addr = "127.0.0.1:1002".into();
        let mut c = a.clone();
        c.id = "c".into();
        c.addr = "127.0.0.1:1003".into();
        c.heartbeat = now - 120;
        let mut d = a.clone();
        d.id = "d".into();
        d.addr = "127.0.0.1:1004".into();
        let kv = vec![d.clone(), c.clone(), b.clone(), a.clone()];
        let services = vec![
            entry("127.0.0.1:1001", "passing"),
            entry("127.0.0.1:1002", "critical"),
            entry("127.0.0.1:1003", "passing"),
        ];
        let timeout = Duration::from_secs(60);
        let merged = merge_membership(&kv, Some(&services), now, timeout);
        let states: Vec<(&str, InstanceState)> =
            merged.iter().map(|i| (i.id.as_str(), i.state)).collect();
        assert_eq!(
            states,
            vec![
                ("a", InstanceState::Active),
                ("b", InstanceState::Unhealthy),
                ("c", InstanceState::Unhealthy),
            ],
            "b fails its check, c's heartbeat is stale, d is deregistered"
        );
        let before_catalogue = merge_membership(&kv, None, now, timeout);
        assert_eq!(
            before_catalogue.len(),
            4,
            "nothing dropped before health is known"
        );
    }

    #[test]
    fn status_page_lists_members() {
        let snapshot = RingSnapshot::new(vec![inst("a", &[1, 2, 3], InstanceState::Joining)]);
        let status = ring_status(&snapshot);
        assert_eq!(status["members"][0]["id"], "a");
        assert_eq!(status["members"][0]["state"], "JOINING");
        assert_eq!(status["members"][0]["tokens"], 3);
    }
}
