//! Starting, killing and talking to a `lucia` process.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lucia_proto::ingester::ingester_client::IngesterClient;
use lucia_proto::ingester::{Direction, QueryRequest};
use lucia_proto::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
use prost::Message as _;

pub struct Lucia {
    pub child: Child,
    pub addr: String,
}

/// True when the Debian-packaged `binary` (prometheus, promtool…) runs;
/// otherwise prints why the caller skips its comparison.
pub fn installed(binary: &str) -> bool {
    let ok = Command::new(binary).arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIP: {binary} is not installed (scripts/install-test-deps.sh installs it)");
    }
    ok
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Lucia {
    /// Starts `lucia all` on `port` with `data_dir` and `config` (YAML) and
    /// waits until `/ready` answers 200.
    pub async fn start(data_dir: &Path, port: u16, config: &str) -> Lucia {
        let config_path = data_dir.join("lucia.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_lucia"))
            .arg("all")
            .arg("--config.file")
            .arg(&config_path)
            .arg("--http.listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data.dir")
            .arg(data_dir)
            .arg("--log.level")
            .arg("warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn lucia");
        Self::adopt(child, port).await
    }

    /// Wraps a started process listening on `port` and waits until ready.
    pub async fn adopt(child: Child, port: u16) -> Lucia {
        let lucia = Lucia {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        lucia.wait_ready().await;
        lucia
    }

    async fn wait_ready(&self) {
        let client = lucia_common::http_client::client();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(resp) = client
                .get(format!("http://{}/ready", self.addr))
                .send()
                .await
                && resp.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("lucia at {} not ready within 120s", self.addr);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill lucia");
        self.child.wait().expect("reap lucia");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        let status = self.child.wait().expect("wait lucia");
        assert!(status.success(), "lucia exited with {status}");
    }

    /// Every entry of the streams matching `selector`, oldest first.
    pub async fn query_all(&self, selector: &str) -> Vec<(String, i64, String)> {
        let mut client = IngesterClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect ingester")
            .max_decoding_message_size(256 << 20);
        let mut request = tonic::Request::new(QueryRequest {
            selector: selector.to_string(),
            start: 0,
            end: i64::MAX,
            limit: 0,
            direction: Direction::Forward as i32,
        });
        request
            .metadata_mut()
            .insert("x-scope-orgid", "fake".parse().expect("tenant"));
        let mut stream = client.query(request).await.expect("query").into_inner();
        let mut out = Vec::new();
        while let Some(batch) = stream.message().await.expect("query stream") {
            for s in batch.streams {
                for e in s.entries {
                    let ts = e
                        .timestamp
                        .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
                    out.push((s.labels.clone(), ts, e.line));
                }
            }
        }
        out
    }
}

impl Drop for Lucia {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A protobuf + snappy push body.
pub fn push_body(streams: Vec<(String, Vec<(i64, String)>)>) -> Vec<u8> {
    let request = PushRequest {
        streams: streams
            .into_iter()
            .map(|(labels, entries)| StreamAdapter {
                labels,
                entries: entries
                    .into_iter()
                    .map(|(ts, line)| EntryAdapter {
                        timestamp: Some(Timestamp {
                            seconds: ts.div_euclid(1_000_000_000),
                            nanos: ts.rem_euclid(1_000_000_000) as i32,
                        }),
                        line,
                        structured_metadata: vec![],
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy")
}

/// `sum(count_over_time(<selector>[window]))` through the querier's HTTP
/// API at the current time: how many distinct entries it sees.
pub async fn count_via_querier(addr: &str, selector: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let query = format!("sum(count_over_time({selector}[2h]))");
    let params = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", &query)
        .append_pair("time", &now.to_string())
        .finish();
    let resp = lucia_common::http_client::client()
        .get(format!("http://{addr}/loki/api/v1/query?{params}"))
        .send()
        .await
        .expect("query");
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.expect("json body");
    assert_eq!(status, 200, "{body}");
    let result = body["data"]["result"].as_array().expect("vector result");
    match result.first() {
        None => 0,
        Some(sample) => sample["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .expect("sample value") as u64,
    }
}

/// An instant PromQL query through the Prometheus API at `time` (Unix
/// seconds; the server's now when `None`): the decoded JSON answer.
pub async fn prom_query(
    client: &reqwest::Client,
    addr: &str,
    query: &str,
    time: Option<f64>,
) -> serde_json::Value {
    let mut params = form_urlencoded::Serializer::new(String::new());
    params.append_pair("query", query);
    if let Some(t) = time {
        params.append_pair("time", &t.to_string());
    }
    client
        .get(format!("http://{addr}/api/v1/query?{}", params.finish()))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json")
}
