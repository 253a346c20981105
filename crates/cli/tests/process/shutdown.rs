//! SIGTERM flushes what the ingester holds into the object store.

use crate::harness::{Lucia, free_port, push_body};

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_chunks_to_the_store() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut lucia = Lucia::start(data.path(), free_port(), "").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default();
    let body = push_body(vec![(
        r#"{job="shutdown"}"#.to_string(),
        (0..100).map(|i| (now + i, format!("line {i}"))).collect(),
    )]);
    let resp = lucia_common::http_client::client()
        .post(format!("http://{}/loki/api/v1/push", lucia.addr))
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("push");
    assert_eq!(resp.status(), 204);
    let chunks = data.path().join("chunks");
    assert!(
        files_under(&chunks.join("fake").join("chunks")).is_empty(),
        "nothing is flushed before the chunk is due"
    );
    lucia.terminate();
    let flushed = files_under(&chunks.join("fake").join("chunks"));
    assert_eq!(flushed.len(), 1, "one chunk for one stream: {flushed:?}");
    assert!(
        !files_under(&chunks.join("fake").join("index")).is_empty(),
        "an index was written"
    );
}
