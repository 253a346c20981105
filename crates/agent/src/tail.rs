//! Tailing one file: appended lines, partial last lines, rotation by rename
//! and by copy-truncate (tracked by device and inode).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lucia_common::Shutdown;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::metrics::AgentMetrics;
use crate::positions::{FileId, Positions, fingerprint_at};
use crate::stages::{Entry, Pipeline};
use lucia_common::relabel::LabelMap;

/// An entry on its way to the clients, with where it came from so that its
/// position is recorded once it was acknowledged.
#[derive(Debug)]
pub struct Shipment {
    pub entry: Entry,
    pub source: Option<(Arc<str>, Option<FileId>)>,
}

fn file_id(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

const READ_BUFFER: usize = 64 * 1024;

/// A budget of read buffers shared by an agent's tailers: a tailer holds one
/// share from reading a chunk until its entries are queued.
#[derive(Clone)]
pub struct ReadBudget(Arc<tokio::sync::Semaphore>);

impl ReadBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(
            (bytes / READ_BUFFER).max(1),
        )))
    }
}

/// `limits_config` as applied to each line read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineLimits {
    /// Longer lines are dropped (counted), or truncated with `truncate`.
    pub max_line_size: Option<usize>,
    pub truncate: bool,
}

pub struct Tailer {
    path: Arc<str>,
    limits: LineLimits,
    labels: LabelMap,
    pipeline: Pipeline,
    tx: mpsc::Sender<Shipment>,
    positions: Positions,
    metrics: AgentMetrics,
    file: Option<tokio::fs::File>,
    id: Option<FileId>,
    /// Bytes of the current file consumed so far (including `partial`).
    offset: u64,
    partial: Vec<u8>,
    buf: Vec<u8>,
    out: Vec<Entry>,
    read_budget: ReadBudget,
}

/// Why a read loop stopped early.
struct Closed;

impl Tailer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &str,
        labels: LabelMap,
        pipeline: Pipeline,
        tx: mpsc::Sender<Shipment>,
        positions: Positions,
        metrics: AgentMetrics,
        limits: LineLimits,
        read_budget: ReadBudget,
    ) -> Self {
        Self {
            path: Arc::from(path),
            limits,
            labels,
            pipeline,
            tx,
            positions,
            metrics,
            file: None,
            id: None,
            offset: 0,
            partial: Vec::new(),
            buf: vec![0; READ_BUFFER],
            out: Vec::new(),
            read_budget,
        }
    }

    /// Follows the file until `stop` is cancelled, polling every `poll`.
    pub async fn run(mut self, stop: Shutdown, poll: Duration) {
        self.metrics.files_active.inc();
        let _ = self.run_inner(stop, poll).await;
        self.metrics.files_active.dec();
    }

    async fn run_inner(&mut self, stop: Shutdown, poll: Duration) -> Result<(), Closed> {
        if self.path.ends_with(".gz") {
            self.read_compressed().await?;
            stop.cancelled().await;
            return Ok(());
        }
        self.open_initial().await?;
        loop {
            self.read_available().await?;
            self.check_rotation().await?;
            self.pipeline.flush(Instant::now(), false, &mut self.out);
            self.send_out().await?;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        self.read_available().await?;
        self.pipeline.flush(Instant::now(), true, &mut self.out);
        self.send_out().await
    }

    async fn open_at(&mut self, path: &Path, offset: u64) -> bool {
        let mut file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(err) => {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %err, "cannot open file");
                }
                return false;
            }
        };
        let meta = match file.metadata().await {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot stat file");
                return false;
            }
        };
        let offset = if meta.len() < offset { 0 } else { offset };
        if offset > 0
            && let Err(err) = file.seek(std::io::SeekFrom::Start(offset)).await
        {
            tracing::warn!(path = %path.display(), %err, "cannot seek");
            return false;
        }
        self.file = Some(file);
        self.id = Some(file_id(&meta));
        self.offset = offset;
        self.partial.clear();
        true
    }

    async fn open_initial(&mut self) -> Result<(), Closed> {
        let path = Path::new(&*self.path).to_path_buf();
        let position = self.positions.get(&self.path);
        let current = std::fs::metadata(&path).ok().map(|m| file_id(&m));
        match position {
            Some(p) if p.file.is_some() && current.is_some() && p.file != current => {
                // Rotated while the agent was stopped: finish the old file
                // first if it is still in the same directory.
                if let Some(old) = p.file.and_then(|id| find_by_id(&path, id)) {
                    tracing::info!(path = %self.path, rotated = %old.display(), "reading the rest of a file rotated while stopped");
                    if self.open_at(&old, p.offset).await {
                        self.read_available().await?;
                        self.finish_partial().await?;
                    }
                }
                self.open_at(&path, 0).await;
            }
            Some(p)
                if p.file.is_some()
                    && p.file == current
                    && p.fingerprint.is_some()
                    && fingerprint_at(&path, p.offset) != p.fingerprint =>
            {
                // Copied and truncated while the agent was stopped (the
                // line before the position is not there any more): the
                // lines after the position are in the copy, if it is still
                // in the same directory.
                if let Some(copy) = p.fingerprint.and_then(|fp| find_copy(&path, p.offset, fp)) {
                    tracing::info!(path = %self.path, copy = %copy.display(), "reading the rest of a file copied and truncated while stopped");
                    if self.open_at(&copy, p.offset).await {
                        self.read_available().await?;
                        self.finish_partial().await?;
                    }
                } else {
                    tracing::warn!(path = %self.path, "file truncated while stopped and its copy not found: lines written before the truncation may be missing");
                }
                self.open_at(&path, 0).await;
            }
            Some(p) => {
                self.open_at(&path, p.offset).await;
            }
            None => {
                self.open_at(&path, 0).await;
            }
        }
        Ok(())
    }

    async fn check_rotation(&mut self) -> Result<(), Closed> {
        let path = Path::new(&*self.path).to_path_buf();
        let Ok(meta) = std::fs::metadata(&path) else {
            // Renamed or deleted, and not recreated yet: keep the old file.
            return Ok(());
        };
        let id = file_id(&meta);
        if self.file.is_none() {
            self.open_at(&path, 0).await;
        } else if Some(id) != self.id {
            // Rotated by rename: read the old file to its end, then follow
            // the new one from its start.
            self.read_available().await?;
            self.finish_partial().await?;
            tracing::debug!(path = %self.path, "file rotated");
            self.open_at(&path, 0).await;
            self.read_available().await?;
        } else if meta.len() < self.offset {
            tracing::debug!(path = %self.path, "file truncated");
            if let Some(file) = &mut self.file
                && let Err(err) = file.seek(std::io::SeekFrom::Start(0)).await
            {
                tracing::warn!(path = %self.path, %err, "cannot seek");
            }
            self.offset = 0;
            self.partial.clear();
            self.read_available().await?;
        }
        Ok(())
    }

    /// A rotated file will not grow: its unterminated last line is a line.
    /// A gzip-compressed file (`*.gz`, a rotated log) never grows: it is
    /// decompressed once, in memory, and its position counts decompressed
    /// bytes, so a restart resumes after the last acknowledged line.
    async fn read_compressed(&mut self) -> Result<(), Closed> {
        let path = std::path::PathBuf::from(&*self.path);
        self.id = std::fs::metadata(&path).ok().map(|m| file_id(&m));
        let resume = self.positions.get(&self.path).map_or(0, |p| p.offset);
        let decoded = tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let file = std::fs::File::open(&path)?;
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file))
                .read_to_end(&mut out)?;
            Ok::<_, std::io::Error>(out)
        })
        .await;
        let data = match decoded {
            Ok(Ok(data)) => data,
            Ok(Err(err)) => {
                tracing::warn!(path = %self.path, %err, "cannot decompress gzip file");
                return Ok(());
            }
            Err(err) => {
                tracing::warn!(path = %self.path, %err, "decompression task failed");
                return Ok(());
            }
        };
        self.metrics.read_bytes(&self.path, data.len() as u64);
        let base = usize::try_from(resume)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let mut line_start = base;
        let mut lines = 0u64;
        for i in memchr_iter(&data[base..]) {
            let end = base + i;
            self.emit_line(&data[line_start..end], (end + 1) as u64, true);
            line_start = end + 1;
            lines += 1;
            if self.out.len() >= 1024 {
                self.send_out().await?;
            }
        }
        if line_start < data.len() {
            self.emit_line(&data[line_start..], data.len() as u64, false);
            lines += 1;
        }
        self.metrics.read_lines(&self.path, lines);
        self.offset = data.len() as u64;
        self.send_out().await
    }

    async fn finish_partial(&mut self) -> Result<(), Closed> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit_line(&line, self.offset, false);
            self.send_out().await?;
        }
        Ok(())
    }

    async fn read_available(&mut self) -> Result<(), Closed> {
        loop {
            // Held until this chunk's entries are queued (or the loop ends).
            let Ok(_share) = self.read_budget.0.clone().acquire_owned().await else {
                return Err(Closed);
            };
            let Some(file) = &mut self.file else {
                return Ok(());
            };
            let n = match file.read(&mut self.buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(path = %self.path, %err, "read failed");
                    return Ok(());
                }
            };
            self.metrics.read_bytes(&self.path, n as u64);
            let chunk_start = self.offset;
            let mut start = 0;
            let mut lines = 0u64;
            let chunk = std::mem::take(&mut self.buf);
            for i in memchr_iter(&chunk[..n]) {
                let end = chunk_start + i as u64 + 1;
                if self.partial.is_empty() {
                    self.emit_line(&chunk[start..i], end, true);
                } else {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&chunk[start..i]);
                    self.emit_line(&line, end, true);
                }
                start = i + 1;
                lines += 1;
            }
            self.partial.extend_from_slice(&chunk[start..n]);
            self.buf = chunk;
            self.offset += n as u64;
            self.metrics.read_lines(&self.path, lines);
            self.send_out().await?;
        }
    }

    /// Runs one line read from the file through the pipeline; `end` is
    /// where it ends, `terminated` whether a newline followed it.
    fn emit_line(&mut self, line: &[u8], end: u64, terminated: bool) {
        let fingerprint = crate::positions::fingerprint(line, terminated);
        let mut line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(max) = self
            .limits
            .max_line_size
            .filter(|max| line.len() > *max && *max > 0)
        {
            if !self.limits.truncate {
                self.metrics
                    .dropped("", "line_too_long", 1, line.len() as u64);
                return;
            }
            line = &line[..max];
        }
        let mut entry = Entry::new(
            self.labels.clone(),
            lucia_common::time::now_nanos(),
            String::from_utf8_lossy(line).into_owned(),
        );
        entry.offset = end;
        entry.fingerprint = Some(fingerprint);
        self.pipeline.process(entry, &mut self.out);
    }

    async fn send_out(&mut self) -> Result<(), Closed> {
        if let Some(until) = self.pipeline.take_throttle() {
            // A `limit` stage without `drop`: slow reading down.
            tokio::time::sleep_until(until.into()).await;
        }
        for entry in self.out.drain(..) {
            let shipment = Shipment {
                entry,
                source: Some((self.path.clone(), self.id)),
            };
            // Blocks while the queue is full: back-pressure on reading.
            self.tx.send(shipment).await.map_err(|_| Closed)?;
        }
        Ok(())
    }
}

fn memchr_iter(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr_iter(b'\n', bytes)
}

/// The copy of `path` made by a copy-truncate rotation: a file in the same
/// directory (not `path` itself, not compressed) whose line ending at
/// `offset` has fingerprint `fp`; the most recently modified one if several.
fn find_copy(path: &Path, offset: u64, fp: u64) -> Option<std::path::PathBuf> {
    let dir = path.parent()?;
    let own = std::fs::metadata(path).ok().map(|m| file_id(&m));
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let candidate = e.path();
            let usable = meta.is_file()
                && Some(file_id(&meta)) != own
                && meta.len() >= offset
                && candidate.extension().is_none_or(|x| x != "gz");
            (usable && fingerprint_at(&candidate, offset) == Some(fp))
                .then(|| (meta.modified().ok(), candidate))
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, candidate)| candidate)
}

/// A file in `path`'s directory with the given device and inode.
fn find_by_id(path: &Path, id: FileId) -> Option<std::path::PathBuf> {
    let dir = path.parent()?;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let meta = e.metadata().ok()?;
        (meta.is_file() && file_id(&meta) == id).then(|| e.path())
    })
}
