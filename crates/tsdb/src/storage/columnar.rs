//! The encoding of compacted chunks: one per series per block, written when
//! a block is compacted. Denser than XOR for what scrapes produce, and laid
//! out so that rocksdb's zstd (on the chunks column family) squeezes it
//! further:
//! - timestamps as zigzag varint delta-of-deltas (regular scrapes: a run of
//!   zero bytes);
//! - series whose values are all decimals with at most 6 places (counters,
//!   most gauges, anything parsed from text like `40.37`) as zigzag varint
//!   deltas of the values times 10^places, which decode to the same bits;
//! - other series as XOR-with-previous, stored as (trailing zero count,
//!   varint of the rest).

use super::varint::{get_uvarint, get_varint, put_uvarint, put_varint};

/// Flag bit: values are scaled integers; bits 1..=3 hold the decimal
/// places.
const SCALED: u8 = 1;
const MAX_PLACES: u8 = 6;

/// The largest magnitude stored exactly as an integer delta.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0; // 2^53

/// The fewest decimal places `p` such that every value is an integer `n`
/// with `n / 10^p` giving back its exact bits (NaN, infinities and -0 never
/// are).
fn decimal_places(samples: &[(i64, f64)]) -> Option<u8> {
    'places: for p in 0..=MAX_PLACES {
        let scale = 10f64.powi(i32::from(p));
        for &(_, v) in samples {
            let n = (v * scale).round();
            // NaN fails the first test too.
            let exact = n.abs() < MAX_EXACT_INT;
            if !exact || ((n as i64) as f64 / scale).to_bits() != v.to_bits() {
                continue 'places;
            }
        }
        return Some(p);
    }
    None
}

/// Encodes samples (sorted by time, distinct timestamps).
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2 + 16);
    let places = decimal_places(samples);
    out.push(places.map_or(0, |p| SCALED | (p << 1)));
    put_uvarint(&mut out, samples.len() as u64);
    let (mut prev_t, mut prev_delta) = (0i64, 0i64);
    for (i, &(t, _)) in samples.iter().enumerate() {
        if i == 0 {
            put_varint(&mut out, t);
        } else {
            let delta = t.wrapping_sub(prev_t);
            put_varint(&mut out, delta.wrapping_sub(prev_delta));
            prev_delta = delta;
        }
        prev_t = t;
    }
    if let Some(p) = places {
        let scale = 10f64.powi(i32::from(p));
        let mut prev = 0i64;
        for &(_, v) in samples {
            let x = (v * scale).round() as i64;
            put_varint(&mut out, x.wrapping_sub(prev));
            prev = x;
        }
    } else {
        let mut prev = 0u64;
        for &(_, v) in samples {
            let bits = v.to_bits();
            let delta = bits ^ prev;
            if delta == 0 {
                out.push(64);
            } else {
                let tz = delta.trailing_zeros();
                out.push(tz as u8);
                put_uvarint(&mut out, delta >> tz);
            }
            prev = bits;
        }
    }
    out
}

/// Decodes what [`encode`] wrote; `None` on corrupt input.
pub fn decode(data: &[u8]) -> Option<Vec<(i64, f64)>> {
    let flags = *data.first()?;
    let mut pos = 1;
    let n = usize::try_from(get_uvarint(data, &mut pos)?).ok()?;
    // Every sample takes at least two bytes: refuse absurd counts.
    if n > data.len() {
        return None;
    }
    let mut ts = Vec::with_capacity(n);
    let (mut t, mut delta) = (0i64, 0i64);
    for i in 0..n {
        if i == 0 {
            t = get_varint(data, &mut pos)?;
        } else {
            delta = delta.wrapping_add(get_varint(data, &mut pos)?);
            t = t.wrapping_add(delta);
        }
        ts.push(t);
    }
    let mut out = Vec::with_capacity(n);
    if flags & SCALED != 0 {
        let places = (flags >> 1) & 7;
        if places > MAX_PLACES {
            return None;
        }
        let scale = 10f64.powi(i32::from(places));
        let mut v = 0i64;
        for t in ts {
            v = v.wrapping_add(get_varint(data, &mut pos)?);
            out.push((t, v as f64 / scale));
        }
    } else {
        let mut bits = 0u64;
        for t in ts {
            let tz = *data.get(pos)?;
            pos += 1;
            if tz < 64 {
                let rest = get_uvarint(data, &mut pos)?;
                bits ^= rest.checked_shl(u32::from(tz))?;
            } else if tz > 64 {
                return None;
            }
            out.push((t, f64::from_bits(bits)));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
        samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
    }

    #[test]
    fn counters_cost_about_two_bytes_a_sample_before_zstd() {
        let samples: Vec<(i64, f64)> = (0..480)
            .map(|i| (1_700_000_000_000 + i * 15_000, (i * 37) as f64))
            .collect();
        let enc = encode(&samples);
        assert!(enc.len() < 480 * 3, "{}", enc.len());
        assert_eq!(decode(&enc).map(|d| bits(&d)), Some(bits(&samples)));
    }

    #[test]
    fn decimals_are_stored_as_scaled_integers() {
        let samples: Vec<(i64, f64)> = (0..480)
            .map(|i| (i * 15_000, 40.0 + ((i * 37) % 201) as f64 / 100.0 - 1.0))
            .collect();
        let enc = encode(&samples);
        assert_eq!(enc[0], SCALED | (2 << 1));
        assert!(enc.len() < 480 * 3, "{}", enc.len());
        assert_eq!(decode(&enc).map(|d| bits(&d)), Some(bits(&samples)));
        let tiny = vec![(1, 1e-7), (2, 0.1 + 0.2)];
        assert_eq!(encode(&tiny)[0], 0, "not a short decimal: stored as XOR");
        assert_eq!(decode(&encode(&tiny)).map(|d| bits(&d)), Some(bits(&tiny)));
    }

    #[test]
    fn floats_negative_zero_and_stale_markers_roundtrip() {
        let samples = vec![
            (1, 0.5),
            (2, -0.0),
            (3, crate::promql::stale_nan()),
            (5, f64::INFINITY),
            (9, 1e300),
        ];
        assert_eq!(
            decode(&encode(&samples)).map(|d| bits(&d)),
            Some(bits(&samples))
        );
    }

    proptest! {
        #[test]
        fn roundtrips(samples in proptest::collection::vec((any::<i64>(), any::<u64>()), 0..100)) {
            let mut s: Vec<(i64, f64)> = samples.into_iter().map(|(t, b)| (t, f64::from_bits(b))).collect();
            s.sort_by_key(|x| x.0);
            s.dedup_by_key(|x| x.0);
            prop_assert_eq!(decode(&encode(&s)).map(|d| bits(&d)), Some(bits(&s)));
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data);
        }
    }
}
