"""The Prometheus collectors: exact names, absent-not-stale values, staleness, promtool on every
real fixture line, OpenMetrics."""

import json
import os
import subprocess

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from edgeagent.discovery.inventory import Inventory
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.metrics.collector import TEGRASTATS_HELP, AgentCollector, TegrastatsCollector
from edgeagent.supervisor import ComponentStatus
from edgeagent.tegrastats.runner import TegrastatsState
from tests.conftest import FIXTURES, tegrastats_fixture_lines
from tests.tools import require_tool

CONTRACT = {
    "jetson_ram_used_bytes", "jetson_ram_total_bytes", "jetson_ram_lfb_blocks",
    "jetson_ram_lfb_block_bytes", "jetson_swap_used_bytes", "jetson_swap_total_bytes",
    "jetson_swap_cached_bytes", "jetson_iram_used_bytes", "jetson_iram_total_bytes",
    "jetson_cpu_utilization_ratio", "jetson_cpu_frequency_hertz", "jetson_cpu_online",
    "jetson_emc_utilization_ratio", "jetson_emc_frequency_hertz", "jetson_gpu_utilization_ratio",
    "jetson_gpu_frequency_hertz", "jetson_engine_frequency_hertz",
    "jetson_engine_utilization_ratio", "jetson_engine_active", "jetson_temperature_celsius",
    "jetson_power_watts", "jetson_power_average_watts", "jetson_tegrastats_up",
    "jetson_tegrastats_lines_total", "jetson_tegrastats_parse_errors_total",
    "jetson_tegrastats_restarts_total", "jetson_tegrastats_last_sample_timestamp_seconds",
    "jetson_tegrastats_lines_dropped_total",
}
NANO = ("RAM 1180/3965MB (lfb 1x2MB) SWAP 149/1024MB (cached 7MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [30%@1036,33%@1036,28%@1036,26%@1036] EMC_FREQ 10%@1600 GR3D_FREQ 0%@76 NVENC 716 "
        "NVDEC 716 APE 25 PLL@57C CPU@60.5C PMIC@100C GPU@59C AO@65C thermal@59.75C "
        "POM_5V_IN 4520/4680 POM_5V_GPU 0/0 POM_5V_CPU 1078/1205")


def all_lines():
    rows = tegrastats_fixture_lines()
    with open(os.path.join(FIXTURES, "tegrastats", "more_lines.jsonl")) as f:
        rows += [json.loads(line) for line in f if line.strip()]
    return [row["line"] for row in rows]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def registry_for(line=None, clock=None, present=True):
    state = TegrastatsState("/usr/bin/tegrastats", 1.0, clock=clock or Clock())
    state.present = present
    if line is not None:
        state.accept_read([line.encode()])
    registry = CollectorRegistry()
    registry.register(TegrastatsCollector(state))
    return registry, state


def samples(registry):
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def names(registry):
    return {name for name, _ in samples(registry)}


def test_every_name_the_issue_lists_is_emitted_and_nothing_else():
    # the Nano line has IRAM and SWAP; an AGX Orin JetPack 6 line has engines with loads
    seen = set()
    for line in (NANO, [x for x in all_lines() if x.startswith("05-09-2026 18:42:07")][0]):
        seen |= names(registry_for(line)[0])
    assert seen == CONTRACT
    assert {n for n in TEGRASTATS_HELP} | {"jetson_tegrastats_lines_total",
                                           "jetson_tegrastats_parse_errors_total",
                                           "jetson_tegrastats_restarts_total",
                                           "jetson_tegrastats_lines_dropped_total"} >= CONTRACT


def test_values_and_units():
    s = samples(registry_for(NANO)[0])
    assert s[("jetson_ram_used_bytes", ())] == 1180 * 2 ** 20
    assert s[("jetson_ram_lfb_block_bytes", ())] == 2 * 2 ** 20
    assert s[("jetson_iram_total_bytes", ())] == 252 * 1024
    assert s[("jetson_cpu_utilization_ratio", (("cpu", "1"),))] == 0.33
    assert s[("jetson_cpu_frequency_hertz", (("cpu", "1"),))] == 1036e6
    assert s[("jetson_cpu_online", (("cpu", "3"),))] == 1
    assert s[("jetson_emc_frequency_hertz", ())] == 1600e6
    assert s[("jetson_gpu_frequency_hertz", (("gpc", "0"),))] == 76e6
    assert s[("jetson_engine_frequency_hertz", (("engine", "nvenc"),))] == 716e6
    assert s[("jetson_engine_active", (("engine", "nvenc"),))] == 1
    assert s[("jetson_temperature_celsius", (("sensor", "cpu"),))] == 60.5
    assert s[("jetson_power_watts", (("rail", "POM_5V_IN"),))] == 4.52
    assert s[("jetson_power_average_watts", (("rail", "POM_5V_IN"),))] == 4.68
    assert s[("jetson_tegrastats_up", ())] == 1
    assert s[("jetson_tegrastats_lines_total", ())] == 1
    assert s[("jetson_tegrastats_parse_errors_total", ())] == 0


def test_values_not_in_the_last_line_are_absent():
    registry, state = registry_for(NANO)
    state.accept_read([b"RAM 936/3964MB (lfb 366x4MB) CPU [10%@102,off] GR3D_FREQ 5%"])
    s = samples(registry)
    assert ("jetson_iram_used_bytes", ()) not in s and ("jetson_swap_used_bytes", ()) not in s
    assert not any(name.startswith(("jetson_power", "jetson_temperature", "jetson_engine"))
                   for name, _ in s)
    assert ("jetson_cpu_utilization_ratio", (("cpu", "1"),)) not in s
    assert s[("jetson_cpu_online", (("cpu", "1"),))] == 0
    assert ("jetson_gpu_frequency_hertz", (("gpc", "0"),)) not in s
    assert s[("jetson_gpu_utilization_ratio", ())] == 0.05
    assert ("jetson_emc_frequency_hertz", ()) not in s


def test_no_line_for_three_intervals_leaves_only_up_zero_and_the_counters():
    clock = Clock()
    registry, state = registry_for(NANO, clock=clock)
    clock.now += 3.5
    assert names(registry) == {"jetson_tegrastats_up", "jetson_tegrastats_lines_total",
                               "jetson_tegrastats_parse_errors_total",
                               "jetson_tegrastats_restarts_total",
                               "jetson_tegrastats_lines_dropped_total",
                               "jetson_tegrastats_last_sample_timestamp_seconds"}
    assert samples(registry)[("jetson_tegrastats_up", ())] == 0
    state.accept_read([NANO.encode()])
    assert samples(registry)[("jetson_tegrastats_up", ())] == 1


def test_a_line_that_is_not_tegrastats_counts_as_errors_and_keeps_the_last_sample():
    registry, state = registry_for(NANO)
    state.accept_read([b"pon, 6 maj 2024, 09:26:28 UTC"])
    s = samples(registry)
    assert s[("jetson_tegrastats_parse_errors_total", ())] == 6
    assert s[("jetson_tegrastats_lines_total", ())] == 2
    assert s[("jetson_tegrastats_lines_dropped_total", (("reason", "unparsable"),))] == 1
    assert s[("jetson_ram_used_bytes", ())] == 1180 * 2 ** 20


def test_a_host_without_tegrastats_exports_no_jetson_series():
    registry, _ = registry_for(present=False)
    assert generate_latest(registry) == b""
    registry, _ = registry_for(present=None)      # not checked yet
    assert generate_latest(registry) == b""


def test_up_is_zero_before_the_first_line():
    registry, _ = registry_for()
    assert samples(registry) == {("jetson_tegrastats_up", ()): 0,
                                 ("jetson_tegrastats_lines_total", ()): 0,
                                 ("jetson_tegrastats_parse_errors_total", ()): 0,
                                 ("jetson_tegrastats_restarts_total", ()): 0,
                                 ("jetson_tegrastats_lines_dropped_total",
                                  (("reason", "superseded"),)): 0,
                                 ("jetson_tegrastats_lines_dropped_total",
                                  (("reason", "too_long"),)): 0,
                                 ("jetson_tegrastats_lines_dropped_total",
                                  (("reason", "unparsable"),)): 0}


def test_fresh_families_on_every_scrape():
    registry, state = registry_for(NANO)
    first = generate_latest(registry)
    assert generate_latest(registry) == first
    state.accept_read([NANO.replace("PLL@57C", "PLL@58C").encode()])
    assert b'jetson_temperature_celsius{sensor="pll"} 58.0' in generate_latest(registry)


def test_agent_collector():
    inv = Inventory(board_model="NVIDIA Jetson AGX Xavier Developer Kit", board_compatible=(),
                    soc="tegra194", is_tegra=True, l4t="35.4.1", jetpack="5.1.2",
                    memory_bytes=None, gpu=None, accelerators=(), devicetree_source=None)
    status = {"metrics": ComponentStatus("metrics", up=True),
              "labels": ComponentStatus("labels", up=False)}
    registry = CollectorRegistry()
    registry.register(AgentCollector(InventoryFeed(inv), lambda: status))
    s = samples(registry)
    build = [key for key in s if key[0] == "edgeagent_build_info"]
    assert len(build) == 1 and dict(build[0][1])["version"]
    assert s[("edgeagent_node_info", (("board", "NVIDIA Jetson AGX Xavier Developer Kit"),
                                      ("jetpack", "5.1.2"), ("l4t", "35.4.1"),
                                      ("soc", "tegra194")))] == 1
    assert s[("edgeagent_component_up", (("component", "metrics"),))] == 1
    assert s[("edgeagent_component_up", (("component", "labels"),))] == 0
    assert s[("edgeagent_component_degraded", (("component", "metrics"),))] == 0
    status["labels"] = ComponentStatus("labels", up=False, state="backoff")
    status["metrics"] = ComponentStatus("metrics", up=True, state="up", problem="no credentials")
    s = samples(registry)
    assert s[("edgeagent_component_degraded", (("component", "labels"),))] == 1
    assert s[("edgeagent_component_degraded", (("component", "metrics"),))] == 1


def test_one_read_counts_every_line_and_parses_the_newest():
    registry, state = registry_for()
    newer = NANO.replace("RAM 1180/", "RAM 1181/")
    assert state.accept_read([b"junk line", NANO.encode(), b"  ", newer.encode()], too_long=2)
    s = samples(registry)
    assert s[("jetson_tegrastats_lines_total", ())] == 6
    assert s[("jetson_tegrastats_lines_dropped_total", (("reason", "too_long"),))] == 2
    assert s[("jetson_tegrastats_lines_dropped_total", (("reason", "superseded"),))] == 2
    assert s[("jetson_tegrastats_lines_dropped_total", (("reason", "unparsable"),))] == 0
    assert s[("jetson_ram_used_bytes", ())] == 1181 * 2 ** 20
    assert not state.accept_read([b"", b" "]) and state.lines == 8


def test_unknown_inventory_fields_are_empty_labels():
    inv = Inventory(board_model=None, board_compatible=(), soc=None, is_tegra=False, l4t=None,
                    jetpack=None, memory_bytes=None, gpu=None, accelerators=(),
                    devicetree_source=None)
    registry = CollectorRegistry()
    registry.register(AgentCollector(InventoryFeed(inv), lambda: {}))
    text = generate_latest(registry).decode()
    assert 'edgeagent_node_info{board="",jetpack="",l4t="",soc=""} 1.0' in text


def test_openmetrics_output_is_valid():
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    registry, _ = registry_for(NANO)
    text = generate_openmetrics(registry).decode()
    assert text.endswith("# EOF\n")
    families = {f.name for f in om_parse(text)}
    assert "jetson_tegrastats_lines" in families and "jetson_power_watts" in families


def test_promtool_finds_nothing_on_any_real_line(tmp_path):
    promtool = require_tool("promtool")
    # one exposition per fixture line (each a different board and JetPack), plus the agent's own
    inv = Inventory(board_model='Board "quoted" \\ name', board_compatible=(), soc="tegra234",
                    is_tegra=True, l4t="36.4.4", jetpack="6.2.1", memory_bytes=None, gpu=None,
                    accelerators=(), devicetree_source=None)
    status = {"metrics": ComponentStatus("metrics", up=True)}
    for i, line in enumerate(all_lines()):
        registry, _ = registry_for(line)
        registry.register(AgentCollector(InventoryFeed(inv), lambda: status))
        text = generate_latest(registry)
        result = subprocess.run([promtool, "check", "metrics"], input=text,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        assert result.returncode == 0 and not result.stdout.strip(), (
            "line %d: %s\n%s" % (i, result.stdout.decode(), line))
