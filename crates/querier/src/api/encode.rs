//! Loki's JSON shapes.

use std::collections::BTreeMap;

use lucia_common::labels::Labels;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::eval::{QueryOutput, ResultData, ResultEntry, Stats, StreamResult};
use crate::source::Direction;

/// The header Grafana sends to ask for categorized labels.
pub const ENCODING_FLAGS_HEADER: &str = "X-Loki-Response-Encoding-Flags";
pub const CATEGORIZE_LABELS: &str = "categorize-labels";

pub fn labels_object(labels: &Labels) -> Value {
    let map: Map<String, Value> = labels
        .iter()
        .map(|l| (l.name.clone(), Value::String(l.value.clone())))
        .collect();
    Value::Object(map)
}

/// A sample value as Prometheus and Loki print it.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        value.to_string()
    }
}

/// `[<unix seconds>, "<value>"]`, seconds with millisecond precision.
pub fn point(ts: i64, value: f64) -> Value {
    let millis = ts.div_euclid(1_000_000);
    // Whole seconds print without a fraction, as Go does.
    let ts = if millis % 1000 == 0 {
        Value::from(millis / 1000)
    } else {
        serde_json::Number::from_f64(millis as f64 / 1000.0).map_or(Value::Null, Value::Number)
    };
    json!([ts, format_value(value)])
}

fn label_map(labels: &Labels) -> Map<String, Value> {
    labels
        .iter()
        .map(|l| (l.name.clone(), Value::String(l.value.clone())))
        .collect()
}

fn entry_value(entry: &ResultEntry, categorize: bool) -> Value {
    let ts = Value::String(entry.ts.to_string());
    let line = Value::String(entry.line.clone());
    if !categorize {
        return json!([ts, line]);
    }
    // With categorized labels Loki always sends the third element, `{}`
    // when the entry has neither kind: Grafana's parser reads exactly three.
    let mut categories = Map::new();
    if !entry.structured_metadata.is_empty() {
        categories.insert(
            "structuredMetadata".into(),
            Value::Object(label_map(&entry.structured_metadata)),
        );
    }
    if !entry.parsed.is_empty() {
        categories.insert("parsed".into(), Value::Object(label_map(&entry.parsed)));
    }
    json!([ts, line, categories])
}

/// The stream labels of an entry: its labels less metadata and parsed ones.
fn stream_labels(labels: &Labels, entry: &ResultEntry) -> Labels {
    let mut out = labels.clone();
    for l in entry.structured_metadata.iter().chain(entry.parsed.iter()) {
        out.remove(&l.name);
    }
    out
}

/// Streams as Loki returns them. By default each stream carries every
/// label (stream, structured metadata, parsed); with categorized labels the
/// stream has its own labels and each entry lists the others, and streams
/// with the same stream labels are one.
pub fn streams(streams: &[StreamResult], categorize: bool, direction: Direction) -> Value {
    if !categorize {
        return Value::Array(
            streams
                .iter()
                .map(|s| {
                    let values: Vec<Value> =
                        s.entries.iter().map(|e| entry_value(e, false)).collect();
                    json!({"stream": labels_object(&s.labels), "values": values})
                })
                .collect(),
        );
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, (Labels, Vec<&ResultEntry>)> = BTreeMap::new();
    for stream in streams {
        for entry in &stream.entries {
            let labels = stream_labels(&stream.labels, entry);
            let key = labels.to_string();
            groups
                .entry(key.clone())
                .or_insert_with(|| {
                    order.push(key);
                    (labels, Vec::new())
                })
                .1
                .push(entry);
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for key in order {
        if let Some((labels, mut entries)) = groups.remove(&key) {
            match direction {
                Direction::Forward => entries.sort_by_key(|e| e.ts),
                Direction::Backward => entries.sort_by_key(|e| std::cmp::Reverse(e.ts)),
            }
            let values: Vec<Value> = entries.iter().map(|e| entry_value(e, true)).collect();
            out.push(json!({"stream": labels_object(&labels), "values": values}));
        }
    }
    Value::Array(out)
}

/// Loki's `stats` object (the summary is filled; the per-component parts
/// are present with zeros so that clients reading them find numbers).
pub fn stats(stats: &Stats) -> Value {
    let exec_seconds = stats.exec_time.as_secs_f64();
    let per_sec = |n: u64| {
        if exec_seconds > 0.0 {
            (n as f64 / exec_seconds) as u64
        } else {
            0
        }
    };
    let component = json!({
        "totalReached": 0,
        "totalChunksMatched": 0,
        "totalBatches": 0,
        "totalLinesSent": 0,
        "store": {
            "totalChunksRef": 0,
            "totalChunksDownloaded": 0,
            "chunksDownloadTime": 0,
            "queryReferencedStructuredMetadata": false,
            "chunk": {
                "headChunkBytes": 0, "headChunkLines": 0,
                "decompressedBytes": 0, "decompressedLines": 0,
                "compressedBytes": 0, "totalDuplicates": 0,
                "postFilterLines": 0, "headChunkStructuredMetadataBytes": 0,
                "decompressedStructuredMetadataBytes": 0
            }
        }
    });
    let cache = json!({
        "entriesFound": 0, "entriesRequested": 0, "entriesStored": 0,
        "bytesReceived": 0, "bytesSent": 0, "requests": 0,
        "downloadTime": 0, "queryLengthServed": 0
    });
    json!({
        "summary": {
            "bytesProcessedPerSecond": per_sec(stats.bytes_processed),
            "linesProcessedPerSecond": per_sec(stats.lines_processed),
            "totalBytesProcessed": stats.bytes_processed,
            "totalLinesProcessed": stats.lines_processed,
            "execTime": exec_seconds,
            "queueTime": 0,
            "subqueries": 0,
            "totalEntriesReturned": stats.total_entries_returned,
            "splits": 0,
            "shards": 0,
            "totalPostFilterLines": stats.lines_processed,
            "totalStructuredMetadataBytesProcessed": 0
        },
        "querier": component.clone(),
        "ingester": component,
        "cache": {
            "chunk": cache.clone(), "index": cache.clone(), "result": cache.clone(),
            "statsResult": cache.clone(), "volumeResult": cache.clone(),
            "seriesResult": cache.clone(), "labelResult": cache.clone(),
            "instantMetricResult": cache
        }
    })
}

/// The `data` of a query answer, its keys in Loki's order: Grafana reads
/// the document as a stream and needs `encodingFlags` and `resultType`
/// before `result` (older versions fail otherwise).
#[derive(Debug, Serialize)]
pub struct QueryData {
    #[serde(rename = "encodingFlags", skip_serializing_if = "Option::is_none")]
    pub encoding_flags: Option<Vec<&'static str>>,
    #[serde(rename = "resultType")]
    pub result_type: &'static str,
    pub result: Value,
    pub stats: Value,
}

/// The full `query`/`query_range` answer.
#[derive(Debug, Serialize)]
pub struct QueryResponse {
    pub status: &'static str,
    pub data: QueryData,
}

/// The full `query`/`query_range` answer.
pub fn query_response(
    output: &QueryOutput,
    categorize: bool,
    direction: Direction,
) -> QueryResponse {
    let (result_type, result) = match &output.data {
        ResultData::Streams(s) => ("streams", streams(s, categorize, direction)),
        ResultData::Vector(samples) => (
            "vector",
            Value::Array(
                samples
                    .iter()
                    .map(|s| json!({"metric": labels_object(&s.labels), "value": point(s.ts, s.value)}))
                    .collect(),
            ),
        ),
        ResultData::Matrix(series) => (
            "matrix",
            Value::Array(
                series
                    .iter()
                    .map(|s| {
                        let values: Vec<Value> =
                            s.points.iter().map(|(ts, v)| point(*ts, *v)).collect();
                        json!({"metric": labels_object(&s.labels), "values": values})
                    })
                    .collect(),
            ),
        ),
        ResultData::Scalar { ts, value } => ("scalar", point(*ts, *value)),
    };
    let encoding_flags = (categorize && matches!(output.data, ResultData::Streams(_)))
        .then(|| vec![CATEGORIZE_LABELS]);
    QueryResponse {
        status: "success",
        data: QueryData {
            encoding_flags,
            result_type,
            result,
            stats: stats(&output.stats),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Sample, Series};

    fn entry(ts: i64, line: &str, md: &[(&str, &str)]) -> ResultEntry {
        ResultEntry {
            ts,
            line: line.into(),
            structured_metadata: Labels::from_pairs(md.iter().copied()),
            parsed: Labels::new(),
        }
    }

    #[test]
    fn categorized_streams_split_labels_by_kind() {
        let data = vec![
            StreamResult {
                labels: Labels::from_pairs([("app", "a"), ("trace", "t2")]),
                entries: vec![entry(2, "two", &[("trace", "t2")])],
            },
            StreamResult {
                labels: Labels::from_pairs([("app", "a")]),
                entries: vec![entry(1, "one", &[]), entry(3, "three", &[])],
            },
        ];
        let plain = streams(&data, false, Direction::Backward);
        assert_eq!(
            plain,
            json!([
                {"stream": {"app": "a", "trace": "t2"}, "values": [["2", "two"]]},
                {"stream": {"app": "a"}, "values": [["1", "one"], ["3", "three"]]}
            ])
        );
        let categorized = streams(&data, true, Direction::Backward);
        assert_eq!(
            categorized,
            json!([{"stream": {"app": "a"}, "values": [
                ["3", "three", {}],
                ["2", "two", {"structuredMetadata": {"trace": "t2"}}],
                ["1", "one", {}]
            ]}])
        );
    }

    #[test]
    fn data_keys_in_loki_order() {
        let out = QueryOutput {
            data: ResultData::Streams(vec![StreamResult {
                labels: Labels::from_pairs([("app", "a")]),
                entries: vec![entry(1, "one", &[])],
            }]),
            stats: Stats::default(),
        };
        let text = serde_json::to_string(&query_response(&out, true, Direction::Forward)).unwrap();
        let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap();
        assert!(at("status") < at("data"), "{text}");
        assert!(at("encodingFlags") < at("resultType"), "{text}");
        assert!(at("resultType") < at("result"), "{text}");
        assert!(at("result") < at("stats"), "{text}");
        assert!(at("stream") < at("values"), "{text}");
    }

    #[test]
    fn metric_shapes() {
        let ts = 1_700_000_000_500_000_000;
        assert_eq!(point(ts, 2.0), json!([1_700_000_000.5, "2"]));
        assert_eq!(
            point(1_700_000_000_000_000_000, f64::NAN),
            json!([1_700_000_000i64, "NaN"])
        );
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        let out = QueryOutput {
            data: ResultData::Vector(vec![Sample {
                labels: Labels::new(),
                ts,
                value: 2.0,
            }]),
            stats: Stats::default(),
        };
        let v = serde_json::to_value(query_response(&out, true, Direction::Backward)).unwrap();
        assert_eq!(v["status"], "success");
        assert_eq!(v["data"]["resultType"], "vector");
        assert_eq!(v["data"]["result"][0]["value"][1], "2");
        assert!(v["data"].get("encodingFlags").is_none());
        assert!(v["data"]["stats"]["summary"]["execTime"].is_number());
        let out = QueryOutput {
            data: ResultData::Matrix(vec![Series {
                labels: Labels::from_pairs([("a", "b")]),
                points: vec![(ts, 2.0)],
            }]),
            stats: Stats::default(),
        };
        let v = serde_json::to_value(query_response(&out, false, Direction::Backward)).unwrap();
        assert_eq!(v["data"]["result"][0]["metric"]["a"], "b");
        assert_eq!(v["data"]["result"][0]["values"][0][1], "2");
        let out = QueryOutput {
            data: ResultData::Scalar { ts, value: 3.0 },
            stats: Stats::default(),
        };
        let v = serde_json::to_value(query_response(&out, false, Direction::Backward)).unwrap();
        assert_eq!(v["data"]["result"], json!([1_700_000_000.5, "3"]));
    }
}
