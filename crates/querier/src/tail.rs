//! `GET /loki/api/v1/tail`: a websocket that sends new entries of the
//! selected streams as they arrive (polled every `tail_poll_period`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use lucia_common::labels::Labels;
use lucia_common::tenant::tenant_from_headers;
use lucia_common::time::now_nanos;
use serde_json::json;

use crate::QueryError;
use crate::api::Querier;
use crate::api::encode;
use crate::api::params::Params;
use crate::engine::pipeline::Pipeline;
use crate::eval::{ResultEntry, StreamResult};
use crate::source::{Direction, LogSource, SelectRequest, StreamData};

/// Loki's longest `delay_for`, in seconds.
const MAX_DELAY_SECS: usize = 5;
const SECOND: i64 = 1_000_000_000;

struct TailRequest {
    tenant: String,
    matchers: Vec<lucia_common::matchers::Matcher>,
    /// The query's stages (line filters, parsers, ...), run on each entry.
    pipeline: Pipeline,
    start: i64,
    delay: i64,
    limit: usize,
}

fn tail_request(
    multi_tenant: bool,
    headers: &HeaderMap,
    raw: Option<&str>,
) -> Result<TailRequest, QueryError> {
    let tenant = tenant_from_headers(headers, multi_tenant)?;
    let params = Params::new(raw, headers, &[]);
    let query = params.query()?;
    let lucia_logql::ast::Expr::Log(log) =
        lucia_logql::parse(query).map_err(|err| QueryError::BadRequest(err.to_string()))?
    else {
        return Err(QueryError::BadRequest(
            "tail only supports log queries: send a stream selector".into(),
        ));
    };
    let pipeline = Pipeline::compile(&log, None)?;
    let matchers = log.matchers;
    let delay_for = match params.get("delay_for") {
        None => 0,
        Some(v) => v.trim().parse::<usize>().map_err(|_| {
            QueryError::BadRequest(format!("invalid delay_for {v:?}: use whole seconds"))
        })?,
    };
    if delay_for > MAX_DELAY_SECS {
        return Err(QueryError::BadRequest(format!(
            "delay_for can't be greater than {MAX_DELAY_SECS}"
        )));
    }
    let limit = params.usize("limit", 100)?;
    let start = params
        .time("start")?
        .unwrap_or_else(|| now_nanos() - 3600 * SECOND);
    Ok(TailRequest {
        tenant,
        matchers,
        pipeline,
        start,
        delay: delay_for as i64 * SECOND,
        limit,
    })
}

pub async fn tail<S: LogSource + 'static>(
    State(q): State<Arc<Querier<S>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let request = match tail_request(q.multi_tenant, &headers, raw.as_deref()) {
        Ok(r) => r,
        Err(err) => return err.into_response(),
    };
    if let Err(err) = q.limits.check_entries(request.limit) {
        return err.into_response();
    }
    ws.on_upgrade(move |socket| run(q, request, socket))
}

async fn run<S: LogSource + 'static>(
    q: Arc<Querier<S>>,
    request: TailRequest,
    mut socket: WebSocket,
) {
    // Entries are sent in time order from a watermark; the ones at the
    // watermark's timestamp are remembered so that a later poll sends each
    // once.
    let mut from = request.start;
    let mut sent_at_from: HashSet<(String, String)> = HashSet::new();
    let mut first = true;
    let mut ticker = tokio::time::interval(q.tail_poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = q.shutdown.cancelled() => break,
            _ = ticker.tick() => {}
            message = socket.recv() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        }
        let until = now_nanos() - request.delay;
        if until <= from {
            continue;
        }
        let select = SelectRequest {
            tenant: request.tenant.clone(),
            matchers: request.matchers.clone(),
            start: from,
            end: until,
            direction: Direction::Forward,
            // The first answer is capped like Loki's (the latest `limit`).
            limit: 0,
            line_filter: None,
        };
        let streams = match q.source().select(select).await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, "tail poll failed");
                let _ = socket
                    .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1011,
                        reason: err.to_string().chars().take(120).collect::<String>().into(),
                    })))
                    .await;
                return;
            }
        };
        let (batch, next_from, next_seen) =
            new_entries(streams, from, &sent_at_from, first.then_some(request.limit));
        first = false;
        from = next_from;
        sent_at_from = next_seen;
        let batch = run_pipeline(&request.pipeline, batch);
        if batch.is_empty() {
            continue;
        }
        let body = json!({
            "streams": encode::streams(&batch, false, Direction::Forward),
            "dropped_entries": null,
        });
        if socket
            .send(Message::Text(body.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// The entries that pass the query's stages, grouped by their final labels
/// (stream labels, structured metadata and parsed labels), in time order.
fn run_pipeline(pipeline: &Pipeline, batch: Vec<StreamData>) -> Vec<StreamResult> {
    let mut grouped: BTreeMap<Labels, Vec<ResultEntry>> = BTreeMap::new();
    for stream in batch {
        let mut per_stream = pipeline.for_stream(&stream.labels);
        for entry in stream.entries {
            let Some((line, labels)) = per_stream.process(entry.ts, &entry.line, &entry.metadata)
            else {
                continue;
            };
            grouped
                .entry(labels.labels().clone())
                .or_default()
                .push(ResultEntry {
                    ts: entry.ts,
                    line,
                    structured_metadata: labels.structured_metadata().clone(),
                    parsed: labels.parsed().clone(),
                });
        }
    }
    grouped
        .into_iter()
        .map(|(labels, mut entries)| {
            entries.sort_by_key(|e| e.ts);
            StreamResult { labels, entries }
        })
        .collect()
}

/// The entries not sent yet, the new watermark, and what was sent at it.
/// With `cap`, only the latest `cap` entries are kept.
fn new_entries(
    streams: Vec<StreamData>,
    from: i64,
    sent_at_from: &HashSet<(String, String)>,
    cap: Option<usize>,
) -> (Vec<StreamData>, i64, HashSet<(String, String)>) {
    let mut out = Vec::new();
    let mut all_ts: Vec<i64> = Vec::new();
    for mut stream in streams {
        let key = stream.labels.to_string();
        stream
            .entries
            .retain(|e| e.ts > from || !sent_at_from.contains(&(key.clone(), e.line.clone())));
        if !stream.entries.is_empty() {
            all_ts.extend(stream.entries.iter().map(|e| e.ts));
            out.push(stream);
        }
    }
    if let Some(cap) = cap
        && all_ts.len() > cap
    {
        all_ts.sort_unstable();
        let cutoff = all_ts[all_ts.len() - cap];
        for stream in &mut out {
            stream.entries.retain(|e| e.ts >= cutoff);
        }
    }
    let max = out
        .iter()
        .flat_map(|s| s.entries.iter().map(|e| e.ts))
        .max();
    match max {
        None => (out, from, sent_at_from.clone()),
        Some(max) => {
            let mut seen: HashSet<(String, String)> = if max == from {
                sent_at_from.clone()
            } else {
                HashSet::new()
            };
            for stream in &out {
                let key = stream.labels.to_string();
                for e in stream.entries.iter().filter(|e| e.ts == max) {
                    seen.insert((key.clone(), e.line.clone()));
                }
            }
            (out, max, seen)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucia_common::chunk::Entry;
    use lucia_common::labels::Labels;

    fn stream(entries: &[(i64, &str)]) -> StreamData {
        StreamData {
            labels: Labels::from_pairs([("app", "a")]),
            entries: entries
                .iter()
                .map(|(ts, line)| Entry {
                    ts: *ts,
                    line: (*line).into(),
                    metadata: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn the_query_pipeline_filters_and_labels_tailed_entries() {
        let lucia_logql::ast::Expr::Log(log) =
            lucia_logql::parse(r#"{app="a"} |= "keep" | logfmt"#).unwrap()
        else {
            panic!("a log query")
        };
        let pipeline = Pipeline::compile(&log, None).unwrap();
        let out = run_pipeline(
            &pipeline,
            vec![stream(&[
                (2, "level=info keep"),
                (1, "level=warn keep"),
                (3, "drop me"),
            ])],
        );
        assert_eq!(out.len(), 2, "{out:?}");
        let lines: Vec<(&str, Option<&str>)> = out
            .iter()
            .flat_map(|s| {
                s.entries
                    .iter()
                    .map(|e| (e.line.as_str(), s.labels.get("level")))
            })
            .collect();
        assert!(lines.contains(&("level=info keep", Some("info"))));
        assert!(lines.contains(&("level=warn keep", Some("warn"))));
        assert!(out[0].entries[0].parsed.get("level").is_some());
    }

    #[test]
    fn each_entry_is_sent_once() {
        let (batch, from, seen) = new_entries(
            vec![stream(&[(1, "a"), (2, "b")])],
            0,
            &HashSet::new(),
            None,
        );
        assert_eq!(batch[0].entries.len(), 2);
        assert_eq!(from, 2);
        // The next poll starts at the watermark and sees "b" again, plus a
        // late entry with the same timestamp.
        let (batch, from, _) = new_entries(
            vec![stream(&[(2, "b"), (2, "c"), (3, "d")])],
            from,
            &seen,
            None,
        );
        let lines: Vec<&str> = batch[0].entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, vec!["c", "d"]);
        assert_eq!(from, 3);
        let (batch, _, _) = new_entries(
            vec![stream(&[(1, "a"), (2, "b"), (3, "c")])],
            0,
            &HashSet::new(),
            Some(2),
        );
        assert_eq!(batch[0].entries.len(), 2);
        assert_eq!(batch[0].entries[0].line, "b");
    }
}
