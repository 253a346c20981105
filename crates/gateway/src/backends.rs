//! The backends of each role: listed in the config or discovered in Consul
//! (`lucia-<role>`, passing checks only, blocking queries), picked round
//! robin, and skipped for a while after a connection to them failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lucia_common::Shutdown;
use lucia_common::consul::{ConsulClient, ConsulConfig};
use parking_lot::RwLock;

use crate::config::BackendsConfig;
use crate::routes::Upstream;

/// The backends of one role.
pub struct Pool {
    upstream: Upstream,
    state: RwLock<PoolState>,
    next: AtomicUsize,
    /// Backends that refused a connection, until when they are skipped.
    down: RwLock<HashMap<String, Instant>>,
    down_for: Duration,
}

struct PoolState {
    /// Base URLs, `http://host:port`, without a trailing slash.
    urls: Vec<String>,
    /// Why there is no backend, when `urls` is empty.
    reason: String,
}

impl Pool {
    fn new(upstream: Upstream, urls: Vec<String>, reason: String, down_for: Duration) -> Self {
        Self {
            upstream,
            state: RwLock::new(PoolState { urls, reason }),
            next: AtomicUsize::new(0),
            down: RwLock::new(HashMap::new()),
            down_for,
        }
    }

    pub fn upstream(&self) -> Upstream {
        self.upstream
    }

    /// The backends to try, in order: round robin, those marked down last.
    /// `Err` carries why there is none.
    pub fn pick(&self) -> Result<Vec<String>, String> {
        let state = self.state.read();
        if state.urls.is_empty() {
            return Err(state.reason.clone());
        }
        let n = state.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        let down = self.down.read();
        let is_down = |url: &String| down.get(url).is_some_and(|until| *until > now);
        let rotated = (0..n).map(|i| &state.urls[(start + i) % n]);
        let mut out: Vec<String> = rotated.clone().filter(|u| !is_down(u)).cloned().collect();
        out.extend(rotated.filter(|u| is_down(u)).cloned());
        Ok(out)
    }

    /// Skips `url` for a while (it refused a connection).
    pub fn mark_down(&self, url: &str) {
        self.down
            .write()
            .insert(url.to_string(), Instant::now() + self.down_for);
    }

    pub fn mark_up(&self, url: &str) {
        if self.down.read().contains_key(url) {
            self.down.write().remove(url);
        }
    }

    fn set(&self, urls: Vec<String>, reason: String) {
        let mut state = self.state.write();
        if state.urls != urls {
            tracing::info!(role = %self.upstream, backends = ?urls, "gateway backends changed");
        }
        state.urls = urls;
        state.reason = reason;
    }
}

/// Every role's pool.
#[derive(Clone)]
pub struct Backends {
    pools: Arc<HashMap<Upstream, Arc<Pool>>>,
}

impl Backends {
    /// Pools from the static lists, and Consul watchers for the roles
    /// without one when `consul` is set (stopped by `shutdown`).
    pub fn start(
        config: &BackendsConfig,
        consul: Option<&ConsulConfig>,
        down_for: Duration,
        shutdown: &Shutdown,
    ) -> Result<Self, String> {
        let mut pools = HashMap::new();
        for upstream in Upstream::ALL {
            let listed = match upstream {
                Upstream::Distributor => &config.distributor,
                Upstream::Querier => &config.querier,
                Upstream::Tsdb => &config.tsdb,
                Upstream::Ruler => &config.ruler,
                Upstream::AlertRouter => &config.alert_router,
            };
            let listed = if listed.is_empty() {
                &config.all
            } else {
                listed
            };
            let urls = listed
                .iter()
                .map(|u| normalize_url(u))
                .collect::<Result<Vec<_>, _>>()?;
            let pool = if !urls.is_empty() {
                Arc::new(Pool::new(upstream, urls, String::new(), down_for))
            } else if let Some(consul) = consul {
                let client = ConsulClient::new(consul).map_err(|e| e.to_string())?;
                let pool = Arc::new(Pool::new(
                    upstream,
                    Vec::new(),
                    format!(
                        "waiting for consul's first answer about {}",
                        upstream.consul_service()
                    ),
                    down_for,
                ));
                tokio::spawn(watch(client, pool.clone(), shutdown.clone()));
                pool
            } else {
                Arc::new(Pool::new(
                    upstream,
                    Vec::new(),
                    format!(
                        "none configured: list gateway.backends.{} (or .all) or configure consul",
                        upstream.name().replace('-', "_")
                    ),
                    down_for,
                ))
            };
            pools.insert(upstream, pool);
        }
        Ok(Self {
            pools: Arc::new(pools),
        })
    }

    pub fn pool(&self, upstream: Upstream) -> &Arc<Pool> {
        // Every upstream gets a pool in `start`.
        &self.pools[&upstream]
    }
}

/// `host:port` or `http://host:port[/prefix][/]` → `http://host:port[/prefix]`.
/// A path prefix is kept: requests go to `prefix + path` (for example the
/// alert-router of `lucia all` under `/alertmanager`).
fn normalize_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let with_scheme = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|e| format!("invalid gateway backend {url:?}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "invalid gateway backend {url:?}: only http:// and https:// backends are supported"
        ));
    }
    if uri.authority().is_none() || uri.query().is_some() {
        return Err(format!(
            "invalid gateway backend {url:?}: expected http(s)://host:port[/path-prefix]"
        ));
    }
    Ok(with_scheme)
}

/// Follows `lucia-<role>` in Consul with blocking queries until `shutdown`.
async fn watch(client: ConsulClient, pool: Arc<Pool>, shutdown: Shutdown) {
    let service = pool.upstream().consul_service();
    let mut index = 0;
    let mut delay = Duration::from_millis(500);
    loop {
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = client.health_service(&service, true, index, None) => answer,
        };
        match answer {
            Ok(found) => {
                delay = Duration::from_millis(500);
                // Consul resets the index when it goes backwards (a restart).
                index = if found.index < index { 0 } else { found.index };
                let mut urls: Vec<String> = found
                    .value
                    .iter()
                    .filter(|entry| entry.is_passing())
                    .map(|entry| format!("http://{}", entry.addr()))
                    .collect();
                urls.sort();
                urls.dedup();
                pool.set(
                    urls,
                    format!("consul lists no instance of {service} with passing checks"),
                );
                continue;
            }
            Err(err) => {
                tracing::warn!(%service, %err, "gateway cannot read backends from consul");
                // Keep the last known backends; say why when there is none.
                let urls = pool.state.read().urls.clone();
                pool.set(urls, format!("consul: {err}"));
                index = 0;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(normalize_url("a:1").as_deref(), Ok("http://a:1"));
        assert_eq!(normalize_url("http://a:1/").as_deref(), Ok("http://a:1"));
        assert_eq!(normalize_url("https://a:1/").as_deref(), Ok("https://a:1"));
        assert!(normalize_url("ftp://a:1").is_err());
        assert_eq!(
            normalize_url("http://a:1/alertmanager/").as_deref(),
            Ok("http://a:1/alertmanager")
        );
        assert!(normalize_url("http://a:1/x?y=1").is_err());
    }

    #[test]
    fn round_robin_skips_down_backends() {
        let urls = vec!["http://a".to_string(), "http://b".to_string()];
        let pool = Pool::new(
            Upstream::Querier,
            urls,
            String::new(),
            Duration::from_secs(60),
        );
        let first = pool.pick().unwrap();
        let second = pool.pick().unwrap();
        assert_ne!(first[0], second[0]);
        pool.mark_down("http://a");
        for _ in 0..4 {
            assert_eq!(pool.pick().unwrap(), vec!["http://b", "http://a"]);
        }
        pool.mark_up("http://a");
        let picks: Vec<String> = (0..2).map(|_| pool.pick().unwrap()[0].clone()).collect();
        assert!(picks.contains(&"http://a".to_string()));
        let empty = Pool::new(Upstream::Tsdb, vec![], "why".into(), Duration::ZERO);
        assert_eq!(empty.pick(), Err("why".to_string()));
    }
}
