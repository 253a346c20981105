//! Alerts, label sets, fingerprints and Alertmanager's time formats.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

/// A label set, sorted by name (Alertmanager's `model.LabelSet`).
pub type LabelSet = BTreeMap<String, String>;

/// A point in time; Go's zero time (year 1) means "not set".
pub type Time = DateTime<Utc>;

/// Go's zero `time.Time`, 0001-01-01T00:00:00Z.
pub fn zero_time() -> Time {
    Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Whether `t` is Go's zero time (or earlier).
pub fn is_zero(t: &Time) -> bool {
    *t <= zero_time()
}

const FNV_OFFSET: u64 = 14695981039346656037;
const FNV_PRIME: u64 = 1099511628211;
const SEPARATOR: u8 = 0xff;

fn fnv_add(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Prometheus' `LabelSet.Fingerprint()`: FNV-1a 64 over the sorted names and
/// values, each followed by 0xff.
pub fn fingerprint(labels: &LabelSet) -> u64 {
    let mut hash = FNV_OFFSET;
    for (name, value) in labels {
        hash = fnv_add(hash, name.as_bytes());
        hash = fnv_add(hash, &[SEPARATOR]);
        hash = fnv_add(hash, value.as_bytes());
        hash = fnv_add(hash, &[SEPARATOR]);
    }
    hash
}

/// Prometheus' `LabelSet.Before`: the smaller set first, then the first
/// differing value in name order (a name missing from one set puts that set
/// first).
pub fn labelset_before(a: &LabelSet, b: &LabelSet) -> bool {
    if a.len() != b.len() {
        return a.len() < b.len();
    }
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    for name in names {
        let (Some(av), Some(bv)) = (a.get(name), b.get(name)) else {
            return b.contains_key(name);
        };
        if av != bv {
            return av < bv;
        }
    }
    false
}

/// Alertmanager's `AlertSlice` order, used for the alerts of a
/// notification and of an API group: by `job`, then `instance` (an alert
/// that has the label before one that has not), then `labelset_before`.
/// Receivers see alerts in this order and `max_alerts` keeps the first.
pub fn alert_order(a: &LabelSet, b: &LabelSet) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for key in ["job", "instance"] {
        match (a.get(key), b.get(key)) {
            (None, None) => continue,
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => {}
        }
    }
    if labelset_before(a, b) {
        Ordering::Less
    } else if labelset_before(b, a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// A fingerprint as Alertmanager prints it: 16 hex digits.
pub fn fingerprint_string(fp: u64) -> String {
    format!("{fp:016x}")
}

/// `model.LabelSet.String()`: `{a="1", b="2"}` with Go's `%q` quoting.
pub fn labelset_string(labels: &LabelSet) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push('=');
        out.push_str(&go_quote(value));
    }
    out.push('}');
    out
}

/// Go's `strconv.Quote` for printable text (escapes quotes, backslashes and
/// control characters).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An alert as the router keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: Time,
    pub ends_at: Time,
    pub generator_url: String,
    pub updated_at: Time,
    /// The end time was set from `resolve_timeout`, not by the sender.
    pub timeout: bool,
}

impl Alert {
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }

    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Resolved at `at`: the end time is set and not after `at`.
    pub fn resolved_at(&self, at: Time) -> bool {
        !is_zero(&self.ends_at) && self.ends_at <= at
    }

    pub fn resolved(&self) -> bool {
        self.resolved_at(Utc::now())
    }

    pub fn status(&self) -> &'static str {
        if self.resolved() {
            "resolved"
        } else {
            "firing"
        }
    }

    /// Merges an update `other` of the same alert (Alertmanager's
    /// `Alert.Merge`): the younger one wins, with the earliest start and
    /// an explicit later end kept.
    pub fn merge(&self, other: &Alert) -> Alert {
        if other.updated_at < self.updated_at {
            return other.merge(self);
        }
        let mut res = other.clone();
        if self.starts_at < other.starts_at {
            res.starts_at = self.starts_at;
        }
        if other.resolved() {
            if self.resolved() && self.ends_at > other.ends_at {
                res.ends_at = self.ends_at;
            }
        } else if self.ends_at > other.ends_at && !self.timeout {
            res.ends_at = self.ends_at;
        }
        res
    }

    /// Alertmanager's `Alert.Validate`.
    pub fn validate(&self) -> Result<(), String> {
        if is_zero(&self.starts_at) {
            return Err("start time missing".to_string());
        }
        if !is_zero(&self.ends_at) && self.ends_at < self.starts_at {
            return Err("start time must be before end time".to_string());
        }
        if self.labels.is_empty() {
            return Err("at least one label pair required".to_string());
        }
        for name in self.labels.keys() {
            if !lucia_common::labels::is_valid_label_name(name) {
                return Err(format!("invalid label set: invalid name {name:?}"));
            }
        }
        for name in self.annotations.keys() {
            if !lucia_common::labels::is_valid_label_name(name) {
                return Err(format!("invalid annotations: invalid name {name:?}"));
            }
        }
        Ok(())
    }
}

/// Go's `time.Time` JSON form (RFC3339 with nanoseconds, trailing zeros
/// trimmed), used in webhook payloads.
pub fn format_rfc3339_nano(t: &Time) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

/// go-openapi's `strfmt.DateTime` form (milliseconds), used by API v2.
pub fn format_rfc3339_millis(t: &Time) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses an RFC3339 time (any precision and offset) into UTC.
pub fn parse_time(s: &str) -> Result<Time, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| {
            format!("invalid time {s:?}: {err} (use RFC3339, e.g. 2024-01-02T15:04:05Z)")
        })
}

/// A random UUID version 4, as Alertmanager gives silences.
pub fn new_uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fingerprints_match_prometheus() {
        // Values from prometheus/common's signature tests and a real
        // Alertmanager 0.25 (`amtool alert query -o json`).
        assert_eq!(fingerprint(&LabelSet::new()), 14695981039346656037);
        assert_eq!(
            fingerprint_string(fingerprint(&ls(&[("name", "value")]))),
            "3a8504e67bf53465"
        );
        assert_eq!(
            fingerprint_string(fingerprint(&ls(&[
                ("alertname", "Test"),
                ("severity", "critical")
            ]))),
            "efcaa50ee41c2d76"
        );
        assert_eq!(
            fingerprint(&ls(&[("first", "value"), ("second", "value")])),
            fingerprint(&ls(&[("second", "value"), ("first", "value")]))
        );
    }

    #[test]
    fn alerts_sort_like_alertmanager() {
        let mut sets = [
            ls(&[("alertname", "B"), ("x", "1"), ("y", "1")]),
            ls(&[("alertname", "A"), ("instance", "i2")]),
            ls(&[("alertname", "Z")]),
            ls(&[("alertname", "A"), ("job", "j"), ("instance", "i9")]),
            ls(&[("alertname", "A"), ("instance", "i1")]),
            ls(&[("alertname", "A"), ("z", "1")]),
            ls(&[("alertname", "B"), ("x", "1"), ("z", "0")]),
        ];
        sets.sort_by(alert_order);
        let names: Vec<String> = sets.iter().map(labelset_string).collect();
        assert_eq!(
            names,
            vec![
                r#"{alertname="A", instance="i9", job="j"}"#,
                r#"{alertname="A", instance="i1"}"#,
                r#"{alertname="A", instance="i2"}"#,
                r#"{alertname="Z"}"#,
                r#"{alertname="A", z="1"}"#,
                // Go's `Before`: at `y` the second set lacks the name,
                // so it comes first.
                r#"{alertname="B", x="1", z="0"}"#,
                r#"{alertname="B", x="1", y="1"}"#,
            ]
        );
    }

    #[test]
    fn labelset_strings_and_times() {
        assert_eq!(
            labelset_string(&ls(&[("b", "x\"y"), ("a", "1")])),
            r#"{a="1", b="x\"y"}"#
        );
        let t = parse_time("2024-01-02T03:04:05.120+01:00").unwrap();
        assert_eq!(format_rfc3339_nano(&t), "2024-01-02T02:04:05.12Z");
        assert_eq!(format_rfc3339_millis(&t), "2024-01-02T02:04:05.120Z");
        assert!(is_zero(&parse_time("0001-01-01T00:00:00.000Z").unwrap()));
        assert_eq!(format_rfc3339_nano(&zero_time()), "0001-01-01T00:00:00Z");
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
