//! The head block: a stream's entries not yet compressed, packed into one
//! buffer.
//!
//! Keeping each line (and each structured-metadata pair) in a `String` of
//! its own cost three to four heap allocations per entry that stayed alive
//! until the block was cut: memory overhead and fresh pages to fault in. Here
//! an entry is a fixed-size record pointing into one growing byte buffer.

use lucia_common::chunk::Entry;

#[derive(Debug, Clone, Copy)]
struct Record {
    ts: i64,
    /// Offset of the line in `bytes`; its metadata follows it.
    start: usize,
    line_len: u32,
    metadata_len: u32,
    metadata_count: u32,
}

/// Entries in arrival order.
#[derive(Debug, Clone, Default)]
pub struct HeadBlock {
    bytes: Vec<u8>,
    records: Vec<Record>,
}

/// A borrowed entry of a head block.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub ts: i64,
    pub line: &'a str,
    metadata: &'a [u8],
    metadata_count: u32,
}

impl EntryRef<'_> {
    /// The structured metadata pairs.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut buf = self.metadata;
        (0..self.metadata_count).map_while(move |_| {
            let name = take_str(&mut buf)?;
            let value = take_str(&mut buf)?;
            Some((name, value))
        })
    }

    pub fn to_entry(self) -> Entry {
        Entry {
            ts: self.ts,
            line: self.line.to_string(),
            metadata: self
                .metadata()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }
}

fn take_str<'a>(buf: &mut &'a [u8]) -> Option<&'a str> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let (s, rest) = (rest.get(..len)?, rest.get(len..)?);
    *buf = rest;
    // Only `push` writes these bytes, from `&str`s.
    std::str::from_utf8(s).ok()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl HeadBlock {
    pub fn push(&mut self, entry: Entry) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(entry.line.as_bytes());
        let metadata_start = self.bytes.len();
        for (name, value) in &entry.metadata {
            put_str(&mut self.bytes, name);
            put_str(&mut self.bytes, value);
        }
        self.records.push(Record {
            ts: entry.ts,
            start,
            line_len: entry.line.len() as u32,
            metadata_len: (self.bytes.len() - metadata_start) as u32,
            metadata_count: entry.metadata.len() as u32,
        });
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = EntryRef<'_>> {
        self.records.iter().map(|r| self.entry(r))
    }

    fn entry(&self, r: &Record) -> EntryRef<'_> {
        let line_end = r.start + r.line_len as usize;
        let metadata_end = line_end + r.metadata_len as usize;
        EntryRef {
            ts: r.ts,
            // Lines were pushed as `&str`, so the range is valid UTF-8; an
            // empty line is the fallback that can never happen.
            line: self
                .bytes
                .get(r.start..line_end)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            metadata: self.bytes.get(line_end..metadata_end).unwrap_or_default(),
            metadata_count: r.metadata_count,
        }
    }

    /// Empties the block, returning its entries in arrival order.
    pub fn take_entries(&mut self) -> Vec<Entry> {
        let entries = self.iter().map(|e| e.to_entry()).collect();
        self.bytes.clear();
        self.records.clear();
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_entries_with_metadata() {
        let entries = vec![
            Entry {
                ts: 2,
                line: "héllo".into(),
                metadata: vec![
                    ("detected_level".into(), "info".into()),
                    ("k".into(), String::new()),
                ],
            },
            Entry {
                ts: 1,
                line: String::new(),
                metadata: vec![],
            },
        ];
        let mut head = HeadBlock::default();
        for e in entries.clone() {
            head.push(e);
        }
        assert_eq!(head.len(), 2);
        let first = head.iter().next().unwrap();
        assert_eq!(first.line, "héllo");
        assert_eq!(
            first.metadata().collect::<Vec<_>>(),
            vec![("detected_level", "info"), ("k", "")]
        );
        assert_eq!(head.take_entries(), entries);
        assert!(head.is_empty());
    }
}
