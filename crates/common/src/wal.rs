//! A segmented write-ahead log with group commit, used by the ingester
//! (log entries) and tsdb (samples); each defines its own record payloads.
//!
//! The WAL directory holds numbered segments (`segment-00000007`) and
//! checkpoints (`checkpoint-00000007`: the owner's state as it was just
//! before segment 7 began). Both are sequences of records framed as
//! `[len u32 LE][crc32 u32 LE][payload]`.
//!
//! Durability ([`FsyncPolicy`]):
//! - `always`: a write is acknowledged only after its record has been
//!   written and fsynced. One writer thread takes every record waiting in its
//!   queue, writes them together and fsyncs once, so concurrent writers share
//!   an fsync (group commit). Survives power loss.
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

use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

/// `always`: every push is fsynced (grouped with concurrent pushes) before it
/// is acknowledged: survives power loss. `never`: written to the OS before
/// acknowledging: survives a process crash, not a machine crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Always,
    Never,
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

/// Reads the WAL in `dir`: the newest checkpoint's records into
/// `on_checkpoint`, then every later segment record into `on_record`. Each
/// callback returns false when it cannot decode its record, which counts as
/// corruption at that record.
pub fn replay(
    dir: &Path,
    mut on_checkpoint: impl FnMut(&[u8]) -> bool,
    mut on_record: impl FnMut(&[u8]) -> bool,
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
            if !on_checkpoint(frame) {
                return Err(WalError::CorruptCheckpoint {
                    path: path.display().to_string(),
                    offset: 0,
                });
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
            if !on_record(frame) {
                corrupt_at = Some(good_end);
                break;
            }
            out.records += 1;
            good_end += HEADER + frame.len();
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

/// Writes a checkpoint of `records` numbered `n` (tmp file, fsync, rename),
/// then deletes the segments and checkpoints it replaces.
pub fn write_checkpoint(
    dir: &Path,
    n: u64,
    records: impl Iterator<Item = Vec<u8>>,
) -> Result<(), WalError> {
    let path = checkpoint_path(dir, n);
    let tmp = path.with_extension("tmp");
    let mut file = std::io::BufWriter::new(File::create(&tmp).map_err(io_err(&tmp))?);
    let mut buf = Vec::new();
    for record in records {
        buf.clear();
        frame_into(&mut buf, &record);
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

    /// Queues an encoded record; the returned ack resolves once it is
    /// durable (per the fsync policy).
    pub fn append_encoded(&self, record: Vec<u8>) -> Ack {
        let (tx, rx) = oneshot::channel();
        // Once closed, `tx` is dropped here, so the ack reports `Closed`.
        if let Some(sender) = self.tx.lock().as_ref() {
            let _ = sender.send(Command::Append(record, tx));
        }
        Ack(rx)
    }

    /// Closes the current segment after every record queued so far and
    /// starts the next; the future answers the new segment's number. The
    /// rotation is queued when this is called, not when the future is
    /// polled, so a caller can order it against its own appends under a
    /// lock without holding the lock across an await.
    pub fn rotate(&self) -> impl Future<Output = Result<u64, WalError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .as_ref()
            .is_some_and(|sender| sender.send(Command::Rotate(tx)).is_ok());
        async move {
            if !sent {
                return Err(WalError::Closed);
            }
            match rx.await {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) => Err(WalError::Write(e)),
                Err(_) => Err(WalError::Closed),
            }
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

    fn record(line: &str) -> Vec<u8> {
        format!("record {line}").into_bytes()
    }

    fn replay_all(dir: &Path) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Replayed) {
        let mut cps = Vec::new();
        let mut recs = Vec::new();
        let r = replay(
            dir,
            |c| {
                cps.push(c.to_vec());
                true
            },
            |r| {
                recs.push(r.to_vec());
                true
            },
        )
        .unwrap();
        (cps, recs, r)
    }

    #[tokio::test]
    async fn group_commit_and_torn_tail_replay() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = WalMetrics::default();
        // Queue every record before the writer starts, so that they are all
        // pending together, as under concurrent writers.
        let (wal, (writer, rx)) =
            Wal::create(dir.path(), 1, FsyncPolicy::Always, metrics.clone()).unwrap();
        let acks: Vec<Ack> = (0..50)
            .map(|i| wal.append_encoded(record(&format!("line {i}"))))
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
        frame_into(&mut torn, &record("torn"));
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        drop(f);

        let (cps, recs, r) = replay_all(dir.path());
        assert!(cps.is_empty());
        assert_eq!(recs.len(), 50);
        assert_eq!(recs[49], record("line 49"));
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

        // A record its owner cannot decode is treated as corruption too.
        let mut seen = 0;
        let r = replay(
            dir.path(),
            |_| true,
            |_| {
                seen += 1;
                seen < 10
            },
        )
        .unwrap();
        assert!(r.truncated);
        assert_eq!(r.records, 9);
    }

    #[tokio::test]
    async fn checkpoint_replaces_older_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1, FsyncPolicy::Never, WalMetrics::default()).unwrap();
        wal.append_encoded(record("before")).wait().await.unwrap();
        let n = wal.rotate().await.unwrap();
        assert_eq!(n, 2);
        wal.append_encoded(record("after")).wait().await.unwrap();
        write_checkpoint(dir.path(), n, std::iter::once(b"state".to_vec())).unwrap();
        wal.close().await;
        assert!(!segment_path(dir.path(), 1).exists());
        let (cps, recs, r) = replay_all(dir.path());
        assert_eq!(cps, vec![b"state".to_vec()]);
        assert_eq!(recs, vec![record("after")]);
        assert_eq!(r.next_segment, 3);
    }
}
