//! Write-ahead log. (Stub.)

use lucia_common::duration::ConfigDuration;
use serde::Deserialize;

/// The ingester's `wal` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    pub enabled: bool,
    /// Defaults to `<data.dir>/wal`.
    pub dir: Option<std::path::PathBuf>,
    /// When a write is made durable before it is acknowledged.
    pub fsync: FsyncPolicy,
    /// How often a checkpoint of in-memory data is written so old segments
    /// can be deleted.
    pub checkpoint_duration: ConfigDuration,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            fsync: FsyncPolicy::Always,
            checkpoint_duration: ConfigDuration::from_secs(5 * 60),
        }
    }
}

/// `always`: every push is fsynced (grouped with concurrent pushes) before it
/// is acknowledged: survives power loss. `never`: written to the OS before
/// acknowledging: survives a process crash, not a machine crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Always,
    Never,
}
