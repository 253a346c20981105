//! Validation of pushed streams against the tenant's limits, with Loki's
//! rules, discard reasons and (close to) its messages.
//!
//! Invalid streams and entries are dropped and reported; the valid rest is
//! still ingested, as Loki does.

use std::collections::BTreeMap;

use lucia_common::labels::{Labels, LabelsError, is_valid_label_name};
use lucia_common::time::format_rfc3339_nanos;
use lucia_proto::logproto::EntryAdapter;

use crate::limits::LimitsConfig;
use crate::push::{RawLabels, RawStream};

/// Why data was discarded: the `reason` label of the discard metrics, with
/// Loki's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    InvalidLabels,
    MissingLabels,
    MaxLabelNamesPerSeries,
    LabelNameTooLong,
    LabelValueTooLong,
    DuplicateLabelNames,
    LineTooLong,
    GreaterThanMaxSampleAge,
    TooFarInFuture,
    RateLimited,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidLabels => "invalid_labels",
            Reason::MissingLabels => "missing_labels",
            Reason::MaxLabelNamesPerSeries => "max_label_names_per_series",
            Reason::LabelNameTooLong => "label_name_too_long",
            Reason::LabelValueTooLong => "label_value_too_long",
            Reason::DuplicateLabelNames => "duplicate_label_names",
            Reason::LineTooLong => "line_too_long",
            Reason::GreaterThanMaxSampleAge => "greater_than_max_sample_age",
            Reason::TooFarInFuture => "too_far_in_future",
            Reason::RateLimited => "rate_limited",
        }
    }
}

/// How much was discarded for one reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Discarded {
    pub lines: u64,
    pub bytes: u64,
}

/// A stream that passed validation, labels parsed and sorted.
#[derive(Debug, Clone)]
pub struct ValidStream {
    pub labels: Labels,
    pub entries: Vec<EntryAdapter>,
}

/// The outcome of validating a push.
#[derive(Debug, Default)]
pub struct Validated {
    pub streams: Vec<ValidStream>,
    /// Lines and line bytes of the valid entries.
    pub lines: u64,
    pub bytes: u64,
    /// The problems found, in order.
    pub errors: Vec<String>,
    pub discarded: BTreeMap<Reason, Discarded>,
}

/// At most this many problems are listed in an answer; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 10;

impl Validated {
    fn discard(&mut self, reason: Reason, lines: u64, bytes: u64, message: String) {
        let counts = self.discarded.entry(reason).or_default();
        counts.lines += lines;
        counts.bytes += bytes;
        self.errors.push(message);
    }

    /// The answer body listing the problems, bounded in length.
    pub fn error_message(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        let mut message = self
            .errors
            .iter()
            .take(MAX_REPORTED_ERRORS)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        if self.errors.len() > MAX_REPORTED_ERRORS {
            message.push_str(&format!(
                "\n(and {} more errors)",
                self.errors.len() - MAX_REPORTED_ERRORS
            ));
        }
        Some(message)
    }
}

/// Validates `streams` at time `now` (Unix nanoseconds).
pub fn validate(streams: Vec<RawStream>, limits: &LimitsConfig, now: i64) -> Validated {
    let mut out = Validated::default();
    let oldest = if limits.reject_old_samples {
        now.saturating_sub(nanos(limits.reject_old_samples_max_age.0))
    } else {
        i64::MIN
    };
    let newest = now.saturating_add(nanos(limits.creation_grace_period.0));
    for stream in streams {
        let labels = match stream_labels(&stream.labels, limits) {
            Ok(labels) => labels,
            Err((reason, message)) => {
                let bytes = stream.entries.iter().map(|e| e.line.len() as u64).sum();
                out.discard(reason, stream.entries.len() as u64, bytes, message);
                continue;
            }
        };
        let mut entries = Vec::with_capacity(stream.entries.len());
        for mut entry in stream.entries {
            let len = entry.line.len() as u64;
            let ts = entry
                .timestamp
                .as_ref()
                .map_or(0, lucia_proto::logproto::Timestamp::unix_nanos);
            if ts < oldest {
                out.discard(
                    Reason::GreaterThanMaxSampleAge,
                    1,
                    len,
                    format!(
                        "entry for stream '{labels}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
                        format_rfc3339_nanos(ts),
                        format_rfc3339_nanos(oldest)
                    ),
                );
                continue;
            }
            if ts > newest {
                out.discard(
                    Reason::TooFarInFuture,
                    1,
                    len,
                    format!(
                        "entry for stream '{labels}' has timestamp too new: {}, newest acceptable timestamp is: {}",
                        format_rfc3339_nanos(ts),
                        format_rfc3339_nanos(newest)
                    ),
                );
                continue;
            }
            let max = limits.max_line_size;
            if max > 0 && len > max {
                if limits.max_line_size_truncate {
                    truncate_at_char_boundary(&mut entry.line, max as usize);
                } else {
                    out.discard(
                        Reason::LineTooLong,
                        1,
                        len,
                        format!(
                            "max entry size '{max}' bytes exceeded for stream '{labels}' while adding an entry with length '{len}' bytes"
                        ),
                    );
                    continue;
                }
            }
            out.lines += 1;
            out.bytes += entry.line.len() as u64;
            entries.push(entry);
        }
        if !entries.is_empty() {
            out.streams.push(ValidStream { labels, entries });
        }
    }
    out
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn truncate_at_char_boundary(line: &mut String, max: usize) {
    let mut end = max.min(line.len());
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
}

/// Parses and checks a stream's labels.
pub fn stream_labels(raw: &RawLabels, limits: &LimitsConfig) -> Result<Labels, (Reason, String)> {
    let labels = match raw {
        RawLabels::Text(text) => Labels::parse(text).map_err(|err| match err {
            LabelsError::Duplicate(name) => (
                Reason::DuplicateLabelNames,
                format!("stream '{text}' has duplicate label name: '{name}'"),
            ),
            err => (
                Reason::InvalidLabels,
                format!("error parsing labels '{text}' with error: {err}"),
            ),
        })?,
        RawLabels::Map(map) => {
            if let Some(name) = map.keys().find(|name| !is_valid_label_name(name)) {
                return Err((
                    Reason::InvalidLabels,
                    format!(
                        "error parsing labels '{}' with error: invalid label name {name:?}: names must match [a-zA-Z_][a-zA-Z0-9_]*",
                        map_text(map)
                    ),
                ));
            }
            Labels::from_pairs(map.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        }
    };
    if labels.is_empty() {
        return Err((
            Reason::MissingLabels,
            "error at least one label pair is required per stream".to_string(),
        ));
    }
    if labels.len() > limits.max_label_names_per_series {
        return Err((
            Reason::MaxLabelNamesPerSeries,
            format!(
                "entry for stream '{labels}' has {} label names; limit {}",
                labels.len(),
                limits.max_label_names_per_series
            ),
        ));
    }
    for label in &labels {
        if label.name.len() > limits.max_label_name_length {
            return Err((
                Reason::LabelNameTooLong,
                format!(
                    "stream '{labels}' has label name too long: '{}' (limit {} bytes)",
                    label.name, limits.max_label_name_length
                ),
            ));
        }
        if label.value.len() > limits.max_label_value_length {
            return Err((
                Reason::LabelValueTooLong,
                format!(
                    "stream '{labels}' has label value too long: '{}' (limit {} bytes)",
                    label.value, limits.max_label_value_length
                ),
            ));
        }
    }
    Ok(labels)
}

/// A label map in the `{a="1"}` form, for messages.
fn map_text(map: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push('=');
        let _ = lucia_common::labels::write_quoted(&mut out, value);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn stream(labels: &str, lines: &[(i64, &str)]) -> RawStream {
        RawStream {
            labels: RawLabels::Text(labels.into()),
            entries: lines
                .iter()
                .map(|(ts, line)| EntryAdapter {
                    timestamp: Some(lucia_proto::logproto::Timestamp::from_unix_nanos(*ts)),
                    line: (*line).into(),
                    structured_metadata: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn valid_entries_survive_invalid_ones() {
        let limits = LimitsConfig {
            max_line_size: 5,
            ..LimitsConfig::default()
        };
        let out = validate(
            vec![
                stream(
                    r#"{b="2", a="1"}"#,
                    &[(NOW, "ok"), (NOW, "too long"), (1, "old")],
                ),
                stream("{}", &[(NOW, "x")]),
                stream(r#"{1a="x"}"#, &[(NOW, "x")]),
                stream(r#"{a="1"}"#, &[(NOW + 3_600_000_000_000, "future")]),
            ],
            &limits,
            NOW,
        );
        assert_eq!(out.streams.len(), 1);
        assert_eq!(out.streams[0].labels.to_string(), r#"{a="1", b="2"}"#);
        assert_eq!(out.lines, 1);
        assert_eq!(out.bytes, 2);
        assert_eq!(
            out.discarded[&Reason::LineTooLong],
            Discarded { lines: 1, bytes: 8 }
        );
        assert_eq!(out.discarded[&Reason::GreaterThanMaxSampleAge].lines, 1);
        assert_eq!(out.discarded[&Reason::MissingLabels].lines, 1);
        assert_eq!(out.discarded[&Reason::InvalidLabels].lines, 1);
        assert_eq!(out.discarded[&Reason::TooFarInFuture].lines, 1);
        let message = out.error_message().unwrap();
        assert!(message.contains("max entry size '5' bytes exceeded for stream '{a=\"1\", b=\"2\"}' while adding an entry with length '8' bytes"), "{message}");
        assert!(
            message.contains("has timestamp too old: 1970-01-01T00:00:00.000000001Z"),
            "{message}"
        );
        assert!(
            message.contains("error at least one label pair is required per stream"),
            "{message}"
        );
        assert!(
            message.contains("error parsing labels '{1a=\"x\"}'"),
            "{message}"
        );
        assert!(message.contains("has timestamp too new"), "{message}");
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let limits = LimitsConfig {
            max_line_size: 4,
            max_line_size_truncate: true,
            ..LimitsConfig::default()
        };
        let out = validate(vec![stream(r#"{a="1"}"#, &[(NOW, "abcé€")])], &limits, NOW);
        assert!(out.errors.is_empty());
        assert_eq!(out.streams[0].entries[0].line, "abc");
    }

    #[test]
    fn label_limits() {
        let limits = LimitsConfig {
            max_label_names_per_series: 2,
            max_label_name_length: 4,
            max_label_value_length: 3,
            ..LimitsConfig::default()
        };
        let check = |text: &str| stream_labels(&RawLabels::Text(text.into()), &limits);
        assert_eq!(
            check(r#"{a="1", b="2", c="3"}"#).unwrap_err().0,
            Reason::MaxLabelNamesPerSeries
        );
        assert_eq!(
            check(r#"{abcde="1"}"#).unwrap_err().0,
            Reason::LabelNameTooLong
        );
        assert_eq!(
            check(r#"{a="1234"}"#).unwrap_err().0,
            Reason::LabelValueTooLong
        );
        assert_eq!(
            check(r#"{a="1", a="2"}"#).unwrap_err().0,
            Reason::DuplicateLabelNames
        );
        let map = BTreeMap::from([("bad-name".to_string(), "x".to_string())]);
        let (reason, message) = stream_labels(&RawLabels::Map(map), &limits).unwrap_err();
        assert_eq!(reason, Reason::InvalidLabels);
        assert!(message.contains("\"bad-name\""), "{message}");
    }

    #[test]
    fn errors_are_bounded() {
        let streams = (0..25).map(|_| stream("{}", &[(NOW, "x")])).collect();
        let out = validate(streams, &LimitsConfig::default(), NOW);
        let message = out.error_message().unwrap();
        assert_eq!(message.lines().count(), MAX_REPORTED_ERRORS + 1);
        assert!(message.ends_with("(and 15 more errors)"));
    }

    proptest! {
        #[test]
        fn arbitrary_labels_never_panic(text in ".{0,64}", name in ".{0,16}", value in ".{0,16}") {
            let limits = LimitsConfig::default();
            let _ = stream_labels(&RawLabels::Text(text), &limits);
            let map = BTreeMap::from([(name, value)]);
            let _ = stream_labels(&RawLabels::Map(map), &limits);
        }

        #[test]
        fn label_like_text_never_panics(text in r#"[{}a-z_="\\, .\-0-9]{0,48}"#) {
            let _ = stream_labels(&RawLabels::Text(text), &LimitsConfig::default());
        }
    }
}
