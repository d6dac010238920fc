"""The Grafana dashboard (config/grafana-dashboard.json) asks only for metrics a running
mailbot serves at /metrics, so it cannot drift from the code."""

from __future__ import annotations

import json
import re
import urllib.request

from daemon_util import REPO, Instance
from servers import LOOPBACK, free_port

DASHBOARD = REPO / "config" / "grafana-dashboard.json"
# What an operator must see on it (issue 15): mail in, quarantine, outbox, sources, spam.
REQUIRED = {"mailbot_mails_ingested_total", "mailbot_source_mails_total",
            "mailbot_quarantine_mails", "mailbot_outbox_mails",
            "mailbot_outbox_oldest_pending_seconds", "mailbot_source_connected",
            "mailbot_spam_held", "mailbot_acknowledgement_latency_seconds_bucket",
            "mailbot_mails_by_source_total", "mailbot_ingest_latency_seconds_bucket"}
# PromQL words that are neither functions (followed by "(") nor metrics.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The metrics a PromQL expression reads: its identifiers that are not functions,
    keywords, label names or values, or ranges."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = LABEL_LISTS.sub("", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("(") or match.group().lower() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def dashboard_queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.sub(r"label_values\((\w+),\s*\w+\)", r"\1",
                                variable["query"]["query"]))
    return exprs


def served_metrics(instance: Instance) -> set[str]:
    """The names of the series a running daemon serves at /metrics."""
    admin = instance.settings["admin"]
    with urllib.request.urlopen(f"http://{admin['host']}:{admin['port']}/metrics",
                                timeout=10) as response:
        text = response.read().decode()
    return {re.match(r"[A-Za-z_:][\w:]*", line).group() for line in text.splitlines()
            if line and not line.startswith("#")}


def test_every_metric_on_the_dashboard_is_served(tmp_path):
    """Each metric in each panel's PromQL (and in the instance variable) is one a real
    daemon's /metrics serves; every panel asks for one; the operator's essentials are there."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p.get("targets") for p in panels)
    exprs = dashboard_queries(dashboard)
    assert all(metric_names(e) for e in exprs), [e for e in exprs if not metric_names(e)]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used >= REQUIRED, REQUIRED - used
    instance = Instance(tmp_path)
    instance.settings["admin"] = {"enabled": True, "host": LOOPBACK, "port": free_port()}
    instance.write()
    with instance.start() as daemon:
        daemon.wait_log("mailbot running")  # the admin listener is up
        served = served_metrics(instance)
    assert not used - served, f"not served at /metrics: {sorted(used - served)}"


def test_the_metric_reader_sees_through_promql():
    """Functions, label matchers, ranges, groupings and strings are not taken for metrics."""
    expr = ('histogram_quantile(0.95, sum by (le) (rate(a_bucket{x=~"$i", y="b c"}'
            '[$__rate_interval]))) / on (job) group_left b_total or vector(0)')
    assert metric_names(expr) == {"a_bucket", "b_total"}
