"""What node labelling costs the API server.

1. Steady state: agents whose labels are already right, at a short drift interval, measured for a
   while; requests per drift check, extrapolated to the default interval (600 s + up to 25%
   jitter) as API requests per node per hour.
2. Stampede: N simulated agents (each its own KubeClient: own TLS connection and bearer token
   of system:node:<name>) start at once against the local test API server, without and with the
   startup jitter. Reports requests, 429s, wall time until every Node is labelled, and the
   busiest second. Optionally the server answers 429 beyond --max-rps requests per second, like
   API Priority and Fairness, to show the agents back off and still converge.

    python bench/bench_labels.py [--agents 1000] [--jitter 20] [--max-rps 300]

Everything runs in one process on 127.0.0.1; the server and the agents share one core, so wall
times are an upper bound for the agents' side.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from edgeagent.config import load_config  # noqa: E402
from edgeagent.discovery.scan import discover  # noqa: E402
from edgeagent.discovery.feed import InventoryFeed  # noqa: E402
from edgeagent.hostpaths import HostRoot  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from edgeagent.kube.client import CredentialCache, KubeClient, KubeMetrics  # noqa: E402
from edgeagent.kube.credentials import Credentials  # noqa: E402
from edgeagent.labels.compute import compute_labels  # noqa: E402
from edgeagent.labels.reconciler import DRIFT_JITTER, Reconciler  # noqa: E402
from tests.peers.kubeapi import KubeApiServer  # noqa: E402

DEFAULT_DRIFT = 600.0


def make_agent(api, name, labels, drift, jitter, seed, metrics=None):
    token = api.add_token("system:node:" + name)
    creds = Credentials(server=api.url, source="bench", ca_data=api.ca.cert_pem.bytes(),
                        token=token)
    client = KubeClient(CredentialCache(lambda: creds), timeout=10.0, metrics=metrics)
    inventory = object()
    rec = Reconciler(feed=InventoryFeed(inventory), compute=lambda inv: labels,
                     prefix="edgeagent.io/", node_name=lambda: name, client=client,
                     drift_seconds=drift, startup_jitter=jitter, rng=random.Random(seed))
    return rec, client




async def run_agents(api, names, labels, drift, jitter, until, limit, metrics=None):
    agents = [make_agent(api, n, labels, drift, jitter, i, metrics) for i, n in enumerate(names)]
    tasks = [asyncio.ensure_future(rec.run()) for rec, _ in agents]
    start = time.monotonic()
    try:
        while not until() and time.monotonic() - start < limit:
            await asyncio.sleep(0.05)
        return time.monotonic() - start, agents
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for _, c in agents))


def labelled(api, names):
    ann = "edgeagent.io/owned-labels"
    return all(ann in (api.nodes[n]["metadata"].get("annotations") or {}) for n in names)


async def steady(labels, agents, drift, seconds):
    with tempfile.TemporaryDirectory() as folder:
        names = ["steady-%d" % i for i in range(agents)]
        async with KubeApiServer(folder, nodes=names) as api:
            # Converge first, then count only what steady state costs.
            await run_agents(api, names, labels, 3600, 0, lambda: labelled(api, names), 60)
            api.records.clear()
            elapsed, agents_ = await run_agents(api, names, labels, drift, 0, lambda: False,
                                                seconds)
            reconciles = sum(rec.reconciles for rec, _ in agents_)
            gets = len(api.requests_by("GET"))
            patches = len(api.requests_by("PATCH"))
    per_check = (gets + patches) / max(1, reconciles)
    checks_per_hour = 3600.0 / (DEFAULT_DRIFT * (1 + DRIFT_JITTER / 2))
    return {"agents": agents, "seconds": elapsed, "reconciles": reconciles, "gets": gets,
            "patches": patches, "per_check": per_check,
            "per_hour": per_check * checks_per_hour}


async def stampede(labels, agents, jitter, max_rps):
    with tempfile.TemporaryDirectory() as folder:
        names = ["node-%04d" % i for i in range(agents)]
        async with KubeApiServer(folder, nodes=names) as api:
            api.max_rps = max_rps
            registry = CollectorRegistry()
            metrics = KubeMetrics(registry)
            elapsed, _ = await run_agents(api, names, labels, 3600, jitter,
                                          lambda: labelled(api, names), 900, metrics)
            failed = sum(registry.get_sample_value("edgeagent_kube_requests_total",
                                                   {"method": m, "code": "error"}) or 0
                         for m in ("GET", "PATCH"))
            done = labelled(api, names)
            records = list(api.records)
    per_second = collections.Counter(int(r.time) for r in records)
    return {"agents": agents, "jitter": jitter, "requests": len(records),
            "gets": sum(r.method == "GET" for r in records),
            "patches": sum(r.method == "PATCH" and r.status == 200 for r in records),
            "throttled": sum(r.status == 429 for r in records),
            "wall": elapsed, "peak": max(per_second.values()) if per_second else 0,
            "failed": int(failed),
            "done": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--jitter", type=float, default=20.0,
                        help="startup jitter of the second stampede run (the default option)")
    parser.add_argument("--max-rps", type=int, default=0,
                        help="server answers 429 beyond this many requests/s (0: no limit)")
    parser.add_argument("--steady-agents", type=int, default=50)
    parser.add_argument("--steady-drift", type=float, default=1.0)
    parser.add_argument("--steady-seconds", type=float, default=15.0)
    args = parser.parse_args()
    # Thousands of agents each log their state changes: keep the table readable.
    import logging

    logging.basicConfig(level=logging.CRITICAL)

    from edgeagent.app import DEMO_PACKAGE_DIR

    labels = compute_labels(discover(HostRoot(DEMO_PACKAGE_DIR)),
                            load_config(env={}).options.labels)
    print("labels per node: %d (the demo AGX Xavier)" % len(labels.labels))
    s = asyncio.run(steady(labels, args.steady_agents, args.steady_drift, args.steady_seconds))
    print("\nsteady state (labels already right)")
    print("| agents | drift check | measured for | checks | GET | PATCH | requests/check | "
          "requests/node/hour at 600 s |")
    print("|---|---|---|---|---|---|---|---|")
    print("| %d | %.1f s | %.1f s | %d | %d | %d | %.2f | %.1f |" % (
        s["agents"], args.steady_drift, s["seconds"], s["reconciles"], s["gets"], s["patches"],
        s["per_check"], s["per_hour"]))

    print("\n%d agents starting at once%s" % (
        args.agents, " (server limit %d requests/s, then 429)" % args.max_rps
        if args.max_rps else ""))
    print("| startup jitter | requests answered | GET | PATCH 200 | 429 | client timeouts/"
          "resets | busiest second | wall time to all labelled | all labelled |")
    print("|---|---|---|---|---|---|---|---|---|")
    for jitter in (0.0, args.jitter):
        r = asyncio.run(stampede(labels, args.agents, jitter, args.max_rps))
        print("| %g s | %d | %d | %d | %d | %d | %d req/s | %.1f s | %s |" % (
            jitter, r["requests"], r["gets"], r["patches"], r["throttled"], r["failed"],
            r["peak"],
            r["wall"], "yes" if r["done"] else "NO"))


if __name__ == "__main__":
    main()
