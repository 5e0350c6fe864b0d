#!/usr/bin/env python3
"""Writes edgeagent.json, the Grafana dashboard for edgeagent's /metrics.

The JSON is generated so that every panel shares one layout, one datasource reference and one
label filter; edit this file, then run

    python3 examples/grafana/dashboard.py > examples/grafana/edgeagent.json

tests/test_examples_dashboard.py fails when the two disagree, and checks every metric and label
the queries use against what a running agent serves.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Every query is filtered by the dashboard's two variables. `node` comes from the scrape config
# (examples/prometheus/prometheus.yml); "All" is ".*", which also matches series without it.
SEL = 'node=~"$node", instance=~"$instance"'

# Matches examples/prometheus/edgeagent-alerts.yml (JetsonTemperatureHigh / ...Critical).
TEMPERATURE_WARNING = 85
TEMPERATURE_CRITICAL = 95


class Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self) -> None:
        self.panels: List[Dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def add(self, panel: Dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)


def target(expr: str, legend: str, ref: str, instant: bool = False,
           table: bool = False) -> Dict[str, Any]:
    t: Dict[str, Any] = {"datasource": DATASOURCE, "refId": ref, "expr": expr,
                         "legendFormat": legend, "range": not instant, "instant": instant,
                         "editorMode": "code"}
    if table:
        t["format"] = "table"
    return t


def thresholds(*steps: Any) -> Dict[str, Any]:
    """thresholds("green", 5, "yellow", 30, "red") -> Grafana's absolute steps."""
    out = [{"color": steps[0], "value": None}]
    for i in range(1, len(steps), 2):
        out.append({"color": steps[i + 1], "value": steps[i]})
    return {"mode": "absolute", "steps": out}


def timeseries(title: str, description: str, targets: List[Dict[str, Any]], unit: str,
               minimum: Optional[float] = None, maximum: Optional[float] = None,
               stack: bool = False, bars: bool = False,
               overrides: Optional[List[Dict[str, Any]]] = None,
               steps: Optional[Dict[str, Any]] = None,
               band: bool = False) -> Dict[str, Any]:
    custom: Dict[str, Any] = {
        "drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 10,
        "showPoints": "never", "spanNulls": False, "axisSoftMin": 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line+area" if band else "off"},
    }
    defaults: Dict[str, Any] = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"},
                                "thresholds": steps or thresholds("green")}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    return {
        "type": "timeseries", "title": title, "description": description,
        "datasource": DATASOURCE, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, description: str, targets: List[Dict[str, Any]], unit: str,
         steps: Dict[str, Any], mappings: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    return {
        "type": "stat", "title": title, "description": description,
        "datasource": DATASOURCE, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": steps, "mappings": mappings or [],
                                     "color": {"mode": "thresholds"}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "none", "justifyMode": "auto",
                    "orientation": "auto", "textMode": "auto", "wideLayout": True},
    }


def value_map(*pairs: Any) -> List[Dict[str, Any]]:
    """value_map(0, "down", "red", 1, "up", "green")"""
    options = {}
    for i in range(0, len(pairs), 3):
        options[str(pairs[i])] = {"text": pairs[i + 1], "color": pairs[i + 2], "index": i // 3}
    return [{"type": "value", "options": options}]


def color_by_name(pattern: str, color: str) -> Dict[str, Any]:
    return {"matcher": {"id": "byRegexp", "options": pattern},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}


def build() -> Dict[str, Any]:
    L = Layout()

    L.row("Health")
    up_map = value_map(0, "down", "red", 1, "up", "green")
    L.add(stat("tegrastats", "jetson_tegrastats_up: 1 while tegrastats lines arrive, 0 after 3 "
               "intervals without one (or where there is no tegrastats).",
               [target("jetson_tegrastats_up{%s}" % SEL, "{{node}}", "A", instant=True)],
               "none", thresholds("red", 1, "green"), up_map), w=4, h=4)
    L.add(stat("Last tegrastats sample", "Age of the newest parsed tegrastats line.",
               [target("time() - jetson_tegrastats_last_sample_timestamp_seconds{%s}" % SEL,
                       "{{node}}", "A", instant=True)],
               "s", thresholds("green", 5, "yellow", 30, "red")), w=4, h=4)
    L.add(stat("Components up", "edgeagent_component_up per supervised component.",
               [target("edgeagent_component_up{%s}" % SEL, "{{node}} {{component}}", "A",
                       instant=True)],
               "none", thresholds("red", 1, "green"), up_map), w=6, h=4)
    L.add(stat("Device plugin registered", "1 once the kubelet accepted the plugin for a "
               "resource. 0 for minutes means pods asking for it stay Pending.",
               [target("edgeagent_device_plugin_registered{%s}" % SEL, "{{node}} {{resource}}",
                       "A", instant=True)],
               "none", thresholds("red", 1, "green"),
               value_map(0, "not registered", "red", 1, "registered", "green")), w=6, h=4)
    L.add(stat("CPU cores online", "Cores tegrastats reports as online (others are off).",
               [target("sum by (node, instance) (jetson_cpu_online{%s})" % SEL, "{{node}}", "A",
                       instant=True)],
               "none", thresholds("blue")), w=4, h=4)
    L.add({
        "type": "table", "title": "Nodes",
        "description": "Board, SoC, L4T and JetPack as discovered (edgeagent_node_info), and the "
                       "agent's version (edgeagent_build_info).",
        "datasource": DATASOURCE,
        "targets": [target("edgeagent_node_info{%s} * on (instance) group_left (version, python) "
                           "edgeagent_build_info{%s}" % (SEL, SEL), "", "A", instant=True,
                           table=True)],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
            "indexByName": {"node": 0, "board": 1, "soc": 2, "l4t": 3, "jetpack": 4,
                            "version": 5, "python": 6, "instance": 7}}}],
    }, w=24, h=6)

    L.row("Memory and CPU")
    L.add(timeseries("RAM", "Used and total RAM (tegrastats RAM, MiB reported as bytes), and the "
                     "largest free block (lfb count x block size): when it is small, large "
                     "contiguous allocations (camera buffers, CUDA) fail though RAM is free.",
                     [target("jetson_ram_used_bytes{%s}" % SEL, "{{node}} used", "A"),
                      target("jetson_ram_total_bytes{%s}" % SEL, "{{node}} total", "B"),
                      target("jetson_ram_lfb_blocks{%s} * jetson_ram_lfb_block_bytes{%s}"
                             % (SEL, SEL), "{{node}} largest free block", "C")],
                     "bytes", minimum=0), w=12, h=8)
    L.add(timeseries("Swap and IRAM", "Swap used, total and cached (tegrastats SWAP), and IRAM "
                     "(Jetson Nano / TX1 only).",
                     [target("jetson_swap_used_bytes{%s}" % SEL, "{{node}} swap used", "A"),
                      target("jetson_swap_total_bytes{%s}" % SEL, "{{node}} swap total", "B"),
                      target("jetson_swap_cached_bytes{%s}" % SEL, "{{node}} swap cached", "C"),
                      target("jetson_iram_used_bytes{%s}" % SEL, "{{node}} IRAM used", "D"),
                      target("jetson_iram_total_bytes{%s}" % SEL, "{{node}} IRAM total", "E")],
                     "bytes", minimum=0), w=12, h=8)
    L.add(timeseries("CPU load per core", "tegrastats CPU [load%@MHz,...]; offline cores "
                     "have no value.",
                     [target("jetson_cpu_utilization_ratio{%s}" % SEL, "{{node}} cpu{{cpu}}",
                             "A")],
                     "percentunit", minimum=0, maximum=1), w=12, h=8)
    L.add(timeseries("CPU clock per core", "tegrastats CPU [load%@MHz,...].",
                     [target("jetson_cpu_frequency_hertz{%s}" % SEL, "{{node}} cpu{{cpu}}", "A")],
                     "hertz", minimum=0), w=12, h=8)

    L.row("GPU, memory controller and engines")
    L.add(timeseries("GPU load", "tegrastats GR3D_FREQ load.",
                     [target("jetson_gpu_utilization_ratio{%s}" % SEL, "{{node}}", "A")],
                     "percentunit", minimum=0, maximum=1), w=8, h=8)
    L.add(timeseries("GPU clock", "tegrastats GR3D_FREQ @MHz, per GPC where the board reports "
                     "them (GR3D_FREQ 0%@[305,305]).",
                     [target("jetson_gpu_frequency_hertz{%s}" % SEL, "{{node}} gpc{{gpc}}", "A")],
                     "hertz", minimum=0), w=8, h=8)
    L.add(timeseries("EMC (memory controller)", "tegrastats EMC_FREQ: load (left axis) and "
                     "clock (right axis). A busy EMC slows the CPU and GPU alike.",
                     [target("jetson_emc_utilization_ratio{%s}" % SEL, "{{node}} load", "A"),
                      target("jetson_emc_frequency_hertz{%s}" % SEL, "{{node}} clock", "B")],
                     "percentunit", minimum=0,
                     overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                                 "properties": [{"id": "unit", "value": "hertz"},
                                                {"id": "custom.axisPlacement", "value": "right"},
                                                {"id": "max"}]}]), w=8, h=8)
    L.add(timeseries("Engine clocks", "Fixed-function engines (APE, VIC, NVENC, NVDEC, NVJPG, "
                     "NVDLA, PVA, OFA...): clock while on.",
                     [target("jetson_engine_frequency_hertz{%s}" % SEL, "{{node}} {{engine}}",
                             "A")],
                     "hertz", minimum=0), w=12, h=8)
    L.add(timeseries("Engine load and state", "Engine load where tegrastats reports one, and "
                     "whether the engine is on (1) or off (0).",
                     [target("jetson_engine_utilization_ratio{%s}" % SEL,
                             "{{node}} {{engine}} load", "A"),
                      target("jetson_engine_active{%s}" % SEL, "{{node}} {{engine}} on", "B")],
                     "percentunit", minimum=0, maximum=1,
                     overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                                 "properties": [{"id": "unit", "value": "bool_on_off"},
                                                {"id": "custom.lineStyle",
                                                 "value": {"fill": "dash", "dash": [10, 10]}}]}]),
          w=12, h=8)

    L.row("Temperature and power")
    L.add(timeseries("Temperatures", "tegrastats name@C sensors. The band marks the alert "
                     "thresholds (%d and %d C). PMIC is left out: on Nano, TX2 and Xavier it "
                     "is a fixed 100 C placeholder, not a measurement."
                     % (TEMPERATURE_WARNING, TEMPERATURE_CRITICAL),
                     [target('jetson_temperature_celsius{%s, sensor!~"(?i)pmic"}' % SEL,
                             "{{node}} {{sensor}}", "A")],
                     "celsius", steps=thresholds("transparent", TEMPERATURE_WARNING, "yellow",
                                                 TEMPERATURE_CRITICAL, "red"),
                     band=True), w=12, h=8)
    L.add(timeseries("Total power", "The module's input rail where it has one (VDD_IN, or "
                     "POM_5V_IN on Nano); otherwise the sum of all rails (AGX Xavier, AGX Orin, "
                     "Thor).",
                     [target('max by (node, instance) (jetson_power_watts{%s, '
                             'rail=~"(?i)vdd_in|pom_5v_in"}) or sum by (node, instance) '
                             '(jetson_power_watts{%s})' % (SEL, SEL), "{{node}}", "A")],
                     "watt", minimum=0), w=12, h=8)
    L.add(timeseries("Power per rail", "tegrastats rails: current (solid) and tegrastats' "
                     "running average (dashed).",
                     [target("jetson_power_watts{%s}" % SEL, "{{node}} {{rail}}", "A"),
                      target("jetson_power_average_watts{%s}" % SEL, "{{node}} {{rail}} average",
                             "B")],
                     "watt", minimum=0,
                     overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                                 "properties": [{"id": "custom.lineStyle",
                                                 "value": {"fill": "dash", "dash": [10, 10]}}]}]),
          w=24, h=8)

    L.row("Kubernetes")
    L.add(timeseries("Devices by health", "What the device plugin advertises to the kubelet, "
                     "per resource. Unhealthy devices are not given to new pods.",
                     [target("sum by (node, resource, health) "
                             "(edgeagent_device_plugin_devices{%s})" % SEL,
                             "{{node}} {{resource}} {{health}}", "A")],
                     "none", minimum=0, stack=True,
                     overrides=[color_by_name(".*Unhealthy$", "red"),
                                color_by_name(".* Healthy$", "green")]), w=8, h=8)
    L.add(timeseries("Allocations", "Allocate calls from the kubelet (one per container that "
                     "gets a device), by result.",
                     [target("sum by (node, resource, result) (increase("
                             "edgeagent_device_plugin_allocations_total{%s}[$__rate_interval]))"
                             % SEL, "{{node}} {{resource}} {{result}}", "A")],
                     "none", minimum=0, bars=True,
                     overrides=[color_by_name(".* error$", "red")]), w=8, h=8)
    L.add(timeseries("Plugin registrations", "Registrations with the kubelet. More than one "
                     "per kubelet restart means the plugin keeps losing its socket.",
                     [target("sum by (node, resource) (increase("
                             "edgeagent_device_plugin_registrations_total{%s}[$__rate_interval]))"
                             % SEL, "{{node}} {{resource}}", "A")],
                     "none", minimum=0, bars=True), w=8, h=8)
    L.add(timeseries("Label patches by result", "Node label reconciles: applied (a patch was "
                     "sent), unchanged (nothing to do), conflict (409, retried), error, dry_run.",
                     [target("sum by (node, result) (increase("
                             "edgeagent_labels_patches_total{%s}[$__rate_interval]))" % SEL,
                             "{{node}} {{result}}", "A")],
                     "none", minimum=0, bars=True, stack=True,
                     overrides=[color_by_name(".* error$", "red"),
                                color_by_name(".* conflict$", "orange"),
                                color_by_name(".* applied$", "green"),
                                color_by_name(".* unchanged$", "blue")]), w=8, h=8)
    L.add(timeseries("API server requests", "Requests edgeagent sends to the Kubernetes API, "
                     "by method and status code: 401/403 mean credentials or RBAC.",
                     [target("sum by (node, method, code) (rate("
                             "edgeagent_kube_requests_total{%s}[$__rate_interval]))" % SEL,
                             "{{node}} {{method}} {{code}}", "A")],
                     "reqps", minimum=0), w=8, h=8)
    L.add(stat("Owned labels", "Labels edgeagent owns on the Node (its ownership annotation).",
               [target("edgeagent_labels_owned{%s}" % SEL, "{{node}}", "A", instant=True)],
               "none", thresholds("blue")), w=4, h=4)
    L.add(stat("Labels last confirmed", "Time since the labels were last applied or found "
               "unchanged. Drift checks run at least every 10 minutes.",
               [target("time() - edgeagent_labels_last_success_timestamp_seconds{%s}" % SEL,
                       "{{node}}", "A", instant=True)],
               "s", thresholds("green", 900, "yellow", 1800, "red")), w=4, h=4)

    L.row("tegrastats")
    L.add(timeseries("tegrastats lines and parse errors", "Lines read per second, and tokens "
                     "the parser did not understand (skipped, never fatal).",
                     [target("rate(jetson_tegrastats_lines_total{%s}[$__rate_interval])" % SEL,
                             "{{node}} lines", "A"),
                      target("rate(jetson_tegrastats_parse_errors_total{%s}[$__rate_interval])"
                             % SEL, "{{node}} parse errors", "B")],
                     "short", minimum=0, overrides=[color_by_name(".* parse errors$", "red")]),
          w=12, h=8)
    L.add(timeseries("tegrastats restarts", "tegrastats restarted after it exited or hung.",
                     [target("increase(jetson_tegrastats_restarts_total{%s}[$__rate_interval])"
                             % SEL, "{{node}}", "A")],
                     "none", minimum=0, bars=True), w=12, h=8)

    variable_ds = {"type": "prometheus", "uid": "${datasource}"}

    def query_variable(name: str, label: str, query: str) -> Dict[str, Any]:
        return {"name": name, "label": label, "type": "query", "datasource": variable_ds,
                "definition": query,
                # a plain label_values() string: every Grafana since 7 reads it (newer ones
                # convert it to their query editor's form on load)
                "query": query,
                "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
                "current": {}, "options": [], "hide": 0, "regex": ""}

    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
            {"type": "panel", "id": "table", "name": "Table", "version": ""},
        ],
        "uid": "edgeagent-fleet",
        "title": "edgeagent: Jetson fleet",
        "description": "tegrastats, device plugin and node labels from edgeagent's /metrics; "
                       "scrape config and alerts in edgeagent's examples/prometheus.",
        "tags": ["edgeagent", "jetson", "kubernetes"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
             "options": []},
            query_variable("node", "Node", "label_values(edgeagent_build_info, node)"),
            query_variable("instance", "Instance",
                           'label_values(edgeagent_build_info{node=~"$node"}, instance)'),
        ]},
        "panels": L.panels,
    }


def render() -> str:
    """The dashboard JSON exactly as committed in edgeagent.json."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
