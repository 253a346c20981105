//! The process's own metrics, rendered in the OpenMetrics text format on
//! `/metrics`, with the standard `process_*` series read from `/proc`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A shared metrics registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    start_time: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let start_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        Self {
            registry: Arc::new(Mutex::new(Registry::default())),
            start_time,
        }
    }

    /// Registers a metric under `name` (without the `_total` suffix for
    /// counters, which the encoder adds).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.lock().register(name, help, metric);
    }

    /// The text exposition of every registered metric plus `process_*`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock())
        {
            tracing::error!(%err, "cannot encode metrics");
        }
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            out.truncate(stripped.len());
        }
        self.encode_process(&mut out);
        out.push_str("# EOF\n");
        out
    }

    pub fn render(&self) -> Response {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], self.encode()).into_response()
    }

    fn encode_process(&self, out: &mut String) {
        let stat = ProcessStat::read();
        let mut gauge = |name: &str, help: &str, value: f64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            self.start_time,
        );
        if let Some(stat) = stat {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stat.resident_bytes,
            );
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.virtual_bytes,
            );
            gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                stat.open_fds,
            );
            gauge(
                "process_threads",
                "Number of OS threads in the process.",
                stat.threads,
            );
            let _ = write!(
                out,
                "# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n\
                 # TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total {}\n",
                stat.cpu_seconds
            );
        }
    }
}

struct ProcessStat {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    threads: f64,
    open_fds: f64,
}

impl ProcessStat {
    /// Reads `/proc/self/stat`; `None` where there is no procfs.
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        // Linux reports CPU time in clock ticks (100 per second on every
        // mainstream platform) and RSS in pages (4 KiB here).
        let ticks = 100.0;
        let page = 4096.0;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|dir| dir.count() as f64)
            .unwrap_or_default();
        Some(Self {
            cpu_seconds: (field(11)? + field(12)?) / ticks,
            threads: field(17)?,
            virtual_bytes: field(20)?,
            resident_bytes: field(21)? * page,
            open_fds,
        })
    }
}
