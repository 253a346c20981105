//! Time-series storage: an in-memory head of XOR chunks behind a WAL, with
//! the series index, postings and persisted chunks in rocksdb.
//!
//! Write path: an append validates and hashes its series, then, under the
//! head lock, finds or creates each series (new ones go to the index),
//! applies the samples to the series' open XOR chunk, cuts full chunks (120
//! samples, or at a block boundary) into the `chunks` column family, and
//! queues one WAL record; it answers once the record is durable (fsync
//! policy, see [`lucia_common::wal`]).
//!
//! Blocks: time is split into 2 h blocks. Once the newest sample is an hour
//! (or the out-of-order window, if longer) past a block's end, the block is
//! compacted: its open chunks are cut, each series' chunks in the block are
//! merged into one immutable columnar chunk (`columnar.rs`), and samples
//! older than the block's end are refused from then on ("out of bounds").
//!
//! Retention: by time (relative to the newest sample, as Prometheus) and by
//! size (oldest blocks first); a rocksdb compaction filter drops expired
//! chunks and series without chunks leave the index.
//!
//! Crash safety: checkpoints (every `checkpoint_interval`) hold the head's
//! open chunks; rocksdb's own WAL is synced before older WAL segments are
//! deleted, so index entries and cut chunks survive too. Replay applies the
//! segments after the checkpoint; reads merge duplicate timestamps, so a
//! chunk cut again during replay does not double samples.

mod columnar;
mod keys;
mod postings;
mod records;
mod varint;
mod xor;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use lucia_common::wal::{self, FsyncPolicy, Wal, WalMetrics};
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

use crate::append::{AppendError, AppendReport, SampleAppender, SeriesSamples};
use crate::promql::{self, LabelMatcher, Labels, RawSeries, SeriesSource};
use keys::ChunkEncoding;
use records::SeriesState;
use xor::{XorAppender, XorIter};

/// Storage settings (Prometheus' `--storage.tsdb.*` flags and the
/// `storage.tsdb` section of its config file).
#[derive(Debug, Clone)]
pub struct StorageOptions {
    pub dir: PathBuf,
    /// Data older than the newest sample minus this is deleted.
    pub retention_time: Duration,
    /// Oldest blocks are deleted while the storage is larger (bytes).
    pub retention_size: Option<u64>,
    /// Samples this much older than the newest are still accepted.
    pub out_of_order_window: Duration,
    pub block_duration: Duration,
    pub fsync: FsyncPolicy,
    pub checkpoint_interval: Duration,
}

impl StorageOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            retention_time: Duration::from_secs(15 * 24 * 3600),
            retention_size: None,
            out_of_order_window: Duration::ZERO,
            block_duration: Duration::from_secs(2 * 3600),
            fsync: FsyncPolicy::Always,
            checkpoint_interval: Duration::from_secs(5 * 60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb at {path}: {source}")]
    Db {
        path: String,
        source: rocksdb::Error,
    },
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error("corrupt {what} in the index: restore the data directory from a backup or delete it")]
    Corrupt { what: &'static str },
    #[error("storage task failed: {0}")]
    Task(String),
}

fn db_err(path: &Path) -> impl FnOnce(rocksdb::Error) -> StorageError + '_ {
    move |source| StorageError::Db {
        path: path.display().to_string(),
        source,
    }
}

/// The storage's own metrics.
#[derive(Clone, Default)]
pub struct StorageMetrics {
    pub samples_appended: Counter,
    pub samples_rejected: Counter,
    pub series_created: Counter,
    pub head_series: Gauge,
    pub head_chunks_cut: Counter,
    pub compactions: Counter,
    /// Samples written into compacted blocks.
    pub block_samples: Counter,
    /// Bytes of the compacted blocks on disk.
    pub block_bytes: Gauge,
    pub checkpoints: Counter,
    pub wal: WalMetrics,
}

impl StorageMetrics {
    pub fn register(&self, registry: &lucia_common::metrics::Metrics) {
        registry.register(
            "prometheus_tsdb_head_samples_appended",
            "Samples appended to the head.",
            self.samples_appended.clone(),
        );
        registry.register(
            "lucia_tsdb_samples_rejected",
            "Samples refused (out of order, out of bounds, duplicate timestamp).",
            self.samples_rejected.clone(),
        );
        registry.register(
            "prometheus_tsdb_head_series_created",
            "Series created.",
            self.series_created.clone(),
        );
        registry.register(
            "prometheus_tsdb_head_series",
            "Series in the head.",
            self.head_series.clone(),
        );
        registry.register(
            "prometheus_tsdb_head_chunks_created",
            "Head chunks cut.",
            self.head_chunks_cut.clone(),
        );
        registry.register(
            "prometheus_tsdb_compactions",
            "Blocks compacted.",
            self.compactions.clone(),
        );
        registry.register(
            "lucia_tsdb_block_samples",
            "Samples written into compacted blocks.",
            self.block_samples.clone(),
        );
        registry.register(
            "lucia_tsdb_block_bytes",
            "Bytes of compacted blocks on disk (after rocksdb's zstd).",
            self.block_bytes.clone(),
        );
        registry.register(
            "prometheus_tsdb_checkpoint_creations",
            "WAL checkpoints written.",
            self.checkpoints.clone(),
        );
        registry.register(
            "prometheus_tsdb_wal_records",
            "WAL records written.",
            self.wal.records.clone(),
        );
        registry.register(
            "prometheus_tsdb_wal_bytes",
            "WAL bytes written.",
            self.wal.bytes.clone(),
        );
        registry.register(
            "prometheus_tsdb_wal_fsyncs",
            "WAL fsyncs.",
            self.wal.fsyncs.clone(),
        );
    }
}

/// One series in the head.
struct MemSeries {
    hash: u128,
    /// Newest timestamp ever appended (also after its chunk was cut).
    max_t: i64,
    chunk: XorAppender,
    /// Accepted out-of-order samples, sorted by time.
    ooo: Vec<(i64, f64)>,
    /// Chunks cut from this series since its block was last compacted. They
    /// are in the `chunks` family too; keeping them here (as Prometheus'
    /// head keeps its chunks) lets queries over recent data skip rocksdb.
    cut: Vec<MemChunk>,
}

/// A cut chunk held in memory until its block is compacted.
struct MemChunk {
    mint: i64,
    maxt: i64,
    encoding: ChunkEncoding,
    payload: Box<[u8]>,
}

impl MemChunk {
    fn overlaps(&self, start: i64, end: i64) -> bool {
        self.mint <= end && self.maxt >= start
    }

    fn decode_into(&self, out: &mut Vec<(i64, f64)>) -> Result<(), StorageError> {
        decode_payload(self.encoding, &self.payload, out)
    }
}

fn decode_payload(
    encoding: ChunkEncoding,
    payload: &[u8],
    out: &mut Vec<(i64, f64)>,
) -> Result<(), StorageError> {
    match encoding {
        ChunkEncoding::Xor => out.extend(XorIter::new(payload)),
        ChunkEncoding::Columnar => {
            out.extend(columnar::decode(payload).ok_or(StorageError::Corrupt { what: "chunk" })?)
        }
    }
    Ok(())
}

impl MemSeries {
    fn new(hash: u128) -> Self {
        Self {
            hash,
            max_t: i64::MIN,
            chunk: XorAppender::new(),
            ooo: Vec::new(),
            cut: Vec::new(),
        }
    }

    /// Keeps a chunk just written to the `chunks` family (unless the same
    /// span is held already: WAL replay cuts again what may have reached
    /// rocksdb before a crash).
    fn keep_cut(&mut self, mint: i64, maxt: i64, encoding: ChunkEncoding, payload: &[u8]) {
        if self.cut.iter().any(|c| c.mint == mint && c.maxt == maxt) {
            return;
        }
        let at = self.cut.partition_point(|c| c.mint <= mint);
        self.cut.insert(
            at,
            MemChunk {
                mint,
                maxt,
                encoding,
                payload: payload.into(),
            },
        );
    }
}

#[derive(Default)]
struct Head {
    series: HashMap<u64, MemSeries>,
    by_hash: HashMap<u128, u64>,
}

/// Why a sample was refused (Prometheus' messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    OutOfOrder,
    OutOfBounds,
    Duplicate,
}

impl Rejection {
    fn message(self) -> &'static str {
        match self {
            Rejection::OutOfOrder => "out of order sample",
            Rejection::OutOfBounds => "out of bounds",
            Rejection::Duplicate => "duplicate sample for timestamp",
        }
    }
}

pub struct Storage {
    db: DB,
    head: Mutex<Head>,
    /// The `postings` family in memory (see [`postings`]).
    postings: RwLock<postings::MemPostings>,
    /// Set once replay is done.
    wal: std::sync::OnceLock<Wal>,
    wal_dir: PathBuf,
    opts: StorageOptions,
    block_ms: i64,
    next_id: AtomicU64,
    /// Newest timestamp appended to any series.
    max_t: AtomicI64,
    /// Samples older than this are refused (compacted blocks).
    min_valid_t: AtomicI64,
    /// Chunks that end before this are expired (retention).
    retention_cutoff: Arc<AtomicI64>,
    chunk_seq: AtomicU32,
    checkpoint_lock: tokio::sync::Mutex<()>,
    pub metrics: StorageMetrics,
}

/// A series id and its samples.
type IdSamples = (u64, Vec<(i64, f64)>);

/// Reads persisted chunks of many series with one iterator per family.
struct ChunkReader<'a> {
    iters: [(&'static str, rocksdb::DBRawIterator<'a>); 2],
    block_ms: i64,
}

/// The length of the series prefix of a key in family `name`, and the key
/// of series `id` at time `t` to seek to.
fn series_seek(name: &str, id: u64, locality: u32, t: i64) -> (usize, Vec<u8>) {
    if name == keys::CF_BLOCKS {
        (
            keys::BLOCK_PREFIX,
            keys::block_key(locality, id, t, 0).to_vec(),
        )
    } else {
        (8, keys::chunk_key(id, t, 0).to_vec())
    }
}

impl ChunkReader<'_> {
    /// True when series `id` has a chunk ending at or after `from` (keys
    /// only: nothing is decoded).
    fn holds_any(&mut self, id: u64, locality: u32, from: i64) -> bool {
        self.iters.iter_mut().any(|(name, it)| {
            let (prefix_len, seek) = series_seek(name, id, locality, from);
            it.seek(&seek);
            it.valid() && it.key().and_then(|k| k.get(..prefix_len)) == seek.get(..prefix_len)
        })
    }

    /// Appends series `id`'s samples in `[start, end]` (its compacted
    /// chunks live under `locality`).
    fn read(
        &mut self,
        id: u64,
        locality: u32,
        start: i64,
        end: i64,
        out: &mut Vec<(i64, f64)>,
        mut keys_out: Option<&mut Vec<(&'static str, Vec<u8>)>>,
    ) -> Result<(), StorageError> {
        // Chunks never span blocks, so no chunk ending a block past `end`
        // can start before it.
        let stop = end.saturating_add(self.block_ms);
        for (name, it) in &mut self.iters {
            let (prefix_len, seek) = series_seek(name, id, locality, start);
            it.seek(&seek);
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                if k.get(..prefix_len) != seek.get(..prefix_len) {
                    break;
                }
                let maxt = keys::unsortable(&k[prefix_len..]).unwrap_or(i64::MAX);
                if maxt > stop {
                    break;
                }
                let Some((encoding, mint, payload)) = keys::decode_chunk_value(v) else {
                    return Err(StorageError::Corrupt { what: "chunk" });
                };
                if mint <= end && maxt >= start {
                    decode_payload(encoding, payload, out)?;
                    if let Some(keys_out) = keys_out.as_deref_mut() {
                        keys_out.push((*name, k.to_vec()));
                    }
                }
                it.next();
            }
        }
        Ok(())
    }
}

fn block_start(t: i64, block_ms: i64) -> i64 {
    t.div_euclid(block_ms) * block_ms
}

impl Storage {
    /// Opens (or creates) the storage in `opts.dir` and replays its WAL.
    pub fn open(opts: StorageOptions, metrics: StorageMetrics) -> Result<Arc<Self>, StorageError> {
        let db_dir = opts.dir.join("index");
        let wal_dir = opts.dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(|source| wal::WalError::Io {
            path: wal_dir.display().to_string(),
            source,
        })?;
        let retention_cutoff = Arc::new(AtomicI64::new(i64::MIN));
        let db = open_db(&db_dir, retention_cutoff.clone())?;
        let block_ms = (opts.block_duration.as_millis() as i64).max(60_000);
        let read_i64 = |key: &[u8]| -> Result<Option<i64>, StorageError> {
            let cf = cf(&db, keys::CF_META)?;
            Ok(db
                .get_cf(cf, key)
                .map_err(db_err(&db_dir))?
                .and_then(|v| keys::unsortable(&v)))
        };
        let next_id = read_i64(keys::META_NEXT_ID)?.unwrap_or(1).max(1) as u64;
        let min_valid_t = read_i64(keys::META_MIN_VALID)?.unwrap_or(i64::MIN);
        let postings = load_postings(&db, &db_dir)?;
        let storage = Self {
            db,
            head: Mutex::new(Head::default()),
            postings: RwLock::new(postings),
            wal: std::sync::OnceLock::new(),
            wal_dir: wal_dir.clone(),
            block_ms,
            next_id: AtomicU64::new(next_id),
            max_t: AtomicI64::new(i64::MIN),
            min_valid_t: AtomicI64::new(min_valid_t),
            retention_cutoff,
            chunk_seq: AtomicU32::new(1),
            checkpoint_lock: tokio::sync::Mutex::new(()),
            opts,
            metrics,
        };
        storage.replay()
    }

    fn wal(&self) -> Result<&Wal, StorageError> {
        self.wal
            .get()
            .ok_or(StorageError::Wal(wal::WalError::Closed))
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        cf(&self.db, name)
    }

    fn db_dir(&self) -> PathBuf {
        self.opts.dir.join("index")
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db
            .write_opt(batch, &wo)
            .map_err(db_err(&self.db_dir()))
    }

    /// Rebuilds the head from the newest checkpoint and the WAL segments
    /// after it, then starts the WAL writer after the last segment.
    fn replay(mut self) -> Result<Arc<Self>, StorageError> {
        struct Replay {
            head: Head,
            batch: WriteBatch,
            bad: Option<StorageError>,
            max_id: u64,
            max_t: i64,
        }
        let state = std::cell::RefCell::new(Replay {
            head: Head::default(),
            batch: WriteBatch::default(),
            bad: None,
            max_id: self.next_id.load(Ordering::Relaxed),
            max_t: i64::MIN,
        });
        let replayed = wal::replay(
            &self.wal_dir,
            |frame| {
                let Some(saved) = records::decode_state(frame) else {
                    return false;
                };
                let mut st = state.borrow_mut();
                st.max_id = st.max_id.max(saved.id + 1);
                st.max_t = st.max_t.max(saved.max_t);
                let mut s = MemSeries::new(saved.hash);
                s.max_t = saved.max_t;
                if !saved.open_chunk.is_empty() {
                    match XorAppender::from_bytes(&saved.open_chunk) {
                        Some(chunk) => s.chunk = chunk,
                        None => return false,
                    }
                }
                s.ooo = saved.ooo;
                st.head.by_hash.insert(saved.hash, saved.id);
                st.head.series.insert(saved.id, s);
                true
            },
            |frame| {
                let Some(record) = records::decode_append(frame) else {
                    return false;
                };
                let mut guard = state.borrow_mut();
                let st = &mut *guard;
                for (id, labels) in &record.new_series {
                    st.max_id = st.max_id.max(id + 1);
                    let hash = keys::series_hash(&record.tenant, labels);
                    if let Err(e) =
                        self.index_series(&mut st.batch, &record.tenant, labels, *id, hash)
                    {
                        st.bad = Some(e);
                    }
                    st.head.by_hash.insert(hash, *id);
                    st.head
                        .series
                        .entry(*id)
                        .or_insert_with(|| MemSeries::new(hash));
                }
                for &(id, t, v) in &record.samples {
                    st.max_t = st.max_t.max(t);
                    // A series the checkpoint left out (idle) comes back
                    // from the index.
                    if !st.head.series.contains_key(&id) {
                        match self.hash_of(id) {
                            Ok(Some(hash)) => {
                                st.head.by_hash.insert(hash, id);
                                st.head.series.insert(id, MemSeries::new(hash));
                            }
                            Ok(None) => continue,
                            Err(e) => {
                                st.bad = Some(e);
                                continue;
                            }
                        }
                    }
                    if let Some(s) = st.head.series.get_mut(&id) {
                        let mut cut = Vec::new();
                        let _ = apply_sample(s, t, v, i64::MIN, i64::MIN, self.block_ms, &mut cut);
                        for (mint, maxt, enc, bytes) in cut {
                            self.put_chunk(&mut st.batch, id, mint, maxt, enc, &bytes);
                        }
                    }
                }
                true
            },
        )?;
        let Replay {
            head,
            batch,
            bad,
            max_id,
            max_t,
        } = state.into_inner();
        if let Some(e) = bad {
            return Err(e);
        }
        self.write(batch)?;
        let mut head = head;
        self.load_cut_chunks(&mut head)?;
        self.next_id.store(max_id, Ordering::Relaxed);
        self.max_t.store(max_t, Ordering::Relaxed);
        self.metrics.head_series.set(head.series.len() as i64);
        *self.head.get_mut() = head;
        let wal = Wal::open(
            &self.wal_dir,
            replayed.next_segment,
            self.opts.fsync,
            self.metrics.wal.clone(),
        )?;
        let _ = self.wal.set(wal);
        if replayed.records > 0 {
            tracing::info!(
                records = replayed.records,
                series = self.head.lock().series.len(),
                "tsdb wal replayed"
            );
        }
        Ok(Arc::new(self))
    }

    /// Puts every chunk of the `chunks` family that is not compacted yet
    /// back into the head: after a restart, as before it, the head holds
    /// all of them, so reads at or after the compaction boundary never need
    /// rocksdb.
    fn load_cut_chunks(&self, head: &mut Head) -> Result<(), StorageError> {
        let min_valid = self.min_valid_t.load(Ordering::Relaxed);
        let mut it = self.db.raw_iterator_cf(self.cf(keys::CF_CHUNKS)?);
        it.seek_to_first();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let (Some(id), Some(maxt)) = (keys::id_from(k), k.get(8..).and_then(keys::unsortable))
            else {
                return Err(StorageError::Corrupt { what: "chunk key" });
            };
            if maxt >= min_valid {
                let Some((encoding, mint, payload)) = keys::decode_chunk_value(v) else {
                    return Err(StorageError::Corrupt { what: "chunk" });
                };
                if !head.series.contains_key(&id) {
                    // A series the checkpoint left out (no open chunk).
                    if let Some(hash) = self.hash_of(id)? {
                        head.by_hash.insert(hash, id);
                        head.series.insert(id, MemSeries::new(hash));
                    }
                }
                if let Some(s) = head.series.get_mut(&id) {
                    s.max_t = s.max_t.max(maxt);
                    s.keep_cut(mint, maxt, encoding, payload);
                }
            }
            it.next();
        }
        it.status().map_err(db_err(&self.db_dir()))?;
        Ok(())
    }

    /// The label hash of series `id`, from the index.
    fn hash_of(&self, id: u64) -> Result<Option<u128>, StorageError> {
        let Some(v) = self.series_value(id)? else {
            return Ok(None);
        };
        let (tenant, labels) =
            keys::decode_series(&v).ok_or(StorageError::Corrupt { what: "series" })?;
        Ok(Some(keys::series_hash(&tenant, &labels)))
    }

    fn index_series(
        &self,
        batch: &mut WriteBatch,
        tenant: &str,
        labels: &Labels,
        id: u64,
        hash: u128,
    ) -> Result<(), StorageError> {
        batch.put_cf(
            self.cf(keys::CF_SERIES)?,
            id.to_be_bytes(),
            keys::encode_series(tenant, labels),
        );
        let postings = self.cf(keys::CF_POSTINGS)?;
        batch.put_cf(postings, keys::postings_key(tenant, "", "", id), []);
        for (k, v) in labels {
            batch.put_cf(postings, keys::postings_key(tenant, k, v, id), []);
        }
        batch.put_cf(
            self.cf(keys::CF_LOOKUP)?,
            keys::lookup_key(tenant, hash),
            id.to_be_bytes(),
        );
        // Visible to queries before the batch lands: they skip ids whose
        // series entry they cannot read yet.
        self.postings.write().add(tenant, labels, id);
        Ok(())
    }

    fn put_chunk(
        &self,
        batch: &mut WriteBatch,
        id: u64,
        mint: i64,
        maxt: i64,
        encoding: ChunkEncoding,
        payload: &[u8],
    ) {
        let seq = self.chunk_seq.fetch_add(1, Ordering::Relaxed);
        if let (Ok(chunks), Ok(meta)) = (self.cf(keys::CF_CHUNKS), self.cf(keys::CF_META)) {
            batch.put_cf(
                chunks,
                keys::chunk_key(id, maxt, seq),
                keys::encode_chunk_value(encoding, mint, payload),
            );
            batch.put_cf(
                meta,
                keys::dirty_key(block_start(mint, self.block_ms), id),
                [],
            );
        }
        self.metrics.head_chunks_cut.inc();
    }

    /// Appends a batch for `tenant`; see [`SampleAppender`].
    pub async fn append_batch(
        &self,
        tenant: &str,
        batch: Vec<SeriesSamples>,
    ) -> Result<AppendReport, AppendError> {
        // Validation and hashing happen before the lock.
        let mut prepared = Vec::with_capacity(batch.len());
        for mut s in batch {
            s.labels.retain(|_, v| !v.is_empty());
            validate_labels(&s.labels)?;
            if s.samples.is_empty() {
                continue;
            }
            s.samples.sort_by_key(|x| x.0);
            let hash = keys::series_hash(tenant, &s.labels);
            prepared.push((hash, s));
        }
        let mut report = AppendReport::default();
        let ack = {
            let mut head = self.head.lock();
            let mut idx = WriteBatch::default();
            let mut new_series = Vec::new();
            let mut accepted = Vec::new();
            let min_valid = self.min_valid_t.load(Ordering::Relaxed);
            let ooo_window = self.opts.out_of_order_window.as_millis() as i64;
            let mut max_t = self.max_t.load(Ordering::Relaxed);
            for (hash, s) in prepared {
                let id = match head.by_hash.get(&hash) {
                    Some(id) => *id,
                    None => {
                        let id = match self.lookup(tenant, hash).map_err(storage_err)? {
                            Some(id) => id,
                            None => {
                                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                                self.index_series(&mut idx, tenant, &s.labels, id, hash)
                                    .map_err(storage_err)?;
                                new_series.push((id, s.labels.clone()));
                                report.series_created += 1;
                                id
                            }
                        };
                        head.by_hash.insert(hash, id);
                        head.series.insert(id, MemSeries::new(hash));
                        id
                    }
                };
                let Some(series) = head.series.get_mut(&id) else {
                    continue;
                };
                let mut cut = Vec::new();
                for (t, v) in s.samples {
                    let floor = max_t.saturating_sub(ooo_window);
                    let applied =
                        apply_sample(series, t, v, min_valid, floor, self.block_ms, &mut cut);
                    // A sample older than the series' newest may be a retry
                    // of one already stored: identical is not an error.
                    let applied = match applied {
                        Err(r @ (Rejection::OutOfOrder | Rejection::OutOfBounds)) => match self
                            .stored_value(id, series, &cut, t)
                            .map_err(storage_err)?
                        {
                            Some(bits) if bits == v.to_bits() => Ok(false),
                            Some(_) => Err(Rejection::Duplicate),
                            None => Err(r),
                        },
                        other => other,
                    };
                    match applied {
                        Ok(true) => {
                            accepted.push((id, t, v));
                            max_t = max_t.max(t);
                        }
                        Ok(false) => {}
                        Err(r) => {
                            report.rejected += 1;
                            if report.first_rejection.is_none() {
                                report.first_rejection = Some(format!(
                                    "{}: series {}, timestamp {t}",
                                    r.message(),
                                    labels_text(&s.labels)
                                ));
                            }
                        }
                    }
                }
                for (mint, maxt, enc, bytes) in cut {
                    self.put_chunk(&mut idx, id, mint, maxt, enc, &bytes);
                    series.keep_cut(mint, maxt, enc, &bytes);
                }
            }
            if !new_series.is_empty() {
                let next = self.next_id.load(Ordering::Relaxed) as i64;
                if let Ok(meta) = self.cf(keys::CF_META) {
                    idx.put_cf(meta, keys::META_NEXT_ID, keys::sortable(next));
                }
            }
            self.write(idx).map_err(storage_err)?;
            self.max_t.fetch_max(max_t, Ordering::Relaxed);
            report.appended = accepted.len();
            self.metrics.head_series.set(head.series.len() as i64);
            if accepted.is_empty() && new_series.is_empty() {
                None
            } else {
                Some(
                    self.wal()
                        .map_err(storage_err)?
                        .append_encoded(records::encode_append(tenant, &new_series, &accepted)),
                )
            }
        };
        if let Some(ack) = ack {
            ack.wait()
                .await
                .map_err(|e| AppendError::Storage(e.to_string()))?;
        }
        self.metrics.samples_appended.inc_by(report.appended as u64);
        self.metrics.samples_rejected.inc_by(report.rejected as u64);
        self.metrics
            .series_created
            .inc_by(report.series_created as u64);
        Ok(report)
    }

    /// The value bits stored for series `id` at `t`: in the head, in chunks
    /// cut by the append in progress, or persisted.
    fn stored_value(
        &self,
        id: u64,
        series: &MemSeries,
        cut: &[(i64, i64, ChunkEncoding, Vec<u8>)],
        t: i64,
    ) -> Result<Option<u64>, StorageError> {
        let find = |bytes: &[u8]| {
            XorIter::new(bytes)
                .find(|x| x.0 == t)
                .map(|x| x.1.to_bits())
        };
        if series.chunk.count() > 0
            && series.chunk.min_time() <= t
            && let Some(bits) = find(series.chunk.bytes())
        {
            return Ok(Some(bits));
        }
        if let Ok(i) = series.ooo.binary_search_by_key(&t, |x| x.0) {
            return Ok(Some(series.ooo[i].1.to_bits()));
        }
        for (mint, maxt, _, bytes) in cut {
            if *mint <= t
                && t <= *maxt
                && let Some(bits) = find(bytes)
            {
                return Ok(Some(bits));
            }
        }
        let mut found = Vec::new();
        for c in series.cut.iter().filter(|c| c.overlaps(t, t)) {
            c.decode_into(&mut found)?;
        }
        if let Some(x) = found.iter().rev().find(|x| x.0 == t) {
            return Ok(Some(x.1.to_bits()));
        }
        // Everything at or after the compaction boundary is in the head.
        if t >= self.min_valid_t.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let locality = self.locality_of(id)?;
        self.read_chunks(id, locality, t, t, &mut found, None)?;
        Ok(found.iter().rev().find(|x| x.0 == t).map(|x| x.1.to_bits()))
    }

    fn lookup(&self, tenant: &str, hash: u128) -> Result<Option<u64>, StorageError> {
        let cf = self.cf(keys::CF_LOOKUP)?;
        Ok(self
            .db
            .get_cf(cf, keys::lookup_key(tenant, hash))
            .map_err(db_err(&self.db_dir()))?
            .and_then(|v| keys::id_from(&v)))
    }

    /// A read view of one tenant's series.
    pub fn tenant(self: &Arc<Self>, tenant: &str) -> TenantReader {
        TenantReader {
            storage: self.clone(),
            tenant: tenant.to_string(),
        }
    }

    /// Newest sample time appended (ms), if any.
    pub fn max_time(&self) -> Option<i64> {
        let t = self.max_t.load(Ordering::Relaxed);
        (t != i64::MIN).then_some(t)
    }

    /// Series currently in the head.
    pub fn head_series(&self) -> usize {
        self.head.lock().series.len()
    }

    /// Compaction, retention and checkpointing, as due. The role calls this
    /// every minute; tests call it directly.
    pub async fn maintain(self: &Arc<Self>, force_checkpoint: bool) -> Result<(), StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.compact_due()?;
            this.apply_retention()
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))??;
        if force_checkpoint {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Rotates the WAL, snapshots the head, makes rocksdb durable and
    /// writes the checkpoint, deleting the segments it replaces.
    pub async fn checkpoint(self: &Arc<Self>) -> Result<(), StorageError> {
        let _one = self.checkpoint_lock.lock().await;
        let (rotated, states) = {
            let head = self.head.lock();
            let rotated = self.wal()?.rotate();
            let states: Vec<Vec<u8>> = head
                .series
                .iter()
                .filter(|(_, s)| s.chunk.count() > 0 || !s.ooo.is_empty())
                .map(|(id, s)| {
                    records::encode_state(&SeriesState {
                        id: *id,
                        hash: s.hash,
                        max_t: s.max_t,
                        open_chunk: if s.chunk.count() > 0 {
                            s.chunk.bytes().to_vec()
                        } else {
                            Vec::new()
                        },
                        ooo: s.ooo.clone(),
                    })
                })
                .collect();
            (rotated, states)
        };
        let n = rotated.await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.db.flush_wal(true).map_err(db_err(&this.db_dir()))?;
            wal::write_checkpoint(&this.wal_dir, n, states.into_iter())?;
            Ok::<_, StorageError>(())
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))??;
        self.metrics.checkpoints.inc();
        Ok(())
    }

    /// Compacts every block that ended at least the compaction delay before
    /// the newest sample.
    fn compact_due(&self) -> Result<(), StorageError> {
        let Some(max_t) = self.max_time() else {
            return Ok(());
        };
        let delay = (self.opts.out_of_order_window.as_millis() as i64).max(3_600_000);
        let upto = block_start(max_t.saturating_sub(delay), self.block_ms);
        if upto <= self.min_valid_t.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.compact_before(upto)
    }

    /// Closes the head's chunks before `upto` (a block boundary), refuses
    /// samples before it from now on, and rewrites every dirty block before
    /// it into columnar chunks.
    pub fn compact_before(&self, upto: i64) -> Result<(), StorageError> {
        {
            let mut head = self.head.lock();
            let mut batch = WriteBatch::default();
            let mut idle = Vec::new();
            for (id, s) in head.series.iter_mut() {
                if s.chunk.count() > 0 && s.chunk.max_time() < upto {
                    let bytes = s.chunk.bytes().to_vec();
                    self.put_chunk(
                        &mut batch,
                        *id,
                        s.chunk.min_time(),
                        s.chunk.max_time(),
                        ChunkEncoding::Xor,
                        &bytes,
                    );
                    s.chunk = XorAppender::new();
                }
                let split = s.ooo.partition_point(|x| x.0 < upto);
                if split > 0 {
                    let old: Vec<(i64, f64)> = s.ooo.drain(..split).collect();
                    for (mint, maxt, payload) in ooo_chunks(&old, self.block_ms) {
                        self.put_chunk(&mut batch, *id, mint, maxt, ChunkEncoding::Xor, &payload);
                    }
                }
                // Compacted below; reads before `upto` go to rocksdb.
                s.cut.retain(|c| c.maxt >= upto);
                if s.chunk.count() == 0
                    && s.ooo.is_empty()
                    && s.cut.is_empty()
                    && s.max_t < upto - self.block_ms
                {
                    idle.push(*id);
                }
            }
            for id in idle {
                if let Some(s) = head.series.remove(&id) {
                    head.by_hash.remove(&s.hash);
                }
            }
            self.metrics.head_series.set(head.series.len() as i64);
            let meta = self.cf(keys::CF_META)?;
            batch.put_cf(meta, keys::META_MIN_VALID, keys::sortable(upto));
            self.min_valid_t.fetch_max(upto, Ordering::Relaxed);
            self.write(batch)?;
        }
        // Rewrite dirty (block, series) pairs.
        let meta = self.cf(keys::CF_META)?;
        let blocks = self.cf(keys::CF_BLOCKS)?;
        let mut it = self.db.raw_iterator_cf(meta);
        it.seek([keys::META_DIRTY]);
        let mut batch = WriteBatch::default();
        let mut pending = 0;
        while it.valid() {
            let Some(key) = it.key() else { break };
            if key.first() != Some(&keys::META_DIRTY) || key.len() != 17 {
                break;
            }
            let (Some(block), Some(id)) = (keys::unsortable(&key[1..9]), keys::id_from(&key[9..]))
            else {
                break;
            };
            if block >= upto {
                break;
            }
            let block_end = block + self.block_ms;
            let mut samples = Vec::new();
            let mut old_keys = Vec::new();
            let locality = self.locality_of(id)?;
            self.read_chunks(
                id,
                locality,
                block,
                block_end - 1,
                &mut samples,
                Some(&mut old_keys),
            )?;
            for (cf_name, k) in &old_keys {
                batch.delete_cf(self.cf(cf_name)?, k);
            }
            let samples = merge_samples(samples, block, block_end - 1);
            self.metrics.block_samples.inc_by(samples.len() as u64);
            if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
                batch.put_cf(
                    blocks,
                    keys::block_key(locality, id, last.0, 0),
                    keys::encode_chunk_value(
                        ChunkEncoding::Columnar,
                        first.0,
                        &columnar::encode(&samples),
                    ),
                );
            }
            batch.delete_cf(meta, key);
            pending += 1;
            if pending >= 512 {
                self.write(std::mem::take(&mut batch))?;
                pending = 0;
            }
            it.next();
        }
        self.write(batch)?;
        self.db.flush_cf(blocks).map_err(db_err(&self.db_dir()))?;
        self.metrics.compactions.inc();
        self.update_block_bytes();
        Ok(())
    }

    fn update_block_bytes(&self) {
        if let Ok(blocks) = self.cf(keys::CF_BLOCKS)
            && let Ok(Some(bytes)) = self
                .db
                .property_int_value_cf(blocks, "rocksdb.total-sst-files-size")
        {
            self.metrics.block_bytes.set(bytes as i64);
        }
    }

    /// Moves the retention cutoff (time, then size) and drops what it
    /// passed: chunks through the compaction filter, series without chunks
    /// from the index.
    fn apply_retention(&self) -> Result<(), StorageError> {
        let Some(max_t) = self.max_time() else {
            return Ok(());
        };
        let mut cutoff = max_t.saturating_sub(self.opts.retention_time.as_millis() as i64);
        if let Some(limit) = self.opts.retention_size {
            let size = self.disk_size();
            if size > limit {
                // Drop the oldest block still held.
                if let Some(oldest) = self.oldest_time()? {
                    cutoff = cutoff.max(block_start(oldest, self.block_ms) + self.block_ms);
                }
            }
        }
        let cutoff = block_start(cutoff, self.block_ms);
        if cutoff <= self.retention_cutoff.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.retention_cutoff.store(cutoff, Ordering::Relaxed);
        // Samples before the cutoff are also refused.
        self.min_valid_t.fetch_max(cutoff, Ordering::Relaxed);
        for s in self.head.lock().series.values_mut() {
            s.cut.retain(|c| c.maxt >= cutoff);
        }
        for name in [keys::CF_CHUNKS, keys::CF_BLOCKS] {
            self.db
                .compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        self.update_block_bytes();
        self.collect_garbage_series()
    }

    /// Deletes series that have no chunk left and are not in the head.
    fn collect_garbage_series(&self) -> Result<(), StorageError> {
        let series_cf = self.cf(keys::CF_SERIES)?;
        let postings = self.cf(keys::CF_POSTINGS)?;
        let lookup = self.cf(keys::CF_LOOKUP)?;
        let cutoff = self.retention_cutoff.load(Ordering::Relaxed);
        let mut chunks = self.chunk_reader()?;
        let mut it = self.db.raw_iterator_cf(series_cf);
        it.seek_to_first();
        let mut batch = WriteBatch::default();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let Some(id) = keys::id_from(k) else {
                it.next();
                continue;
            };
            let in_head = self.head.lock().series.contains_key(&id);
            let decoded = keys::decode_series(v);
            let locality = decoded
                .as_ref()
                .map_or(0, |(tenant, labels)| keys::locality(tenant, labels));
            if !in_head && !chunks.holds_any(id, locality, cutoff) {
                if let Some((tenant, labels)) = decoded {
                    self.postings.write().remove(&tenant, &labels, id);
                    batch.delete_cf(postings, keys::postings_key(&tenant, "", "", id));
                    for (name, value) in &labels {
                        batch.delete_cf(postings, keys::postings_key(&tenant, name, value, id));
                    }
                    batch.delete_cf(
                        lookup,
                        keys::lookup_key(&tenant, keys::series_hash(&tenant, &labels)),
                    );
                }
                batch.delete_cf(series_cf, k);
            }
            it.next();
        }
        self.write(batch)
    }

    /// The oldest chunk time held, approximately (the first chunk key per
    /// series is its oldest; sampled over the first series).
    fn oldest_time(&self) -> Result<Option<i64>, StorageError> {
        let mut oldest: Option<i64> = None;
        let cutoff = self.retention_cutoff.load(Ordering::Relaxed);
        for name in [keys::CF_BLOCKS, keys::CF_CHUNKS] {
            // Across series: the whole key order, not the prefix index.
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_total_order_seek(true);
            let mut it = self.db.raw_iterator_cf_opt(self.cf(name)?, ro);
            it.seek_to_first();
            let mut seen = 0;
            while it.valid() && seen < 10_000 {
                if let Some(v) = it.value().and_then(keys::decode_chunk_value)
                    && v.1 >= cutoff
                {
                    oldest = Some(oldest.map_or(v.1, |o| o.min(v.1)));
                }
                seen += 1;
                it.next();
            }
        }
        Ok(oldest)
    }

    /// Bytes on disk: rocksdb's files plus the WAL.
    pub fn disk_size(&self) -> u64 {
        dir_size(&self.opts.dir)
    }

    /// Bytes of WAL segments and checkpoints.
    pub fn wal_size(&self) -> u64 {
        dir_size(&self.wal_dir)
    }

    /// Appends `id`'s samples in `[start, end]` from persisted chunks
    /// (blocks, then head chunks) to `out`; with `keys_out`, also the column
    /// family and key of each chunk read.
    fn read_chunks(
        &self,
        id: u64,
        locality: u32,
        start: i64,
        end: i64,
        out: &mut Vec<(i64, f64)>,
        keys_out: Option<&mut Vec<(&'static str, Vec<u8>)>>,
    ) -> Result<(), StorageError> {
        self.chunk_reader()?
            .read(id, locality, start, end, out, keys_out)
    }

    /// The locality of series `id`, from its labels in the index.
    fn locality_of(&self, id: u64) -> Result<u32, StorageError> {
        Ok(self
            .series_value(id)?
            .and_then(|v| keys::decode_series(&v))
            .map_or(0, |(tenant, labels)| keys::locality(&tenant, &labels)))
    }

    /// The `series` entry of `id` (tenant and labels, encoded).
    fn series_value(&self, id: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let cf = self.cf(keys::CF_SERIES)?;
        self.db
            .get_cf(cf, id.to_be_bytes())
            .map_err(db_err(&self.db_dir()))
    }

    /// Iterators over both chunk families, to reuse across many series.
    /// They seek within one series (the 8-byte id prefix), so the prefix
    /// bloom filters skip the files that hold nothing of it.
    fn chunk_reader(&self) -> Result<ChunkReader<'_>, StorageError> {
        let within_series = || {
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_prefix_same_as_start(true);
            ro
        };
        let blocks = self.cf(keys::CF_BLOCKS)?;
        let chunks = self.cf(keys::CF_CHUNKS)?;
        Ok(ChunkReader {
            iters: [
                (
                    keys::CF_BLOCKS,
                    self.db.raw_iterator_cf_opt(blocks, within_series()),
                ),
                (
                    keys::CF_CHUNKS,
                    self.db.raw_iterator_cf_opt(chunks, within_series()),
                ),
            ],
            block_ms: self.block_ms,
        })
    }

    /// Series ids of `tenant` that match every matcher, sorted.
    fn match_ids(&self, tenant: &str, matchers: &[LabelMatcher]) -> Vec<u64> {
        self.postings.read().select(tenant, matchers)
    }

    /// Label sets of `ids` (in order; `None` for an id not in the index):
    /// from the in-memory index, or from rocksdb for any it lacks.
    fn labels_of_many(&self, ids: &[u64]) -> Result<Vec<Option<Labels>>, StorageError> {
        let mut out: Vec<Option<Labels>> = {
            let postings = self.postings.read();
            ids.iter().map(|&id| postings.labels(id)).collect()
        };
        let missing: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let cf = self.cf(keys::CF_SERIES)?;
        let keys: Vec<[u8; 8]> = missing.iter().map(|&i| ids[i].to_be_bytes()).collect();
        for (&i, r) in missing
            .iter()
            .zip(self.db.batched_multi_get_cf(cf, &keys, false))
        {
            if let Some(v) = r.map_err(db_err(&self.db_dir()))? {
                out[i] = Some(
                    keys::decode_series(&v)
                        .ok_or(StorageError::Corrupt { what: "series" })?
                        .1,
                );
            }
        }
        Ok(out)
    }

    /// Every sample of series `ids` in `[start, end]`, head and persisted,
    /// merged; series without samples are left out.
    fn read_series(
        &self,
        ids: &[(u64, u32)],
        start: i64,
        end: i64,
    ) -> Result<Vec<IdSamples>, StorageError> {
        let start = start.max(self.retention_cutoff.load(Ordering::Relaxed));
        // Copy the head's part first, and read the compaction boundary with
        // it: the head holds every chunk at or after the boundary, so
        // rocksdb is read only before it. A chunk compacted after this copy
        // is then read twice (merged), never missed.
        let mut from_head: HashMap<u64, Vec<(i64, f64)>> = HashMap::new();
        let boundary = {
            let head = self.head.lock();
            for (id, _) in ids {
                let Some(s) = head.series.get(id) else {
                    continue;
                };
                let mut v = Vec::new();
                for c in s.cut.iter().filter(|c| c.overlaps(start, end)) {
                    c.decode_into(&mut v)?;
                }
                if s.chunk.count() > 0 && s.chunk.max_time() >= start && s.chunk.min_time() <= end {
                    v.extend(XorIter::new(s.chunk.bytes()));
                }
                v.extend(s.ooo.iter().filter(|x| x.0 >= start && x.0 <= end));
                if !v.is_empty() {
                    from_head.insert(*id, v);
                }
            }
            self.min_valid_t.load(Ordering::Relaxed)
        };
        let mut out = Vec::with_capacity(ids.len());
        let mut reader = if start < boundary {
            Some(self.chunk_reader()?)
        } else {
            None
        };
        let disk_end = end.min(boundary.saturating_sub(1));
        for (id, locality) in ids {
            let mut samples = Vec::new();
            if let Some(reader) = reader.as_mut() {
                reader.read(*id, *locality, start, disk_end, &mut samples, None)?;
            }
            if let Some(h) = from_head.remove(id) {
                if samples.is_empty() {
                    samples = h;
                } else {
                    samples.extend(h);
                }
            }
            let samples = merge_samples(samples, start, end);
            if !samples.is_empty() {
                out.push((*id, samples));
            }
        }
        Ok(out)
    }

    /// Closes the WAL after every queued record (shutdown). The head stays
    /// in the WAL; the next start replays it.
    pub async fn close(self: &Arc<Self>) -> Result<(), StorageError> {
        self.checkpoint().await?;
        self.wal()?.close().await;
        Ok(())
    }
}

fn storage_err(e: StorageError) -> AppendError {
    AppendError::Storage(e.to_string())
}

fn labels_text(labels: &Labels) -> String {
    if labels.is_empty() {
        return "(existing)".into();
    }
    promql::DisplayLabels(labels).to_string()
}

/// Applies one sample to a head series. `Ok(true)` when stored, `Ok(false)`
/// for an exact duplicate (same time, same value bits), `Err` when refused.
/// `min_valid` refuses anything older (compacted blocks); `ooo_floor` is the
/// oldest time accepted out of order (`i64::MIN` during replay, where every
/// sample was accepted once). Cut chunks are pushed to `cut` as (mint, maxt,
/// encoding, bytes).
fn apply_sample(
    s: &mut MemSeries,
    t: i64,
    v: f64,
    min_valid: i64,
    ooo_floor: i64,
    block_ms: i64,
    cut: &mut Vec<(i64, i64, ChunkEncoding, Vec<u8>)>,
) -> Result<bool, Rejection> {
    if t < min_valid {
        return Err(Rejection::OutOfBounds);
    }
    if t > s.max_t {
        if s.chunk.count() > 0
            && (s.chunk.is_full()
                || block_start(t, block_ms) != block_start(s.chunk.min_time(), block_ms))
        {
            let done = std::mem::take(&mut s.chunk);
            cut.push((
                done.min_time(),
                done.max_time(),
                ChunkEncoding::Xor,
                done.bytes().to_vec(),
            ));
        }
        s.chunk.append(t, v);
        s.max_t = t;
        return Ok(true);
    }
    if t == s.max_t && s.chunk.count() > 0 && s.chunk.max_time() == t {
        return if s.chunk.last_value().to_bits() == v.to_bits() {
            Ok(false)
        } else {
            Err(Rejection::Duplicate)
        };
    }
    // Out of order.
    if t < ooo_floor {
        return Err(Rejection::OutOfOrder);
    }
    match s.ooo.binary_search_by_key(&t, |x| x.0) {
        Ok(i) => {
            if s.ooo[i].1.to_bits() == v.to_bits() {
                Ok(false)
            } else {
                Err(Rejection::Duplicate)
            }
        }
        Err(i) => {
            s.ooo.insert(i, (t, v));
            if s.ooo.len() >= xor::MAX_SAMPLES as usize {
                let old = std::mem::take(&mut s.ooo);
                for (mint, maxt, payload) in ooo_chunks(&old, block_ms) {
                    cut.push((mint, maxt, ChunkEncoding::Xor, payload));
                }
            }
            Ok(true)
        }
    }
}

/// Encodes sorted samples as XOR chunks that do not span blocks.
fn ooo_chunks(samples: &[(i64, f64)], block_ms: i64) -> Vec<(i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut chunk = XorAppender::new();
    for &(t, v) in samples {
        if chunk.count() > 0
            && (chunk.is_full()
                || block_start(t, block_ms) != block_start(chunk.min_time(), block_ms))
        {
            out.push((chunk.min_time(), chunk.max_time(), chunk.bytes().to_vec()));
            chunk = XorAppender::new();
        }
        chunk.append(t, v);
    }
    if chunk.count() > 0 {
        out.push((chunk.min_time(), chunk.max_time(), chunk.bytes().to_vec()));
    }
    out
}

/// Sorts by time, keeps `[start, end]`, and keeps the last of equal
/// timestamps (later sources win).
fn merge_samples(mut samples: Vec<(i64, f64)>, start: i64, end: i64) -> Vec<(i64, f64)> {
    samples.retain(|x| x.0 >= start && x.0 <= end);
    // One source in order (the common case) needs no sort.
    if samples.windows(2).all(|w| w[0].0 < w[1].0) {
        return samples;
    }
    samples.sort_by_key(|x| x.0);
    // `dedup_by` hands (later, kept earlier): the later value wins.
    samples.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            *kept = *later;
            true
        } else {
            false
        }
    });
    samples
}

/// Label names as Prometheus 2 accepts them; values without NUL (the index
/// key separator).
fn validate_labels(labels: &Labels) -> Result<(), AppendError> {
    if labels.is_empty() {
        return Err(AppendError::Invalid(
            "empty label set: a series needs at least __name__".into(),
        ));
    }
    for (name, value) in labels {
        let valid = !name.is_empty()
            && name.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            });
        if !valid {
            return Err(AppendError::Invalid(format!(
                "invalid label name {name:?}: names must match [a-zA-Z_][a-zA-Z0-9_]*"
            )));
        }
        if value.contains('\0') {
            return Err(AppendError::Invalid(format!(
                "invalid value of label {name}: NUL bytes are not allowed"
            )));
        }
        if name == promql::METRIC_NAME {
            let ok = value.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b == b':' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            });
            if !ok {
                return Err(AppendError::Invalid(format!(
                    "invalid metric name {value:?}: names must match [a-zA-Z_:][a-zA-Z0-9_:]*"
                )));
            }
        }
    }
    Ok(())
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The postings index in memory, from every entry of the `series` family.
fn load_postings(db: &DB, dir: &Path) -> Result<postings::MemPostings, StorageError> {
    let mut out = postings::MemPostings::default();
    let mut it = db.raw_iterator_cf(cf(db, keys::CF_SERIES)?);
    it.seek_to_first();
    while it.valid() {
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            break;
        };
        let (Some(id), Some((tenant, labels))) = (keys::id_from(k), keys::decode_series(v)) else {
            return Err(StorageError::Corrupt { what: "series" });
        };
        out.add(&tenant, &labels, id);
        it.next();
    }
    it.status().map_err(db_err(dir))?;
    Ok(out)
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StorageError> {
    db.cf_handle(name).ok_or(StorageError::Corrupt {
        what: "column family list",
    })
}

/// Decompressed chunk and block data kept for reads (filled only by reads,
/// so small installations never reach it). At 100,000 series a query over
/// every series reads about 100 MB of chunk blocks: with 48 MiB each such
/// query went back to the files (page-cache copies and block checksums),
/// with 256 MiB it takes half the time (1.33 s to 0.70 s for
/// `count({job="bench"})`, resident memory 360 to 425 MB).
const READ_CACHE_BYTES: usize = 256 << 20;

fn open_db(dir: &Path, cutoff: Arc<AtomicI64>) -> Result<DB, StorageError> {
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    // Memtables are the index's write buffer: keep them small, since the
    // head already holds recent samples in memory.
    db_opts.set_db_write_buffer_size(48 << 20);
    db_opts.set_max_background_jobs(2);
    db_opts.set_keep_log_file_num(3);
    let small = || {
        let mut o = Options::default();
        o.set_write_buffer_size(8 << 20);
        o.set_max_write_buffer_number(2);
        o.set_compression_type(rocksdb::DBCompressionType::Zstd);
        o
    };
    let mut chunk_opts = Options::default();
    chunk_opts.set_write_buffer_size(16 << 20);
    chunk_opts.set_max_write_buffer_number(2);
    // Head chunks are XOR-compressed already and live only until their
    // block is compacted; they are also what recent queries read, so they
    // are stored without zstd (no decompression on the read path).
    chunk_opts.set_compression_type(rocksdb::DBCompressionType::None);
    chunk_opts.set_bottommost_compression_type(rocksdb::DBCompressionType::None);
    let mut table = rocksdb::BlockBasedOptions::default();
    // Large blocks let zstd see many series' chunks at once; every read of
    // a series decompresses its whole block, so they stay moderate, and a
    // shared cache keeps the decompressed blocks of recent queries.
    table.set_block_size(64 << 10);
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(READ_CACHE_BYTES));
    // Reads seek within one series: a bloom filter on the 8-byte series id
    // prefix lets a seek skip every file without that series.
    table.set_bloom_filter(10.0, false);
    table.set_whole_key_filtering(false);
    chunk_opts.set_block_based_table_factory(&table);
    chunk_opts.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(8));
    chunk_opts.set_memtable_prefix_bloom_ratio(0.05);
    // `maxt` follows the series prefix: 8 bytes in `chunks`, 12 in `blocks`.
    let retention_filter = |cutoff: Arc<AtomicI64>, prefix: usize| {
        move |_level: u32, key: &[u8], _value: &[u8]| {
            let maxt = key
                .get(prefix..prefix + 8)
                .and_then(keys::unsortable)
                .unwrap_or(i64::MAX);
            if maxt < cutoff.load(Ordering::Relaxed) {
                rocksdb::compaction_filter::Decision::Remove
            } else {
                rocksdb::compaction_filter::Decision::Keep
            }
        }
    };
    let mut block_opts = chunk_opts.clone();
    block_opts.set_compression_type(rocksdb::DBCompressionType::Zstd);
    block_opts.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
    // Blocks are written once: spend more on compressing them.
    block_opts.set_compression_options(-14, 9, 0, 0);
    block_opts.set_bottommost_compression_options(-14, 9, 0, 0, true);
    block_opts.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(
        keys::BLOCK_PREFIX,
    ));
    block_opts.set_compaction_filter(
        "retention",
        retention_filter(cutoff.clone(), keys::BLOCK_PREFIX),
    );
    chunk_opts.set_compaction_filter("retention", retention_filter(cutoff, 8));
    let cfs = vec![
        ColumnFamilyDescriptor::new(keys::CF_SERIES, small()),
        ColumnFamilyDescriptor::new(keys::CF_POSTINGS, small()),
        ColumnFamilyDescriptor::new(keys::CF_LOOKUP, small()),
        ColumnFamilyDescriptor::new(keys::CF_CHUNKS, chunk_opts),
        ColumnFamilyDescriptor::new(keys::CF_BLOCKS, block_opts),
        ColumnFamilyDescriptor::new(keys::CF_META, small()),
    ];
    DB::open_cf_descriptors(&db_opts, dir, cfs).map_err(db_err(dir))
}

impl SampleAppender for Storage {
    fn append(
        &self,
        tenant: &str,
        batch: Vec<SeriesSamples>,
    ) -> impl Future<Output = Result<AppendReport, AppendError>> + Send {
        self.append_batch(tenant, batch)
    }
}

impl SampleAppender for Arc<Storage> {
    fn append(
        &self,
        tenant: &str,
        batch: Vec<SeriesSamples>,
    ) -> impl Future<Output = Result<AppendReport, AppendError>> + Send {
        self.as_ref().append_batch(tenant, batch)
    }
}

/// One tenant's series, for the PromQL engine and the metadata APIs.
#[derive(Clone)]
pub struct TenantReader {
    storage: Arc<Storage>,
    tenant: String,
}

fn source_err(e: StorageError) -> promql::Error {
    promql::Error::Source(e.to_string())
}

impl SeriesSource for TenantReader {
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<RawSeries>, promql::Error> {
        let ids = self.storage.match_ids(&self.tenant, matchers);
        // Label sets first: they give each series' locality.
        let labels = self.storage.labels_of_many(&ids).map_err(source_err)?;
        let mut known: HashMap<u64, Labels> = HashMap::with_capacity(ids.len());
        let mut wanted = Vec::with_capacity(ids.len());
        for (id, labels) in ids.iter().zip(labels) {
            if let Some(labels) = labels {
                wanted.push((*id, keys::locality(&self.tenant, &labels)));
                known.insert(*id, labels);
            }
        }
        // Series of one metric sit together in the blocks: read in that
        // order.
        wanted.sort_unstable_by_key(|&(id, locality)| (locality, id));
        let read = self
            .storage
            .read_series(&wanted, start_ms, end_ms)
            .map_err(source_err)?;
        Ok(read
            .into_iter()
            .filter_map(|(id, samples)| {
                known
                    .remove(&id)
                    .map(|labels| RawSeries { labels, samples })
            })
            .collect())
    }

    fn series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, promql::Error> {
        // Label sets only: a series counts when it has a sample in range.
        self.select(matchers, start_ms, end_ms)
            .map(|v| v.into_iter().map(|s| s.labels).collect())
    }

    fn label_names(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, promql::Error> {
        if !matchers.is_empty() {
            let mut names = BTreeSet::new();
            for labels in self.series(matchers, start_ms, end_ms)? {
                names.extend(labels.into_keys());
            }
            return Ok(names.into_iter().collect());
        }
        // Straight from the postings: one seek per name.
        let storage = &self.storage;
        let postings = storage.cf(keys::CF_POSTINGS).map_err(source_err)?;
        let tenant_prefix = keys::postings_prefix(&self.tenant, "", None);
        let base = &tenant_prefix[..tenant_prefix.len() - 1];
        let mut it = storage.db.raw_iterator_cf(postings);
        // Skip the all-postings entries (empty name).
        let mut seek = base.to_vec();
        seek.push(1);
        it.seek(&seek);
        let mut names = Vec::new();
        while it.valid() {
            let Some(k) = it.key() else { break };
            if !k.starts_with(base) {
                break;
            }
            let rest = &k[base.len()..];
            let Some(nul) = rest.iter().position(|&b| b == 0) else {
                break;
            };
            let Ok(name) = std::str::from_utf8(&rest[..nul]) else {
                break;
            };
            names.push(name.to_string());
            let mut next = base.to_vec();
            next.extend_from_slice(&rest[..nul]);
            next.push(1);
            it.seek(&next);
        }
        Ok(names)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, promql::Error> {
        if !matchers.is_empty() {
            let mut values = BTreeSet::new();
            for mut labels in self.series(matchers, start_ms, end_ms)? {
                if let Some(v) = labels.remove(name) {
                    values.insert(v);
                }
            }
            return Ok(values.into_iter().collect());
        }
        let storage = &self.storage;
        let postings = storage.cf(keys::CF_POSTINGS).map_err(source_err)?;
        let prefix = keys::postings_prefix(&self.tenant, name, None);
        let mut it = storage.db.raw_iterator_cf(postings);
        it.seek(&prefix);
        let mut values = Vec::new();
        while it.valid() {
            let Some(k) = it.key() else { break };
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            let Some(nul) = rest.iter().position(|&b| b == 0) else {
                break;
            };
            let Ok(value) = std::str::from_utf8(&rest[..nul]) else {
                break;
            };
            values.push(value.to_string());
            let mut next = prefix.clone();
            next.extend_from_slice(&rest[..nul]);
            next.push(1);
            it.seek(&next);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests;
