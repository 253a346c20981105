//! The gateway in front of fake backends (axum routers that record what
//! they get): routing, auth and tenancy, retries, dead and missing
//! backends, streaming, the tail websocket, rate limits, metrics,
//! traceparent, CORS, Consul discovery, TLS, and the requests of Grafana's
//! Alertmanager datasource. One test binary.

mod harness;
mod tls;

use std::time::{Duration, Instant};

use harness::{Backend, Gateway, basic, bcrypt_hash};
use lucia_gateway::Config;
use lucia_gateway::config::{TenantRateLimit, TokenConfig, UserConfig};
use serde_json::Value;

fn with_backends(backends: &[(&str, &Backend)]) -> Config {
    let mut config = Config::default();
    for (role, backend) in backends {
        let url = vec![backend.url()];
        match *role {
            "all" => config.backends.all = url,
            "distributor" => config.backends.distributor = url,
            "querier" => config.backends.querier = url,
            "tsdb" => config.backends.tsdb = url,
            "ruler" => config.backends.ruler = url,
            "alert_router" => config.backends.alert_router = url,
            other => panic!("unknown role {other}"),
        }
    }
    config
}

#[tokio::test]
async fn routes_each_api_to_its_role() {
    let distributor = Backend::start("distributor").await;
    let querier = Backend::start("querier").await;
    let tsdb = Backend::start("tsdb").await;
    let ruler = Backend::start("ruler").await;
    let am = Backend::start("alert_router").await;
    let mut config = with_backends(&[
        ("distributor", &distributor),
        ("querier", &querier),
        ("tsdb", &tsdb),
        ("ruler", &ruler),
        ("alert_router", &am),
    ]);
    config.alertmanager_prefix = "/alertmanager".into();
    let gw = Gateway::start(config).await;
    let cases = [
        (
            "POST",
            "/loki/api/v1/push",
            "distributor",
            "/loki/api/v1/push",
        ),
        ("POST", "/api/prom/push", "distributor", "/api/prom/push"),
        ("POST", "/otlp/v1/logs", "distributor", "/otlp/v1/logs"),
        (
            "GET",
            "/loki/api/v1/query_range?query=%7Ba%3D%22b%22%7D&limit=10",
            "querier",
            "/loki/api/v1/query_range?query=%7Ba%3D%22b%22%7D&limit=10",
        ),
        (
            "GET",
            "/loki/api/v1/labels",
            "querier",
            "/loki/api/v1/labels",
        ),
        ("GET", "/api/prom/label", "querier", "/api/prom/label"),
        ("GET", "/loki/api/v1/rules", "ruler", "/loki/api/v1/rules"),
        (
            "POST",
            "/loki/api/v1/rules/ns",
            "ruler",
            "/loki/api/v1/rules/ns",
        ),
        ("GET", "/api/prom/rules", "ruler", "/api/prom/rules"),
        (
            "GET",
            "/prometheus/api/v1/rules",
            "ruler",
            "/prometheus/api/v1/rules",
        ),
        ("GET", "/api/v1/rules", "ruler", "/api/v1/rules"),
        ("GET", "/api/v1/alerts", "ruler", "/api/v1/alerts"),
        ("POST", "/api/v1/write", "tsdb", "/api/v1/write"),
        (
            "GET",
            "/api/v1/query?query=up",
            "tsdb",
            "/api/v1/query?query=up",
        ),
        (
            "GET",
            "/api/v1/status/buildinfo",
            "tsdb",
            "/api/v1/status/buildinfo",
        ),
        ("GET", "/api/v1/metadata", "tsdb", "/api/v1/metadata"),
        ("GET", "/api/v2/status", "alert_router", "/api/v2/status"),
        (
            "GET",
            "/alertmanager/api/v2/alerts/groups?active=true",
            "alert_router",
            "/api/v2/alerts/groups?active=true",
        ),
        (
            "DELETE",
            "/api/v2/silence/abc",
            "alert_router",
            "/api/v2/silence/abc",
        ),
    ];
    for (method, path, backend, seen) in cases {
        let (status, body) = gw.send_json(method, path, &[], "").await;
        assert_eq!(status, 200, "{method} {path}: {body}");
        assert_eq!(body["backend"], backend, "{method} {path}");
        assert_eq!(body["uri"], seen, "{method} {path}");
        assert_eq!(body["method"], method, "{method} {path}");
        assert_eq!(body["tenant"], "fake", "{method} {path}");
    }
    for path in [
        "/",
        "/nope",
        "/loki/api/v2/x",
        "/alertmanager/api/v1/alerts",
    ] {
        let (status, text) = gw.send("GET", path, &[], "").await;
        assert_eq!(status, 404, "{path}: {text}");
    }
    // The gateway's own endpoints.
    assert_eq!(gw.send("GET", "/ready", &[], "").await.0, 200);
    let (status, metrics) = gw.send("GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"lucia_gateway_requests_total{route="loki_read",status="200",tenant="fake"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"lucia_gateway_requests_total{route="not_found",status="404",tenant=""}"#)
    );
    assert!(metrics.contains("lucia_gateway_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn anonymous_mode_sets_the_tenant_and_strips_the_clients() {
    let all = Backend::start("all").await;
    let gw = Gateway::start(with_backends(&[("all", &all)])).await;
    let (_, body) = gw
        .send_json(
            "GET",
            "/loki/api/v1/labels",
            &[
                ("X-Scope-OrgID", "someone-else"),
                ("Authorization", "Basic eDp5"),
            ],
            "",
        )
        .await;
    assert_eq!(body["tenant"], "fake");
    assert_eq!(body["authorization"], Value::Null);

    let mut config = with_backends(&[("all", &all)]);
    config.auth.anonymous_tenant = "team-x".into();
    let gw = Gateway::start(config).await;
    let (_, body) = gw.send_json("GET", "/api/v1/labels", &[], "").await;
    assert_eq!(body["tenant"], "team-x");
}

fn auth_config(all: &Backend) -> Config {
    let mut config = with_backends(&[("all", all)]);
    config.auth.users = vec![
        UserConfig {
            username: "alice".into(),
            password_bcrypt: bcrypt_hash("wonderland"),
            tenants: vec!["team-a".into(), "shared".into()],
        },
        UserConfig {
            username: "bob".into(),
            password_bcrypt: bcrypt_hash("builder"),
            tenants: vec!["team-b".into()],
        },
    ];
    config.auth.tokens = vec![TokenConfig {
        name: Some("grafana".into()),
        token: None,
        // sha256("grafana-token")
        token_sha256: Some(harness::sha256_hex("grafana-token")),
        tenants: vec!["team-a".into()],
    }];
    config
}

#[tokio::test]
async fn users_and_tokens_act_only_for_their_tenants() {
    let all = Backend::start("all").await;
    let gw = Gateway::start(auth_config(&all)).await;
    let alice = basic("alice", "wonderland");
    let bob = basic("bob", "builder");

    // No or wrong credentials: 401 with a challenge, nothing forwarded.
    let before = all.requests().len();
    for headers in [
        vec![],
        vec![("Authorization", basic("alice", "nope"))],
        vec![("Authorization", "Bearer wrong".to_string())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = gw.request("GET", "/loki/api/v1/labels", &headers, "").await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"lucia\""
        );
    }
    assert_eq!(all.requests().len(), before);

    // A user's default tenant, a tenant it picks, and one it may not.
    let (_, body) = gw
        .send_json("GET", "/api/v1/labels", &[("Authorization", &alice)], "")
        .await;
    assert_eq!(body["tenant"], "team-a");
    assert_eq!(body["authorization"], Value::Null);
    let (_, body) = gw
        .send_json(
            "GET",
            "/api/v1/labels",
            &[("Authorization", &alice), ("X-Scope-OrgID", "shared")],
            "",
        )
        .await;
    assert_eq!(body["tenant"], "shared");
    let (status, text) = gw
        .send(
            "GET",
            "/api/v1/labels",
            &[("Authorization", &alice), ("X-Scope-OrgID", "team-b")],
            "",
        )
        .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("may not act for tenant \"team-b\""), "{text}");
    // Single-tenant users too: no way into another tenant.
    let (status, _) = gw
        .send(
            "POST",
            "/loki/api/v1/push",
            &[("Authorization", &bob), ("X-Scope-OrgID", "team-a")],
            "{}",
        )
        .await;
    assert_eq!(status, 403);
    let (_, body) = gw
        .send_json(
            "POST",
            "/loki/api/v1/push",
            &[("Authorization", &bob)],
            "{}",
        )
        .await;
    assert_eq!(body["tenant"], "team-b");
    // Bearer token.
    let (_, body) = gw
        .send_json(
            "GET",
            "/api/v2/silences",
            &[("Authorization", "Bearer grafana-token")],
            "",
        )
        .await;
    assert_eq!(body["tenant"], "team-a");
    // Every forwarded request carried exactly one tenant header.
    for request in all.requests() {
        assert_eq!(request.tenants.len(), 1, "{request:?}");
    }
    // /ready and /metrics need no credentials.
    assert_eq!(gw.send("GET", "/ready", &[], "").await.0, 200);
    let (_, metrics) = gw.send("GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains(r#"route="prom_read",status="403",tenant="""#)
            || metrics.contains(r#"status="403""#)
    );
}

#[tokio::test]
async fn a_missing_or_dead_backend_answers_503_quickly() {
    // Nothing configured for the querier, no Consul.
    let gw = Gateway::start(Config::default()).await;
    let (status, text) = gw.send("GET", "/loki/api/v1/labels", &[], "").await;
    assert_eq!(status, 503);
    assert!(
        text.starts_with("no healthy querier backend: none configured"),
        "{text}"
    );
    // A backend that is gone: connection refused, at once.
    let mut config = Config::default();
    config.backends.all = vec![format!("http://{}", harness::closed_addr())];
    let gw = Gateway::start(config).await;
    for (method, path) in [
        ("GET", "/api/v1/query?query=1"),
        ("POST", "/loki/api/v1/push"),
    ] {
        let started = Instant::now();
        let (status, text) = gw.send(method, path, &[], "x").await;
        assert_eq!(status, 503, "{text}");
        assert!(text.starts_with("no healthy "), "{text}");
        assert!(text.contains("127.0.0.1"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // A backend that never answers the connection (a full accept queue is
    // hard to make portably; an unroutable address is not allowed here), so
    // check that the connect timeout is what the config says.
    let (_, metrics) = gw.send("GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains(r#"lucia_gateway_backend_errors_total{backend="tsdb"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"lucia_gateway_backend_errors_total{backend="distributor"} 1"#));
}

#[tokio::test]
async fn idempotent_reads_are_retried_once_on_another_backend() {
    let sick = Backend::start("sick").await;
    sick.fail_with(503);
    let healthy = Backend::start("healthy").await;
    let mut config = Config::default();
    config.backends.querier = vec![sick.url(), healthy.url()];
    config.backends.distributor = vec![sick.url(), healthy.url()];
    config.backends.tsdb = vec![format!("http://{}", harness::closed_addr()), healthy.url()];
    let gw = Gateway::start(config).await;
    // Whichever backend round robin starts with, every read succeeds.
    for _ in 0..4 {
        let (status, body) = gw.send_json("GET", "/loki/api/v1/labels", &[], "").await;
        assert_eq!(status, 200);
        assert_eq!(body["backend"], "healthy");
        // A form POST to a query endpoint (Grafana's default) is a read.
        let (status, body) = gw
            .send_json(
                "POST",
                "/loki/api/v1/query_range",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                "query=%7Ba%3D%22b%22%7D",
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["body"], "query=%7Ba%3D%22b%22%7D");
        // A dead backend (connection refused) is skipped too.
        let (status, body) = gw.send_json("GET", "/api/v1/query?query=1", &[], "").await;
        assert_eq!(status, 200);
        assert_eq!(body["backend"], "healthy");
    }
    // Pushes go to one backend once: half of them meet the sick one.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(gw.send("POST", "/loki/api/v1/push", &[], "{}").await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    let sick_pushes = sick
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.uri == "/loki/api/v1/push")
        .count();
    assert_eq!(sick_pushes, 2);
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let all = Backend::start("all").await;
    let gw = Gateway::start(with_backends(&[("all", &all)])).await;
    // A 20 MiB push, larger than anything the gateway buffers.
    let big = "x".repeat(20 << 20);
    let (status, body) = gw.send_json("POST", "/loki/api/v1/push", &[], &big).await;
    assert_eq!(status, 200);
    assert_eq!(body["body_len"], 20 << 20);
    // A response whose first chunk arrives while the backend still holds
    // the rest: the client reads it before the backend is released.
    let mut response = gw.request("GET", "/loki/api/v1/stream", &[], "").await;
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("first chunk before the backend finished")
        .expect("chunk")
        .expect("some bytes");
    assert_eq!(&first[..], b"first\n");
    all.release();
    let rest = response.text().await.expect("rest");
    assert_eq!(rest, "second\n");
    // An oversized form query (not streamed: buffered for retries) is 413.
    let huge = format!("query={}", "y".repeat((1 << 20) + 10));
    let (status, _) = gw
        .send(
            "POST",
            "/api/v1/query",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &huge,
        )
        .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn tail_websocket_is_proxied() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let querier = Backend::start("querier").await;
    let gw = Gateway::start(with_backends(&[("querier", &querier)])).await;
    let url = format!(
        "ws://{}/loki/api/v1/tail?query=%7Bapp%3D%22a%22%7D",
        gw.addr
    );
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("X-Scope-OrgID", "ignored".parse().expect("header"));
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("websocket handshake through the gateway");
    assert_eq!(response.status(), 101);
    // The backend greets with the tenant and query it saw, then echoes.
    let hello = ws.next().await.expect("message").expect("ok");
    assert_eq!(
        hello.into_text().expect("text").as_str(),
        "tenant=fake query={app=\"a\"}"
    );
    ws.send(Message::Text("ping-1".into())).await.expect("send");
    let echo = ws.next().await.expect("message").expect("ok");
    assert_eq!(echo.into_text().expect("text").as_str(), "echo ping-1");
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn per_tenant_rate_limits() {
    let all = Backend::start("all").await;
    let mut config = auth_config(&all);
    config.rate_limit.requests_per_second = 0.5;
    config.rate_limit.burst = 2;
    config.rate_limit.tenants.insert(
        "shared".into(),
        TenantRateLimit {
            requests_per_second: 1000.0,
            burst: 1000,
        },
    );
    let gw = Gateway::start(config).await;
    let alice = basic("alice", "wonderland");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            gw.send("GET", "/api/v1/labels", &[("Authorization", &alice)], "")
                .await
                .0,
        );
    }
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    let (_, text) = gw
        .send("GET", "/api/v1/labels", &[("Authorization", &alice)], "")
        .await;
    assert!(text.contains("tenant \"team-a\" exceeded"), "{text}");
    // Another tenant of the same user has its own (larger) bucket.
    for _ in 0..10 {
        let (status, _) = gw
            .send(
                "GET",
                "/api/v1/labels",
                &[("Authorization", &alice), ("X-Scope-OrgID", "shared")],
                "",
            )
            .await;
        assert_eq!(status, 200);
    }
    let (_, metrics) = gw.send("GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains(
            r#"lucia_gateway_requests_total{route="prom_read",status="429",tenant="team-a"} 3"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn traceparent_is_propagated_or_created() {
    let all = Backend::start("all").await;
    let gw = Gateway::start(with_backends(&[("all", &all)])).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, body) = gw
        .send_json("GET", "/api/v1/labels", &[("traceparent", incoming)], "")
        .await;
    assert_eq!(body["traceparent"], incoming);
    let (_, body) = gw.send_json("GET", "/api/v1/labels", &[], "").await;
    let created = body["traceparent"].as_str().expect("a traceparent");
    assert!(
        lucia_gateway::traceparent::parse(created).is_some(),
        "{created}"
    );
    let (_, body) = gw
        .send_json("GET", "/api/v1/labels", &[("traceparent", "garbage")], "")
        .await;
    assert_ne!(body["traceparent"], "garbage");
}

#[tokio::test]
async fn cors_for_browsers() {
    let all = Backend::start("all").await;
    let mut config = with_backends(&[("all", &all)]);
    config.cors.allowed_origins = vec!["https://grafana.example".into()];
    let gw = Gateway::start(config).await;
    let preflight = gw
        .request(
            "OPTIONS",
            "/loki/api/v1/query_range",
            &[
                ("Origin", "https://grafana.example"),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "x-scope-orgid"),
            ],
            "",
        )
        .await;
    assert_eq!(preflight.status(), 204);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://grafana.example");
    assert_eq!(h["access-control-allow-headers"], "x-scope-orgid");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .is_ok_and(|m| m.contains("POST"))
    );
    let response = gw
        .request(
            "GET",
            "/loki/api/v1/labels",
            &[("Origin", "https://grafana.example")],
            "",
        )
        .await;
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://grafana.example"
    );
    let other = gw
        .request(
            "GET",
            "/loki/api/v1/labels",
            &[("Origin", "https://evil.example")],
            "",
        )
        .await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let refused = gw
        .request(
            "OPTIONS",
            "/loki/api/v1/labels",
            &[
                ("Origin", "https://evil.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            "",
        )
        .await;
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn backends_are_discovered_in_consul() {
    let consul = lucia_tests::fake_consul::FakeConsul::start().await;
    let querier = Backend::start("querier").await;
    let gw = Gateway::start_with_consul(Config::default(), Some(consul.config())).await;
    // Nothing registered yet: 503 naming the service.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = gw.send("GET", "/loki/api/v1/labels", &[], "").await;
        assert_eq!(status, 503);
        if text.contains("consul lists no instance of lucia-querier with passing checks") {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Register the querier with a /ready check: once passing, it is used.
    let client = lucia_common::consul::ConsulClient::new(&consul.config()).expect("client");
    let mut check_config = consul.config();
    check_config.check_interval = lucia_common::duration::ConfigDuration::from_millis(100);
    let registration =
        lucia_common::server::service_registrations(&check_config, &["querier"], querier.addr);
    for reg in &registration {
        client.register_service(reg).await.expect("register");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = gw.send("GET", "/loki/api/v1/labels", &[], "").await;
        if status == 200 {
            assert!(body.contains("\"backend\":\"querier\""), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never discovered: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deregistered: gone again, through the blocking query.
    client
        .deregister_service(&registration[0].id)
        .await
        .expect("deregister");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = gw.send("GET", "/loki/api/v1/labels", &[], "").await;
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Grafana's Alertmanager datasource at the gateway's address, with
/// implementation "Prometheus" (public/app/plugins/datasource/alertmanager/
/// DataSource.ts, testDatasource): "Save & test" first GETs
/// `/alertmanager/api/v2/status` and reports a Mimir endpoint, as an error,
/// if that answers 200; then `/api/v2/status` must answer 200. The
/// alerting UI then reads `/api/v2/alerts/groups`, `/api/v2/silences`,
/// `/api/v2/status` and posts silences (Grafana's backend proxies them as
/// the datasource's URL + path, with the datasource's auth).
#[tokio::test]
async fn grafana_alertmanager_datasource() {
    let am = Backend::start("alert_router").await;
    let gw = Gateway::start(with_backends(&[("alert_router", &am)])).await;
    let (status, _) = gw.send("GET", "/alertmanager/api/v2/status", &[], "").await;
    assert_ne!(status, 200, "Grafana would report a Mimir endpoint");
    let (status, body) = gw.send_json("GET", "/api/v2/status", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(body["uri"], "/api/v2/status");
    for path in [
        "/api/v2/alerts/groups?silenced=false&inhibited=false&active=true",
        "/api/v2/alerts?filter=alertname%3D%22X%22",
        "/api/v2/silences",
        "/api/v2/receivers",
    ] {
        let (status, body) = gw.send_json("GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["uri"], path);
    }
    let silence = r#"{"matchers":[{"name":"a","value":"b","isRegex":false,"isEqual":true}],"startsAt":"2024-01-01T00:00:00Z","endsAt":"2024-01-02T00:00:00Z","createdBy":"me","comment":"c"}"#;
    let (status, body) = gw
        .send_json(
            "POST",
            "/api/v2/silences",
            &[("Content-Type", "application/json")],
            silence,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["body"], silence);

    // With alertmanager_prefix set (Mimir's layout, for other clients) the
    // same check passes at http://GATEWAY/alertmanager: the gateway strips
    // the prefix once, so /alertmanager/alertmanager/api/v2/status is 404.
    let mut config = with_backends(&[("alert_router", &am)]);
    config.alertmanager_prefix = "/alertmanager".into();
    let gw = Gateway::start(config).await;
    let (status, _) = gw
        .send("GET", "/alertmanager/alertmanager/api/v2/status", &[], "")
        .await;
    assert_ne!(status, 200);
    let (status, body) = gw
        .send_json("GET", "/alertmanager/api/v2/status", &[], "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["uri"], "/api/v2/status");
}
