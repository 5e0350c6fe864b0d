"""Writing the agent's CDI specs from a fake root with real device nodes (os.mknod: root only),
atomically and only on change; the component's refresh; uninstall removes them."""

import asyncio
import dataclasses
import json
import os
import stat

import pytest

from edgeagent.cdi import spec as cdispec
from edgeagent.cdi.component import CdiComponent, read_cdi_facts, sync_specs
from edgeagent.cdi.writer import remove, write_if_changed
from edgeagent.discovery.runtimefacts import read_runtime_facts
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import BOARDS, CSV_DIR

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod of a character device "
                                "needs root")


def mknod(root, host_path, major, minor, mode=0o660):
    path = os.path.join(root, host_path.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, mode | stat.S_IFCHR, os.makedev(major, minor))
    os.chmod(path, mode)   # mknod's mode is masked by the umask
    return path


def put(root, host_path, text=""):
    path = os.path.join(root, host_path.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.fixture
def host(tmp_path):
    """A Nano's L4T CSV with its libraries, /var/run -> /run as on every systemd host."""
    root = str(tmp_path)
    csv = BOARDS["nano"].l4t_csv
    put(root, CSV_DIR + "/l4t.csv", csv)
    for line in csv.splitlines():
        kind, _, target = (p.strip() for p in line.partition(","))
        if kind == "lib":
            put(root, target, "ELF")
        elif kind == "sym":
            os.symlink("libcuda.so.1.1", os.path.join(root, target.lstrip("/")))
    os.makedirs(os.path.join(root, "run"))
    os.makedirs(os.path.join(root, "var"))
    os.symlink("../run", os.path.join(root, "var", "run"))
    return root


def spec_file(root, host_path=cdispec.GPU_SPEC_PATH):
    return os.path.join(root, "run", host_path[len("/var/run/"):])


@needs_root
def test_real_nodes_give_their_major_minor_and_mode(host):
    mknod(host, "/dev/nvhost-ctrl-gpu", 506, 0, 0o666)
    mknod(host, "/dev/nvmap", 10, 61, 0o644)
    put(host, "/dev/nvhost-gpu")          # a regular file is no device: left out
    assert sync_specs(HostRoot(host)) == {cdispec.GPU_SPEC_PATH: "written"}
    path = spec_file(host)                 # written through the /var/run link, inside the root
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    doc = json.load(open(path))
    nodes = doc["devices"][0]["containerEdits"]["deviceNodes"]
    assert [(n["path"], n["major"], n["minor"], n["fileMode"]) for n in nodes] == [
        ("/dev/nvhost-ctrl-gpu", 506, 0, 0o666), ("/dev/nvmap", 10, 61, 0o644)]
    # the sym line reaches libcuda.so.1.1, resolved inside the root, as a host path
    assert {"hostPath": "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1",
            "containerPath": "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so",
            "options": ["ro", "nosuid", "nodev", "bind"]} in doc["containerEdits"]["mounts"]
    assert os.listdir(os.path.dirname(path)) == ["edgeagent-gpu.json"]   # no temp file left
    # The runtime-facts layer sees it as the agent's own spec, not as an nvidia.com/gpu one.
    facts = read_runtime_facts(HostRoot(host))
    assert facts.gpu_spec() is None
    assert facts.own_spec("edgeagent.io/gpu").devices == ("0", "all")


@needs_root
def test_rewritten_only_when_the_host_changes(host):
    node = mknod(host, "/dev/nvhost-ctrl-gpu", 506, 0)
    root = HostRoot(host)
    sync_specs(root)
    before = os.stat(spec_file(host))
    assert sync_specs(root) == {}
    after = os.stat(spec_file(host))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # a driver reload gives the node another minor: a new file (rename), not an edit in place
    os.unlink(node)
    mknod(host, "/dev/nvhost-ctrl-gpu", 506, 7)
    assert sync_specs(root) == {cdispec.GPU_SPEC_PATH: "written"}
    assert os.stat(spec_file(host)).st_ino != before.st_ino
    assert json.load(open(spec_file(host)))["devices"][0]["containerEdits"][
        "deviceNodes"][0]["minor"] == 7
    # the GPU's node is gone: so is the spec
    os.unlink(os.path.join(host, "dev", "nvhost-ctrl-gpu"))
    assert sync_specs(root) == {cdispec.GPU_SPEC_PATH: "removed"}
    assert not os.path.exists(spec_file(host))


@needs_root
def test_dla_engines_get_their_own_spec(host):
    mknod(host, "/dev/nvhost-ctrl-gpu", 506, 0)
    mknod(host, "/dev/nvhost-ctrl-nvdla0", 507, 2)
    mknod(host, "/dev/nvhost-ctrl-nvdla1", 507, 4)
    assert sorted(sync_specs(HostRoot(host))) == sorted(cdispec.SPEC_PATHS)
    doc = json.load(open(spec_file(host, cdispec.DLA_SPEC_PATH)))
    assert [d["name"] for d in doc["devices"]] == ["0", "1", "all"]
    assert doc["devices"][1]["containerEdits"]["deviceNodes"][0]["minor"] == 4


def test_write_if_changed_repairs_the_mode_and_remove_is_quiet(tmp_path):
    root = HostRoot(str(tmp_path))
    assert write_if_changed(root, "/var/run/cdi/x.json", b"{}\n")
    path = os.path.join(str(tmp_path), "var", "run", "cdi", "x.json")
    os.chmod(path, 0o600)
    assert write_if_changed(root, "/var/run/cdi/x.json", b"{}\n")   # same bytes, wrong mode
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert not write_if_changed(root, "/var/run/cdi/x.json", b"{}\n")
    assert remove(root, ["/var/run/cdi/x.json", "/var/run/cdi/y.json"]) == [
        "/var/run/cdi/x.json"]


def test_a_host_without_nodes_writes_nothing(host):
    # the packaged demo host and CI machines: regular files stand for nodes
    put(host, "/dev/nvhost-ctrl-gpu")
    facts = read_cdi_facts(HostRoot(host))
    assert facts.nodes == ()
    assert sync_specs(HostRoot(host)) == {}
    assert not os.path.exists(os.path.join(host, "run", "cdi"))


def test_an_unwritable_spec_directory_is_a_problem_not_a_crash(host):
    if os.geteuid() != 0:
        pytest.skip("needs root for mknod")
    mknod(host, "/dev/nvhost-ctrl-gpu", 506, 0)
    put(host, "/run/cdi", "a file where the directory should be")
    component = CdiComponent(HostRoot(host), None, interval=0.05)

    async def go():
        task = asyncio.ensure_future(component.run(lambda: None))
        await asyncio.sleep(0.3)
        problem = component.problem()
        os.unlink(os.path.join(host, "run", "cdi"))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if os.path.exists(spec_file(host)):
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return problem

    problem = asyncio.new_event_loop().run_until_complete(go())
    assert problem is not None and "cannot write the CDI spec" in problem
    assert component.problem() is None and os.path.exists(spec_file(host))


@needs_root
def test_the_component_follows_the_inventory(host):
    from edgeagent.discovery.feed import InventoryFeed
    from edgeagent.discovery.inventory import Inventory

    empty = Inventory(board_model=None, board_compatible=(), soc=None, is_tegra=False, l4t=None,
                      jetpack=None, memory_bytes=None, gpu=None, accelerators=(),
                      devicetree_source=None)
    feed = InventoryFeed(empty)
    component = CdiComponent(HostRoot(host), feed, interval=3600)   # only the feed wakes it
    started = []

    async def go():
        task = asyncio.ensure_future(component.run(lambda: started.append(1)))
        await asyncio.sleep(0.2)
        first = os.path.exists(spec_file(host))
        mknod(host, "/dev/nvhost-ctrl-gpu", 506, 0)
        feed.publish(dataclasses.replace(empty, board_model="changed"))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if os.path.exists(spec_file(host)):
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return first

    first = asyncio.new_event_loop().run_until_complete(go())
    assert started == [1] and first is False
    assert os.path.exists(spec_file(host))
    # Stopping the agent leaves the spec: a pod's container restarting meanwhile needs it.


@needs_root
def test_uninstall_removes_the_specs(host):
    from edgeagent.install.command import uninstall

    mknod(host, "/dev/nvhost-ctrl-gpu", 506, 0)
    sync_specs(HostRoot(host))
    lines = []
    uninstall(HostRoot(host), lines.append)
    assert "removed /var/run/cdi/edgeagent-gpu.json (CDI spec)" in lines
    assert not os.path.exists(spec_file(host))
