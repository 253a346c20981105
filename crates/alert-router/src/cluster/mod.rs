//! High availability: several alert-routers share their silences and
//! notification logs so that one notification goes out per group.
//!
//! What it does is Alertmanager's: every member receives every alert (from
//! Prometheus, which sends to all of them); silences and notification-log
//! entries are replicated and merged with Alertmanager's rules (the later
//! `updatedAt` of a silence wins, the later timestamp of a log entry per
//! group key and receiver wins); before notifying, a member waits
//! `position × peer_timeout`, its position being its index among the live
//! members sorted by name, and then skips what a peer already notified.
//!
//! How it does it is our own, deliberately simpler than memberlist's gossip
//! (so it is not wire-compatible with Alertmanager peers):
//! - **Transport**: JSON over HTTP on the cluster port (`/cluster/v1/…`),
//!   served by axum and sent with reqwest, which the crate already has.
//!   Clusters of alert-routers are small (2–5 members) and their state is
//!   small (silences and log entries), so sending every change straight to
//!   every member costs little and needs no gossip fan-out, retransmit
//!   counts or UDP packet-size limits; TCP gives delivery, and an HTTP
//!   status tells the sender whether the peer took the message.
//! - **Changes**: each local change (a silence set or expired, a log entry
//!   written) is broadcast at once to every live member. A member that
//!   missed one (down, or not yet known) gets it from the next full sync.
//! - **Full sync (push-pull)**: every `pushpull_interval` with every live
//!   member (memberlist picks one at random; with a handful of members all
//!   of them is cheap and converges in one interval), and as soon as a
//!   member becomes alive (join, restart, healed partition), the full state
//!   is sent to it and its full state comes back; both sides merge. Merges
//!   are idempotent and order-independent, so duplicates and reordering do
//!   no harm.
//! - **Liveness**: every `probe_interval` each member pings every known
//!   member; the ping and its answer carry the sender's live members, so
//!   membership spreads from the `--cluster.peer` seeds (and Consul's
//!   `lucia-alert-router` instances). A member not heard from for
//!   `4 × probe_interval + probe_timeout` (memberlist's suspicion time for
//!   small clusters) is failed: it leaves the live list, and so the
//!   positions, then is probed every `reconnect_interval` and forgotten
//!   after `reconnect_timeout`. A member shutting down says so (`leave`),
//!   so positions move at once.
//! - **Settling**: as Alertmanager, a member waits (at most
//!   `settle_timeout`) until the number of live members stayed the same
//!   for three polls `10 × gossip_interval` apart before it notifies, so
//!   that a starting member learns the others' logs first. (That is all
//!   `gossip_interval` drives here: changes are not queued for gossip
//!   rounds but sent at once.)
//!
//! State received from peers is persisted like local state (the same
//! snapshot files), and every tenant is replicated separately.

pub mod discovery;
pub mod members;
mod transport;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::{nflog, silences};
use members::{Members, Timing};

/// The cluster flags (Alertmanager's names), or the `cluster` block of
/// the `alert_router` section in Lucia's file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where the cluster listens (`0.0.0.0:9094` for `lucia alert-router`);
    /// empty or absent disables clustering.
    pub listen_address: Option<String>,
    /// The address the peers reach this member at [default: the listen
    /// address, or this host's address when that is unspecified].
    pub advertise_address: Option<String>,
    /// Initial peers (host:port of their cluster listeners).
    pub peers: Vec<String>,
    /// This member's name [default: a new ULID at each start].
    pub peer_name: Option<String>,
    /// Wait per position before notifying.
    pub peer_timeout: ConfigDuration,
    /// Drives the settle polls (every ten gossip intervals).
    pub gossip_interval: ConfigDuration,
    /// How often the full state is exchanged with every member.
    pub pushpull_interval: ConfigDuration,
    /// Longest wait for the membership to settle before notifying.
    pub settle_timeout: ConfigDuration,
    /// How often each member is pinged.
    pub probe_interval: ConfigDuration,
    /// How long a ping may take.
    pub probe_timeout: ConfigDuration,
    /// How often a failed member is tried again.
    pub reconnect_interval: ConfigDuration,
    /// How long a failed member is tried before it is forgotten.
    pub reconnect_timeout: ConfigDuration,
    /// Timeout of a state transfer.
    pub tcp_timeout: ConfigDuration,
    /// Members only talk to members with the same label.
    pub label: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            listen_address: None,
            advertise_address: None,
            peers: Vec::new(),
            peer_name: None,
            peer_timeout: ConfigDuration::from_secs(15),
            gossip_interval: ConfigDuration::from_millis(200),
            pushpull_interval: ConfigDuration::from_secs(60),
            settle_timeout: ConfigDuration::from_secs(60),
            probe_interval: ConfigDuration::from_secs(1),
            probe_timeout: ConfigDuration::from_millis(500),
            reconnect_interval: ConfigDuration::from_secs(10),
            reconnect_timeout: ConfigDuration::from_secs(6 * 3600),
            tcp_timeout: ConfigDuration::from_secs(10),
            label: String::new(),
        }
    }
}

impl ClusterConfig {
    /// Whether clustering is on (a non-empty listen address).
    pub fn enabled(&self) -> bool {
        self.listen_address
            .as_deref()
            .is_some_and(|a| !a.trim().is_empty())
    }

    /// The intervals that drive timers must not be zero.
    fn validate(&self) -> Result<(), ClusterError> {
        for (name, d) in [
            ("gossip-interval", self.gossip_interval),
            ("pushpull-interval", self.pushpull_interval),
            ("probe-interval", self.probe_interval),
            ("probe-timeout", self.probe_timeout),
            ("tcp-timeout", self.tcp_timeout),
        ] {
            if d.0.is_zero() {
                return Err(ClusterError::ZeroInterval(name));
            }
        }
        Ok(())
    }

    fn timing(&self) -> Timing {
        Timing {
            failure_timeout: self.probe_interval.0 * 4 + self.probe_timeout.0,
            reconnect_interval: self.reconnect_interval.0,
            reconnect_timeout: self.reconnect_timeout.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cannot listen on cluster.listen-address {address}: {source} (set another address, or an empty one to run without clustering)"
    )]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot build the cluster's HTTP client: {0}")]
    Client(String),
    #[error("cluster.{0} must be longer than zero")]
    ZeroInterval(&'static str),
}

/// A member as messages and the status API name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub address: String,
}

/// One tenant's replicated state: everything (full sync) or what just
/// changed (broadcast).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TenantState {
    pub tenant: String,
    #[serde(default)]
    pub silences: Vec<silences::Stored>,
    #[serde(default)]
    pub nflog: Vec<nflog::Stored>,
}

/// What the cluster replicates: implemented by the router's state.
pub trait Replicated: Send + Sync {
    /// Every tenant's silences and log entries.
    fn full_state(&self) -> Vec<TenantState>;
    /// Merges a peer's state (persisting what changed).
    fn merge(&self, states: Vec<TenantState>);
}

/// The cluster status as `/api/v2/status` serves it.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    /// `ready` or `settling`.
    pub status: &'static str,
    pub peers: Vec<PeerInfo>,
}

/// This member of the cluster.
pub struct Cluster {
    pub name: String,
    pub address: String,
    config: ClusterConfig,
    members: Mutex<Members>,
    settled: watch::Sender<bool>,
    client: reqwest::Client,
    outbox: mpsc::UnboundedSender<TenantState>,
    /// The receiving end of `outbox`, until the broadcast loop takes it.
    inbox: Mutex<Option<mpsc::UnboundedReceiver<TenantState>>>,
    state: OnceLock<Weak<dyn Replicated>>,
    metrics: ClusterMetrics,
}

/// Alertmanager's cluster gauges.
#[derive(Clone, Default)]
struct ClusterMetrics {
    enabled: prometheus_client::metrics::gauge::Gauge,
    members: prometheus_client::metrics::gauge::Gauge,
    failed_peers: prometheus_client::metrics::gauge::Gauge,
    position: prometheus_client::metrics::gauge::Gauge,
}

impl ClusterMetrics {
    fn register(&self, m: &lucia_common::metrics::Metrics) {
        m.register(
            "alertmanager_cluster_enabled",
            "Indicates whether the clustering is enabled or not.",
            self.enabled.clone(),
        );
        m.register(
            "alertmanager_cluster_members",
            "Number indicating current number of members in cluster.",
            self.members.clone(),
        );
        m.register(
            "alertmanager_cluster_failed_peers",
            "Number indicating the current number of failed peers in the cluster.",
            self.failed_peers.clone(),
        );
        m.register(
            "alertmanager_peer_position",
            "Position the Alertmanager instance believes it's in. The position determines a peer's behavior in the cluster.",
            self.position.clone(),
        );
    }
}

/// A bound cluster member, not yet talking to anyone: [`Started::run`]
/// connects it to the state it replicates (made after it, since that state
/// holds the member) and starts the loops, so that no message is handled
/// before there is a state to merge into.
pub struct Started {
    pub cluster: Arc<Cluster>,
    listener: tokio::net::TcpListener,
    consul: Option<lucia_common::consul::ConsulConfig>,
    shutdown: Shutdown,
}

/// Everything [`Cluster::start`] needs from the role.
pub struct StartOptions<'a> {
    pub config: &'a ClusterConfig,
    pub name: String,
    /// The role's HTTP address (its IP is advertised when the cluster
    /// listens on an unspecified address).
    pub web_addr: SocketAddr,
    pub consul: Option<lucia_common::consul::ConsulConfig>,
    pub metrics: &'a lucia_common::metrics::Metrics,
    pub shutdown: Shutdown,
}

impl Cluster {
    /// Binds the cluster listener. `None` when clustering is off.
    pub async fn start(opts: StartOptions<'_>) -> Result<Option<Started>, ClusterError> {
        let config = opts.config;
        let Some(listen) = config.listen_address.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if listen.is_empty() {
            return Ok(None);
        }
        config.validate()?;
        let bind_error = |source| ClusterError::Bind {
            address: listen.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let address = advertise_address(config, bound, opts.web_addr);
        let client = lucia_common::http_client::builder()
            .connect_timeout(config.tcp_timeout.0)
            .build()
            .map_err(|e| ClusterError::Client(e.to_string()))?;
        let (outbox, inbox) = mpsc::unbounded_channel();
        let name = config.peer_name.clone().unwrap_or(opts.name);
        let cluster = Arc::new(Cluster {
            members: Mutex::new(Members::new(
                &name,
                &address,
                config.timing(),
                &config.peers,
            )),
            name,
            address,
            config: config.clone(),
            settled: watch::Sender::new(false),
            client,
            outbox,
            inbox: Mutex::new(Some(inbox)),
            state: OnceLock::new(),
            metrics: ClusterMetrics::default(),
        });
        cluster.metrics.register(opts.metrics);
        cluster.metrics.enabled.set(1);
        tracing::info!(
            name = %cluster.name, listen = %bound, advertise = %cluster.address,
            peers = ?config.peers, "cluster member started"
        );
        Ok(Some(Started {
            cluster,
            listener,
            consul: opts.consul,
            shutdown: opts.shutdown,
        }))
    }
}

impl Started {
    /// Connects the replicated state and starts serving, probing, syncing
    /// and (with Consul) discovering peers. The returned future, awaited
    /// on shutdown, tells the peers this member leaves.
    pub fn run(
        self,
        state: Weak<dyn Replicated>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let Started {
            cluster,
            listener,
            consul,
            shutdown,
        } = self;
        let _ = cluster.state.set(state);
        let served = transport::serve(cluster.clone(), listener, shutdown.clone());
        tokio::spawn(transport::probe_loop(cluster.clone(), shutdown.clone()));
        tokio::spawn(transport::pushpull_loop(cluster.clone(), shutdown.clone()));
        if let Some(inbox) = cluster.inbox.lock().take() {
            tokio::spawn(transport::broadcast_loop(
                cluster.clone(),
                inbox,
                shutdown.clone(),
            ));
        }
        tokio::spawn(cluster.clone().settle(shutdown.clone()));
        if let Some(consul) = consul {
            tokio::spawn(discovery::watch_consul(
                cluster.clone(),
                consul,
                shutdown.clone(),
            ));
        }
        Box::pin(async move {
            shutdown.cancelled().await;
            transport::leave(&cluster).await;
            let _ = served.await;
        })
    }
}

impl Cluster {
    fn state(&self) -> Option<Arc<dyn Replicated>> {
        self.state.get().and_then(Weak::upgrade)
    }

    /// Queues a local change for every live member.
    pub fn broadcast(&self, state: TenantState) {
        // The receiving task only stops at shutdown, when nothing is sent.
        let _ = self.outbox.send(state);
    }

    /// This member's position among the live members.
    pub fn position(&self) -> usize {
        let position = self.members.lock().position(Instant::now());
        self.metrics.position.set(position as i64);
        position
    }

    /// How long to wait before notifying: `position × peer_timeout`
    /// (Alertmanager's `clusterWait`).
    pub fn notify_delay(&self) -> Duration {
        self.config.peer_timeout.0 * self.position() as u32
    }

    pub fn is_settled(&self) -> bool {
        *self.settled.borrow()
    }

    /// Waits until the membership has settled (or the settle timeout ran
    /// out), as Alertmanager's gossip-settle stage does before notifying.
    pub async fn wait_settled(&self) {
        let mut rx = self.settled.subscribe();
        let _ = rx.wait_for(|settled| *settled).await;
    }

    pub fn status(&self) -> Status {
        Status {
            name: self.name.clone(),
            status: if self.is_settled() {
                "ready"
            } else {
                "settling"
            },
            peers: self.members.lock().alive(Instant::now()),
        }
    }

    fn update_gauges(&self) {
        let now = Instant::now();
        let members = self.members.lock();
        self.metrics.members.set(members.alive(now).len() as i64);
        self.metrics.failed_peers.set(members.failed(now) as i64);
        self.metrics.position.set(members.position(now) as i64);
    }

    /// Alertmanager's `Peer.Settle`: polls the number of live members every
    /// ten gossip intervals and is settled once it stayed the same for
    /// three polls, or when the settle timeout runs out.
    async fn settle(self: Arc<Self>, shutdown: Shutdown) {
        const NUM_OKAY_REQUIRED: u32 = 3;
        let interval = self.config.gossip_interval.0 * 10;
        let start = Instant::now();
        let deadline = tokio::time::sleep(self.config.settle_timeout.0);
        tokio::pin!(deadline);
        let (mut n_peers, mut n_okay) = (0usize, 0u32);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut deadline => {
                    tracing::info!(elapsed = ?start.elapsed(), "cluster not settled but continuing anyway");
                    break;
                }
                _ = tokio::time::sleep(interval) => {}
            }
            let n = self.members.lock().alive(Instant::now()).len();
            if n_okay >= NUM_OKAY_REQUIRED {
                tracing::info!(elapsed = ?start.elapsed(), members = n, "cluster settled");
                break;
            }
            if n == n_peers {
                n_okay += 1;
            } else {
                n_okay = 0;
                tracing::debug!(before = n_peers, now = n, "cluster not settled");
            }
            n_peers = n;
        }
        self.settled.send_replace(true);
    }
}

/// The address to advertise: the flag, else the listen address, else (it
/// is unspecified) the web listener's IP or this host's outgoing IP.
fn advertise_address(config: &ClusterConfig, bound: SocketAddr, web: SocketAddr) -> String {
    if let Some(a) = config.advertise_address.as_deref().map(str::trim)
        && !a.is_empty()
    {
        return a.to_string();
    }
    let ip = if !bound.ip().is_unspecified() {
        bound.ip()
    } else if !web.ip().is_unspecified() && !web.ip().is_loopback() {
        web.ip()
    } else {
        outgoing_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    };
    SocketAddr::new(ip, bound.port()).to_string()
}

/// The IP this host sends from (a UDP socket "connected" to a private
/// address: no packet leaves), as Alertmanager picks a private address.
fn outgoing_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.254.254.254:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Groups queued changes by tenant, so that one message carries them.
fn coalesce(changes: Vec<TenantState>) -> Vec<TenantState> {
    let mut by_tenant: BTreeMap<String, TenantState> = BTreeMap::new();
    for c in changes {
        let slot = by_tenant
            .entry(c.tenant.clone())
            .or_insert_with(|| TenantState {
                tenant: c.tenant.clone(),
                ..TenantState::default()
            });
        slot.silences.extend(c.silences);
        slot.nflog.extend(c.nflog);
    }
    by_tenant.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_addresses() {
        let mut c = ClusterConfig::default();
        assert!(!c.enabled());
        c.listen_address = Some(" ".to_string());
        assert!(!c.enabled());
        c.listen_address = Some("127.0.0.1:9094".to_string());
        assert!(c.enabled());
        assert_eq!(c.timing().failure_timeout, Duration::from_millis(4500));
        assert!(c.validate().is_ok());
        let zero = ClusterConfig {
            probe_interval: ConfigDuration::from_secs(0),
            ..c.clone()
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "cluster.probe-interval must be longer than zero"
        );
        let bound: SocketAddr = "127.0.0.1:9094".parse().unwrap();
        let web: SocketAddr = "10.1.2.3:9093".parse().unwrap();
        assert_eq!(advertise_address(&c, bound, web), "127.0.0.1:9094");
        let any: SocketAddr = "0.0.0.0:9094".parse().unwrap();
        assert_eq!(advertise_address(&c, any, web), "10.1.2.3:9094");
        c.advertise_address = Some("am-1:9094".to_string());
        assert_eq!(advertise_address(&c, any, web), "am-1:9094");
    }

    /// A replicated state that records what was merged into it.
    #[derive(Default)]
    struct FakeState {
        own: Vec<TenantState>,
        merged: Mutex<Vec<TenantState>>,
    }

    impl Replicated for FakeState {
        fn full_state(&self) -> Vec<TenantState> {
            self.own.clone()
        }
        fn merge(&self, states: Vec<TenantState>) {
            self.merged.lock().extend(states);
        }
    }

    fn state_of(tenant: &str) -> TenantState {
        TenantState {
            tenant: tenant.to_string(),
            ..TenantState::default()
        }
    }

    async fn member(
        peers: Vec<String>,
        own: &str,
        shutdown: &Shutdown,
    ) -> (
        Arc<Cluster>,
        Arc<FakeState>,
        impl std::future::Future<Output = ()>,
    ) {
        let config = ClusterConfig {
            listen_address: Some("127.0.0.1:0".to_string()),
            peers,
            gossip_interval: ConfigDuration::from_millis(10),
            probe_interval: ConfigDuration::from_millis(100),
            // Failure detection takes 10 s: a member gone sooner left.
            probe_timeout: ConfigDuration::from_secs(10),
            ..ClusterConfig::default()
        };
        let started = Cluster::start(StartOptions {
            config: &config,
            name: format!("member-{own}"),
            web_addr: "127.0.0.1:9093".parse().unwrap(),
            consul: None,
            metrics: &lucia_common::metrics::Metrics::new(),
            shutdown: shutdown.clone(),
        })
        .await
        .unwrap()
        .unwrap();
        let state = Arc::new(FakeState {
            own: vec![state_of(own)],
            ..FakeState::default()
        });
        let cluster = started.cluster.clone();
        let replicated: Arc<dyn Replicated> = state.clone();
        let stopped = started.run(Arc::downgrade(&replicated));
        (cluster, state, stopped)
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_join_sync_broadcast_and_leave() {
        let stop_a = Shutdown::new();
        let (a, a_state, _a_stopped) = member(vec![], "a", &stop_a).await;
        let stop_b = Shutdown::new();
        let (b, b_state, b_stopped) = member(vec![a.address.clone()], "b", &stop_b).await;
        // B knows A from its seed; A learns B from B's ping.
        until("both members alive on both", || {
            a.status().peers.len() == 2 && b.status().peers.len() == 2
        })
        .await;
        assert_eq!(a.status().peers, b.status().peers);
        assert_eq!((a.position(), b.position()), (0, 1));
        assert_eq!(b.notify_delay(), Duration::from_secs(15));
        // Joining exchanged the full states both ways.
        let merged_tenants = |s: &FakeState| -> Vec<String> {
            s.merged.lock().iter().map(|t| t.tenant.clone()).collect()
        };
        until("full sync", || {
            merged_tenants(&a_state).contains(&"b".to_string())
                && merged_tenants(&b_state).contains(&"a".to_string())
        })
        .await;
        // A change on A reaches B at once.
        a.broadcast(state_of("change-from-a"));
        until("the broadcast", || {
            merged_tenants(&b_state).contains(&"change-from-a".to_string())
        })
        .await;
        // Settled after three steady polls.
        a.wait_settled().await;
        assert_eq!(a.status().status, "ready");
        // A message with another label is refused.
        let resp = lucia_common::http_client::client()
            .post(format!("http://{}/cluster/v1/ping", a.address))
            .json(&serde_json::json!({
                "label": "other",
                "from": {"name": "intruder", "address": "127.0.0.1:1"},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(a.status().peers.len(), 2);
        // B stops: it says it leaves, so A drops it well before the
        // 10 s failure timeout.
        let stopping = Instant::now();
        stop_b.cancel();
        b_stopped.await;
        until("B gone from A", || a.status().peers.len() == 1).await;
        assert!(stopping.elapsed() < Duration::from_secs(8));
        stop_a.cancel();
    }

    #[test]
    fn coalesces_by_tenant() {
        let change = |tenant: &str, id: &str| TenantState {
            tenant: tenant.to_string(),
            nflog: vec![nflog::Stored {
                group_key: id.to_string(),
                receiver: "r".to_string(),
                firing: vec![1],
                resolved: vec![],
                timestamp: 1,
                expires_at: 2,
            }],
            ..TenantState::default()
        };
        let out = coalesce(vec![change("a", "1"), change("b", "2"), change("a", "3")]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].tenant, "a");
        assert_eq!(out[0].nflog.len(), 2);
    }
}
