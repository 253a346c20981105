//! The reverse proxy: CORS, authentication, rate limits, routing, retries
//! of idempotent reads, the tail websocket, metrics and access logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lucia_common::tenant::ORG_ID_HEADER;
use tracing::Instrument as _;

use crate::auth::{Auth, AuthError};
use crate::backends::Backends;
use crate::config::{Config, CorsConfig};
use crate::limits::RateLimiter;
use crate::metrics::GatewayMetrics;
use crate::routes::{self, Route};
use crate::traceparent;

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Everything a request needs; shared by every request.
pub struct Gateway {
    alertmanager_prefix: String,
    max_retry_body_bytes: usize,
    cors: CorsConfig,
    auth: Arc<Auth>,
    backends: Backends,
    client: HttpClient,
    limiter: RateLimiter,
    metrics: GatewayMetrics,
}

/// What the access log and metrics say about a request.
#[derive(Default)]
struct Outcome {
    route: &'static str,
    tenant: String,
    user: String,
    backend: String,
}

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

impl Gateway {
    pub fn new(
        config: &Config,
        auth: Arc<Auth>,
        backends: Backends,
        metrics: GatewayMetrics,
    ) -> Result<Self, String> {
        let tls = match &config.backend_tls_config {
            Some(tls) => {
                lucia_common::http_client::client_config(tls).map_err(|e| format!("backend_{e}"))?
            }
            None => lucia_common::http_client::default_client_config(),
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout.0));
        connector.set_nodelay(true);
        // https:// backends get TLS, http:// ones stay plain.
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            alertmanager_prefix: normalize_prefix(&config.alertmanager_prefix),
            max_retry_body_bytes: config.max_retry_body_bytes,
            cors: config.cors.clone(),
            auth,
            backends,
            client,
            limiter: RateLimiter::new(config.rate_limit.clone()),
            metrics,
        })
    }

    pub fn alertmanager_prefix(&self) -> &str {
        &self.alertmanager_prefix
    }

    async fn serve(&self, req: Request<Body>, span: &tracing::Span, out: &mut Outcome) -> Response {
        let Some(route) = routes::route(req.uri().path(), &self.alertmanager_prefix) else {
            out.route = "not_found";
            return text(
                StatusCode::NOT_FOUND,
                format!("404 page not found: {}\n", req.uri().path()),
            );
        };
        out.route = route.name;
        if req.method() == Method::OPTIONS
            && !self.cors.allowed_origins.is_empty()
            && req.headers().contains_key(header::ORIGIN)
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return self.preflight(req.headers());
        }
        let identity = match self.auth.authenticate(req.headers()).await {
            Ok(identity) => identity,
            Err(AuthError::Unauthorized(why)) => {
                let mut response = text(StatusCode::UNAUTHORIZED, why);
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"lucia\""),
                );
                return response;
            }
            Err(AuthError::Forbidden(why)) => return text(StatusCode::FORBIDDEN, why),
        };
        out.tenant = identity.tenant.clone();
        out.user = identity.user;
        if let Err(why) = self.limiter.check(&identity.tenant) {
            return text(StatusCode::TOO_MANY_REQUESTS, why);
        }
        let incoming = req
            .headers()
            .get(traceparent::HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(traceparent::parse);
        let trace = traceparent::outgoing(span, incoming.as_ref());
        let (mut parts, body) = req.into_parts();
        let websocket = route.websocket && is_upgrade(&parts.headers);
        let upgrade = websocket.then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
        let mut headers = forward_headers(&parts.headers, websocket);
        if let Ok(tenant) = HeaderValue::from_str(&identity.tenant) {
            headers.insert(ORG_ID_HEADER, tenant);
        }
        if let Ok(trace) = HeaderValue::from_str(&trace) {
            headers.insert(traceparent::HEADER, trace);
        }
        let query = parts.uri.query().map(str::to_string);
        let target = Target {
            route: &route,
            method: parts.method.clone(),
            query,
            headers,
        };
        if websocket {
            return self.proxy_upgrade(target, upgrade.flatten(), out).await;
        }
        let retryable = match parts.method {
            Method::GET | Method::HEAD => true,
            Method::POST => route.read_only_post && is_form(&parts.headers),
            _ => false,
        };
        if retryable {
            let limited = Limited::new(body, self.max_retry_body_bytes);
            match limited.collect().await {
                Ok(collected) => {
                    self.forward(target, Some(collected.to_bytes()), None, out)
                        .await
                }
                Err(err) => {
                    if err.is::<http_body_util::LengthLimitError>() {
                        text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!(
                                "request body larger than {} bytes\n",
                                self.max_retry_body_bytes
                            ),
                        )
                    } else {
                        text(
                            StatusCode::BAD_REQUEST,
                            format!("cannot read the request body: {err}\n"),
                        )
                    }
                }
            }
        } else {
            self.forward(target, None, Some(body), out).await
        }
    }

    /// Sends the request to the route's backends: a buffered body is tried
    /// on up to two backends (connection errors, 502 and 503 move on); a
    /// streamed one goes to one backend once.
    async fn forward(
        &self,
        target: Target<'_>,
        buffered: Option<Bytes>,
        mut streamed: Option<Body>,
        out: &mut Outcome,
    ) -> Response {
        let upstream = target.route.upstream;
        let pool = self.backends.pool(upstream);
        let candidates = match pool.pick() {
            Ok(candidates) => candidates,
            Err(reason) => return no_backend(upstream.name(), &reason),
        };
        let attempts = if buffered.is_some() {
            candidates.len().min(2)
        } else {
            1
        };
        let mut last_error = String::new();
        for (i, base) in candidates.iter().take(attempts).enumerate() {
            let last = i + 1 == attempts;
            let body = match (&buffered, streamed.take()) {
                (Some(bytes), _) => Body::from(bytes.clone()),
                (None, Some(body)) => body,
                (None, None) => Body::empty(),
            };
            let request = match target.request(base, body) {
                Ok(request) => request,
                Err(why) => return text(StatusCode::BAD_REQUEST, why),
            };
            out.backend = base.clone();
            match self.client.request(request).await {
                Ok(response) => {
                    pool.mark_up(base);
                    let status = response.status();
                    if matches!(
                        status,
                        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
                    ) {
                        self.metrics.backend_error(upstream.name());
                        if !last {
                            tracing::debug!(backend = %base, %status, "retrying on another backend");
                            continue;
                        }
                    }
                    return from_backend(response);
                }
                Err(err) => {
                    self.metrics.backend_error(upstream.name());
                    let connect = err.is_connect();
                    if connect {
                        pool.mark_down(base);
                    }
                    last_error =
                        format!("{base}: {}", lucia_common::http_client::error_chain(&err));
                    tracing::warn!(backend = %base, role = %upstream, error = %last_error, "backend request failed");
                    if !last {
                        continue;
                    }
                    if connect {
                        return no_backend(upstream.name(), &last_error);
                    }
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!("{upstream} backend failed: {last_error}\n"),
                    );
                }
            }
        }
        no_backend(upstream.name(), &last_error)
    }

    /// The tail websocket: forwards the upgrade request, and once the
    /// backend switches protocols, copies bytes both ways.
    async fn proxy_upgrade(
        &self,
        target: Target<'_>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        out: &mut Outcome,
    ) -> Response {
        let upstream = target.route.upstream;
        let pool = self.backends.pool(upstream);
        let base = match pool.pick() {
            Ok(candidates) => candidates.into_iter().next().unwrap_or_default(),
            Err(reason) => return no_backend(upstream.name(), &reason),
        };
        out.backend = base.clone();
        let request = match target.request(&base, Body::empty()) {
            Ok(request) => request,
            Err(why) => return text(StatusCode::BAD_REQUEST, why),
        };
        let mut response = match self.client.request(request).await {
            Ok(response) => response,
            Err(err) => {
                self.metrics.backend_error(upstream.name());
                if err.is_connect() {
                    pool.mark_down(&base);
                }
                return no_backend(
                    upstream.name(),
                    &format!("{base}: {}", lucia_common::http_client::error_chain(&err)),
                );
            }
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return from_backend(response);
        }
        let Some(client_upgrade) = client_upgrade else {
            return text(
                StatusCode::BAD_REQUEST,
                "the connection cannot be upgraded\n".to_string(),
            );
        };
        let backend_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(
            async move {
                let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
                    (Ok(client), Ok(backend)) => (client, backend),
                    (Err(err), _) | (_, Err(err)) => {
                        tracing::warn!(%err, "websocket upgrade failed");
                        return;
                    }
                };
                let mut client = TokioIo::new(client);
                let mut backend = TokioIo::new(backend);
                if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                    tracing::debug!(%err, "websocket proxy ended");
                }
            }
            .in_current_span(),
        );
        let (parts, _) = response.into_parts();
        let mut response = Response::from_parts(parts, Body::empty());
        let headers = response.headers_mut();
        let upgrade = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(headers);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(upgrade) = upgrade {
            headers.insert(header::UPGRADE, upgrade);
        }
        response
    }

    fn cors_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let allowed = &self.cors.allowed_origins;
        if allowed.iter().any(|a| a == "*") {
            return Some(origin.clone());
        }
        let text = origin.to_str().ok()?;
        allowed
            .iter()
            .any(|a| a.trim_end_matches('/') == text)
            .then(|| origin.clone())
    }

    fn preflight(&self, headers: &HeaderMap) -> Response {
        let Some(origin) = self.cors_origin(headers) else {
            return text(
                StatusCode::FORBIDDEN,
                "origin not allowed by gateway.cors.allowed_origins\n".to_string(),
            );
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        let out = response.headers_mut();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
        );
        let allow_headers = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| {
                HeaderValue::from_static("Authorization, Content-Type, X-Scope-OrgID, traceparent")
            });
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        if let Ok(age) = HeaderValue::from_str(&self.cors.max_age.0.as_secs().to_string()) {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, age);
        }
        out.insert(header::VARY, HeaderValue::from_static("Origin"));
        response
    }
}

/// The parts of a request that every attempt reuses.
struct Target<'a> {
    route: &'a Route,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
}

impl Target<'_> {
    /// The request to `base`; `Err` with why its URI is invalid.
    fn request(&self, base: &str, body: Body) -> Result<Request<Body>, String> {
        let uri = match &self.query {
            Some(query) => format!("{base}{}?{query}", self.route.path),
            None => format!("{base}{}", self.route.path),
        };
        let uri: Uri = uri
            .parse()
            .map_err(|err| format!("invalid request path: {err}\n"))?;
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = self.headers.clone();
        Ok(request)
    }
}

/// The axum handler of every proxied path.
pub async fn handle(State(gateway): State<Arc<Gateway>>, req: Request<Body>) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("gateway_request", %method, %path);
    let incoming = req
        .headers()
        .get(traceparent::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(traceparent::parse);
    traceparent::adopt(&span, incoming.as_ref());
    let cors_origin = gateway.cors_origin(req.headers());
    let mut out = Outcome::default();
    let mut response = gateway
        .serve(req, &span, &mut out)
        .instrument(span.clone())
        .await;
    if let Some(origin) = cors_origin {
        let headers = response.headers_mut();
        if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    gateway
        .metrics
        .observe(out.route, status, &out.tenant, elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            target: "lucia_gateway::access",
            %method,
            %path,
            status,
            route = out.route,
            tenant = %out.tenant,
            user = %out.user,
            backend = %out.backend,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}

fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn no_backend(role: &str, reason: &str) -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("no healthy {role} backend: {reason}\n"),
    )
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// Removes hop-by-hop headers and those named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The client's headers as the backend gets them: without hop-by-hop
/// headers, credentials, the client's tenant and `Host` (the client sets the
/// backend's); with `X-Forwarded-Host` and, for a websocket, the upgrade.
fn forward_headers(incoming: &HeaderMap, websocket: bool) -> HeaderMap {
    let mut headers = incoming.clone();
    let upgrade = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(ORG_ID_HEADER);
    if let Some(host) = headers.remove(header::HOST)
        && !headers.contains_key("x-forwarded-host")
    {
        headers.insert("x-forwarded-host", host);
    }
    if websocket && let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    headers
}

fn from_backend(response: Response<hyper::body::Incoming>) -> Response {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_drop_credentials_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert(ORG_ID_HEADER, HeaderValue::from_static("evil"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("gw:3100"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let out = forward_headers(&h, false);
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert!(out.get(ORG_ID_HEADER).is_none());
        assert!(out.get("x-private").is_none());
        assert!(out.get(header::CONNECTION).is_none());
        assert!(out.get(header::HOST).is_none());
        assert_eq!(out["x-forwarded-host"], "gw:3100");
        assert_eq!(out[header::ACCEPT], "application/json");

        let mut ws = HeaderMap::new();
        ws.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        ws.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&ws));
        let out = forward_headers(&ws, true);
        assert_eq!(out[header::UPGRADE], "websocket");
        assert_eq!(out[header::CONNECTION], "upgrade");
    }

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("/"), "");
        assert_eq!(normalize_prefix("alertmanager/"), "/alertmanager");
        assert_eq!(normalize_prefix("/am"), "/am");
    }

    #[test]
    fn form_detection() {
        let mut h = HeaderMap::new();
        assert!(!is_form(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        assert!(is_form(&h));
    }
}
