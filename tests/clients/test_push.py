"""Loki push clients against `lucia all`: python-logging-loki (JSON) and a
protobuf + snappy client, as Promtail and Grafana Alloy send."""
import logging
import time

import logging_loki
import requests
import snappy


def test_ready(lucia):
    resp = requests.get(lucia.url + "/ready", timeout=10)
    assert resp.status_code == 200
    assert resp.text.strip() == "ready"


def test_python_logging_loki_push(lucia):
    before = lucia.metric("lucia_distributor_lines_received_total")
    handler = logging_loki.LokiHandler(
        url=lucia.url + "/loki/api/v1/push",
        tags={"application": "pytest"},
        version="1",
    )
    # The handler swallows errors through logging's handleError, so call its
    # emitter directly: it raises ValueError unless the answer is exactly 204.
    logger = logging.getLogger("lucia-client-test")
    for i in range(5):
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, f"hello {i}", (), None)
        handler.emitter(record, handler.format(record))
    after = lucia.metric("lucia_distributor_lines_received_total")
    assert after - before == 5


# --- a minimal protobuf encoder for logproto.PushRequest -------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire_type, payload):
    key = varint((number << 3) | wire_type)
    if wire_type == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def push_request(streams):
    """streams: [(labels_string, [(ts_ns, line)])] -> PushRequest bytes."""
    body = b""
    for labels, entries in streams:
        stream = field(1, 2, labels.encode())
        for ts_ns, line in entries:
            timestamp = field(1, 0, varint(ts_ns // 1_000_000_000)) + field(2, 0, varint(ts_ns % 1_000_000_000))
            entry = field(1, 2, timestamp) + field(2, 2, line.encode())
            stream += field(2, 2, entry)
        body += field(1, 2, stream)
    return body


def test_protobuf_snappy_push(lucia):
    before = lucia.metric("lucia_distributor_lines_received_total")
    now = time.time_ns()
    body = push_request([
        ('{job="proto", instance="a"}', [(now + i, f"level=info msg=proto{i}") for i in range(10)]),
        ('{job="proto", instance="b"}', [(now, "level=error msg=boom")]),
    ])
    resp = requests.post(
        lucia.url + "/loki/api/v1/push",
        data=snappy.compress(body),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )
    assert resp.status_code == 204, resp.text
    assert lucia.metric("lucia_distributor_lines_received_total") - before == 11


def test_bad_protobuf_is_400(lucia):
    body = push_request([('{job="proto"}', [(time.time_ns(), "x" * 100)])])
    resp = requests.post(
        lucia.url + "/loki/api/v1/push",
        data=snappy.compress(body[:-7]),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )
    assert resp.status_code == 400
    assert resp.text.strip()
    resp = requests.post(
        lucia.url + "/loki/api/v1/push",
        data=b"definitely not snappy",
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )
    assert resp.status_code == 400
    assert "snappy" in resp.text.lower()
