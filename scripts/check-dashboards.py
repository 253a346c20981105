#!/usr/bin/env python3
"""Runs every query of the provisioned Grafana dashboards against a Lucia.

    scripts/check-dashboards.py [--url http://localhost:3100] [--service NAME]
                                [--require-data] [DASHBOARD.json ...]

Template variables become concrete values ($service: --service or the first
value the dashboard's own variable query returns; multi-value variables: a
regex matching all; $__rate_interval 1m, $__interval 30s, $__range 1h), and
each expression runs over the last hour through the Prometheus API
(/api/v1/query_range, or /api/v1/query for instant targets) or the Loki API
(/loki/api/v1/query_range). The variable queries run too. Exits 1 if any
query fails; with --require-data, also if one returns nothing.
"""
import argparse
import json
import pathlib
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_DIR = pathlib.Path(__file__).resolve().parent.parent / "deploy/grafana/provisioning/dashboards"


def get(url, path, params):
    full = f"{url}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(full, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def substitute(expr, values):
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr


def run(url, kind, expr, instant=False):
    """(ok, result count, error text)."""
    now = int(time.time())
    if kind == "prometheus":
        if instant:
            status, body = get(url, "/api/v1/query", {"query": expr, "time": now})
        else:
            status, body = get(url, "/api/v1/query_range",
                               {"query": expr, "start": now - 3600, "end": now, "step": 30})
    else:
        status, body = get(url, "/loki/api/v1/query_range",
                           {"query": expr, "start": (now - 3600) * 10**9, "end": now * 10**9,
                            "step": 30, "limit": 100, "direction": "backward"})
    try:
        doc = json.loads(body)
    except ValueError:
        return False, 0, f"HTTP {status}: {body.strip()[:300]}"
    if status != 200 or doc.get("status") != "success":
        return False, 0, f"HTTP {status}: {doc.get('error', body.strip()[:300])}"
    return True, len(doc["data"]["result"]), ""


def variable_values(url, var, values):
    """Values of a `label_values(...)` variable query."""
    q = substitute(var["query"], values)
    m = re.fullmatch(r"label_values\((?:(.*),\s*)?(\w+)\)", q.strip())
    if not m:
        raise ValueError(f"unsupported variable query {q}")
    selector, label = m.group(1), m.group(2)
    now = int(time.time())
    if var["datasource"]["type"] == "prometheus":
        params = {"start": now - 3600, "end": now}
        if selector:
            params["match[]"] = selector
        status, body = get(url, f"/api/v1/label/{label}/values", params)
    else:
        params = {"start": (now - 3600) * 10**9, "end": now * 10**9}
        if selector:
            params["query"] = selector
        status, body = get(url, f"/loki/api/v1/label/{label}/values", params)
    doc = json.loads(body)
    if status != 200 or doc.get("status") != "success":
        raise ValueError(f"HTTP {status}: {body[:300]}")
    return doc.get("data") or []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://localhost:3100")
    ap.add_argument("--service", help="value of $service (default: the variable's first value)")
    ap.add_argument("--require-data", action="store_true")
    ap.add_argument("dashboards", nargs="*", type=pathlib.Path)
    args = ap.parse_args()
    files = args.dashboards or sorted(DEFAULT_DIR.glob("*.json"))
    failed = empty = total = 0
    for path in files:
        dash = json.loads(path.read_text())
        print(f"== {dash['title']} ({path.name})")
        values = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h",
                  "__range_s": "3600"}
        for var in dash.get("templating", {}).get("list", []):
            name = var["name"]
            if var["type"] == "textbox":
                values[name] = ""
                continue
            if var["type"] == "custom":
                values[name] = var.get("allValue") or var["query"].split(",")[0]
                continue
            try:
                found = variable_values(args.url, var, values)
            except (ValueError, KeyError) as e:
                print(f"  FAIL variable ${name}: {e}")
                failed += 1
                found = []
            total += 1
            if var.get("includeAll") and var.get("allValue"):
                values[name] = var["allValue"]
            elif name == "service" and args.service:
                values[name] = args.service
            else:
                values[name] = found[0] if found else "none"
            if name == "service" and args.service:
                values[name] = args.service
            print(f"  variable ${name} = {values[name]!r} ({len(found)} values)")
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                kind = target["datasource"]["type"]
                expr = substitute(target["expr"], values)
                ok, n, err = run(args.url, kind, expr, target.get("instant", False))
                total += 1
                label = f"[{kind}] {panel['title']} {target['refId']}"
                if not ok:
                    failed += 1
                    print(f"  FAIL  {label}: {err}\n        {expr}")
                elif n == 0:
                    empty += 1
                    print(f"  EMPTY {label}: {expr}")
                else:
                    print(f"  ok    {label}: {n} series/streams")
    print(f"{total} queries: {failed} failed, {empty} returned no data")
    if failed or (args.require_data and empty):
        sys.exit(1)


if __name__ == "__main__":
    main()
