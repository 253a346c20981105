//! `syslog` targets: RFC 5424 messages over TCP, octet-counted (RFC 6587
//! 3.4.1) or newline-terminated, with Promtail's `__syslog_*` labels.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::stages::{Entry, Pipeline};
use crate::tail::Shipment;
use lucia_common::relabel::{LabelMap, RelabelConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    pub listen_address: String,
    #[serde(default)]
    pub listen_protocol: Option<String>,
    #[serde(default)]
    pub idle_timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub label_structured_data: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub use_incoming_timestamp: bool,
    #[serde(default)]
    pub use_rfc5424_message: bool,
    #[serde(default)]
    pub max_message_length: Option<usize>,
    #[serde(default)]
    pub tls_config: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub syslog_format: Option<String>,
}

/// A parsed RFC 5424 message.
#[derive(Debug, Default, PartialEq)]
pub struct Message {
    pub facility: u8,
    pub severity: u8,
    pub timestamp: Option<i64>,
    pub hostname: Option<String>,
    pub app_name: Option<String>,
    pub proc_id: Option<String>,
    pub msg_id: Option<String>,
    pub structured_data: Vec<(String, String, String)>,
    pub message: String,
}

const SEVERITIES: [&str; 8] = [
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
];

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

fn nil(field: &str) -> Option<String> {
    (field != "-").then(|| field.to_string())
}

/// Parses an RFC 5424 message.
pub fn parse(line: &str) -> Result<Message, String> {
    let rest = line.strip_prefix('<').ok_or("expected <PRI>")?;
    let end = rest.find('>').ok_or("expected <PRI>")?;
    let pri: u16 = rest[..end].parse().map_err(|_| "invalid PRI")?;
    if pri > 191 {
        return Err("invalid PRI".to_string());
    }
    let rest = &rest[end + 1..];
    let (version, rest) = rest.split_once(' ').ok_or("expected VERSION")?;
    if version != "1" {
        return Err(format!(
            "unsupported syslog version {version:?} (RFC 5424 only)"
        ));
    }
    let mut fields = rest.splitn(6, ' ');
    let mut next = |name: &str| fields.next().ok_or(format!("expected {name}"));
    let timestamp = next("TIMESTAMP")?;
    let hostname = next("HOSTNAME")?;
    let app_name = next("APP-NAME")?;
    let proc_id = next("PROCID")?;
    let msg_id = next("MSGID")?;
    let rest = fields.next().unwrap_or("-");
    let (structured_data, message) = parse_structured_data(rest)?;
    let timestamp = match timestamp {
        "-" => None,
        ts => Some(
            chrono::DateTime::parse_from_rfc3339(ts)
                .map_err(|_| format!("invalid TIMESTAMP {ts:?}"))?
                .timestamp_nanos_opt()
                .ok_or("TIMESTAMP out of range")?,
        ),
    };
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    Ok(Message {
        facility: (pri / 8) as u8,
        severity: (pri % 8) as u8,
        timestamp,
        hostname: nil(hostname),
        app_name: nil(app_name),
        proc_id: nil(proc_id),
        msg_id: nil(msg_id),
        structured_data,
        message: message.to_string(),
    })
}

type StructuredData = Vec<(String, String, String)>;

fn parse_structured_data(input: &str) -> Result<(StructuredData, &str), String> {
    if let Some(rest) = input.strip_prefix('-') {
        return Ok((Vec::new(), rest.strip_prefix(' ').unwrap_or(rest)));
    }
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(body) = rest.strip_prefix('[') {
        let id_end = body.find([' ', ']']).ok_or("unterminated SD-ELEMENT")?;
        let id = body[..id_end].to_string();
        let mut r = &body[id_end..];
        loop {
            r = r.trim_start_matches(' ');
            if let Some(after) = r.strip_prefix(']') {
                rest = after;
                break;
            }
            let eq = r.find('=').ok_or("expected PARAM-NAME=")?;
            let name = r[..eq].to_string();
            let mut value = String::new();
            let mut chars = r[eq + 1..]
                .strip_prefix('"')
                .ok_or("expected '\"'")?
                .char_indices();
            let mut consumed = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            value.push(e);
                        }
                    }
                    '"' => {
                        consumed = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let consumed = consumed.ok_or("unterminated PARAM-VALUE")?;
            r = &r[eq + 2 + consumed..];
            out.push((id.clone(), name, value));
        }
    }
    if rest.len() == input.len() {
        return Err("invalid STRUCTURED-DATA".to_string());
    }
    Ok((out, rest.strip_prefix(' ').unwrap_or(rest)))
}

struct Target {
    config: SyslogConfig,
    relabel: Vec<RelabelConfig>,
    pipeline: Mutex<Pipeline>,
    tx: mpsc::Sender<Shipment>,
}

/// Accepts connections on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: SyslogConfig,
    relabel: Vec<RelabelConfig>,
    pipeline: Pipeline,
    tx: mpsc::Sender<Shipment>,
    stop: Shutdown,
) {
    let target = Arc::new(Target {
        config,
        relabel,
        pipeline: Mutex::new(pipeline),
        tx,
    });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let target = target.clone();
                    let stop = stop.clone();
                    connections.spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            r = connection(&target, socket, peer) => {
                                if let Err(err) = r {
                                    tracing::debug!(%peer, %err, "syslog connection ended");
                                }
                            }
                        }
                    });
                }
                Err(err) => tracing::warn!(%err, "syslog accept failed"),
            },
        }
    }
    connections.shutdown().await;
}

async fn connection(
    target: &Target,
    socket: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Result<(), String> {
    let idle = target
        .config
        .idle_timeout
        .map_or(Duration::from_secs(120), |d| d.0);
    let max = target.config.max_message_length.unwrap_or(8192).max(64);
    let mut reader = BufReader::new(socket);
    loop {
        let frame = tokio::time::timeout(idle, read_frame(&mut reader, max))
            .await
            .map_err(|_| "idle timeout".to_string())??;
        let Some(frame) = frame else { return Ok(()) };
        let text = String::from_utf8_lossy(&frame);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            continue;
        }
        match parse(text) {
            Ok(message) => {
                if !handle(target, message, text, peer).await {
                    return Ok(());
                }
            }
            Err(err) => tracing::warn!(%peer, %err, "invalid syslog message"),
        }
    }
}

/// One frame: octet-counted when it starts with a digit, else a line.
async fn read_frame(
    reader: &mut BufReader<tokio::net::TcpStream>,
    max: usize,
) -> Result<Option<Vec<u8>>, String> {
    let first = reader.fill_buf().await.map_err(|e| e.to_string())?;
    let Some(&b) = first.first() else {
        return Ok(None);
    };
    if b.is_ascii_digit() {
        let mut len = Vec::new();
        reader
            .read_until(b' ', &mut len)
            .await
            .map_err(|e| e.to_string())?;
        let len: usize = std::str::from_utf8(&len)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("invalid octet count")?;
        if len > max {
            return Err(format!("message of {len} bytes over max_message_length"));
        }
        let mut frame = vec![0; len];
        reader
            .read_exact(&mut frame)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(frame))
    } else {
        let mut frame = Vec::new();
        let n = (&mut *reader)
            .take(max as u64 + 1)
            .read_until(b'\n', &mut frame)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(frame))
    }
}

async fn handle(target: &Target, m: Message, raw: &str, peer: std::net::SocketAddr) -> bool {
    let mut labels: LabelMap = target.config.labels.clone();
    labels.insert(
        "__syslog_connection_ip_address".into(),
        peer.ip().to_string(),
    );
    labels.insert(
        "__syslog_message_severity".into(),
        SEVERITIES[usize::from(m.severity) % 8].to_string(),
    );
    if let Some(f) = FACILITIES.get(usize::from(m.facility)) {
        labels.insert("__syslog_message_facility".into(), f.to_string());
    }
    for (name, value) in [
        ("hostname", &m.hostname),
        ("app_name", &m.app_name),
        ("proc_id", &m.proc_id),
        ("msg_id", &m.msg_id),
    ] {
        if let Some(v) = value {
            labels.insert(format!("__syslog_message_{name}"), v.clone());
        }
    }
    if target.config.label_structured_data {
        for (id, name, value) in &m.structured_data {
            let key: String = format!("__syslog_message_sd_{id}_{name}")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            labels.insert(key, value.clone());
        }
    }
    let Some(labels) = lucia_common::relabel::relabel(labels, &target.relabel) else {
        return true;
    };
    let labels: LabelMap = labels
        .into_iter()
        .filter(|(k, _)| !k.starts_with("__"))
        .collect();
    let ts = match (target.config.use_incoming_timestamp, m.timestamp) {
        (true, Some(ts)) => ts,
        _ => lucia_common::time::now_nanos(),
    };
    let line = if target.config.use_rfc5424_message {
        raw.to_string()
    } else {
        m.message
    };
    let mut out = Vec::new();
    target
        .pipeline
        .lock()
        .process(Entry::new(labels, ts, line), &mut out);
    for entry in out {
        if target
            .tx
            .send(Shipment {
                entry,
                source: None,
            })
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc5424() {
        let m = parse(r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Appl\"ication"][x y="z"] An application event"#).unwrap();
        assert_eq!((m.facility, m.severity), (20, 5));
        assert_eq!(m.timestamp, Some(1_065_910_455_003_000_000));
        assert_eq!(m.hostname.as_deref(), Some("mymachine.example.com"));
        assert_eq!(m.proc_id, None);
        assert_eq!(m.msg_id.as_deref(), Some("ID47"));
        assert_eq!(m.structured_data.len(), 3);
        assert_eq!(m.structured_data[1].2, "Appl\"ication");
        assert_eq!(m.message, "An application event");
        let m = parse("<34>1 - host app 12 - - hi").unwrap();
        assert_eq!(m.message, "hi");
        assert_eq!(m.timestamp, None);
        assert!(parse("<34>0 - - - - - -").is_err());
        assert!(parse("hello").is_err());
        assert!(parse("<34>1 - host app 12 - [unterminated").is_err());
    }
}
