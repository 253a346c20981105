//! The distributor role: `POST /loki/api/v1/push` (and the legacy
//! `/api/prom/push`). Decodes, validates against the tenant's limits,
//! rate-limits, adds `service_name` and `detected_level`, and replicates
//! each stream to its ingesters on the ring with a write quorum.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::ring::{KvStore, Ring, RingConfig};
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use lucia_common::tenant::{TenantError, tenant_from_headers};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;

use crate::detection;
use crate::fanout::{Fanout, FanoutError};
use crate::limits::LimitsConfig;
use crate::push::{self, DecodeError, Format, RawStream};
use crate::rate_limit::RateLimiter;
use crate::validation::{self, Reason, Validated};

/// The `distributor` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The ingester ring to write to.
    pub ring: RingConfig,
    /// Largest accepted push body in bytes, compressed and decompressed.
    pub max_recv_msg_size: usize,
    /// Timeout of one push to one ingester.
    pub remote_timeout: ConfigDuration,
    /// Per-tenant limits (Loki's `limits_config`).
    #[serde(skip)]
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ring: RingConfig::default(),
            max_recv_msg_size: 64 << 20,
            remote_timeout: ConfigDuration::from_secs(10),
            limits: LimitsConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("ring: {0}")]
    Ring(#[from] lucia_common::ring::RingError),
}

/// Why a push was not (entirely) accepted; one variant per answer.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Some streams or entries were invalid (the valid rest was ingested).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "ingestion rate limit exceeded for user {tenant} (limit: {limit} bytes/sec) while attempting to ingest {lines} lines totaling {bytes} bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased"
    )]
    RateLimited {
        tenant: String,
        limit: u64,
        lines: u64,
        bytes: u64,
    },
    #[error(transparent)]
    Fanout(#[from] FanoutError),
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        let status = match &self {
            PushError::Tenant(TenantError::Missing) => StatusCode::UNAUTHORIZED,
            PushError::Tenant(TenantError::Invalid(_)) => StatusCode::BAD_REQUEST,
            PushError::Decode(DecodeError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            PushError::Decode(DecodeError::UnsupportedEncoding(_)) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            PushError::Decode(_) | PushError::Invalid(_) => StatusCode::BAD_REQUEST,
            PushError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            PushError::Fanout(FanoutError::TooFewReplicas { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            PushError::Fanout(FanoutError::Ingester { code, .. }) => match code {
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        // Client errors from an ingester are the client's to read verbatim.
        let message = match self {
            PushError::Fanout(FanoutError::Ingester { message, .. })
                if status.is_client_error() =>
            {
                message
            }
            other => other.to_string(),
        };
        (status, format!("{message}\n")).into_response()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiscardLabels {
    reason: String,
    tenant: String,
}

#[derive(Clone, Default)]
struct DistributorMetrics {
    lines_received: Family<TenantLabel, Counter>,
    bytes_received: Family<TenantLabel, Counter>,
    discarded_samples: Family<DiscardLabels, Counter>,
    discarded_bytes: Family<DiscardLabels, Counter>,
}

impl DistributorMetrics {
    fn register(&self, metrics: &lucia_common::metrics::Metrics) {
        metrics.register(
            "lucia_distributor_lines_received",
            "Log lines received by the distributor, before validation.",
            self.lines_received.clone(),
        );
        metrics.register(
            "lucia_distributor_bytes_received",
            "Bytes of log lines received by the distributor, before validation.",
            self.bytes_received.clone(),
        );
        metrics.register(
            "lucia_discarded_samples",
            "Log lines discarded, by reason.",
            self.discarded_samples.clone(),
        );
        metrics.register(
            "lucia_discarded_bytes",
            "Bytes of log lines discarded, by reason.",
            self.discarded_bytes.clone(),
        );
    }

    fn discard(&self, tenant: &str, reason: Reason, lines: u64, bytes: u64) {
        let labels = DiscardLabels {
            reason: reason.as_str().to_string(),
            tenant: tenant.to_string(),
        };
        self.discarded_samples.get_or_create(&labels).inc_by(lines);
        self.discarded_bytes.get_or_create(&labels).inc_by(bytes);
    }
}

struct Distributor {
    config: Config,
    multi_tenant: bool,
    ring: Ring,
    fanout: Arc<Fanout>,
    limiter: RateLimiter,
    metrics: DistributorMetrics,
}

/// Starts the distributor on the process's shared listener.
pub async fn start(config: Config, ctx: RoleContext) -> Result<Role, Error> {
    let ready = ctx.readiness.register("distributor");
    let ring = lucia_common::ring::watch(
        &config.ring,
        "ingester",
        ctx.consul.as_ref(),
        ctx.shutdown.clone(),
    )
    .await?;
    let metrics = DistributorMetrics::default();
    metrics.register(&ctx.metrics);
    let failures = Family::default();
    ctx.metrics.register(
        "lucia_distributor_ingester_append_failures",
        "Pushes to an ingester that failed or timed out.",
        failures.clone(),
    );
    let distributor = Arc::new(Distributor {
        fanout: Arc::new(Fanout::new(
            config.remote_timeout.into(),
            failures,
            config.ring.kvstore.store == KvStore::Inmemory,
        )),
        limiter: RateLimiter::new(
            config.limits.ingestion_rate_mb,
            config.limits.ingestion_burst_size_mb,
        ),
        multi_tenant: ctx.multi_tenant,
        ring,
        metrics,
        config,
    });
    let router = Router::new()
        .route("/loki/api/v1/push", post(push_handler))
        .route("/api/prom/push", post(push_handler))
        .with_state(distributor.clone())
        .merge(lucia_common::ring::ring_routes(distributor.ring.clone()));
    ready.set(true);
    Ok(Role::new("distributor", router, async {}))
}

/// Runs the distributor on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}

/// Bodies larger than this are decoded on the blocking thread pool. Smaller
/// ones (a shipper's batch of 1 MiB of lines is about 300 KB of snappy)
/// are decoded on the request's own thread: the rest of the push
/// (validation, level detection, the WAL record) then finds the lines in
/// that core's cache. Handing them over from a blocking thread cost 13% of
/// the push's CPU (BENCHMARKS.md); the stall this saves others from is the
/// same order as the rest of the push, which runs here anyway.
const OFFLOAD_DECODE_BYTES: usize = 4 * 1024 * 1024;

async fn push_handler(
    State(distributor): State<Arc<Distributor>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, PushError> {
    let tenant = tenant_from_headers(&headers, distributor.multi_tenant)?;
    let limit = distributor.config.max_recv_msg_size;
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let body = read_body(body, header_str(header::CONTENT_LENGTH), limit).await?;
    let encoding = header_str(header::CONTENT_ENCODING).map(str::to_string);
    let format = Format::from_content_type(header_str(header::CONTENT_TYPE));
    let large = body.len() > OFFLOAD_DECODE_BYTES;
    let decode = move || {
        let body = push::decode_content_encoding(body, encoding.as_deref(), limit)?;
        push::decode_body(&body, format, limit)
    };
    // Decoding a large body takes long enough to stall other requests on
    // this worker thread: do it on the blocking pool.
    let streams = if large {
        tokio::task::spawn_blocking(decode)
            .await
            .map_err(|err| DecodeError::Read(format!("decoding task failed: {err}")))??
    } else {
        decode()?
    };
    distributor.ingest(&tenant, streams).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads the body, refusing more than `limit` bytes.
async fn read_body(
    body: Body,
    content_length: Option<&str>,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let too_large = DecodeError::TooLarge { limit, what: "" };
    let declared = content_length.and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large);
    }
    let mut stream = body.into_data_stream();
    // Trust the declared length only so far: a client could claim the
    // limit and send nothing.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(1 << 20));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| DecodeError::Read(err.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

impl Distributor {
    async fn ingest(&self, tenant: &str, streams: Vec<RawStream>) -> Result<(), PushError> {
        let (lines, bytes) = streams
            .iter()
            .flat_map(|s| &s.entries)
            .fold((0u64, 0u64), |(l, b), e| (l + 1, b + e.line.len() as u64));
        if lines > 0 {
            let label = TenantLabel {
                tenant: tenant.to_string(),
            };
            self.metrics
                .lines_received
                .get_or_create(&label)
                .inc_by(lines);
            self.metrics
                .bytes_received
                .get_or_create(&label)
                .inc_by(bytes);
        }

        let limits = &self.config.limits;
        let mut validated = validation::validate(streams, limits, lucia_common::time::now_nanos());
        for (reason, discarded) in &validated.discarded {
            self.metrics
                .discard(tenant, *reason, discarded.lines, discarded.bytes);
        }
        if validated.streams.is_empty() {
            return invalid_or_ok(&validated);
        }

        if !self.limiter.allow(tenant, validated.bytes, Instant::now()) {
            self.metrics.discard(
                tenant,
                Reason::RateLimited,
                validated.lines,
                validated.bytes,
            );
            return Err(PushError::RateLimited {
                tenant: tenant.to_string(),
                limit: self.limiter.limit(),
                lines: validated.lines,
                bytes: validated.bytes,
            });
        }

        for stream in &mut validated.streams {
            detection::add_service_name(&mut stream.labels, &limits.discover_service_name);
            if limits.discover_log_levels {
                let level = detection::stream_level(&stream.labels);
                for entry in &mut stream.entries {
                    detection::add_detected_level(entry, level.as_deref());
                }
            }
        }

        let streams = std::mem::take(&mut validated.streams);
        self.fanout
            .push(
                &self.ring.snapshot(),
                self.config.ring.replication_factor,
                tenant,
                streams,
            )
            .await?;
        invalid_or_ok(&validated)
    }
}

fn invalid_or_ok(validated: &Validated) -> Result<(), PushError> {
    match validated.error_message() {
        Some(message) => Err(PushError::Invalid(message)),
        None => Ok(()),
    }
}
