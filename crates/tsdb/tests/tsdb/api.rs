//! The Prometheus HTTP API served on 127.0.0.1 over in-memory series: the
//! JSON of every endpoint and error, then side by side with a real
//! Prometheus (same data through `promtool tsdb create-blocks-from
//! openmetrics`) through promtool and raw HTTP, then the requests Grafana's
//! Prometheus datasource sends.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lucia_tsdb::api::{ApiState, MetricMetadata, QueryBackend, encode::format_value, router};
use lucia_tsdb::promql::{Labels, MemorySource, SeriesSource};
use serde_json::{Value, json};

/// The backend of the tests: one [`MemorySource`] per tenant.
#[derive(Default)]
struct Backend {
    tenants: std::sync::Mutex<BTreeMap<String, MemorySource>>,
}

impl Backend {
    fn tenant(&self, tenant: &str) -> MemorySource {
        self.tenants
            .lock()
            .unwrap()
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }
}

impl QueryBackend for Backend {
    fn source(&self, tenant: &str) -> Arc<dyn SeriesSource> {
        Arc::new(self.tenant(tenant))
    }

    fn metadata(&self, _tenant: &str) -> Vec<(String, MetricMetadata)> {
        vec![(
            "up".into(),
            MetricMetadata {
                kind: "gauge".into(),
                help: "1 if the target is up".into(),
                unit: String::new(),
            },
        )]
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The data set: series and their samples (seconds, value).
struct Data {
    /// Unix seconds of the first sample, a whole hour.
    t0: i64,
    series: Vec<(Labels, Vec<(i64, f64)>)>,
}

/// Samples every 15 s for an hour, starting four hours ago (so the
/// defaults of promtool, now ± 9999h, cover them).
fn data() -> Data {
    let now = chrono::Utc::now().timestamp();
    let t0 = (now / 3600) * 3600 - 4 * 3600;
    let steps = 0..=240i64;
    let at = |i: i64| t0 + i * 15;
    let mut series = Vec::new();
    let mut add = |l: Labels, f: &dyn Fn(i64) -> f64| {
        series.push((l, steps.clone().map(|i| (at(i), f(i))).collect()));
    };
    add(
        labels(&[
            ("__name__", "http_requests_total"),
            ("code", "200"),
            ("instance", "a:1"),
            ("job", "api"),
        ]),
        &|i| (i * 3) as f64,
    );
    add(
        labels(&[
            ("__name__", "http_requests_total"),
            ("code", "500"),
            ("instance", "b:1"),
            ("job", "api"),
        ]),
        // A counter reset in the middle.
        &|i| {
            if i < 120 {
                i as f64 * 0.5
            } else {
                (i - 120) as f64 * 0.5
            }
        },
    );
    add(
        labels(&[("__name__", "node_temp"), ("instance", "a:1")]),
        &|i| 40.0 + ((i % 7) as f64) * 0.25,
    );
    add(
        labels(&[("__name__", "node_temp"), ("instance", "c:1")]),
        &|i| 35.5 - ((i % 5) as f64) * 0.125,
    );
    add(labels(&[("__name__", "tiny"), ("k", "small")]), &|_| 3e-7);
    add(labels(&[("__name__", "tiny"), ("k", "big")]), &|_| 1.5e22);
    add(labels(&[("__name__", "tiny"), ("k", "inf")]), &|_| {
        f64::INFINITY
    });
    add(labels(&[("__name__", "tiny"), ("k", "nan")]), &|_| f64::NAN);
    add(
        labels(&[("__name__", "up"), ("instance", "a:1"), ("job", "api")]),
        &|_| 1.0,
    );
    add(
        labels(&[("__name__", "up"), ("instance", "c:1"), ("job", "db")]),
        &|i| if i % 40 < 30 { 1.0 } else { 0.0 },
    );
    Data { t0, series }
}

impl Data {
    fn load(&self, src: &MemorySource) {
        for (l, samples) in &self.series {
            for (t, f) in samples {
                src.append(l, t * 1000, *f);
            }
        }
    }

    /// The same samples as an OpenMetrics file.
    fn openmetrics(&self) -> String {
        let mut out = String::new();
        for (l, samples) in &self.series {
            let name = &l["__name__"];
            let rest: Vec<String> = l
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            for (t, f) in samples {
                out.push_str(&format!(
                    "{name}{{{}}} {} {t}\n",
                    rest.join(","),
                    format_value(*f)
                ));
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

/// A router on 127.0.0.1 served by its own runtime (the tests block on
/// promtool and Prometheus in between).
struct Lucia {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    backend: Arc<Backend>,
}

impl Lucia {
    fn start(configure: impl FnOnce(&mut ApiState)) -> Lucia {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let backend = Arc::new(Backend::default());
        let mut state = ApiState::new(backend.clone());
        state.config_yaml = "global:\n  scrape_interval: 15s\n".into();
        state.flags = [("query.max-samples".to_string(), "50000000".to_string())].into();
        configure(&mut state);
        let app = router(state);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        Lucia { rt, addr, backend }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn source(&self) -> MemorySource {
        self.backend.tenant("fake")
    }
}

/// An HTTP answer: status and JSON body (Null when empty).
struct Answer {
    status: u16,
    body: Value,
    text: String,
}

fn get(rt: &tokio::runtime::Runtime, url: &str) -> Answer {
    rt.block_on(async {
        let resp = lucia_common::http_client::client()
            .get(url)
            .send()
            .await
            .unwrap();
        answer(resp).await
    })
}

fn post_form(rt: &tokio::runtime::Runtime, url: &str, form: &[(&str, &str)]) -> Answer {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    rt.block_on(async {
        let resp = lucia_common::http_client::client()
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        answer(resp).await
    })
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    Answer { status, body, text }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn assert_error(a: &Answer, status: u16, typ: &str, contains: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.body["status"], "error", "{}", a.text);
    assert_eq!(a.body["errorType"], typ, "{}", a.text);
    let msg = a.body["error"].as_str().unwrap();
    assert!(msg.contains(contains), "{msg:?} lacks {contains:?}");
}

#[test]
fn every_endpoint_and_error() {
    let lucia = Lucia::start(|_| {});
    let d = data();
    d.load(&lucia.source());
    let (rt, base) = (&lucia.rt, lucia.url());
    let t = d.t0 + 1807;

    // Instant query: vector, values as strings, timestamps as seconds.
    let a = get(rt, &format!("{base}/api/v1/query?query=up&time={t}.5"));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "success");
    assert_eq!(a.body["data"]["resultType"], "vector");
    assert_eq!(
        a.body["data"]["result"][0],
        json!({"metric": {"__name__": "up", "instance": "a:1", "job": "api"}, "value": [t as f64 + 0.5, "1"]})
    );
    assert!(a.text.contains(&format!("[{t}.500,\"1\"]")), "{}", a.text);
    // Special values.
    let a = get(rt, &format!("{base}/api/v1/query?query=tiny&time={t}"));
    let values: BTreeMap<String, String> = a.body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["k"].as_str().unwrap().to_string(),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(values["small"], "3e-07");
    assert_eq!(values["big"], "1.5e+22");
    assert_eq!(values["inf"], "+Inf");
    assert_eq!(values["nan"], "NaN");
    // Scalar and string results; form POST.
    let a = post_form(
        rt,
        &format!("{base}/api/v1/query"),
        &[("query", "1+1"), ("time", "4")],
    );
    assert_eq!(
        a.body["data"],
        json!({"resultType": "scalar", "result": [4, "2"]})
    );
    let a = get(rt, &format!("{base}/api/v1/query?query=%22hi%22&time=4"));
    assert_eq!(
        a.body["data"],
        json!({"resultType": "string", "result": [4, "hi"]})
    );
    // Matrix result of an instant query keeps the samples' timestamps.
    let a = get(
        rt,
        &format!(
            "{base}/api/v1/query?query={}&time={t}",
            enc("up{job=\"api\"}[1m]")
        ),
    );
    assert_eq!(a.body["data"]["resultType"], "matrix");
    assert_eq!(
        a.body["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // RFC3339 time.
    let rfc = chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
    let a = get(
        rt,
        &format!("{base}/api/v1/query?query=up&time={}", enc(&rfc)),
    );
    assert_eq!(a.body["data"]["result"][0]["value"][0], json!(t));
    // limit truncates with a warning.
    let a = get(
        rt,
        &format!("{base}/api/v1/query?query=up&time={t}&limit=1"),
    );
    assert_eq!(a.body["data"]["result"].as_array().unwrap().len(), 1);
    assert_eq!(
        a.body["warnings"],
        json!(["results truncated due to limit"])
    );

    // Range query.
    let q = format!(
        "{base}/api/v1/query_range?query={}&start={}&end={}&step=60",
        enc("sum by (job) (rate(http_requests_total[5m]))"),
        d.t0 + 307,
        d.t0 + 907
    );
    let a = get(rt, &q);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["data"]["resultType"], "matrix");
    let series = a.body["data"]["result"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["metric"], json!({"job": "api"}));
    assert_eq!(series[0]["values"].as_array().unwrap().len(), 11);
    let a = post_form(
        rt,
        &format!("{base}/api/v1/query_range"),
        &[
            ("query", "1"),
            ("start", "0"),
            ("end", "120"),
            ("step", "1m"),
        ],
    );
    assert_eq!(
        a.body["data"]["result"],
        json!([{"metric": {}, "values": [[0, "1"], [60, "1"], [120, "1"]]}])
    );

    // Errors of the query endpoints.
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (
            format!("query?query={}", enc("sum(")),
            400,
            "bad_data",
            "invalid parameter \"query\"",
        ),
        (
            format!("query?query={}", enc("foo(up)")),
            400,
            "bad_data",
            "foo",
        ),
        (
            format!("query?query={}", enc("rate(up)")),
            400,
            "bad_data",
            "rate",
        ),
        (
            "query?query=up&time=yesterday".into(),
            400,
            "bad_data",
            "invalid parameter \"time\"",
        ),
        (
            "query?query=up&timeout=x".into(),
            400,
            "bad_data",
            "invalid parameter \"timeout\"",
        ),
        (
            "query".into(),
            400,
            "bad_data",
            "invalid parameter \"query\"",
        ),
        (
            "query_range?query=up&start=10&end=20&step=0".into(),
            400,
            "bad_data",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ),
        (
            "query_range?query=up&start=0&end=11001&step=1".into(),
            400,
            "bad_data",
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ),
        (
            "query_range?query=up&start=20&end=10&step=1".into(),
            400,
            "bad_data",
            "end timestamp must not be before start time",
        ),
        (
            "query_range?query=up&end=10&step=1".into(),
            400,
            "bad_data",
            "invalid parameter \"start\"",
        ),
        (
            "query_range?query=up&start=0&end=10".into(),
            400,
            "bad_data",
            "invalid parameter \"step\"",
        ),
        (
            format!("query_range?query={}&start=0&end=10&step=1", enc("up[5m]")),
            400,
            "bad_data",
            "invalid expression type \"range vector\" for range query",
        ),
        (
            format!(
                "query?query={}&time={t}",
                enc("http_requests_total + on() http_requests_total")
            ),
            422,
            "execution",
            "duplicate series",
        ),
        (
            format!("query?query={}", enc("sort_by_label(up, \"job\")")),
            400,
            "bad_data",
            "not enabled",
        ),
        (
            format!("query?query=up&time={t}&timeout=0.000000001"),
            503,
            "timeout",
            "query timed out",
        ),
    ];
    for (path, status, typ, msg) in &cases {
        let a = get(rt, &format!("{base}/api/v1/{path}"));
        assert_error(&a, *status, typ, msg);
    }

    // Odd input never makes a 500.
    for path in [
        "query?query=up&time=1e20",
        "query?query=up&time=-1e20",
        "query?query=up&time=NaN",
        "query?query=up&time=%2BInf",
        "query?query=time()&time=-292273086-05-16T16:47:06Z",
        "query_range?query=up&start=0&end=1&step=1e-10",
        "query_range?query=up&start=1e20&end=1e20&step=1",
        "query_range?query=up&start=0&end=10&step=1e300",
        "query?query=max_over_time(up%5B1y:1ms%5D)&timeout=0.2",
        "query?query=up%5B100y%5D%20offset%20-100y",
        "query?query=up&lookback_delta=x",
        "query?query=up&limit=-1",
        "series?match[]=up&limit=x",
        "label/job/values?start=1e300",
    ] {
        let a = get(rt, &format!("{base}/api/v1/{path}"));
        assert!(
            a.status != 500 && a.body["status"].is_string(),
            "{path}: {} {}",
            a.status,
            a.text
        );
    }

    // Series, labels and label values.
    let a = post_form(
        rt,
        &format!("{base}/api/v1/series"),
        &[
            ("match[]", "up"),
            ("match[]", "{__name__=\"node_temp\",instance=\"c:1\"}"),
        ],
    );
    assert_eq!(
        a.body["data"],
        json!([
            {"__name__": "node_temp", "instance": "c:1"},
            {"__name__": "up", "instance": "a:1", "job": "api"},
            {"__name__": "up", "instance": "c:1", "job": "db"},
        ])
    );
    let a = get(rt, &format!("{base}/api/v1/series"));
    assert_error(&a, 400, "bad_data", "no match[] parameter provided");
    let a = get(
        rt,
        &format!("{base}/api/v1/series?match[]={}", enc("{job=~\".*\"}")),
    );
    assert_error(
        &a,
        400,
        "bad_data",
        "match[] must contain at least one non-empty matcher",
    );
    let a = get(rt, &format!("{base}/api/v1/series?match[]={}", enc("up{")));
    assert_error(&a, 400, "bad_data", "invalid parameter \"match[]\"");
    // Out of the range: nothing.
    let a = get(
        rt,
        &format!("{base}/api/v1/series?match[]=up&start=0&end=10"),
    );
    assert_eq!(a.body["data"], json!([]));

    let a = get(rt, &format!("{base}/api/v1/labels"));
    assert_eq!(
        a.body["data"],
        json!(["__name__", "code", "instance", "job", "k"])
    );
    let a = post_form(
        rt,
        &format!("{base}/api/v1/labels"),
        &[("match[]", "node_temp")],
    );
    assert_eq!(a.body["data"], json!(["__name__", "instance"]));
    let a = get(rt, &format!("{base}/api/v1/labels?limit=2"));
    assert_eq!(a.body["data"], json!(["__name__", "code"]));
    assert_eq!(
        a.body["warnings"],
        json!(["results truncated due to limit"])
    );
    let a = get(rt, &format!("{base}/api/v1/label/job/values"));
    assert_eq!(a.body["data"], json!(["api", "db"]));
    let a = get(
        rt,
        &format!(
            "{base}/api/v1/label/instance/values?match[]=up&start={}&end={}",
            d.t0,
            d.t0 + 3600
        ),
    );
    assert_eq!(a.body["data"], json!(["a:1", "c:1"]));
    let a = get(rt, &format!("{base}/api/v1/label/nope/values"));
    assert_eq!(a.body["data"], json!([]));
    let a = get(rt, &format!("{base}/api/v1/label/a-b/values"));
    assert_error(&a, 400, "bad_data", "invalid label name: \"a-b\"");
    let a = get(rt, &format!("{base}/api/v1/labels?start=x"));
    assert_error(&a, 400, "bad_data", "Invalid time value for 'start'");

    // Metadata, exemplars, rules, alerts.
    let a = get(rt, &format!("{base}/api/v1/metadata"));
    assert_eq!(
        a.body["data"],
        json!({"up": [{"type": "gauge", "help": "1 if the target is up", "unit": ""}]})
    );
    let a = get(rt, &format!("{base}/api/v1/metadata?metric=nope"));
    assert_eq!(a.body["data"], json!({}));
    let a = get(rt, &format!("{base}/api/v1/metadata?limit=x"));
    assert_error(&a, 400, "bad_data", "limit must be a number");
    let a = get(
        rt,
        &format!("{base}/api/v1/query_exemplars?query=up&start=0&end=10"),
    );
    assert_eq!(a.body["data"], json!([]));
    let a = get(rt, &format!("{base}/api/v1/query_exemplars?query=1"));
    assert_eq!(a.status, 204);
    let a = get(rt, &format!("{base}/api/v1/rules"));
    assert_eq!(a.body["data"], json!({"groups": []}));
    let a = get(rt, &format!("{base}/api/v1/rules?type=x"));
    assert_error(&a, 400, "bad_data", "invalid parameter \"type\"");
    let a = get(rt, &format!("{base}/api/v1/alerts"));
    assert_eq!(a.body["data"], json!({"alerts": []}));

    // format_query and parse_query.
    let a = get(
        rt,
        &format!(
            "{base}/api/v1/format_query?query={}",
            enc("sum(rate(x[5m]))by(job)")
        ),
    );
    assert_eq!(a.body["data"], "sum by (job) (rate(x[5m]))");
    let a = get(
        rt,
        &format!("{base}/api/v1/format_query?query={}", enc("sum(")),
    );
    assert_error(&a, 400, "bad_data", "invalid parameter \"query\"");
    let a = get(
        rt,
        &format!("{base}/api/v1/parse_query?query={}", enc("up > 1")),
    );
    assert_eq!(a.body["data"]["type"], "binaryExpr");
    assert_eq!(a.body["data"]["lhs"]["type"], "vectorSelector");

    // Status endpoints.
    let a = get(rt, &format!("{base}/api/v1/status/buildinfo"));
    assert!(
        a.body["data"]["version"]
            .as_str()
            .unwrap()
            .starts_with("2.")
    );
    assert!(a.body["data"].get("features").is_none());
    let a = get(rt, &format!("{base}/api/v1/status/config"));
    assert_eq!(a.body["data"]["yaml"], "global:\n  scrape_interval: 15s\n");
    let a = get(rt, &format!("{base}/api/v1/status/flags"));
    assert_eq!(a.body["data"]["query.max-samples"], "50000000");
    let a = get(rt, &format!("{base}/api/v1/status/runtimeinfo"));
    for field in [
        "startTime",
        "CWD",
        "reloadConfigSuccess",
        "storageRetention",
        "GOMAXPROCS",
    ] {
        assert!(a.body["data"].get(field).is_some(), "{field}: {}", a.text);
    }
    let a = get(rt, &format!("{base}/api/v1/status/tsdb"));
    assert_eq!(a.body["data"]["headStats"]["numSeries"], 10);
    assert_eq!(
        a.body["data"]["seriesCountByMetricName"][0],
        json!({"name": "tiny", "value": 4})
    );
    for list in [
        "labelValueCountByLabelName",
        "memoryInBytesByLabelName",
        "seriesCountByLabelValuePair",
    ] {
        assert!(a.body["data"][list].is_array(), "{list}");
    }
    let a = get(rt, &format!("{base}/api/v1/status/tsdb?limit=0"));
    assert_error(&a, 400, "bad_data", "limit");

    // Unknown paths are 404.
    assert_eq!(get(rt, &format!("{base}/api/v1/nope")).status, 404);
}

#[test]
fn limits_samples_and_tenants() {
    let lucia = Lucia::start(|st| {
        st.options.max_samples = 1000;
        st.multi_tenant = true;
    });
    let d = data();
    d.load(&lucia.source());
    let (rt, base) = (&lucia.rt, lucia.url());
    let client = lucia_common::http_client::client();
    let query = |tenant: Option<&str>, q: &str| {
        rt.block_on(async {
            let mut req = client.get(format!(
                "{base}/api/v1/query?query={}&time={}",
                enc(q),
                d.t0 + 1807
            ));
            if let Some(t) = tenant {
                req = req.header("X-Scope-OrgID", t);
            }
            answer(req.send().await.unwrap()).await
        })
    };
    // Tenants: data of "fake" only; another tenant sees nothing; no
    // header is an error.
    assert_eq!(
        query(Some("fake"), "up").body["data"]["result"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(query(Some("other"), "up").body["data"]["result"], json!([]));
    assert_error(&query(None, "up"), 400, "bad_data", "X-Scope-OrgID");
    // 10 series of 240 samples: more than 1000 samples.
    assert_error(
        &query(Some("fake"), "{__name__=~\".+\"}[1h]"),
        422,
        "execution",
        "query processing would load too many samples into memory in query execution",
    );
    assert_eq!(query(Some("fake"), "up[1h]").status, 200);
}

/// A source whose reads take a while: the query's timeout stops it.
struct Slow(MemorySource);

impl SeriesSource for Slow {
    fn select(
        &self,
        matchers: &[lucia_tsdb::promql::LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<lucia_tsdb::promql::RawSeries>, lucia_tsdb::promql::Error> {
        // Simulated slow storage, not synchronisation.
        std::thread::sleep(Duration::from_millis(300));
        self.0.select(matchers, start_ms, end_ms)
    }
}

struct SlowBackend(MemorySource);

impl QueryBackend for SlowBackend {
    fn source(&self, _tenant: &str) -> Arc<dyn SeriesSource> {
        Arc::new(Slow(self.0.clone()))
    }
}

#[test]
fn query_timeout() {
    let src = MemorySource::new();
    data().load(&src);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut state = ApiState::new(Arc::new(SlowBackend(src)));
    state.options.timeout = Duration::from_millis(100);
    let app = router(state);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    // Two selectors: the first read passes the deadline, the second is not
    // made.
    let a = get(
        &rt,
        &format!("http://{addr}/api/v1/query?query={}", enc("up + node_temp")),
    );
    assert_error(
        &a,
        503,
        "timeout",
        "query timed out in expression evaluation",
    );
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
}

// ---- side by side with a real Prometheus ----

/// A child process killed when the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts Prometheus over blocks made from `om` with the given extra flags
/// and waits for `/-/ready`.
fn start_prometheus(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    om: &str,
    flags: &[&str],
) -> (Proc, String) {
    let om_path = dir.join("data.om");
    std::fs::write(&om_path, om).unwrap();
    let db = dir.join("db");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om_path)
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--storage.tsdb.path={}", db.display()))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=100y")
        .args(flags)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = rt.block_on(async {
            lucia_common::http_client::client()
                .get(format!("{url}/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus not ready in 60 s: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        // Polling /-/ready: Prometheus offers no event to wait for.
        std::thread::sleep(Duration::from_millis(100));
    }
    (proc, url)
}

/// promtool's exit code, stdout and stderr.
fn promtool(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("promtool").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `query error: bad_data: …` → `bad_data`.
fn error_type(stderr: &str) -> String {
    stderr
        .strip_prefix("query error: ")
        .and_then(|s| s.split(':').next())
        .unwrap_or(stderr)
        .to_string()
}

#[test]
fn side_by_side_with_prometheus() {
    if !have("prometheus") || !have("promtool") {
        println!(
            "NOTICE: prometheus or promtool not installed: side-by-side test skipped (scripts/install-test-deps.sh installs them)"
        );
        return;
    }
    let d = data();
    let lucia = Lucia::start(|st| st.options.max_samples = 2000);
    d.load(&lucia.source());
    let dir = tempfile::tempdir().unwrap();
    let (_prom, prom) = start_prometheus(
        &lucia.rt,
        dir.path(),
        &d.openmetrics(),
        &["--query.max-samples=2000"],
    );
    let ours = lucia.url();
    let rt = &lucia.rt;

    // Times off the 15 s grid: Prometheus 2.42 closes range windows on the
    // left, Prometheus 3 (and Lucia) does not; off the grid no sample sits
    // on a boundary.
    let t = (d.t0 + 1807).to_string();
    let start = (d.t0 + 607).to_string();
    let end = (d.t0 + 2407).to_string();
    let mut compared = 0;
    let mut check = |args: Vec<String>| {
        let with = |url: &str| {
            let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
            let pos = a.iter().position(|x| *x == "URL").unwrap();
            a[pos] = url;
            promtool(&a)
        };
        let (want_code, want_out, want_err) = with(&prom);
        let (code, out, err) = with(&ours);
        if std::env::var_os("SHOW_PROMTOOL").is_some() {
            println!("{args:?}\n{want_out}{want_err}lucia: {err}");
        }
        assert_eq!(
            code, want_code,
            "{args:?}: exit code; prometheus: {want_err} lucia: {err}"
        );
        assert_eq!(out, want_out, "{args:?}: output");
        if want_code != 0 {
            assert_eq!(
                error_type(&err),
                error_type(&want_err),
                "{args:?}: {want_err} / {err}"
            );
        }
        compared += 1;
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for q in [
        "up",
        "http_requests_total",
        "node_temp * 2",
        "rate(http_requests_total[5m])",
        "sum by (job) (rate(http_requests_total[5m]))",
        "sum without (instance) (http_requests_total)",
        "increase(http_requests_total[10m])",
        "avg_over_time(node_temp[5m])",
        "max(node_temp) by (instance)",
        "topk(1, http_requests_total)",
        "count_values(\"v\", up)",
        "tiny",
        "up == 0",
        "up{job=\"db\"} or up{job=\"api\"}",
        "http_requests_total[1m]",
        "1 + 1",
        "time()",
        "\"a string\"",
        "absent(nope)",
        "histogram_quantile(0.9, rate(nope[5m]))",
        "label_replace(up, \"x\", \"$1\", \"job\", \"(.*)\")",
        // Errors.
        "sum(",
        "foo(up)",
        "rate(up)",
        "up +",
        "http_requests_total + on() http_requests_total",
        "{__name__=~\".+\"}[1h]",
    ] {
        check(s(&["query", "instant", "--time", &t, "URL", q]));
    }
    for q in [
        "up",
        "rate(http_requests_total[5m])",
        "sum(node_temp)",
        "1",
        "up[5m]",
        "sum(",
    ] {
        check(s(&[
            "query", "range", "--start", &start, "--end", &end, "--step", "1m", "URL", q,
        ]));
    }
    // More than the sample limit over all steps of a range query.
    check(s(&[
        "query",
        "range",
        "--start",
        &start,
        "--end",
        &end,
        "--step",
        "1s",
        "URL",
        "http_requests_total",
    ]));
    check(s(&["query", "series", "URL", "--match", "up"]));
    check(s(&[
        "query",
        "series",
        "URL",
        "--match",
        "{__name__=~\"http.*\"}",
        "--match",
        "tiny{k=\"inf\"}",
    ]));
    check(s(&[
        "query", "series", "URL", "--match", "up", "--start", &start, "--end", &end,
    ]));
    check(s(&["query", "series", "URL", "--match", "up{"]));
    check(s(&["query", "labels", "URL", "job"]));
    check(s(&["query", "labels", "URL", "__name__"]));
    check(s(&[
        "query",
        "labels",
        "URL",
        "instance",
        "--match",
        "node_temp",
    ]));
    check(s(&[
        "query", "labels", "URL", "k", "--start", &start, "--end", &end,
    ]));
    println!("{compared} promtool commands print the same against Prometheus and Lucia");

    // Raw HTTP: exact bodies of successes, status and errorType of errors.
    let same_body = [
        format!("query?query=up&time={t}"),
        format!("query?query=tiny&time={t}"),
        format!(
            "query?query={}&time={t}.25",
            enc("rate(http_requests_total[5m])")
        ),
        format!("query?query={}&time={t}", enc("node_temp[1m]")),
        format!("query?query=2&time={t}"),
        format!(
            "query_range?query={}&start={start}&end={end}&step=300",
            enc("node_temp / 3")
        ),
        "series?match[]=up".into(),
        "labels".into(),
        "label/__name__/values".into(),
        format!("series?match[]=tiny&start={start}&end={end}"),
    ];
    for path in &same_body {
        let want = get(rt, &format!("{prom}/api/v1/{path}"));
        let got = get(rt, &format!("{ours}/api/v1/{path}"));
        assert_eq!(got.status, want.status, "{path}");
        assert_eq!(got.text, want.text, "{path}");
    }
    let errors = [
        format!("query?query={}", enc("sum(")),
        format!("query?query={}", enc("nofunc(up)")),
        format!("query?query={}", enc("rate(up)")),
        format!("query?query={}", enc("abs(up, up)")),
        format!("query?query={}", enc("up[5m] + 1")),
        "query?query=up&time=x".into(),
        "query?query=up&timeout=x".into(),
        format!("query?query=up&time={t}&timeout=0.000000001"),
        "query".into(),
        "query_range?query=up&start=10&end=20&step=0".into(),
        "query_range?query=up&start=10&end=20&step=-1".into(),
        "query_range?query=up&start=0&end=11001&step=1".into(),
        "query_range?query=up&start=20&end=10&step=1".into(),
        "query_range?query=up&start=x&end=10&step=1".into(),
        "query_range?query=up&start=0&end=10".into(),
        format!("query_range?query={}&start=0&end=10&step=1", enc("up[5m]")),
        format!("query?query={}&time={t}", enc("{__name__=~\".+\"}[1h]")),
        format!(
            "query?query={}&time={t}",
            enc("http_requests_total + on() http_requests_total")
        ),
        "series".into(),
        format!("series?match[]={}", enc("{job=~\".*\"}")),
        format!("series?match[]={}", enc("up{")),
        "series?match[]=up&start=x".into(),
        "labels?start=x".into(),
        format!("labels?match[]={}", enc("up{")),
        "label/a-b/values".into(),
        "metadata?limit=x".into(),
        "rules?type=x".into(),
    ];
    for path in &errors {
        let want = get(rt, &format!("{prom}/api/v1/{path}"));
        let got = get(rt, &format!("{ours}/api/v1/{path}"));
        assert_eq!(
            (got.status, &got.body["errorType"]),
            (want.status, &want.body["errorType"]),
            "{path}: prometheus {} / lucia {}",
            want.text,
            got.text
        );
    }
    println!(
        "{} bodies and {} errors are the same over HTTP",
        same_body.len(),
        errors.len()
    );
}

// ---- Grafana ----

/// The requests Grafana's Prometheus datasource sends, with where in
/// Grafana they come from, answered with the shapes Grafana parses.
#[test]
fn grafana_requests() {
    let lucia = Lucia::start(|_| {});
    let d = data();
    d.load(&lucia.source());
    let (rt, base) = (&lucia.rt, lucia.url());
    let (from, to) = (d.t0, d.t0 + 3600);

    // "Save & test": pkg/promlib/healthcheck.go runs the instant query
    // `1+1` over the time range 1 s..4 s; pkg/promlib/client/client.go
    // QueryInstant sends query and time=<end> (GET, or a form POST when
    // the datasource's HTTP method is POST, the default).
    for a in [
        get(rt, &format!("{base}/api/v1/query?query=1%2B1&time=4")),
        post_form(
            rt,
            &format!("{base}/api/v1/query"),
            &[("query", "1+1"), ("time", "4")],
        ),
    ] {
        assert_eq!(a.status, 200);
        assert_eq!(a.body["status"], "success");
        assert_eq!(a.body["data"]["resultType"], "scalar");
        assert_eq!(a.body["data"]["result"][1], "2");
    }
    // Then heuristics (pkg/promlib/heuristics.go) read buildinfo: JSON with
    // data.version; no data.features means "Prometheus", not Mimir.
    let a = get(rt, &format!("{base}/api/v1/status/buildinfo"));
    assert_eq!(a.status, 200);
    assert!(a.body["data"]["version"].is_string());
    assert!(a.body["data"].get("features").is_none());

    // Panels: client.go QueryRange sends query, start, end, step (float
    // seconds) and timeout (the datasource's queryTimeout, e.g. 60s), as
    // a form POST.
    let a = post_form(
        rt,
        &format!("{base}/api/v1/query_range"),
        &[
            ("query", "rate(http_requests_total[1m])"),
            ("start", &from.to_string()),
            ("end", &to.to_string()),
            ("step", "30"),
            ("timeout", "60s"),
        ],
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["data"]["resultType"], "matrix");
    assert_eq!(a.body["data"]["result"].as_array().unwrap().len(), 2);
    // client.go QueryExemplars (when exemplars are on).
    let a = post_form(
        rt,
        &format!("{base}/api/v1/query_exemplars"),
        &[
            ("query", "rate(http_requests_total[1m])"),
            ("start", &from.to_string()),
            ("end", &to.to_string()),
        ],
    );
    assert_eq!(a.body["data"], json!([]));

    // Query editor (packages/grafana-prometheus/src/resource_clients.ts,
    // LabelsApiClient): metric names and label keys with limit=40000 and
    // the range; label values of a key, optionally with match[].
    let a = get(
        rt,
        &format!("{base}/api/v1/label/__name__/values?limit=40000&start={from}&end={to}"),
    );
    assert_eq!(
        a.body["data"],
        json!(["http_requests_total", "node_temp", "tiny", "up"])
    );
    let a = get(
        rt,
        &format!("{base}/api/v1/labels?limit=40000&start={from}&end={to}"),
    );
    assert_eq!(
        a.body["data"],
        json!(["__name__", "code", "instance", "job", "k"])
    );
    let a = get(
        rt,
        &format!(
            "{base}/api/v1/label/job/values?limit=40000&start={from}&end={to}&match[]={}",
            enc("up")
        ),
    );
    assert_eq!(a.body["data"], json!(["api", "db"]));
    // SeriesApiClient: /api/v1/series with match[]={__name__!=""}.
    let a = get(
        rt,
        &format!(
            "{base}/api/v1/series?start={from}&end={to}&match[]={}&limit=40000",
            enc("{__name__!=\"\"}")
        ),
    );
    assert_eq!(a.body["data"].as_array().unwrap().len(), 10);
    // Metric metadata for the editor's hints (GET only, client.go
    // endpointsSupportOnlyGet).
    let a = get(rt, &format!("{base}/api/v1/metadata"));
    assert!(a.body["data"].is_object());
    assert_eq!(a.body["data"]["up"][0]["type"], "gauge");
}
