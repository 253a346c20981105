//! The cluster [`LogSource`]: recent entries from every ingester of the ring
//! (gRPC `Query`/`Series`) and flushed chunks from the object store, merged
//! per stream without the duplicates that replication and flushing create.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt as _;
use lucia_common::chunk::Entry;
use lucia_common::labels::Labels;
use lucia_common::matchers::{Matcher, matches_all};
use lucia_common::ring::{InstanceState, Ring};
use lucia_common::store::ChunkStore;
use lucia_common::tenant::ORG_ID_METADATA;
use lucia_proto::ingester::ingester_client::IngesterClient;
use lucia_proto::ingester::{self as proto, QueryRequest, SeriesRequest};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::QueryError;
use crate::source::{Direction, LogSource, SelectRequest, StreamData};

/// How many chunks are fetched from the store at once.
const FETCH_CONCURRENCY: usize = 8;

/// The selector sent to ingesters when the caller gave no matcher (the
/// ingester API needs one matcher that does not match the empty string):
/// every stream the distributor enriched carries `service_name`.
const ALL_STREAMS: &str = r#"{service_name=~".+"}"#;

/// Reads the ingesters of a ring and the chunk store.
pub struct ClusterSource {
    ring: Ring,
    replication_factor: usize,
    store: Option<ChunkStore>,
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ClusterSource {
    /// `store` is `None` when only ingesters are asked (tests).
    pub fn new(
        ring: Ring,
        replication_factor: usize,
        store: Option<ChunkStore>,
        timeout: Duration,
    ) -> Self {
        Self {
            ring,
            replication_factor: replication_factor.max(1),
            store,
            timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, addr: &str) -> Result<IngesterClient<Channel>, QueryError> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(addr) {
            return Ok(ingester_client(channel.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|err| {
                QueryError::Internal(format!("invalid ingester address {addr:?}: {err}"))
            })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(ingester_client(channel))
    }

    /// The addresses of the ingesters that hold data to read: ACTIVE ones,
    /// and LEAVING ones that have not flushed everything yet.
    fn ingesters(&self) -> Vec<String> {
        let snapshot = self.ring.snapshot();
        let mut addrs: Vec<String> = snapshot
            .instances()
            .iter()
            .filter(|i| matches!(i.state, InstanceState::Active | InstanceState::Leaving))
            .map(|i| i.addr.clone())
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Calls every ingester; tolerates up to `replication_factor - 1`
    /// failures (each stream then still has a replica that answered).
    async fn fan_out<T, F, Fut>(&self, call: F) -> Result<Vec<T>, QueryError>
    where
        F: Fn(IngesterClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let addrs = self.ingesters();
        let calls = addrs.iter().map(|addr| {
            let client = self.client(addr);
            let call = &call;
            async move {
                match client {
                    Ok(client) => call(client)
                        .await
                        .map_err(|status| format!("ingester {addr}: {}", status.message())),
                    Err(err) => Err(err.to_string()),
                }
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut ok = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(value) => ok.push(value),
                Err(err) => failures.push(err),
            }
        }
        if !failures.is_empty() {
            for failure in &failures {
                tracing::warn!(%failure, "ingester query failed");
            }
            if failures.len() >= self.replication_factor {
                return Err(QueryError::Internal(format!(
                    "too many ingesters failed ({} of {}, replication factor {}): {}",
                    failures.len(),
                    addrs.len(),
                    self.replication_factor,
                    failures.join("; ")
                )));
            }
        }
        Ok(ok)
    }

    async fn select_ingesters(
        &self,
        request: &SelectRequest,
    ) -> Result<Vec<(String, Vec<Entry>)>, QueryError> {
        let selector = selector_text(&request.matchers);
        let tenant = request.tenant.clone();
        let message = QueryRequest {
            selector,
            start: request.start,
            end: request.end,
            limit: u32::try_from(request.limit).unwrap_or(u32::MAX),
            direction: match request.direction {
                Direction::Forward => proto::Direction::Forward as i32,
                Direction::Backward => proto::Direction::Backward as i32,
            },
        };
        let answers = self
            .fan_out(|mut client| {
                let grpc = with_tenant(&tenant, message.clone());
                async move {
                    let mut stream = client.query(grpc?).await?.into_inner();
                    let mut out = Vec::new();
                    while let Some(batch) = stream.next().await {
                        for adapter in batch?.streams {
                            let entries = adapter.entries.into_iter().map(Entry::from);
                            out.push((adapter.labels, entries.collect::<Vec<_>>()));
                        }
                    }
                    Ok(out)
                }
            })
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    async fn select_store(
        &self,
        request: &SelectRequest,
    ) -> Result<Vec<(String, Vec<Entry>)>, QueryError> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        if request.end <= request.start {
            return Ok(Vec::new());
        }
        let index = store
            .list_index(&request.tenant, request.start, request.end - 1)
            .await
            .map_err(|err| QueryError::Internal(err.to_string()))?;
        let wanted: Vec<_> = index
            .into_iter()
            .filter(|entry| {
                Labels::parse(&entry.labels)
                    .map(|labels| matches_all(&request.matchers, &labels))
                    .unwrap_or(false)
            })
            .collect();
        let (start, end) = (request.start, request.end);
        let filter = request.line_filter.as_ref().map(|f| f.0.clone());
        let fetched: Vec<_> = futures::stream::iter(wanted)
            .map(|entry| {
                let filter = filter.clone();
                async move {
                    let chunk = store.fetch_chunk_filtered(&entry.key, filter).await?;
                    let entries: Vec<Entry> = chunk
                        .entries
                        .into_iter()
                        .filter(|e| e.ts >= start && e.ts < end)
                        .collect();
                    Ok::<_, lucia_common::store::StoreError>((entry.labels, entries))
                }
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        fetched
            .into_iter()
            .map(|r| r.map_err(|err| QueryError::Internal(err.to_string())))
            .collect()
    }

    async fn series_ingesters(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, QueryError> {
        let message = SeriesRequest {
            selector: selector_text(matchers),
            start,
            end,
        };
        let answers = self
            .fan_out(|mut client| {
                let grpc = with_tenant(tenant, message.clone());
                async move { Ok(client.series(grpc?).await?.into_inner().series) }
            })
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }
}

fn with_tenant<T>(tenant: &str, message: T) -> Result<tonic::Request<T>, tonic::Status> {
    let mut request = tonic::Request::new(message);
    let value = tenant
        .parse()
        .map_err(|_| tonic::Status::invalid_argument(format!("invalid tenant {tenant:?}")))?;
    request.metadata_mut().insert(ORG_ID_METADATA, value);
    Ok(request)
}

/// The selector text the ingester API takes.
/// A client whose answers may be large: a series list of 100,000 streams is
/// several MiB, over tonic's 4 MiB default.
fn ingester_client(channel: Channel) -> IngesterClient<Channel> {
    IngesterClient::new(channel).max_decoding_message_size(MAX_INGESTER_ANSWER_BYTES)
}

/// Largest gRPC message accepted from an ingester.
const MAX_INGESTER_ANSWER_BYTES: usize = 512 << 20;

fn selector_text(matchers: &[Matcher]) -> String {
    if matchers.iter().all(Matcher::matches_empty) {
        // The ingester rejects selectors that match everything; the
        // caller's matchers are applied again below.
        return ALL_STREAMS.to_string();
    }
    let parts: Vec<String> = matchers.iter().map(ToString::to_string).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Merges the parts of each stream (by label text, normalised), sorts them
/// in `direction`, drops exact duplicates (same timestamp and line) and keeps
/// at most `limit` entries per stream (0 = all).
pub fn merge_streams(
    parts: Vec<(String, Vec<Entry>)>,
    matchers: &[Matcher],
    direction: Direction,
    limit: usize,
) -> Vec<StreamData> {
    let mut by_stream: BTreeMap<String, (Labels, Vec<Entry>)> = BTreeMap::new();
    for (text, entries) in parts {
        if entries.is_empty() {
            continue;
        }
        let Ok(labels) = Labels::parse(&text) else {
            tracing::warn!(labels = %text, "skipping a stream with unparsable labels");
            continue;
        };
        if !matches_all(matchers, &labels) {
            continue;
        }
        by_stream
            .entry(labels.to_string())
            .or_insert_with(|| (labels, Vec::new()))
            .1
            .extend(entries);
    }
    by_stream
        .into_values()
        .map(|(labels, mut entries)| {
            entries.sort_by(|a, b| (a.ts, &a.line).cmp(&(b.ts, &b.line)));
            entries.dedup_by(|a, b| a.ts == b.ts && a.line == b.line);
            if direction == Direction::Backward {
                entries.reverse();
            }
            if limit > 0 {
                entries.truncate(limit);
            }
            StreamData { labels, entries }
        })
        .collect()
}

impl LogSource for ClusterSource {
    async fn select(&self, request: SelectRequest) -> Result<Vec<StreamData>, QueryError> {
        let (ingesters, store) =
            futures::join!(self.select_ingesters(&request), self.select_store(&request));
        let mut parts = ingesters?;
        parts.extend(store?);
        Ok(merge_streams(
            parts,
            &request.matchers,
            request.direction,
            request.limit,
        ))
    }

    async fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        let mut texts = self.series_ingesters(tenant, matchers, start, end).await?;
        if let Some(store) = &self.store
            && end > start
        {
            let index = store
                .list_index(tenant, start, end - 1)
                .await
                .map_err(|err| QueryError::Internal(err.to_string()))?;
            texts.extend(index.into_iter().map(|e| e.labels));
        }
        let mut seen = HashSet::new();
        let mut out: Vec<Labels> = texts
            .into_iter()
            .filter_map(|text| Labels::parse(&text).ok())
            .filter(|labels| matches_all(matchers, labels))
            .filter(|labels| seen.insert(labels.to_string()))
            .collect();
        out.sort_by_key(ToString::to_string);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(ts: i64, line: &str) -> Entry {
        Entry {
            ts,
            line: line.into(),
            metadata: vec![],
        }
    }

    #[test]
    fn merge_dedupes_and_orders() {
        let parts = vec![
            (r#"{app="a"}"#.to_string(), vec![e(1, "x"), e(3, "z")]),
            // Same stream, labels in another order: a replica or the store.
            (
                r#"{app="a"}"#.to_string(),
                vec![e(1, "x"), e(2, "y"), e(3, "other")],
            ),
            (r#"{app="b"}"#.to_string(), vec![e(5, "b")]),
        ];
        let merged = merge_streams(parts.clone(), &[], Direction::Forward, 0);
        assert_eq!(merged.len(), 2);
        let lines: Vec<(i64, &str)> = merged[0]
            .entries
            .iter()
            .map(|e| (e.ts, e.line.as_str()))
            .collect();
        assert_eq!(lines, vec![(1, "x"), (2, "y"), (3, "other"), (3, "z")]);

        let backward = merge_streams(parts, &[], Direction::Backward, 2);
        let ts: Vec<i64> = backward[0].entries.iter().map(|e| e.ts).collect();
        assert_eq!(ts, vec![3, 3]);
        assert_eq!(backward[1].entries.len(), 1);
    }

    #[test]
    fn selector_text_never_matches_everything() {
        assert_eq!(selector_text(&[]), ALL_STREAMS);
        let m = lucia_common::matchers::parse_selector(r#"{app="a", env!="dev"}"#).unwrap();
        assert_eq!(selector_text(&m), r#"{app="a", env!="dev"}"#);
    }
}
