//! The ingester role: gRPC `lucia.ingester.Ingester` (Push, Query, Series),
//! per-tenant streams in memory, the WAL, checkpoints, and the flush of
//! chunks to the object store.
//!
//! Locking: a push holds the checkpoint lock shared while it applies entries
//! to memory and queues its WAL record; a checkpoint holds it exclusively
//! while it rotates the WAL and snapshots memory, so the snapshot and the
//! segments after it never both hold (or both miss) a push.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::labels::Labels;
use lucia_common::matchers::{Matcher, MatcherError, matches_all, parse_selector};
use lucia_common::ring::{InstanceState, KvStore, Lifecycler, RingConfig};
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use lucia_common::tenant::{DEFAULT_TENANT, ORG_ID_METADATA, validate_tenant};
use lucia_common::time::{format_rfc3339_nanos, now_nanos};
use lucia_proto::ingester::ingester_server::{Ingester as IngesterRpc, IngesterServer};
use lucia_proto::ingester::{
    Direction, QueryRequest, QueryResponse, SeriesRequest, SeriesResponse,
};
use lucia_proto::logproto::{EntryAdapter, PushRequest, PushResponse, StreamAdapter};
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tonic::{Request, Response, Status};

use crate::limits::LimitsConfig;
use crate::stream::{Appended, Chunk, ChunkParams, Stream};
use crate::wal::{
    CheckpointBlock, CheckpointChunk, CheckpointStream, RecordBuilder, Wal, WalConfig, WalError,
    WalMetrics, WalRecord,
};
pub use lucia_common::chunk::ChunkEncoding;
use lucia_common::chunk::{Block, ChunkData, ChunkError, Entry};
pub use lucia_common::store::StorageConfig;
use lucia_common::store::{ChunkStore, StoreError};

/// The `ingester` config section, with Loki's names and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The ring this ingester joins.
    pub ring: RingConfig,
    /// Instance ID in the ring; defaults to the hostname and port.
    pub instance_id: Option<String>,
    pub wal: WalConfig,
    /// Uncompressed size of a block within a chunk.
    pub chunk_block_size: usize,
    /// Compressed size at which a chunk is cut.
    pub chunk_target_size: usize,
    /// A chunk with no new entry for this long is flushed.
    pub chunk_idle_period: ConfigDuration,
    /// A chunk older than this is flushed.
    pub max_chunk_age: ConfigDuration,
    /// Block compression: zstd-columns, zstd, snappy or none.
    pub chunk_encoding: ChunkEncoding,
    /// zstd level of blocks (1 to 19): higher is smaller and slower; the
    /// encoding's own default when unset. See BENCHMARKS.md for the
    /// trade-off on realistic logs.
    pub chunk_compression_level: Option<i32>,
    /// How often chunks are checked for flushing.
    pub flush_check_period: ConfigDuration,
    /// Where flushed chunks and their index go (the `storage` section).
    #[serde(skip)]
    pub storage: StorageConfig,
    /// Per-tenant limits (Loki's `limits_config`).
    #[serde(skip)]
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ring: RingConfig::default(),
            instance_id: None,
            wal: WalConfig::default(),
            chunk_block_size: 256 * 1024,
            chunk_target_size: 1536 * 1024,
            chunk_idle_period: ConfigDuration::from_secs(30 * 60),
            max_chunk_age: ConfigDuration::from_secs(2 * 3600),
            chunk_encoding: ChunkEncoding::ZstdColumns,
            chunk_compression_level: None,
            flush_check_period: ConfigDuration::from_secs(30),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Errors of starting the role.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("ring: {0}")]
    Ring(#[from] lucia_common::ring::RingError),
    #[error("wal: {0}")]
    Wal(#[from] WalError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("replaying the wal: {0}")]
    Replay(String),
    #[error("{0}")]
    Config(String),
}

/// Errors of the gRPC API, mapped to status codes in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no tenant: set the x-scope-orgid metadata")]
    MissingTenant,
    #[error("{0}")]
    InvalidTenant(#[from] lucia_common::tenant::TenantError),
    #[error("invalid stream labels {labels:?}: {source}")]
    Labels {
        labels: String,
        source: lucia_common::labels::LabelsError,
    },
    #[error("invalid selector: {0}")]
    Selector(#[from] MatcherError),
    /// Some entries were too old; the others were kept.
    #[error("{0}")]
    TooFarBehind(String),
    /// Some streams were over the tenant's limit; the others were kept.
    #[error("{0}")]
    StreamLimit(String),
    #[error("{0}")]
    Wal(#[from] WalError),
    #[error("compressing entries: {0}")]
    Chunk(#[from] ChunkError),
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let message = err.to_string();
        match err {
            ApiError::MissingTenant | ApiError::InvalidTenant(_) => {
                Status::unauthenticated(message)
            }
            ApiError::Labels { .. } | ApiError::Selector(_) | ApiError::TooFarBehind(_) => {
                Status::invalid_argument(message)
            }
            ApiError::StreamLimit(_) => Status::resource_exhausted(message),
            ApiError::Wal(_) | ApiError::Chunk(_) | ApiError::Internal(_) => {
                Status::internal(message)
            }
        }
    }
}

struct Metrics {
    streams: Gauge,
    chunks_flushed: Counter,
    chunk_bytes_flushed: Counter,
    entries_appended: Counter,
    entries_rejected: Family<Vec<(String, String)>, Counter>,
    wal: WalMetrics,
}

impl Metrics {
    fn new(registry: &lucia_common::metrics::Metrics) -> Self {
        let m = Self {
            streams: Gauge::default(),
            chunks_flushed: Counter::default(),
            chunk_bytes_flushed: Counter::default(),
            entries_appended: Counter::default(),
            entries_rejected: Family::default(),
            wal: WalMetrics::default(),
        };
        registry.register(
            "lucia_ingester_memory_streams",
            "Streams held in memory.",
            m.streams.clone(),
        );
        registry.register(
            "lucia_ingester_chunks_flushed",
            "Chunks written to the object store.",
            m.chunks_flushed.clone(),
        );
        registry.register(
            "lucia_ingester_chunk_flushed_bytes",
            "Bytes of chunks written to the object store.",
            m.chunk_bytes_flushed.clone(),
        );
        registry.register(
            "lucia_ingester_entries_appended",
            "Entries appended to streams.",
            m.entries_appended.clone(),
        );
        registry.register(
            "lucia_ingester_entries_rejected",
            "Entries not appended, by reason.",
            m.entries_rejected.clone(),
        );
        registry.register(
            "lucia_ingester_wal_records",
            "Records written to the WAL.",
            m.wal.records.clone(),
        );
        registry.register(
            "lucia_ingester_wal_bytes",
            "Bytes written to the WAL.",
            m.wal.bytes.clone(),
        );
        registry.register(
            "lucia_ingester_wal_fsyncs",
            "fsyncs of WAL segments.",
            m.wal.fsyncs.clone(),
        );
        m
    }

    fn rejected(&self, reason: &str, n: usize) {
        if n > 0 {
            self.entries_rejected
                .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                .inc_by(n as u64);
        }
    }
}

type StreamRef = Arc<Mutex<Stream>>;

#[derive(Default)]
struct Tenant {
    streams: RwLock<HashMap<Arc<str>, StreamRef>>,
}

/// The ingester's state, shared by the gRPC service and background tasks.
pub struct Ingester {
    params: ChunkParams,
    limits: LimitsConfig,
    instance_id: String,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    checkpoint_lock: tokio::sync::RwLock<()>,
    /// Serialises checkpoints and flushes with themselves.
    checkpoint_mutex: tokio::sync::Mutex<()>,
    flush_mutex: tokio::sync::Mutex<()>,
    checkpoint_wanted: tokio::sync::Notify,
    wal: Option<Wal>,
    store: ChunkStore,
    next_chunk_id: AtomicU64,
    metrics: Metrics,
    /// The ingester ring, to turn the global stream limit into this
    /// instance's share.
    ring: Option<lucia_common::ring::Ring>,
    replication_factor: usize,
}

impl Ingester {
    fn new(config: &Config, instance_id: String, store: ChunkStore, metrics: Metrics) -> Self {
        let ns = |d: ConfigDuration| i64::try_from(d.0.as_nanos()).unwrap_or(i64::MAX);
        Self {
            params: ChunkParams {
                block_size: config.chunk_block_size.max(1),
                target_size: config.chunk_target_size.max(1),
                encoding: config.chunk_encoding,
                zstd_level: config
                    .chunk_compression_level
                    .unwrap_or(config.chunk_encoding.default_level()),
                idle_ns: ns(config.chunk_idle_period),
                max_age_ns: ns(config.max_chunk_age),
                ooo_window_ns: ns(config.limits.out_of_order_time_window),
            },
            limits: config.limits.clone(),
            instance_id,
            tenants: RwLock::default(),
            checkpoint_lock: tokio::sync::RwLock::new(()),
            checkpoint_mutex: tokio::sync::Mutex::new(()),
            flush_mutex: tokio::sync::Mutex::new(()),
            checkpoint_wanted: tokio::sync::Notify::new(),
            wal: None,
            store,
            next_chunk_id: AtomicU64::new(1),
            metrics,
            ring: None,
            replication_factor: config.ring.replication_factor.max(1),
        }
    }

    /// This instance's share of `max_global_streams_per_user`, as in Loki:
    /// the global limit divided by the active ingesters, times the
    /// replication factor (each stream lives on that many ingesters).
    fn local_stream_limit(&self) -> usize {
        let global = self.limits.max_global_streams_per_user;
        let active = self.ring.as_ref().map_or(1, |ring| {
            ring.snapshot()
                .instances()
                .iter()
                .filter(|i| i.state == InstanceState::Active)
                .count()
        });
        if active <= 1 {
            return global;
        }
        (global / active)
            .saturating_mul(self.replication_factor)
            .min(global)
            .max(1)
    }

    fn next_id(&self) -> u64 {
        self.next_chunk_id.fetch_add(1, Ordering::Relaxed)
    }

    fn tenant(&self, id: &str) -> Arc<Tenant> {
        if let Some(t) = self.tenants.read().get(id) {
            return t.clone();
        }
        self.tenants
            .write()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Appends `entries` to the stream `labels` of `tenant`, creating it if
    /// needed (within `limit` streams, when given). The tenant's map stays
    /// read-locked during the append so the flush cannot drop the stream
    /// meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        tenant: &Tenant,
        labels: &str,
        entries: Vec<Entry>,
        now: i64,
        check_window: bool,
        wal: Option<&mut RecordBuilder>,
        limit: Option<usize>,
    ) -> Result<Result<Appended, StreamLimitHit>, ApiError> {
        let append = |stream: &StreamRef, entries, wal| {
            stream
                .lock()
                .append(entries, &self.params, now, check_window, wal, &mut || {
                    self.next_id()
                })
        };
        if let Some(stream) = tenant.streams.read().get(labels) {
            return Ok(Ok(append(stream, entries, wal)?));
        }
        let parsed = Labels::parse(labels).map_err(|source| ApiError::Labels {
            labels: labels.to_string(),
            source,
        })?;
        // The first push of a stream appends under the write lock, so the
        // flush never sees (and drops) the new stream empty.
        let mut map = tenant.streams.write();
        if let Some(stream) = map.get(labels) {
            return Ok(Ok(append(stream, entries, wal)?));
        }
        if let Some(limit) = limit
            && map.len() >= limit
        {
            return Ok(Err(StreamLimitHit { streams: map.len() }));
        }
        let key: Arc<str> = labels.into();
        let stream = Arc::new(Mutex::new(Stream::new(
            parsed,
            key.clone(),
            self.next_id(),
            now,
        )));
        let appended = append(&stream, entries, wal)?;
        map.insert(key, stream);
        self.metrics.streams.inc();
        Ok(Ok(appended))
    }

    /// Applies a push and waits until its WAL record is durable.
    pub async fn push(&self, tenant_id: &str, request: PushRequest) -> Result<(), ApiError> {
        let now = now_nanos();
        let guard = self.checkpoint_lock.read().await;
        let tenant = self.tenant(tenant_id);
        // The WAL record is encoded as the entries are accepted.
        let mut record = self
            .wal
            .as_ref()
            .map(|_| RecordBuilder::new(tenant_id, wal_record_capacity(tenant_id, &request)));
        let mut too_old = Vec::new();
        let mut over_limit: Vec<(String, usize, usize)> = Vec::new();
        for stream in request.streams {
            let total = stream.entries.len();
            let entries = stream.entries.into_iter().map(Entry::from).collect();
            let limit = Some(self.local_stream_limit()).filter(|l| *l > 0);
            let appended = match self.append(
                &tenant,
                &stream.labels,
                entries,
                now,
                true,
                record.as_mut(),
                limit,
            )? {
                Ok(appended) => appended,
                Err(hit) => {
                    self.metrics.rejected("stream_limit", total);
                    over_limit.push((stream.labels, hit.streams, total));
                    continue;
                }
            };
            self.metrics
                .entries_appended
                .inc_by(appended.accepted_count as u64);
            self.metrics.rejected("duplicate", appended.duplicates);
            self.metrics
                .rejected("too_far_behind", appended.too_far_behind.len());
            if let Some(first) = appended.too_far_behind.first() {
                too_old.push(format!(
                    "entry too far behind, entry timestamp is: {}, oldest acceptable timestamp is: {}: {} of {} entries rejected for stream {}",
                    format_rfc3339_nanos(first.ts),
                    format_rfc3339_nanos(first.cutoff),
                    appended.too_far_behind.len(),
                    total,
                    stream.labels,
                ));
            }
            if let Some(record) = record.as_mut() {
                record.end_stream(&stream.labels);
            }
        }
        let ack = match (&self.wal, record) {
            (Some(wal), Some(record)) if !record.is_empty() => {
                Some(wal.append_encoded(record.finish()))
            }
            _ => None,
        };
        drop(guard);
        if let Some(ack) = ack {
            ack.wait().await?;
        }
        if let Some((labels, streams, _)) = over_limit.first() {
            let entries: usize = over_limit.iter().map(|(_, _, n)| n).sum();
            return Err(ApiError::StreamLimit(format!(
                "maximum active stream limit exceeded: tenant {tenant_id} has {streams} streams on this ingester, its share of max_global_streams_per_user ({}) is {}; {} new streams ({entries} entries) rejected, the first {labels}: reduce the number of label combinations or raise the limit",
                self.limits.max_global_streams_per_user,
                self.local_stream_limit(),
                over_limit.len(),
            )));
        }
        if !too_old.is_empty() {
            return Err(ApiError::TooFarBehind(format!(
                "{}; send entries within the out-of-order window ({}) of the stream's newest entry",
                too_old.join("; "),
                self.limits.out_of_order_time_window,
            )));
        }
        Ok(())
    }

    fn matching_streams(&self, tenant_id: &str, matchers: &[Matcher]) -> Vec<StreamRef> {
        let Some(tenant) = self.tenants.read().get(tenant_id).cloned() else {
            return Vec::new();
        };
        let map = tenant.streams.read();
        map.values()
            .filter(|s| matches_all(matchers, &s.lock().labels))
            .cloned()
            .collect()
    }

    /// The entries of the matching streams in [start, end), in batches of
    /// about `batch` entries; `limit` 0 means no limit.
    pub fn query(
        &self,
        tenant_id: &str,
        request: &QueryRequest,
        batch: usize,
    ) -> Result<Vec<QueryResponse>, ApiError> {
        let matchers = parse_selector(&request.selector)?;
        let end = if request.end <= 0 {
            i64::MAX
        } else {
            request.end
        };
        let backward = request.direction == Direction::Backward as i32;
        let mut streams: Vec<(Arc<str>, Vec<Entry>)> = Vec::new();
        for stream in self.matching_streams(tenant_id, &matchers) {
            let (labels, chunks) = {
                let s = stream.lock();
                (s.labels_str.clone(), s.snapshot())
            };
            let mut entries = Vec::new();
            for chunk in chunks {
                entries.extend(chunk.entries_in(request.start, end)?);
            }
            if !entries.is_empty() {
                entries.sort_by_key(|e| e.ts);
                streams.push((labels, entries));
            }
        }
        if request.limit > 0 {
            apply_limit(&mut streams, request.limit as usize, backward);
        }
        let mut out = Vec::new();
        let mut current = QueryResponse::default();
        let mut in_current = 0;
        for (labels, mut entries) in streams {
            if backward {
                entries.reverse();
            }
            let mut entries = entries.into_iter().peekable();
            while entries.peek().is_some() {
                let take = batch.saturating_sub(in_current).max(1);
                let part: Vec<EntryAdapter> = entries
                    .by_ref()
                    .take(take)
                    .map(EntryAdapter::from)
                    .collect();
                in_current += part.len();
                current.streams.push(StreamAdapter {
                    labels: labels.to_string(),
                    entries: part,
                    hash: 0,
                });
                if in_current >= batch {
                    out.push(std::mem::take(&mut current));
                    in_current = 0;
                }
            }
        }
        if !current.streams.is_empty() {
            out.push(current);
        }
        Ok(out)
    }

    /// The label sets of matching streams holding data in [start, end).
    pub fn series(
        &self,
        tenant_id: &str,
        request: &SeriesRequest,
    ) -> Result<Vec<String>, ApiError> {
        let matchers = parse_selector(&request.selector)?;
        let end = if request.end <= 0 {
            i64::MAX
        } else {
            request.end
        };
        let mut out: Vec<String> = self
            .matching_streams(tenant_id, &matchers)
            .into_iter()
            .filter_map(|s| {
                let s = s.lock();
                let (from, through) = s.bounds()?;
                (through >= request.start && from < end).then(|| s.labels_str.to_string())
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Closes due chunks (all with `force`) and writes closed chunks to the
    /// store. A chunk leaves memory only once it and its index are stored;
    /// what fails stays for the next attempt. Returns the chunks flushed.
    pub async fn flush(&self, force: bool) -> Result<usize, StoreError> {
        let _flushing = self.flush_mutex.lock().await;
        let now = now_nanos();
        let tenants: Vec<(String, Arc<Tenant>)> = self
            .tenants
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut flushed_total = 0;
        let mut first_error = None;
        for (tenant_id, tenant) in tenants {
            let streams: Vec<StreamRef> = tenant.streams.read().values().cloned().collect();
            let mut index = Vec::new();
            let mut done: Vec<(StreamRef, Vec<u64>)> = Vec::new();
            for stream in streams {
                let (labels, chunks) = {
                    let mut s = stream.lock();
                    if let Err(err) = s.close_due(&self.params, now, force, &mut || self.next_id())
                    {
                        tracing::error!(%err, "cannot compress a head block");
                    }
                    (s.labels_str.clone(), s.closed.clone())
                };
                let mut ids = Vec::new();
                for chunk in chunks {
                    let Some((from, through)) = chunk.bounds() else {
                        ids.push(chunk.id);
                        continue;
                    };
                    let data = ChunkData {
                        tenant: tenant_id.clone(),
                        labels: labels.to_string(),
                        from,
                        through,
                        blocks: chunk.blocks.clone(),
                    };
                    match self.store.put_chunk(&data).await {
                        Ok(entry) => {
                            self.metrics.chunks_flushed.inc();
                            self.metrics.chunk_bytes_flushed.inc_by(entry.bytes);
                            index.push(entry);
                            ids.push(chunk.id);
                        }
                        Err(err) => {
                            tracing::warn!(%err, tenant = %tenant_id, stream = %labels, "chunk flush failed, will retry");
                            first_error.get_or_insert(err);
                        }
                    }
                }
                done.push((stream, ids));
            }
            if let Err(err) = self
                .store
                .put_index(&tenant_id, &self.instance_id, &index)
                .await
            {
                tracing::warn!(%err, tenant = %tenant_id, "index write failed, will retry the flush");
                first_error.get_or_insert(err);
                continue;
            }
            for (stream, ids) in &done {
                stream.lock().remove_flushed(ids);
            }
            flushed_total += index.len();
            // Streams left without data are forgotten, freeing their place
            // under the stream limit.
            let mut map = tenant.streams.write();
            let before = map.len();
            map.retain(|_, s| !s.lock().is_empty());
            self.metrics.streams.dec_by((before - map.len()) as i64);
        }
        if flushed_total > 0 {
            self.checkpoint_wanted.notify_one();
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(flushed_total),
        }
    }

    /// Rotates the WAL, snapshots memory, writes the checkpoint and deletes
    /// the segments it replaces.
    pub async fn checkpoint(&self) -> Result<(), WalError> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        let _one = self.checkpoint_mutex.lock().await;
        let (n, snapshot) = {
            let _exclusive = self.checkpoint_lock.write().await;
            let n = wal.rotate().await?;
            (n, self.snapshot())
        };
        let dir = wal.dir().to_path_buf();
        tokio::task::spawn_blocking(move || {
            crate::wal::write_checkpoint(&dir, n, snapshot.into_iter())
        })
        .await
        .map_err(|e| WalError::Write(format!("checkpoint task failed: {e}")))?
    }

    fn snapshot(&self) -> Vec<CheckpointStream> {
        let mut out = Vec::new();
        for (tenant_id, tenant) in self.tenants.read().iter() {
            for stream in tenant.streams.read().values() {
                let s = stream.lock();
                let chunk = |c: &Chunk, closed: bool| CheckpointChunk {
                    blocks: c
                        .blocks
                        .iter()
                        .map(|b| CheckpointBlock {
                            encoding: u32::from(b.encoding.to_u8()),
                            min_ts: b.min_ts,
                            max_ts: b.max_ts,
                            count: b.count,
                            raw_len: b.raw_len,
                            data: b.data.clone(),
                        })
                        .collect(),
                    head: c.head.iter().cloned().map(EntryAdapter::from).collect(),
                    created_at: c.created_at,
                    last_append: c.last_append,
                    closed,
                };
                let mut chunks: Vec<CheckpointChunk> =
                    s.closed.iter().map(|c| chunk(c, true)).collect();
                chunks.push(chunk(&s.open, false));
                out.push(CheckpointStream {
                    tenant: tenant_id.clone(),
                    labels: s.labels_str.to_string(),
                    newest_ts: s.newest_ts,
                    chunks,
                });
            }
        }
        out
    }

    fn restore_stream(&self, cp: CheckpointStream) -> Result<(), String> {
        let labels = Labels::parse(&cp.labels).map_err(|e| e.to_string())?;
        let key: Arc<str> = cp.labels.as_str().into();
        let mut stream = Stream::new(labels, key.clone(), self.next_id(), now_nanos());
        stream.newest_ts = cp.newest_ts;
        for c in cp.chunks {
            let mut chunk = Chunk::new(self.next_id(), c.created_at);
            chunk.last_append = c.last_append;
            for b in c.blocks {
                let encoding = u8::try_from(b.encoding)
                    .map_err(|_| "bad block encoding".to_string())
                    .and_then(|e| ChunkEncoding::from_u8(e).map_err(|e| e.to_string()))?;
                chunk.compressed_size += b.data.len();
                chunk.blocks.push(Block {
                    encoding,
                    min_ts: b.min_ts,
                    max_ts: b.max_ts,
                    count: b.count,
                    raw_len: b.raw_len,
                    data: b.data,
                });
            }
            for e in c.head {
                let e = Entry::from(e);
                chunk.head_size += e.size();
                chunk.head.push(e);
            }
            if c.closed {
                stream.closed.push(chunk);
            } else {
                stream.open = chunk;
            }
        }
        let tenant = self.tenant(&cp.tenant);
        let mut map = tenant.streams.write();
        if map.insert(key, Arc::new(Mutex::new(stream))).is_none() {
            self.metrics.streams.inc();
        }
        Ok(())
    }

    fn replay_record(&self, record: WalRecord) -> Result<(), String> {
        let tenant = self.tenant(&record.tenant);
        let now = now_nanos();
        for stream in record.streams {
            let entries = stream.entries.into_iter().map(Entry::from).collect();
            // What is in the WAL was accepted once: no window, no limit.
            match self.append(&tenant, &stream.labels, entries, now, false, None, None) {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => {}
                Err(err) => return Err(err.to_string()),
            }
        }
        Ok(())
    }
}

/// Keeps only the `limit` entries first in query order across all streams.
fn apply_limit(streams: &mut Vec<(Arc<str>, Vec<Entry>)>, limit: usize, backward: bool) {
    let total: usize = streams.iter().map(|(_, e)| e.len()).sum();
    if total <= limit {
        return;
    }
    let mut all: Vec<(i64, usize)> = streams
        .iter()
        .enumerate()
        .flat_map(|(i, (_, e))| e.iter().map(move |e| (e.ts, i)))
        .collect();
    if backward {
        all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    } else {
        all.sort();
    }
    let mut keep = vec![0usize; streams.len()];
    for (_, i) in &all[..limit] {
        keep[*i] += 1;
    }
    for (i, (_, entries)) in streams.iter_mut().enumerate() {
        if backward {
            let drop = entries.len() - keep[i];
            entries.drain(..drop);
        } else {
            entries.truncate(keep[i]);
        }
    }
    streams.retain(|(_, e)| !e.is_empty());
}

struct StreamLimitHit {
    streams: usize,
}

/// The gRPC service.
#[derive(Clone)]
pub struct IngesterService {
    inner: Arc<Ingester>,
    multi_tenant: bool,
}

/// Entries per streamed query response.
const QUERY_BATCH: usize = 1000;

impl IngesterService {
    fn tenant<T>(&self, request: &Request<T>) -> Result<String, ApiError> {
        match request.metadata().get(ORG_ID_METADATA) {
            Some(value) => {
                let id = value
                    .to_str()
                    .map_err(|_| ApiError::MissingTenant)?
                    .trim()
                    .to_string();
                validate_tenant(&id)?;
                Ok(id)
            }
            None if !self.multi_tenant => Ok(DEFAULT_TENANT.to_string()),
            None => Err(ApiError::MissingTenant),
        }
    }
}

type QueryStream =
    Pin<Box<dyn futures::Stream<Item = Result<QueryResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl IngesterRpc for IngesterService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let tenant = self.tenant(&request)?;
        self.inner.push(&tenant, request.into_inner()).await?;
        Ok(Response::new(PushResponse {}))
    }

    type QueryStream = QueryStream;

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let tenant = self.tenant(&request)?;
        let request = request.into_inner();
        let inner = self.inner.clone();
        // Decompression is CPU work: keep it off the async workers.
        let batches =
            tokio::task::spawn_blocking(move || inner.query(&tenant, &request, QUERY_BATCH))
                .await
                .map_err(|e| Status::internal(format!("query task failed: {e}")))??;
        Ok(Response::new(Box::pin(futures::stream::iter(
            batches.into_iter().map(Ok),
        ))))
    }

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<SeriesResponse>, Status> {
        let tenant = self.tenant(&request)?;
        let series = self.inner.series(&tenant, request.get_ref())?;
        Ok(Response::new(SeriesResponse { series }))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "ingester".to_string())
}

/// Starts the ingester on the process's shared listener: replays the WAL,
/// joins the ring, and serves gRPC. The role's stop flushes everything to
/// the store, leaves the ring and checkpoints an empty WAL.
pub async fn start(config: Config, ctx: RoleContext) -> Result<Role, Error> {
    if let Some(level) = config.chunk_compression_level
        && !(1..=19).contains(&level)
    {
        return Err(Error::Config(format!(
            "ingester.chunk_compression_level is {level}: use a zstd level from 1 to 19"
        )));
    }
    let ready = ctx.readiness.register("ingester");
    let instance_id = config
        .instance_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), ctx.advertise_addr.port()));
    let store = ChunkStore::from_config(&config.storage, &ctx.data_dir)?;
    let metrics = Metrics::new(&ctx.metrics);
    let mut ingester = Ingester::new(&config, instance_id.clone(), store, metrics);
    let background = Shutdown::new();
    match lucia_common::ring::watch(
        &config.ring,
        "ingester",
        ctx.consul.as_ref(),
        background.clone(),
    )
    .await
    {
        Ok(ring) => ingester.ring = Some(ring),
        Err(err) => {
            tracing::warn!(%err, "cannot watch the ring; applying max_global_streams_per_user locally")
        }
    }

    if config.wal.enabled {
        let dir: PathBuf = config
            .wal
            .dir
            .clone()
            .unwrap_or_else(|| ctx.data_dir.join("wal"));
        let started = std::time::Instant::now();
        let failure = std::cell::RefCell::new(None);
        let replayed = crate::wal::replay(
            &dir,
            |cp| {
                if let Err(e) = ingester.restore_stream(cp) {
                    failure.borrow_mut().get_or_insert(e);
                }
            },
            |record| {
                if let Err(e) = ingester.replay_record(record) {
                    failure.borrow_mut().get_or_insert(e);
                }
            },
        )?;
        if let Some(e) = failure.into_inner() {
            return Err(Error::Replay(e));
        }
        tracing::info!(
            records = replayed.records,
            streams = ingester.metrics.streams.get(),
            elapsed = ?started.elapsed(),
            "wal replayed"
        );
        ingester.wal = Some(Wal::open(
            &dir,
            replayed.next_segment,
            config.wal.fsync,
            ingester.metrics.wal.clone(),
        )?);
    }
    let ingester = Arc::new(ingester);
    // Fold what was replayed into a checkpoint so old segments go away.
    ingester.checkpoint().await?;

    let tokens_file = ctx.data_dir.join("ingester").join("tokens.json");
    let mut lifecycler = Lifecycler::join(
        &config.ring,
        "ingester",
        instance_id,
        ctx.advertise_addr.to_string(),
        &tokens_file,
        ctx.consul.as_ref(),
    )
    .await?;
    lifecycler.set_state(InstanceState::Active).await?;
    let local_addr = (config.ring.kvstore.store == KvStore::Inmemory).then(|| {
        let addr = ctx.advertise_addr.to_string();
        crate::fanout::register_local(addr.clone(), ingester.clone());
        addr
    });
    ready.set(true);

    let flush_task = tokio::spawn(flush_loop(
        ingester.clone(),
        config.flush_check_period.0,
        background.clone(),
    ));
    let checkpoint_task = tokio::spawn(checkpoint_loop(
        ingester.clone(),
        config.wal.checkpoint_duration.0,
        background.clone(),
    ));

    let service = IngesterService {
        inner: ingester.clone(),
        multi_tenant: ctx.multi_tenant,
    };
    let server = IngesterServer::new(service)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let router = tonic::service::Routes::new(server).into_axum_router();

    let shutdown = ctx.shutdown.clone();
    let stopped = async move {
        shutdown.cancelled().await;
        if let Some(addr) = &local_addr {
            crate::fanout::unregister_local(addr);
        }
        background.cancel();
        let _ = flush_task.await;
        let _ = checkpoint_task.await;
        ready.set(false);
        if let Err(err) = lifecycler.set_state(InstanceState::Leaving).await {
            tracing::warn!(%err, "cannot set the ring state to LEAVING");
        }
        shutdown_flush(&ingester).await;
        if let Err(err) = lifecycler.leave().await {
            tracing::warn!(%err, "cannot leave the ring");
        }
        if let Err(err) = ingester.checkpoint().await {
            tracing::error!(%err, "final checkpoint failed; the wal will be replayed at start");
        }
        if let Some(wal) = &ingester.wal {
            wal.close().await;
        }
    };
    Ok(Role::new("ingester", router, stopped))
}

/// Flushes everything, retrying a few times: what cannot be stored stays in
/// the WAL for the next start.
async fn shutdown_flush(ingester: &Ingester) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        match ingester.flush(true).await {
            Ok(n) => {
                tracing::info!(chunks = n, "flushed all chunks");
                return;
            }
            Err(err) => {
                tracing::warn!(%err, attempt, "flush on shutdown failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::error!("could not flush every chunk; unflushed data stays in the wal");
}

async fn flush_loop(ingester: Arc<Ingester>, period: Duration, stop: Shutdown) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = ingester.flush(false).await {
            tracing::warn!(%err, "flush failed; retrying at the next check");
        }
    }
}

async fn checkpoint_loop(ingester: Arc<Ingester>, period: Duration, stop: Shutdown) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = ingester.checkpoint_wanted.notified() => {}
        }
        if let Err(err) = ingester.checkpoint().await {
            tracing::error!(%err, "checkpoint failed");
        }
    }
}

/// Runs the ingester on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}

/// About the bytes of the WAL record of `request` (a little more: the
/// record is built in one buffer that should not have to grow).
fn wal_record_capacity(tenant_id: &str, request: &PushRequest) -> usize {
    let entry = |e: &EntryAdapter| {
        let metadata: usize = e
            .structured_metadata
            .iter()
            .map(|p| p.name.len() + p.value.len() + 8)
            .sum();
        e.line.len() + metadata + 32
    };
    let streams: usize = request
        .streams
        .iter()
        .map(|s| s.labels.len() + 16 + s.entries.iter().map(entry).sum::<usize>())
        .sum();
    tenant_id.len() + 8 + streams
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_req(labels: &str, entries: &[(i64, &str)]) -> PushRequest {
        PushRequest {
            streams: vec![StreamAdapter {
                labels: labels.into(),
                entries: entries
                    .iter()
                    .map(|(ts, line)| {
                        EntryAdapter::from(Entry {
                            ts: *ts,
                            line: (*line).into(),
                            metadata: vec![("trace".into(), format!("t{ts}"))],
                        })
                    })
                    .collect(),
                hash: 0,
            }],
        }
    }

    async fn open(dir: &std::path::Path, config: &Config) -> Ingester {
        let store = ChunkStore::from_config(&config.storage, dir).unwrap();
        let metrics = Metrics::new(&lucia_common::metrics::Metrics::new());
        let mut ing = Ingester::new(config, "test".into(), store, metrics);
        let wal_dir = dir.join("wal");
        let fail = std::cell::RefCell::new(None);
        let replayed = crate::wal::replay(
            &wal_dir,
            |cp| {
                if let Err(e) = ing.restore_stream(cp) {
                    *fail.borrow_mut() = Some(e);
                }
            },
            |r| {
                if let Err(e) = ing.replay_record(r) {
                    *fail.borrow_mut() = Some(e);
                }
            },
        )
        .unwrap();
        assert_eq!(fail.into_inner(), None);
        ing.wal = Some(
            Wal::open(
                &wal_dir,
                replayed.next_segment,
                config.wal.fsync,
                ing.metrics.wal.clone(),
            )
            .unwrap(),
        );
        ing
    }

    fn all(ing: &Ingester, tenant: &str) -> Vec<(String, Vec<EntryAdapter>)> {
        let req = QueryRequest {
            selector: r#"{app=~".+"}"#.into(),
            start: 0,
            end: i64::MAX,
            limit: 0,
            direction: Direction::Forward as i32,
        };
        let mut out: Vec<(String, Vec<EntryAdapter>)> = Vec::new();
        for resp in ing.query(tenant, &req, 7).unwrap() {
            for s in resp.streams {
                match out.iter_mut().find(|(l, _)| *l == s.labels) {
                    Some((_, e)) => e.extend(s.entries),
                    None => out.push((s.labels, s.entries)),
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[tokio::test]
    async fn checkpoint_then_replay_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            chunk_block_size: 200,
            chunk_target_size: 300,
            ..Config::default()
        };
        let ing = open(dir.path(), &config).await;
        let a = r#"{app="a"}"#;
        let b = r#"{app="b"}"#;
        for i in 0..40 {
            let line = format!("line {i} {}", "x".repeat(i as usize));
            ing.push("t1", push_req(a, &[(1000 + i, &line)]))
                .await
                .unwrap();
            if i == 20 {
                ing.checkpoint().await.unwrap();
            }
        }
        ing.push("t2", push_req(b, &[(5, "other tenant")]))
            .await
            .unwrap();
        let before_t1 = all(&ing, "t1");
        let before_t2 = all(&ing, "t2");
        assert_eq!(before_t1[0].1.len(), 40);
        assert_eq!(before_t2[0].1.len(), 1);
        ing.wal.as_ref().unwrap().close().await;
        drop(ing);

        let ing = open(dir.path(), &config).await;
        assert_eq!(all(&ing, "t1"), before_t1);
        assert_eq!(all(&ing, "t2"), before_t2);
        // Checkpoint only, no segment records after it.
        ing.checkpoint().await.unwrap();
        ing.wal.as_ref().unwrap().close().await;
        drop(ing);
        let ing = open(dir.path(), &config).await;
        assert_eq!(all(&ing, "t1"), before_t1);
        ing.wal.as_ref().unwrap().close().await;
    }

    #[tokio::test]
    async fn push_errors_keep_accepted_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.limits.max_global_streams_per_user = 1;
        let ing = open(dir.path(), &config).await;
        let hour = 3600 * 1_000_000_000i64;
        let base = 10 * hour;
        ing.push("t", push_req(r#"{app="a"}"#, &[(base, "new")]))
            .await
            .unwrap();
        let err = ing
            .push(
                "t",
                push_req(
                    r#"{app="a"}"#,
                    &[(base - hour - 1, "old"), (base - 1, "ok")],
                ),
            )
            .await
            .unwrap_err();
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("entry too far behind"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("1 of 2 entries"),
            "{}",
            status.message()
        );

        let err = ing
            .push("t", push_req(r#"{app="b"}"#, &[(base, "x")]))
            .await
            .unwrap_err();
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("max_global_streams_per_user"));

        let got = all(&ing, "t");
        assert_eq!(got.len(), 1);
        let lines: Vec<&str> = got[0].1.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, vec!["ok", "new"]);
        ing.wal.as_ref().unwrap().close().await;
    }

    #[tokio::test]
    async fn flush_keeps_chunks_until_stored() {
        let dir = tempfile::tempdir().unwrap();
        let chunks_dir = dir.path().join("store");
        let mut config = Config::default();
        config.storage.filesystem.directory = Some(chunks_dir.clone());
        config.chunk_idle_period = ConfigDuration::from_secs(0);
        let ing = open(dir.path(), &config).await;
        ing.push("t", push_req(r#"{app="a"}"#, &[(1, "one"), (2, "two")]))
            .await
            .unwrap();

        // The store is broken: a file where its directory should be.
        std::fs::remove_dir_all(&chunks_dir).unwrap();
        std::fs::write(&chunks_dir, b"not a directory").unwrap();
        assert!(ing.flush(false).await.is_err());
        assert_eq!(all(&ing, "t")[0].1.len(), 2, "still served from memory");
        assert_eq!(ing.metrics.streams.get(), 1);

        std::fs::remove_file(&chunks_dir).unwrap();
        std::fs::create_dir(&chunks_dir).unwrap();
        assert_eq!(ing.flush(false).await.unwrap(), 1);
        assert!(all(&ing, "t").is_empty(), "dropped from memory once stored");
        assert_eq!(ing.metrics.streams.get(), 0);
        assert_eq!(ing.metrics.chunks_flushed.get(), 1);
        let index = ing.store.list_index("t", 0, 10).await.unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index[0].entries, 2);
        let chunk = ing.store.fetch_chunk(&index[0].key).await.unwrap();
        let lines: Vec<&str> = chunk.entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, vec!["one", "two"]);
        assert_eq!(
            chunk.entries[0].metadata,
            vec![("trace".to_string(), "t1".to_string())]
        );
        ing.wal.as_ref().unwrap().close().await;
    }

    #[test]
    fn limit_picks_newest_when_backward() {
        let mk = |ts: &[i64]| -> Vec<Entry> {
            ts.iter()
                .map(|t| Entry {
                    ts: *t,
                    line: String::new(),
                    metadata: vec![],
                })
                .collect()
        };
        let mut streams = vec![("a".into(), mk(&[1, 4, 6])), ("b".into(), mk(&[2, 3, 5]))];
        apply_limit(&mut streams, 3, true);
        let ts: Vec<Vec<i64>> = streams
            .iter()
            .map(|(_, e)| e.iter().map(|e| e.ts).collect())
            .collect();
        assert_eq!(ts, vec![vec![4, 6], vec![5]]);
        let mut streams = vec![("a".into(), mk(&[1, 4, 6])), ("b".into(), mk(&[2, 3, 5]))];
        apply_limit(&mut streams, 2, false);
        let ts: Vec<Vec<i64>> = streams
            .iter()
            .map(|(_, e)| e.iter().map(|e| e.ts).collect())
            .collect();
        assert_eq!(ts, vec![vec![1], vec![2]]);
    }
}
