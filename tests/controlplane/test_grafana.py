"""services/grafana/nnos.json against a real control plane's /metrics (beside a loop that
ticks): every query and annotation names only metrics nnos exports, with labels they carry."""
from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from tests.support.paths import ROOT

DASHBOARD = f"{ROOT}/services/grafana/nnos.json"
KEYWORDS = {"bool", "and", "or", "unless", "offset", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk",
            "bottomk", "quantile", "count_values", "group"}       # aggregations may be followed by "by (…)"
PROMETHEUS_LABELS = {"instance", "job"}               # what Prometheus adds to every scraped series


def _queries(dash: dict) -> list[str]:
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    out += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    out += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return out


def _selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for every series selector in a PromQL expression."""
    expr = re.sub(r"\[[^\]]*\]", "", expr)                                   # range durations
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                           # string literals
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)   # label lists
    out = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", expr):
        name, braces, call = m.groups()
        if call or name in KEYWORDS or name.startswith("$"):
            continue
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*[=!]~?", braces or ""))
        out.append((name, labels))
    return out


def test_the_grafana_dashboard_asks_only_for_what_nnos_exports(beside):
    api, live = beside()
    live_metrics = api.client.get("/metrics")
    assert live_metrics.status_code == 200
    exported: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(live_metrics.text):
        for s in fam.samples:
            exported.setdefault(s.name, set()).update(s.labels)
    for name in ("nnos_loop_up", "nnos_loop_ticks", "nnos_loop_lateness_microseconds", "nnos_model_info", "nnos_info"):
        assert name in exported, f"/metrics lacks {name}"
    dash = json.load(open(DASHBOARD))
    queries = _queries(dash)
    assert len(queries) >= 10
    used = set()
    for q in queries:
        found = [(n, ls) for n, ls in _selectors(q.replace("label_values(", "("))
                 if n not in PROMETHEUS_LABELS]
        assert found, f"no metric in {q!r}"
        for name, labels in found:
            assert name in exported, f"{q!r} asks for {name}, which nnos does not export"
            assert labels <= exported[name] | PROMETHEUS_LABELS, f"{q!r}: {name} has no label {labels - exported[name]}"
            used.add(name)
    for what in ("nnos_loop_measured_rate_hz", "nnos_loop_lateness_microseconds", "nnos_loop_misses",
                 "nnos_loop_failsafe_entries", "nnos_model_info", "nnos_loop_uptime_seconds"):
        assert what in used, f"the dashboard does not show {what}"


def test_the_query_reader_catches_a_metric_that_does_not_exist():
    assert _selectors('delta(nnos_loop_misess{instance=~"$instance"}[5m])') == [("nnos_loop_misess", {"instance"})]
    assert _selectors('sum by (instance) (rate(x_total[1m])) > 0') == [("x_total", set())]
