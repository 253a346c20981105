//! The scraper's own metrics, under Prometheus' names where it has them.

use lucia_common::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

type Labels = Vec<(String, String)>;

#[derive(Clone, Default)]
pub struct ScrapeMetrics {
    pub pool_targets: Family<Labels, Gauge>,
    pub discovered_targets: Family<Labels, Gauge>,
    pub exceeded_sample_limit: Counter,
    pub exceeded_label_limits: Counter,
    pub exceeded_target_limit: Counter,
    pub exceeded_body_size_limit: Counter,
    pub duplicate_timestamps: Counter,
    pub pool_reloads: Counter,
    pub pool_reloads_failed: Counter,
    pub scrapes: Family<Labels, Counter>,
    pub append_failures: Counter,
    pub samples_rejected: Counter,
    pub consul_rpc_failures: Counter,
    pub file_read_errors: Counter,
}

impl ScrapeMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "prometheus_target_scrape_pool_targets",
            "Current number of targets in this scrape pool.",
            m.pool_targets.clone(),
        );
        metrics.register(
            "prometheus_sd_discovered_targets",
            "Current number of discovered targets.",
            m.discovered_targets.clone(),
        );
        metrics.register(
            "prometheus_target_scrapes_exceeded_sample_limit",
            "Total number of scrapes that hit the sample limit and were rejected.",
            m.exceeded_sample_limit.clone(),
        );
        metrics.register(
            "prometheus_target_scrape_pool_exceeded_label_limits",
            "Total number of times scrape pools hit the label limits, during sync or config reload.",
            m.exceeded_label_limits.clone(),
        );
        metrics.register(
            "prometheus_target_scrape_pool_exceeded_target_limit",
            "Total number of times scrape pools hit the target limit, during sync or config reload.",
            m.exceeded_target_limit.clone(),
        );
        metrics.register(
            "prometheus_target_scrapes_exceeded_body_size_limit",
            "Total number of scrapes that hit the body size limit.",
            m.exceeded_body_size_limit.clone(),
        );
        metrics.register(
            "prometheus_target_scrapes_sample_duplicate_timestamp",
            "Total number of samples rejected due to duplicate timestamps but different values.",
            m.duplicate_timestamps.clone(),
        );
        metrics.register(
            "prometheus_target_scrape_pool_reloads",
            "Total number of scrape pool reloads.",
            m.pool_reloads.clone(),
        );
        metrics.register(
            "prometheus_target_scrape_pool_reloads_failed",
            "Total number of failed scrape pool reloads.",
            m.pool_reloads_failed.clone(),
        );
        metrics.register(
            "lucia_scrapes",
            "Scrapes by job and result (success or failure).",
            m.scrapes.clone(),
        );
        metrics.register(
            "lucia_scrape_append_failures",
            "Scrapes whose samples storage refused as a whole.",
            m.append_failures.clone(),
        );
        metrics.register(
            "lucia_scrape_samples_rejected",
            "Scraped samples storage refused (out of order, too old, duplicate).",
            m.samples_rejected.clone(),
        );
        metrics.register(
            "prometheus_sd_consul_rpc_failures",
            "The number of Consul RPC call failures.",
            m.consul_rpc_failures.clone(),
        );
        metrics.register(
            "prometheus_sd_file_read_errors",
            "The number of File-SD read errors.",
            m.file_read_errors.clone(),
        );
        m
    }

    pub fn scrape_result(&self, job: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.scrapes
            .get_or_create(&vec![
                ("scrape_job".to_string(), job.to_string()),
                ("result".to_string(), result.to_string()),
            ])
            .inc();
    }
}
