//! The email integration: a minimal SMTP client (EHLO, STARTTLS, AUTH
//! PLAIN/LOGIN, MAIL, RCPT, DATA) with Alertmanager's TLS rules: implicit
//! TLS when `force_implicit_tls` says so or, unset, when the smarthost's
//! port is 465; otherwise STARTTLS when `require_tls` (the default), and a
//! server that does not offer it is an error rather than a plain-text
//! fallback. `tls_config` applies to both.

use std::sync::Arc;

use base64::Engine as _;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{NotifyEnv, NotifyError, read_secret_file};
use crate::amconfig::EmailConfig;
use crate::model::Alert;

/// Addresses from a header value such as `Ops <ops@x.org>, b@y.org`.
fn addresses(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| match (a.rfind('<'), a.rfind('>')) {
            (Some(s), Some(e)) if s < e => a[s + 1..e].to_string(),
            _ => a.to_string(),
        })
        .collect()
}

/// The connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Smtp {
    conn: BufReader<Box<dyn Io>>,
}

/// The smarthost's host, for the TLS server name (brackets of an IPv6
/// address removed), and port.
fn split_host_port(smarthost: &str) -> (&str, &str) {
    let (host, port) = smarthost.rsplit_once(':').unwrap_or((smarthost, ""));
    (host.trim_start_matches('[').trim_end_matches(']'), port)
}

/// TLS over `io` to `smarthost`, verifying `tls_config.server_name` or else
/// the smarthost's host.
async fn handshake(
    io: Box<dyn Io>,
    c: &EmailConfig,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Box<dyn Io>, NotifyError> {
    let configured = c
        .tls_config
        .as_ref()
        .and_then(|t| t.server_name.as_deref())
        .filter(|n| !n.is_empty());
    let name = configured.unwrap_or(split_host_port(&c.smarthost).0);
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| {
        NotifyError::fatal(format!(
            "smtp: {name:?} is not a valid TLS server name: {e}"
        ))
    })?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(server_name, io)
        .await
        .map_err(|e| NotifyError::retry(format!("smtp: TLS with {}: {e}", c.smarthost)))?;
    Ok(Box::new(stream))
}

/// Whether an EHLO reply lists `extension` (`250-STARTTLS`, `250 AUTH …`).
fn has_extension(ehlo: &str, extension: &str) -> bool {
    ehlo.lines().skip(1).any(|line| {
        line.get(4..)
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|word| word.eq_ignore_ascii_case(extension))
    })
}

impl Smtp {
    /// Reads a (multi-line) reply; errors unless its code is `want`.
    async fn reply(&mut self, want: u16) -> Result<String, NotifyError> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .conn
                .read_line(&mut line)
                .await
                .map_err(|e| NotifyError::retry(format!("smtp: {e}")))?;
            if n == 0 {
                return Err(NotifyError::retry("smtp: connection closed"));
            }
            text.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                if code != want {
                    let msg = format!("smtp: unexpected reply {}", text.trim());
                    return Err(if code >= 500 {
                        NotifyError::fatal(msg)
                    } else {
                        NotifyError::retry(msg)
                    });
                }
                return Ok(text);
            }
        }
    }

    async fn cmd(&mut self, line: &str, want: u16) -> Result<String, NotifyError> {
        self.conn
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| NotifyError::retry(format!("smtp: {e}")))?;
        self.reply(want).await
    }
}

fn header_encode(s: &str) -> String {
    if s.is_ascii() {
        s.to_string()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

pub async fn notify(
    c: &EmailConfig,
    env: &NotifyEnv<'_>,
    alerts: &[Alert],
) -> Result<(), NotifyError> {
    let data = env.template_data(alerts);
    let r = |text: &str| env.render(text, &data);
    let mut headers: Vec<(String, String)> = Vec::new();
    let subject = c
        .headers
        .get("Subject")
        .cloned()
        .unwrap_or_else(|| r#"{{ template "email.default.subject" . }}"#.to_string());
    headers.push(("Subject".into(), header_encode(&r(&subject)?)));
    headers.push(("To".into(), r(c.headers.get("To").unwrap_or(&c.to))?));
    headers.push(("From".into(), r(c.headers.get("From").unwrap_or(&c.from))?));
    for (k, v) in &c.headers {
        if !matches!(k.as_str(), "Subject" | "To" | "From") {
            headers.push((k.clone(), header_encode(&r(v)?)));
        }
    }
    let html = r(c
        .html
        .as_deref()
        .unwrap_or(r#"{{ template "email.default.html" . }}"#))?;
    let text = match &c.text {
        Some(t) if !t.is_empty() => r(t)?,
        _ => String::new(),
    };
    let boundary = format!("{:032x}", rand::random::<u128>());
    let mut msg = String::new();
    for (k, v) in &headers {
        msg.push_str(&format!("{k}: {v}\r\n"));
    }
    let host = c.hello.clone();
    msg.push_str(&format!("Date: {}\r\n", env.now.to_rfc2822()));
    msg.push_str(&format!(
        "Message-Id: <{}@{host}>\r\n",
        rand::random::<u64>()
    ));
    msg.push_str("MIME-Version: 1.0\r\n");
    let b64 = |s: &str| {
        let enc = base64::engine::general_purpose::STANDARD.encode(s);
        enc.as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).to_string())
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    msg.push_str(&format!(
        "Content-Type: multipart/alternative; boundary={boundary}\r\n\r\n"
    ));
    if !text.is_empty() {
        msg.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            b64(&text)
        ));
    }
    if !html.is_empty() {
        msg.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            b64(&html)
        ));
    }
    msg.push_str(&format!("--{boundary}--\r\n"));

    let tls = match &c.tls {
        Some(tls) => tls.clone(),
        // configs made in code rather than loaded: the default roots
        None => Arc::new(lucia_common::http_client::default_client_config()),
    };
    let implicit_tls = c
        .force_implicit_tls
        .unwrap_or_else(|| split_host_port(&c.smarthost).1 == "465");
    let stream = TcpStream::connect(&c.smarthost)
        .await
        .map_err(|e| NotifyError::retry(format!("smtp: connect to {}: {e}", c.smarthost)))?;
    let mut io: Box<dyn Io> = Box::new(stream);
    if implicit_tls {
        io = handshake(io, c, &tls).await?;
    }
    let mut smtp = Smtp {
        conn: BufReader::new(io),
    };
    smtp.reply(220).await?;
    let mut ehlo = smtp.cmd(&format!("EHLO {host}"), 250).await?;
    if c.require_tls.unwrap_or(true) && !implicit_tls {
        if !has_extension(&ehlo, "STARTTLS") {
            return Err(NotifyError::retry(format!(
                "smtp: 'require_tls' is true (default) but {:?} does not advertise the STARTTLS extension",
                c.smarthost
            )));
        }
        smtp.cmd("STARTTLS", 220).await?;
        // Anything the server sent after its 220 would be plain text
        // injected before the handshake (CVE-2011-0411): refuse it.
        if !smtp.conn.buffer().is_empty() {
            return Err(NotifyError::retry(
                "smtp: the server sent data before the TLS handshake of STARTTLS",
            ));
        }
        let io = handshake(smtp.conn.into_inner(), c, &tls).await?;
        smtp = Smtp {
            conn: BufReader::new(io),
        };
        // Capabilities learnt before TLS are discarded (RFC 3207).
        ehlo = smtp.cmd(&format!("EHLO {host}"), 250).await?;
    }
    if !c.auth_username.is_empty() {
        let password = if !c.auth_password.is_empty() {
            c.auth_password.clone()
        } else if !c.auth_password_file.is_empty() {
            read_secret_file(&c.auth_password_file)?
        } else {
            String::new()
        };
        let caps = ehlo.to_uppercase();
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        if caps.contains("PLAIN") {
            let token = enc(&format!(
                "{}\0{}\0{password}",
                c.auth_identity, c.auth_username
            ));
            smtp.cmd(&format!("AUTH PLAIN {token}"), 235).await?;
        } else if caps.contains("LOGIN") {
            smtp.cmd("AUTH LOGIN", 334).await?;
            smtp.cmd(&enc(&c.auth_username), 334).await?;
            smtp.cmd(&enc(&password), 235).await?;
        } else {
            return Err(NotifyError::fatal(
                "smtp: the server offers no AUTH PLAIN or LOGIN",
            ));
        }
    }
    let from = addresses(&c.from).into_iter().next().unwrap_or_default();
    smtp.cmd(&format!("MAIL FROM:<{from}>"), 250).await?;
    let rendered_to = r(&c.to)?;
    for to in addresses(&rendered_to) {
        smtp.cmd(&format!("RCPT TO:<{to}>"), 250).await?;
    }
    smtp.cmd("DATA", 354).await?;
    // Dot-stuffing.
    let body: String = msg
        .split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    smtp.cmd(&format!("{body}\r\n."), 250).await?;
    let _ = smtp.cmd("QUIT", 221).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            addresses("Ops <ops@x.org>, b@y.org"),
            vec!["ops@x.org", "b@y.org"]
        );
    }

    #[test]
    fn finds_extensions_and_hosts() {
        let ehlo = "250-mail.example.org\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n";
        assert!(has_extension(ehlo, "starttls"));
        assert!(has_extension(ehlo, "AUTH"));
        assert!(!has_extension(ehlo, "PLAIN"));
        assert!(!has_extension(
            "250-STARTTLS.example.org\r\n250 SIZE 10\r\n",
            "STARTTLS"
        ));
        assert_eq!(split_host_port("smtp.x.org:465"), ("smtp.x.org", "465"));
        assert_eq!(split_host_port("[::1]:25"), ("::1", "25"));
    }
}
