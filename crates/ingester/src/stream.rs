//! One stream in memory: a head block of raw entries, the open chunk's
//! compressed blocks, and closed chunks waiting to be flushed.

use std::sync::Arc;

use lucia_common::labels::Labels;

use lucia_common::chunk::{Block, ChunkEncoding, ChunkError, Entry};

use crate::wal::RecordBuilder;

/// The chunk parameters of [`crate::ingester::Config`] in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct ChunkParams {
    pub block_size: usize,
    pub target_size: usize,
    pub encoding: ChunkEncoding,
    pub zstd_level: i32,
    pub idle_ns: i64,
    pub max_age_ns: i64,
    pub ooo_window_ns: i64,
}

/// A chunk being filled or waiting to be flushed.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    /// Unique within the process; identifies the chunk once it is flushed.
    pub id: u64,
    pub blocks: Vec<Block>,
    /// Entries not yet compressed, in arrival order.
    pub head: Vec<Entry>,
    pub head_size: usize,
    pub compressed_size: usize,
    /// Wall-clock Unix nanoseconds of creation and of the last append.
    pub created_at: i64,
    pub last_append: i64,
}

impl Chunk {
    pub fn new(id: u64, now: i64) -> Self {
        Self {
            id,
            created_at: now,
            last_append: now,
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.head.is_empty()
    }

    /// Smallest and largest timestamp held, if any.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        let blocks = self.blocks.iter().map(|b| (b.min_ts, b.max_ts));
        let head = self.head.iter().map(|e| (e.ts, e.ts));
        blocks
            .chain(head)
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    }

    #[cfg(test)]
    pub fn entry_count(&self) -> usize {
        self.blocks.iter().map(|b| b.count as usize).sum::<usize>() + self.head.len()
    }

    /// Compresses the head block into a block.
    pub fn cut_block(
        &mut self,
        encoding: ChunkEncoding,
        zstd_level: i32,
    ) -> Result<(), ChunkError> {
        if self.head.is_empty() {
            return Ok(());
        }
        let block = Block::encode_with_level(std::mem::take(&mut self.head), encoding, zstd_level)?;
        self.head_size = 0;
        self.compressed_size += block.data.len();
        // Keep blocks ordered by time so readers can merge cheaply.
        let at = self.blocks.partition_point(|b| b.min_ts <= block.min_ts);
        self.blocks.insert(at, block);
        Ok(())
    }

    /// Every entry within [start, end), sorted by time.
    pub fn entries_in(&self, start: i64, end: i64) -> Result<Vec<Entry>, ChunkError> {
        let mut out = Vec::new();
        for b in &self.blocks {
            if b.max_ts < start || b.min_ts >= end {
                continue;
            }
            out.extend(
                b.decode()?
                    .into_iter()
                    .filter(|e| e.ts >= start && e.ts < end),
            );
        }
        out.extend(
            self.head
                .iter()
                .filter(|e| e.ts >= start && e.ts < end)
                .cloned(),
        );
        out.sort_by_key(|e| e.ts);
        Ok(out)
    }
}

/// Why an entry was not appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooFarBehind {
    pub ts: i64,
    pub cutoff: i64,
}

/// What [`Stream::append`] did with a batch.
#[derive(Debug, Default)]
pub struct Appended {
    pub accepted_count: usize,
    pub duplicates: usize,
    pub too_far_behind: Vec<TooFarBehind>,
}

#[derive(Debug)]
pub struct Stream {
    pub labels: Labels,
    pub labels_str: Arc<str>,
    /// The chunk being filled.
    pub open: Chunk,
    /// Cut chunks waiting for their flush to succeed; still queryable.
    pub closed: Vec<Chunk>,
    /// Newest timestamp ever accepted (`i64::MIN` before the first).
    pub newest_ts: i64,
    /// Timestamps of the open chunk's head, for the duplicate check of
    /// out-of-order entries; made at the first one.
    head_filter: Option<HeadFilter>,
}

/// A bitmap of hashed timestamps of the first `len` entries of the head
/// block of chunk `chunk`: an entry whose timestamp's bit is clear is not in
/// the head, so the duplicate check skips its scan of the head (a thousand
/// entries for 256 KiB of 250-byte lines).
#[derive(Debug)]
struct HeadFilter {
    chunk: u64,
    len: usize,
    bits: Box<[u64; HEAD_FILTER_WORDS]>,
}

/// 8,192 bits (1 KiB): about one false positive in nine with a thousand
/// entries in the head.
const HEAD_FILTER_WORDS: usize = 128;

impl HeadFilter {
    fn slot(ts: i64) -> (usize, u64) {
        let bit = ((ts as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 51) as usize;
        (bit / 64 % HEAD_FILTER_WORDS, 1 << (bit % 64))
    }

    fn insert(&mut self, ts: i64) {
        let (word, mask) = Self::slot(ts);
        self.bits[word] |= mask;
    }

    fn may_contain(&self, ts: i64) -> bool {
        let (word, mask) = Self::slot(ts);
        self.bits[word] & mask != 0
    }

    /// Brings the filter up to date with `chunk`'s head, which only grows
    /// at its end until it is taken (cut) or the chunk replaced.
    fn sync(&mut self, chunk: &Chunk) {
        if self.chunk != chunk.id || self.len > chunk.head.len() {
            self.bits.fill(0);
            self.chunk = chunk.id;
            self.len = 0;
        }
        for e in &chunk.head[self.len..] {
            self.insert(e.ts);
        }
        self.len = chunk.head.len();
    }
}

impl Stream {
    pub fn new(labels: Labels, labels_str: Arc<str>, chunk_id: u64, now: i64) -> Self {
        Self {
            labels,
            labels_str,
            open: Chunk::new(chunk_id, now),
            closed: Vec::new(),
            newest_ts: i64::MIN,
            head_filter: None,
        }
    }

    /// Whether an entry with this timestamp and line is already in the head
    /// block. Blocks already compressed are not searched: a retry arriving
    /// after a block cut is stored twice, as in Loki.
    fn is_duplicate(&mut self, entry: &Entry) -> bool {
        if entry.ts > self.newest_ts {
            return false;
        }
        let is_same = |e: &&Entry| e.ts == entry.ts && e.line == entry.line;
        let filter = self.head_filter.get_or_insert_with(|| HeadFilter {
            chunk: self.open.id,
            len: 0,
            bits: Box::new([0; HEAD_FILTER_WORDS]),
        });
        filter.sync(&self.open);
        (filter.may_contain(entry.ts) && self.open.head.iter().rev().any(|e| is_same(&e)))
            || self
                .closed
                .last()
                .is_some_and(|c| c.head.iter().any(|e| is_same(&e)))
    }

    /// Appends entries. With `check_window`, entries older than the
    /// out-of-order window behind the newest entry are rejected (replay skips
    /// the check: what is in the WAL was accepted once). Accepted entries
    /// are added to `wal`, when given. `next_id` gives ids to chunks cut
    /// here.
    pub fn append(
        &mut self,
        entries: Vec<Entry>,
        params: &ChunkParams,
        now: i64,
        check_window: bool,
        mut wal: Option<&mut RecordBuilder>,
        next_id: &mut dyn FnMut() -> u64,
    ) -> Result<Appended, ChunkError> {
        let mut out = Appended::default();
        for entry in entries {
            if check_window && self.newest_ts != i64::MIN {
                let cutoff = self.newest_ts.saturating_sub(params.ooo_window_ns);
                if entry.ts < cutoff {
                    out.too_far_behind.push(TooFarBehind {
                        ts: entry.ts,
                        cutoff,
                    });
                    continue;
                }
            }
            if self.is_duplicate(&entry) {
                out.duplicates += 1;
                continue;
            }
            self.newest_ts = self.newest_ts.max(entry.ts);
            if let Some(wal) = wal.as_deref_mut() {
                wal.entry(&entry);
            }
            out.accepted_count += 1;
            self.open.head_size += entry.size();
            self.open.head.push(entry);
            self.open.last_append = now;
            if self.open.head_size >= params.block_size {
                self.open.cut_block(params.encoding, params.zstd_level)?;
                if self.open.compressed_size >= params.target_size {
                    self.close_open(next_id(), now);
                }
            }
        }
        Ok(out)
    }

    fn close_open(&mut self, id: u64, now: i64) {
        let chunk = std::mem::replace(&mut self.open, Chunk::new(id, now));
        self.closed.push(chunk);
    }

    /// Closes the open chunk when it is idle, too old, or `force` is set, so
    /// that the flush picks it up.
    pub fn close_due(
        &mut self,
        params: &ChunkParams,
        now: i64,
        force: bool,
        next_id: &mut dyn FnMut() -> u64,
    ) -> Result<(), ChunkError> {
        if self.open.is_empty() {
            return Ok(());
        }
        let idle = now.saturating_sub(self.open.last_append) >= params.idle_ns;
        let old = now.saturating_sub(self.open.created_at) >= params.max_age_ns
            || self
                .open
                .bounds()
                .is_some_and(|(from, through)| through.saturating_sub(from) >= params.max_age_ns);
        if force || idle || old {
            self.open.cut_block(params.encoding, params.zstd_level)?;
            self.close_open(next_id(), now);
        }
        Ok(())
    }

    /// Forgets the closed chunks whose ids are in `flushed`.
    pub fn remove_flushed(&mut self, flushed: &[u64]) {
        self.closed.retain(|c| !flushed.contains(&c.id));
    }

    /// Whether the stream holds no data at all.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.closed.is_empty()
    }

    /// Smallest and largest timestamp held.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        self.closed
            .iter()
            .chain(std::iter::once(&self.open))
            .filter_map(Chunk::bounds)
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    }

    /// Clones of every chunk (cheap: blocks share their bytes), for queries
    /// and checkpoints to read outside the stream's lock.
    pub fn snapshot(&self) -> Vec<Chunk> {
        self.closed
            .iter()
            .chain(std::iter::once(&self.open))
            .filter(|c| !c.is_empty())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    fn params() -> ChunkParams {
        ChunkParams {
            block_size: 1024,
            target_size: 2048,
            encoding: ChunkEncoding::Zstd,
            zstd_level: 3,
            idle_ns: 30 * 60 * SEC,
            max_age_ns: 2 * 3600 * SEC,
            ooo_window_ns: 3600 * SEC,
        }
    }

    fn entry(ts: i64, line: &str) -> Entry {
        Entry {
            ts,
            line: line.into(),
            metadata: vec![],
        }
    }

    fn stream() -> Stream {
        let labels = Labels::from_pairs([("app", "api")]);
        let text: Arc<str> = labels.to_string().into();
        Stream::new(labels, text, 0, 0)
    }

    fn append(s: &mut Stream, entries: Vec<Entry>) -> Appended {
        append_logged(s, entries).0
    }

    /// Appends, returning the entries the WAL record got.
    fn append_logged(s: &mut Stream, entries: Vec<Entry>) -> (Appended, Vec<Entry>) {
        use prost::Message as _;
        let mut id = 1;
        let mut wal = RecordBuilder::new("t", 0);
        let out = s
            .append(entries, &params(), 0, true, Some(&mut wal), &mut || {
                id += 1;
                id
            })
            .unwrap();
        wal.end_stream("{}");
        let record = crate::wal::WalRecord::decode(wal.finish().as_slice()).unwrap();
        let logged = record
            .streams
            .into_iter()
            .flat_map(|s| s.entries)
            .map(|e| Entry {
                ts: e
                    .timestamp
                    .map_or(0, |t| t.seconds * SEC + i64::from(t.nanos)),
                line: e.line,
                metadata: vec![],
            })
            .collect();
        (out, logged)
    }

    #[test]
    fn out_of_order_window_and_duplicates() {
        let mut s = stream();
        let base = 10_000 * SEC;
        let out = append(
            &mut s,
            vec![entry(base, "a"), entry(base - 3599 * SEC, "late but ok")],
        );
        assert_eq!(out.accepted_count, 2);
        assert!(out.too_far_behind.is_empty());

        let (out, logged) = append_logged(
            &mut s,
            vec![
                entry(base - 3601 * SEC, "too late"),
                entry(base, "a"),
                entry(base, "b"),
                entry(base - 3599 * SEC, "late but ok"),
            ],
        );
        assert_eq!(
            out.accepted_count, 1,
            "only the new line at the same timestamp"
        );
        assert_eq!(logged, vec![entry(base, "b")]);
        assert_eq!(out.duplicates, 2);
        assert_eq!(
            out.too_far_behind,
            vec![TooFarBehind {
                ts: base - 3601 * SEC,
                cutoff: base - 3600 * SEC
            }]
        );
        let all = s.open.entries_in(i64::MIN, i64::MAX).unwrap();
        assert_eq!(
            all.iter().map(|e| e.line.as_str()).collect::<Vec<_>>(),
            vec!["late but ok", "a", "b"]
        );
    }

    #[test]
    fn duplicates_found_across_out_of_order_pushes_and_cuts() {
        let mut s = stream();
        let base = 10_000 * SEC;
        // Newest first, then older entries: every check below goes
        // through the head filter.
        let first: Vec<Entry> = (0..50)
            .rev()
            .map(|i| entry(base + i, &format!("line {i}")))
            .collect();
        assert_eq!(append(&mut s, first.clone()).accepted_count, 50);
        let out = append(&mut s, first);
        assert_eq!((out.accepted_count, out.duplicates), (0, 50));
        // Same timestamps, other lines: not duplicates.
        let other: Vec<Entry> = (0..50).map(|i| entry(base + i, "other")).collect();
        let out = append(&mut s, other);
        assert_eq!((out.accepted_count, out.duplicates), (50, 0));
        // Once the head is cut into a block, the filter starts over.
        s.open.cut_block(ChunkEncoding::Zstd, 3).unwrap();
        let out = append(&mut s, vec![entry(base + 1, "line 1")]);
        assert_eq!((out.accepted_count, out.duplicates), (1, 0));
        let out = append(&mut s, vec![entry(base + 1, "line 1")]);
        assert_eq!((out.accepted_count, out.duplicates), (0, 1));
        // A head restored without append (checkpoint) is covered too.
        let mut restored = stream();
        restored.newest_ts = base + 100;
        restored.open.head = vec![entry(base + 7, "seven")];
        let out = append(&mut restored, vec![entry(base + 7, "seven")]);
        assert_eq!(out.duplicates, 1);
    }

    #[test]
    fn blocks_and_chunks_are_cut_by_size() {
        let mut s = stream();
        let line = "x".repeat(100);
        // Lines of random-ish text so that compression keeps some size.
        let entries: Vec<Entry> = (0..2000)
            .map(|i| entry(i * SEC, &format!("{line} {}", i * 7_919 % 1_000_003)))
            .collect();
        append(&mut s, entries);
        assert!(!s.closed.is_empty(), "chunks cut at the target size");
        for chunk in &s.closed {
            assert!(chunk.compressed_size >= params().target_size);
            assert!(chunk.head.is_empty());
        }
        let mut total: usize = s.closed.iter().map(Chunk::entry_count).sum();
        total += s.open.entry_count();
        assert_eq!(total, 2000);
    }

    #[test]
    fn idle_chunk_is_closed() {
        let mut s = stream();
        append(&mut s, vec![entry(SEC, "a")]);
        let p = params();
        let mut id = 100;
        let mut next = || {
            id += 1;
            id
        };
        s.close_due(&p, p.idle_ns - 1, false, &mut next).unwrap();
        assert!(s.closed.is_empty());
        s.close_due(&p, p.idle_ns, false, &mut next).unwrap();
        assert_eq!(s.closed.len(), 1);
        assert!(s.open.is_empty());
        let closed_id = s.closed[0].id;
        s.remove_flushed(&[closed_id]);
        assert!(s.is_empty());
    }
}
