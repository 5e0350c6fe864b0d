"""Prometheus collectors: the latest tegrastats sample, and the agent's own state.

Custom collectors build fresh metric families on every scrape from state that is already in
memory, so a scrape never waits on tegrastats, and a value the last line did not print is absent
rather than stale. Names are a contract (issue 4); HELP says the unit and the tegrastats field.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, List, Mapping, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edgeagent import __version__

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.discovery.feed import InventoryFeed
    from edgeagent.supervisor import ComponentStatus
    from edgeagent.tegrastats.parser import TegraSample
    from edgeagent.tegrastats.runner import TegrastatsState

# name -> HELP. Gauges unless listed in _COUNTERS.
TEGRASTATS_HELP = {
    "jetson_ram_used_bytes": "RAM in use, in bytes (tegrastats RAM X/Y: X, MiB)",
    "jetson_ram_total_bytes": "RAM available to Linux, in bytes (tegrastats RAM X/Y: Y, MiB)",
    "jetson_ram_lfb_blocks": "Count of free blocks of the largest free size "
                             "(tegrastats RAM (lfb NxZ): N)",
    "jetson_ram_lfb_block_bytes": "Largest free memory block, in bytes "
                                  "(tegrastats RAM (lfb NxZ): Z)",
    "jetson_swap_used_bytes": "Swap in use, in bytes (tegrastats SWAP X/Y: X, MiB)",
    "jetson_swap_total_bytes": "Swap size, in bytes (tegrastats SWAP X/Y: Y, MiB)",
    "jetson_swap_cached_bytes": "Swap cached, in bytes (tegrastats SWAP (cached Z): Z, MiB)",
    "jetson_iram_used_bytes": "IRAM in use, in bytes (tegrastats IRAM X/Y: X, KiB)",
    "jetson_iram_total_bytes": "IRAM size, in bytes (tegrastats IRAM X/Y: Y, KiB)",
    "jetson_cpu_utilization_ratio": "CPU core load, ratio 0-1 (tegrastats CPU [X%@F]: X)",
    "jetson_cpu_frequency_hertz": "CPU core clock, in hertz (tegrastats CPU [X%@F]: F, MHz)",
    "jetson_cpu_online": "1 if the CPU core is online, 0 if off (tegrastats CPU [..,off,..])",
    "jetson_emc_utilization_ratio": "External memory controller load, ratio 0-1 "
                                    "(tegrastats EMC_FREQ X%@F: X)",
    "jetson_emc_frequency_hertz": "External memory controller clock, in hertz "
                                  "(tegrastats EMC_FREQ X%@F: F, MHz)",
    "jetson_gpu_utilization_ratio": "GPU load, ratio 0-1 (tegrastats GR3D_FREQ X%@F: X)",
    "jetson_gpu_frequency_hertz": "GPU clock per graphics processing cluster, in hertz "
                                  "(tegrastats GR3D_FREQ X%@[F0,F1]: F, MHz)",
    "jetson_engine_frequency_hertz": "Engine clock, in hertz (tegrastats NAME X%@F or NAME F: F, "
                                     "MHz; APE, VIC, NVENC, NVDEC, NVJPG, NVDLA, PVA, OFA)",
    "jetson_engine_utilization_ratio": "Engine load, ratio 0-1 (tegrastats NAME X%@F: X)",
    "jetson_engine_active": "1 if the engine is clocked, 0 if off or at 0 Hz "
                            "(tegrastats NAME off / NAME X%@F)",
    "jetson_temperature_celsius": "Thermal zone temperature, in degrees Celsius (tegrastats "
                                  "sensor@TC: T; sensor names lower-cased; -256 C, off, omitted)",
    "jetson_power_watts": "Power rail draw now, in watts (tegrastats RAIL C/A: C, mW)",
    "jetson_power_average_watts": "Power rail average draw since tegrastats started, in watts "
                                  "(tegrastats RAIL C/A: A, mW)",
    "jetson_tegrastats_up": "1 if tegrastats printed a line within the last 3 intervals",
    "jetson_tegrastats_lines": "Lines read from tegrastats (count)",
    "jetson_tegrastats_parse_errors": "tegrastats tokens not understood by the parser (count)",
    "jetson_tegrastats_lines_dropped": "tegrastats lines read but not turned into a sample, by "
                                       "reason: too_long (over 16 KiB, skipped whole), "
                                       "unparsable (no known field), superseded (a newer line "
                                       "came in the same read) (count)",
    "jetson_tegrastats_restarts": "Times the tegrastats child was restarted after it exited or "
                                  "hung (count)",
    "jetson_tegrastats_last_sample_timestamp_seconds": "Unix time of the last parsed tegrastats "
                                                       "line, in seconds",
}
_COUNTERS = ("jetson_tegrastats_lines", "jetson_tegrastats_parse_errors",
             "jetson_tegrastats_lines_dropped", "jetson_tegrastats_restarts")


class TegrastatsCollector:
    """Metrics from a :class:`~edgeagent.tegrastats.runner.TegrastatsState`.

    On a host without tegrastats it yields nothing. When the last line is older than 3 intervals,
    only ``jetson_tegrastats_up 0``, the counters and the last sample time remain.
    """

    def __init__(self, state: "TegrastatsState") -> None:
        self.state = state

    def describe(self) -> List[Metric]:
        # For the registry's duplicate check: every name, whatever the host has now.
        return [CounterMetricFamily(name, help_text) if name in _COUNTERS
                else GaugeMetricFamily(name, help_text)
                for name, help_text in TEGRASTATS_HELP.items()]

    def collect(self) -> Iterator[Metric]:
        state = self.state
        if not state.present:
            return
        sample = state.fresh_sample()
        up = GaugeMetricFamily("jetson_tegrastats_up", TEGRASTATS_HELP["jetson_tegrastats_up"],
                               value=1 if sample is not None else 0)
        yield up
        for name, value in (("jetson_tegrastats_lines", state.lines),
                            ("jetson_tegrastats_parse_errors", state.parse_errors),
                            ("jetson_tegrastats_restarts", state.restarts)):
            yield CounterMetricFamily(name, TEGRASTATS_HELP[name], value=value)
        name = "jetson_tegrastats_lines_dropped"
        dropped = CounterMetricFamily(name, TEGRASTATS_HELP[name], labels=["reason"])
        for reason, count in sorted(state.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        if state.sample_time is not None:
            name = "jetson_tegrastats_last_sample_timestamp_seconds"
            yield GaugeMetricFamily(name, TEGRASTATS_HELP[name], value=state.sample_time)
        if sample is not None:
            yield from sample_families(sample)


def _gauge(name: str, labels: Optional[List[str]] = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, TEGRASTATS_HELP[name], labels=labels)


def sample_families(sample: "TegraSample") -> Iterator[GaugeMetricFamily]:
    """The gauges of one TegraSample: only the values the line had."""
    for name, value in (
            ("jetson_ram_used_bytes", sample.ram_used_bytes),
            ("jetson_ram_total_bytes", sample.ram_total_bytes),
            ("jetson_ram_lfb_blocks", sample.ram_lfb_blocks),
            ("jetson_ram_lfb_block_bytes", sample.ram_lfb_block_bytes),
            ("jetson_swap_used_bytes", sample.swap_used_bytes),
            ("jetson_swap_total_bytes", sample.swap_total_bytes),
            ("jetson_swap_cached_bytes", sample.swap_cached_bytes),
            ("jetson_iram_used_bytes", sample.iram_used_bytes),
            ("jetson_iram_total_bytes", sample.iram_total_bytes),
            ("jetson_emc_utilization_ratio", sample.emc_utilization),
            ("jetson_emc_frequency_hertz", sample.emc_frequency_hz),
            ("jetson_gpu_utilization_ratio", sample.gpu_utilization)):
        if value is not None:
            family = _gauge(name)
            family.add_metric([], value)
            yield family
    if sample.cpus:
        util = _gauge("jetson_cpu_utilization_ratio", ["cpu"])
        freq = _gauge("jetson_cpu_frequency_hertz", ["cpu"])
        online = _gauge("jetson_cpu_online", ["cpu"])
        for core in sample.cpus:
            cpu = [str(core.index)]
            online.add_metric(cpu, 1 if core.online else 0)
            if core.utilization is not None:
                util.add_metric(cpu, core.utilization)
            if core.frequency_hz is not None:
                freq.add_metric(cpu, core.frequency_hz)
        yield from _nonempty(util, freq, online)
    if sample.gpcs:
        gpc = _gauge("jetson_gpu_frequency_hertz", ["gpc"])
        for g in sample.gpcs:
            if g.frequency_hz is not None:
                gpc.add_metric([str(g.index)], g.frequency_hz)
        yield from _nonempty(gpc)
    if sample.engines:
        freq = _gauge("jetson_engine_frequency_hertz", ["engine"])
        util = _gauge("jetson_engine_utilization_ratio", ["engine"])
        active = _gauge("jetson_engine_active", ["engine"])
        for e in sample.engines:
            engine = [e.name]
            if e.frequency_hz is not None:
                freq.add_metric(engine, e.frequency_hz)
            if e.utilization is not None:
                util.add_metric(engine, e.utilization)
            if e.active is not None:
                active.add_metric(engine, 1 if e.active else 0)
        yield from _nonempty(freq, util, active)
    if sample.temperatures:
        temp = _gauge("jetson_temperature_celsius", ["sensor"])
        for t in sample.temperatures:
            temp.add_metric([t.sensor], t.celsius)
        yield temp
    if sample.rails:
        now = _gauge("jetson_power_watts", ["rail"])
        avg = _gauge("jetson_power_average_watts", ["rail"])
        for r in sample.rails:
            now.add_metric([r.name], r.current_watts)
            if r.average_watts is not None:
                avg.add_metric([r.name], r.average_watts)
        yield from _nonempty(now, avg)


def _nonempty(*families: GaugeMetricFamily) -> Iterable[GaugeMetricFamily]:
    return [f for f in families if f.samples]


class AgentCollector:
    """``edgeagent_build_info``, ``edgeagent_node_info``, ``edgeagent_component_up`` and
    ``edgeagent_component_degraded``."""

    def __init__(self, inventory_feed: "InventoryFeed",
                 status: Callable[[], Mapping[str, "ComponentStatus"]]) -> None:
        self.inventory_feed = inventory_feed
        self.status = status

    def describe(self) -> List[Metric]:
        return [
            GaugeMetricFamily("edgeagent_build_info", _BUILD_HELP),
            GaugeMetricFamily("edgeagent_node_info", _NODE_HELP),
            GaugeMetricFamily("edgeagent_component_up", _UP_HELP),
            GaugeMetricFamily("edgeagent_component_degraded", _DEGRADED_HELP),
        ]

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("edgeagent_build_info", _BUILD_HELP,
                                  labels=["version", "python"])
        build.add_metric([__version__, platform.python_version()], 1)
        yield build
        inv = self.inventory_feed.current
        node = GaugeMetricFamily("edgeagent_node_info", _NODE_HELP,
                                 labels=["board", "soc", "l4t", "jetpack"])
        node.add_metric([inv.board_model or "", inv.soc or "", inv.l4t or "", inv.jetpack or ""],
                        1)
        yield node
        up = GaugeMetricFamily("edgeagent_component_up", _UP_HELP, labels=["component"])
        degraded = GaugeMetricFamily("edgeagent_component_degraded", _DEGRADED_HELP,
                                     labels=["component"])
        for name, st in sorted(self.status().items()):
            up.add_metric([name], 1 if st.up else 0)
            degraded.add_metric([name], 1 if st.degraded else 0)
        yield up
        yield degraded


_BUILD_HELP = "Always 1; the labels say the edgeagent version and the Python running it"
_NODE_HELP = ("Always 1; the labels say the board model, SoC, L4T release and JetPack version "
              "from discovery (empty when unknown)")
_UP_HELP = "1 if the supervised component is up (started and not failed), else 0"
_DEGRADED_HELP = ("1 while the component crash-loops (waiting to restart, or out of its restart "
                  "budget) or says it cannot do its job (no credentials...), else 0; "
                  "/healthz says why")
