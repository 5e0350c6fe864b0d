"""Doctor checks of the metrics component, on fixture roots: PASS, WARN, FAIL and SKIP."""

import asyncio
import os
import sys

import pytest

from edgeagent.config import load_config
from edgeagent.doctor.runner import default_check_modules
from edgeagent.doctor.checks_metrics import CHECKS, check_metrics_port, check_tegrastats
from edgeagent.doctor.model import DoctorContext
from edgeagent.hostpaths import HostRoot
from edgeagent.tegrastats import replay
from tests.tools import free_port

LINE = ("RAM 2448/62840MB (lfb 2x4MB) SWAP 0/31420MB (cached 0MB) CPU [0%@2201,0%@2201] "
        "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305,305] cpu@42C VDD_GPU_SOC 4940mW/4940mW")


def ctx_for(root, port=None, timeout=1.5, **flags):
    if port is not None:
        flags["metrics.address"] = "127.0.0.1:%d" % port
    return DoctorContext(root=HostRoot(str(root)), config=load_config(flags=flags),
                         timeout=timeout)


def tegrastats_script(root, body):
    path = str(root) + "/usr/bin/tegrastats"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def check(ctx, fn=check_tegrastats):
    return asyncio.run(fn(ctx))


def test_the_module_is_registered():
    assert "edgeagent.doctor.checks_metrics" in default_check_modules()
    assert CHECKS == [check_tegrastats, check_metrics_port]


def test_pass_with_a_working_tegrastats(tmp_path):
    replay.write_script(str(tmp_path) + "/usr/bin/tegrastats", [LINE], python=sys.executable)
    result = check(ctx_for(tmp_path))
    assert result.status == "PASS", result
    assert "RAM 2448/62840 MiB, 2 CPUs, GPU 0%, 1 sensors, 1 rails" in result.detail


def test_skip_on_a_host_that_is_not_a_jetson(tmp_path):
    result = check(ctx_for(tmp_path))
    assert result.status == "SKIP" and "not a Jetson" in result.detail


def test_warn_when_a_jetson_has_no_tegrastats(tmp_path):
    os.makedirs(str(tmp_path / "etc"))
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R35 (release), REVISION: 4.1\n")
    result = check(ctx_for(tmp_path))
    assert result.status == "WARN" and "nvidia-l4t-tools" in result.fix


def test_warn_on_tokens_the_parser_does_not_know(tmp_path):
    tegrastats_script(tmp_path, 'echo "%s NEWTHING 5/5/5/5"\nsleep 30\n' % LINE)
    result = check(ctx_for(tmp_path))
    assert result.status == "WARN" and "NEWTHING" in result.detail


@pytest.mark.parametrize("body, words", [
    ('echo "tegrastats: cannot open /sys/kernel/debug" >&2\nexit 1\n',
     "exited with status 1 without a line: tegrastats: cannot open"),
    ("exec sleep 30\n", "printed no line within 0.5s"),
    ('head -c 100000 /dev/zero | tr "\\0" x\necho " RAM 1/2MB"\nsleep 30\n',
     "printed a line over 16384 bytes"),
    ('echo "hello world"\nsleep 30\n', "does not understand"),
])
def test_fail_when_tegrastats_does_not_work(tmp_path, body, words):
    tegrastats_script(tmp_path, body)
    result = check(ctx_for(tmp_path, timeout=0.5))
    assert result.status == "FAIL" and words in result.detail and result.fix
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _child(int(p))]


def _child(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


def test_fail_when_not_executable(tmp_path):
    path = tegrastats_script(tmp_path, "exit 0\n")
    os.chmod(path, 0o644)
    result = check(ctx_for(tmp_path))
    assert result.status == "FAIL" and "not an executable" in result.detail




def test_port_free(tmp_path):
    port = free_port()
    result = check(ctx_for(tmp_path, port), check_metrics_port)
    assert result.status == "PASS" and "free" in result.detail


def test_port_served_by_our_agent(tmp_path):
    from prometheus_client import CollectorRegistry

    from edgeagent.metrics.component import health_summary
    from edgeagent.metrics.server import MetricsServer
    from edgeagent.supervisor import ComponentStatus

    async def scenario():
        status = {"metrics": ComponentStatus("metrics", up=True, state="up")}
        server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0,
                               lambda: health_summary(status))
        await server.start()
        try:
            return await check_metrics_port(ctx_for(tmp_path, server.bound_port))
        finally:
            await server.stop()

    result = asyncio.run(scenario())
    assert result.status == "PASS" and "running edgeagent" in result.detail
    assert "says ok" in result.detail


def test_port_taken_by_another_program(tmp_path):
    async def scenario():
        async def answer(reader, writer):
            await reader.read(100)
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n{\"status\": \"ok\"}")
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await check_metrics_port(ctx_for(tmp_path, port))
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(scenario())
    assert result.status == "FAIL" and "another program" in result.detail
    assert "metrics.address" in result.fix


def test_port_on_an_address_this_host_does_not_have(tmp_path):
    ctx = DoctorContext(root=HostRoot(str(tmp_path)),
                        config=load_config(flags={"metrics.address": "192.0.2.1:19745"}))
    result = check(ctx, check_metrics_port)
    assert result.status == "FAIL" and "not an address of this machine" in result.detail
