//! Server bootstrap: one port for HTTP and gRPC, `/ready`, `/metrics`, and
//! graceful shutdown.
//!
//! A role is started with a [`RoleContext`] and hands back a [`Role`]: its
//! routes and a task that finishes once the role has flushed what it holds.
//! `lucia <role>` serves one role on its own listener with [`serve_roles`];
//! `lucia all` merges every role's routes onto one listener the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::Shutdown;
use crate::metrics::Metrics;

/// What every role is started with.
#[derive(Clone)]
pub struct RoleContext {
    /// The address other processes reach this one at (host:port of the shared
    /// HTTP/gRPC listener).
    pub advertise_addr: SocketAddr,
    /// The process's metrics registry.
    pub metrics: Metrics,
    /// Readiness flags of every role in the process.
    pub readiness: Readiness,
    /// Cancelled when the process should stop.
    pub shutdown: Shutdown,
    /// Where the process keeps its data (`--data.dir`).
    pub data_dir: std::path::PathBuf,
    /// Whether requests must carry `X-Scope-OrgID` (Loki's `auth_enabled`).
    pub multi_tenant: bool,
    /// Consul, when the process is configured to use it.
    pub consul: Option<crate::consul::ConsulConfig>,
}

type StopFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A started role: its routes and what to await, after the listener has
/// stopped, for the role to flush and stop.
pub struct Role {
    pub name: &'static str,
    pub router: Router,
    pub stopped: StopFuture,
}

impl Role {
    pub fn new(
        name: &'static str,
        router: Router,
        stopped: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self {
            name,
            router,
            stopped: Box::pin(stopped),
        }
    }
}

/// Readiness of the roles of a process: `/ready` answers 200 once every
/// registered flag is set.
#[derive(Clone, Default)]
pub struct Readiness {
    flags: Arc<Mutex<Vec<(String, bool)>>>,
}

/// One role's readiness flag.
#[derive(Clone)]
pub struct ReadyFlag {
    readiness: Readiness,
    index: usize,
}

impl Readiness {
    /// Registers a component that starts not ready.
    pub fn register(&self, name: impl Into<String>) -> ReadyFlag {
        let mut flags = self.flags.lock();
        flags.push((name.into(), false));
        ReadyFlag {
            readiness: self.clone(),
            index: flags.len() - 1,
        }
    }

    /// The names of the components that are not ready yet.
    pub fn not_ready(&self) -> Vec<String> {
        self.flags
            .lock()
            .iter()
            .filter(|(_, ready)| !ready)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl ReadyFlag {
    pub fn set(&self, ready: bool) {
        if let Some(flag) = self.readiness.flags.lock().get_mut(self.index) {
            flag.1 = ready;
        }
    }
}

/// The routes every process serves: `/ready` and `/metrics`.
pub fn common_routes(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/ready",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    let waiting = readiness.not_ready();
                    if waiting.is_empty() {
                        (StatusCode::OK, "ready\n".to_string())
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: waiting for {}\n", waiting.join(", ")),
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.render().into_response() }
            }),
        )
}

/// Serves the roles' merged routes on `listener` until `shutdown` is
/// cancelled, then waits for every role to stop (flushing what it holds).
pub async fn serve_roles(
    listener: TcpListener,
    ctx: &RoleContext,
    roles: Vec<Role>,
) -> std::io::Result<()> {
    let mut router = common_routes(ctx.metrics.clone(), ctx.readiness.clone());
    let mut stops = Vec::with_capacity(roles.len());
    for role in roles {
        router = router.merge(role.router);
        stops.push((role.name, role.stopped));
    }
    let router = router.fallback(not_found);
    let shutdown = ctx.shutdown.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    for (name, stopped) in stops {
        tracing::info!(role = name, "stopping");
        stopped.await;
        tracing::info!(role = name, "stopped");
    }
    served
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        format!("404 page not found: {}\n", uri.path()),
    )
}

/// Binds `addr` and returns the listener with the address to advertise: the
/// bound address, with an unspecified IP (0.0.0.0) replaced by loopback so
/// that in-process peers can dial it.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let mut local = listener.local_addr()?;
    if local.ip().is_unspecified() {
        local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok((listener, local))
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
pub fn cancel_on_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::error!(%err, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
            _ = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    });
}

/// Runs one role on its own listener until `shutdown` is cancelled: the body
/// of every role crate's `run`.
pub async fn run_role<F, Fut, E>(
    process: ProcessConfig,
    shutdown: Shutdown,
    start: F,
) -> Result<(), E>
where
    F: FnOnce(RoleContext) -> Fut,
    Fut: Future<Output = Result<Role, E>>,
    E: From<std::io::Error>,
{
    let (listener, advertise_addr) = bind(process.listen_address).await?;
    let ctx = RoleContext {
        advertise_addr,
        metrics: Metrics::new(),
        readiness: Readiness::default(),
        shutdown,
        data_dir: process.data_dir,
        multi_tenant: process.multi_tenant,
        consul: process.consul,
    };
    let role = start(ctx.clone()).await?;
    tracing::info!(role = role.name, addr = %advertise_addr, "listening");
    serve_roles(listener, &ctx, vec![role]).await?;
    Ok(())
}

/// Process-wide settings shared by every role of a process.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub listen_address: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub multi_tenant: bool,
    pub consul: Option<crate::consul::ConsulConfig>,
}
