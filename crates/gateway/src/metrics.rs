//! The gateway's request metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

type Labels = Vec<(String, String)>;

#[derive(Clone)]
pub struct GatewayMetrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    backend_errors: Family<Labels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl GatewayMetrics {
    pub fn new(registry: &lucia_common::metrics::Metrics) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            backend_errors: Family::default(),
        };
        registry.register(
            "lucia_gateway_requests",
            "Requests answered by the gateway, by route, status code and tenant.",
            metrics.requests.clone(),
        );
        registry.register(
            "lucia_gateway_request_duration_seconds",
            "Time from a request's arrival to its response headers, by route.",
            metrics.duration.clone(),
        );
        registry.register(
            "lucia_gateway_backend_errors",
            "Failed attempts to reach a backend (connection errors, 502 and 503), by role.",
            metrics.backend_errors.clone(),
        );
        metrics
    }

    pub fn observe(&self, route: &str, status: u16, tenant: &str, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("route".to_string(), route.to_string()),
                ("status".to_string(), status.to_string()),
                ("tenant".to_string(), tenant.to_string()),
            ])
            .inc();
        self.duration
            .get_or_create(&vec![("route".to_string(), route.to_string())])
            .observe(seconds);
    }

    pub fn backend_error(&self, backend: &str) {
        self.backend_errors
            .get_or_create(&vec![("backend".to_string(), backend.to_string())])
            .inc();
    }
}
