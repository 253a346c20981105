"""The Loki read API against `lucia all`: push with the JSON API, read back
with `query_range` as Grafana's Loki datasource sends it."""
import time

import requests


def push(lucia, stream, values):
    resp = requests.post(
        lucia.url + "/loki/api/v1/push",
        json={"streams": [{"stream": stream, "values": values}]},
        timeout=10,
    )
    assert resp.status_code == 204, resp.text


def test_query_range_as_grafana(lucia):
    now = time.time_ns()
    push(lucia, {"app": "grafana-read", "env": "ci"},
         [[str(now - 3_000_000_000 + i), f"line {i}"] for i in range(3)])
    # What Grafana's backend sends for a logs panel over the last 5 minutes.
    params = {
        "direction": "backward",
        "end": str(now + 1_000_000_000),
        "limit": "1000",
        "query": '{app="grafana-read"}',
        "start": str(now - 300_000_000_000),
        "step": "1m0s",
    }
    headers = {
        "X-Query-Tags": "Source=grafana",
        "X-Loki-Response-Encoding-Flags": "categorize-labels",
    }
    resp = requests.get(lucia.url + "/loki/api/v1/query_range", params=params,
                        headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success"
    data = body["data"]
    assert data["resultType"] == "streams"
    assert data["encodingFlags"] == ["categorize-labels"]
    assert "summary" in data["stats"]
    lines = [v[1] for s in data["result"] for v in s["values"]]
    assert lines == ["line 2", "line 1", "line 0"]
    stream = data["result"][0]["stream"]
    assert stream["app"] == "grafana-read"
    assert stream["service_name"] == "grafana-read"


def test_save_and_test(lucia):
    resp = requests.get(lucia.url + "/loki/api/v1/query",
                        params={"query": "vector(1)+vector(1)", "time": str(time.time_ns())},
                        timeout=10)
    assert resp.status_code == 200, resp.text
    result = resp.json()["data"]["result"]
    assert result[0]["value"][1] == "2"


def test_labels_and_bad_query(lucia):
    push(lucia, {"app": "labels-read"}, [[str(time.time_ns()), "x"]])
    resp = requests.get(lucia.url + "/loki/api/v1/label/app/values", timeout=10)
    assert resp.status_code == 200
    assert "labels-read" in resp.json()["data"]
    resp = requests.get(lucia.url + "/loki/api/v1/query_range",
                        params={"query": '{app="labels-read"'}, timeout=10)
    assert resp.status_code == 400
    assert "parse error" in resp.text
