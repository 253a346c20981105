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

use std::time::Duration;

use crate::Shutdown;
use crate::consul::{ConsulClient, ConsulConfig, HttpCheck, ServiceRegistration};
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
    pub consul: Option<ConsulConfig>,
}

type StopFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A started role: its routes and what to await, after the listener has
/// stopped, for the role to flush and stop.
pub struct Role {
    pub name: &'static str,
    pub router: Router,
    pub stopped: StopFuture,
    /// Extra meta of the role's Consul registration (the alert-router's
    /// cluster address).
    pub meta: std::collections::BTreeMap<String, String>,
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
            meta: Default::default(),
        }
    }

    /// Adds `key: value` to the meta of the role's Consul registration.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
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
    serve_roles_with(ctx, roles, move |router, shutdown| async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    })
    .await
}

/// [`serve_roles`] with the serving loop supplied by the caller (the
/// gateway's TLS listener): `serve` gets the merged router and must return
/// once `shutdown` is cancelled and it has stopped accepting.
pub async fn serve_roles_with<F, Fut>(
    ctx: &RoleContext,
    roles: Vec<Role>,
    serve: F,
) -> std::io::Result<()>
where
    F: FnOnce(Router, Shutdown) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    let mut router = common_routes(ctx.metrics.clone(), ctx.readiness.clone());
    let mut stops = Vec::with_capacity(roles.len());
    let mut metas = Vec::with_capacity(roles.len());
    for role in roles {
        router = router.merge(role.router);
        stops.push((role.name, role.stopped));
        metas.push(role.meta);
    }
    let router = router.fallback(not_found);
    let names: Vec<&'static str> = stops.iter().map(|(name, _)| *name).collect();
    let registration = ctx.consul.as_ref().and_then(|consul| {
        let mut registrations = service_registrations(consul, &names, ctx.advertise_addr);
        for (registration, meta) in registrations.iter_mut().zip(metas) {
            registration.meta.extend(meta);
        }
        ConsulRegistration::start(consul, registrations)
    });
    let served = serve(router, ctx.shutdown.clone()).await;
    if let Some(registration) = registration {
        registration.deregister().await;
    }
    for (name, stopped) in stops {
        tracing::info!(role = name, "stopping");
        stopped.await;
        tracing::info!(role = name, "stopped");
    }
    served
}

/// The Consul registration of every role `names` of a process, as
/// `lucia-<role>` with an HTTP check of `/ready`.
pub fn service_registrations(
    consul: &ConsulConfig,
    names: &[&str],
    advertise_addr: SocketAddr,
) -> Vec<ServiceRegistration> {
    let host = advertise_addr.ip().to_string();
    let port = advertise_addr.port();
    names
        .iter()
        .map(|role| {
            let role = role.replace('_', "-");
            ServiceRegistration {
                id: format!("lucia-{role}-{host}-{port}"),
                name: format!("lucia-{role}"),
                tags: vec!["metrics".to_string(), role.clone()],
                address: host.clone(),
                port,
                meta: [("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]
                    .into_iter()
                    .collect(),
                check: Some(HttpCheck::new(
                    format!("http://{advertise_addr}/ready"),
                    consul,
                )),
            }
        })
        .collect()
}

/// Registers the process's services in the background, retrying until
/// Consul accepts them, so that an unreachable Consul never blocks serving.
struct ConsulRegistration {
    client: ConsulClient,
    ids: Vec<String>,
    stop: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl ConsulRegistration {
    fn start(consul: &ConsulConfig, registrations: Vec<ServiceRegistration>) -> Option<Self> {
        let client = match ConsulClient::new(consul) {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(%err, "not registering in consul");
                return None;
            }
        };
        let ids = registrations.iter().map(|r| r.id.clone()).collect();
        let stop = Shutdown::new();
        let task_client = client.clone();
        let task_stop = stop.clone();
        let task = tokio::spawn(async move {
            for registration in registrations {
                let mut delay = Duration::from_millis(200);
                loop {
                    match task_client.register_service(&registration).await {
                        Ok(()) => {
                            tracing::info!(id = %registration.id, "registered in consul");
                            break;
                        }
                        Err(err) => tracing::warn!(
                            id = %registration.id, %err, retry_in = ?delay,
                            "consul registration failed, retrying"
                        ),
                    }
                    tokio::select! {
                        _ = task_stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        });
        Some(Self {
            client,
            ids,
            stop,
            task,
        })
    }

    /// Stops registering and removes every service; failures are logged
    /// (Consul then reaps the service once its check stays critical).
    async fn deregister(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::warn!(%err, "consul registration task failed");
        }
        for id in &self.ids {
            match self.client.deregister_service(id).await {
                Ok(()) => tracing::info!(%id, "deregistered from consul"),
                Err(err) => tracing::warn!(%id, %err, "consul deregistration failed"),
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_name_roles_and_check_ready() {
        let consul = ConsulConfig::new("consul:8500");
        let addr: SocketAddr = "10.0.0.7:3100".parse().unwrap();
        let regs = service_registrations(&consul, &["ingester", "alert_router"], addr);
        assert_eq!(regs.len(), 2);
        assert_eq!(regs[1].name, "lucia-alert-router");
        assert_eq!(regs[1].id, "lucia-alert-router-10.0.0.7-3100");
        assert_eq!(regs[1].tags, vec!["metrics", "alert-router"]);
        assert_eq!((regs[0].address.as_str(), regs[0].port), ("10.0.0.7", 3100));
        let check = regs[0].check.as_ref().unwrap();
        assert_eq!(check.http, "http://10.0.0.7:3100/ready");
        assert_eq!(check.interval, "10s");
    }
}
