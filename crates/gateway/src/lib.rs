//! The front door for Grafana: one address for the Loki, Prometheus and
//! Alertmanager APIs, with authentication, tenancy and routing to every
//! role.
//!
//! The gateway is a reverse proxy: it depends on no other role crate and
//! only forwards HTTP (and the tail websocket) to backends listed in the
//! config or discovered in Consul. See [`routes`] for the route table and
//! [`proxy`] for what happens to a request.

pub mod auth;
pub mod backends;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod tls;
pub mod traceparent;

use std::sync::Arc;

use axum::Router;
use axum::routing::any;
use lucia_common::Shutdown;
use lucia_common::consul::ConsulConfig;
use lucia_common::metrics::Metrics;
use lucia_common::server::{ProcessConfig, Readiness, Role, RoleContext};

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("gateway config: {0}")]
    Config(String),
}

/// Starts the role on the process's shared listener (plain HTTP; [`run`]
/// adds TLS when configured). Backends without a static list are looked up
/// in the process's Consul.
pub async fn start(config: Config, ctx: RoleContext) -> Result<Role, Error> {
    let consul = ctx.consul.clone();
    start_with_consul(config, ctx, consul).await
}

async fn start_with_consul(
    config: Config,
    ctx: RoleContext,
    consul: Option<ConsulConfig>,
) -> Result<Role, Error> {
    let ready = ctx.readiness.register("gateway");
    let auth = auth::Auth::new(&config.auth).map_err(Error::Config)?;
    let backends = backends::Backends::start(
        &config.backends,
        consul.as_ref(),
        config.backend_down_for.0,
        &ctx.shutdown,
    )
    .map_err(Error::Config)?;
    let metrics = metrics::GatewayMetrics::new(&ctx.metrics);
    if auth.required() {
        tracing::info!(
            users = config.auth.users.len(),
            tokens = config.auth.tokens.len(),
            "gateway requires authentication"
        );
    } else {
        tracing::info!(tenant = %config.auth.anonymous_tenant, "gateway in anonymous single-tenant mode");
    }
    let gateway =
        Arc::new(proxy::Gateway::new(&config, auth, backends, metrics).map_err(Error::Config)?);
    ready.set(true);
    Ok(Role::new("gateway", router(gateway), async {}))
}

/// The proxied paths (`/ready` and `/metrics` come from the process).
pub fn router(gateway: Arc<proxy::Gateway>) -> Router {
    let mut router = Router::new();
    for prefix in routes::prefixes(gateway.alertmanager_prefix()) {
        router = router
            .route(&prefix, any(proxy::handle))
            .route(&format!("{prefix}/{{*rest}}"), any(proxy::handle));
    }
    router.with_state(gateway)
}

/// Runs the role on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    let Some(tls) = config.tls.clone() else {
        return lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await;
    };
    let acceptor = tls::acceptor(&tls, shutdown.clone()).map_err(Error::Config)?;
    let (listener, advertise_addr) = lucia_common::server::bind(process.listen_address).await?;
    // Consul's check of /ready speaks plain HTTP: with TLS the gateway
    // does not register itself (it still discovers its backends there).
    let ctx = RoleContext {
        advertise_addr,
        metrics: Metrics::new(),
        readiness: Readiness::default(),
        shutdown,
        data_dir: process.data_dir,
        multi_tenant: process.multi_tenant,
        consul: None,
    };
    let role = start_with_consul(config, ctx.clone(), process.consul).await?;
    tracing::info!(role = role.name, addr = %advertise_addr, "listening (TLS)");
    lucia_common::server::serve_roles_with(&ctx, vec![role], |router, shutdown| {
        tls::serve(listener, acceptor, router, shutdown)
    })
    .await?;
    Ok(())
}
