"""Replays the requests Grafana's Loki datasource and the Logs Drilldown app
send, against `lucia all`, and checks the answers have the shapes those
clients parse.

Each test names where its request comes from (repository + path). The
parameters are the ones those files build; times are what they put there:
Grafana's backend (pkg/tsdb/loki) and `getTimeRangeParams` send Unix
nanoseconds, Logs Drilldown's `getResource` calls send RFC3339 strings
(`range.from.utc().toISOString()`).
"""
import json
import time
import urllib.parse
from datetime import datetime, timezone

import pytest
import requests

# The header Grafana's backend puts on data queries so that structured
# metadata and parsed labels come back apart from the stream labels
# (grafana/grafana pkg/tsdb/loki/api.go, makeDataRequest, with the
# lokiStructuredMetadata feature), and the tag it adds for Explore.
CATEGORIZE = {"X-Loki-Response-Encoding-Flags": "categorize-labels"}
DRILLDOWN_TAG = {"X-Query-Tags": "Source=grafana-lokiexplore-app"}

NOW = time.time_ns()
SEC = 1_000_000_000
START = NOW - 3600 * SEC  # the last hour, Grafana's default range
END = NOW + 5 * SEC


def iso(ns):
    """What `dateTime.utc().toISOString()` prints."""
    dt = datetime.fromtimestamp(ns / SEC, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


LEVELS = ["info", "info", "warn", "error", "info", "debug"]


def checkout_values():
    """logfmt lines with structured metadata."""
    out = []
    for i in range(30):
        level = LEVELS[i % len(LEVELS)]
        line = (f'level={level} msg="order placed" order_id={1000 + i} '
                f'duration={10 + i}ms status={200 if level != "error" else 500}')
        out.append([str(NOW - 120 * SEC + i * SEC), line,
                    {"trace_id": f"trace-{i % 5}", "pod": f"checkout-{i % 2}"}])
    return out


def payments_values():
    """JSON lines, nested objects, floats, structured metadata."""
    out = []
    for i in range(20):
        level = "error" if i % 4 == 0 else "info"
        body = {"level": level, "msg": "card charged" if level == "info" else "card declined",
                "amount": 10.5 + i, "user": {"id": f"u{i % 3}"}, "latency": f"{100 + i}ms"}
        out.append([str(NOW - 100 * SEC + i * SEC), json.dumps(body),
                    {"trace_id": f"trace-{i % 5}"}])
    return out


def nginx_values():
    """Plain lines, no level."""
    return [[str(NOW - 90 * SEC + i * SEC),
             f'10.0.0.{i} - - "GET /api/items/{i} HTTP/1.1" 200 {512 + i}']
            for i in range(10)]


@pytest.fixture(scope="module")
def pushed(lucia):
    streams = [
        {"stream": {"service_name": "checkout", "env": "prod", "namespace": "shop"},
         "values": checkout_values()},
        {"stream": {"app": "payments", "env": "prod", "namespace": "shop"},
         "values": payments_values()},
        {"stream": {"job": "nginx", "env": "dev", "port": "8080"}, "values": nginx_values()},
    ]
    resp = requests.post(lucia.url + "/loki/api/v1/push", json={"streams": streams}, timeout=10)
    assert resp.status_code == 204, resp.text
    return lucia


def get(lucia, path, params=None, headers=None, status=200):
    resp = requests.get(lucia.url + path, params=params, headers=headers or {}, timeout=10)
    assert resp.status_code == status, f"{path}: {resp.status_code} {resp.text}"
    return resp.json() if status == 200 else resp


def success_data(body):
    assert body["status"] == "success", body
    return body["data"]


def assert_stream_values(values, categorized):
    for v in values:
        assert isinstance(v[0], str) and v[0].isdigit() and len(v[0]) == 19, v
        assert isinstance(v[1], str)
        if categorized:
            # pkg/util/converter/prom.go readCategorizedStream reads exactly
            # [ts, line, {...}]: the third element is always there.
            assert len(v) == 3, v
            assert isinstance(v[2], dict)
            assert set(v[2]) <= {"structuredMetadata", "parsed"}, v
            for part in v[2].values():
                assert all(isinstance(x, str) for x in part.values())
        else:
            assert len(v) == 2, v


def assert_matrix(result):
    for series in result:
        assert isinstance(series["metric"], dict)
        for ts, value in series["values"]:
            assert isinstance(ts, (int, float)) and not isinstance(ts, bool)
            assert isinstance(value, str)
            float(value)


def assert_data_order(resp_text, keys):
    """Loki writes `encodingFlags` before `result`, and `resultType` before
    `result`: older Grafana versions read the result as they stream through
    the document and need both first."""
    data_at = resp_text.index('"data"')
    positions = [resp_text.index(f'"{k}"', data_at) for k in keys]
    assert positions == sorted(positions), (keys, positions)


# --- Grafana's Loki datasource ---------------------------------------------


def test_save_and_test(pushed):
    # grafana/grafana pkg/tsdb/loki/healthcheck.go: an instant query of
    # `vector(1)+vector(1)` built by makeDataRequest (pkg/tsdb/loki/api.go),
    # which always sets `direction` (empty here) and `time` in nanoseconds;
    # the check passes when the single sample's value is 2.
    params = {"direction": "", "query": "vector(1)+vector(1)", "time": str(NOW)}
    body = get(pushed, "/loki/api/v1/query", params)
    data = success_data(body)
    assert data["resultType"] == "vector"
    assert len(data["result"]) == 1
    ts, value = data["result"][0]["value"]
    assert isinstance(ts, (int, float)) and value == "2"
    assert data["result"][0]["metric"] == {}


def test_explore_log_query_categorized(pushed):
    # grafana/grafana pkg/tsdb/loki/api.go makeDataRequest, QueryTypeRange:
    # query, direction, limit (MaxLines), start/end in ns, step as "<ms>ms";
    # plus the categorize-labels header. Parsed by pkg/util/converter/prom.go
    # (readCategorizedStream).
    params = {
        "query": '{service_name="checkout"} | logfmt',
        "direction": "backward",
        "limit": "1000",
        "start": str(START),
        "end": str(END),
        "step": "2000ms",
    }
    resp = requests.get(pushed.url + "/loki/api/v1/query_range", params=params,
                        headers={**CATEGORIZE, "X-Query-Tags": "Source=grafana"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert_data_order(resp.text, ["encodingFlags", "resultType", "result"])
    data = success_data(resp.json())
    assert data["resultType"] == "streams"
    assert data["encodingFlags"] == ["categorize-labels"]
    total = 0
    for stream in data["result"]:
        # Only indexed labels on the stream.
        assert "trace_id" not in stream["stream"] and "level" not in stream["stream"]
        assert stream["stream"]["service_name"] == "checkout"
        assert_stream_values(stream["values"], categorized=True)
        for v in stream["values"]:
            assert v[2]["structuredMetadata"]["trace_id"].startswith("trace-")
            assert v[2]["parsed"]["order_id"].isdigit()
        total += len(stream["values"])
    assert total == 30
    # Newest first with direction=backward.
    ts = [int(v[0]) for s in data["result"] for v in s["values"]]
    assert ts == sorted(ts, reverse=True)
    # The stats Grafana's "Query inspector" and the Explore "data processed"
    # read (public/app/plugins/datasource/loki/... via frame meta custom.stats).
    summary = data["stats"]["summary"]
    for key in ("bytesProcessedPerSecond", "linesProcessedPerSecond",
                "totalBytesProcessed", "totalLinesProcessed", "execTime",
                "queueTime", "totalEntriesReturned"):
        assert isinstance(summary[key], (int, float)), key
    assert summary["totalEntriesReturned"] == 30
    for part in ("querier", "ingester"):
        assert "store" in data["stats"][part]
    assert "chunk" in data["stats"]["cache"]


def test_explore_log_query_without_metadata_still_has_third_element(pushed):
    # The same request over a stream with neither metadata nor a parser (the
    # distributor's `detected_level` dropped): Loki still sends `{}` as the
    # third element when categorize-labels is asked.
    params = {"query": '{job="nginx"} | drop detected_level', "direction": "forward", "limit": "5",
              "start": str(START), "end": str(END), "step": "2000ms"}
    data = success_data(get(pushed, "/loki/api/v1/query_range", params, CATEGORIZE))
    values = [v for s in data["result"] for v in s["values"]]
    assert len(values) == 5
    assert_stream_values(values, categorized=True)
    assert all(v[2] == {} for v in values)
    ts = [int(v[0]) for v in values]
    assert ts == sorted(ts)


def test_explore_log_query_plain(pushed):
    # Without the header (Grafana without the feature, logcli): two-element
    # values, metadata folded into the stream labels.
    params = {"query": '{app="payments"}', "direction": "backward", "limit": "1000",
              "start": str(START), "end": str(END), "step": "2000ms"}
    data = success_data(get(pushed, "/loki/api/v1/query_range", params))
    assert "encodingFlags" not in data
    values = [v for s in data["result"] for v in s["values"]]
    assert len(values) == 20
    assert_stream_values(values, categorized=False)
    assert all("trace_id" in s["stream"] for s in data["result"])


def test_explore_metric_query(pushed):
    # grafana/grafana pkg/tsdb/loki/parse_query.go interpolates `$__auto`
    # (and $__interval, $__range) before sending; step is "<ms>ms", and the
    # backend also sends limit (MaxLines) and direction on metric queries.
    # Query as the Explore query builder writes it.
    params = {
        "query": 'sum by (level) (count_over_time({service_name="checkout"} | logfmt [1m]))',
        "direction": "backward",
        "limit": "1000",
        "start": str(START),
        "end": str(END),
        "step": "15000ms",
    }
    resp = requests.get(pushed.url + "/loki/api/v1/query_range", params=params,
                        headers=CATEGORIZE, timeout=10)
    assert resp.status_code == 200, resp.text
    assert_data_order(resp.text, ["resultType", "result"])
    data = success_data(resp.json())
    assert data["resultType"] == "matrix"
    assert "encodingFlags" not in data
    assert_matrix(data["result"])
    levels = sorted(s["metric"]["level"] for s in data["result"])
    assert levels == ["debug", "error", "info", "warn"]
    assert "summary" in data["stats"]


def test_explore_logs_volume_histogram(pushed):
    # grafana/grafana public/app/plugins/datasource/loki/datasource.ts
    # getSupplementaryQuery (SupplementaryQueryType.LogsVolume): a range
    # metric query `sum by (level, detected_level) (count_over_time(<expr>
    # | drop __error__[$__auto]))`, tagged Source=logvolhist by
    # pkg/tsdb/loki/api.go getSupportingQueryHeaderValue.
    params = {
        "query": 'sum by (level, detected_level) (count_over_time({env="prod"} | drop __error__[1m]))',
        "direction": "backward",
        "limit": "1000",
        "start": str(START),
        "end": str(END),
        "step": "60000ms",
    }
    data = success_data(get(pushed, "/loki/api/v1/query_range", params,
                            {"X-Query-Tags": "Source=logvolhist"}))
    assert data["resultType"] == "matrix"
    assert_matrix(data["result"])
    total = sum(float(v) for s in data["result"] for _, v in s["values"])
    assert total >= 50  # 30 checkout + 20 payments, counted once per minute window
    assert all("detected_level" in s["metric"] for s in data["result"])


def test_label_browser(pushed):
    # grafana/grafana public/app/plugins/datasource/loki/LanguageProvider.ts
    # fetchLabelsByLabelsEndpoint: `labels` with start/end (ns); fetchLabelValues:
    # `label/<name>/values` with start/end and `query` (the stream selector).
    # Both go through metadataRequest, which reads `data`.
    labels = success_data(get(pushed, "/loki/api/v1/labels",
                              {"start": str(START), "end": str(END)}))
    assert {"service_name", "env", "namespace", "app", "job"} <= set(labels)
    assert labels == sorted(labels)
    values = success_data(get(pushed, "/loki/api/v1/label/service_name/values",
                              {"start": str(START), "end": str(END)}))
    assert {"checkout", "payments", "nginx"} <= set(values)
    values = success_data(get(pushed, "/loki/api/v1/label/service_name/values",
                              {"start": str(START), "end": str(END), "query": '{env="prod"}'}))
    assert values == ["checkout", "payments"]
    # With the labels endpoint and a stream selector (lokiLabelNamesQueryApi).
    labels = success_data(get(pushed, "/loki/api/v1/labels",
                              {"start": str(START), "end": str(END), "query": '{job="nginx"}'}))
    assert "app" not in labels and "job" in labels


def test_series(pushed):
    # LanguageProvider.ts fetchSeriesLabels / fetchSeries: `series` with
    # match[], start, end; processLabels reads a list of label objects.
    data = success_data(get(pushed, "/loki/api/v1/series",
                            {"match[]": '{namespace="shop"}', "start": str(START), "end": str(END)}))
    assert isinstance(data, list) and len(data) == 2
    assert all(isinstance(v, str) for s in data for v in s.values())
    assert {s["service_name"] for s in data} == {"checkout", "payments"}


def test_index_stats(pushed):
    # grafana/grafana public/app/plugins/datasource/loki/datasource.ts
    # getQueryStats: `index/stats` with query (each stream selector), start,
    # end; it sums streams, chunks, bytes, entries (no envelope).
    body = get(pushed, "/loki/api/v1/index/stats",
               {"query": '{service_name="checkout"}', "start": str(START), "end": str(END)})
    assert set(body) >= {"streams", "chunks", "bytes", "entries"}
    assert all(isinstance(body[k], int) for k in ("streams", "chunks", "bytes", "entries"))
    assert body["streams"] == 1 and body["entries"] == 30 and body["bytes"] > 0


def test_volume_range(pushed):
    # index/volume_range with the parameters Loki's HTTP API documents
    # (grafana/loki docs/sources/reference/loki-http-api.md): query, start,
    # end, step, aggregateBy (series|labels), targetLabels. The Grafana and
    # Drilldown versions read here call index/volume, not volume_range; the
    # shape is the one Drilldown's index/volume reader expects, over time.
    # Matrix of byte counts.
    params = {"query": '{env="prod"}', "start": str(START), "end": str(END), "step": "60",
              "targetLabels": "service_name", "aggregateBy": "series"}
    data = success_data(get(pushed, "/loki/api/v1/index/volume_range", params))
    assert data["resultType"] == "matrix"
    assert_matrix(data["result"])
    assert sorted(s["metric"]["service_name"] for s in data["result"]) == ["checkout", "payments"]
    assert all(set(s["metric"]) == {"service_name"} for s in data["result"])
    params = {"query": '{env="prod"}', "start": str(START), "end": str(END), "step": "60",
              "aggregateBy": "labels"}
    data = success_data(get(pushed, "/loki/api/v1/index/volume_range", params))
    # By label names: one series per name the selector matches on.
    assert [s["metric"] for s in data["result"]] == [{"env": ""}]


def test_volume_instant(pushed):
    # index/volume with aggregateBy=labels and targetLabels (Loki's HTTP API
    # reference): one series per label name, the value empty.
    params = {"query": '{namespace="shop"}', "start": str(START), "end": str(END),
              "aggregateBy": "labels", "targetLabels": "service_name,env"}
    data = success_data(get(pushed, "/loki/api/v1/index/volume", params))
    assert data["resultType"] == "vector"
    names = sorted(next(iter(r["metric"])) for r in data["result"])
    assert names == ["env", "service_name"]
    for r in data["result"]:
        assert isinstance(r["value"][0], (int, float)) and r["value"][1].isdigit()


# --- Logs Drilldown ----------------------------------------------------------


def test_drilldown_limits(pushed):
    # grafana/logs-drilldown src/services/datasource.ts getConfig:
    # `drilldown-limits` with no parameters; the LokiConfig it reads.
    body = get(pushed, "/loki/api/v1/drilldown-limits", headers=DRILLDOWN_TAG)
    limits = body["limits"]
    assert isinstance(limits["discover_service_name"], list)
    assert isinstance(limits["log_level_fields"], list)
    assert isinstance(limits["max_query_series"], int)
    assert isinstance(limits["volume_enabled"], bool)
    assert isinstance(body["pattern_ingester_enabled"], bool)
    assert isinstance(body["version"], str)


def test_drilldown_service_selection(pushed):
    # grafana/logs-drilldown src/services/datasource.ts getVolume:
    # `index/volume` with query `{service_name=~".+"}`, start/end as ISO
    # strings, limit 5000; it reads result[].metric[primaryLabel] and
    # Number(result[].value[1]).
    params = {"end": iso(END), "limit": "5000", "query": '{service_name=~".+"}', "start": iso(START)}
    data = success_data(get(pushed, "/loki/api/v1/index/volume", params, DRILLDOWN_TAG))
    assert data["resultType"] == "vector"
    by_service = {r["metric"]["service_name"]: int(r["value"][1]) for r in data["result"]}
    assert set(by_service) == {"checkout", "payments", "nginx"}
    assert all(v > 0 for v in by_service.values())
    # Sorted by volume, largest first.
    volumes = [int(r["value"][1]) for r in data["result"]]
    assert volumes == sorted(volumes, reverse=True)
    # The label name only (targetLabels from the selector): no other labels.
    assert all(set(r["metric"]) == {"service_name"} for r in data["result"])


def test_drilldown_labels(pushed):
    # grafana/logs-drilldown src/services/datasource.ts getLabels: `labels`
    # with start/end ISO.
    labels = success_data(get(pushed, "/loki/api/v1/labels",
                              {"end": iso(END), "start": iso(START)}, DRILLDOWN_TAG))
    assert "service_name" in labels


def test_drilldown_detected_labels(pushed):
    # grafana/logs-drilldown src/services/datasource.ts getDetectedLabels:
    # `detected_labels` with start/end ISO and query (the service selector);
    # it reads detectedLabels[].label and .cardinality. Grafana's
    # LanguageProvider.ts checkDetectedLabelsExists sends start/end only.
    params = {"end": iso(END), "query": '{service_name="checkout"}', "start": iso(START)}
    body = get(pushed, "/loki/api/v1/detected_labels", params, DRILLDOWN_TAG)
    detected = body["detectedLabels"]
    assert all(set(d) >= {"label", "cardinality"} for d in detected)
    assert all(isinstance(d["cardinality"], int) for d in detected)
    names = {d["label"] for d in detected}
    assert "env" in names
    assert not any(n.startswith("__") for n in names)
    body = get(pushed, "/loki/api/v1/detected_labels",
               {"start": str(START), "end": str(END)})
    names = {d["label"] for d in body["detectedLabels"]}
    # Labels whose values are all numbers or UUIDs are left out, as Loki does.
    assert "port" not in names and "job" in names and "namespace" in names


def test_drilldown_detected_fields(pushed):
    # grafana/logs-drilldown src/services/datasource.ts getDetectedFields
    # (start/end ISO, query) and src/services/TagKeysProviders.ts (limit 1000);
    # grafana/grafana LanguageProvider.ts fetchDetectedFields (start/end ns,
    # limit). Each field: label, type, cardinality, parsers (null for
    # structured metadata), jsonPath for JSON fields.
    params = {"end": iso(END), "query": '{service_name="payments"} | json | drop __error__, __error_details__',
              "start": iso(START), "limit": "1000"}
    body = get(pushed, "/loki/api/v1/detected_fields", params, DRILLDOWN_TAG)
    assert isinstance(body["limit"], int)
    fields = {f["label"]: f for f in body["fields"]}
    for f in fields.values():
        assert set(f) >= {"label", "type", "cardinality", "parsers"}
        assert f["type"] in {"string", "int", "float", "boolean", "duration", "bytes"}
        assert isinstance(f["cardinality"], int)
        assert f["parsers"] is None or isinstance(f["parsers"], list)
    assert fields["trace_id"]["parsers"] is None
    assert fields["amount"]["type"] == "float" and fields["amount"]["parsers"] == ["json"]
    assert fields["latency"]["type"] == "duration"
    assert fields["user_id"]["cardinality"] == 3
    assert fields["user_id"]["jsonPath"] == ["user", "id"]
    params = {"end": str(END), "query": '{service_name="checkout"}', "start": str(START),
              "limit": "1000"}
    fields = {f["label"]: f for f in get(pushed, "/loki/api/v1/detected_fields", params)["fields"]}
    assert fields["order_id"]["type"] == "int" and fields["order_id"]["parsers"] == ["logfmt"]
    assert fields["duration"]["type"] == "duration"
    assert fields["level"]["cardinality"] == 4


def test_drilldown_detected_field_values(pushed):
    # grafana/grafana LanguageProvider.ts fetchDetectedLabelValues (used by
    # grafana/logs-drilldown src/services/TagValuesProviders.ts):
    # `detected_field/<name>/values` with start/end ns, limit 1000, query.
    params = {"end": str(END), "limit": "1000", "query": '{service_name="checkout"}',
              "start": str(START)}
    body = get(pushed, "/loki/api/v1/detected_field/level/values", params)
    assert sorted(body["values"]) == ["debug", "error", "info", "warn"]
    body = get(pushed, "/loki/api/v1/detected_field/pod/values", params)
    assert sorted(body["values"]) == ["checkout-0", "checkout-1"]


def test_drilldown_detected_fields_follow_the_filters(pushed):
    # grafana/logs-drilldown src/services/variables.ts DETECTED_FIELD_VALUES_EXPR:
    # the selector, then the level filter (`| detected_level=~...`), line
    # filters, the parsers (`| json | logfmt | drop __error__, __error_details__`)
    # and field filters. Fields and values are those of the matching lines.
    query = ('{service_name="checkout"} | detected_level=~"error|warn" |= "order" '
             '| json | logfmt | drop __error__, __error_details__ | status="500"')
    params = {"end": iso(END), "query": query, "start": iso(START)}
    fields = {f["label"]: f for f in get(pushed, "/loki/api/v1/detected_fields", params)["fields"]}
    assert fields["level"]["cardinality"] == 1
    assert fields["order_id"]["cardinality"] == 5
    params = {"end": str(END), "limit": "1000", "query": query, "start": str(START)}
    body = get(pushed, "/loki/api/v1/detected_field/level/values", params)
    assert body["values"] == ["error"]


def test_drilldown_patterns(pushed):
    # grafana/logs-drilldown src/services/datasource.ts getPatterns:
    # `patterns` with start/end ISO, query, step (request.interval, e.g. "1m");
    # it reads data[].pattern, .level and .samples ([seconds, count]).
    params = {"end": iso(END), "query": '{service_name="checkout"}', "start": iso(START),
              "step": "1m"}
    data = success_data(get(pushed, "/loki/api/v1/patterns", params, DRILLDOWN_TAG))
    assert isinstance(data, list)
    for p in data:
        assert isinstance(p["pattern"], str)
        for ts, count in p["samples"]:
            assert isinstance(ts, int) and isinstance(count, int)


def test_drilldown_sharded_log_query(pushed):
    # grafana/logs-drilldown src/services/shardQuerySplitting.ts asks for the
    # `__stream_shard__` values; without sharding the answer is empty and the
    # app runs the query unsplit.
    values = success_data(get(pushed, "/loki/api/v1/label/__stream_shard__/values",
                              {"start": str(START), "end": str(END),
                               "query": '{service_name="checkout"}'}))
    assert values == []
    # The unsplit logs panel query (src/services/query.ts), through Grafana's
    # backend with categorize-labels.
    params = {"query": '{service_name="checkout"} | detected_level=~"error|warn" | logfmt',
              "direction": "backward", "limit": "1000", "start": str(START),
              "end": str(END), "step": "2000ms"}
    data = success_data(get(pushed, "/loki/api/v1/query_range", params, CATEGORIZE))
    values = [v for s in data["result"] for v in s["values"]]
    assert len(values) == 10
    assert_stream_values(values, categorized=True)


# --- Live tail and unknown paths --------------------------------------------


def test_v2alpha_tail_probe_is_404(pushed):
    # grafana/grafana pkg/tsdb/loki/streaming.go is400: a 400 on
    # /loki/api/v2alpha/tail means "v2 exists"; Lucia has none, so 404.
    resp = requests.get(pushed.url + "/loki/api/v2alpha/tail",
                        params={"query": '{job="nginx"}'}, timeout=10)
    assert resp.status_code == 404
    assert requests.get(pushed.url + "/loki/api/v1/no_such_thing", timeout=10).status_code == 404


def test_live_tail(pushed):
    # grafana/grafana pkg/tsdb/loki/streaming.go RunStream: a websocket to
    # /loki/api/v1/tail?query=<expr> (the frontend's live mode adds
    # delay_for, limit and start); each message is Loki's tail frame
    # {"streams":[{"stream":{...},"values":[[ts, line]]}],"dropped_entries":...}
    # read by lokiBytesToLabeledFrame.
    websocket = pytest.importorskip("websocket")
    query = urllib.parse.urlencode({"query": '{service_name="tailer"} |= "hello"',
                                    "start": str(time.time_ns() - 10 * SEC),
                                    "limit": "1000", "delay_for": "0"})
    ws = websocket.create_connection(
        pushed.url.replace("http://", "ws://") + "/loki/api/v1/tail?" + query, timeout=15)
    try:
        now = time.time_ns()
        resp = requests.post(pushed.url + "/loki/api/v1/push", json={"streams": [
            {"stream": {"service_name": "tailer"},
             "values": [[str(now), "hello from tail"], [str(now + 1), "filtered out"]]}]},
            timeout=10)
        assert resp.status_code == 204, resp.text
        lines = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "hello from tail" not in lines:
            frame = json.loads(ws.recv())
            assert set(frame) == {"streams", "dropped_entries"}
            for stream in frame["streams"]:
                assert stream["stream"]["service_name"] == "tailer"
                assert_stream_values(stream["values"], categorized=False)
                lines += [v[1] for v in stream["values"]]
        assert "hello from tail" in lines
        assert "filtered out" not in lines
    finally:
        ws.close()
