//! `docker_sd_configs`: containers discovered through the Docker Engine API
//! (unix socket or TCP), with Prometheus' `__meta_docker_*` labels, and
//! their logs read through the API (`/containers/{id}/logs?follow=1`).
//!
//! The position of a container is the timestamp of its last acknowledged
//! line, stored as `cursor-<id>` in the positions file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::positions::Positions;
use crate::stages::{Entry, Pipeline};
use crate::tail::Shipment;
use lucia_common::relabel::LabelMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSdConfig {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub refresh_interval: Option<ConfigDuration>,
    #[serde(default)]
    pub filters: Vec<DockerFilter>,
    #[serde(default)]
    pub host_networking_host: Option<String>,
    #[serde(default)]
    pub match_first_network: Option<bool>,
    #[serde(default)]
    pub tls_config: Option<IgnoredAny>,
    #[serde(default)]
    pub basic_auth: Option<IgnoredAny>,
    #[serde(default)]
    pub bearer_token: Option<IgnoredAny>,
    #[serde(default)]
    pub proxy_url: Option<IgnoredAny>,
    #[serde(default)]
    pub follow_redirects: Option<bool>,
    #[serde(default)]
    pub enable_http2: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerFilter {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("docker host {0:?}: only unix:// and tcp:// (or http://) hosts are supported")]
    Host(String),
    #[error("docker api: {0}")]
    Io(#[from] std::io::Error),
    #[error("docker api {path}: status {status}")]
    Status { path: String, status: u16 },
    #[error("docker api: invalid response: {0}")]
    Invalid(String),
}

/// Where the Docker Engine API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    pub fn parse(host: &str) -> Result<Self, DockerError> {
        if let Some(path) = host.strip_prefix("unix://") {
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_string()))
        } else {
            Err(DockerError::Host(host.to_string()))
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A response body being read: plain (to EOF or a length) or chunked.
struct Body {
    reader: BufReader<Box<dyn Stream>>,
    chunked: bool,
    remaining: Option<u64>,
    done: bool,
}

impl Body {
    /// The next piece of the body; `None` at its end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, DockerError> {
        if self.done {
            return Ok(None);
        }
        if self.chunked {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                self.done = true;
                return Ok(None);
            }
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| DockerError::Invalid(format!("chunk size {line:?}")))?;
            if size == 0 {
                self.done = true;
                return Ok(None);
            }
            let mut data = vec![0; size];
            self.reader.read_exact(&mut data).await?;
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf).await?;
            return Ok(Some(data));
        }
        let mut buf = vec![0; 64 * 1024];
        let want = match self.remaining {
            Some(0) => {
                self.done = true;
                return Ok(None);
            }
            Some(r) => buf.len().min(usize::try_from(r).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let n = self.reader.read(&mut buf[..want]).await?;
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        if let Some(r) = &mut self.remaining {
            *r -= n as u64;
        }
        buf.truncate(n);
        Ok(Some(buf))
    }

    async fn read_all(mut self, limit: usize) -> Result<Vec<u8>, DockerError> {
        let mut out = Vec::new();
        while let Some(piece) = self.next().await? {
            out.extend_from_slice(&piece);
            if out.len() > limit {
                return Err(DockerError::Invalid("response too large".to_string()));
            }
        }
        Ok(out)
    }
}

/// A minimal HTTP/1.1 GET (the Engine API over a unix socket needs no more).
async fn get(endpoint: &Endpoint, path: &str) -> Result<Body, DockerError> {
    let stream: Box<dyn Stream> = match endpoint {
        Endpoint::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
        Endpoint::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr.as_str()).await?),
    };
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes()).await?;
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| DockerError::Invalid(format!("status line {status_line:?}")))?;
    let mut chunked = false;
    let mut remaining = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if name == "content-length" {
                remaining = value.parse().ok();
            }
        }
    }
    if !(200..300).contains(&status) {
        return Err(DockerError::Status {
            path: path.to_string(),
            status,
        });
    }
    Ok(Body {
        reader,
        chunked,
        remaining,
        done: false,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Container {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    network_settings: Option<NetworkSettings>,
    #[serde(default)]
    host_config: Option<HostConfig>,
    #[serde(default)]
    ports: Vec<Port>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkSettings {
    #[serde(default)]
    networks: BTreeMap<String, Network>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Network {
    #[serde(default, rename = "IPAddress")]
    ip_address: String,
    #[serde(default, rename = "NetworkID")]
    network_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HostConfig {
    #[serde(default)]
    network_mode: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Port {
    #[serde(default)]
    private_port: u16,
    #[serde(default)]
    public_port: Option<u16>,
    #[serde(default, rename = "IP")]
    ip: Option<String>,
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A discovered container: its id and target labels (before relabeling).
#[derive(Debug, Clone)]
pub struct ContainerTarget {
    pub id: String,
    pub labels: LabelMap,
}

/// The running containers matching the config's filters, one target each
/// (its first network and port).
pub async fn discover(config: &DockerSdConfig) -> Result<Vec<ContainerTarget>, DockerError> {
    let endpoint = Endpoint::parse(&config.host)?;
    let mut path = "/containers/json".to_string();
    if !config.filters.is_empty() {
        let filters: BTreeMap<&str, &Vec<String>> = config
            .filters
            .iter()
            .map(|f| (f.name.as_str(), &f.values))
            .collect();
        let json = serde_json::to_string(&filters).unwrap_or_default();
        path.push_str("?filters=");
        path.push_str(&percent_encode(&json));
    }
    let body = get(&endpoint, &path).await?.read_all(64 << 20).await?;
    let containers: Vec<Container> =
        serde_json::from_slice(&body).map_err(|e| DockerError::Invalid(e.to_string()))?;
    let default_port = config.port.unwrap_or(80);
    Ok(containers
        .into_iter()
        .map(|c| {
            let mut labels = LabelMap::new();
            labels.insert("__meta_docker_container_id".into(), c.id.clone());
            if let Some(name) = c.names.first() {
                labels.insert("__meta_docker_container_name".into(), name.clone());
            }
            if let Some(hc) = &c.host_config {
                labels.insert(
                    "__meta_docker_container_network_mode".into(),
                    hc.network_mode.clone(),
                );
            }
            for (k, v) in c.labels.iter().flatten() {
                labels.insert(
                    format!("__meta_docker_container_label_{}", sanitize(k)),
                    v.clone(),
                );
            }
            let mut ip = String::new();
            if let Some((name, net)) = c
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.iter().next())
            {
                labels.insert("__meta_docker_network_name".into(), name.clone());
                labels.insert("__meta_docker_network_id".into(), net.network_id.clone());
                labels.insert("__meta_docker_network_ip".into(), net.ip_address.clone());
                ip = net.ip_address.clone();
            }
            let port = match c.ports.first() {
                Some(p) => {
                    labels.insert(
                        "__meta_docker_port_private".into(),
                        p.private_port.to_string(),
                    );
                    if let Some(public) = p.public_port {
                        labels.insert("__meta_docker_port_public".into(), public.to_string());
                    }
                    if let Some(pip) = &p.ip {
                        labels.insert("__meta_docker_port_public_ip".into(), pip.clone());
                    }
                    p.private_port
                }
                None => default_port,
            };
            labels.insert("__address__".into(), format!("{ip}:{port}"));
            ContainerTarget { id: c.id, labels }
        })
        .collect())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The positions key of a container.
pub fn cursor_key(id: &str) -> String {
    format!("cursor-{id}")
}

/// Follows a container's logs until `stop`, reconnecting (from the last
/// line read) when the stream ends.
#[allow(clippy::too_many_arguments)]
pub async fn tail(
    host: String,
    id: String,
    raw_labels: LabelMap,
    relabel: Vec<lucia_common::relabel::RelabelConfig>,
    mut pipeline: Pipeline,
    tx: mpsc::Sender<Shipment>,
    positions: Positions,
    stop: Shutdown,
    retry: Duration,
) {
    let Ok(endpoint) = Endpoint::parse(&host) else {
        return;
    };
    // The target's labels for each log stream, relabeled as Promtail does
    // with `__meta_docker_container_log_stream` set.
    let labels: [Option<LabelMap>; 2] = ["stdout", "stderr"].map(|stream| {
        let mut labels = raw_labels.clone();
        labels.insert(
            "__meta_docker_container_log_stream".to_string(),
            stream.to_string(),
        );
        lucia_common::relabel::relabel(labels, &relabel).map(|l| {
            l.into_iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .collect()
        })
    });
    if labels.iter().all(Option::is_none) {
        return;
    }
    let key: Arc<str> = Arc::from(cursor_key(&id));
    // Nanoseconds of the last line read; lines at or before it are skipped.
    let mut last = positions.get(&key).map_or(0, |p| p.offset as i64);
    loop {
        let since = format!(
            "{}.{:09}",
            last.div_euclid(1_000_000_000),
            last.rem_euclid(1_000_000_000)
        );
        let path =
            format!("/containers/{id}/logs?stdout=1&stderr=1&follow=1&timestamps=1&since={since}");
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = follow(&endpoint, &path, &labels, &mut pipeline, &tx, &key, &mut last) => r,
        };
        match result {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => tracing::warn!(container = %id, %err, "reading container logs"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// Reads one log stream to its end; `Ok(false)` when the queue is closed.
async fn follow(
    endpoint: &Endpoint,
    path: &str,
    labels: &[Option<LabelMap>; 2],
    pipeline: &mut Pipeline,
    tx: &mpsc::Sender<Shipment>,
    key: &Arc<str>,
    last: &mut i64,
) -> Result<bool, DockerError> {
    let mut body = get(endpoint, path).await?;
    let mut pending: Vec<u8> = Vec::new();
    // Per stream (stdout, stderr) partial lines.
    let mut partial: [Vec<u8>; 3] = Default::default();
    let mut multiplexed: Option<bool> = None;
    let mut out = Vec::new();
    while let Some(piece) = body.next().await? {
        pending.extend_from_slice(&piece);
        let is_mux = *multiplexed.get_or_insert_with(|| {
            pending.len() >= 8 && pending[0] <= 2 && pending[1..4] == [0, 0, 0]
        });
        let mut frames: Vec<(usize, Vec<u8>)> = Vec::new();
        if is_mux {
            while pending.len() >= 8 {
                let size =
                    u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]) as usize;
                if pending.len() < 8 + size {
                    break;
                }
                let stream = usize::from(pending[0].min(2));
                frames.push((stream, pending[8..8 + size].to_vec()));
                pending.drain(..8 + size);
            }
        } else {
            frames.push((1, std::mem::take(&mut pending)));
        }
        for (stream, data) in frames {
            let buf = &mut partial[stream];
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                let (ts, text) = match line.split_once(' ') {
                    Some((ts, text)) => match crate::stages::parse_timestamp("RFC3339Nano", ts) {
                        Some(ts) => (ts, text.to_string()),
                        None => (lucia_common::time::now_nanos(), line.clone()),
                    },
                    None => (lucia_common::time::now_nanos(), line.clone()),
                };
                if ts <= *last {
                    continue;
                }
                *last = ts;
                let Some(entry_labels) = &labels[usize::from(stream == 2)] else {
                    continue;
                };
                let mut entry = Entry::new(entry_labels.clone(), ts, text);
                entry.offset = ts as u64;
                pipeline.process(entry, &mut out);
            }
        }
        for entry in out.drain(..) {
            let shipment = Shipment {
                entry,
                source: Some((key.clone(), None)),
            };
            if tx.send(shipment).await.is_err() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
