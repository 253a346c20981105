//! The ingester role. (Stub: the WAL, chunks and flushing are being written.)

use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::ring::RingConfig;
use lucia_common::server::{ProcessConfig, Role, RoleContext};
use serde::Deserialize;

use crate::limits::LimitsConfig;
pub use crate::store::StorageConfig;
use crate::wal::WalConfig;

/// The `ingester` config section, with Loki's names and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The ring this ingester joins.
    pub ring: RingConfig,
    /// Instance ID in the ring; defaults to the hostname and port.
    pub instance_id: Option<String>,
    pub wal: WalConfig,
    /// Uncompressed size of a block within a chunk.
    pub chunk_block_size: usize,
    /// Compressed size at which a chunk is cut.
    pub chunk_target_size: usize,
    /// A chunk with no new entry for this long is flushed.
    pub chunk_idle_period: ConfigDuration,
    /// A chunk older than this is flushed.
    pub max_chunk_age: ConfigDuration,
    /// Block compression: zstd, snappy or none.
    pub chunk_encoding: ChunkEncoding,
    /// How often chunks are checked for flushing.
    pub flush_check_period: ConfigDuration,
    /// Where flushed chunks and their index go (the `storage` section).
    #[serde(skip)]
    pub storage: StorageConfig,
    /// Per-tenant limits (Loki's `limits_config`).
    #[serde(skip)]
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ring: RingConfig::default(),
            instance_id: None,
            wal: WalConfig::default(),
            chunk_block_size: 256 * 1024,
            chunk_target_size: 1536 * 1024,
            chunk_idle_period: ConfigDuration::from_secs(30 * 60),
            max_chunk_age: ConfigDuration::from_secs(2 * 3600),
            chunk_encoding: ChunkEncoding::Zstd,
            flush_check_period: ConfigDuration::from_secs(30),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkEncoding {
    Zstd,
    Snappy,
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("ring: {0}")]
    Ring(#[from] lucia_common::ring::RingError),
}

/// Starts the ingester on the process's shared listener.
pub async fn start(_config: Config, ctx: RoleContext) -> Result<Role, Error> {
    let ready = ctx.readiness.register("ingester");
    ready.set(true);
    Ok(Role::new("ingester", axum::Router::new(), async {}))
}

/// Runs the ingester on its own listener until `shutdown` is cancelled.
pub async fn run(config: Config, process: ProcessConfig, shutdown: Shutdown) -> Result<(), Error> {
    lucia_common::server::run_role(process, shutdown, |ctx| start(config, ctx)).await
}
