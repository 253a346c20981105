//! Enrichment as Loki does it: the `service_name` stream label and the
//! `detected_level` structured metadata of each entry.
//!
//! Level detection runs on every line of the write path, so it scans bytes
//! once without allocating (memchr for the JSON quotes).

use lucia_common::labels::Labels;
use lucia_proto::logproto::{EntryAdapter, LabelPairAdapter};

pub const SERVICE_NAME: &str = "service_name";
pub const UNKNOWN_SERVICE: &str = "unknown_service";
pub const DETECTED_LEVEL: &str = "detected_level";
pub const UNKNOWN_LEVEL: &str = "unknown";

/// Label and metadata names that carry a level (Loki's defaults, exact case).
const LEVEL_FIELDS: [&str; 9] = [
    "level", "LEVEL", "Level", "Severity", "severity", "SEVERITY", "lvl", "LVL", "Lvl",
];

/// Adds `service_name` from the first present label of `discover` (or
/// `unknown_service`) unless the stream has one, or `discover` is empty.
pub fn add_service_name(labels: &mut Labels, discover: &[String]) {
    if discover.is_empty() || labels.get(SERVICE_NAME).is_some() {
        return;
    }
    let value = discover
        .iter()
        .find_map(|name| labels.get(name).filter(|v| !v.is_empty()))
        .unwrap_or(UNKNOWN_SERVICE)
        .to_string();
    labels.insert(SERVICE_NAME, value);
}

/// The level carried by the stream labels, normalized, if any: it then
/// applies to every entry of the stream.
pub fn stream_level(labels: &Labels) -> Option<String> {
    LEVEL_FIELDS
        .iter()
        .find_map(|name| labels.get(name))
        .map(|v| normalize_level(v).to_string())
}

/// Adds `detected_level` to the entry's structured metadata, from (in
/// order) an existing `detected_level` (normalized in place), the stream's
/// level label, a level-like metadata field, or the line itself.
pub fn add_detected_level(entry: &mut EntryAdapter, stream_level: Option<&str>) {
    if let Some(existing) = entry
        .structured_metadata
        .iter_mut()
        .find(|pair| pair.name == DETECTED_LEVEL)
    {
        let normalized = normalize_level(&existing.value);
        if normalized != existing.value {
            existing.value = normalized.to_string();
        }
        return;
    }
    let level = match stream_level {
        Some(level) => level.to_string(),
        None => match LEVEL_FIELDS.iter().find_map(|name| {
            entry
                .structured_metadata
                .iter()
                .find(|pair| pair.name == *name)
        }) {
            Some(pair) => normalize_level(&pair.value).to_string(),
            None => level_from_line(&entry.line).to_string(),
        },
    };
    entry.structured_metadata.push(LabelPairAdapter {
        name: DETECTED_LEVEL.to_string(),
        value: level,
    });
}

/// Loki's level names for the usual spellings (case-insensitive); any other
/// value is kept as it is.
pub fn normalize_level(value: &str) -> &str {
    known_level(value.as_bytes()).unwrap_or(value)
}

fn known_level(value: &[u8]) -> Option<&'static str> {
    const TABLE: [(&str, &str); 14] = [
        ("trace", "trace"),
        ("trc", "trace"),
        ("debug", "debug"),
        ("dbg", "debug"),
        ("info", "info"),
        ("inf", "info"),
        ("information", "info"),
        ("warn", "warn"),
        ("wrn", "warn"),
        ("warning", "warn"),
        ("error", "error"),
        ("err", "error"),
        ("critical", "critical"),
        ("fatal", "fatal"),
    ];
    TABLE
        .iter()
        .find(|(spelling, _)| spelling.as_bytes().eq_ignore_ascii_case(value))
        .map(|(_, level)| *level)
}

/// The level of a line: a `level`-like field of a JSON or logfmt line, else
/// a level keyword, else `unknown`.
pub fn level_from_line(line: &str) -> &'static str {
    let bytes = line.as_bytes();
    let field = if is_json_object(bytes) {
        json_level_field(bytes)
    } else if memchr::memchr(b'=', bytes).is_some() {
        logfmt_level_field(bytes)
    } else {
        None
    };
    field
        .and_then(known_level)
        .unwrap_or_else(|| level_from_keywords(bytes))
}

fn is_level_key(key: &[u8]) -> bool {
    key.eq_ignore_ascii_case(b"level")
        || key.eq_ignore_ascii_case(b"lvl")
        || key.eq_ignore_ascii_case(b"severity")
}

fn is_json_object(bytes: &[u8]) -> bool {
    // The start first: the line's end is often not in the cache yet, and
    // most lines are ruled out by their first byte.
    bytes.trim_ascii_start().first() == Some(&b'{') && bytes.trim_ascii_end().last() == Some(&b'}')
}

/// The string value of the first `level`-like key at any depth of a JSON
/// line. A tolerant scan rather than a parse: it only needs to find
/// `"key": "value"` pairs, and never fails.
fn json_level_field(bytes: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    let mut previous: Option<&[u8]> = None;
    while let Some(offset) = memchr::memchr(b'"', &bytes[pos..]) {
        let start = pos + offset + 1;
        let end = string_end(bytes, start)?;
        let string = &bytes[start..end];
        let after = skip_ws(bytes, end + 1);
        // A string right after `key:` is that key's value.
        if let Some(key) = previous.take()
            && is_level_key(key)
        {
            return Some(string);
        }
        if bytes.get(after) == Some(&b':') {
            let value_start = skip_ws(bytes, after + 1);
            if bytes.get(value_start) == Some(&b'"') {
                previous = Some(string);
            }
            pos = value_start;
        } else {
            pos = end + 1;
        }
    }
    None
}

/// The index of the closing quote of the string starting at `start`.
fn string_end(bytes: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let offset = memchr::memchr2(b'"', b'\\', bytes.get(pos..)?)?;
        pos += offset;
        if bytes[pos] == b'"' {
            return Some(pos);
        }
        pos += 2;
    }
}

fn skip_ws(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos).is_some_and(u8::is_ascii_whitespace) {
        pos += 1;
    }
    pos
}

/// The value of the first `level`-like key of a logfmt line.
fn logfmt_level_field(bytes: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    while pos < bytes.len() {
        pos = skip_ws(bytes, pos);
        let key_start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() && bytes[pos] != b'=' {
            pos += 1;
        }
        let key = &bytes[key_start..pos];
        if bytes.get(pos) != Some(&b'=') {
            continue;
        }
        pos += 1;
        let value = if bytes.get(pos) == Some(&b'"') {
            let end = string_end(bytes, pos + 1).unwrap_or(bytes.len());
            let value = &bytes[pos + 1..end];
            pos = end + 1;
            value
        } else {
            let start = pos;
            while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            &bytes[start..pos]
        };
        if is_level_key(key) {
            return Some(value);
        }
    }
    None
}

/// The level named by a standalone word of the line (case-insensitive),
/// preferring, like Loki, trace > debug > fatal > critical > error > warn >
/// info when several occur.
fn level_from_keywords(bytes: &[u8]) -> &'static str {
    const WORDS: [(&[u8], &str); 9] = [
        (b"trace", "trace"),
        (b"debug", "debug"),
        (b"fatal", "fatal"),
        (b"critical", "critical"),
        (b"error", "error"),
        (b"err", "error"),
        (b"warning", "warn"),
        (b"warn", "warn"),
        (b"info", "info"),
    ];
    let mut best = WORDS.len();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    let mut pos = 0;
    while pos < bytes.len() {
        if !is_word(bytes[pos]) {
            pos += 1;
            continue;
        }
        let start = pos;
        while pos < bytes.len() && is_word(bytes[pos]) {
            pos += 1;
        }
        let word = &bytes[start..pos];
        // Most words start with a letter no level word starts with: that
        // test alone keeps this scan cheap on long lines.
        if (3..=8).contains(&word.len())
            && matches!(
                word[0].to_ascii_lowercase(),
                b't' | b'd' | b'f' | b'c' | b'e' | b'w' | b'i'
            )
            && let Some(rank) = WORDS[..best]
                .iter()
                .position(|(w, _)| w.eq_ignore_ascii_case(word))
        {
            best = rank;
            if best == 0 {
                break;
            }
        }
    }
    WORDS.get(best).map_or(UNKNOWN_LEVEL, |(_, level)| level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str, metadata: &[(&str, &str)]) -> EntryAdapter {
        EntryAdapter {
            timestamp: None,
            line: line.into(),
            structured_metadata: metadata
                .iter()
                .map(|(n, v)| LabelPairAdapter {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    fn detected(e: &EntryAdapter) -> &str {
        &e.structured_metadata
            .iter()
            .find(|p| p.name == DETECTED_LEVEL)
            .unwrap()
            .value
    }

    #[test]
    fn service_name_from_first_discovered_label() {
        let discover: Vec<String> = ["service", "app", "job"].map(String::from).to_vec();
        let mut labels = Labels::from_pairs([("job", "j"), ("app", "a")]);
        add_service_name(&mut labels, &discover);
        assert_eq!(labels.get(SERVICE_NAME), Some("a"));

        let mut labels = Labels::from_pairs([("env", "prod")]);
        add_service_name(&mut labels, &discover);
        assert_eq!(labels.get(SERVICE_NAME), Some(UNKNOWN_SERVICE));

        let mut labels = Labels::from_pairs([("service_name", "keep"), ("app", "a")]);
        add_service_name(&mut labels, &discover);
        assert_eq!(labels.get(SERVICE_NAME), Some("keep"));

        let mut labels = Labels::from_pairs([("app", "a")]);
        add_service_name(&mut labels, &[]);
        assert_eq!(labels.get(SERVICE_NAME), None);
    }

    #[test]
    fn level_from_json_logfmt_and_keywords() {
        assert_eq!(level_from_line(r#"{"msg":"x","level":"WARN"}"#), "warn");
        assert_eq!(level_from_line(r#" {"a":{"severity":"err"}} "#), "error");
        assert_eq!(level_from_line(r#"{"msg":"level","x":"info"}"#), "info");
        assert_eq!(
            level_from_line(r#"{"msg":"say \"level\"","lvl":"dbg"}"#),
            "debug"
        );
        assert_eq!(level_from_line("ts=1 lvl=debug msg=\"an error\""), "debug");
        assert_eq!(level_from_line(r#"msg="a b" level="fatal""#), "fatal");
        assert_eq!(level_from_line("2024-01-01 ERROR something broke"), "error");
        assert_eq!(level_from_line("[Warning] disk almost full"), "warn");
        assert_eq!(level_from_line("info: debug mode on"), "debug");
        assert_eq!(level_from_line("errors are not a level word"), "unknown");
        assert_eq!(level_from_line("CRITICAL: meltdown"), "critical");
        assert_eq!(level_from_line(""), "unknown");
        assert_eq!(level_from_line("{\"level\":\"unterminated"), "unknown");
        // An unknown field value falls back to keywords.
        assert_eq!(level_from_line("level=loud TRACE"), "trace");
    }

    #[test]
    fn detected_level_precedence() {
        let mut e = entry("ERROR boom", &[("detected_level", "WARNING")]);
        add_detected_level(&mut e, Some("info"));
        assert_eq!(detected(&e), "warn");
        assert_eq!(e.structured_metadata.len(), 1);

        let mut e = entry("ERROR boom", &[]);
        add_detected_level(&mut e, Some("info"));
        assert_eq!(detected(&e), "info");

        let mut e = entry("ERROR boom", &[("severity", "Debug")]);
        add_detected_level(&mut e, None);
        assert_eq!(detected(&e), "debug");

        let mut e = entry("ERROR boom", &[]);
        add_detected_level(&mut e, None);
        assert_eq!(detected(&e), "error");

        let labels = Labels::from_pairs([("app", "x"), ("level", "INF")]);
        assert_eq!(stream_level(&labels).as_deref(), Some("info"));
    }

    proptest::proptest! {
        #[test]
        fn detection_never_panics(line in ".{0,300}") {
            let level = level_from_line(&line);
            proptest::prop_assert!(!level.is_empty());
        }

        #[test]
        fn detection_never_panics_on_json_like(line in r#"[{}":=\\ a-z\-]{0,100}"#) {
            let _ = level_from_line(&line);
        }
    }
}
