//! The cluster's messages over HTTP: the server on the cluster listener,
//! and the loops that probe, sync and broadcast.
//!
//! | path | body | answer |
//! |---|---|---|
//! | `POST /cluster/v1/ping` | [`Ping`]: sender and its live members | the same of the receiver |
//! | `POST /cluster/v1/pushpull` | [`StateMessage`]: the sender's full state | the receiver's full state |
//! | `POST /cluster/v1/broadcast` | [`StateMessage`]: changes | 204 |
//! | `POST /cluster/v1/leave` | [`Ping`] (members empty) | 204 |
//!
//! Every message names its sender, so any message counts as a sign of
//! life; a message with another cluster label is refused with 400.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use lucia_common::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Cluster, PeerInfo, TenantState, coalesce};

/// Full states can be large (many silences); refuse only the absurd.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A ping, its answer, and a leave.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ping {
    pub label: String,
    pub from: PeerInfo,
    #[serde(default)]
    pub members: Vec<PeerInfo>,
}

/// A full state or a set of changes.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateMessage {
    pub label: String,
    pub from: PeerInfo,
    pub tenants: Vec<TenantState>,
}

impl Cluster {
    fn me(&self) -> PeerInfo {
        PeerInfo {
            name: self.name.clone(),
            address: self.address.clone(),
        }
    }

    fn ping_message(&self) -> Ping {
        Ping {
            label: self.config.label.clone(),
            from: self.me(),
            members: self.members.lock().alive_peers(Instant::now()),
        }
    }

    /// The refusal of a message with another cluster label.
    fn refuse_label(&self, label: &str) -> Option<Response> {
        if label == self.config.label {
            return None;
        }
        Some((
            StatusCode::BAD_REQUEST,
            format!(
                "cluster label {label:?} differs from this member's {:?}: give every member the same --cluster.label",
                self.config.label
            ),
        )
            .into_response())
    }

    /// Notes that `peer` spoke; a member that just became alive gets a
    /// full sync.
    fn heard_from(self: &Arc<Self>, peer: &PeerInfo) {
        let fresh = self.members.lock().heard_from(peer, Instant::now());
        if fresh {
            tracing::info!(peer = %peer.name, address = %peer.address, "cluster member alive");
            let me = self.clone();
            let address = peer.address.clone();
            tokio::spawn(async move { pushpull(&me, &address).await });
        }
        self.update_gauges();
    }

    fn full_state(&self) -> Vec<TenantState> {
        self.state().map(|s| s.full_state()).unwrap_or_default()
    }

    /// Merges a peer's state; off the async workers, since merging
    /// persists (fsync).
    async fn merge(self: &Arc<Self>, tenants: Vec<TenantState>) {
        let Some(state) = self.state() else {
            return;
        };
        if let Err(err) = tokio::task::spawn_blocking(move || state.merge(tenants)).await {
            tracing::error!(%err, "merging a peer's state failed");
        }
    }

    fn url(address: &str, path: &str) -> String {
        format!("http://{address}/cluster/v1/{path}")
    }

    /// Posts `body` and decodes the answer (`None` for 204).
    async fn call<B: Serialize, A: for<'de> Deserialize<'de>>(
        &self,
        address: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Option<A>, String> {
        let response = self
            .client
            .post(Self::url(address, path))
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{status}: {text}"));
        }
        response.json().await.map(Some).map_err(|e| e.to_string())
    }
}

/// Serves the cluster's routes on `listener` until `shutdown`.
pub fn serve(
    cluster: Arc<Cluster>,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/cluster/v1/ping", post(on_ping))
        .route("/cluster/v1/pushpull", post(on_pushpull))
        .route("/cluster/v1/broadcast", post(on_broadcast))
        .route("/cluster/v1/leave", post(on_leave))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .with_state(cluster);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(%err, "the cluster listener failed");
        }
    })
}

async fn on_ping(State(cluster): State<Arc<Cluster>>, Json(ping): Json<Ping>) -> Response {
    if let Some(refused) = cluster.refuse_label(&ping.label) {
        return refused;
    }
    cluster.heard_from(&ping.from);
    cluster
        .members
        .lock()
        .learned(&ping.members, Instant::now());
    Json(cluster.ping_message()).into_response()
}

async fn on_pushpull(
    State(cluster): State<Arc<Cluster>>,
    Json(msg): Json<StateMessage>,
) -> Response {
    if let Some(refused) = cluster.refuse_label(&msg.label) {
        return refused;
    }
    // Answer with the state before the merge: the sender has its own.
    let ours = cluster.full_state();
    cluster.merge(msg.tenants).await;
    cluster.heard_from(&msg.from);
    Json(StateMessage {
        label: cluster.config.label.clone(),
        from: cluster.me(),
        tenants: ours,
    })
    .into_response()
}

async fn on_broadcast(
    State(cluster): State<Arc<Cluster>>,
    Json(msg): Json<StateMessage>,
) -> Response {
    if let Some(refused) = cluster.refuse_label(&msg.label) {
        return refused;
    }
    cluster.merge(msg.tenants).await;
    cluster.heard_from(&msg.from);
    StatusCode::NO_CONTENT.into_response()
}

async fn on_leave(State(cluster): State<Arc<Cluster>>, Json(ping): Json<Ping>) -> Response {
    if let Some(refused) = cluster.refuse_label(&ping.label) {
        return refused;
    }
    tracing::info!(peer = %ping.from.name, "cluster member left");
    cluster.members.lock().left(&ping.from.name);
    cluster.update_gauges();
    StatusCode::NO_CONTENT.into_response()
}

/// Pings one address; the answer is a sign of life of whoever answers.
async fn probe(cluster: Arc<Cluster>, address: String) {
    let timeout = cluster.config.probe_timeout.0;
    let ping = cluster.ping_message();
    match cluster
        .call::<_, Ping>(&address, "ping", &ping, timeout)
        .await
    {
        Ok(Some(answer)) => {
            if answer.label != cluster.config.label {
                tracing::warn!(%address, label = %answer.label, "cluster peer has another label, ignoring it");
                return;
            }
            cluster
                .members
                .lock()
                .seed_answered(&address, &answer.from.name);
            cluster.heard_from(&answer.from);
            cluster
                .members
                .lock()
                .learned(&answer.members, Instant::now());
        }
        Ok(None) => tracing::debug!(%address, "cluster ping answered without a body"),
        Err(err) => tracing::debug!(%address, %err, "cluster ping failed"),
    }
}

/// Pings every member due every probe interval.
pub async fn probe_loop(cluster: Arc<Cluster>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(cluster.config.probe_interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let targets = cluster.members.lock().probe_targets(Instant::now());
        for address in targets {
            tokio::spawn(probe(cluster.clone(), address));
        }
        cluster.update_gauges();
    }
}

/// Exchanges the full state with one member.
async fn pushpull(cluster: &Arc<Cluster>, address: &str) {
    let msg = StateMessage {
        label: cluster.config.label.clone(),
        from: cluster.me(),
        tenants: cluster.full_state(),
    };
    let timeout = cluster.config.tcp_timeout.0;
    match cluster
        .call::<_, StateMessage>(address, "pushpull", &msg, timeout)
        .await
    {
        Ok(Some(answer)) => {
            cluster.merge(answer.tenants).await;
            tracing::debug!(%address, "cluster full sync done");
        }
        Ok(None) => {}
        Err(err) => tracing::warn!(%address, %err, "cluster full sync failed"),
    }
}

/// Exchanges the full state with every live member each push-pull
/// interval.
pub async fn pushpull_loop(cluster: Arc<Cluster>, shutdown: Shutdown) {
    let interval = cluster.config.pushpull_interval.0;
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let peers = cluster.members.lock().alive_peers(Instant::now());
        for peer in peers {
            let cluster = cluster.clone();
            tokio::spawn(async move { pushpull(&cluster, &peer.address).await });
        }
    }
}

/// Sends queued local changes to every live member. Each send is its own
/// task, so that a slow member never delays the others (a late log entry
/// would let a peer notify twice); merges do not care about order.
pub async fn broadcast_loop(
    cluster: Arc<Cluster>,
    mut inbox: mpsc::UnboundedReceiver<TenantState>,
    shutdown: Shutdown,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            got = inbox.recv() => match got {
                Some(change) => change,
                None => return,
            },
        };
        let mut changes = vec![first];
        while let Ok(more) = inbox.try_recv() {
            changes.push(more);
        }
        let msg = Arc::new(StateMessage {
            label: cluster.config.label.clone(),
            from: cluster.me(),
            tenants: coalesce(changes),
        });
        let peers = cluster.members.lock().alive_peers(Instant::now());
        for peer in peers {
            let cluster = cluster.clone();
            let msg = msg.clone();
            tokio::spawn(async move {
                let timeout = cluster.config.tcp_timeout.0;
                if let Err(err) = cluster
                    .call::<_, serde_json::Value>(&peer.address, "broadcast", &*msg, timeout)
                    .await
                {
                    tracing::warn!(peer = %peer.name, %err, "cluster broadcast failed; the next full sync repairs it");
                }
            });
        }
    }
}

/// Tells every live member that this one leaves, so that their positions
/// move at once rather than after the failure timeout.
pub async fn leave(cluster: &Arc<Cluster>) {
    let msg = Ping {
        label: cluster.config.label.clone(),
        from: cluster.me(),
        members: Vec::new(),
    };
    let peers = cluster.members.lock().alive_peers(Instant::now());
    let timeout = cluster.config.probe_timeout.0.max(Duration::from_secs(1));
    let sends = peers
        .iter()
        .map(|p| cluster.call::<_, serde_json::Value>(&p.address, "leave", &msg, timeout));
    futures::future::join_all(sends).await;
    tracing::info!("left the cluster");
}
