//! Sending validated streams to their ingesters: one `Push` per ingester
//! holding all of its streams, sent concurrently; a push succeeds once every
//! stream has reached its write quorum.
//!
//! With an in-process ring (`lucia all`) every ingester lives in this
//! process: the push is a function call, without encoding the request to
//! protobuf, sending it through a loopback socket and decoding it again.
//! Rings in Consul always use gRPC.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use lucia_common::ring::{RingSnapshot, stream_token, write_quorum};
use lucia_common::tenant::ORG_ID_METADATA;
use lucia_proto::ingester::ingester_client::IngesterClient;
use lucia_proto::logproto::{PushRequest, StreamAdapter};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::transport::{Channel, Endpoint};

use crate::ingester::Ingester;
use crate::validation::ValidStream;

/// The ingesters serving in this process, by their ring address.
static LOCAL_INGESTERS: LazyLock<Mutex<HashMap<String, Arc<Ingester>>>> =
    LazyLock::new(Default::default);

/// Makes `ingester` reachable in-process at `addr` for distributors of an
/// in-process ring.
pub(crate) fn register_local(addr: String, ingester: Arc<Ingester>) {
    LOCAL_INGESTERS.lock().insert(addr, ingester);
}

/// Takes the ingester at `addr` out of in-process reach (it is stopping).
pub(crate) fn unregister_local(addr: &str) {
    LOCAL_INGESTERS.lock().remove(addr);
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("at least {needed} live replicas required, could only find {found}")]
    TooFewReplicas { needed: usize, found: usize },
    #[error("push to ingester {addr} failed: {message}")]
    Ingester {
        addr: String,
        code: tonic::Code,
        /// The ingester's own message, passed on as is.
        message: String,
    },
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngesterLabel {
    pub ingester: String,
}

/// Lazily connected channels to ingesters, keyed by address.
pub struct Fanout {
    channels: Mutex<HashMap<String, Channel>>,
    timeout: Duration,
    failures: Family<IngesterLabel, Counter>,
    /// The ring is in-process: ingesters registered here are called
    /// directly.
    in_process: bool,
}

impl Fanout {
    pub fn new(
        timeout: Duration,
        failures: Family<IngesterLabel, Counter>,
        in_process: bool,
    ) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            timeout,
            failures,
            in_process,
        }
    }

    fn client(&self, addr: &str) -> Result<IngesterClient<Channel>, tonic::Status> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(addr) {
            return Ok(IngesterClient::new(channel.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|err| {
                tonic::Status::internal(format!("invalid ingester address {addr:?}: {err}"))
            })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(IngesterClient::new(channel))
    }

    /// Sends `streams` of `tenant` to their replicas in `ring`, returning
    /// once each stream has `write_quorum(replication_factor)` successes;
    /// calls still running then finish in the background.
    pub async fn push(
        self: &Arc<Self>,
        ring: &RingSnapshot,
        replication_factor: usize,
        tenant: &str,
        streams: Vec<ValidStream>,
    ) -> Result<(), FanoutError> {
        if streams.is_empty() {
            return Ok(());
        }
        let quorum = write_quorum(replication_factor);
        // Which streams go to which ingester, and how many failures each
        // stream can afford.
        let mut ingesters: Vec<(String, Vec<usize>)> = Vec::new();
        let mut by_addr: HashMap<&str, usize> = HashMap::new();
        let mut tolerated = Vec::with_capacity(streams.len());
        let mut uses = Vec::with_capacity(streams.len());
        for (index, stream) in streams.iter().enumerate() {
            let replicas = ring.replicas(stream_token(tenant, &stream.labels), replication_factor);
            if replicas.len() < quorum {
                return Err(FanoutError::TooFewReplicas {
                    needed: quorum,
                    found: replicas.len(),
                });
            }
            tolerated.push(replicas.len() - quorum);
            uses.push(replicas.len());
            for replica in replicas {
                let slot = *by_addr.entry(replica.addr.as_str()).or_insert_with(|| {
                    ingesters.push((replica.addr.clone(), Vec::new()));
                    ingesters.len() - 1
                });
                ingesters[slot].1.push(index);
            }
        }

        // Build one request per ingester; a stream's last use moves it.
        let mut adapters: Vec<Option<StreamAdapter>> = streams
            .into_iter()
            .map(|stream| {
                Some(StreamAdapter {
                    labels: stream.labels.to_string(),
                    hash: stream.labels.stable_hash(),
                    entries: stream.entries,
                })
            })
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (slot, (addr, indices)) in ingesters.iter().enumerate() {
            let mut request = PushRequest {
                streams: Vec::with_capacity(indices.len()),
            };
            for &index in indices {
                uses[index] -= 1;
                let adapter = if uses[index] == 0 {
                    adapters[index].take()
                } else {
                    adapters[index].clone()
                };
                request.streams.extend(adapter);
            }
            let this = Arc::clone(self);
            let tx = tx.clone();
            let addr = addr.clone();
            let tenant = tenant.to_string();
            tokio::spawn(async move {
                let result = this.send(&addr, &tenant, request).await;
                if result.is_err() {
                    this.failures
                        .get_or_create(&IngesterLabel { ingester: addr })
                        .inc();
                }
                let _ = tx.send((slot, result));
            });
        }
        drop(tx);

        let mut succeeded = vec![0usize; adapters.len()];
        let mut failed = vec![0usize; adapters.len()];
        let mut pending = adapters.len();
        while let Some((slot, result)) = rx.recv().await {
            for &index in &ingesters[slot].1 {
                match &result {
                    Ok(()) => {
                        succeeded[index] += 1;
                        if succeeded[index] == quorum {
                            pending -= 1;
                        }
                    }
                    Err(status) => {
                        failed[index] += 1;
                        if failed[index] > tolerated[index] {
                            return Err(FanoutError::Ingester {
                                addr: ingesters[slot].0.clone(),
                                code: status.code(),
                                message: status.message().to_string(),
                            });
                        }
                    }
                }
            }
            if pending == 0 {
                return Ok(());
            }
        }
        // Every call answered without quorum for some stream: only
        // possible if a task died.
        Err(FanoutError::Ingester {
            addr: "(all)".into(),
            code: tonic::Code::Internal,
            message: "push to ingesters ended without an answer from every replica".into(),
        })
    }

    async fn send(
        &self,
        addr: &str,
        tenant: &str,
        request: PushRequest,
    ) -> Result<(), tonic::Status> {
        let local = self
            .in_process
            .then(|| LOCAL_INGESTERS.lock().get(addr).cloned())
            .flatten();
        // Both ways answer alike: the same timeout, errors and logs.
        let outcome = match local {
            Some(ingester) => {
                let push = async {
                    ingester
                        .push(tenant, request)
                        .await
                        .map_err(tonic::Status::from)
                };
                tokio::time::timeout(self.timeout, push).await
            }
            None => {
                let mut client = self.client(addr)?;
                let mut request = tonic::Request::new(request);
                let org_id = tenant.parse().map_err(|_| {
                    tonic::Status::internal(format!("tenant {tenant:?} is not valid metadata"))
                })?;
                request.metadata_mut().insert(ORG_ID_METADATA, org_id);
                request.set_timeout(self.timeout);
                let push = async { client.push(request).await.map(|_| ()) };
                tokio::time::timeout(self.timeout, push).await
            }
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => {
                tracing::warn!(ingester = addr, code = ?status.code(), message = status.message(), "push to ingester failed");
                Err(status)
            }
            Err(_) => {
                tracing::warn!(ingester = addr, "push to ingester timed out");
                Err(tonic::Status::deadline_exceeded(format!(
                    "push to ingester {addr} timed out after {:?}",
                    self.timeout
                )))
            }
        }
    }
}
