//! The ingester's write-ahead log records, on the segmented log of
//! [`lucia_common::wal`] (framing, group commit, fsync policy, torn-tail
//! handling are described there).
//!
//! A segment record is a protobuf [`WalRecord`]: the tenant and the entries
//! accepted by one push, per stream. A checkpoint holds every stream's
//! unflushed data ([`CheckpointStream`]). The default fsync policy is
//! `always`: a push is acknowledged after its record is fsynced.

use std::path::Path;

use bytes::Bytes;
use lucia_common::chunk::Entry;
use lucia_common::duration::ConfigDuration;
use lucia_common::wal;
pub use lucia_common::wal::{FsyncPolicy, Replayed, Wal, WalError, WalMetrics};
use lucia_proto::logproto::{EntryAdapter, StreamAdapter};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use serde::Deserialize;

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

/// One push's accepted entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalRecord {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(message, repeated, tag = "2")]
    pub streams: Vec<StreamAdapter>,
}

/// A [`WalRecord`] encoded while the push is applied, straight from the
/// accepted entries into one buffer: no copy of an entry is made for the
/// WAL. The bytes are a `WalRecord` (replay decodes them as one): each
/// stream's entries come before its labels (protobuf fields may come in
/// any order), and its length is a varint padded to five bytes, written
/// once the stream ends, so the entries need not be copied behind it.
pub struct RecordBuilder {
    buf: Vec<u8>,
    /// Where the current stream's length placeholder starts, once it has
    /// an entry.
    stream_start: Option<usize>,
    streams: usize,
}

/// Bytes of a stream's length placeholder: lengths up to 32 GiB.
const STREAM_LEN_BYTES: usize = 5;

fn len_field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn put_len_field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

impl RecordBuilder {
    /// A builder whose buffer starts with room for `capacity` bytes (the
    /// request's size: growing it would copy the record again).
    pub fn new(tenant: &str, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        if !tenant.is_empty() {
            put_len_field(&mut buf, 1, tenant.as_bytes());
        }
        Self {
            buf,
            stream_start: None,
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
        let out = &mut self.buf;
        if self.stream_start.is_none() {
            encode_key(2, WireType::LengthDelimited, out);
            self.stream_start = Some(out.len());
            out.extend_from_slice(&[0; STREAM_LEN_BYTES]);
        }
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
        let Some(start) = self.stream_start.take() else {
            return;
        };
        put_len_field(&mut self.buf, 1, labels.as_bytes());
        let len = self.buf.len() - start - STREAM_LEN_BYTES;
        let placeholder = &mut self.buf[start..start + STREAM_LEN_BYTES];
        for (i, byte) in placeholder.iter_mut().enumerate() {
            let more = if i + 1 < STREAM_LEN_BYTES { 0x80 } else { 0 };
            *byte = ((len >> (7 * i)) & 0x7F) as u8 | more;
        }
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

/// Reads the WAL in `dir`: the newest checkpoint's streams into
/// `on_checkpoint`, then every later segment record into `on_record`.
pub fn replay(
    dir: &Path,
    mut on_checkpoint: impl FnMut(CheckpointStream),
    mut on_record: impl FnMut(WalRecord),
) -> Result<Replayed, WalError> {
    wal::replay(
        dir,
        |frame| {
            CheckpointStream::decode(frame)
                .map(&mut on_checkpoint)
                .is_ok()
        },
        |frame| WalRecord::decode(frame).map(&mut on_record).is_ok(),
    )
}

/// Writes a checkpoint of `streams` numbered `n`, then deletes the segments
/// and checkpoints it replaces.
pub fn write_checkpoint(
    dir: &Path,
    n: u64,
    streams: impl Iterator<Item = CheckpointStream>,
) -> Result<(), WalError> {
    wal::write_checkpoint(dir, n, streams.map(|s| s.encode_to_vec()))
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
                // Long enough for a stream length of three varint bytes.
                line: "epoch ".repeat(4000),
                metadata: vec![],
            },
        ];
        let mut builder = RecordBuilder::new("tenant-1", 0);
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
            RecordBuilder::new("", 64).finish(),
            WalRecord::default().encode_to_vec()
        );
    }

    #[tokio::test]
    async fn replay_decodes_checkpoints_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1, FsyncPolicy::Never, WalMetrics::default()).unwrap();
        wal.append_encoded(record("t", "before").encode_to_vec())
            .wait()
            .await
            .unwrap();
        let n = wal.rotate().await.unwrap();
        wal.append_encoded(record("t", "after").encode_to_vec())
            .wait()
            .await
            .unwrap();
        let stream = CheckpointStream {
            tenant: "t".into(),
            labels: r#"{app="api"}"#.into(),
            newest_ts: 5,
            chunks: vec![],
        };
        write_checkpoint(dir.path(), n, std::iter::once(stream.clone())).unwrap();
        wal.close().await;
        let (cps, recs, r) = replay_all(dir.path());
        assert_eq!(cps, vec![stream]);
        assert_eq!(recs, vec![record("t", "after")]);
        assert_eq!(r.next_segment, 3);
    }
}
