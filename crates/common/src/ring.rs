//! The hash ring of ingesters.
//!
//! Each instance owns `num_tokens` random 32-bit tokens. A stream's replicas
//! are the first `replication_factor` distinct healthy ACTIVE instances met
//! walking clockwise from the stream's token (a hash of tenant and sorted
//! labels). Membership comes from Consul (see [`crate::consul`]) or, for
//! `lucia all` and tests, from a process-global in-memory registry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

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
        consul: Option<&crate::consul::ConsulConfig>,
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
                let ring = InProcessRing::get(&format!("{}{ring_name}", config.kvstore.prefix));
                ring.upsert(desc.clone());
                LifecyclerBackend::InProcess(ring)
            }
            KvStore::Consul => {
                let _ = consul.ok_or(RingError::NoConsul)?;
                return Err(RingError::NoConsul);
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
        }
        Ok(())
    }

    /// Marks the instance LEAVING, then removes it from the ring.
    pub async fn leave(mut self) -> Result<(), RingError> {
        self.set_state(InstanceState::Leaving).await?;
        match &self.backend {
            LifecyclerBackend::InProcess(ring) => ring.remove(&self.desc.id),
        }
        Ok(())
    }
}

/// A live view of the ring `ring_name`, from Consul or the in-process
/// registry as the config says. Stops following Consul when `shutdown` is
/// cancelled.
pub async fn watch(
    config: &RingConfig,
    ring_name: &str,
    consul: Option<&crate::consul::ConsulConfig>,
    _shutdown: crate::Shutdown,
) -> Result<Ring, RingError> {
    match config.kvstore.store {
        KvStore::Inmemory => {
            Ok(InProcessRing::get(&format!("{}{ring_name}", config.kvstore.prefix)).ring())
        }
        KvStore::Consul => {
            let _ = consul.ok_or(RingError::NoConsul)?;
            Err(RingError::NoConsul)
        }
    }
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
}
