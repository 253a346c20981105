//! Logging and tracing: text or JSON lines to stdout, filtered by level, and
//! OpenTelemetry traces over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set (the standard `OTEL_*` variables configure the exporter).
//!
//! `RUST_LOG` overrides `--log.level` with a full filter when set.

use std::str::FromStr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" | "logfmt" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// Flushes buffered spans when dropped; keep it alive for the process's
/// lifetime.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("cannot flush traces: {err}");
        }
    }
}

/// Installs the global subscriber. `level` is one of error, warn, info,
/// debug, trace. Must run inside a tokio runtime when OTLP export is on.
/// A second call (tests start several roles in one process) only returns a
/// guard that does nothing.
pub fn init(service: &str, level: &str, format: LogFormat) -> Result<TelemetryGuard, String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.is_empty() => EnvFilter::try_new(filter),
        _ => EnvFilter::try_new(format!(
            "{level},h2=warn,hyper=warn,tower=warn,opentelemetry=warn"
        )),
    }
    .map_err(|err| format!("invalid log level {level:?}: {err}"))?;

    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|err| format!("cannot set up OTLP export to {endpoint}: {err}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_string())
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        _ => None,
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("lucia")));

    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = match format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true))
            .try_init(),
    };
    if result.is_err() {
        return Ok(TelemetryGuard { provider: None });
    }
    Ok(TelemetryGuard { provider })
}
