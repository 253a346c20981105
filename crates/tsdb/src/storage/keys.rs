//! Key layouts of the rocksdb column families.
//!
//! - `series`: series id (u64 BE) → tenant and label set ([`encode_series`]).
//! - `postings`: `tenant \0 name \0 value \0 id` → empty. The empty name
//!   and value hold every series of the tenant (the "all postings").
//! - `lookup`: `tenant \0 xxh3-128(labels)` → series id, so appends find a
//!   series that is not in the head (after a restart) without a scan.
//! - `chunks`: head chunks cut from the head, `id | maxt | seq` → encoding,
//!   min time, payload; ids first so that one seek reads a series' range;
//!   `maxt` (sign-flipped, BE) sorts by time.
//! - `blocks`: the immutable compacted chunks (one per series per block),
//!   `locality | id | maxt | seq`, where the locality is a hash of the
//!   tenant and metric name: the series of one metric sit together, so a
//!   query reads few of these zstd-compressed blocks. Kept apart from
//!   `chunks` so their size is known and zstd sees only them.
//! - `meta`: counters and the per-block "dirty" marks that tell compaction
//!   which series have uncompacted chunks in a block.

use super::varint::{get_uvarint, put_uvarint};
use crate::promql::Labels;

pub const CF_SERIES: &str = "series";
pub const CF_POSTINGS: &str = "postings";
pub const CF_LOOKUP: &str = "lookup";
pub const CF_CHUNKS: &str = "chunks";
pub const CF_BLOCKS: &str = "blocks";
pub const CF_META: &str = "meta";

pub const META_NEXT_ID: &[u8] = b"next_id";
pub const META_MIN_VALID: &[u8] = b"min_valid_time";
pub const META_DIRTY: u8 = b'd';

/// An i64 as 8 bytes that sort like the number.
pub fn sortable(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn unsortable(b: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1 << 63)) as i64)
}

pub fn id_from(b: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn get_str<'a>(data: &'a [u8], pos: &mut usize) -> Option<&'a str> {
    let n = usize::try_from(get_uvarint(data, pos)?).ok()?;
    let s = std::str::from_utf8(data.get(*pos..pos.checked_add(n)?)?).ok()?;
    *pos += n;
    Some(s)
}

/// The `series` value: tenant, then name/value pairs.
pub fn encode_series(tenant: &str, labels: &Labels) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_str(&mut out, tenant);
    for (k, v) in labels {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    out
}

pub fn decode_series(data: &[u8]) -> Option<(String, Labels)> {
    let mut pos = 0;
    let tenant = get_str(data, &mut pos)?.to_string();
    let mut labels = Labels::new();
    while pos < data.len() {
        let k = get_str(data, &mut pos)?;
        let v = get_str(data, &mut pos)?;
        labels.insert(k.to_string(), v.to_string());
    }
    Some((tenant, labels))
}

/// The identity of a series in the head and the `lookup` family: a 128-bit
/// hash of the tenant and the sorted labels. A collision would need about
/// 2^64 series, so the hash stands for the label set.
pub fn series_hash(tenant: &str, labels: &Labels) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(tenant.as_bytes());
    h.update(&[0xff]);
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update(&[0xfe]);
        h.update(v.as_bytes());
        h.update(&[0xff]);
    }
    h.digest128()
}

pub fn lookup_key(tenant: &str, hash: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 17);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(&hash.to_be_bytes());
    k
}

/// `tenant \0 name \0` (all values of a label) or, with a value,
/// `tenant \0 name \0 value \0` (the series of one pair).
pub fn postings_prefix(tenant: &str, name: &str, value: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + name.len() + 32);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    if let Some(v) = value {
        k.extend_from_slice(v.as_bytes());
        k.push(0);
    }
    k
}

pub fn postings_key(tenant: &str, name: &str, value: &str, id: u64) -> Vec<u8> {
    let mut k = postings_prefix(tenant, name, Some(value));
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn chunk_key(id: u64, maxt: i64, seq: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..16].copy_from_slice(&sortable(maxt));
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Where a series' compacted chunks sit: a hash of its tenant and metric
/// name.
pub fn locality(tenant: &str, labels: &Labels) -> u32 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(tenant.as_bytes());
    h.update(&[0]);
    if let Some(name) = labels.get(crate::promql::METRIC_NAME) {
        h.update(name.as_bytes());
    }
    h.digest() as u32
}

/// Length of a `blocks` key's series prefix (locality and id).
pub const BLOCK_PREFIX: usize = 12;

pub fn block_key(locality: u32, id: u64, maxt: i64, seq: u32) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..4].copy_from_slice(&locality.to_be_bytes());
    k[4..].copy_from_slice(&chunk_key(id, maxt, seq));
    k
}

/// How a persisted chunk is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEncoding {
    /// Prometheus' XOR chunk, as cut from the head.
    Xor = 1,
    /// A compacted block chunk (`columnar.rs`).
    Columnar = 2,
}

/// A `chunks` value: encoding, min time, payload.
pub fn encode_chunk_value(encoding: ChunkEncoding, mint: i64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 9);
    v.push(encoding as u8);
    v.extend_from_slice(&mint.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub fn decode_chunk_value(v: &[u8]) -> Option<(ChunkEncoding, i64, &[u8])> {
    let encoding = match *v.first()? {
        1 => ChunkEncoding::Xor,
        2 => ChunkEncoding::Columnar,
        _ => return None,
    };
    let mint = i64::from_be_bytes(v.get(1..9)?.try_into().ok()?);
    Some((encoding, mint, v.get(9..)?))
}

/// `d | block start | id`: the series has uncompacted chunks in the block.
pub fn dirty_key(block_start: i64, id: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = META_DIRTY;
    k[1..9].copy_from_slice(&sortable(block_start));
    k[9..].copy_from_slice(&id.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_roundtrip_and_sort() {
        assert!(sortable(-5) < sortable(3));
        assert_eq!(unsortable(&sortable(-5)), Some(-5));
        let labels: Labels = [
            ("__name__".into(), "up".into()),
            ("job".into(), "a\u{e9}".into()),
        ]
        .into();
        assert_eq!(
            decode_series(&encode_series("t1", &labels)),
            Some(("t1".to_string(), labels.clone()))
        );
        assert_ne!(series_hash("t1", &labels), series_hash("t2", &labels));
        let k = postings_key("t", "job", "api", 7);
        let prefix = postings_prefix("t", "job", Some("api"));
        assert_eq!(id_from(&k[prefix.len()..]), Some(7));
        assert!(chunk_key(1, -10, 0) < chunk_key(1, 5, 0));
        assert!(chunk_key(1, i64::MAX, 0) < chunk_key(2, i64::MIN, 0));
        let v = encode_chunk_value(ChunkEncoding::Xor, -3, b"xy");
        assert_eq!(
            decode_chunk_value(&v),
            Some((ChunkEncoding::Xor, -3, &b"xy"[..]))
        );
        assert_eq!(decode_series(&[0xff]), None);
    }
}
