//! Write-ahead log.
//!
//! The WAL directory holds numbered segments (`segment-00000007`) and
//! checkpoints (`checkpoint-00000007`: every stream's unflushed data as it was
//! just before segment 7 began). Both are sequences of records framed as
//! `[len u32 LE][crc32 u32 LE][payload]`. A segment record is a protobuf
//! [`WalRecord`]: the tenant and the entries accepted by one push, per stream.
//!
//! Durability (`wal.fsync`):
//! - `always` (default): a push is acknowledged only after its record has
//!   been written and fsynced. One writer thread takes every record waiting
//!   in its queue, writes them together and fsyncs once, so concurrent pushes
//!   share an fsync (group commit). Survives power loss.
//! - `never`: acknowledged once written to the OS (write(2)); survives a
//!   process crash, not a machine crash.
//!
//! Replay loads the newest checkpoint, then the segments from its number on.
//! A torn or corrupt record at the tail of the last segment (a crash during a
//! write) is truncated away with a warning; in an older segment the rest of
//! that segment is skipped with a warning.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use lucia_common::chunk::Entry;
use lucia_common::duration::ConfigDuration;
use lucia_proto::logproto::{EntryAdapter, StreamAdapter};
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

/// The ingester's `wal` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    pub enabled: bool,
    /// Defaults to `<data.dir>/wal`.
    pub dir: Option<std::path::PathBuf>,
    /// When a write is made durable before it is acknowledged.
    pub fsync: FsyncPolicy,
    /// How often a checkpoint of in-memory data is written so old segments
    /// can be deleted.
    pub checkpoint_duration: ConfigDuration,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            fsync: FsyncPolicy::Always,
            checkpoint_duration: ConfigDuration::from_secs(5 * 60),
        }
    }
}

/// `always`: every push is fsynced (grouped with concurrent pushes) before it
/// is acknowledged: survives power loss. `never`: written to the OS before
/// acknowledging: survives a process crash, not a machine crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Always,
    Never,
}

/// One push's accepted entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalRecord {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(message, repeated, tag = "2")]
    pub streams: Vec<StreamAdapter>,
}

/// A [`WalRecord`] encoded while the push is applied, straight from the
/// accepted entries: no copy of an entry is made for the WAL. The bytes
/// are exactly a `WalRecord` (replay decodes them as one).
pub struct RecordBuilder {
    buf: Vec<u8>,
    /// The current stream's encoded entries.
    entries: Vec<u8>,
    streams: usize,
}

fn len_field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn put_len_field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

impl RecordBuilder {
    pub fn new(tenant: &str) -> Self {
        let mut buf = Vec::new();
        if !tenant.is_empty() {
            put_len_field(&mut buf, 1, tenant.as_bytes());
        }
        Self {
            buf,
            entries: Vec::new(),
            streams: 0,
        }
    }

    /// Adds an accepted entry to the current stream.
    pub fn entry(&mut self, entry: &Entry) {
        let seconds = entry.ts.div_euclid(1_000_000_000);
        let nanos = entry.ts.rem_euclid(1_000_000_000);
        let mut ts_len = 0;
        if seconds != 0 {
            ts_len += 1 + encoded_len_varint(seconds as u64);
        }
        if nanos != 0 {
            ts_len += 1 + encoded_len_varint(nanos as u64);
        }
        let pair_len = |(name, value): &(String, String)| {
            len_field_len(name.len()) + len_field_len(value.len())
        };
        let len = len_field_len(ts_len)
            + len_field_len(entry.line.len())
            + entry
                .metadata
                .iter()
                .map(|pair| len_field_len(pair_len(pair)))
                .sum::<usize>();
        let out = &mut self.entries;
        out.reserve(len_field_len(len));
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(ts_len as u64, out);
        if seconds != 0 {
            encode_key(1, WireType::Varint, out);
            encode_varint(seconds as u64, out);
        }
        if nanos != 0 {
            encode_key(2, WireType::Varint, out);
            encode_varint(nanos as u64, out);
        }
        put_len_field(out, 2, entry.line.as_bytes());
        for pair in &entry.metadata {
            encode_key(3, WireType::LengthDelimited, out);
            encode_varint(pair_len(pair) as u64, out);
            put_len_field(out, 1, pair.0.as_bytes());
            put_len_field(out, 2, pair.1.as_bytes());
        }
    }

    /// Ends the current stream, if it got entries.
    pub fn end_stream(&mut self, labels: &str) {
        if self.entries.is_empty() {
            return;
        }
        let len = len_field_len(labels.len()) + self.entries.len();
        encode_key(2, WireType::LengthDelimited, &mut self.buf);
        encode_varint(len as u64, &mut self.buf);
        put_len_field(&mut self.buf, 1, labels.as_bytes());
        self.buf.extend_from_slice(&self.entries);
        self.entries.clear();
        self.streams += 1;
    }

    /// Whether no stream got entries.
    pub fn is_empty(&self) -> bool {
        self.streams == 0
    }

    /// The encoded record.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// One stream in a checkpoint.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointStream {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(string, tag = "2")]
    pub labels: String,
    #[prost(int64, tag = "3")]
    pub newest_ts: i64,
    /// Closed chunks first, the open chunk last.
    #[prost(message, repeated, tag = "4")]
    pub chunks: Vec<CheckpointChunk>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointChunk {
    #[prost(message, repeated, tag = "1")]
    pub blocks: Vec<CheckpointBlock>,
    #[prost(message, repeated, tag = "2")]
    pub head: Vec<EntryAdapter>,
    #[prost(int64, tag = "3")]
    pub created_at: i64,
    #[prost(int64, tag = "4")]
    pub last_append: i64,
    #[prost(bool, tag = "5")]
    pub closed: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointBlock {
    #[prost(uint32, tag = "1")]
    pub encoding: u32,
    #[prost(int64, tag = "2")]
    pub min_ts: i64,
    #[prost(int64, tag = "3")]
    pub max_ts: i64,
    #[prost(uint32, tag = "4")]
    pub count: u32,
    #[prost(uint32, tag = "5")]
    pub raw_len: u32,
    #[prost(bytes = "bytes", tag = "6")]
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "checkpoint {path} is corrupt at byte {offset}: move it out of the wal directory to start without it"
    )]
    CorruptCheckpoint { path: String, offset: usize },
    #[error("wal write failed: {0}")]
    Write(String),
    #[error("wal writer has stopped")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.display().to_string(),
        source,
    }
}

const HEADER: usize = 8;

fn frame_into(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits `data` into record payloads; the second value is the offset of the
/// first torn or corrupt record, if any.
fn read_frames(data: &[u8]) -> (Vec<&[u8]>, Option<usize>) {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let Some(header) = data.get(offset..offset + HEADER) else {
            return (out, Some(offset));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = data.get(offset + HEADER..offset + HEADER + len) else {
            return (out, Some(offset));
        };
        if crc32fast::hash(payload) != crc {
            return (out, Some(offset));
        }
        out.push(payload);
        offset += HEADER + len;
    }
    (out, None)
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("segment-{n:08}"))
}

fn checkpoint_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("checkpoint-{n:08}"))
}

/// The numbers of the files named `<prefix>-<n>` in `dir`, ascending.
fn numbered(dir: &Path, prefix: &str) -> Result<Vec<u64>, WalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Counters the writer updates.
#[derive(Clone, Default)]
pub struct WalMetrics {
    pub records: Counter,
    pub bytes: Counter,
    pub fsyncs: Counter,
}

/// What replay found.
pub struct Replayed {
    /// The segment number the writer should start at.
    pub next_segment: u64,
    pub records: usize,
    pub truncated: bool,
}

/// Reads the WAL in `dir`: the newest checkpoint's streams into
/// `on_checkpoint`, then every later segment record into `on_record`.
pub fn replay(
    dir: &Path,
    mut on_checkpoint: impl FnMut(CheckpointStream),
    mut on_record: impl FnMut(WalRecord),
) -> Result<Replayed, WalError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let checkpoint = numbered(dir, "checkpoint")?.last().copied();
    if let Some(n) = checkpoint {
        let path = checkpoint_path(dir, n);
        let data = std::fs::read(&path).map_err(io_err(&path))?;
        let (frames, bad) = read_frames(&data);
        if let Some(offset) = bad {
            return Err(WalError::CorruptCheckpoint {
                path: path.display().to_string(),
                offset,
            });
        }
        for frame in frames {
            match CheckpointStream::decode(frame) {
                Ok(stream) => on_checkpoint(stream),
                Err(_) => {
                    return Err(WalError::CorruptCheckpoint {
                        path: path.display().to_string(),
                        offset: 0,
                    });
                }
            }
        }
    }
    let segments: Vec<u64> = numbered(dir, "segment")?
        .into_iter()
        .filter(|n| checkpoint.is_none_or(|c| *n >= c))
        .collect();
    let mut out = Replayed {
        next_segment: segments.last().copied().or(checkpoint).map_or(1, |n| n + 1),
        records: 0,
        truncated: false,
    };
    for (i, n) in segments.iter().enumerate() {
        let path = segment_path(dir, *n);
        let data = std::fs::read(&path).map_err(io_err(&path))?;
        let (frames, bad) = read_frames(&data);
        let mut good_end = 0;
        let mut corrupt_at = bad;
        for frame in frames {
            match WalRecord::decode(frame) {
                Ok(record) => {
                    on_record(record);
                    out.records += 1;
                    good_end += HEADER + frame.len();
                }
                Err(_) => {
                    corrupt_at = Some(good_end);
                    break;
                }
            }
        }
        let Some(offset) = corrupt_at else { continue };
        if i + 1 == segments.len() {
            tracing::warn!(
                segment = %path.display(),
                offset,
                "torn or corrupt record at the end of the wal (crash during a write?): truncating"
            );
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| {
                    f.set_len(offset as u64)?;
                    f.sync_all()
                })
                .map_err(io_err(&path))?;
            out.truncated = true;
        } else {
            tracing::warn!(
                segment = %path.display(),
                offset,
                "corrupt record in a wal segment: skipping the rest of this segment"
            );
        }
    }
    Ok(out)
}

/// Writes a checkpoint of `streams` numbered `n` (tmp file, fsync, rename),
/// then deletes the segments and checkpoints it replaces.
pub fn write_checkpoint(
    dir: &Path,
    n: u64,
    streams: impl Iterator<Item = CheckpointStream>,
) -> Result<(), WalError> {
    let path = checkpoint_path(dir, n);
    let tmp = path.with_extension("tmp");
    let mut file = std::io::BufWriter::new(File::create(&tmp).map_err(io_err(&tmp))?);
    let mut buf = Vec::new();
    for stream in streams {
        buf.clear();
        frame_into(&mut buf, &stream.encode_to_vec());
        file.write_all(&buf).map_err(io_err(&tmp))?;
    }
    let file = file
        .into_inner()
        .map_err(|e| io_err(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    for old in numbered(dir, "segment")?.into_iter().filter(|s| *s < n) {
        let p = segment_path(dir, old);
        std::fs::remove_file(&p).map_err(io_err(&p))?;
    }
    for old in numbered(dir, "checkpoint")?.into_iter().filter(|s| *s < n) {
        let p = checkpoint_path(dir, old);
        std::fs::remove_file(&p).map_err(io_err(&p))?;
    }
    Ok(())
}

enum Command {
    Append(Vec<u8>, oneshot::Sender<Result<(), String>>),
    /// Starts a new segment; answers its number.
    Rotate(oneshot::Sender<Result<u64, String>>),
}

/// The WAL writer: a thread that appends records to the current segment.
pub struct Wal {
    tx: parking_lot::Mutex<Option<mpsc::UnboundedSender<Command>>>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    dir: PathBuf,
}

/// A pending acknowledgement of an appended record.
pub struct Ack(oneshot::Receiver<Result<(), String>>);

impl Ack {
    pub async fn wait(self) -> Result<(), WalError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WalError::Write(e)),
            Err(_) => Err(WalError::Closed),
        }
    }
}

impl Wal {
    /// Starts writing at segment `first` in `dir`.
    pub fn open(
        dir: &Path,
        first: u64,
        policy: FsyncPolicy,
        metrics: WalMetrics,
    ) -> Result<Self, WalError> {
        let (mut wal, writer) = Self::create(dir, first, policy, metrics)?;
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.0.run(writer.1))
            .map_err(io_err(dir))?;
        wal.thread = parking_lot::Mutex::new(Some(thread));
        Ok(wal)
    }

    /// The WAL and its writer, not yet running.
    fn create(
        dir: &Path,
        first: u64,
        policy: FsyncPolicy,
        metrics: WalMetrics,
    ) -> Result<(Self, (Writer, mpsc::UnboundedReceiver<Command>)), WalError> {
        let path = segment_path(dir, first);
        let file = open_segment(&path)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment: first,
            file,
            policy,
            metrics,
        };
        let wal = Self {
            tx: parking_lot::Mutex::new(Some(tx)),
            thread: parking_lot::Mutex::new(None),
            dir: dir.to_path_buf(),
        };
        Ok((wal, (writer, rx)))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a record; the returned ack resolves once it is durable.
    #[cfg(test)]
    pub fn append(&self, record: &WalRecord) -> Ack {
        self.append_encoded(record.encode_to_vec())
    }

    /// Queues an encoded [`WalRecord`] (from a [`RecordBuilder`]).
    pub fn append_encoded(&self, record: Vec<u8>) -> Ack {
        let (tx, rx) = oneshot::channel();
        // Once closed, `tx` is dropped here, so the ack reports `Closed`.
        if let Some(sender) = self.tx.lock().as_ref() {
            let _ = sender.send(Command::Append(record, tx));
        }
        Ack(rx)
    }

    /// Closes the current segment after every queued record and starts the
    /// next; returns the new segment's number.
    pub async fn rotate(&self) -> Result<u64, WalError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .lock()
            .as_ref()
            .ok_or(WalError::Closed)?
            .send(Command::Rotate(tx))
            .map_err(|_| WalError::Closed)?;
        match rx.await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(WalError::Write(e)),
            Err(_) => Err(WalError::Closed),
        }
    }

    /// Stops the writer once every queued record is written.
    pub async fn close(&self) {
        self.tx.lock().take();
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        if !matches!(
            tokio::task::spawn_blocking(move || thread.join()).await,
            Ok(Ok(()))
        ) {
            tracing::error!("wal writer thread panicked");
        }
    }
}

fn open_segment(path: &Path) -> Result<File, WalError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(file)
}

struct Writer {
    dir: PathBuf,
    segment: u64,
    file: File,
    policy: FsyncPolicy,
    metrics: WalMetrics,
}

/// Most records written per fsync, to bound a batch's memory.
const MAX_BATCH: usize = 4096;

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut buf = Vec::new();
        let mut acks = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(payload, ack) => {
                        frame_into(&mut buf, &payload);
                        acks.push(ack);
                    }
                    Command::Rotate(ack) => {
                        self.commit(&mut buf, &mut acks);
                        let _ = ack.send(self.rotate());
                    }
                }
                if acks.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut buf, &mut acks);
        }
    }

    /// Writes the batch, fsyncs per policy, and answers every waiter.
    fn commit(&mut self, buf: &mut Vec<u8>, acks: &mut Vec<oneshot::Sender<Result<(), String>>>) {
        if acks.is_empty() {
            return;
        }
        let mut result = self.file.write_all(buf);
        if result.is_ok() && self.policy == FsyncPolicy::Always {
            result = self.file.sync_data();
            self.metrics.fsyncs.inc();
        }
        let result = result.map_err(|e| {
            tracing::error!(segment = self.segment, err = %e, "wal write failed");
            format!("segment {}: {e}", self.segment)
        });
        if result.is_ok() {
            self.metrics.records.inc_by(acks.len() as u64);
            self.metrics.bytes.inc_by(buf.len() as u64);
        }
        for ack in acks.drain(..) {
            let _ = ack.send(result.clone());
        }
        buf.clear();
    }

    fn rotate(&mut self) -> Result<u64, String> {
        self.file.sync_all().map_err(|e| e.to_string())?;
        let next = self.segment + 1;
        self.file = open_segment(&segment_path(&self.dir, next)).map_err(|e| e.to_string())?;
        self.segment = next;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucia_proto::logproto::Timestamp;

    fn record(tenant: &str, line: &str) -> WalRecord {
        WalRecord {
            tenant: tenant.into(),
            streams: vec![StreamAdapter {
                labels: r#"{app="api"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1,
                        nanos: 2,
                    }),
                    line: line.into(),
                    structured_metadata: vec![],
                }],
                hash: 0,
            }],
        }
    }

    fn replay_all(dir: &Path) -> (Vec<CheckpointStream>, Vec<WalRecord>, Replayed) {
        let mut cps = Vec::new();
        let mut recs = Vec::new();
        let r = replay(dir, |c| cps.push(c), |r| recs.push(r)).unwrap();
        (cps, recs, r)
    }

    #[tokio::test]
    async fn group_commit_and_torn_tail_replay() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = WalMetrics::default();
        // Queue every record before the writer starts, so that they are all
        // pending together, as under concurrent pushes.
        let (wal, (writer, rx)) =
            Wal::create(dir.path(), 1, FsyncPolicy::Always, metrics.clone()).unwrap();
        let acks: Vec<Ack> = (0..50)
            .map(|i| wal.append(&record("t", &format!("line {i}"))))
            .collect();
        *wal.thread.lock() = Some(std::thread::spawn(move || writer.run(rx)));
        for ack in acks {
            ack.wait().await.unwrap();
        }
        assert_eq!(metrics.records.get(), 50);
        assert_eq!(metrics.fsyncs.get(), 1, "pending records share one fsync");
        wal.close().await;

        // A crash in the middle of a write leaves half a record behind.
        let seg = segment_path(dir.path(), 1);
        let full_len = std::fs::metadata(&seg).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        let mut torn = Vec::new();
        frame_into(&mut torn, &record("t", "torn").encode_to_vec());
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        drop(f);

        let (cps, recs, r) = replay_all(dir.path());
        assert!(cps.is_empty());
        assert_eq!(recs.len(), 50);
        assert_eq!(recs[49], record("t", "line 49"));
        assert!(r.truncated);
        assert_eq!(r.next_segment, 2);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), full_len);

        // A flipped byte in the last record is truncated too.
        let mut data = std::fs::read(&seg).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&seg, &data).unwrap();
        let (_, recs, r) = replay_all(dir.path());
        assert_eq!(recs.len(), 49);
        assert!(r.truncated);
        let (_, recs, r) = replay_all(dir.path());
        assert_eq!(recs.len(), 49, "replay after truncation is stable");
        assert!(!r.truncated);
    }

    #[test]
    fn record_builder_encodes_a_wal_record() {
        let entries = [
            Entry {
                ts: 1_700_000_000_123_456_789,
                line: "level=info hello".into(),
                metadata: vec![("detected_level".into(), "info".into())],
            },
            Entry {
                ts: -1_500_000_001,
                line: String::new(),
                metadata: vec![(String::new(), "x".into())],
            },
            Entry {
                ts: 0,
                line: "epoch".into(),
                metadata: vec![],
            },
        ];
        let mut builder = RecordBuilder::new("tenant-1");
        builder.end_stream("{empty=\"stream\"}");
        assert!(builder.is_empty());
        for e in &entries[..2] {
            builder.entry(e);
        }
        builder.end_stream(r#"{app="a"}"#);
        builder.entry(&entries[2]);
        builder.end_stream(r#"{app="b"}"#);
        assert!(!builder.is_empty());
        let decoded = WalRecord::decode(builder.finish().as_slice()).unwrap();
        let adapter = |e: &Entry| EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(e.ts)),
            line: e.line.clone(),
            structured_metadata: e
                .metadata
                .iter()
                .map(|(name, value)| lucia_proto::logproto::LabelPairAdapter {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        let expected = WalRecord {
            tenant: "tenant-1".into(),
            streams: vec![
                StreamAdapter {
                    labels: r#"{app="a"}"#.into(),
                    entries: entries[..2].iter().map(adapter).collect(),
                    hash: 0,
                },
                StreamAdapter {
                    labels: r#"{app="b"}"#.into(),
                    entries: vec![adapter(&entries[2])],
                    hash: 0,
                },
            ],
        };
        assert_eq!(decoded, expected);
        assert_eq!(
            RecordBuilder::new("").finish(),
            WalRecord::default().encode_to_vec()
        );
    }

    #[tokio::test]
    async fn checkpoint_replaces_older_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1, FsyncPolicy::Never, WalMetrics::default()).unwrap();
        wal.append(&record("t", "before")).wait().await.unwrap();
        let n = wal.rotate().await.unwrap();
        assert_eq!(n, 2);
        wal.append(&record("t", "after")).wait().await.unwrap();
        let stream = CheckpointStream {
            tenant: "t".into(),
            labels: r#"{app="api"}"#.into(),
            newest_ts: 5,
            chunks: vec![],
        };
        write_checkpoint(dir.path(), n, std::iter::once(stream.clone())).unwrap();
        wal.close().await;
        assert!(!segment_path(dir.path(), 1).exists());
        let (cps, recs, r) = replay_all(dir.path());
        assert_eq!(cps, vec![stream]);
        assert_eq!(recs, vec![record("t", "after")]);
        assert_eq!(r.next_segment, 3);
    }
}
