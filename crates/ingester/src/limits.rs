//! Per-tenant limits, named and defaulted as Loki's `limits_config`.

use lucia_common::duration::ConfigDuration;
use serde::Deserialize;

/// What to do with a line longer than `max_line_size`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Per-tenant ingestion rate in MB/s (Loki: 4).
    pub ingestion_rate_mb: f64,
    /// Per-tenant burst in MB (Loki: 6).
    pub ingestion_burst_size_mb: f64,
    /// Longest accepted line in bytes (Loki: 256KB); 0 disables the check.
    pub max_line_size: u64,
    /// Truncate longer lines instead of rejecting them.
    pub max_line_size_truncate: bool,
    pub max_label_names_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    /// Active streams per tenant (Loki's `max_global_streams_per_user`).
    pub max_global_streams_per_user: usize,
    pub reject_old_samples: bool,
    pub reject_old_samples_max_age: ConfigDuration,
    /// How far in the future a timestamp may be.
    pub creation_grace_period: ConfigDuration,
    /// Labels consulted, in order, to fill `service_name`.
    pub discover_service_name: Vec<String>,
    /// Add `detected_level` from the line or its metadata.
    pub discover_log_levels: bool,
    /// How far behind a stream's newest entry an entry may arrive.
    pub out_of_order_time_window: ConfigDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            ingestion_rate_mb: 4.0,
            ingestion_burst_size_mb: 6.0,
            max_line_size: 256 * 1024,
            max_line_size_truncate: false,
            max_label_names_per_series: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_global_streams_per_user: 5000,
            reject_old_samples: true,
            reject_old_samples_max_age: ConfigDuration::from_secs(7 * 24 * 3600),
            creation_grace_period: ConfigDuration::from_secs(10 * 60),
            discover_service_name: [
                "service",
                "app",
                "application",
                "name",
                "app_kubernetes_io_name",
                "container",
                "container_name",
                "component",
                "workload",
                "job",
            ]
            .map(String::from)
            .to_vec(),
            discover_log_levels: true,
            out_of_order_time_window: ConfigDuration::from_secs(3600),
        }
    }
}
