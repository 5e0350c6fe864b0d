#!/usr/bin/env python3
"""ResourceSlice publish latency: how long after a device's health changes the API server holds
the new slice (the publisher's ``update()`` to the PUT stored), over repeated flips of an NVDLA
engine on the packaged demo AGX Xavier (a GPU with consumable memory and two DLAs).

    python bench/bench_dra_slices.py [--flips 200] [--interval 0.02] [--rtt-ms 0]
    python bench/bench_dra_slices.py --whole-agent [--flips 20]

--whole-agent measures the whole path instead: ``edgeagent run --gpu-mode dra`` as a process on
a fixture AGX Xavier, an NVDLA engine's device node removed and put back, until the API server
holds the slice without and with it (the health loop's watch of /dev, the health check, the
publisher, one PUT).

The test API server (tests/peers/kubeapi.py: HTTPS, client certificate of system:node:<name>,
the Node authorizer, chunked answers) runs on its own event loop in a thread; the publisher in
this one, as in the agent. --rtt-ms adds that much delay to every answer of the server (a
far-away control plane). Prints p50/p99/max and the requests per flip.
Budget: p99 < 1 s (the contract: a health change reaches the API within 1 s). Exit status 1
when over budget.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from edgeagent.app import DEMO_PACKAGE_DIR  # noqa: E402
from edgeagent.deviceplugin.model import Resource, Unit  # noqa: E402
from edgeagent.discovery.scan import discover  # noqa: E402
from edgeagent.dra.devices import build_devices  # noqa: E402
from edgeagent.dra.publisher import SlicePublisher  # noqa: E402
from edgeagent.dra.slices import slice_name  # noqa: E402
from edgeagent.hostpaths import HostRoot  # noqa: E402
from edgeagent.kube.client import CredentialCache, KubeClient  # noqa: E402
from edgeagent.kube.credentials import load_kubeconfig  # noqa: E402
from tests.peers.kubeapi import ThreadedKubeApi  # noqa: E402

BUDGET_S = 1.0
NODE = "jetson-1"


def percentile(values, p):
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def devices(inventory, dla0_healthy):
    resources = {
        "nvidia.com/gpu": Resource("nvidia.com/gpu", "gpu", (Unit("0", ("/dev/nvmap",), True),),
                                   gpu=True),
        "nvidia.com/dla": Resource("nvidia.com/dla", "nvdla", (
            Unit("nvdla0", ("/dev/nvhost-nvdla0",), dla0_healthy,
                 "" if dla0_healthy else "device node /dev/nvhost-nvdla0 is missing"),
            Unit("nvdla1", ("/dev/nvhost-nvdla1",), True)))}
    return build_devices(inventory, resources, "consumable")


async def flips(server, count, interval):
    api = server.api
    client = KubeClient(CredentialCache(lambda: load_kubeconfig(
        api.write_kubeconfig("system:node:" + NODE))), timeout=10.0)
    publisher = SlicePublisher(client, lambda: NODE, None, rng=random.Random(1))
    inventory = discover(HostRoot(DEMO_PACKAGE_DIR))
    name = slice_name(NODE)
    task = asyncio.ensure_future(publisher.run())

    def published():
        obj = api.slices.get(name)
        return [d["name"] for d in obj["spec"].get("devices", [])] if obj else None

    async def wait_for(wanted, limit=30.0):
        start = time.perf_counter()
        while published() != wanted:
            if time.perf_counter() - start > limit:
                raise SystemExit("the slice never showed %s" % wanted)
            await asyncio.sleep(0.0005)
        return time.perf_counter() - start

    try:
        publisher.update(devices(inventory, True))
        await wait_for(["gpu-0", "dla-0", "dla-1"])
        requests_before = len(api.records)
        latencies = []
        healthy = True
        for _ in range(count):
            healthy = not healthy
            wanted = ["gpu-0", "dla-0", "dla-1"] if healthy else ["gpu-0", "dla-1"]
            publisher.update(devices(inventory, healthy))
            latencies.append(await wait_for(wanted))
            await asyncio.sleep(interval * random.random())
        requests = len(api.records) - requests_before
        return latencies, requests, publisher.state
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


def whole_agent(count):
    """Latencies (s) from a device node's removal or return to the stored slice."""
    from tests.draharness import AgentProcess
    from tests.peers.hosts import FixtureHost

    host = FixtureHost("agx-xavier")
    server = ThreadedKubeApi(host.root + "-api", nodes=[NODE])
    api = server.api
    agent = AgentProcess(host, api.write_kubeconfig("system:node:" + NODE)).start()
    name = slice_name(NODE)

    def published():
        obj = api.slices.get(name)
        return [d["name"] for d in obj["spec"].get("devices", [])] if obj else None

    def wait_for(wanted, limit=30.0):
        start = time.perf_counter()
        while published() != wanted:
            if time.perf_counter() - start > limit:
                raise SystemExit("the slice never showed %s:\n%s" % (wanted, agent.text()))
            time.sleep(0.001)
        return time.perf_counter() - start

    node = "/dev/nvhost-ctrl-nvdla0"
    try:
        wait_for(["gpu-0", "dla-0", "dla-1"], 60)
        requests_before = len(api.records)
        latencies = []
        for i in range(count):
            time.sleep(0.3 + 0.7 * random.random())    # anywhere in the watch's period
            if i % 2 == 0:
                host.remove_device(node)
                latencies.append(wait_for(["gpu-0", "dla-1"]))
            else:
                host.restore_device(node)
                latencies.append(wait_for(["gpu-0", "dla-0", "dla-1"]))
        return latencies, len(api.records) - requests_before, "agent"
    finally:
        agent.stop()
        server.close()
        host.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flips", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.02,
                        help="up to this many seconds between flips (random)")
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="delay every answer of the API server by this much")
    parser.add_argument("--whole-agent", action="store_true",
                        help="the whole agent: a device node removed and put back")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.whole_agent:
        latencies, requests, state = whole_agent(args.flips)
        report(latencies, requests, state, "the whole agent, %d removals and returns of an "
               "NVDLA engine's device node" % len(latencies))
        return
    with tempfile.TemporaryDirectory() as folder:
        server = ThreadedKubeApi(folder, nodes=[NODE])
        try:
            server.api.answer_delay = args.rtt_ms / 1000.0
            latencies, requests, state = asyncio.run(flips(server, args.flips, args.interval))
        finally:
            server.close()
    report(latencies, requests, state, "%d flips of dla-0%s" % (
        len(latencies), ", %g ms added per answer" % args.rtt_ms if args.rtt_ms else ""))


def report(latencies, requests, state, what):
    ms = [x * 1000 for x in latencies]
    p99 = percentile(ms, 99)
    print("ResourceSlice publish latency after a health change (%s)" % what)
    print("| p50 | p99 | max | mean | requests per flip | publisher state | budget p99 |")
    print("|---|---|---|---|---|---|---|")
    print("| %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.2f | %s | < %d ms |" % (
        percentile(ms, 50), p99, max(ms), statistics.mean(ms), requests / max(1, len(ms)),
        state, BUDGET_S * 1000))
    if p99 > BUDGET_S * 1000:
        print("OVER BUDGET")
        sys.exit(1)

if __name__ == "__main__":
    main()
