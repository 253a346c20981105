//! Shared building blocks of every Lucia role.

pub mod chunk;
pub mod config;
pub mod consul;
pub mod discovery;
pub mod duration;
pub mod gotemplate;
pub mod http_client;
pub mod http_config;
pub mod labels;
pub mod matchers;
pub mod metrics;
pub mod relabel;
pub mod ring;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tenant;
pub mod time;
pub mod timezone;
pub mod wal;

pub use tokio_util::sync::CancellationToken as Shutdown;
