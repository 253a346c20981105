//! `lucia gateway` in front of `lucia all` (multi-tenant): the requests
//! Grafana's Loki and Prometheus datasources send, replayed through the
//! gateway with basic auth, answered with the bodies Grafana parses; and
//! two users' tenants kept apart.

use std::process::{Command, Stdio};

use lucia_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message as _;
use serde_json::Value;

use crate::harness::{Lucia, free_port};

const PASSWORD: &str = "grafana-password";

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash_with_salt(password, 4, [3; 16])
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoY)
}

fn basic(user: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PASSWORD}"))
    )
}

async fn start_gateway(dir: &std::path::Path, backend: &str) -> Lucia {
    let port = free_port();
    let config = format!(
        "gateway:\n  backends:\n    all: [\"http://{backend}\"]\n    alert_router: [\"http://{backend}/alertmanager\"]\n  auth:\n    users:\n      \
         - username: grafana\n        password_bcrypt: \"{hash}\"\n        tenants: [team-a, team-b]\n      \
         - username: bob\n        password_bcrypt: \"{hash}\"\n        tenants: [team-b]\n",
        hash = bcrypt_hash(PASSWORD),
    );
    let config_path = dir.join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write gateway config");
    let child = Command::new(env!("CARGO_BIN_EXE_lucia"))
        .arg("gateway")
        .arg("--config.file")
        .arg(&config_path)
        .arg("--http.listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data.dir")
        .arg(dir)
        .arg("--log.level")
        .arg("warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn lucia gateway");
    Lucia::adopt(child, port).await
}

struct Client {
    http: reqwest::Client,
    base: String,
    auth: String,
    tenant: Option<&'static str>,
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", &self.auth);
        if let Some(tenant) = self.tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        request
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let path = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let response = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .expect("GET through the gateway");
        answer(response).await
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .request(reqwest::Method::POST, path)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST through the gateway");
        answer(response).await
    }
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn remote_write_body(name: &str, value: f64, ts_ms: i64) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: name.into(),
                },
                Label {
                    name: "job".into(),
                    value: "gateway-test".into(),
                },
            ],
            samples: vec![Sample {
                value,
                timestamp: ts_ms,
            }],
            exemplars: vec![],
        }],
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy")
}

fn streams_lines(body: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for stream in body["data"]["result"].as_array().into_iter().flatten() {
        for value in stream["values"].as_array().into_iter().flatten() {
            lines.push(value[1].as_str().unwrap_or_default().to_string());
        }
    }
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_through_the_gateway_in_front_of_lucia_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = Lucia::start(dir.path(), free_port(), "auth_enabled: true\n").await;
    let gateway = start_gateway(dir.path(), &all.addr).await;
    let http = lucia_common::http_client::client();
    let base = format!("http://{}", gateway.addr);
    let client = |user: &str, tenant: Option<&'static str>| Client {
        http: http.clone(),
        base: base.clone(),
        auth: basic(user),
        tenant,
    };
    let team_a = client("grafana", Some("team-a"));
    let team_b = client("bob", None);

    // Writes through the gateway: a log line per tenant, a sample per tenant.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    for (who, line, value) in [
        (&team_a, "line of team a", 42.0),
        (&team_b, "line of team b", 7.0),
    ] {
        let push = serde_json::json!({"streams": [{
            "stream": {"app": "gw", "env": "test"},
            "values": [[format!("{}", now_s * 1_000_000_000), line]],
        }]});
        let response = who
            .request(reqwest::Method::POST, "/loki/api/v1/push")
            .header("Content-Type", "application/json")
            .body(push.to_string())
            .send()
            .await
            .expect("push");
        assert_eq!(response.status(), 204, "{:?}", response.text().await);
        let response = who
            .request(reqwest::Method::POST, "/api/v1/write")
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(remote_write_body("gw_metric", value, (now_s - 30) * 1000))
            .send()
            .await
            .expect("remote write");
        assert_eq!(response.status(), 204, "{:?}", response.text().await);
    }
    let start = ((now_s - 3600) * 1_000_000_000).to_string();
    let end = ((now_s + 60) * 1_000_000_000).to_string();
    let (start_s, end_s) = ((now_s - 3600).to_string(), (now_s + 60).to_string());

    // ---- Loki datasource ----
    // "Save & test": pkg/tsdb/loki/healthcheck.go runs the instant query
    // `vector(1)+vector(1)` and expects a vector with 2; older frontends
    // (public/app/plugins/datasource/loki/datasource.ts testDatasource) GET
    // /loki/api/v1/labels with start and end in nanoseconds.
    let (status, body) = team_a
        .get(
            "/loki/api/v1/query",
            &[("query", "vector(1)+vector(1)"), ("time", &end)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "vector");
    assert_eq!(body["data"]["result"][0]["value"][1], "2");
    let (status, body) = team_a
        .get("/loki/api/v1/labels", &[("start", &start), ("end", &end)])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    let labels: Vec<&str> = body["data"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        labels.contains(&"app") && labels.contains(&"env"),
        "{labels:?}"
    );
    // Label browser (LanguageProvider: fetchLabelValues, then series for the
    // selector being built).
    let (_, body) = team_a
        .get(
            "/loki/api/v1/label/app/values",
            &[("start", &start), ("end", &end)],
        )
        .await;
    assert_eq!(body["data"], serde_json::json!(["gw"]));
    let (_, body) = team_a
        .get(
            "/loki/api/v1/series",
            &[
                ("match[]", "{app=\"gw\"}"),
                ("start", &start),
                ("end", &end),
            ],
        )
        .await;
    assert_eq!(body["data"][0]["app"], "gw");
    // Explore log query: pkg/tsdb/loki/api.go makeDataRequest sends
    // query_range with direction, limit, query, start, end, step.
    let (status, body) = team_a
        .get(
            "/loki/api/v1/query_range",
            &[
                ("direction", "backward"),
                ("limit", "1000"),
                ("query", "{app=\"gw\"}"),
                ("start", &start),
                ("end", &end),
                ("step", "2s"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "streams");
    assert_eq!(streams_lines(&body), vec!["line of team a"]);
    // Explore metric query and the logs volume histogram.
    let (_, body) = team_a
        .get(
            "/loki/api/v1/query_range",
            &[
                (
                    "query",
                    "sum by (level) (count_over_time({app=\"gw\"}[1m]))",
                ),
                ("start", &start),
                ("end", &end),
                ("step", "60"),
            ],
        )
        .await;
    assert_eq!(body["data"]["resultType"], "matrix", "{body}");
    let total: f64 = body["data"]["result"][0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(|v| v[1].as_str()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert_eq!(total, 1.0);
    // Query hints (index/stats) and the buildinfo Grafana reads for features.
    let (status, body) = team_a
        .get(
            "/loki/api/v1/index/stats",
            &[("query", "{app=\"gw\"}"), ("start", &start), ("end", &end)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"], 1);
    let (status, body) = team_a.get("/loki/api/v1/status/buildinfo", &[]).await;
    assert_eq!(status, 200);
    assert!(body["version"].is_string());

    // ---- Prometheus datasource ----
    // "Save & test": pkg/promlib/healthcheck.go, the instant query 1+1 as
    // a form POST (the datasource's default HTTP method), then buildinfo.
    let (status, body) = team_a
        .post_form("/api/v1/query", &[("query", "1+1"), ("time", "4")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["result"][1], "2");
    let (status, body) = team_a.get("/api/v1/query", &[("query", "1+1")]).await;
    assert_eq!(
        (status, &body["data"]["result"][1]),
        (200, &Value::from("2"))
    );
    let (_, body) = team_a.get("/api/v1/status/buildinfo", &[]).await;
    assert!(body["data"]["version"].is_string());
    // Metrics browser (packages/grafana-prometheus resource_clients.ts):
    // metric names, label keys, label values with match[], series.
    let (_, body) = team_a
        .get(
            "/api/v1/label/__name__/values",
            &[("start", &start_s), ("end", &end_s), ("limit", "40000")],
        )
        .await;
    assert_eq!(body["data"], serde_json::json!(["gw_metric"]));
    let (_, body) = team_a
        .get("/api/v1/labels", &[("start", &start_s), ("end", &end_s)])
        .await;
    assert_eq!(body["data"], serde_json::json!(["__name__", "job"]));
    // Template variable label_values(gw_metric, job).
    let (_, body) = team_a
        .get(
            "/api/v1/label/job/values",
            &[
                ("match[]", "gw_metric"),
                ("start", &start_s),
                ("end", &end_s),
            ],
        )
        .await;
    assert_eq!(body["data"], serde_json::json!(["gateway-test"]));
    let (_, body) = team_a
        .get(
            "/api/v1/series",
            &[
                ("match[]", "{__name__!=\"\"}"),
                ("start", &start_s),
                ("end", &end_s),
            ],
        )
        .await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    let (status, body) = team_a.get("/api/v1/metadata", &[]).await;
    assert_eq!(status, 200);
    assert!(body["data"].is_object());
    // A dashboard panel: client.go QueryRange as a form POST.
    let (status, body) = team_a
        .post_form(
            "/api/v1/query_range",
            &[
                ("query", "gw_metric"),
                ("start", &(now_s - 120).to_string()),
                ("end", &now_s.to_string()),
                ("step", "15"),
                ("timeout", "60s"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "matrix");
    let values = body["data"]["result"][0]["values"]
        .as_array()
        .expect("values");
    assert!(values.iter().all(|v| v[1] == "42"), "{body}");

    // ---- Tenants ----
    // bob sees only team-b's line and sample, grafana may switch to team-b.
    for who in [&team_b, &client("grafana", Some("team-b"))] {
        let (_, body) = who
            .get(
                "/loki/api/v1/query_range",
                &[("query", "{app=\"gw\"}"), ("start", &start), ("end", &end)],
            )
            .await;
        assert_eq!(streams_lines(&body), vec!["line of team b"]);
        let (_, body) = who
            .post_form(
                "/api/v1/query",
                &[("query", "gw_metric"), ("time", &now_s.to_string())],
            )
            .await;
        assert_eq!(body["data"]["result"][0]["value"][1], "7", "{body}");
    }
    // bob cannot ask for team-a; a stranger or a wrong password gets 401.
    let (status, _) = client("bob", Some("team-a"))
        .get("/loki/api/v1/labels", &[])
        .await;
    assert_eq!(status, 403);
    let (status, _) = client("mallory", None)
        .get("/loki/api/v1/labels", &[])
        .await;
    assert_eq!(status, 401);
    let response = http
        .get(format!("{base}/api/v1/query?query=gw_metric"))
        .header("X-Scope-OrgID", "team-a")
        .send()
        .await
        .expect("anonymous");
    assert_eq!(response.status(), 401);

    // Grafana's Alertmanager datasource (implementation "prometheus"):
    // "Save & test" reads /api/v2/status (public/app/plugins/datasource/
    // alertmanager/DataSource.ts, testDatasource); the alerting UI lists
    // /api/v2/alerts/groups and /api/v2/silences and creates silences with
    // POST /api/v2/silences. Here the gateway reaches lucia all's
    // alert-router under /alertmanager; silences stay per tenant.
    let (status, body) = team_a.get("/api/v2/status", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["config"]["original"].is_string(), "{body}");
    assert!(body["versionInfo"]["version"].is_string(), "{body}");
    let (status, body) = team_a.get("/api/v2/alerts/groups", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.is_array(), "{body}");
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "GatewayTest", "isRegex": false, "isEqual": true}],
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": "grafana",
        "comment": "through the gateway",
    });
    let response = team_a
        .request(reqwest::Method::POST, "/api/v2/silences")
        .header("Content-Type", "application/json")
        .body(silence.to_string())
        .send()
        .await
        .expect("create silence");
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["silenceID"].is_string(), "{body}");
    let (status, body) = team_a.get("/api/v2/silences", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    let (status, body) = team_b.get("/api/v2/silences", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.as_array().map(Vec::len),
        Some(0),
        "team b sees no silence of team a: {body}"
    );

    // The gateway counted every request by route, status and tenant.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains(
            r#"lucia_gateway_requests_total{route="loki_push",status="204",tenant="team-a"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"route="prom_write",status="204",tenant="team-b"} 1"#));
}
