#!/usr/bin/env python3
"""Writes charts/botburrow-agents/dashboards/botburrow-fleet.json, the fleet's Grafana dashboard.

The dashboard is generated rather than hand-edited so that every panel is a (title, queries) row
here; scripts/test.d/k8s.sh checks that every botburrow_* metric it names is registered by the
binaries. Run: python3 tools/gen-dashboard.py
"""

from __future__ import annotations

import json
import pathlib

NS = 'namespace="$namespace"'

# (title, unit, [(legend, expr)], kind) per panel, in reading order; kind is "stat" or "timeseries".
PANELS = [
    ("Leader coordinators", "none", [("leaders", f"sum(botburrow_coordinator_is_leader{{{NS}}})")], "stat"),
    ("Oldest queued item", "s", [("age", f"max(botburrow_queue_oldest_age_seconds{{{NS}}})")], "stat"),
    ("Dead letters", "none", [("dead", f"max(botburrow_queue_dead_letters{{{NS}}})")], "stat"),
    ("Agents in backoff", "none", [("backoff", f"max(botburrow_queue_agents_in_backoff{{{NS}}})")], "stat"),
    ("Live runners", "none", [("runners", f"max(botburrow_runners_alive{{{NS}}})")], "stat"),
    ("Hub errors (5m)", "none", [("errors", f"sum(increase(botburrow_coordinator_hub_errors_total{{{NS}}}[5m]))")], "stat"),
    ("Queue depth by priority", "none",
     [("{{priority}}", f"max by (priority) (botburrow_queue_depth{{{NS}}})")], "timeseries"),
    ("Active and in-flight activations", "none",
     [("active (Valkey)", f"max(botburrow_queue_active{{{NS}}})"),
      ("in flight (runners)", f"sum(botburrow_activations_in_flight{{{NS}}})")], "timeseries"),
    ("Activations by outcome", "ops",
     [("{{outcome}}", f"sum by (outcome) (rate(botburrow_activations_total{{{NS}}}[5m]))")], "timeseries"),
    ("Activation duration", "s",
     [("p50", f"histogram_quantile(0.5, sum by (le) (rate(botburrow_activation_duration_seconds_bucket{{{NS}}}[5m])))"),
      ("p95", f"histogram_quantile(0.95, sum by (le) (rate(botburrow_activation_duration_seconds_bucket{{{NS}}}[5m])))")],
     "timeseries"),
    ("Queue wait", "s",
     [("p95", f"histogram_quantile(0.95, sum by (le) (rate(botburrow_queue_wait_seconds_bucket{{{NS}}}[5m])))")],
     "timeseries"),
    ("Enqueued work by task type", "ops",
     [("{{task_type}}", f"sum by (task_type) (rate(botburrow_coordinator_enqueued_total{{{NS}}}[5m]))")], "timeseries"),
    ("Hub poll duration", "s",
     [("p95", f"histogram_quantile(0.95, sum by (le) (rate(botburrow_coordinator_poll_duration_seconds_bucket{{{NS}}}[5m])))")],
     "timeseries"),
    ("LLM tokens by model", "short",
     [("{{model}} {{direction}}", f"sum by (model, direction) (rate(botburrow_llm_tokens_total{{{NS}}}[5m]))")],
     "timeseries"),
    ("LLM cost per hour by agent", "currencyUSD",
     [("{{agent}}", f"sum by (agent) (rate(botburrow_llm_cost_usd_total{{{NS}}}[1h])) * 3600")], "timeseries"),
    ("LLM request duration by provider", "s",
     [("{{provider}} p95",
       f"histogram_quantile(0.95, sum by (le, provider) (rate(botburrow_llm_request_duration_seconds_bucket{{{NS}}}[5m])))")],
     "timeseries"),
    ("LLM errors by provider and kind", "ops",
     [("{{provider}} {{kind}}", f"sum by (provider, kind) (rate(botburrow_llm_errors_total{{{NS}}}[5m]))")], "timeseries"),
    ("MCP tool calls", "ops",
     [("{{server}} {{outcome}}", f"sum by (server, outcome) (rate(botburrow_mcp_tool_calls_total{{{NS}}}[5m]))")],
     "timeseries"),
    ("Expired leases handled by the reaper", "ops",
     [("{{outcome}}", f"sum by (outcome) (rate(botburrow_coordinator_reaped_total{{{NS}}}[15m]))")], "timeseries"),
    ("LLM circuit breakers (0 closed, 1 open, 2 half-open)", "none",
     [("{{provider}}", f"max by (provider) (botburrow_llm_breaker_state{{{NS}}})")], "timeseries"),
    ("Runner heartbeat age", "s",
     [("{{pod}}", f"time() - max by (pod) (botburrow_runner_heartbeat_timestamp_seconds{{{NS}}})")], "timeseries"),
]


def panel(i: int, title: str, unit: str, targets: list[tuple[str, str]], kind: str, y: int, x: int, w: int, h: int) -> dict:
    return {
        "id": i + 1,
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for j, (legend, expr) in enumerate(targets)
        ],
    }


def build() -> dict:
    panels, x, y = [], 0, 0
    for i, (title, unit, targets, kind) in enumerate(PANELS):
        w, h = (6, 4) if kind == "stat" else (12, 8)
        if x + w > 24:
            x, y = 0, y + prev_h
        panels.append(panel(i, title, unit, targets, kind, y, x, w, h))
        x, prev_h = x + w, h
    return {
        "uid": "botburrow-fleet",
        "title": "botburrow fleet",
        "tags": ["botburrow"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
                {"name": "namespace", "type": "query", "label": "Namespace",
                 "datasource": {"type": "prometheus", "uid": "${datasource}"},
                 "query": "label_values(botburrow_coordinator_is_leader, namespace)",
                 "refresh": 2},
            ]
        },
        "panels": panels,
    }


if __name__ == "__main__":
    out = pathlib.Path(__file__).resolve().parent.parent / "charts/botburrow-agents/dashboards/botburrow-fleet.json"
    out.write_text(json.dumps(build(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
