//! The read API over a real cluster in-process: ingesters and a distributor
//! from the ingester crate, the querier, a temp-dir store.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::metrics::Metrics;
use lucia_common::server::{Readiness, Role, RoleContext, bind, serve_roles};
use lucia_common::store::StorageConfig;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const SECOND: i64 = 1_000_000_000;

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "test-querier-{}-{}/",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn storage(dir: &Path) -> StorageConfig {
    let mut storage = StorageConfig::default();
    storage.filesystem.directory = Some(dir.to_path_buf());
    storage
}

/// One server (a process) running some roles.
struct Server {
    url: String,
    shutdown: Shutdown,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(data_dir: &Path, roles: impl AsyncFnOnce(RoleContext) -> Vec<Role>) -> Server {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let ctx = RoleContext {
            advertise_addr: addr,
            metrics: Metrics::new(),
            readiness: Readiness::default(),
            shutdown: Shutdown::new(),
            data_dir: data_dir.to_path_buf(),
            multi_tenant: true,
            consul: None,
        };
        let roles = roles(ctx.clone()).await;
        let shutdown = ctx.shutdown.clone();
        let task = tokio::spawn(async move { serve_roles(listener, &ctx, roles).await });
        Server {
            url: format!("http://{addr}"),
            shutdown,
            task,
        }
    }

    /// Graceful stop: an ingester flushes everything to the store.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn ingester(data_dir: &Path, store: &Path, prefix: &str) -> Server {
    let mut config = lucia_ingester::ingester::Config::default();
    config.ring.kvstore.prefix = prefix.to_string();
    config.flush_check_period = ConfigDuration::from_secs(3600);
    config.wal.checkpoint_duration = ConfigDuration::from_secs(3600);
    config.storage = storage(store);
    Server::start(data_dir, async |ctx| {
        vec![lucia_ingester::ingester::start(config, ctx).await.unwrap()]
    })
    .await
}

/// A distributor and a querier sharing one listener.
async fn front(data_dir: &Path, store: &Path, prefix: &str) -> Server {
    let mut distributor = lucia_ingester::distributor::Config::default();
    distributor.ring.kvstore.prefix = prefix.to_string();
    let mut querier = lucia_querier::Config::default();
    querier.ring.kvstore.prefix = prefix.to_string();
    querier.storage = storage(store);
    Server::start(data_dir, async |ctx| {
        vec![
            lucia_ingester::distributor::start(distributor, ctx.clone())
                .await
                .unwrap(),
            lucia_querier::start(querier, ctx).await.unwrap(),
        ]
    })
    .await
}

struct Cluster {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
    prefix: String,
    front: Server,
    http: reqwest::Client,
}

impl Cluster {
    async fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let store = root.join("store");
        let prefix = unique_prefix();
        let front = front(&root.join("front"), &store, &prefix).await;
        Cluster {
            _dir: dir,
            root,
            store,
            prefix,
            front,
            http: lucia_common::http_client::client(),
        }
    }

    async fn ingester(&self, name: &str) -> Server {
        ingester(&self.root.join(name), &self.store, &self.prefix).await
    }

    async fn push(&self, tenant: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}/loki/api/v1/push", self.front.url))
            .header("X-Scope-OrgID", tenant)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{}", response.text().await.unwrap());
    }

    async fn get(&self, tenant: &str, path: &str, params: &[(&str, &str)]) -> (u16, String) {
        let response = self
            .http
            .get(with_query(&format!("{}{path}", self.front.url), params))
            .header("X-Scope-OrgID", tenant)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn get_json(&self, tenant: &str, path: &str, params: &[(&str, &str)]) -> Value {
        let (status, body) = self.get(tenant, path, params).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("{url}?{query}")
}

fn now() -> i64 {
    lucia_common::time::now_nanos()
}

fn push_body(app: &str, entries: &[(i64, &str)]) -> Value {
    let values: Vec<Value> = entries
        .iter()
        .map(|(ts, line)| json!([ts.to_string(), line]))
        .collect();
    json!({"streams": [{"stream": {"app": app, "env": "test"}, "values": values}]})
}

/// (timestamp, line) of every entry of a streams answer, in answer order.
fn lines(answer: &Value) -> Vec<(String, String)> {
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(answer["data"]["resultType"], "streams", "{answer}");
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap().iter())
        .map(|v| {
            (
                v[0].as_str().unwrap().to_string(),
                v[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn range(c: &Cluster, tenant: &str, query: &str, extra: &[(&str, &str)]) -> Value {
    let start = (now() - 600 * SECOND).to_string();
    let end = (now() + 60 * SECOND).to_string();
    let mut params = vec![("query", query), ("start", &start), ("end", &end)];
    params.extend_from_slice(extra);
    c.get_json(tenant, "/loki/api/v1/query_range", &params)
        .await
}

#[tokio::test]
async fn entries_from_ingesters_and_store_without_duplicates() {
    let c = Cluster::new().await;
    let t0 = now() - 60 * SECOND;

    // First ingester: two lines, then a graceful stop flushes them.
    let first = c.ingester("ing-1").await;
    c.push("team-a", push_body("api", &[(t0, "one"), (t0 + 1, "two")]))
        .await;
    let answer = range(&c, "team-a", r#"{app="api"}"#, &[]).await;
    let got = lines(&answer);
    assert_eq!(
        got,
        vec![
            ((t0 + 1).to_string(), "two".to_string()),
            (t0.to_string(), "one".to_string())
        ],
        "backward by default, from the ingester"
    );
    assert_eq!(answer["data"]["result"][0]["stream"]["app"], "api");
    first.stop().await;
    assert!(std::fs::read_dir(&c.store).unwrap().next().is_some());

    // Only the store has them now.
    let answer = range(&c, "team-a", r#"{app="api"}"#, &[("direction", "forward")]).await;
    assert_eq!(
        lines(&answer),
        vec![
            (t0.to_string(), "one".to_string()),
            ((t0 + 1).to_string(), "two".to_string())
        ],
        "forward, from the store"
    );

    // A second ingester receives one of the flushed lines again and a new
    // one: the store and the ingester overlap.
    let _second = c.ingester("ing-2").await;
    c.push(
        "team-a",
        push_body("api", &[(t0 + 1, "two"), (t0 + 2, "three")]),
    )
    .await;
    let answer = range(&c, "team-a", r#"{app="api"}"#, &[("direction", "forward")]).await;
    let got: Vec<String> = lines(&answer).into_iter().map(|(_, l)| l).collect();
    assert_eq!(got, vec!["one", "two", "three"]);

    // limit applies across the merged data, newest first.
    let answer = range(&c, "team-a", r#"{app="api"}"#, &[("limit", "2")]).await;
    let got: Vec<String> = lines(&answer).into_iter().map(|(_, l)| l).collect();
    assert_eq!(got, vec!["three", "two"]);

    // Another tenant sees nothing.
    let answer = range(&c, "team-b", r#"{app="api"}"#, &[]).await;
    assert!(lines(&answer).is_empty());
}

#[tokio::test]
async fn labels_series_and_index_endpoints() {
    let c = Cluster::new().await;
    let _ing = c.ingester("ing").await;
    let t0 = now() - 30 * SECOND;
    c.push("t", push_body("api", &[(t0, "level=info msg=hi took=5ms")]))
        .await;
    c.push(
        "t",
        push_body("web", &[(t0, "level=error msg=oops"), (t0 + 1, "x")]),
    )
    .await;

    let labels = c.get_json("t", "/loki/api/v1/labels", &[]).await;
    assert_eq!(labels["status"], "success");
    let names: Vec<&str> = labels["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(names.contains(&"app") && names.contains(&"env"), "{labels}");

    let values = c.get_json("t", "/loki/api/v1/label/app/values", &[]).await;
    assert_eq!(values["data"], json!(["api", "web"]));
    let values = c
        .get_json(
            "t",
            "/loki/api/v1/label/app/values",
            &[("query", r#"{app="web"}"#)],
        )
        .await;
    assert_eq!(values["data"], json!(["web"]));

    let series = c
        .get_json("t", "/loki/api/v1/series", &[("match[]", r#"{app="api"}"#)])
        .await;
    let data = series["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["app"], "api");
    assert_eq!(data[0]["env"], "test");

    // series as a form POST, two selectors.
    let response = c
        .http
        .post(format!("{}/loki/api/v1/series", c.front.url))
        .header("X-Scope-OrgID", "t")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("match[]=%7Bapp%3D%22api%22%7D&match[]=%7Bapp%3D%22web%22%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let series: Value = response.json().await.unwrap();
    assert_eq!(series["data"].as_array().unwrap().len(), 2);

    let stats = c
        .get_json(
            "t",
            "/loki/api/v1/index/stats",
            &[("query", r#"{env="test"}"#)],
        )
        .await;
    assert_eq!(stats["streams"], 2);
    assert_eq!(stats["entries"], 3);

    let volume = c
        .get_json(
            "t",
            "/loki/api/v1/index/volume",
            &[("query", r#"{app=~".+"}"#)],
        )
        .await;
    assert_eq!(volume["data"]["resultType"], "vector");
    let result = volume["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    // Largest first: web has more bytes.
    assert_eq!(result[0]["metric"], json!({"app": "web"}));
    // Lines (21 bytes) plus structured metadata (`detected_level`).
    let bytes = |i: usize| {
        result[i]["value"][1]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(bytes(0) >= 21 && bytes(0) > bytes(1), "{volume}");

    let fields = c
        .get_json(
            "t",
            "/loki/api/v1/detected_fields",
            &[("query", r#"{env="test"}"#)],
        )
        .await;
    let level = fields["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["label"] == "level")
        .unwrap();
    assert_eq!(level["cardinality"], 2);
    assert_eq!(level["parsers"], json!(["logfmt"]));
    let values = c
        .get_json(
            "t",
            "/loki/api/v1/detected_field/level/values",
            &[("query", r#"{env="test"}"#)],
        )
        .await;
    assert_eq!(values["values"], json!(["error", "info"]));

    let detected = c.get_json("t", "/loki/api/v1/detected_labels", &[]).await;
    let app = detected["detectedLabels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "app")
        .unwrap();
    assert_eq!(app["cardinality"], 2);

    let patterns = c
        .get_json("t", "/loki/api/v1/patterns", &[("query", r#"{app="api"}"#)])
        .await;
    assert_eq!(patterns, json!({"status": "success", "data": []}));
    let info = c.get_json("t", "/loki/api/v1/status/buildinfo", &[]).await;
    assert!(info["version"].is_string());
    let limits = c.get_json("t", "/loki/api/v1/drilldown-limits", &[]).await;
    assert_eq!(limits["limits"]["max_entries_limit_per_query"], 5000);
}

#[tokio::test]
async fn grafana_save_and_test_and_errors() {
    let c = Cluster::new().await;
    let answer = c
        .get_json(
            "t",
            "/loki/api/v1/query",
            &[("query", "vector(1)+vector(1)")],
        )
        .await;
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["data"]["resultType"], "vector");
    assert_eq!(answer["data"]["result"][0]["value"][1], "2");

    // Malformed LogQL: 400 with the message in plain text, as Loki.
    let (status, body) = c
        .get(
            "t",
            "/loki/api/v1/query_range",
            &[("query", r#"{app="api""#)],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("parse error"), "{body}");
    // A log query as an instant query.
    let (status, body) = c
        .get("t", "/loki/api/v1/query", &[("query", r#"{app="api"}"#)])
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("not supported as an instant query"), "{body}");
    // Bad times, steps, limits, directions.
    for params in [
        vec![("query", r#"{app="api"}"#), ("start", "yesterday")],
        vec![("query", r#"{app="api"}"#), ("start", "20"), ("end", "10")],
        vec![("query", r#"{app="api"}"#), ("step", "-5")],
        vec![("query", r#"{app="api"}"#), ("limit", "abc")],
        vec![("query", r#"{app="api"}"#), ("direction", "sideways")],
        vec![],
    ] {
        let (status, body) = c.get("t", "/loki/api/v1/query_range", &params).await;
        assert_eq!(status, 400, "{params:?}: {body}");
        assert!(!body.is_empty());
    }
    // Limits answer 400 with Loki's message.
    let (status, body) = c
        .get(
            "t",
            "/loki/api/v1/query_range",
            &[("query", r#"{app="api"}"#), ("limit", "5001")],
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("max entries limit per query exceeded"),
        "{body}"
    );
    let (status, body) = c
        .get(
            "t",
            "/loki/api/v1/query_range",
            &[
                ("query", r#"{app="api"}"#),
                ("start", "0"),
                ("end", "1700000000"),
            ],
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("query time range exceeds the limit"),
        "{body}"
    );
    // No tenant with multi-tenancy on.
    let response = c
        .http
        .get(format!("{}/loki/api/v1/labels", c.front.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Unknown paths.
    let (status, _) = c.get("t", "/loki/api/v1/nope", &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn categorize_labels_encoding() {
    let c = Cluster::new().await;
    let _ing = c.ingester("ing").await;
    let t0 = now() - 10 * SECOND;
    let body = json!({"streams": [{"stream": {"app": "md"}, "values": [
        [t0.to_string(), "with metadata", {"trace_id": "abc"}],
        [(t0 + 1).to_string(), "without"]
    ]}]});
    c.push("t", body).await;
    let start = (now() - 600 * SECOND).to_string();
    let response = c
        .http
        .get(with_query(
            &format!("{}/loki/api/v1/query_range", c.front.url),
            &[("query", r#"{app="md"}"#), ("start", &start)],
        ))
        .header("X-Scope-OrgID", "t")
        .header("X-Loki-Response-Encoding-Flags", "categorize-labels")
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["data"]["encodingFlags"],
        json!(["categorize-labels"])
    );
    let result = answer["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{answer}");
    assert!(result[0]["stream"].get("trace_id").is_none());
    let values = result[0]["values"].as_array().unwrap();
    assert_eq!(values[0][1], "without");
    assert_eq!(values[1][2]["structuredMetadata"]["trace_id"], "abc");

    // Without the flag the metadata joins the stream labels.
    let answer = range(&c, "t", r#"{app="md"}"#, &[]).await;
    let result = answer["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{answer}");
    assert!(result.iter().any(|s| s["stream"]["trace_id"] == "abc"));
}
