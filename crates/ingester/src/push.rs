//! Decoding push request bodies: Loki's protobuf (`logproto.PushRequest`,
//! snappy block format) and JSON, optionally gzip- or deflate-encoded.
//!
//! Everything here works on untrusted bytes: sizes are capped before
//! anything is allocated for them, and every failure is a [`DecodeError`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use bytes::Bytes;
use lucia_proto::logproto::{EntryAdapter, LabelPairAdapter, PushRequest, Timestamp};
use prost::Message;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

/// A stream as received, before its labels are validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RawStream {
    pub labels: RawLabels,
    pub entries: Vec<EntryAdapter>,
}

/// Stream labels as the client sent them.
#[derive(Debug, Clone, PartialEq)]
pub enum RawLabels {
    /// The `{a="1"}` text form (protobuf and legacy JSON).
    Text(String),
    /// A JSON object of name to value.
    Map(BTreeMap<String, String>),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "request body too large: more than {limit} bytes{what}; push smaller batches or raise distributor.max_recv_msg_size"
    )]
    TooLarge { limit: usize, what: &'static str },
    #[error("cannot read request body: {0}")]
    Read(String),
    #[error("unsupported Content-Encoding {0:?}: use gzip, deflate or none")]
    UnsupportedEncoding(String),
    #[error("invalid {encoding} request body: {reason}")]
    Decompress {
        encoding: &'static str,
        reason: String,
    },
    #[error(
        "invalid snappy-compressed body: {0}; send logproto.PushRequest compressed with snappy's block format, or JSON with Content-Type: application/json"
    )]
    Snappy(String),
    #[error("invalid protobuf body: {0}; send a logproto.PushRequest")]
    Protobuf(String),
    #[error("invalid JSON body: {0}")]
    Json(String),
}

/// The body's format, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// Everything that is not JSON, as in Loki.
    SnappyProtobuf,
}

impl Format {
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        let mime = content_type
            .and_then(|ct| ct.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        if mime.eq_ignore_ascii_case("application/json") {
            Format::Json
        } else {
            Format::SnappyProtobuf
        }
    }
}

/// Undoes the HTTP `Content-Encoding`, producing at most `limit` bytes.
pub fn decode_content_encoding(
    body: Bytes,
    encoding: Option<&str>,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let encoding = encoding.map(str::trim).unwrap_or_default();
    if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        return Ok(body);
    }
    if encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip") {
        read_limited(flate2::read::MultiGzDecoder::new(&body[..]), "gzip", limit)
    } else if encoding.eq_ignore_ascii_case("deflate") {
        // HTTP's deflate is zlib-wrapped, but many clients (Go's included)
        // send raw deflate: accept both, telling them apart by the zlib header.
        if has_zlib_header(&body) {
            read_limited(flate2::read::ZlibDecoder::new(&body[..]), "deflate", limit)
        } else {
            read_limited(
                flate2::read::DeflateDecoder::new(&body[..]),
                "deflate",
                limit,
            )
        }
    } else {
        Err(DecodeError::UnsupportedEncoding(encoding.to_string()))
    }
}

fn has_zlib_header(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn read_limited(
    reader: impl Read,
    encoding: &'static str,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|err| DecodeError::Decompress {
            encoding,
            reason: err.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge {
            limit,
            what: " once decompressed",
        });
    }
    Ok(out.into())
}

/// Decodes a (decompressed) body of the given format.
pub fn decode_body(
    body: &[u8],
    format: Format,
    limit: usize,
) -> Result<Vec<RawStream>, DecodeError> {
    match format {
        Format::Json => decode_json(body),
        Format::SnappyProtobuf => decode_snappy_protobuf(body, limit),
    }
}

/// Decodes `logproto.PushRequest` compressed with snappy's block format.
pub fn decode_snappy_protobuf(body: &[u8], limit: usize) -> Result<Vec<RawStream>, DecodeError> {
    // The block header states the decompressed size: check it before
    // allocating anything for it.
    let len =
        snap::raw::decompress_len(body).map_err(|err| DecodeError::Snappy(err.to_string()))?;
    if len > limit {
        return Err(DecodeError::TooLarge {
            limit,
            what: " once decompressed",
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|err| DecodeError::Snappy(err.to_string()))?;
    let request = PushRequest::decode(raw.as_slice())
        .map_err(|err| DecodeError::Protobuf(err.to_string()))?;
    Ok(request
        .streams
        .into_iter()
        .map(|stream| RawStream {
            labels: RawLabels::Text(stream.labels),
            entries: stream.entries,
        })
        .collect())
}

/// Decodes Loki's JSON push body, or the legacy one (`labels` and
/// `entries`). Unknown fields are ignored.
pub fn decode_json(body: &[u8]) -> Result<Vec<RawStream>, DecodeError> {
    let request: JsonPush =
        serde_json::from_slice(body).map_err(|err| DecodeError::Json(err.to_string()))?;
    let mut streams = Vec::with_capacity(request.streams.len());
    for stream in request.streams {
        let labels = match (stream.stream, stream.labels) {
            (Some(map), _) => RawLabels::Map(map),
            (None, Some(text)) => RawLabels::Text(text),
            (None, None) => RawLabels::Map(BTreeMap::new()),
        };
        let mut entries: Vec<EntryAdapter> = stream.values.into_iter().map(|v| v.0).collect();
        for legacy in stream.entries {
            entries.push(legacy.into_entry()?);
        }
        streams.push(RawStream { labels, entries });
    }
    Ok(streams)
}

#[derive(Deserialize)]
struct JsonPush {
    #[serde(default)]
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: Option<BTreeMap<String, String>>,
    /// Legacy format: the label string.
    #[serde(default)]
    labels: Option<String>,
    #[serde(default)]
    values: Vec<JsonValue>,
    /// Legacy format: `{"ts": RFC3339, "line": ...}` objects.
    #[serde(default)]
    entries: Vec<LegacyEntry>,
}

#[derive(Deserialize)]
struct LegacyEntry {
    #[serde(alias = "timestamp")]
    ts: String,
    line: String,
}

impl LegacyEntry {
    fn into_entry(self) -> Result<EntryAdapter, DecodeError> {
        let nanos = lucia_common::time::parse_time_nanos(&self.ts)
            .map_err(|err| DecodeError::Json(err.to_string()))?;
        Ok(EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(nanos)),
            line: self.line,
            structured_metadata: Vec::new(),
        })
    }
}

/// One `["<unix ns>", "line", {"structured": "metadata"}]` entry.
struct JsonValue(EntryAdapter);

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(JsonValueVisitor)
    }
}

struct JsonValueVisitor;

impl<'de> Visitor<'de> for JsonValueVisitor {
    type Value = JsonValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an entry ["<unix epoch in nanoseconds>", "<log line>", {optional structured metadata}]"#)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonValue, A::Error> {
        let ts: JsonTimestamp = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("entry has no timestamp"))?;
        let line: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("entry has no log line"))?;
        let metadata: Option<BTreeMap<String, String>> = seq.next_element()?;
        // Tolerate trailing elements, as unknown fields are tolerated.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        let structured_metadata = metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| LabelPairAdapter { name, value })
            .collect();
        Ok(JsonValue(EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(ts.0)),
            line,
            structured_metadata,
        }))
    }
}

/// Unix nanoseconds as a string (Loki's form) or a JSON integer.
struct JsonTimestamp(i64);

impl<'de> Deserialize<'de> for JsonTimestamp {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = JsonTimestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a timestamp in Unix nanoseconds as a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonTimestamp, E> {
                v.parse::<i64>().map(JsonTimestamp).map_err(|_| {
                    E::custom(format!(
                        "invalid timestamp {v:?}: use Unix epoch nanoseconds as a string"
                    ))
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonTimestamp, E> {
                Ok(JsonTimestamp(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonTimestamp, E> {
                i64::try_from(v)
                    .map(JsonTimestamp)
                    .map_err(|_| E::custom(format!("timestamp {v} is out of range")))
            }
        }
        deserializer.deserialize_any(TsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 1 << 20;

    fn snappy_push(request: &PushRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    fn sample_request() -> PushRequest {
        PushRequest {
            streams: vec![lucia_proto::logproto::StreamAdapter {
                labels: r#"{app="api"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(1_700_000_000_123_456_789)),
                    line: "level=info hello".into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "trace_id".into(),
                        value: "abc".into(),
                    }],
                }],
                hash: 0,
            }],
        }
    }

    #[test]
    fn content_type_selects_format() {
        assert_eq!(
            Format::from_content_type(Some("application/json")),
            Format::Json
        );
        assert_eq!(
            Format::from_content_type(Some("Application/JSON; charset=utf-8")),
            Format::Json
        );
        assert_eq!(
            Format::from_content_type(Some("application/x-protobuf")),
            Format::SnappyProtobuf
        );
        assert_eq!(Format::from_content_type(None), Format::SnappyProtobuf);
    }

    #[test]
    fn protobuf_round_trip() {
        let streams = decode_snappy_protobuf(&snappy_push(&sample_request()), LIMIT).unwrap();
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].labels, RawLabels::Text(r#"{app="api"}"#.into()));
        assert_eq!(streams[0].entries, sample_request().streams[0].entries);
    }

    #[test]
    fn snappy_size_is_checked_before_decompressing() {
        let body = snappy_push(&sample_request());
        assert!(matches!(
            decode_snappy_protobuf(&body, 10),
            Err(DecodeError::TooLarge { limit: 10, .. })
        ));
    }

    #[test]
    fn truncated_protobuf_is_an_error() {
        let raw = sample_request().encode_to_vec();
        let body = snap::raw::Encoder::new()
            .compress_vec(&raw[..raw.len() - 3])
            .unwrap();
        assert!(matches!(
            decode_snappy_protobuf(&body, LIMIT),
            Err(DecodeError::Protobuf(_))
        ));
        // Not snappy at all: the uncompressed protobuf.
        assert!(matches!(
            decode_snappy_protobuf(&raw, LIMIT),
            Err(DecodeError::Snappy(_) | DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn json_values_with_metadata_and_unknown_fields() {
        let body = br#"{"streams":[{"stream":{"b":"2","a":"1"},"extra":1,
            "values":[["1700000000123456789","line one"],
                      ["1700000000123456790","line two",{"trace_id":"x"}]]}],
            "other":true}"#;
        let streams = decode_json(body).unwrap();
        assert_eq!(streams.len(), 1);
        let RawLabels::Map(map) = &streams[0].labels else {
            panic!("expected a label map")
        };
        assert_eq!(map.get("a").map(String::as_str), Some("1"));
        let entries = &streams[0].entries;
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0]
                .timestamp
                .as_ref()
                .map_or(0, Timestamp::unix_nanos),
            1_700_000_000_123_456_789
        );
        assert_eq!(entries[1].line, "line two");
        assert_eq!(entries[1].structured_metadata[0].name, "trace_id");
    }

    #[test]
    fn legacy_json() {
        let body = br#"{"streams":[{"labels":"{app=\"x\"}","entries":[{"ts":"2018-12-18T08:28:06.801064-04:00","line":"hi"}]}]}"#;
        let streams = decode_json(body).unwrap();
        assert_eq!(streams[0].labels, RawLabels::Text(r#"{app="x"}"#.into()));
        assert_eq!(
            streams[0].entries[0]
                .timestamp
                .as_ref()
                .map_or(0, Timestamp::unix_nanos),
            1_545_136_086_801_064_000
        );
    }

    #[test]
    fn json_errors_say_what_is_wrong() {
        let err = decode_json(br#"{"streams":[{"stream":{"a":"1"},"values":[["abc","x"]]}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid timestamp \"abc\""), "{err}");
        assert!(decode_json(b"{\"streams\": [").is_err());
        assert!(decode_json(br#"{"streams":[{"values":[["1"]]}]}"#).is_err());
    }

    #[test]
    fn gzip_and_deflate_bodies() {
        use std::io::Write;
        let plain = br#"{"streams":[]}"#.to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decode_content_encoding(gz.clone().into(), Some("gzip"), LIMIT).unwrap(),
            plain
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(&plain).unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(
            decode_content_encoding(zlib.into(), Some("deflate"), LIMIT).unwrap(),
            plain
        );
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(&plain).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            decode_content_encoding(raw.into(), Some("deflate"), LIMIT).unwrap(),
            plain
        );
        assert!(matches!(
            decode_content_encoding(gz.into(), Some("gzip"), 4),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_content_encoding(plain.into(), Some("br"), LIMIT),
            Err(DecodeError::UnsupportedEncoding(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_snappy_protobuf(&body, LIMIT);
            let _ = decode_json(&body);
            let bytes = Bytes::from(body.clone());
            let _ = decode_content_encoding(bytes.clone(), Some("gzip"), LIMIT);
            let _ = decode_content_encoding(bytes, Some("deflate"), LIMIT);
            // Valid snappy around arbitrary protobuf bytes.
            let wrapped = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            let _ = decode_snappy_protobuf(&wrapped, LIMIT);
        }

        #[test]
        fn mutated_valid_payloads_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut snappy = snappy_push(&sample_request());
            let mut raw = sample_request().encode_to_vec();
            let mut json = br#"{"streams":[{"stream":{"a":"1"},"values":[["1700000000000000000","x",{"k":"v"}]]}]}"#.to_vec();
            for (pos, byte) in &flips {
                for buf in [&mut snappy, &mut raw, &mut json] {
                    let len = buf.len();
                    buf[pos % len] = *byte;
                }
            }
            let _ = decode_snappy_protobuf(&snappy, LIMIT);
            let _ = decode_snappy_protobuf(&snap::raw::Encoder::new().compress_vec(&raw).unwrap(), LIMIT);
            let _ = decode_json(&json);
            let _ = decode_snappy_protobuf(&snappy[..cut % snappy.len()], LIMIT);
            let _ = decode_json(&json[..cut % json.len()]);
        }
    }
}
