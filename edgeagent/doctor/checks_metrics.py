"""Doctor checks of the metrics component: is tegrastats there and working, is the port ours.

The tegrastats check runs the binary for one line and terminates the child it started (process
group, bounded waits). It never calls ``tegrastats --stop``, which stops every instance on the
host, including the agent's own.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from typing import TYPE_CHECKING, Awaitable, Callable, List, Optional, Tuple

from edgeagent import safejson
from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN, CheckResult, DoctorContext

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.tegrastats.parser import TegraSample

CHECK_INTERVAL_MS = 200       # tegrastats prints its first line after one interval
_TEGRASTATS = "tegrastats"
_PORT = "metrics port"


def _is_tegra(ctx: DoctorContext) -> bool:
    if ctx.inventory is not None:
        return bool(getattr(ctx.inventory, "is_tegra", False))
    return ctx.root.exists("/etc/nv_tegra_release")


async def check_tegrastats(ctx: DoctorContext) -> CheckResult:
    """tegrastats is present, runs, and prints a line the parser understands."""
    host_path = ctx.config.options.tegrastats.path
    path = ctx.root.resolve(host_path)
    if not os.path.exists(path):
        if _is_tegra(ctx):
            return CheckResult(
                _TEGRASTATS, WARN, "no tegrastats at %s on this Jetson: no jetson_* metrics"
                % host_path,
                "install it (sudo apt install nvidia-l4t-tools) or set tegrastats.path / "
                "--tegrastats to where it is")
        return CheckResult(_TEGRASTATS, SKIP, "no tegrastats at %s (not a Jetson): the exporter "
                                              "serves the agent's own metrics only" % host_path)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        return CheckResult(_TEGRASTATS, FAIL, "%s is not an executable file" % host_path,
                           "set tegrastats.path / --tegrastats to the tegrastats binary")
    began = time.monotonic()
    outcome, detail = await _one_line(path, max(ctx.timeout, 0.5))
    elapsed_ms = (time.monotonic() - began) * 1000
    if outcome != "line":
        return CheckResult(_TEGRASTATS, FAIL, "%s %s" % (host_path, detail),
                           "run `%s --interval 1000` by hand to see why" % host_path)
    from edgeagent.tegrastats.parser import parse_line

    sample = parse_line(detail)
    if sample.empty:
        return CheckResult(_TEGRASTATS, FAIL, "%s printed a line edgeagent does not understand: "
                                              "%s" % (host_path, detail[:120]),
                           "report the line (and the board and JetPack) to edgeagent")
    summary = "%s printed a line in %.0f ms: %s" % (host_path, elapsed_ms, _describe(sample))
    if sample.unknown:
        return CheckResult(_TEGRASTATS, WARN, "%s; %d token(s) not understood: %s" % (
            summary, len(sample.unknown), " ".join(sample.unknown[:8])),
            "report the line (and the board and JetPack) to edgeagent; the rest is exported")
    if hasattr(os, "geteuid") and os.geteuid() != 0 and sample.emc_frequency_hz is None \
            and not sample.rails:
        return CheckResult(_TEGRASTATS, WARN, summary + "; without root tegrastats hides clocks, "
                                                        "engines and power rails",
                           "run the agent as root (the systemd unit does)")
    return CheckResult(_TEGRASTATS, PASS, summary)


def _describe(sample: "TegraSample") -> str:
    parts = []
    if sample.ram_total_bytes:
        parts.append("RAM %d/%d MiB" % (sample.ram_used_bytes >> 20, sample.ram_total_bytes >> 20))
    parts.append("%d CPUs" % len(sample.cpus))
    if sample.gpu_utilization is not None:
        parts.append("GPU %.0f%%" % (sample.gpu_utilization * 100))
    parts.append("%d sensors, %d rails, %d engines" % (
        len(sample.temperatures), len(sample.rails), len(sample.engines)))
    return ", ".join(parts)


async def _one_line(path: str, timeout: float) -> Tuple[str, str]:
    """("line", text) or ("error", why). The child is always terminated and reaped."""
    from edgeagent.tegrastats.lines import MAX_LINE_BYTES
    from edgeagent.tegrastats.runner import TegrastatsChild

    first: "asyncio.Future[Tuple[str, str]]" = asyncio.get_event_loop().create_future()

    def on_read(lines: List[bytes], too_long: int) -> None:
        if first.done():
            return
        if too_long:
            first.set_result(("error", "printed a line over %d bytes" % MAX_LINE_BYTES))
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if text:
                first.set_result(("line", text))
                return

    try:
        child = await TegrastatsChild.spawn(path, CHECK_INTERVAL_MS, on_read)
    except OSError as e:
        return "error", "could not be started: %s" % (e.strerror or e)
    try:
        await asyncio.wait([first, child.finished], timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        if first.done():
            return first.result()
        if not child.finished.done():
            return "error", "printed no line within %.1fs" % timeout
        errors = list(child.errors)
        return "error", "exited with status %s without a line%s" % (
            child.returncode, ": " + errors[0][:160] if errors else "")
    finally:
        await child.stop()


async def check_metrics_port(ctx: DoctorContext) -> CheckResult:
    """The metrics address is free to listen on, or already served by our own agent."""
    host, port = ctx.config.options.metrics.address
    where = "%s:%d" % (host, port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return CheckResult(_PORT, FAIL, "metrics.address %s: cannot resolve %s: %s" % (
            where, host, e.strerror), "set metrics.address / --metrics-address to HOST:PORT")
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server binds
        sock.bind(sockaddr)
        return CheckResult(_PORT, PASS, "%s is free for /metrics" % where)
    except OSError as e:
        failure = e
    finally:
        sock.close()
    if failure.errno == errno.EADDRINUSE:
        answer = await _healthz(host, port, ctx.timeout)
        if answer is not None:
            return CheckResult(_PORT, PASS, "%s is in use by a running edgeagent (/healthz says "
                                            "%s)" % (where, answer))
        return CheckResult(_PORT, FAIL, "%s is in use by another program" % where,
                           "stop it, or set metrics.address / --metrics-address to a free port")
    if failure.errno == errno.EACCES:
        return CheckResult(_PORT, FAIL, "%s: permission denied (ports below 1024 need root)"
                           % where, "use a port above 1024 in metrics.address")
    if failure.errno == errno.EADDRNOTAVAIL:
        return CheckResult(_PORT, FAIL, "%s: %s is not an address of this machine" % (where, host),
                           "set metrics.address to one of this machine's addresses, or 0.0.0.0")
    return CheckResult(_PORT, FAIL, "%s: %s" % (where, failure.strerror or failure),
                       "set metrics.address / --metrics-address to a free HOST:PORT")


async def _healthz(host: str, port: int, timeout: float) -> Optional[str]:
    """The status of an edgeagent answering /healthz on host:port, else None."""
    probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(probe, port), timeout)
        writer.write(b"GET /healthz HTTP/1.0\r\nHost: edgeagent\r\n"
                     b"Accept: application/json\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(256 * 1024), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
    _, _, body = raw.partition(b"\r\n\r\n")
    try:
        doc = safejson.loads(body.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("service") != "edgeagent":
        return None
    return str(doc.get("status"))


CHECKS: List[Callable[[DoctorContext], Awaitable[CheckResult]]] = [
    check_tegrastats, check_metrics_port]
