//! Entries, compressed blocks and the chunk object format.
//!
//! A block is a run of entries laid out in columns before compression:
//! entry count, delta-encoded timestamps, a layout byte, line lengths (only
//! when some line contains a newline), structured metadata, then the lines,
//! each ended by `\n`. Keeping timestamps apart from the text lets the
//! compressor see the lines as one text, as in a log file, and the deltas
//! shrink 8-byte timestamps to a byte or two. Newline-ended lines compress
//! ~5% better than a column of lengths, which is the fallback. The
//! `zstd-columns` encoding further regroups the lines by format ([`group`])
//! and splits them into text, numbers and hex ids ([`columns`]), each
//! compressed apart.
//!
//! Chunk object (what is PUT to the store), all integers varints unless noted:
//! `"LCK1"`, version u8, then tenant, labels (length-prefixed), from, through
//! (zigzag), block count, per block: encoding u8, min, max (zigzag), entry
//! count, raw length, data length; then the block data back to back, then a
//! crc32 (u32 LE) of everything before it.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{decode_varint, encode_varint};

mod columns;
mod group;

/// Block compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkEncoding {
    Zstd,
    /// The lines regrouped by format ([`group`]) and split into text,
    /// numbers and hex ids ([`columns`]), each compressed with zstd: the
    /// text at the configured level, the rest at level 1.
    #[serde(rename = "zstd-columns")]
    ZstdColumns,
    /// The first form of [`Self::ZstdColumns`], without regrouping: still
    /// read, no longer written by default.
    #[serde(skip_deserializing)]
    ZstdColumnsUngrouped,
    Snappy,
    None,
}

/// Default zstd level of [`ChunkEncoding::Zstd`] blocks. On genlogs' mixed
/// logs in 256 KiB blocks: level 3 gives 4.7x, 9 gives 5.4x at ~70 MB/s per
/// core, 12 gives 5.6x at half that speed (before `ZSTD_MIN_MATCH`, which
/// adds 2-8% to the ratio of levels 3 to 15).
/// `ingester.chunk_compression_level` overrides it.
pub const DEFAULT_ZSTD_LEVEL: i32 = 9;
/// Default zstd level of the text column of [`ChunkEncoding::ZstdColumns`]
/// blocks. On genlogs' mixed logs (one core, 256 KiB blocks): level 3
/// stores 5.58x at 2.1 ns per raw byte, 4 5.99x at 3.8, 5 6.17x at 4.0;
/// level 3 keeps the push path fast and still stores over 5x
/// (BENCHMARKS.md).
pub const DEFAULT_COLUMNS_LEVEL: i32 = 3;
/// Layout byte: lines ended by `\n` / lines with a column of lengths.
const LINES_NEWLINE: u8 = 0;
const LINES_LENGTHS: u8 = 1;
const MAGIC: &[u8; 4] = b"LCK1";
const VERSION: u8 = 1;

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix nanoseconds.
    pub ts: i64,
    pub line: String,
    /// Structured metadata (name, value).
    pub metadata: Vec<(String, String)>,
}

impl From<lucia_proto::logproto::EntryAdapter> for Entry {
    /// A missing timestamp is the epoch.
    fn from(e: lucia_proto::logproto::EntryAdapter) -> Self {
        Self {
            ts: e.timestamp.map_or(0, |t| t.unix_nanos()),
            line: e.line,
            metadata: e
                .structured_metadata
                .into_iter()
                .map(|p| (p.name, p.value))
                .collect(),
        }
    }
}

impl From<Entry> for lucia_proto::logproto::EntryAdapter {
    fn from(e: Entry) -> Self {
        Self {
            timestamp: Some(lucia_proto::logproto::Timestamp::from_unix_nanos(e.ts)),
            line: e.line,
            structured_metadata: e
                .metadata
                .into_iter()
                .map(|(name, value)| lucia_proto::logproto::LabelPairAdapter { name, value })
                .collect(),
        }
    }
}

impl Entry {
    /// Bytes this entry counts for towards the block size.
    pub fn size(&self) -> usize {
        self.line.len()
            + self
                .metadata
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk data is truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("chunk checksum mismatch: the object is corrupt")]
    Checksum,
    #[error("unknown chunk encoding {0}")]
    UnknownEncoding(u8),
    #[error("decompressing a block: {0}")]
    Decompress(String),
    #[error("compressing a block: {0}")]
    Compress(String),
}

impl ChunkEncoding {
    /// The zstd level used when none is configured.
    pub fn default_level(self) -> i32 {
        match self {
            Self::ZstdColumns | Self::ZstdColumnsUngrouped => DEFAULT_COLUMNS_LEVEL,
            _ => DEFAULT_ZSTD_LEVEL,
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Snappy => 1,
            Self::Zstd => 2,
            Self::ZstdColumnsUngrouped => 3,
            Self::ZstdColumns => 4,
        }
    }

    pub fn from_u8(value: u8) -> Result<Self, ChunkError> {
        match value {
            0 => Ok(Self::None),
            1 => Ok(Self::Snappy),
            2 => Ok(Self::Zstd),
            3 => Ok(Self::ZstdColumnsUngrouped),
            4 => Ok(Self::ZstdColumns),
            other => Err(ChunkError::UnknownEncoding(other)),
        }
    }
}

/// A compressed run of entries, sorted by time. Cloning is cheap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub encoding: ChunkEncoding,
    pub min_ts: i64,
    pub max_ts: i64,
    pub count: u32,
    pub raw_len: u32,
    pub data: Bytes,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, ChunkError> {
    decode_varint(buf).map_err(|_| ChunkError::Malformed("bad varint"))
}

fn get_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], ChunkError> {
    let len = get_varint(buf)? as usize;
    if buf.len() < len {
        return Err(ChunkError::Malformed("length beyond end"));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn get_string(buf: &mut &[u8]) -> Result<String, ChunkError> {
    String::from_utf8(get_bytes(buf)?.to_vec()).map_err(|_| ChunkError::Malformed("invalid utf-8"))
}

impl Block {
    /// Sorts `entries` by time (stable, so equal timestamps keep arrival
    /// order) and compresses them.
    pub fn encode(entries: Vec<Entry>, encoding: ChunkEncoding) -> Result<Self, ChunkError> {
        Self::encode_with_level(entries, encoding, encoding.default_level())
    }

    /// Like [`Self::encode`], with an explicit zstd level (ignored by the
    /// other encodings).
    pub fn encode_with_level(
        mut entries: Vec<Entry>,
        encoding: ChunkEncoding,
        zstd_level: i32,
    ) -> Result<Self, ChunkError> {
        entries.sort_by_key(|e| e.ts);
        let mut raw = Vec::with_capacity(entries.iter().map(|e| e.size() + 8).sum());
        encode_varint(entries.len() as u64, &mut raw);
        let mut prev = 0i64;
        for e in &entries {
            encode_varint(zigzag(e.ts.wrapping_sub(prev)), &mut raw);
            prev = e.ts;
        }
        // memchr: `str::contains(char)` walks the lines a char at a time.
        let with_lengths = entries
            .iter()
            .any(|e| memchr::memchr(b'\n', e.line.as_bytes()).is_some());
        if with_lengths {
            raw.push(LINES_LENGTHS);
            for e in &entries {
                encode_varint(e.line.len() as u64, &mut raw);
            }
        } else {
            raw.push(LINES_NEWLINE);
        }
        for e in &entries {
            encode_varint(e.metadata.len() as u64, &mut raw);
            for (name, value) in &e.metadata {
                put_bytes(&mut raw, name.as_bytes());
                put_bytes(&mut raw, value.as_bytes());
            }
        }
        let lines_start = raw.len();
        for e in &entries {
            raw.extend_from_slice(e.line.as_bytes());
            if !with_lengths {
                raw.push(b'\n');
            }
        }
        let data = compress(&raw, lines_start, encoding, zstd_level)?;
        Ok(Self {
            encoding,
            min_ts: entries.first().map_or(0, |e| e.ts),
            max_ts: entries.last().map_or(0, |e| e.ts),
            count: entries.len() as u32,
            raw_len: raw.len() as u32,
            data,
        })
    }

    /// The block's entries, sorted by time.
    pub fn decode(&self) -> Result<Vec<Entry>, ChunkError> {
        self.decode_filtered(None)
    }

    /// The block's entries whose line passes `filter`, sorted by time. Only
    /// kept entries are materialised, and a block whose lines cannot match
    /// at all ([`LineFilter::block_may_match`]) is skipped after one scan.
    pub fn decode_filtered(
        &self,
        filter: Option<&dyn LineFilter>,
    ) -> Result<Vec<Entry>, ChunkError> {
        let raw = decompress(&self.data, self.encoding, self.raw_len as usize)?;
        let mut buf = raw.as_slice();
        let n = get_varint(&mut buf)? as usize;
        if n > raw.len() {
            return Err(ChunkError::Malformed("entry count beyond block size"));
        }
        let mut ts = Vec::with_capacity(n);
        let mut prev = 0i64;
        for _ in 0..n {
            prev = prev.wrapping_add(unzigzag(get_varint(&mut buf)?));
            ts.push(prev);
        }
        let Some((&layout, rest)) = buf.split_first() else {
            return Err(ChunkError::Malformed("missing line layout"));
        };
        buf = rest;
        let mut lens = Vec::new();
        if layout == LINES_LENGTHS {
            lens.reserve(n);
            for _ in 0..n {
                lens.push(get_varint(&mut buf)? as usize);
            }
        } else if layout != LINES_NEWLINE {
            return Err(ChunkError::Malformed("unknown line layout"));
        }
        // Borrow the metadata; it is copied only for kept entries.
        let mut metadata: Vec<Vec<(&[u8], &[u8])>> = Vec::with_capacity(n);
        for _ in 0..n {
            let pairs = get_varint(&mut buf)? as usize;
            let mut md = Vec::with_capacity(pairs.min(64));
            for _ in 0..pairs {
                md.push((get_bytes(&mut buf)?, get_bytes(&mut buf)?));
            }
            metadata.push(md);
        }
        if let Some(filter) = filter
            && !filter.block_may_match(buf)
        {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(if filter.is_some() { 0 } else { n });
        for (i, (ts, metadata)) in ts.into_iter().zip(metadata).enumerate() {
            let (line, rest) = match lens.get(i) {
                Some(&len) if len <= buf.len() => buf.split_at(len),
                Some(_) => return Err(ChunkError::Malformed("line beyond end of block")),
                None => {
                    let end = memchr::memchr(b'\n', buf)
                        .ok_or(ChunkError::Malformed("line without its newline"))?;
                    (&buf[..end], &buf[end + 1..])
                }
            };
            buf = rest;
            let line = std::str::from_utf8(line)
                .map_err(|_| ChunkError::Malformed("invalid utf-8 in line"))?;
            if filter.is_some_and(|f| !f.matches(line)) {
                continue;
            }
            let metadata = metadata
                .into_iter()
                .map(|(name, value)| Ok((utf8(name)?, utf8(value)?)))
                .collect::<Result<Vec<_>, ChunkError>>()?;
            out.push(Entry {
                ts,
                line: line.to_string(),
                metadata,
            });
        }
        Ok(out)
    }
}

fn utf8(bytes: &[u8]) -> Result<String, ChunkError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ChunkError::Malformed("invalid utf-8"))
}

/// A predicate on log lines that decoding can apply before it allocates
/// anything (the leading line filters of a query).
pub trait LineFilter: Send + Sync {
    /// Whether any line of a block can match, given all its lines back to
    /// back (`\n`-separated, or concatenated when lines hold newlines).
    /// `false` skips the block; the default scans line by line.
    fn block_may_match(&self, _lines: &[u8]) -> bool {
        true
    }

    fn matches(&self, line: &str) -> bool;
}

fn compress(
    raw: &[u8],
    lines_start: usize,
    encoding: ChunkEncoding,
    zstd_level: i32,
) -> Result<Bytes, ChunkError> {
    match encoding {
        ChunkEncoding::None => Ok(Bytes::copy_from_slice(raw)),
        ChunkEncoding::Snappy => snap::raw::Encoder::new()
            .compress_vec(raw)
            .map(Bytes::from)
            .map_err(|e| ChunkError::Compress(e.to_string())),
        ChunkEncoding::Zstd => ZSTD.with(|state| {
            let mut state = state.borrow_mut();
            let state = &mut *state;
            state.compress(zstd_level, raw)?;
            // An exact-size copy: the block lives as long as its chunk, and
            // the output buffer has room for incompressible input (more
            // than the raw block).
            Ok(Bytes::copy_from_slice(&state.scratch))
        }),
        ChunkEncoding::ZstdColumns | ChunkEncoding::ZstdColumnsUngrouped => ZSTD.with(|state| {
            let grouped = encoding == ChunkEncoding::ZstdColumns;
            compress_columns(
                &mut state.borrow_mut(),
                raw,
                lines_start,
                zstd_level,
                grouped,
            )
        }),
    }
}

/// Data of the column encodings: the raw lengths of the block's head
/// (everything before the lines), text, numbers, hex ids and, when
/// `grouped`, line groups and a flags varint (bit 0: the last line had no
/// newline); then each part's zstd frame, length-prefixed. Grouped, a part
/// with nothing in it has no frame.
fn compress_columns(
    state: &mut ZstdState,
    raw: &[u8],
    lines_start: usize,
    zstd_level: i32,
    grouped: bool,
) -> Result<Bytes, ChunkError> {
    let (head, lines) = raw.split_at(lines_start.min(raw.len()));
    let mut columns = std::mem::take(&mut state.columns);
    columns.clear();
    let mut grouping = std::mem::take(&mut state.grouping);
    if grouped {
        group::regroup(lines, &mut grouping, &mut state.group_scratch, |record| {
            columns::split(record, &mut columns)
        });
    } else {
        columns::split(lines, &mut columns);
    }
    let mut out = std::mem::take(&mut state.out);
    out.clear();
    let all_parts = [
        (head, VALUES_ZSTD_LEVEL),
        (columns.text.as_slice(), zstd_level),
        (columns.numbers.as_slice(), VALUES_ZSTD_LEVEL),
        (columns.hex.as_slice(), VALUES_ZSTD_LEVEL),
        (grouping.kinds.as_slice(), VALUES_ZSTD_LEVEL),
    ];
    let parts = &all_parts[..if grouped { 5 } else { 4 }];
    for (part, _) in parts {
        encode_varint(part.len() as u64, &mut out);
    }
    if grouped {
        encode_varint(u64::from(grouping.unterminated), &mut out);
    }
    let result = parts.iter().try_for_each(|&(part, level)| {
        if grouped && part.is_empty() {
            return Ok(());
        }
        state.compress(level, part)?;
        put_bytes(&mut out, &state.scratch);
        Ok(())
    });
    // Exact size, as for zstd above.
    let data = Bytes::copy_from_slice(&out);
    state.columns = columns;
    state.grouping = grouping;
    state.out = out;
    result.map(|()| data)
}

/// The level of the [`ChunkEncoding::ZstdColumns`] columns other than the
/// text: numbers and hex ids gain little from searching harder (in a
/// prototype on genlogs' logs, level 5 made numbers 5% smaller than level
/// 1 and hex ids not at all), and the block's head is small.
const VALUES_ZSTD_LEVEL: i32 = 1;

/// Smallest match zstd looks for at the levels that search (3 to 15).
/// Their defaults (3 or 4 bytes) find many short matches in log text that
/// cost more to encode than the literals: on genlogs' mixed logs in 256 KiB
/// blocks, 6 makes level 9 5.29x instead of 4.90x at the same speed, and
/// level 6 4.98x at 1.4 times the speed of level 9 (`zstd -b`). Levels 1
/// and 2 already use 6; levels 16 and up (optimal parsing) keep theirs.
const ZSTD_MIN_MATCH: u32 = 6;

fn zstd_compressor(level: i32) -> Result<zstd::bulk::Compressor<'static>, ChunkError> {
    let mut compressor =
        zstd::bulk::Compressor::new(level).map_err(|e| ChunkError::Compress(e.to_string()))?;
    if (3..=15).contains(&level) {
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::MinMatch(ZSTD_MIN_MATCH))
            .map_err(|e| ChunkError::Compress(e.to_string()))?;
    }
    Ok(compressor)
}

/// A thread's zstd contexts (one per level in use) and buffers, reused.
#[derive(Default)]
struct ZstdState {
    contexts: Vec<(i32, zstd::bulk::Compressor<'static>)>,
    /// The last compressed output.
    scratch: Vec<u8>,
    columns: columns::Columns,
    grouping: group::Grouping,
    group_scratch: group::Scratch,
    /// A block's columns, put together.
    out: Vec<u8>,
}

impl ZstdState {
    /// Compresses `input` at `level` into `self.scratch`.
    fn compress(&mut self, level: i32, input: &[u8]) -> Result<(), ChunkError> {
        let index = match self.contexts.iter().position(|(l, _)| *l == level) {
            Some(index) => index,
            None => {
                self.contexts.push((level, zstd_compressor(level)?));
                self.contexts.len() - 1
            }
        };
        let compressor = &mut self.contexts[index].1;
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(input.len()));
        compressor
            .compress_to_buffer(input, &mut self.scratch)
            .map_err(|e| ChunkError::Compress(e.to_string()))?;
        Ok(())
    }
}

thread_local! {
    /// zstd contexts per thread, reused: creating one per block made the
    /// kernel zero fresh pages for its tables every time (a quarter of the
    /// push path's CPU in the profile).
    static ZSTD: std::cell::RefCell<ZstdState> = std::cell::RefCell::new(ZstdState::default());
}

fn decompress(data: &[u8], encoding: ChunkEncoding, raw_len: usize) -> Result<Vec<u8>, ChunkError> {
    let raw = match encoding {
        ChunkEncoding::None => data.to_vec(),
        ChunkEncoding::Snappy => snap::raw::Decoder::new()
            .decompress_vec(data)
            .map_err(|e| ChunkError::Decompress(e.to_string()))?,
        ChunkEncoding::Zstd => zstd_decompress(data, raw_len)?,
        ChunkEncoding::ZstdColumns => decompress_columns(data, raw_len, true)?,
        ChunkEncoding::ZstdColumnsUngrouped => decompress_columns(data, raw_len, false)?,
    };
    if raw.len() != raw_len {
        return Err(ChunkError::Malformed(
            "decompressed size differs from header",
        ));
    }
    Ok(raw)
}

fn zstd_decompress(data: &[u8], len: usize) -> Result<Vec<u8>, ChunkError> {
    let out =
        zstd::bulk::decompress(data, len).map_err(|e| ChunkError::Decompress(e.to_string()))?;
    if out.len() != len {
        return Err(ChunkError::Malformed("column size differs from its header"));
    }
    Ok(out)
}

/// Rebuilds a block from what [`compress_columns`] made.
fn decompress_columns(data: &[u8], raw_len: usize, grouped: bool) -> Result<Vec<u8>, ChunkError> {
    let mut buf = data;
    let mut lens = [0usize; 5];
    for len in lens.iter_mut().take(if grouped { 5 } else { 4 }) {
        *len = get_varint(&mut buf)? as usize;
    }
    let [head_len, text_len, numbers_len, hex_len, kinds_len] = lens;
    let unterminated = match grouped.then(|| get_varint(&mut buf)).transpose()? {
        None | Some(0) => false,
        Some(1) => true,
        Some(_) => return Err(ChunkError::Malformed("unknown column flags")),
    };
    // Bounds of what splitting the lines can produce, checked before
    // anything is allocated for them (grouping may add one newline).
    let lines_len = raw_len
        .checked_sub(head_len)
        .ok_or(ChunkError::Malformed("block head longer than the block"))?;
    if text_len > 2 * lines_len + 2
        || numbers_len > lines_len
        || hex_len > lines_len / 2 + 1
        || kinds_len > lines_len + 1
    {
        return Err(ChunkError::Malformed("column longer than its block allows"));
    }
    let mut part = |len: usize| -> Result<Vec<u8>, ChunkError> {
        if grouped && len == 0 {
            return Ok(Vec::new());
        }
        zstd_decompress(get_bytes(&mut buf)?, len)
    };
    let mut out = part(head_len)?;
    let columns = columns::Columns {
        text: part(text_len)?,
        numbers: part(numbers_len)?,
        hex: part(hex_len)?,
    };
    let kinds = if grouped {
        part(kinds_len)?
    } else {
        Vec::new()
    };
    let lines_start = out.len();
    out.reserve(lines_len + 1);
    columns::join(&columns, &mut out)?;
    if grouped {
        let grouping = group::Grouping {
            kinds,
            unterminated,
        };
        group::ungroup(&mut out, lines_start, &grouping)?;
    }
    Ok(out)
}

/// A chunk as stored: its identity and its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkData {
    pub tenant: String,
    pub labels: String,
    pub from: i64,
    pub through: i64,
    pub blocks: Vec<Block>,
}

impl ChunkData {
    /// The object bytes and their crc32.
    pub fn encode(&self) -> (Bytes, u32) {
        let data_len: usize = self.blocks.iter().map(|b| b.data.len()).sum();
        let mut out = Vec::with_capacity(data_len + 256 + self.labels.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_bytes(&mut out, self.tenant.as_bytes());
        put_bytes(&mut out, self.labels.as_bytes());
        encode_varint(zigzag(self.from), &mut out);
        encode_varint(zigzag(self.through), &mut out);
        encode_varint(self.blocks.len() as u64, &mut out);
        for b in &self.blocks {
            out.push(b.encoding.to_u8());
            encode_varint(zigzag(b.min_ts), &mut out);
            encode_varint(zigzag(b.max_ts), &mut out);
            encode_varint(u64::from(b.count), &mut out);
            encode_varint(u64::from(b.raw_len), &mut out);
            encode_varint(b.data.len() as u64, &mut out);
        }
        for b in &self.blocks {
            out.extend_from_slice(&b.data);
        }
        let crc = crc32fast::hash(&out);
        out.put_u32_le(crc);
        (Bytes::from(out), crc)
    }

    pub fn decode(object: &Bytes) -> Result<Self, ChunkError> {
        if object.len() < MAGIC.len() + 1 + 4 {
            return Err(ChunkError::Malformed("too short"));
        }
        let (body, mut crc) = object.split_at(object.len() - 4);
        if crc32fast::hash(body) != crc.get_u32_le() {
            return Err(ChunkError::Checksum);
        }
        if &body[..4] != MAGIC || body[4] != VERSION {
            return Err(ChunkError::Malformed(
                "not a lucia chunk (bad magic or version)",
            ));
        }
        let mut buf = &body[5..];
        let tenant = get_string(&mut buf)?;
        let labels = get_string(&mut buf)?;
        let from = unzigzag(get_varint(&mut buf)?);
        let through = unzigzag(get_varint(&mut buf)?);
        let n = get_varint(&mut buf)? as usize;
        let mut headers = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            if buf.is_empty() {
                return Err(ChunkError::Malformed("block index truncated"));
            }
            let encoding = ChunkEncoding::from_u8(buf[0])?;
            buf = &buf[1..];
            let min_ts = unzigzag(get_varint(&mut buf)?);
            let max_ts = unzigzag(get_varint(&mut buf)?);
            let count = get_varint(&mut buf)? as u32;
            let raw_len = get_varint(&mut buf)? as u32;
            let len = get_varint(&mut buf)? as usize;
            headers.push((encoding, min_ts, max_ts, count, raw_len, len));
        }
        // Blocks share the object's buffer instead of being copied.
        let mut offset = body.len() - buf.len();
        let mut blocks = Vec::with_capacity(headers.len());
        for (encoding, min_ts, max_ts, count, raw_len, len) in headers {
            if offset + len > body.len() {
                return Err(ChunkError::Malformed("block data truncated"));
            }
            blocks.push(Block {
                encoding,
                min_ts,
                max_ts,
                count,
                raw_len,
                data: object.slice(offset..offset + len),
            });
            offset += len;
        }
        Ok(Self {
            tenant,
            labels,
            from,
            through,
            blocks,
        })
    }

    /// Every entry of the chunk, sorted by time.
    pub fn entries(&self) -> Result<Vec<Entry>, ChunkError> {
        self.entries_filtered(None)
    }

    /// The entries whose line passes `filter`, sorted by time.
    pub fn entries_filtered(
        &self,
        filter: Option<&dyn LineFilter>,
    ) -> Result<Vec<Entry>, ChunkError> {
        let mut out = Vec::new();
        for b in &self.blocks {
            out.extend(b.decode_filtered(filter)?);
        }
        // Blocks may overlap when entries arrived out of order.
        out.sort_by_key(|e| e.ts);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                ts: 1_700_000_000_000_000_000 + (i as i64 * 7919 % 1000) * 1_000_000,
                line: format!("level=info msg=\"request {i}\" status={}", 200 + i % 5),
                metadata: if i % 3 == 0 {
                    vec![("trace_id".into(), format!("{i:x}"))]
                } else {
                    vec![]
                },
            })
            .collect()
    }

    struct Needle(&'static str);

    impl LineFilter for Needle {
        fn block_may_match(&self, lines: &[u8]) -> bool {
            memchr::memmem::find(lines, self.0.as_bytes()).is_some()
        }
        fn matches(&self, line: &str) -> bool {
            line.contains(self.0)
        }
    }

    #[test]
    fn filtered_decode_keeps_matching_lines_with_their_metadata() {
        let mut input = entries(20);
        input[3].metadata = vec![("trace_id".into(), "abc".into())];
        input[3].line = "needle here".into();
        input[11].line = "another needle\nwith a newline".into();
        let block = Block::encode(input.clone(), ChunkEncoding::Zstd).unwrap();
        let kept = block.decode_filtered(Some(&Needle("needle"))).unwrap();
        let mut expected = vec![input[3].clone(), input[11].clone()];
        expected.sort_by_key(|e| e.ts);
        assert_eq!(kept, expected);
        assert!(
            block
                .decode_filtered(Some(&Needle("absent")))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            block.decode_filtered(None).unwrap(),
            block.decode().unwrap()
        );
    }

    #[test]
    fn block_round_trip_every_encoding() {
        for encoding in [
            ChunkEncoding::None,
            ChunkEncoding::Snappy,
            ChunkEncoding::Zstd,
            ChunkEncoding::ZstdColumns,
            ChunkEncoding::ZstdColumnsUngrouped,
        ] {
            let input = entries(500);
            let mut multiline = entries(20);
            multiline[3].line = "panic:\n  at main.rs:1\n".into();
            let block = Block::encode(multiline.clone(), encoding).unwrap();
            multiline.sort_by_key(|e| e.ts);
            assert_eq!(
                block.decode().unwrap(),
                multiline,
                "{encoding:?} multi-line"
            );
            let block = Block::encode(input.clone(), encoding).unwrap();
            let mut expected = input;
            expected.sort_by_key(|e| e.ts);
            assert_eq!(block.decode().unwrap(), expected, "{encoding:?}");
            assert_eq!(block.count, 500);
            assert_eq!(block.min_ts, expected[0].ts);
            assert_eq!(block.max_ts, expected[499].ts);
            if encoding != ChunkEncoding::None {
                assert!(
                    block.data.len() < block.raw_len as usize / 2,
                    "{encoding:?}"
                );
            }
        }
    }

    #[test]
    fn chunk_object_round_trip_and_checksum() {
        let blocks = vec![
            Block::encode(entries(100), ChunkEncoding::Zstd).unwrap(),
            Block::encode(entries(50), ChunkEncoding::Snappy).unwrap(),
        ];
        let chunk = ChunkData {
            tenant: "team-a".into(),
            labels: r#"{app="api"}"#.into(),
            from: 1,
            through: 2,
            blocks,
        };
        let (bytes, crc) = chunk.encode();
        assert_eq!(
            crc,
            u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap())
        );
        let decoded = ChunkData::decode(&bytes).unwrap();
        assert_eq!(decoded, chunk);
        assert_eq!(decoded.entries().unwrap().len(), 150);

        let mut corrupt = bytes.to_vec();
        corrupt[20] ^= 1;
        assert!(matches!(
            ChunkData::decode(&Bytes::from(corrupt)),
            Err(ChunkError::Checksum)
        ));
    }

    #[test]
    fn columns_block_round_trips_and_refuses_damage() {
        // Three line formats interleaved, so the lines are regrouped.
        let input: Vec<Entry> = (0..300u64)
            .map(|i| Entry {
                ts: 1_700_000_000_000_000_000 + i as i64,
                line: format!(
                    "{}2026-01-01T00:00:{:02}.{:06}Z request_id={:032x} bytes={} \u{e9}\u{F5}",
                    ["ts=", "{\"timestamp\":", "10.0.0.1 "][i as usize % 3],
                    i % 60,
                    i * 7,
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    i * 1000
                ),
                metadata: vec![("detected_level".into(), "info".into())],
            })
            .collect();
        let block = Block::encode(input.clone(), ChunkEncoding::ZstdColumns).unwrap();
        assert_eq!(block.decode().unwrap(), input);
        let ungrouped = Block::encode(input.clone(), ChunkEncoding::ZstdColumnsUngrouped).unwrap();
        assert_eq!(ungrouped.decode().unwrap(), input);
        // Truncated data is an error; flipped bytes (which the chunk
        // object's checksum catches first) never panic.
        for cut in (0..block.data.len()).step_by(7) {
            let damaged = Block {
                data: block.data.slice(..cut),
                ..block.clone()
            };
            assert!(damaged.decode().is_err(), "cut at {cut}");
        }
        for at in (0..block.data.len()).step_by(5) {
            let mut bytes = block.data.to_vec();
            bytes[at] ^= 0x55;
            let _ = Block {
                data: bytes.into(),
                ..block.clone()
            }
            .decode();
        }
    }

    /// Compression ratio on a genlogs.py file, counting whole chunk objects
    /// (256 KiB blocks, 1.5 MiB chunks): set LUCIA_GENLOGS to its path,
    /// LUCIA_CHUNK_ENCODING (`zstd`, `zstd-columns` or
    /// `zstd-columns-ungrouped`) and LUCIA_CHUNK_LEVEL.
    #[test]
    #[ignore]
    fn compression_ratio() {
        let Ok(path) = std::env::var("LUCIA_GENLOGS") else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let (mut raw, mut stored, mut size) = (0usize, 0usize, 0usize);
        let (mut head, mut blocks) = (Vec::new(), Vec::new());
        let object = |blocks: Vec<Block>| {
            ChunkData {
                tenant: "fake".into(),
                labels: r#"{app="genlogs"}"#.into(),
                from: 0,
                through: 0,
                blocks,
            }
            .encode()
            .0
            .len()
        };
        let encoding = match std::env::var("LUCIA_CHUNK_ENCODING").as_deref() {
            Ok("zstd-columns") => ChunkEncoding::ZstdColumns,
            Ok("zstd-columns-ungrouped") => ChunkEncoding::ZstdColumnsUngrouped,
            _ => ChunkEncoding::Zstd,
        };
        let level = std::env::var("LUCIA_CHUNK_LEVEL")
            .ok()
            .and_then(|l| l.parse().ok())
            .unwrap_or(encoding.default_level());
        let mut encode_time = std::time::Duration::ZERO;
        let started = std::time::Instant::now();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            raw += line.len();
            size += line.len();
            head.push(Entry {
                ts: 1_767_225_600_000_000_000 + i as i64 * 1_234_567,
                line: line.to_string(),
                metadata: vec![],
            });
            if size >= 256 * 1024 || i + 1 == lines.len() {
                let encoding_started = std::time::Instant::now();
                let block = Block::encode_with_level(std::mem::take(&mut head), encoding, level);
                encode_time += encoding_started.elapsed();
                blocks.push(block.unwrap());
                size = 0;
                let compressed: usize = blocks.iter().map(|b| b.data.len()).sum();
                if compressed >= 1536 * 1024 || i + 1 == lines.len() {
                    stored += object(std::mem::take(&mut blocks));
                }
            }
        }
        println!(
            "{encoding:?} level {level}: raw {raw} stored {stored} ratio {:.3} in {:?}, block encoding {:.2} ns per raw byte",
            raw as f64 / stored as f64,
            started.elapsed(),
            encode_time.as_nanos() as f64 / raw as f64,
        );
    }
}
