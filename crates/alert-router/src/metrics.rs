//! The router's metrics, named as Alertmanager names them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntegrationLabel {
    pub integration: String,
}

#[derive(Clone, Default)]
pub struct RouterMetrics {
    pub alerts: Family<StateLabel, Gauge>,
    pub alerts_received: Family<StatusLabel, Counter>,
    pub alerts_invalid: Counter,
    pub notifications: Family<IntegrationLabel, Counter>,
    pub notifications_failed: Family<IntegrationLabel, Counter>,
    pub notification_requests: Family<IntegrationLabel, Counter>,
    pub notification_requests_failed: Family<IntegrationLabel, Counter>,
    pub silences: Family<StateLabel, Gauge>,
    pub nflog_snapshot_size: Gauge,
    pub aggregation_groups: Gauge,
    pub config_last_reload_successful: Gauge,
    pub config_last_reload_success_timestamp: Gauge,
}

impl RouterMetrics {
    pub fn register(&self, m: &lucia_common::metrics::Metrics) {
        m.register(
            "alertmanager_alerts",
            "How many alerts by state.",
            self.alerts.clone(),
        );
        m.register(
            "alertmanager_alerts_received",
            "The total number of received alerts.",
            self.alerts_received.clone(),
        );
        m.register(
            "alertmanager_alerts_invalid",
            "The total number of received alerts that were invalid.",
            self.alerts_invalid.clone(),
        );
        m.register(
            "alertmanager_notifications",
            "The total number of attempted notifications.",
            self.notifications.clone(),
        );
        m.register(
            "alertmanager_notifications_failed",
            "The total number of failed notifications.",
            self.notifications_failed.clone(),
        );
        m.register(
            "alertmanager_notification_requests",
            "The total number of attempted notification requests.",
            self.notification_requests.clone(),
        );
        m.register(
            "alertmanager_notification_requests_failed",
            "The total number of failed notification requests.",
            self.notification_requests_failed.clone(),
        );
        m.register(
            "alertmanager_silences",
            "How many silences by state.",
            self.silences.clone(),
        );
        m.register(
            "alertmanager_dispatcher_aggregation_groups",
            "Number of active aggregation groups",
            self.aggregation_groups.clone(),
        );
        m.register(
            "alertmanager_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful.",
            self.config_last_reload_successful.clone(),
        );
        m.register(
            "alertmanager_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload.",
            self.config_last_reload_success_timestamp.clone(),
        );
    }

    pub fn integration(name: &str) -> IntegrationLabel {
        IntegrationLabel {
            integration: name.to_string(),
        }
    }
}
