//! An in-process fake of the Consul endpoints Lucia uses: agent service
//! register/deregister with HTTP checks, `agent/self`, `agent/services`,
//! `agent/health/service/name/<name>`, `catalog/services`,
//! `health/service` (with `tag` filters) and the KV store, with blocking
//! queries, CAS and `X-Consul-Index` as Consul has them. One node,
//! `fake-consul` at 127.0.0.1, in datacenter `dc1`.
//!
//! One global index goes up on every change, as Consul's raft index does;
//! each read answers the highest index of the data it covers, so a blocking
//! query wakes only when that data changed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use base64::Engine as _;
use lucia_common::Shutdown;
use lucia_common::consul::ConsulConfig;
use lucia_common::duration::parse_go_duration;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the fake looks for services to reap: fine enough for test
/// values of `DeregisterCriticalServiceAfter` such as `2s` (real Consul
/// reaps every 30s).
const REAP_EVERY: Duration = Duration::from_millis(100);
/// Consul's default and longest blocking wait.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A running fake Consul agent on 127.0.0.1.
pub struct FakeConsul {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// The global index after each change; blocking queries wait on it.
    changed: watch::Sender<u64>,
    token: Option<String>,
    http: reqwest::Client,
    stop: Shutdown,
}

#[derive(Default)]
struct Inner {
    index: u64,
    services: BTreeMap<String, Service>,
    /// Last index at which anything about a service name changed
    /// (registration, check status, deregistration).
    service_index: HashMap<String, u64>,
    kv: BTreeMap<String, KvEntry>,
    /// Index at which each deleted key went away, so reads of a prefix
    /// still move forward when keys disappear.
    tombstones: BTreeMap<String, u64>,
    /// Distinguishes a re-registration's check task from the old one's.
    generation: u64,
}

struct Service {
    reg: Registration,
    create_index: u64,
    modify_index: u64,
    generation: u64,
    status: &'static str,
    output: String,
    critical_since: Option<Instant>,
}

struct KvEntry {
    value: Vec<u8>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct Registration {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Tags", default)]
    tags: Option<Vec<String>>,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Port", default)]
    port: u16,
    #[serde(rename = "Meta", default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "Check", default)]
    check: Option<RawCheck>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawCheck {
    #[serde(rename = "HTTP")]
    http: String,
    #[serde(rename = "Interval")]
    interval: String,
    #[serde(rename = "Timeout", default)]
    timeout: Option<String>,
    #[serde(rename = "DeregisterCriticalServiceAfter", default)]
    deregister_critical_service_after: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Check {
    interval: Duration,
    timeout: Duration,
    deregister_after: Option<Duration>,
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn touch_service(&mut self, name: &str) -> u64 {
        let index = self.bump();
        self.service_index.insert(name.to_string(), index);
        index
    }
}

impl Shared {
    fn notify(&self, index: u64) {
        self.changed.send_replace(index);
    }

    fn authorize(
        &self,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Result<(), Rejection> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let given = headers
            .get("X-Consul-Token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| query.get("token").map(String::as_str));
        match given {
            Some(given) if given == expected => Ok(()),
            Some(_) => Err((StatusCode::FORBIDDEN, "ACL not found".to_string())),
            None => Err((StatusCode::FORBIDDEN, "Permission denied".to_string())),
        }
    }
}

impl FakeConsul {
    /// Starts a fake without ACLs.
    pub async fn start() -> Self {
        Self::start_inner("127.0.0.1:0", None).await
    }

    /// Starts a fake without ACLs listening on `addr` (the `fake_consul`
    /// example, to try deploy/docker-compose.yml without the Consul image).
    pub async fn start_on(addr: &str) -> Self {
        Self::start_inner(addr, None).await
    }

    /// Starts a fake that answers 403 to requests without `token`.
    pub async fn start_with_token(token: &str) -> Self {
        Self::start_inner("127.0.0.1:0", Some(token.to_string())).await
    }

    async fn start_inner(bind: &str, token: Option<String>) -> Self {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .expect("fake consul: bind");
        let addr = listener.local_addr().expect("fake consul: local address");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
            token,
            http: lucia_common::http_client::client(),
            stop: Shutdown::new(),
        });
        let router = Router::new()
            .route("/v1/agent/service/register", put(register))
            .route("/v1/agent/service/deregister/{id}", put(deregister))
            .route("/v1/agent/self", get(agent_self))
            .route("/v1/agent/services", get(agent_services))
            .route(
                "/v1/agent/health/service/name/{name}",
                get(agent_health_service),
            )
            .route("/v1/catalog/services", get(catalog_services))
            .route("/v1/health/service/{name}", get(health_service))
            .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
            .with_state(shared.clone());
        tokio::spawn(reap(shared.clone()));
        let stop = shared.stop.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "fake consul stopped");
            }
        });
        Self {
            addr,
            shared,
            server: Some(server),
        }
    }

    /// `127.0.0.1:<port>`, for `consul.address`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// A client config pointing at this fake (with its token, if any).
    pub fn config(&self) -> ConsulConfig {
        let mut config = ConsulConfig::new(self.address());
        config.acl_token = self.shared.token.clone();
        config
    }

    /// Stops serving and running checks.
    pub async fn stop(mut self) {
        self.shared.stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// The IDs of the registered services, sorted.
    pub fn service_ids(&self) -> Vec<String> {
        self.shared.inner.lock().services.keys().cloned().collect()
    }

    /// The status of service `id`'s check (`passing`, `warning`,
    /// `critical`), `None` if no such service.
    pub fn check_status(&self, id: &str) -> Option<String> {
        let inner = self.shared.inner.lock();
        inner.services.get(id).map(|s| s.status.to_string())
    }

    /// Tags of service `id`.
    pub fn service_tags(&self, id: &str) -> Option<Vec<String>> {
        let inner = self.shared.inner.lock();
        inner
            .services
            .get(id)
            .map(|s| s.reg.tags.clone().unwrap_or_default())
    }

    /// Every key in the KV store, sorted.
    pub fn kv_keys(&self) -> Vec<String> {
        self.shared.inner.lock().kv.keys().cloned().collect()
    }

    /// The current global index.
    pub fn index(&self) -> u64 {
        self.shared.inner.lock().index
    }

    /// Waits until `pred` holds for the registered service IDs, or
    /// `timeout`; returns whether it held.
    pub async fn wait_for_services(
        &self,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> bool {
        let mut rx = self.shared.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if pred(&self.service_ids()) {
                return true;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return false },
                _ = tokio::time::sleep_until(deadline) => return pred(&self.service_ids()),
            }
        }
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// An error answer: small enough to pass around in a `Result`.
type Rejection = (StatusCode, String);

fn bad_request(message: impl Into<String>) -> Rejection {
    (StatusCode::BAD_REQUEST, message.into())
}

fn with_index(index: u64, status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    // Consul never answers index 0: a client could not block on it.
    let value = HeaderValue::from(index.max(1));
    response.headers_mut().insert("X-Consul-Index", value);
    response
}

fn parse_check(raw: &RawCheck) -> Result<Check, String> {
    let duration = |field: &str, text: &str| {
        parse_go_duration(text).map_err(|err| format!("invalid Check.{field}: {err}"))
    };
    let interval = duration("Interval", &raw.interval)?;
    if interval.is_zero() {
        return Err("invalid Check.Interval: must be positive".to_string());
    }
    let timeout = match raw.timeout.as_deref() {
        Some(t) if !t.is_empty() => duration("Timeout", t)?,
        _ => Duration::from_secs(10),
    };
    let deregister_after = match raw.deregister_critical_service_after.as_deref() {
        Some(t) if !t.is_empty() => Some(duration("DeregisterCriticalServiceAfter", t)?),
        _ => None,
    };
    Ok(Check {
        interval,
        timeout,
        deregister_after,
    })
}

async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    let mut reg: Registration = match serde_json::from_slice(&body) {
        Ok(reg) => reg,
        Err(err) => return bad_request(format!("Request decode failed: {err}")).into_response(),
    };
    if reg.name.is_empty() {
        return bad_request("Missing service name").into_response();
    }
    if reg.id.is_empty() {
        reg.id = reg.name.clone();
    }
    let check = match reg.check.as_ref().map(parse_check).transpose() {
        Ok(check) => check,
        Err(err) => return bad_request(err).into_response(),
    };
    let (generation, index) = {
        let mut inner = shared.inner.lock();
        inner.generation += 1;
        let generation = inner.generation;
        let index = inner.touch_service(&reg.name);
        let create_index = inner
            .services
            .get(&reg.id)
            .map(|s| s.create_index)
            .unwrap_or(index);
        // A renamed re-registration also changes the old name's answer.
        if let Some(old) = inner.services.get(&reg.id).map(|s| s.reg.name.clone())
            && old != reg.name
        {
            inner.service_index.insert(old, index);
        }
        inner.services.insert(
            reg.id.clone(),
            Service {
                reg: reg.clone(),
                create_index,
                modify_index: index,
                generation,
                // Consul starts checks critical until their first run.
                status: if check.is_some() {
                    "critical"
                } else {
                    "passing"
                },
                output: String::new(),
                critical_since: check.map(|_| Instant::now()),
            },
        );
        (generation, index)
    };
    shared.notify(index);
    if let (Some(check), Some(raw)) = (check, reg.check.as_ref()) {
        tokio::spawn(run_check(
            shared.clone(),
            reg.id.clone(),
            generation,
            raw.http.clone(),
            check,
        ));
    }
    StatusCode::OK.into_response()
}

/// Runs one service's HTTP check every interval (the first at once) until
/// the service is deregistered or re-registered.
async fn run_check(shared: Arc<Shared>, id: String, generation: u64, url: String, check: Check) {
    loop {
        let outcome = shared.http.get(&url).timeout(check.timeout).send().await;
        let (status, output) = match outcome {
            Ok(response) if response.status().is_success() => {
                ("passing", format!("HTTP GET {url}: {}", response.status()))
            }
            Ok(response) if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                ("warning", format!("HTTP GET {url}: {}", response.status()))
            }
            Ok(response) => ("critical", format!("HTTP GET {url}: {}", response.status())),
            Err(err) => ("critical", format!("HTTP GET {url}: {err}")),
        };
        let changed = {
            let mut inner = shared.inner.lock();
            let Some(service) = inner.services.get_mut(&id) else {
                return;
            };
            if service.generation != generation {
                return;
            }
            service.output = output;
            if service.status == status {
                None
            } else {
                service.status = status;
                service.critical_since = (status == "critical").then(Instant::now);
                let name = service.reg.name.clone();
                Some(inner.touch_service(&name))
            }
        };
        if let Some(index) = changed {
            shared.notify(index);
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(check.interval) => {}
        }
    }
}

/// Removes services whose check stayed critical past their
/// DeregisterCriticalServiceAfter.
async fn reap(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(REAP_EVERY);
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let mut last = None;
        {
            let mut inner = shared.inner.lock();
            let expired: Vec<(String, String)> = inner
                .services
                .iter()
                .filter(|(_, s)| {
                    let after = s
                        .reg
                        .check
                        .as_ref()
                        .and_then(|raw| parse_check(raw).ok())
                        .and_then(|c| c.deregister_after);
                    matches!((s.critical_since, after), (Some(since), Some(after)) if since.elapsed() >= after)
                })
                .map(|(id, s)| (id.clone(), s.reg.name.clone()))
                .collect();
            for (id, name) in expired {
                inner.services.remove(&id);
                last = Some(inner.touch_service(&name));
            }
        }
        if let Some(index) = last {
            shared.notify(index);
        }
    }
}

async fn deregister(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    let index = {
        let mut inner = shared.inner.lock();
        let Some(service) = inner.services.remove(&id) else {
            return (StatusCode::NOT_FOUND, format!("Unknown service ID {id:?}")).into_response();
        };
        inner.touch_service(&service.reg.name)
    };
    shared.notify(index);
    StatusCode::OK.into_response()
}

/// `?index` and `?wait` of a blocking query.
fn blocking_params(query: &HashMap<String, String>) -> Result<(u64, Duration), Rejection> {
    let index = match query.get("index") {
        Some(text) => text
            .parse()
            .map_err(|_| bad_request(format!("Invalid index: {text:?}")))?,
        None => 0,
    };
    let wait = match query.get("wait") {
        Some(text) => parse_go_duration(text)
            .map_err(|err| bad_request(format!("Invalid wait time: {err}")))?
            .min(MAX_WAIT),
        None => DEFAULT_WAIT,
    };
    Ok((index, wait))
}

/// Answers `compute` once its index passes `min_index`, or after `wait`.
async fn block<T>(
    shared: &Shared,
    min_index: u64,
    wait: Duration,
    compute: impl Fn(&Inner) -> (u64, T),
) -> (u64, T) {
    let mut rx = shared.changed.subscribe();
    let deadline = Instant::now() + wait;
    loop {
        rx.borrow_and_update();
        let (index, value) = compute(&shared.inner.lock());
        let index = index.max(1);
        if min_index == 0 || index > min_index || Instant::now() >= deadline {
            return (index, value);
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.stop.cancelled() => return (index, value),
        }
    }
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

async fn health_service(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    RawQuery(raw_query): RawQuery,
    Path(name): Path<String>,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    let (min_index, wait) = match blocking_params(&query) {
        Ok(params) => params,
        Err(bad) => return bad.into_response(),
    };
    let passing_only = flag(&query, "passing");
    let tags = repeated(raw_query.as_deref(), "tag");
    let node_ok = node_meta_matches(raw_query.as_deref());
    let (index, entries) = block(&shared, min_index, wait, |inner| {
        let index = inner.service_index.get(&name).copied().unwrap_or(0);
        let entries: Vec<serde_json::Value> = inner
            .services
            .values()
            .filter(|s| s.reg.name == name && node_ok)
            .filter(|s| !passing_only || s.status == "passing")
            .filter(|s| {
                let have = s.reg.tags.clone().unwrap_or_default();
                tags.iter().all(|t| have.contains(t))
            })
            .map(health_entry)
            .collect();
        (index, entries)
    })
    .await;
    with_index(index, StatusCode::OK, serde_json::Value::Array(entries))
}

fn health_entry(s: &Service) -> serde_json::Value {
    let mut checks = vec![json!({
        "Node": "fake-consul", "CheckID": "serfHealth", "Name": "Serf Health Status",
        "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
        "ServiceID": "", "ServiceName": "", "ServiceTags": []
    })];
    if s.reg.check.is_some() {
        checks.push(json!({
            "Node": "fake-consul", "CheckID": format!("service:{}", s.reg.id),
            "Name": format!("Service '{}' check", s.reg.name), "Status": s.status,
            "Notes": "", "Output": s.output, "ServiceID": s.reg.id,
            "ServiceName": s.reg.name, "ServiceTags": s.reg.tags.clone().unwrap_or_default()
        }));
    }
    json!({
        "Node": {"ID": "00000000-0000-0000-0000-000000000001", "Node": "fake-consul",
                 "Address": "127.0.0.1", "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": "127.0.0.1", "lan_ipv4": "127.0.0.1",
                                     "wan": "127.0.0.1", "wan_ipv4": "127.0.0.1"},
                 "Meta": {"consul-network-segment": ""}},
        "Service": {"ID": s.reg.id, "Service": s.reg.name, "Tags": s.reg.tags,
                    "Address": s.reg.address, "Port": s.reg.port, "Meta": s.reg.meta,
                    "CreateIndex": s.create_index, "ModifyIndex": s.modify_index},
        "Checks": checks,
    })
}

/// Every value of a repeated query parameter (`?tag=a&tag=b`).
fn repeated(raw: Option<&str>, name: &str) -> Vec<String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// Whether the fake's one node matches `?node-meta=key:value` filters (its
/// only meta key is `consul-network-segment`, empty, as a dev agent's).
fn node_meta_matches(raw: Option<&str>) -> bool {
    repeated(raw, "node-meta")
        .iter()
        .all(|kv| kv == "consul-network-segment:")
}

/// `GET /v1/agent/self`: the part of the agent's config clients read.
async fn agent_self(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    axum::Json(json!({
        "Config": {"Datacenter": "dc1", "NodeName": "fake-consul", "NodeID":
                   "00000000-0000-0000-0000-000000000001", "Server": true},
        "Member": {"Name": "fake-consul", "Addr": "127.0.0.1"},
        "Meta": {"consul-network-segment": ""},
    }))
    .into_response()
}

/// `GET /v1/agent/services`: every service registered with this agent, by
/// ID (not blocking, as the agent endpoints are polled).
async fn agent_services(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    let services: serde_json::Map<String, serde_json::Value> = shared
        .inner
        .lock()
        .services
        .values()
        .map(|s| (s.reg.id.clone(), agent_service(s)))
        .collect();
    axum::Json(serde_json::Value::Object(services)).into_response()
}

fn agent_service(s: &Service) -> serde_json::Value {
    json!({"ID": s.reg.id, "Service": s.reg.name, "Tags": s.reg.tags, "Meta": s.reg.meta,
           "Address": s.reg.address, "Port": s.reg.port,
           "TaggedAddresses": {"lan_ipv4": {"Address": s.reg.address, "Port": s.reg.port}},
           "Datacenter": "dc1"})
}

/// `GET /v1/agent/health/service/name/<name>`: the instances with their
/// aggregated status; 200 when all pass, 429 when the worst is warning,
/// 503 when critical, 404 without instances, as Consul answers.
async fn agent_health_service(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(name): Path<String>,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    let inner = shared.inner.lock();
    let instances: Vec<&Service> = inner
        .services
        .values()
        .filter(|s| s.reg.name == name)
        .collect();
    if instances.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            format!("ServiceName {name} Not found"),
        )
            .into_response();
    }
    let rank = |status: &str| match status {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    };
    let worst = instances.iter().map(|s| rank(s.status)).max().unwrap_or(0);
    let body: Vec<serde_json::Value> = instances
        .iter()
        .map(|s| {
            json!({"AggregatedStatus": s.status, "Service": agent_service(s),
                   "Checks": health_entry(s)["Checks"].clone()})
        })
        .collect();
    let status = match worst {
        2 => StatusCode::SERVICE_UNAVAILABLE,
        1 => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::OK,
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /v1/catalog/services`: every service name with the union of its
/// instances' tags; blocks until any service changes.
async fn catalog_services(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    RawQuery(raw_query): RawQuery,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    let (min_index, wait) = match blocking_params(&query) {
        Ok(params) => params,
        Err(bad) => return bad.into_response(),
    };
    let node_ok = node_meta_matches(raw_query.as_deref());
    let (index, services) = block(&shared, min_index, wait, |inner| {
        let index = inner.service_index.values().copied().max().unwrap_or(0);
        let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in inner.services.values().filter(|_| node_ok) {
            let tags = services.entry(s.reg.name.clone()).or_default();
            for tag in s.reg.tags.clone().unwrap_or_default() {
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
        (index, services)
    })
    .await;
    with_index(index, StatusCode::OK, json!(services))
}

async fn kv_get(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(key): Path<String>,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    let (min_index, wait) = match blocking_params(&query) {
        Ok(params) => params,
        Err(bad) => return bad.into_response(),
    };
    let recurse = flag(&query, "recurse");
    let matches = |k: &str| {
        if recurse {
            k.starts_with(&key)
        } else {
            k == key
        }
    };
    let (index, pairs) = block(&shared, min_index, wait, |inner| {
        let mut index = 0;
        let mut pairs = Vec::new();
        for (k, entry) in inner.kv.iter().filter(|(k, _)| matches(k)) {
            index = index.max(entry.modify_index);
            let value = (!entry.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value));
            pairs.push(json!({
                "Key": k, "Value": value, "Flags": entry.flags, "LockIndex": 0,
                "CreateIndex": entry.create_index, "ModifyIndex": entry.modify_index,
            }));
        }
        for (_, deleted) in inner.tombstones.iter().filter(|(k, _)| matches(k)) {
            index = index.max(*deleted);
        }
        (index, pairs)
    })
    .await;
    if pairs.is_empty() {
        let mut response = StatusCode::NOT_FOUND.into_response();
        response
            .headers_mut()
            .insert("X-Consul-Index", HeaderValue::from(index));
        return response;
    }
    with_index(index, StatusCode::OK, serde_json::Value::Array(pairs))
}

async fn kv_put(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    let parse = |name: &str| -> Result<Option<u64>, Rejection> {
        query
            .get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| bad_request(format!("Invalid {name}: {v:?}")))
            })
            .transpose()
    };
    let (cas, flags) = match (parse("cas"), parse("flags")) {
        (Ok(cas), Ok(flags)) => (cas, flags.unwrap_or(0)),
        (Err(bad), _) | (_, Err(bad)) => return bad.into_response(),
    };
    let index = {
        let mut inner = shared.inner.lock();
        let current = inner.kv.get(&key).map(|e| (e.create_index, e.modify_index));
        let allowed = match (cas, current) {
            (None, _) => true,
            (Some(0), existing) => existing.is_none(),
            (Some(cas), Some((_, modify))) => cas == modify,
            (Some(_), None) => false,
        };
        if !allowed {
            return axum::Json(false).into_response();
        }
        let index = inner.bump();
        inner.tombstones.remove(&key);
        inner.kv.insert(
            key,
            KvEntry {
                value: body.to_vec(),
                flags,
                create_index: current.map(|(create, _)| create).unwrap_or(index),
                modify_index: index,
            },
        );
        index
    };
    shared.notify(index);
    axum::Json(true).into_response()
}

async fn kv_delete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(key): Path<String>,
) -> Response {
    if let Err(denied) = shared.authorize(&headers, &query) {
        return denied.into_response();
    }
    let cas: Option<u64> = match query.get("cas").map(|v| v.parse()).transpose() {
        Ok(cas) => cas,
        Err(_) => return bad_request("Invalid cas").into_response(),
    };
    let recurse = flag(&query, "recurse");
    let index = {
        let mut inner = shared.inner.lock();
        if let Some(cas) = cas
            && inner.kv.get(&key).map(|e| e.modify_index) != Some(cas)
        {
            return axum::Json(false).into_response();
        }
        let doomed: Vec<String> = inner
            .kv
            .keys()
            .filter(|k| {
                if recurse {
                    k.starts_with(&key)
                } else {
                    **k == key
                }
            })
            .cloned()
            .collect();
        if doomed.is_empty() {
            return axum::Json(true).into_response();
        }
        let index = inner.bump();
        for k in doomed {
            inner.kv.remove(&k);
            inner.tombstones.insert(k, index);
        }
        index
    };
    shared.notify(index);
    axum::Json(true).into_response()
}
