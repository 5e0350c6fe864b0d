"""Device plugin metrics, collected from the live plugin state at scrape time.

Names are a contract (the exporter and the dashboard use them):
``edgeagent_device_plugin_registered{resource}``, ``edgeagent_device_plugin_devices{resource,
health}``, ``edgeagent_device_plugin_allocations_total{resource,result}`` and
``edgeagent_device_plugin_registrations_total{resource}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Tuple

from edgeagent.deviceplugin.model import HEALTHY, UNHEALTHY

if TYPE_CHECKING:  # pragma: no cover - types only
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

    from edgeagent.deviceplugin.server import ResourceState


class DevicePluginCollector:
    """A prometheus_client custom collector over ``states()`` (name -> ResourceState)."""

    def __init__(self, states: Callable[[], Mapping[str, ResourceState]]) -> None:
        self._states = states

    def _families(self) -> Tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily,
                                 CounterMetricFamily]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        return (
            GaugeMetricFamily("edgeagent_device_plugin_registered",
                              "1 while the resource is registered with the kubelet, else 0",
                              labels=["resource"]),
            GaugeMetricFamily("edgeagent_device_plugin_devices",
                              "Devices advertised to the kubelet, by health "
                              "(Healthy, Unhealthy)", labels=["resource", "health"]),
            CounterMetricFamily("edgeagent_device_plugin_allocations",
                                "Allocate calls answered, by result (ok, error)",
                                labels=["resource", "result"]),
            CounterMetricFamily("edgeagent_device_plugin_registrations",
                                "Successful registrations with the kubelet (the first and every "
                                "re-registration after a kubelet restart)", labels=["resource"]),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        registered, devices, allocations, registrations = self._families()
        for name, state in sorted(self._states().items()):
            registered.add_metric([name], 1 if state.registered else 0)
            counts = state.resource.health_counts()
            for health in (HEALTHY, UNHEALTHY):
                devices.add_metric([name, health], counts.get(health, 0))
            for result in ("ok", "error"):
                allocations.add_metric([name, result], state.allocations.get(result, 0))
            registrations.add_metric([name], state.registrations)
        return iter((registered, devices, allocations, registrations))
