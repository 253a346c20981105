//! A tiny HTTP server answering `GET /ready`, to stand in for a Lucia
//! process behind a Consul HTTP check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use lucia_common::Shutdown;

pub struct ReadyServer {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stop: Shutdown,
    server: tokio::task::JoinHandle<()>,
}

impl ReadyServer {
    /// Starts on 127.0.0.1:0, answering 200 (ready).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("ready server: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("ready server: local address");
        let ready = Arc::new(AtomicBool::new(true));
        let flag = ready.clone();
        let router = Router::new().route(
            "/ready",
            get(move || {
                let ready = flag.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
        let stop = Shutdown::new();
        let stopped = stop.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
        });
        Self {
            addr,
            ready,
            stop,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/ready`.
    pub fn url(&self) -> String {
        format!("http://{}/ready", self.addr)
    }

    /// Makes `/ready` answer 200 (`true`) or 503 (`false`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Stops listening; checks then fail with connection refused.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }
}
