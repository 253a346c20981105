//! Notifications over TLS: an https webhook trusted through
//! `tls_config.ca_file` (and refused without it), and email over STARTTLS
//! and implicit TLS to an SMTP sink that upgrades with tokio-rustls.

use std::net::SocketAddr;
use std::time::Duration;

use lucia_tests::tls::TestCa;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::{Router, alert, client, tempdir};

/// An https webhook receiver: every payload goes to the channel.
async fn https_hook(ca: &TestCa) -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::OK
            }
        }),
    );
    let addr = ca.serve_https(app).await;
    (format!("https://localhost:{}/hook", addr.port()), rx)
}

fn webhook_config(url: &str, http_config: &str) -> String {
    format!(
        r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
- name: hook
  webhook_configs:
  - url: {url}
{http_config}
"#
    )
}

/// The value of the metric line starting with `series`, once it appears.
async fn wait_for_metric(router: &Router, series: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = client()
            .get(format!("http://{}/metrics", router.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if let Some(line) = text.lines().find(|l| l.starts_with(series)) {
            return line[series.len()..].trim().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {series} within 60 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_over_https_trusts_the_ca_file() {
    let ca = TestCa::new(&[]);
    let dir = tempdir();
    ca.write_ca(dir.path());
    let (url, mut rx) = https_hook(&ca).await;
    // A path relative to the config file, as Alertmanager resolves it.
    let http_config = "    http_config:\n      tls_config:\n        ca_file: ca.pem\n";
    let router = Router::start(dir.path(), &webhook_config(&url, http_config), false).await;
    router
        .post_alerts(json!([alert(json!({"alertname": "OverTls"}))]))
        .await;
    let n = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("no notification over https within 60 s")
        .unwrap();
    assert_eq!(n["alerts"][0]["labels"]["alertname"], "OverTls");
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_over_https_fails_without_the_ca() {
    let ca = TestCa::new(&[]);
    let dir = tempdir();
    let (url, mut rx) = https_hook(&ca).await;
    let router = Router::start(dir.path(), &webhook_config(&url, ""), false).await;
    router
        .post_alerts(json!([alert(json!({"alertname": "Untrusted"}))]))
        .await;
    // Retries stop at the group interval (2 s); then the failure counts.
    let failed = wait_for_metric(
        &router,
        r#"alertmanager_notifications_failed_total{integration="webhook"}"#,
    )
    .await;
    assert_eq!(failed, "1");
    assert!(
        rx.try_recv().is_err(),
        "the untrusted receiver got a request"
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ca_file_fails_the_config_load_naming_the_field() {
    let dir = tempdir();
    let config = webhook_config(
        "https://localhost:1/hook",
        "    http_config:\n      tls_config:\n        ca_file: missing.pem\n",
    );
    let path = dir.path().join("alertmanager.yml");
    let err = lucia_alert_router::amconfig::AmConfig::parse(&path, &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("receivers[0].webhook_configs[0]")
            && err.contains("tls_config.ca_file: cannot read")
            && err.contains("missing.pem"),
        "{err}"
    );
}

/// How the SMTP sink speaks.
#[derive(Clone, Copy, PartialEq)]
enum SmtpMode {
    /// Offers STARTTLS and upgrades when asked.
    StartTls,
    /// TLS from the first byte (port 465 style).
    Implicit,
    /// Plain text only, no STARTTLS offered.
    Plain,
}

/// One SMTP conversation: the commands in order (`<tls>` where TLS
/// began) and the message.
#[derive(Debug, Default)]
struct Transcript {
    commands: Vec<String>,
    data: String,
}

/// Serves SMTP commands until QUIT, the end of the connection, or
/// STARTTLS (then the stream is handed back for the handshake).
async fn smtp_session<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    greet: bool,
    offer_starttls: bool,
    t: &mut Transcript,
) -> Option<S> {
    let mut io = BufReader::new(io);
    if greet {
        io.write_all(b"220 sink ESMTP\r\n").await.ok()?;
    }
    let mut in_data = false;
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if in_data {
            if line == ".\r\n" {
                in_data = false;
                io.write_all(b"250 queued\r\n").await.ok()?;
            } else {
                t.data.push_str(&line);
            }
            continue;
        }
        t.commands.push(line.trim().to_string());
        let reply: &[u8] = match line.split_whitespace().next().unwrap_or("") {
            "EHLO" if offer_starttls => b"250-sink\r\n250 STARTTLS\r\n",
            "EHLO" => b"250-sink\r\n250 AUTH PLAIN\r\n",
            "STARTTLS" => {
                io.write_all(b"220 go ahead\r\n").await.ok()?;
                return Some(io.into_inner());
            }
            "AUTH" => b"235 ok\r\n",
            "DATA" => {
                in_data = true;
                b"354 go\r\n"
            }
            "QUIT" => {
                let _ = io.write_all(b"221 bye\r\n").await;
                return None;
            }
            _ => b"250 ok\r\n",
        };
        io.write_all(reply).await.ok()?;
    }
}

/// An SMTP server on a local port; each connection's transcript goes to
/// the channel.
async fn smtp_sink(
    ca: &TestCa,
    mode: SmtpMode,
) -> (SocketAddr, mpsc::UnboundedReceiver<Transcript>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(ca.server_config());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mut t = Transcript::default();
            match mode {
                SmtpMode::Plain => {
                    smtp_session(tcp, true, false, &mut t).await;
                }
                SmtpMode::Implicit => {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        t.commands.push("<tls>".into());
                        smtp_session(tls, true, false, &mut t).await;
                    }
                }
                SmtpMode::StartTls => {
                    if let Some(tcp) = smtp_session(tcp, true, true, &mut t).await
                        && let Ok(tls) = acceptor.accept(tcp).await
                    {
                        t.commands.push("<tls>".into());
                        smtp_session(tls, false, false, &mut t).await;
                    }
                }
            }
            let _ = tx.send(t);
        }
    });
    (addr, rx)
}

fn email_config(smarthost: &str, extra: &str) -> String {
    format!(
        r#"
global:
  smtp_smarthost: {smarthost}
  smtp_from: lucia@example.org
route:
  receiver: mail
  group_wait: 1s
  group_interval: 2s
receivers:
- name: mail
  email_configs:
  - to: ops@example.org
    auth_username: user
    auth_password: pass
    tls_config:
      ca_file: ca.pem
{extra}
"#
    )
}

async fn next_transcript(rx: &mut mpsc::UnboundedReceiver<Transcript>) -> Transcript {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("no SMTP connection within 60 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_upgrades_with_starttls() {
    let ca = TestCa::new(&[]);
    let dir = tempdir();
    ca.write_ca(dir.path());
    let (addr, mut rx) = smtp_sink(&ca, SmtpMode::StartTls).await;
    let router = Router::start(dir.path(), &email_config(&addr.to_string(), ""), false).await;
    router
        .post_alerts(json!([alert(json!({"alertname": "Starttls"}))]))
        .await;
    let t = next_transcript(&mut rx).await;
    let tls_at = t.commands.iter().position(|c| c == "<tls>");
    assert_eq!(
        t.commands.get(..3),
        Some(
            &[
                "EHLO localhost".to_string(),
                "STARTTLS".into(),
                "<tls>".into()
            ][..]
        ),
        "{:?}",
        t.commands
    );
    // Everything else, credentials included, after the handshake.
    let after: Vec<&str> = t.commands[tls_at.unwrap() + 1..]
        .iter()
        .map(|c| c.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(after, ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]);
    assert!(t.data.contains("Subject: [FIRING:1]"), "{}", t.data);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_with_implicit_tls() {
    let ca = TestCa::new(&[]);
    let dir = tempdir();
    ca.write_ca(dir.path());
    let (addr, mut rx) = smtp_sink(&ca, SmtpMode::Implicit).await;
    let config = email_config(&addr.to_string(), "    force_implicit_tls: true");
    let router = Router::start(dir.path(), &config, false).await;
    router
        .post_alerts(json!([alert(json!({"alertname": "Implicit"}))]))
        .await;
    let t = next_transcript(&mut rx).await;
    assert_eq!(t.commands.first().map(String::as_str), Some("<tls>"));
    assert!(
        t.commands.iter().any(|c| c.starts_with("MAIL FROM:")),
        "{:?}",
        t.commands
    );
    assert!(!t.commands.iter().any(|c| c == "STARTTLS"));
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_requiring_tls_refuses_a_server_without_starttls() {
    let ca = TestCa::new(&[]);
    let dir = tempdir();
    ca.write_ca(dir.path());
    let (addr, mut rx) = smtp_sink(&ca, SmtpMode::Plain).await;
    let router = Router::start(dir.path(), &email_config(&addr.to_string(), ""), false).await;
    router
        .post_alerts(json!([alert(json!({"alertname": "NoStarttls"}))]))
        .await;
    let t = next_transcript(&mut rx).await;
    // The client hangs up after EHLO: no credentials, no message in clear.
    assert_eq!(t.commands, ["EHLO localhost"]);
    let failed = wait_for_metric(
        &router,
        r#"alertmanager_notifications_failed_total{integration="email"}"#,
    )
    .await;
    assert_eq!(failed, "1");
    router.stop().await;
}
