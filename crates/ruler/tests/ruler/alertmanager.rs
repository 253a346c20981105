//! Alerts reach a webhook through a real Alertmanager (Debian's
//! `prometheus-alertmanager`; skipped with a notice when it is absent).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::Value;

use super::{Labels, Ruler, config, labels, start_fake, write_rules};

fn alertmanager_binary() -> Option<&'static str> {
    ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_webhook_through_a_real_alertmanager() {
    let Some(binary) = alertmanager_binary() else {
        eprintln!(
            "SKIPPED: prometheus-alertmanager is not installed (scripts/install-test-deps.sh installs it)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The webhook receiver.
    let hooks: Arc<Mutex<Vec<Value>>> = Arc::default();
    let notify = Arc::new(tokio::sync::Notify::new());
    let (h, n) = (hooks.clone(), notify.clone());
    let app = Router::new().route(
        "/hook",
        post(move |axum::Json(body): axum::Json<Value>| {
            let (h, n) = (h.clone(), n.clone());
            async move {
                h.lock().push(body);
                n.notify_waiters();
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let am_port = free_port();
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: hook\n  group_wait: 100ms\n  group_interval: 1s\n  group_by: [alertname]\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook_addr}/hook\n"
        ),
    )
    .unwrap();
    let _am = Kill(
        Command::new(binary)
            .arg(format!("--config.file={}", am_config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let am_url = format!("http://127.0.0.1:{am_port}");
    let client = lucia_common::http_client::client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{am_url}/-/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "alertmanager did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (fake, url) = start_fake().await;
    fake.answer(
        "up == 0",
        vec![(labels(&[("__name__", "up"), ("instance", "h:1")]), 0.0)],
    );
    fake.answer("sum(up)", vec![(Labels::new(), 1.0)]);
    let rules = write_rules(dir.path(), super::RULES);
    let mut cfg = config(&url, Some(&rules));
    cfg.alertmanager_urls = vec![am_url];
    let ruler = Ruler::start(cfg, dir.path(), false).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let notified = notify.notified();
        if let Some(b) = hooks.lock().first().cloned() {
            break b;
        }
        assert!(
            tokio::time::timeout_at(deadline, notified).await.is_ok(),
            "no webhook notification"
        );
    };
    assert_eq!(body["status"], "firing", "{body}");
    let alert = &body["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "Down", "{body}");
    assert_eq!(alert["labels"]["cluster"], "test", "{body}");
    assert_eq!(
        alert["annotations"]["summary"], "h:1 is down (0) in test",
        "{body}"
    );
    ruler.stop().await;
}
