//! The route table: which role serves a path, and under which route name
//! requests are counted.

use std::fmt;

/// The roles the gateway forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Upstream {
    Distributor,
    Querier,
    Tsdb,
    Ruler,
    AlertRouter,
}

impl Upstream {
    pub const ALL: [Upstream; 5] = [
        Upstream::Distributor,
        Upstream::Querier,
        Upstream::Tsdb,
        Upstream::Ruler,
        Upstream::AlertRouter,
    ];

    /// The role's name as `lucia <role>` and metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            Upstream::Distributor => "distributor",
            Upstream::Querier => "querier",
            Upstream::Tsdb => "tsdb",
            Upstream::Ruler => "ruler",
            Upstream::AlertRouter => "alert-router",
        }
    }

    /// The Consul service the role registers as.
    pub fn consul_service(self) -> String {
        format!("lucia-{}", self.name())
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub upstream: Upstream,
    /// The route's name in metrics and access logs.
    pub name: &'static str,
    /// The path to send to the backend (the Alertmanager prefix stripped).
    pub path: String,
    /// A form POST to this path only reads (query endpoints), so it may be
    /// retried on another backend.
    pub read_only_post: bool,
    /// The Loki tail websocket.
    pub websocket: bool,
}

/// Routes `path`; `None` for paths the gateway does not serve (404).
/// `alertmanager_prefix` is empty or starts with `/` and has no trailing `/`.
pub fn route(path: &str, alertmanager_prefix: &str) -> Option<Route> {
    let make = |upstream, name, read_only_post| {
        Some(Route {
            upstream,
            name,
            path: path.to_string(),
            read_only_post,
            websocket: false,
        })
    };
    // Loki write path.
    if matches!(path, "/loki/api/v1/push" | "/api/prom/push") || under(path, "/otlp") {
        return make(Upstream::Distributor, "loki_push", false);
    }
    // Loki ruler API, and the Prometheus-style rules/alerts Loki's ruler
    // serves under /prometheus (Grafana asks a Loki datasource there).
    if under(path, "/loki/api/v1/rules")
        || under(path, "/api/prom/rules")
        || under(path, "/prometheus")
    {
        return make(Upstream::Ruler, "loki_rules", false);
    }
    if matches!(path, "/loki/api/v1/tail" | "/api/prom/tail") {
        return Some(Route {
            upstream: Upstream::Querier,
            name: "loki_tail",
            path: path.to_string(),
            read_only_post: false,
            websocket: true,
        });
    }
    if under(path, "/loki/api/v1") || under(path, "/api/prom") {
        return make(Upstream::Querier, "loki_read", true);
    }
    // Prometheus API.
    if matches!(path, "/api/v1/rules" | "/api/v1/alerts") {
        return make(Upstream::Ruler, "prom_rules", false);
    }
    if path == "/api/v1/write" {
        return make(Upstream::Tsdb, "prom_write", false);
    }
    if under(path, "/api/v1") || path == "/federate" {
        return make(Upstream::Tsdb, "prom_read", true);
    }
    // Alertmanager API v2, at the root and under the prefix.
    if under(path, "/api/v2") {
        return make(Upstream::AlertRouter, "alertmanager", false);
    }
    if !alertmanager_prefix.is_empty()
        && let Some(rest) = path.strip_prefix(alertmanager_prefix)
        && under(rest, "/api/v2")
    {
        return Some(Route {
            upstream: Upstream::AlertRouter,
            name: "alertmanager",
            path: rest.to_string(),
            read_only_post: false,
            websocket: false,
        });
    }
    None
}

/// Whether `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The path prefixes the gateway routes, for the axum router (each also
/// with `/{*rest}`).
pub fn prefixes(alertmanager_prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = ["/loki", "/api", "/otlp", "/prometheus", "/federate"]
        .iter()
        .map(|p| p.to_string())
        .collect();
    if !alertmanager_prefix.is_empty() && !out.iter().any(|p| p == alertmanager_prefix) {
        out.push(alertmanager_prefix.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(path: &str) -> Option<(Upstream, String)> {
        route(path, "/alertmanager").map(|r| (r.upstream, r.path))
    }

    #[test]
    fn table() {
        use Upstream::*;
        let cases = [
            ("/loki/api/v1/push", Distributor),
            ("/api/prom/push", Distributor),
            ("/otlp/v1/logs", Distributor),
            ("/loki/api/v1/query_range", Querier),
            ("/loki/api/v1/label/app/values", Querier),
            ("/loki/api/v1/tail", Querier),
            ("/api/prom/query", Querier),
            ("/loki/api/v1/rules", Ruler),
            ("/loki/api/v1/rules/ns/group", Ruler),
            ("/api/prom/rules/ns", Ruler),
            ("/prometheus/api/v1/rules", Ruler),
            ("/prometheus/api/v1/alerts", Ruler),
            ("/api/v1/rules", Ruler),
            ("/api/v1/alerts", Ruler),
            ("/api/v1/write", Tsdb),
            ("/api/v1/query", Tsdb),
            ("/api/v1/label/__name__/values", Tsdb),
            ("/api/v1/status/buildinfo", Tsdb),
            ("/federate", Tsdb),
            ("/api/v2/status", AlertRouter),
            ("/api/v2/alerts/groups", AlertRouter),
        ];
        for (path, upstream) in cases {
            assert_eq!(up(path), Some((upstream, path.to_string())), "{path}");
        }
        assert_eq!(
            up("/alertmanager/api/v2/silences"),
            Some((AlertRouter, "/api/v2/silences".to_string()))
        );
        for path in [
            "/",
            "/lokix",
            "/loki/api/v1x",
            "/api/v1x/query",
            "/alertmanager/api/v1/alerts",
            "/alertmanager",
            "/api/v3/x",
        ] {
            assert_eq!(up(path), None, "{path}");
        }
        // Without a prefix only /api/v2 is the Alertmanager API.
        assert!(route("/alertmanager/api/v2/status", "").is_none());
        assert!(route("/loki/api/v1/tail", "").is_some_and(|r| r.websocket));
        assert!(route("/api/v1/query", "").is_some_and(|r| r.read_only_post));
        assert!(route("/api/v1/write", "").is_some_and(|r| !r.read_only_post));
    }
}
