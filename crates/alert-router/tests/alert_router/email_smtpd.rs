//! Email through a real SMTP server: Python's `aiosmtpd` (PyPI, installed
//! by scripts/install-test-deps.sh) with its Maildir handler, and the
//! message parsed by Python's `email` package. With Alertmanager 0.25
//! installed, it sends the same alerts to a second sink: the subject (the
//! default `__subject` template) must be the same, and both HTML bodies
//! must show the same alerts and links.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Alertmanager, Router, free_port, tempdir};

/// `python3 -m aiosmtpd` saving messages in a Maildir; killed on drop.
struct SmtpSink {
    addr: String,
    maildir: PathBuf,
    child: Child,
}

impl SmtpSink {
    /// Starts the sink, or `None` with a notice when aiosmtpd is missing.
    async fn start(dir: &Path) -> Option<SmtpSink> {
        let have = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            eprintln!(
                "NOTICE: python3 with aiosmtpd is not installed; skipping (scripts/install-test-deps.sh installs it)"
            );
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let maildir = dir.join("maildir");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &addr,
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("aiosmtpd.log")).unwrap())
            .spawn()
            .unwrap();
        let sink = SmtpSink {
            addr,
            maildir,
            child,
        };
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(&sink.addr).await.is_ok() {
                return Some(sink);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "aiosmtpd did not listen on {}: {}",
            sink.addr,
            std::fs::read_to_string(dir.join("aiosmtpd.log")).unwrap_or_default()
        );
    }

    /// The first message delivered: its headers and its decoded parts
    /// (content type, text), as Python's `email` package reads them.
    async fn message(&self) -> Value {
        let new = self.maildir.join("new");
        for _ in 0..600 {
            let file = std::fs::read_dir(&new)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(Result::ok)
                .map(|e| e.path());
            if let Some(file) = file {
                let out = Command::new("python3")
                    .args(["-c", PARSE])
                    .arg(&file)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return serde_json::from_slice(&out.stdout).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no message arrived at {}", self.addr);
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PARSE: &str = r#"
import email, email.header, json, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
parts = [[p.get_content_type(), p.get_content()] for p in m.walk() if not p.is_multipart()]
print(json.dumps({
    'subject': str(m['Subject']), 'to': str(m['To']), 'from': str(m['From']),
    'content_type': m.get_content_type(), 'parts': parts,
}))
"#;

fn config(smarthost: &str) -> String {
    format!(
        r#"
global:
  smtp_smarthost: {smarthost}
  smtp_from: alertmanager@example.org
  smtp_require_tls: false
route:
  receiver: mail
  group_by: [alertname]
  group_wait: 1s
receivers:
- name: mail
  email_configs:
  - to: ops@example.org
"#
    )
}

fn alerts() -> Value {
    json!([
        {"labels": {"alertname": "DiskFull", "instance": "db1", "severity": "page"},
         "annotations": {"summary": "disk almost full", "description": "95% used"},
         "generatorURL": "http://prometheus:9090/graph?g0.expr=disk"},
        {"labels": {"alertname": "DiskFull", "instance": "db2", "severity": "page"},
         "annotations": {"summary": "disk almost full", "description": "97% used"},
         "generatorURL": "http://prometheus:9090/graph?g0.expr=disk"},
    ])
}

/// The HTML part of a message, with the server's own URL replaced.
fn html(msg: &Value, external_url: &str) -> String {
    let parts = msg["parts"].as_array().unwrap();
    let html = parts
        .iter()
        .find(|p| p[0] == "text/html")
        .unwrap_or_else(|| panic!("no HTML part: {msg}"));
    html[1]
        .as_str()
        .unwrap()
        .replace(external_url, "EXTERNAL_URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_through_aiosmtpd_with_the_default_template() {
    let dir = tempdir();
    let Some(sink) = SmtpSink::start(&dir.path().join("lucia")).await else {
        return;
    };
    let router = Router::start(dir.path(), &config(&sink.addr), false).await;
    let resp = router.post_alerts(alerts()).await;
    assert_eq!(resp.status(), 200);
    let ours = sink.message().await;
    let router_url = router.url.clone();
    router.stop().await;

    assert_eq!(ours["subject"], "[FIRING:2] DiskFull (page)", "{ours}");
    assert_eq!(ours["to"], "ops@example.org");
    assert_eq!(ours["from"], "alertmanager@example.org");
    assert_eq!(ours["content_type"], "multipart/alternative");
    let our_html = html(&ours, &router_url);
    // Lucia's default HTML (its own wording, see the module docs).
    for needle in [
        "<title>[FIRING:2] DiskFull (page)</title>",
        "2 alerts for alertname=DiskFull",
        "[2] Firing",
        "<code>instance=db1</code>",
    ] {
        assert!(
            our_html.contains(needle),
            "{needle:?} missing from:\n{our_html}"
        );
    }
    for fact in FACTS {
        assert!(
            our_html.contains(fact),
            "{fact:?} missing from:\n{our_html}"
        );
    }
    // The same alerts through a real Alertmanager: the same subject and
    // the same HTML.
    let am_dir = dir.path().join("am");
    let Some(am_sink) = SmtpSink::start(&am_dir).await else {
        return;
    };
    let Some(am) = Alertmanager::start(&am_dir, &config(&am_sink.addr)).await else {
        return;
    };
    let resp = crate::client()
        .post(format!("{}/api/v2/alerts", am.url))
        .json(&alerts())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let theirs = am_sink.message().await;
    assert_eq!(ours["subject"], theirs["subject"]);
    assert_eq!(ours["to"], theirs["to"]);
    assert_eq!(ours["from"], theirs["from"]);
    assert_eq!(ours["content_type"], theirs["content_type"]);
    let their_html = html(&theirs, &am.url);
    for fact in FACTS {
        assert!(
            their_html.contains(fact),
            "{fact:?} missing from Alertmanager's:\n{their_html}"
        );
    }
}

/// What the default HTML body shows on both: every alert's distinguishing
/// label, its annotations, its source link and the link back to the
/// router's alert list. The markup around them differs: Lucia's default
/// templates have the names and data of Alertmanager's `default.tmpl` but
/// their own wording (the project does not copy upstream code).
const FACTS: [&str; 8] = [
    "DiskFull",
    "db1",
    "db2",
    "disk almost full",
    "95% used",
    "97% used",
    "http://prometheus:9090/graph?g0.expr=disk",
    "EXTERNAL_URL/#/alerts?receiver=mail",
];
