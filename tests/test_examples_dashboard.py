"""examples/grafana/edgeagent.json and the alert rules query only what the exporter serves.

The agent runs for real: `python -m edgeagent run --demo` (every component, on the packaged demo
Jetson) and, for the tegrastats metrics of other boards and the API client's metrics, the agent
on a copy of the demo host whose tegrastats replays every real line in tests/fixtures/tegrastats
(Nano to Thor), labelling in dry-run against an API server address where nothing listens. Their
/metrics are parsed with prometheus_client's parser; every metric and label name in the
dashboard's queries and variables, and in the alert expressions, must be among them. A real
Prometheus then scrapes the demo agent with examples/prometheus/prometheus.yml: the `node`
relabel works, every alert rule loads, and every dashboard query is valid PromQL that returns
data where the demo host has it.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, FrozenSet, List, Optional

import pytest

from tests.conftest import FIXTURES, REPO
from tests.promql_names import (check_expression, expression_names, grafana_label_values,
                                served_series, substitute_grafana_variables)
from tests.tools import free_port

DASHBOARD = os.path.join(REPO, "examples", "grafana", "edgeagent.json")
GENERATOR = os.path.join(REPO, "examples", "grafana", "dashboard.py")
PROMETHEUS_DIR = os.path.join(REPO, "examples", "prometheus")
DEMO_HOST = os.path.join(REPO, "edgeagent", "demo", "host")

# Labels Prometheus adds to every series of the edgeagent job (prometheus.yml sets `node`).
TARGET_LABELS = ("job", "instance", "node")
# Series Prometheus makes itself from a scrape, not served on /metrics.
PROMETHEUS_SERIES = {"up": frozenset()}

# Label names of every contract metric (issues 2, 3 and 4). Used for a family the agent declares
# but has no sample of yet (a labelled counter nothing has incremented in a short run), and
# checked against the scrape for every family that does have samples, so it cannot drift.
CONTRACT: Dict[str, FrozenSet[str]] = {k: frozenset(v) for k, v in {
    "jetson_ram_used_bytes": (), "jetson_ram_total_bytes": (), "jetson_ram_lfb_blocks": (),
    "jetson_ram_lfb_block_bytes": (), "jetson_swap_used_bytes": (),
    "jetson_swap_total_bytes": (), "jetson_swap_cached_bytes": (),
    "jetson_iram_used_bytes": (), "jetson_iram_total_bytes": (),
    "jetson_cpu_utilization_ratio": ("cpu",), "jetson_cpu_frequency_hertz": ("cpu",),
    "jetson_cpu_online": ("cpu",), "jetson_emc_utilization_ratio": (),
    "jetson_emc_frequency_hertz": (), "jetson_gpu_utilization_ratio": (),
    "jetson_gpu_frequency_hertz": ("gpc",), "jetson_engine_frequency_hertz": ("engine",),
    "jetson_engine_utilization_ratio": ("engine",), "jetson_engine_active": ("engine",),
    "jetson_temperature_celsius": ("sensor",), "jetson_power_watts": ("rail",),
    "jetson_power_average_watts": ("rail",), "jetson_tegrastats_up": (),
    "jetson_tegrastats_lines_total": (), "jetson_tegrastats_parse_errors_total": (),
    "jetson_tegrastats_restarts_total": (), "jetson_tegrastats_last_sample_timestamp_seconds": (),
    "edgeagent_build_info": ("version", "python"),
    "edgeagent_node_info": ("board", "soc", "l4t", "jetpack"),
    "edgeagent_component_up": ("component",),
    "edgeagent_device_plugin_registered": ("resource",),
    "edgeagent_device_plugin_devices": ("resource", "health"),
    "edgeagent_device_plugin_allocations_total": ("resource", "result"),
    "edgeagent_device_plugin_registrations_total": ("resource",),
    "edgeagent_labels_patches_total": ("result",), "edgeagent_labels_owned": (),
    "edgeagent_labels_deferred": (), "edgeagent_component_degraded": ("component",),
    "jetson_tegrastats_lines_dropped_total": ("reason",),
    "edgeagent_labels_last_success_timestamp_seconds": (),
    "edgeagent_kube_requests_total": ("method", "code"),
}.items()}

# What issue 7 asks the dashboard to show, by the metrics that carry it.
REQUIRED_DASHBOARD_METRICS = {
    "jetson_ram_used_bytes", "jetson_ram_total_bytes", "jetson_swap_used_bytes",
    "jetson_cpu_utilization_ratio", "jetson_cpu_frequency_hertz",
    "jetson_gpu_utilization_ratio", "jetson_gpu_frequency_hertz",
    "jetson_emc_utilization_ratio", "jetson_emc_frequency_hertz",
    "jetson_engine_frequency_hertz", "jetson_temperature_celsius", "jetson_power_watts",
    "jetson_tegrastats_up", "jetson_tegrastats_last_sample_timestamp_seconds",
    "edgeagent_device_plugin_registered", "edgeagent_device_plugin_devices",
    "edgeagent_labels_patches_total",
}

AGENT_START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


# --- helpers --------------------------------------------------------------------------------------



def http_get(url: str, timeout: float = 2.0) -> Optional[str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode("utf-8")
    except (urllib.error.URLError, OSError):
        return None


def merge_served(into: Dict[str, Optional[FrozenSet[str]]],
                 more: Dict[str, Optional[FrozenSet[str]]]) -> None:
    for name, labels in more.items():
        known = into.get(name)
        if labels is None:
            into.setdefault(name, None)
        else:
            into[name] = (known or frozenset()) | labels


class Agent:
    """`python -m edgeagent ...` from the repo, serving /metrics on a free loopback port."""

    def __init__(self, args: List[str], log_path: str, env: Optional[Dict[str, str]] = None):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        environment = dict(os.environ)
        environment.pop("EDGEAGENT_CONFIG", None)
        environment.pop("EDGEAGENT_ROOT", None)
        environment.update(env or {})
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgeagent"] + args
            + ["--metrics-address", "127.0.0.1:%d" % self.port],
            cwd=REPO, env=environment, stdout=self.log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-3000:].decode("utf-8", "replace")

    def scrape(self) -> Optional[str]:
        return http_get(self.url + "/metrics")

    def wait_for(self, metric: str, timeout: float = AGENT_START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail("the agent exited (%s) before serving %s:\n%s"
                            % (self.process.returncode, metric, self.log_tail()))
            text = self.scrape()
            if text is not None and re.search(r"^%s[ {]" % re.escape(metric), text, re.M):
                return text
            time.sleep(0.2)
        pytest.fail("the agent did not serve %s within %.0f s:\n%s"
                    % (metric, timeout, self.log_tail()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self.log.close()


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_agent(tmp_path_factory):
    """The demo agent, running; .served is the union of what it served over a few scrapes."""
    agent = Agent(["run", "--demo"], str(tmp_path_factory.mktemp("demo") / "agent.log"))
    try:
        served = served_series(agent.wait_for("jetson_ram_used_bytes"))
        # a few more scrapes: counters that start counting a moment later still show up
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            text = agent.scrape()
            if text:
                merge_served(served, served_series(text))
        agent.served = served
        yield agent
    finally:
        agent.stop()


FAKE_TEGRASTATS = """#!%(python)s
# Replays the real tegrastats lines of tests/fixtures/tegrastats (TX1 to Thor) at --interval.
import json, sys, time
args = sys.argv[1:]
interval = int(args[args.index("--interval") + 1]) / 1000.0 if "--interval" in args else 1.0
with open(%(fixture)r) as f:
    lines = [json.loads(l)["line"] for l in f if l.strip()]
while True:
    for line in lines:
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()
        time.sleep(interval)
"""


@pytest.fixture(scope="module")
def fleet_served(tmp_path_factory):
    """What the exporter serves for the tegrastats lines of every Jetson generation.

    The demo replays one board's log; the dashboard also shows fields other boards have (IRAM
    on a Nano, per-GPC clocks on Orin). So the agent runs once more on a copy of the demo host
    whose /usr/bin/tegrastats replays all the fixture lines, and /metrics is scraped while they
    pass by. That run also has a (dry-run) API client, whose metrics the demo cannot have.
    """
    base = tmp_path_factory.mktemp("fleet")
    root = base / "root"
    shutil.copytree(DEMO_HOST, str(root))
    tegrastats = root / "usr" / "bin" / "tegrastats"
    tegrastats.parent.mkdir(parents=True, exist_ok=True)
    tegrastats.write_text(FAKE_TEGRASTATS % {
        "python": sys.executable,
        "fixture": os.path.join(FIXTURES, "tegrastats", "lines.jsonl")})
    tegrastats.chmod(0o755)
    with open(os.path.join(FIXTURES, "tegrastats", "lines.jsonl")) as f:
        line_count = sum(1 for line in f if line.strip())
    interval_ms = 100
    # The labels component runs too, in dry-run, against an API server address where nothing
    # listens: its API client then declares edgeagent_kube_requests_total, which the demo
    # (no API client at all) cannot show.
    kubeconfig = base / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "kit",
        "clusters": [{"name": "kit", "cluster": {"server": "https://127.0.0.1:%d" % free_port(),
                                                 "insecure-skip-tls-verify": True}}],
        "users": [{"name": "kit", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "kit", "context": {"cluster": "kit", "user": "kit"}}]}))
    agent = Agent(["--root", str(root), "run", "--disable", "device-plugin", "--dry-run",
                   "--kubeconfig", str(kubeconfig), "--node-name", "kit-test"],
                  str(base / "agent.log"), env={"EDGEAGENT_TEGRASTATS_INTERVAL_MS": str(interval_ms)})
    try:
        served = served_series(agent.wait_for("jetson_ram_used_bytes"))
        # two passes over every line, scraping twice per line
        deadline = time.monotonic() + 2 * line_count * interval_ms / 1000.0
        while time.monotonic() < deadline:
            time.sleep(interval_ms / 2000.0)
            text = agent.scrape()
            if text:
                merge_served(served, served_series(text))
        return served
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def served(demo_agent, fleet_served):
    merged = dict(demo_agent.served)
    merge_served(merged, fleet_served)
    return merged


def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_queries():
    """(panel title, expr) of every query in the dashboard."""
    out = []
    for panel in load_dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


# --- the dashboard file itself (no agent needed) --------------------------------------------------

def test_dashboard_matches_its_generator():
    result = subprocess.run([sys.executable, GENERATOR], stdout=subprocess.PIPE, timeout=60,
                            check=True)
    with open(DASHBOARD, "rb") as f:
        assert f.read() == result.stdout, (
            "examples/grafana/edgeagent.json is stale: "
            "python3 examples/grafana/dashboard.py > examples/grafana/edgeagent.json")


def test_dashboard_is_import_ready():
    board = load_dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    assert "id" not in board, "an exported id would clash on import"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("node", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}"
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"
        assert grafana_label_values(v["definition"])[1] == name
        assert v["query"] == v["definition"]


def test_every_panel_uses_the_datasource_variable_and_both_filters():
    for panel in load_dashboard()["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            for sel in expression_names(target["expr"]).selectors:
                assert {"node", "instance"} <= sel.labels, (panel["title"], target["expr"])


def test_panels_do_not_overlap_and_ids_are_unique():
    panels = load_dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (p["title"], cells.get((x, y)))
                cells[(x, y)] = p["title"]


def test_dashboard_covers_what_operators_need():
    used = set()
    for _, expr in dashboard_queries():
        used |= expression_names(expr).metrics
    assert REQUIRED_DASHBOARD_METRICS <= used, REQUIRED_DASHBOARD_METRICS - used


def test_temperature_band_matches_the_alerts():
    with open(os.path.join(PROMETHEUS_DIR, "edgeagent-alerts.yml")) as f:
        rules = f.read()
    limits = sorted(int(v) for v in re.findall(
        r"jetson_temperature_celsius\{[^}]*\} > (\d+)", rules))
    panel = next(p for p in load_dashboard()["panels"] if p["title"] == "Temperatures")
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line+area"
    steps = [s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None]
    assert steps == limits and len(limits) == 2


# --- against the running agent --------------------------------------------------------------------

def test_contract_labels_match_what_is_served(served):
    for name, labels in sorted(served.items()):
        if labels is not None and name in CONTRACT:
            assert labels == CONTRACT[name], (name, sorted(labels), sorted(CONTRACT[name]))


def test_every_dashboard_query_uses_served_names(served):
    problems = []
    for title, expr in dashboard_queries():
        problems += ["%s: %s" % (title, p)
                     for p in check_expression(expr, served, TARGET_LABELS, CONTRACT)]
    assert problems == []


def test_dashboard_variables_use_served_names(served):
    for variable in load_dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        selector, label = grafana_label_values(variable["definition"])
        assert check_expression(selector, served, TARGET_LABELS, CONTRACT) == []
        metric = expression_names(selector).selectors[0].metric
        assert label in TARGET_LABELS or label in (served[metric] or CONTRACT[metric])


def alert_rules(prometheus_url):
    doc = json.loads(http_get(prometheus_url + "/api/v1/rules", timeout=5))
    return [rule for group in doc["data"]["groups"] for rule in group["rules"]
            if rule["type"] == "alerting"]


def test_every_alert_uses_served_names(prometheus, served):
    served_and_prometheus = dict(served)
    served_and_prometheus.update(PROMETHEUS_SERIES)
    rules = alert_rules(prometheus)
    with open(os.path.join(PROMETHEUS_DIR, "edgeagent-alerts.yml")) as f:
        assert len(rules) == len(re.findall(r"^\s*- alert:", f.read(), re.M))
    problems = []
    for rule in rules:
        problems += ["%s: %s" % (rule["name"], p) for p in
                     check_expression(rule["query"], served_and_prometheus, TARGET_LABELS,
                                      CONTRACT)]
    assert problems == []


def test_every_alert_says_what_to_run(prometheus):
    for rule in alert_rules(prometheus):
        annotations = rule["annotations"]
        assert annotations.get("summary") and "{{ $labels.node }}" in annotations["summary"], \
            rule["name"]
        # at least one command to run, in backticks
        assert re.search(r"`[a-z][^`]+`", annotations.get("description", "")), rule["name"]
        assert rule["labels"].get("severity") in ("warning", "critical"), rule["name"]


# --- a real Prometheus scraping the demo agent ----------------------------------------------------

@pytest.fixture(scope="module")
def prometheus(demo_agent):
    """Prometheus with examples/prometheus/prometheus.yml (faster intervals), the demo agent in
    its file_sd targets; yields its base URL once it has scraped the agent."""
    from tests.peers.prometheus import Prometheus

    with open(os.path.join(PROMETHEUS_DIR, "prometheus.yml")) as f:
        config = f.read()
    for interval in ("scrape_interval: 15s", "evaluation_interval: 15s"):
        assert interval in config
        config = config.replace(interval, interval.replace("15s", "1s"))
    config = config.replace("scrape_timeout: 5s", "scrape_timeout: 1s")
    with open(os.path.join(PROMETHEUS_DIR, "edgeagent-alerts.yml")) as f:
        rules = f.read()
    # file_sd reads YAML, and JSON is YAML
    targets = json.dumps([{"targets": ["127.0.0.1:%d" % demo_agent.port]}])
    server = Prometheus(config=config, files={"edgeagent-alerts.yml": rules,
                                              "targets/test.yml": targets}).start()
    try:
        try:
            server.wait_result('up{job="edgeagent"} == 1', 30, "Prometheus scraping the agent")
        except AssertionError as e:
            pytest.fail("Prometheus did not scrape the agent: %s" % e)
        yield server.url
    finally:
        server.stop()


def query(url, expr):
    """The result list of an instant query, or None when Prometheus is not answering."""
    text = http_get(url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=5)
    if text is None:
        return None
    doc = json.loads(text)
    if doc.get("status") != "success":
        raise AssertionError("%s: %s" % (expr, doc.get("error")))
    return doc["data"]["result"]


def test_scrape_config_sets_the_node_label(prometheus):
    result = query(prometheus, 'up{job="edgeagent"}')
    assert [r["metric"].get("node") for r in result] == ["127.0.0.1"]


def test_alert_rules_load_and_evaluate(prometheus):
    deadline = time.monotonic() + 10
    rules = alert_rules(prometheus)
    while any(r.get("health") == "unknown" for r in rules) and time.monotonic() < deadline:
        time.sleep(0.5)
        rules = alert_rules(prometheus)
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_dashboard_queries_run_and_show_the_demo_host(prometheus, demo_agent):
    # A gauge with samples on the demo host must give its panel data; counters may be absent
    # until they first count, so their panels only have to be valid PromQL.
    time.sleep(2.5)    # a few scrapes, so rate() and increase() have two points
    empty = []
    for title, expr in dashboard_queries():
        result = query(prometheus, substitute_grafana_variables(expr, interval="1m"))
        metrics = expression_names(expr).metrics
        has_samples = all(demo_agent.served.get(m) is not None and not m.endswith("_total")
                          for m in metrics)
        if has_samples and not result:
            empty.append("%s: %s" % (title, expr))
    assert empty == []
