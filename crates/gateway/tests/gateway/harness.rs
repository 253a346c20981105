//! Fake backends and a gateway on 127.0.0.1:0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use lucia_common::Shutdown;
use lucia_common::consul::ConsulConfig;
use lucia_common::metrics::Metrics;
use lucia_common::server::{Readiness, RoleContext, bind, serve_roles};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What a fake backend received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub tenants: Vec<String>,
}

struct BackendState {
    name: String,
    requests: Mutex<Vec<Recorded>>,
    fail_with: AtomicU16,
    release: Notify,
}

/// A fake role: answers every path with JSON describing the request.
pub struct Backend {
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Arc<BackendState>,
    stop: Shutdown,
}

impl Backend {
    fn router(name: &str) -> (Router, Arc<BackendState>) {
        let state = Arc::new(BackendState {
            name: name.to_string(),
            requests: Mutex::new(Vec::new()),
            fail_with: AtomicU16::new(0),
            release: Notify::new(),
        });
        let router = Router::new()
            .route("/ready", get(|| async { "ready\n" }))
            .route("/loki/api/v1/stream", get(stream))
            .route("/loki/api/v1/tail", get(tail))
            .fallback(echo)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        (router, state)
    }

    /// The fake role over https, with a certificate of `ca` (it runs until
    /// the test ends).
    pub async fn start_https(name: &str, ca: &lucia_tests::tls::TestCa) -> Backend {
        let (router, state) = Self::router(name);
        let addr = ca.serve_https(router).await;
        Backend {
            addr,
            scheme: "https",
            state,
            stop: Shutdown::new(),
        }
    }

    pub async fn start(name: &str) -> Backend {
        let (router, state) = Self::router(name);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let stop = Shutdown::new();
        let cancelled = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { cancelled.cancelled().await })
                .await;
        });
        Backend {
            addr,
            scheme: "http",
            state,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().clone()
    }

    /// Answers every proxied request with `status` from now on.
    pub fn fail_with(&self, status: u16) {
        self.state.fail_with.store(status, Ordering::Relaxed);
    }

    /// Lets `/loki/api/v1/stream` send its second chunk.
    pub fn release(&self) {
        self.state.release.notify_one();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn header(headers: &HeaderMap, name: &str) -> Value {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map_or(Value::Null, |v| Value::String(v.to_string()))
}

async fn echo(
    State(state): State<Arc<BackendState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenants = headers
        .get_all("x-scope-orgid")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    state.requests.lock().push(Recorded {
        method: method.to_string(),
        uri: uri.to_string(),
        tenants,
    });
    let fail = state.fail_with.load(Ordering::Relaxed);
    if fail != 0 {
        let status = StatusCode::from_u16(fail).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, format!("{} fails on purpose\n", state.name)).into_response();
    }
    let text = if body.len() <= 4096 {
        Value::String(String::from_utf8_lossy(&body).into_owned())
    } else {
        Value::Null
    };
    axum::Json(json!({
        "backend": state.name,
        "method": method.as_str(),
        "uri": uri.to_string(),
        "tenant": header(&headers, "x-scope-orgid"),
        "authorization": header(&headers, "authorization"),
        "traceparent": header(&headers, "traceparent"),
        "body": text,
        "body_len": body.len(),
    }))
    .into_response()
}

async fn stream(State(state): State<Arc<BackendState>>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from_static(b"first\n"))).await;
        state.release.notified().await;
        let _ = tx.send(Ok(Bytes::from_static(b"second\n"))).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::new(Body::from_stream(stream))
}

async fn tail(ws: WebSocketUpgrade, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let tenant = header(&headers, "x-scope-orgid")
        .as_str()
        .unwrap_or_default()
        .to_string();
    let query = form_query(query.as_deref().unwrap_or_default());
    ws.on_upgrade(move |mut socket| async move {
        let hello = format!("tenant={tenant} query={query}");
        if socket.send(Message::Text(hello.into())).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if let Message::Text(text) = message
                && socket
                    .send(Message::Text(format!("echo {}", text.as_str()).into()))
                    .await
                    .is_err()
            {
                return;
            }
        }
    })
}

fn form_query(raw: &str) -> String {
    raw.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "query")
        .map(|(_, v)| {
            let bytes = v.replace('+', " ");
            percent_decode(&bytes)
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gateway serving on 127.0.0.1:0.
pub struct Gateway {
    pub addr: SocketAddr,
    client: reqwest::Client,
    stop: Shutdown,
}

impl Gateway {
    pub async fn start(config: lucia_gateway::Config) -> Gateway {
        Self::start_with_consul(config, None).await
    }

    pub async fn start_with_consul(
        config: lucia_gateway::Config,
        consul: Option<ConsulConfig>,
    ) -> Gateway {
        let (listener, addr) = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind gateway");
        let stop = Shutdown::new();
        let ctx = RoleContext {
            advertise_addr: addr,
            metrics: Metrics::new(),
            readiness: Readiness::default(),
            shutdown: stop.clone(),
            data_dir: std::env::temp_dir(),
            multi_tenant: false,
            consul,
        };
        // Not registered in Consul: only the backends are looked up there.
        let mut serve_ctx = ctx.clone();
        serve_ctx.consul = None;
        let role = lucia_gateway::start(config, ctx)
            .await
            .expect("start gateway");
        tokio::spawn(async move { serve_roles(listener, &serve_ctx, vec![role]).await });
        Gateway {
            addr,
            client: lucia_common::http_client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            stop,
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .client
            .request(method, format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if !body.is_empty() {
            request = request.body(body.to_string());
        }
        request.send().await.expect("request to the gateway")
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let response = self.request(method, path, headers, body).await;
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    pub async fn send_json(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let (status, text) = self.send(method, path, headers, body).await;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An address nothing listens on.
pub fn closed_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

pub fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A bcrypt hash of cost 4 (the minimum: fast tests).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash_with_salt(password, 4, [9; 16])
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoY)
}

pub fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
