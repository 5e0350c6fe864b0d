#!/usr/bin/env python3
"""What the device plugin's two departures from plain betterproto buy, measured.

1. Import: resident memory and time after importing the plugin's gRPC modules in a fresh
   interpreter, with and without ``lightimports.prepare_betterproto()`` (the stand-ins for
   ``dateutil.parser`` and ``betterproto._version``).
2. Encoding: time per response, betterproto building and encoding the message on every call,
   against what the server does (ListAndWatch: betterproto each time; Allocate: the cached
   ContainerAllocateResponse bytes wrapped as ``AllocateResponse`` field 1 by hand).

    python bench/bench_protobuf.py [--runs 5] [--repeat 2000]

Prints a table; no budget (it informs the decision written in server.py and lightimports.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

IMPORT_PROBE = """
import json, sys, time
t0 = time.perf_counter()
if %(light)r:
    from edgeagent.deviceplugin.lightimports import prepare_betterproto
    prepare_betterproto()
import edgeagent.deviceplugin.plugin, edgeagent.deviceplugin.server
took = time.perf_counter() - t0
rss = 0
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
print(json.dumps({"rss_kib": rss, "ms": took * 1000, "modules": len(sys.modules)}))
"""


def import_cost(light: bool, runs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE % {"light": light}], env=env,
                             stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout
        samples.append(json.loads(out))
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def encode_costs(repeat: int):
    from edgeagent.deviceplugin import allocate as alloc
    from edgeagent.deviceplugin.model import Resource, Unit
    from edgeagent.deviceplugin.proto import v1beta1 as api
    from edgeagent.discovery.runtimefacts import RuntimeFacts
    from edgeagent.deviceplugin.server import (ResourceState, allocate_response, device_list,
                                               to_proto)

    nodes = ("/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvhost-as-gpu", "/dev/nvmap")
    mounts = tuple("/usr/lib/aarch64-linux-gnu/tegra/lib%d.so" % i for i in range(200))
    facts = RuntimeFacts(csv_devices=nodes, csv_mounts=mounts)
    rows = []

    def per_call(fn) -> float:
        best = min(timeit.repeat(fn, number=repeat, repeat=3))
        return best / repeat * 1e6

    for replicas in (1, 1024):
        res = Resource("nvidia.com/gpu", "gpu", (Unit("0", nodes, True),), replicas=replicas,
                       gpu=True)
        devices = device_list(res)

        def law():
            return bytes(api.ListAndWatchResponse(
                devices=[api.Device(id=i, health=h) for i, h in devices]))
        rows.append(("ListAndWatch, %d devices (betterproto)" % len(devices),
                     "%.1f us" % per_call(law), "%d B" % len(law())))

    res = Resource("nvidia.com/gpu", "gpu", (Unit("0", nodes, True),), gpu=True)
    for strategy in ("envvar", "device-specs"):
        plan = alloc.plan_units(res, ["0"], alloc.Strategy(strategy, ""), facts)
        state = ResourceState(res, alloc.Strategy(strategy, ""), facts)
        cached = state.encoded_container(("0",))

        def betterproto_each_time():
            return bytes(api.AllocateResponse(container_responses=[to_proto(plan)]))

        def cached_container_betterproto_outer():
            part = api.ContainerAllocateResponse().parse(cached)
            return bytes(api.AllocateResponse(container_responses=[part]))

        def cached_by_hand():
            return allocate_response([state.encoded_container(("0",))])

        assert betterproto_each_time() == cached_by_hand()
        size = "%d B" % len(cached_by_hand())
        rows.append(("Allocate %s: betterproto builds+encodes" % strategy,
                     "%.1f us" % per_call(betterproto_each_time), size))
        rows.append(("Allocate %s: cached part, betterproto outer" % strategy,
                     "%.1f us" % per_call(cached_container_betterproto_outer), size))
        rows.append(("Allocate %s: cached part, outer by hand" % strategy,
                     "%.1f us" % per_call(cached_by_hand), size))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per variant")
    parser.add_argument("--repeat", type=int, default=2000, help="encodings per timing")
    args = parser.parse_args()
    plain = import_cost(False, args.runs)
    light = import_cost(True, args.runs)
    rows = [
        ("import, plain betterproto: RSS", "%.1f MiB" % (plain["rss_kib"] / 1024), ""),
        ("import, with stand-ins: RSS", "%.1f MiB" % (light["rss_kib"] / 1024),
         "%.1f MiB less" % ((plain["rss_kib"] - light["rss_kib"]) / 1024)),
        ("import, plain betterproto: time", "%.0f ms" % plain["ms"],
         "%d modules" % plain["modules"]),
        ("import, with stand-ins: time", "%.0f ms" % light["ms"],
         "%d modules" % light["modules"]),
    ]
    rows += encode_costs(args.repeat)
    width = max(len(r[0]) for r in rows)
    print("%-*s  %10s  %s" % (width, "measure (Python %d.%d)" % sys.version_info[:2], "value",
                              ""))
    for name, value, note in rows:
        print("%-*s  %10s  %s" % (width, name, value, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
