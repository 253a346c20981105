//! Loki's JSON shapes.

use std::collections::BTreeMap;

use lucia_common::chunk::Entry;
use lucia_common::labels::Labels;
use serde_json::{Map, Value, json};

use crate::eval::{Point, QueryOutput, ResultData, Stats};
use crate::source::StreamData;

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
pub fn point(p: Point) -> Value {
    let millis = p.ts.div_euclid(1_000_000);
    let secs = millis as f64 / 1000.0;
    let ts = serde_json::Number::from_f64(secs).map_or(Value::Null, Value::Number);
    // Whole seconds print without a fraction, as Go does.
    let ts = if millis % 1000 == 0 {
        Value::from(millis / 1000)
    } else {
        ts
    };
    json!([ts, format_value(p.value)])
}

fn entry_value(entry: &Entry, categorize: bool) -> Value {
    let ts = Value::String(entry.ts.to_string());
    let line = Value::String(entry.line.clone());
    if categorize && !entry.metadata.is_empty() {
        let md: Map<String, Value> = entry
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!([ts, line, {"structuredMetadata": md}])
    } else {
        json!([ts, line])
    }
}

/// Streams as Loki returns them. Without categorized labels, structured
/// metadata joins the stream labels (an entry with other metadata lands in
/// another stream), as Loki does.
pub fn streams(streams: &[StreamData], categorize: bool) -> Value {
    let mut out = Vec::with_capacity(streams.len());
    for stream in streams {
        if categorize || stream.entries.iter().all(|e| e.metadata.is_empty()) {
            let values: Vec<Value> = stream
                .entries
                .iter()
                .map(|e| entry_value(e, categorize))
                .collect();
            out.push(json!({"stream": labels_object(&stream.labels), "values": values}));
            continue;
        }
        // Split by metadata, keeping first-seen order of the label sets.
        let mut order: Vec<String> = Vec::new();
        let mut groups: BTreeMap<String, (Labels, Vec<Value>)> = BTreeMap::new();
        for entry in &stream.entries {
            let mut labels = stream.labels.clone();
            for (name, value) in &entry.metadata {
                labels.insert(name.clone(), value.clone());
            }
            let key = labels.to_string();
            let group = groups.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (labels, Vec::new())
            });
            group.1.push(entry_value(entry, false));
        }
        for key in order {
            if let Some((labels, values)) = groups.remove(&key) {
                out.push(json!({"stream": labels_object(&labels), "values": values}));
            }
        }
    }
    Value::Array(out)
}

/// Loki's `stats` object (the summary is filled; the per-component parts
/// are present with zeros so that clients reading them find numbers).
pub fn stats(stats: &Stats) -> Value {
    let per_sec = |n: u64| {
        if stats.exec_seconds > 0.0 {
            (n as f64 / stats.exec_seconds) as u64
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
            "execTime": stats.exec_seconds,
            "queueTime": 0,
            "subqueries": 0,
            "totalEntriesReturned": stats.entries_returned,
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

/// The full `query`/`query_range` answer.
pub fn query_response(output: &QueryOutput, categorize: bool) -> Value {
    let (result_type, result) = match &output.data {
        ResultData::Streams(s) => ("streams", streams(s, categorize)),
        ResultData::Vector(samples) => (
            "vector",
            Value::Array(
                samples
                    .iter()
                    .map(|s| json!({"metric": labels_object(&s.labels), "value": point(s.point)}))
                    .collect(),
            ),
        ),
        ResultData::Matrix(series) => (
            "matrix",
            Value::Array(
                series
                    .iter()
                    .map(|s| {
                        let values: Vec<Value> = s.points.iter().map(|p| point(*p)).collect();
                        json!({"metric": labels_object(&s.labels), "values": values})
                    })
                    .collect(),
            ),
        ),
        ResultData::Scalar(p) => ("scalar", point(*p)),
    };
    let mut data = json!({
        "resultType": result_type,
        "result": result,
        "stats": stats(&output.stats),
    });
    if categorize
        && matches!(output.data, ResultData::Streams(_))
        && let Some(map) = data.as_object_mut()
    {
        map.insert("encodingFlags".into(), json!([CATEGORIZE_LABELS]));
    }
    json!({"status": "success", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Sample, Series};

    fn entry(ts: i64, line: &str, md: &[(&str, &str)]) -> Entry {
        Entry {
            ts,
            line: line.into(),
            metadata: md.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        }
    }

    #[test]
    fn streams_split_metadata_unless_categorized() {
        let data = vec![StreamData {
            labels: Labels::from_pairs([("app", "a")]),
            entries: vec![entry(2, "two", &[("trace", "t2")]), entry(1, "one", &[])],
        }];
        let plain = streams(&data, false);
        assert_eq!(
            plain,
            json!([
                {"stream": {"app": "a", "trace": "t2"}, "values": [["2", "two"]]},
                {"stream": {"app": "a"}, "values": [["1", "one"]]}
            ])
        );
        let categorized = streams(&data, true);
        assert_eq!(
            categorized,
            json!([{"stream": {"app": "a"}, "values": [
                ["2", "two", {"structuredMetadata": {"trace": "t2"}}],
                ["1", "one"]
            ]}])
        );
    }

    #[test]
    fn metric_shapes() {
        let p = Point {
            ts: 1_700_000_000_500_000_000,
            value: 2.0,
        };
        assert_eq!(point(p), json!([1_700_000_000.5, "2"]));
        assert_eq!(
            point(Point {
                ts: 1_700_000_000_000_000_000,
                value: f64::NAN
            }),
            json!([1_700_000_000i64, "NaN"])
        );
        let out = QueryOutput {
            data: ResultData::Vector(vec![Sample {
                labels: Labels::new(),
                point: p,
            }]),
            stats: Stats::default(),
        };
        let v = query_response(&out, true);
        assert_eq!(v["status"], "success");
        assert_eq!(v["data"]["resultType"], "vector");
        assert_eq!(v["data"]["result"][0]["value"][1], "2");
        assert!(v["data"].get("encodingFlags").is_none());
        assert!(v["data"]["stats"]["summary"]["execTime"].is_number());
        let out = QueryOutput {
            data: ResultData::Matrix(vec![Series {
                labels: Labels::from_pairs([("a", "b")]),
                points: vec![p],
            }]),
            stats: Stats::default(),
        };
        let v = query_response(&out, false);
        assert_eq!(v["data"]["result"][0]["metric"]["a"], "b");
        assert_eq!(v["data"]["result"][0]["values"][0][1], "2");
    }
}
