//! The tsdb's WAL and checkpoint records (on [`lucia_common::wal`]).
//!
//! - An append record: the tenant, the series the append created (id and
//!   labels, so replay can rebuild the index), and the accepted samples as
//!   (series id, timestamp, value bits).
//! - A checkpoint record: one head series' in-memory state (its open XOR
//!   chunk and out-of-order buffer) at the checkpoint.

use crate::promql::Labels;

use super::keys::{decode_series, encode_series};
use super::varint::{get_uvarint, get_varint, put_uvarint, put_varint};

const APPEND: u8 = 1;
const SERIES_STATE: u8 = 2;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn uvarint(&mut self) -> Option<u64> {
        get_uvarint(self.data, &mut self.pos)
    }

    fn varint(&mut self) -> Option<i64> {
        get_varint(self.data, &mut self.pos)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.uvarint()?).ok()?;
        let out = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }

    fn u64_le(&mut self) -> Option<u64> {
        let b: [u8; 8] = self.data.get(self.pos..self.pos + 8)?.try_into().ok()?;
        self.pos += 8;
        Some(u64::from_le_bytes(b))
    }

    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.uvarint()?).ok()?;
        // Each element takes at least one byte.
        (n <= self.data.len()).then_some(n)
    }
}

/// One append, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRecord {
    pub tenant: String,
    pub new_series: Vec<(u64, Labels)>,
    /// (series id, timestamp ms, value).
    pub samples: Vec<(u64, i64, f64)>,
}

pub fn encode_append(
    tenant: &str,
    new_series: &[(u64, Labels)],
    samples: &[(u64, i64, f64)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + samples.len() * 14);
    out.push(APPEND);
    put_bytes(&mut out, tenant.as_bytes());
    put_uvarint(&mut out, new_series.len() as u64);
    for (id, labels) in new_series {
        put_uvarint(&mut out, *id);
        put_bytes(&mut out, &encode_series("", labels));
    }
    put_uvarint(&mut out, samples.len() as u64);
    for &(id, t, v) in samples {
        put_uvarint(&mut out, id);
        put_varint(&mut out, t);
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    out
}

pub fn decode_append(data: &[u8]) -> Option<AppendRecord> {
    let mut r = Reader { data, pos: 0 };
    if *data.first()? != APPEND {
        return None;
    }
    r.pos = 1;
    let tenant = std::str::from_utf8(r.bytes()?).ok()?.to_string();
    let n = r.count()?;
    let mut new_series = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.uvarint()?;
        let (_, labels) = decode_series(r.bytes()?)?;
        new_series.push((id, labels));
    }
    let n = r.count()?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.uvarint()?;
        let t = r.varint()?;
        let v = f64::from_bits(r.u64_le()?);
        samples.push((id, t, v));
    }
    (r.pos == data.len()).then_some(AppendRecord {
        tenant,
        new_series,
        samples,
    })
}

/// One head series at a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesState {
    pub id: u64,
    pub hash: u128,
    pub max_t: i64,
    /// The open XOR chunk (possibly empty).
    pub open_chunk: Vec<u8>,
    /// Out-of-order samples not yet cut into a chunk.
    pub ooo: Vec<(i64, f64)>,
}

pub fn encode_state(s: &SeriesState) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + s.open_chunk.len() + s.ooo.len() * 12);
    out.push(SERIES_STATE);
    put_uvarint(&mut out, s.id);
    out.extend_from_slice(&s.hash.to_le_bytes());
    put_varint(&mut out, s.max_t);
    put_bytes(&mut out, &s.open_chunk);
    put_uvarint(&mut out, s.ooo.len() as u64);
    for &(t, v) in &s.ooo {
        put_varint(&mut out, t);
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    out
}

pub fn decode_state(data: &[u8]) -> Option<SeriesState> {
    if *data.first()? != SERIES_STATE {
        return None;
    }
    let mut r = Reader { data, pos: 1 };
    let id = r.uvarint()?;
    let hash = u128::from_le_bytes(data.get(r.pos..r.pos + 16)?.try_into().ok()?);
    r.pos += 16;
    let max_t = r.varint()?;
    let open_chunk = r.bytes()?.to_vec();
    let n = r.count()?;
    let mut ooo = Vec::with_capacity(n);
    for _ in 0..n {
        let t = r.varint()?;
        ooo.push((t, f64::from_bits(r.u64_le()?)));
    }
    (r.pos == data.len()).then_some(SeriesState {
        id,
        hash,
        max_t,
        open_chunk,
        ooo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_reject_garbage() {
        let labels: Labels = [("__name__".into(), "up".into())].into();
        let rec = AppendRecord {
            tenant: "t".into(),
            new_series: vec![(3, labels)],
            samples: vec![(3, -1, 1.5), (9, 1_700_000_000_000, f64::INFINITY)],
        };
        let enc = encode_append(&rec.tenant, &rec.new_series, &rec.samples);
        assert_eq!(decode_append(&enc), Some(rec));
        assert_eq!(decode_append(&enc[..enc.len() - 1]), None);
        let state = SeriesState {
            id: 4,
            hash: u128::MAX - 7,
            max_t: 99,
            open_chunk: vec![0, 1, 2],
            ooo: vec![(5, 2.0)],
        };
        assert_eq!(decode_state(&encode_state(&state)), Some(state));
        assert_eq!(decode_state(&[2, 0xff]), None);
        assert_eq!(decode_append(&[1, 5, b'a']), None);
    }
}
