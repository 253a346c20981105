"""The ingester flushes chunks to an S3-compatible store: moto's server
stands in for S3."""
import os
import re
import tempfile
import time

import requests
from moto.server import ThreadedMotoServer

from conftest import Lucia, free_port
from test_push import push_request

import snappy


def test_chunks_flushed_to_s3_on_shutdown():
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        assert requests.put(f"{endpoint}/lucia-chunks", timeout=30).status_code == 200
        config = f"""
storage:
  backend: s3
  s3:
    endpoint: {endpoint}
    bucket: lucia-chunks
    region: us-east-1
    access_key_id: test
    secret_access_key: test
    insecure: true
"""
        with tempfile.TemporaryDirectory() as data_dir:
            lucia = Lucia(os.environ["LUCIA_BIN"], data_dir, free_port(), config)
            lucia.start()
            try:
                now = time.time_ns()
                body = push_request([('{job="s3"}', [(now + i, f"line {i}") for i in range(100)])])
                resp = requests.post(lucia.url + "/loki/api/v1/push", data=snappy.compress(body),
                                     headers={"Content-Type": "application/x-protobuf"}, timeout=30)
                assert resp.status_code == 204, resp.text
            finally:
                lucia.stop()
        listing = requests.get(f"{endpoint}/lucia-chunks?list-type=2", timeout=30).text
        keys = re.findall(r"<Key>([^<]+)</Key>", listing)
        assert any(k.startswith("fake/chunks/") for k in keys), keys
        assert any(k.startswith("fake/index/") for k in keys), keys
    finally:
        moto.stop()
