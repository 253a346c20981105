//! Logging setup: text or JSON lines to stdout, filtered by level.
//!
//! `RUST_LOG` overrides `--log.level` with a full filter when set.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber. `level` is one of error, warn, info,
/// debug, trace. Calling it twice is harmless (the second call is ignored).
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.is_empty() => EnvFilter::try_new(filter),
        _ => EnvFilter::try_new(format!("{level},h2=warn,hyper=warn,tower=warn")),
    }
    .map_err(|err| format!("invalid log level {level:?}: {err}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already installed (tests start several roles in one process).
    let _ = result;
    Ok(())
}
