//! Lines of a block regrouped by their first byte before compression.
//!
//! A stream often mixes line formats (JSON from one library, logfmt from
//! another, access logs): interleaved, each line's template sits far from
//! the last line of the same template, and a fast compressor level finds
//! it poorly. Grouped, lines of one format follow each other, so their
//! matches repeat the same offsets, which zstd codes almost for free. On
//! genlogs' mixed logs, grouping makes zstd level 1 store 5.1x where the
//! interleaved lines give 4.8x (BENCHMARKS.md). The first byte is a crude
//! format key (`{`, `t` of `ts=`, a digit of an address) but costs one
//! byte per line to undo, and a stream of one format is left as it is.
//!
//! A record is a run of bytes ended by `\n`, or the bytes after the last
//! `\n`: any input splits into records, so the regrouping is lossless for
//! any bytes, whatever the block's line layout.

use super::ChunkError;

/// How a block's lines were regrouped: for each record in its original
/// order, the index of its group (groups numbered by first appearance).
/// Empty when the input has one group, whose order is unchanged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub kinds: Vec<u8>,
    /// Whether the last record lacked its `\n` (one is added to it in the
    /// grouped order, where it may no longer be last).
    pub unterminated: bool,
}

/// Reusable buffers of [`regroup`].
#[derive(Debug, Default)]
pub struct Scratch {
    /// Start offset of each record in the input, then the input's length.
    starts: Vec<u32>,
    /// Record indices in grouped order.
    order: Vec<u32>,
}

/// Calls `emit` with the records of `lines` in grouped order, each ending
/// in `\n`, and describes the order in `grouping`. Inputs are blocks, far
/// below 4 GiB.
pub fn regroup(
    lines: &[u8],
    grouping: &mut Grouping,
    scratch: &mut Scratch,
    mut emit: impl FnMut(&[u8]),
) {
    grouping.kinds.clear();
    grouping.unterminated = !lines.is_empty() && !lines.ends_with(b"\n");
    let starts = &mut scratch.starts;
    starts.clear();
    starts.push(0);
    starts.extend(memchr::memchr_iter(b'\n', lines).map(|i| i as u32 + 1));
    if grouping.unterminated {
        starts.push(lines.len() as u32);
    }
    let records = starts.len() - 1;
    // Group of each first byte, by first appearance.
    let mut group_of = [u16::MAX; 256];
    let mut groups = 0u16;
    let mut counts = [0u32; 256];
    grouping.kinds.reserve(records);
    for window in starts.windows(2) {
        let first = usize::from(lines[window[0] as usize]);
        if group_of[first] == u16::MAX {
            group_of[first] = groups;
            groups += 1;
        }
        // At most 256 groups, one per byte value.
        let group = group_of[first] as u8;
        counts[usize::from(group)] += 1;
        grouping.kinds.push(group);
    }
    let record = |r: usize| &lines[starts[r] as usize..starts[r + 1] as usize];
    if groups <= 1 {
        grouping.kinds.clear();
        for r in 0..records {
            emit_record(record(r), &mut emit);
        }
        return;
    }
    // Counting sort of the records by group, stable.
    let mut next = [0u32; 256];
    let mut total = 0;
    for (next, count) in next.iter_mut().zip(counts).take(usize::from(groups)) {
        *next = total;
        total += count;
    }
    let order = &mut scratch.order;
    order.clear();
    order.resize(records, 0);
    for (r, &group) in grouping.kinds.iter().enumerate() {
        let slot = &mut next[usize::from(group)];
        order[*slot as usize] = r as u32;
        *slot += 1;
    }
    for &r in order.iter() {
        emit_record(record(r as usize), &mut emit);
    }
}

fn emit_record(record: &[u8], emit: &mut impl FnMut(&[u8])) {
    emit(record);
    if !record.ends_with(b"\n") {
        emit(b"\n");
    }
}

/// Puts the records in `lines[start..]` (what [`regroup`] emitted) back in
/// their original order, in place: a block of one group (most streams) is
/// only checked, not copied. Fails on a grouping that does not fit the
/// records.
pub fn ungroup(lines: &mut Vec<u8>, start: usize, grouping: &Grouping) -> Result<(), ChunkError> {
    let malformed = ChunkError::Malformed;
    let Some(grouped) = lines.get(start..) else {
        return Err(malformed("grouped lines start beyond the block"));
    };
    if !grouped.is_empty() && !grouped.ends_with(b"\n") {
        return Err(malformed("grouped lines do not end with a newline"));
    }
    if !grouping.kinds.is_empty() {
        let grouped = lines.split_off(start);
        let out = &mut *lines;
        let mut starts = Vec::with_capacity(grouping.kinds.len() + 1);
        starts.push(0usize);
        starts.extend(memchr::memchr_iter(b'\n', &grouped).map(|i| i + 1));
        if starts.len() - 1 != grouping.kinds.len() {
            return Err(malformed("line groups do not match the lines"));
        }
        // Where each group's records start in the grouped order.
        let mut next = [0usize; 256];
        let mut counts = [0usize; 256];
        for &kind in &grouping.kinds {
            counts[usize::from(kind)] += 1;
        }
        let mut total = 0;
        for (next, count) in next.iter_mut().zip(counts) {
            *next = total;
            total += count;
        }
        out.reserve(grouped.len());
        for &kind in &grouping.kinds {
            let slot = &mut next[usize::from(kind)];
            out.extend_from_slice(&grouped[starts[*slot]..starts[*slot + 1]]);
            *slot += 1;
        }
    }
    if grouping.unterminated && (lines.len() == start || lines.pop() != Some(b'\n')) {
        return Err(malformed("unterminated last line without its newline"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(lines: &[u8]) -> (Vec<u8>, Grouping) {
        let mut grouping = Grouping::default();
        let mut grouped = Vec::new();
        regroup(lines, &mut grouping, &mut Scratch::default(), |r| {
            grouped.extend_from_slice(r)
        });
        let mut back = grouped.clone();
        ungroup(&mut back, 0, &grouping).expect("ungroup what regroup made");
        assert_eq!(back, lines, "{:?}", String::from_utf8_lossy(lines));
        (grouped, grouping)
    }

    #[test]
    fn lines_of_one_format_follow_each_other() {
        let (grouped, grouping) = round_trip(b"{\"a\":1}\nts=1 x\n{\"a\":2}\nts=2 y\n10.0.0.1 -");
        assert_eq!(
            grouped,
            b"{\"a\":1}\n{\"a\":2}\nts=1 x\nts=2 y\n10.0.0.1 -\n".to_vec()
        );
        assert_eq!(grouping.kinds, vec![0, 1, 0, 1, 2]);
        assert!(grouping.unterminated);
    }

    #[test]
    fn one_format_is_left_in_order() {
        let (grouped, grouping) = round_trip(b"ts=2 b\nts=1 a\n");
        assert_eq!(grouped, b"ts=2 b\nts=1 a\n".to_vec());
        assert!(grouping.kinds.is_empty());
    }

    #[test]
    fn edge_cases_round_trip() {
        for input in [&b""[..], b"\n", b"\n\n\nx", b"x", b"a\nb", b"a\nb\n\n"] {
            round_trip(input);
        }
        let every_byte: Vec<u8> = (0..=255u8).flat_map(|b| [b, b'\n']).collect();
        round_trip(&every_byte);
    }

    #[test]
    fn mismatched_grouping_is_an_error() {
        let grouping = Grouping {
            kinds: vec![0, 1, 0],
            unterminated: false,
        };
        assert!(ungroup(&mut b"a\nb\n".to_vec(), 0, &grouping).is_err());
        assert!(ungroup(&mut b"a\nb\nc".to_vec(), 0, &grouping).is_err());
        let unterminated = Grouping {
            kinds: Vec::new(),
            unterminated: true,
        };
        assert!(ungroup(&mut Vec::new(), 0, &unterminated).is_err());
    }

    proptest! {
        #[test]
        fn any_lines_round_trip(
            input in proptest::collection::vec(
                proptest::sample::select(b"ab{1\n\n\xff".to_vec()),
                0..200,
            ),
        ) {
            round_trip(&input);
        }

        #[test]
        fn any_grouping_never_panics(
            grouped in proptest::collection::vec(any::<u8>(), 0..64),
            kinds in proptest::collection::vec(any::<u8>(), 0..16),
            unterminated in any::<bool>(),
        ) {
            let mut grouped = grouped;
            let _ = ungroup(&mut grouped, 0, &Grouping { kinds, unterminated });
        }
    }
}
