#!/usr/bin/env python3
"""Writes the provisioned dashboards (provisioning/dashboards/*.json).

The JSON files are what Grafana loads; this script is their source, so that
the queries stay readable and consistent. Edit here and re-run:

    python3 deploy/grafana/dashboards.py

scripts/check-dashboards.py runs every query of the JSON against a Lucia.
"""
import json
import pathlib

OUT = pathlib.Path(__file__).parent / "provisioning" / "dashboards"
PROM = {"type": "prometheus", "uid": "lucia-prometheus"}
LOKI = {"type": "loki", "uid": "lucia-loki"}


class Dashboard:
    def __init__(self, uid, title, tags, variables, description=""):
        self.uid, self.title, self.tags = uid, title, tags
        self.variables, self.description = variables, description
        self.panels, self.y, self.x, self.row_h = [], 0, 0, 0
        self.next_id = 1

    def row(self, title):
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(),
                            "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def panel(self, kind, title, targets, w=12, h=8, unit=None, ds=PROM,
              description="", options=None, field_config=None):
        if self.x + w > 24:
            self._newline()
        refs = "ABCDEFGH"
        tgts = []
        for i, t in enumerate(targets):
            expr, legend = (t, "") if isinstance(t, str) else t
            target = {"refId": refs[i], "datasource": ds, "expr": expr,
                      "legendFormat": legend or "__auto"}
            if ds == PROM:
                target["range"] = True
                if kind == "table":
                    target.update({"instant": True, "range": False, "format": "table"})
            else:
                target["queryType"] = "range"
            tgts.append(target)
        fc = {"defaults": {}, "overrides": []}
        if unit:
            fc["defaults"]["unit"] = unit
        if field_config:
            fc["defaults"].update(field_config)
        p = {"id": self._id(), "type": kind, "title": title, "datasource": ds,
             "description": description, "targets": tgts, "fieldConfig": fc,
             "options": options or {},
             "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}}
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)

    def json(self):
        return {
            "uid": self.uid, "title": self.title, "tags": self.tags,
            "description": self.description, "editable": True,
            "schemaVersion": 39, "version": 1, "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"}, "timezone": "",
            "graphTooltip": 1, "annotations": {"list": []}, "links": [],
            "templating": {"list": self.variables}, "panels": self.panels,
        }


def query_var(name, label, ds, query, multi=False, include_all=False, all_value=None):
    v = {"name": name, "label": label, "type": "query", "datasource": ds,
         "query": query, "definition": query, "refresh": 2, "sort": 1,
         "multi": multi, "includeAll": include_all, "current": {},
         "options": [], "hide": 0}
    if all_value is not None:
        v["allValue"] = all_value
    return v


def custom(name, label, options, all_value):
    # detected_level is structured metadata, not a stream label: Loki's
    # label values API does not list it, so the levels are Loki's fixed set.
    return {"name": name, "label": label, "type": "custom", "query": ",".join(options),
            "multi": True, "includeAll": True, "allValue": all_value,
            "current": {"text": "All", "value": "$__all"},
            "options": [], "hide": 0}


def textbox(name, label):
    return {"name": name, "label": label, "type": "textbox", "query": "",
            "current": {"text": "", "value": ""}, "hide": 0}


# --- Service overview ------------------------------------------------------
# One Dante service (its Consul service name, the `service` label tsdb's
# consul_sd relabelling sets and the agent's `service` log label).
SEL = 'service="$service", instance=~"$instance"'
REQ = 'http_requests_total|http_server_requests_total|lucia_gateway_requests_total'
DUR = ('http_request_duration_seconds_bucket|http_server_request_duration_seconds_bucket|'
       'lucia_gateway_request_duration_seconds_bucket')


def svc_overview():
    d = Dashboard(
        "lucia-service-overview", "Service overview", ["lucia", "dante"],
        [query_var("service", "Service", PROM, "label_values(up, service)"),
         query_var("instance", "Instance", PROM,
                   'label_values(up{service="$service"}, instance)',
                   multi=True, include_all=True, all_value=".+")],
        "One service: requests, errors, latency (http_requests_total and "
        "http_request_duration_seconds, with a code or status label), CPU, "
        "memory, restarts and logs.")
    d.row("Health")
    d.panel("stat", "Instances up", [f"sum(up{{{SEL}}})"], w=6, h=4)
    d.panel("stat", "Restarts in range",
            [f"sum(changes(process_start_time_seconds{{{SEL}}}[$__range]))"], w=6, h=4)
    d.panel("stat", "Scrape duration (max)",
            [f"max(scrape_duration_seconds{{{SEL}}})"], w=6, h=4, unit="s")
    d.panel("stat", "Log lines in range",
            ['sum(count_over_time({service_name="$service"}[$__range]))'], w=6, h=4, ds=LOKI)
    d.row("Requests")
    d.panel("timeseries", "Request rate",
            [(f'sum by (instance) (rate({{__name__=~"{REQ}", {SEL}}}[$__rate_interval]))',
              "{{instance}}")], w=8, unit="reqps")
    d.panel("timeseries", "Errors (5xx ratio)",
            [(f'(sum(rate({{__name__=~"{REQ}", {SEL}, code=~"5.."}}[$__rate_interval]))'
              f' or sum(rate({{__name__=~"{REQ}", {SEL}, status=~"5.."}}[$__rate_interval]))'
              f' or vector(0))'
              f' / sum(rate({{__name__=~"{REQ}", {SEL}}}[$__rate_interval]))', "5xx")],
            w=8, unit="percentunit")
    d.panel("timeseries", "Latency",
            [(f'histogram_quantile({q}, sum by (le) (rate({{__name__=~"{DUR}", {SEL}}}[$__rate_interval])))',
              f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)], w=8, unit="s")
    d.row("Resources")
    d.panel("timeseries", "CPU",
            [(f"sum by (instance) (rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval]))",
              "{{instance}}")], w=8, unit="percentunit")
    d.panel("timeseries", "Memory (resident)",
            [(f"sum by (instance) (process_resident_memory_bytes{{{SEL}}})", "{{instance}}")],
            w=8, unit="bytes")
    d.panel("timeseries", "Restarts",
            [(f"sum by (instance) (changes(process_start_time_seconds{{{SEL}}}[$__rate_interval]))",
              "{{instance}}")], w=8)
    d.row("Logs")
    d.panel("timeseries", "Log lines by level",
            [('sum by (detected_level) (count_over_time({service_name="$service"}[$__interval]))',
              "{{detected_level}}")], w=24, h=6, ds=LOKI,
            field_config={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}})
    d.panel("logs", "Logs", ['{service_name="$service"}'], w=24, h=12, ds=LOKI,
            options={"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending"})
    return d


# --- Lucia internals ---------------------------------------------------------
def internals():
    d = Dashboard("lucia-internals", "Lucia internals", ["lucia"], [],
                  "Lucia's own metrics: ingestion, WAL and flushes, ring members, "
                  "query latency, scraping and alert notifications.")
    d.row("Ingest")
    d.panel("timeseries", "Log lines received",
            [("sum(rate(lucia_distributor_lines_received_total[$__rate_interval]))", "lines/s")],
            w=8, unit="short")
    d.panel("timeseries", "Log bytes received",
            [("sum(rate(lucia_distributor_bytes_received_total[$__rate_interval]))", "bytes/s")],
            w=8, unit="Bps")
    d.panel("timeseries", "Metric samples appended",
            [("sum(rate(prometheus_tsdb_head_samples_appended_total[$__rate_interval]))", "samples/s")],
            w=8, unit="short")
    d.panel("timeseries", "Discarded log lines and samples",
            [("sum by (reason) (rate(lucia_discarded_samples_total[$__rate_interval])) or vector(0)",
              "{{reason}}"),
             ("sum(rate(lucia_tsdb_samples_rejected_total[$__rate_interval])) or vector(0)",
              "tsdb rejected")], w=12)
    d.panel("timeseries", "Agent entries sent",
            [("sum(rate(promtail_sent_entries_total[$__rate_interval])) or vector(0)", "sent"),
             ("sum(rate(promtail_dropped_entries_total[$__rate_interval])) or vector(0)", "dropped")],
            w=12)
    d.row("WAL and flush")
    d.panel("timeseries", "Ingester WAL writes",
            [("sum by (instance) (rate(lucia_ingester_wal_bytes_total[$__rate_interval]))",
              "{{instance}}")], w=8, unit="Bps")
    d.panel("timeseries", "WAL fsyncs",
            [("sum by (instance) (rate(lucia_ingester_wal_fsyncs_total[$__rate_interval]))",
              "ingester {{instance}}"),
             ("sum by (instance) (rate(prometheus_tsdb_wal_fsyncs_total[$__rate_interval]))",
              "tsdb {{instance}}")], w=8, unit="ops")
    d.panel("timeseries", "Chunks flushed",
            [("sum by (instance) (rate(lucia_ingester_chunks_flushed_total[$__rate_interval])) or vector(0)",
              "{{instance}}")], w=8, unit="ops")
    d.panel("timeseries", "Streams in memory",
            [("sum by (instance) (lucia_ingester_memory_streams)", "{{instance}}")], w=8)
    d.panel("timeseries", "tsdb head series",
            [("sum by (instance) (prometheus_tsdb_head_series)", "{{instance}}")], w=8)
    d.panel("timeseries", "tsdb WAL writes",
            [("sum by (instance) (rate(prometheus_tsdb_wal_bytes_total[$__rate_interval]))",
              "{{instance}}")], w=8, unit="Bps")
    d.row("Ring and members")
    d.panel("stat", "Ingesters in the ring", ["count(lucia_ingester_memory_streams)"], w=6, h=6)
    d.panel("timeseries", "Healthy processes by role",
            [("sum by (service) (up{service=~\"lucia-.+\"}) or sum by (job) (up)", "{{service}}{{job}}")],
            w=18, h=6)
    d.row("Queries")
    d.panel("timeseries", "Query latency p99 (gateway)",
            [("histogram_quantile(0.99, sum by (le, route) (rate(lucia_gateway_request_duration_seconds_bucket[$__rate_interval])))",
              "{{route}}")], w=12, unit="s")
    d.panel("timeseries", "Requests by route and status (gateway)",
            [("sum by (route, status) (rate(lucia_gateway_requests_total[$__rate_interval]))",
              "{{route}} {{status}}")], w=12, unit="reqps")
    d.row("Scrape health")
    d.panel("timeseries", "Targets up",
            [("min by (job, instance) (up)", "{{job}} {{instance}}")], w=8)
    d.panel("timeseries", "Scrape duration",
            [("max by (job) (scrape_duration_seconds)", "{{job}}")], w=8, unit="s")
    d.panel("timeseries", "Samples scraped",
            [("sum by (job) (scrape_samples_scraped)", "{{job}}")], w=8)
    d.row("Alerts")
    d.panel("timeseries", "Alerts in the alert-router",
            [("sum by (state) (alertmanager_alerts)", "{{state}}")], w=8)
    d.panel("timeseries", "Alerts sent by the ruler",
            [("sum(rate(prometheus_notifications_sent_total[$__rate_interval]))", "sent"),
             ("sum(rate(prometheus_notifications_errors_total[$__rate_interval])) or vector(0)", "errors")],
            w=8, unit="ops")
    d.panel("timeseries", "Notifications",
            [("sum by (integration) (rate(alertmanager_notifications_total[$__rate_interval])) or vector(0)",
              "{{integration}}"),
             ("sum by (integration) (rate(alertmanager_notifications_failed_total[$__rate_interval])) or vector(0)",
              "failed {{integration}}"),
             ("sum by (status) (rate(alertmanager_alerts_received_total[$__rate_interval]))",
              "received {{status}}")], w=8, unit="ops")
    d.panel("table", "Firing alerts", ['ALERTS{alertstate="firing"}'], w=24, h=6)
    return d


# --- Logs --------------------------------------------------------------------
def logs():
    d = Dashboard(
        "lucia-logs", "Logs", ["lucia", "logs"],
        [query_var("service", "Service", LOKI, "label_values(service_name)",
                   multi=True, include_all=True, all_value=".+"),
         custom("level", "Level", ["critical", "error", "warn", "info", "debug", "trace", "unknown"],
                all_value=".*"),
         textbox("search", "Line contains (regex)")],
        "Every service's logs, by service and level, with a line filter.")
    sel = '{service_name=~"$service"} | detected_level=~"$level" |~ "$search"'
    d.panel("timeseries", "Log lines by service",
            [(f"sum by (service_name) (count_over_time({sel} [$__interval]))", "{{service_name}}")],
            w=12, ds=LOKI,
            field_config={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}})
    d.panel("timeseries", "Log lines by level",
            [(f"sum by (detected_level) (count_over_time({sel} [$__interval]))", "{{detected_level}}")],
            w=12, ds=LOKI,
            field_config={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}})
    d.panel("bargauge", "Bytes by service in range",
            [('topk(10, sum by (service_name) (bytes_over_time({service_name=~"$service"}[$__range])))',
              "{{service_name}}")], w=12, h=6, ds=LOKI, unit="bytes")
    d.panel("timeseries", "Errors by service",
            [('sum by (service_name) (count_over_time({service_name=~"$service"} | detected_level=~"error|critical|fatal" |~ "$search" [$__interval])) or vector(0)',
              "{{service_name}}")], w=12, h=6, ds=LOKI)
    d.panel("logs", "Logs", [sel], w=24, h=16, ds=LOKI,
            options={"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending",
                     "enableLogDetails": True})
    return d


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, d in (("service-overview", svc_overview()), ("lucia-internals", internals()),
                    ("logs", logs())):
        (OUT / f"{name}.json").write_text(json.dumps(d.json(), indent=2) + "\n")
        print(f"wrote {OUT / (name + '.json')}")
