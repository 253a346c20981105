//! The agent's metrics, under Promtail's names so that existing dashboards
//! keep working.

use lucia_common::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

type Labels = Vec<(String, String)>;

#[derive(Clone)]
pub struct AgentMetrics {
    /// Series of the `metrics` pipeline stages.
    pub custom: crate::stage_metrics::CustomMetrics,
    pub read_bytes: Family<Labels, Counter>,
    pub read_lines: Family<Labels, Counter>,
    pub files_active: Gauge,
    pub sent_entries: Family<Labels, Counter>,
    pub sent_bytes: Family<Labels, Counter>,
    pub dropped_entries: Family<Labels, Counter>,
    pub dropped_bytes: Family<Labels, Counter>,
    pub batch_retries: Family<Labels, Counter>,
    pub queued_entries: Gauge,
    /// Lines dropped by `limits_config`'s read rate (Promtail's
    /// `logentry_dropped_lines_total{reason="global_rate_limiter_drop"}`).
    pub dropped_lines: Family<Labels, Counter>,
    /// Failed requests of `consul_sd_configs` watches.
    pub consul_rpc_failures: Counter,
}

impl AgentMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            custom: crate::stage_metrics::CustomMetrics::new(metrics.clone()),
            read_bytes: Family::default(),
            read_lines: Family::default(),
            files_active: Gauge::default(),
            sent_entries: Family::default(),
            sent_bytes: Family::default(),
            dropped_entries: Family::default(),
            dropped_bytes: Family::default(),
            batch_retries: Family::default(),
            queued_entries: Gauge::default(),
            dropped_lines: Family::default(),
            consul_rpc_failures: Counter::default(),
        };
        metrics.register(
            "promtail_read_bytes",
            "Number of bytes read from files.",
            m.read_bytes.clone(),
        );
        metrics.register(
            "promtail_read_lines",
            "Number of lines read from files.",
            m.read_lines.clone(),
        );
        metrics.register(
            "promtail_files_active_total",
            "Number of files being tailed.",
            m.files_active.clone(),
        );
        metrics.register(
            "promtail_sent_entries",
            "Number of log entries sent to the ingester.",
            m.sent_entries.clone(),
        );
        metrics.register(
            "promtail_sent_bytes",
            "Number of bytes sent.",
            m.sent_bytes.clone(),
        );
        metrics.register(
            "promtail_dropped_entries",
            "Number of log entries dropped because they failed to be sent to the ingester after all retries, or were rejected.",
            m.dropped_entries.clone(),
        );
        metrics.register(
            "promtail_dropped_bytes",
            "Number of bytes dropped because they failed to be sent to the ingester after all retries, or were rejected.",
            m.dropped_bytes.clone(),
        );
        metrics.register(
            "promtail_batch_retries",
            "Number of times batches have had to be retried.",
            m.batch_retries.clone(),
        );
        metrics.register(
            "lucia_agent_queued_entries",
            "Entries read and waiting to be acknowledged by the clients.",
            m.queued_entries.clone(),
        );
        metrics.register(
            "logentry_dropped_lines",
            "A count of all log lines dropped as a result of a pipeline stage or the read rate limit.",
            m.dropped_lines.clone(),
        );
        metrics.register(
            "prometheus_sd_consul_rpc_failures",
            "The number of Consul RPC call failures.",
            m.consul_rpc_failures.clone(),
        );
        m
    }

    /// A line dropped because it was over `limits_config.readline_rate`.
    pub fn rate_limited_line(&self) {
        self.dropped_lines
            .get_or_create(&vec![(
                "reason".to_string(),
                "global_rate_limiter_drop".to_string(),
            )])
            .inc();
    }

    pub fn read_bytes(&self, path: &str, n: u64) {
        self.read_bytes
            .get_or_create(&vec![("path".to_string(), path.to_string())])
            .inc_by(n);
    }

    pub fn read_lines(&self, path: &str, n: u64) {
        if n > 0 {
            self.read_lines
                .get_or_create(&vec![("path".to_string(), path.to_string())])
                .inc_by(n);
        }
    }

    pub fn dropped(&self, host: &str, reason: &str, entries: u64, bytes: u64) {
        let labels = vec![
            ("host".to_string(), host.to_string()),
            ("reason".to_string(), reason.to_string()),
        ];
        self.dropped_entries.get_or_create(&labels).inc_by(entries);
        self.dropped_bytes.get_or_create(&labels).inc_by(bytes);
    }
}
