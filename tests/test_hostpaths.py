"""HostRoot: every host path the agent touches goes through it."""

import os

import pytest

from edgeagent.hostpaths import HostRoot


def test_identity_at_slash():
    root = HostRoot("/")
    assert root.path("/proc/meminfo") == "/proc/meminfo"
    assert root.path("/dev//nvmap") == "/dev/nvmap"
    assert root.host_path("/proc/meminfo") == "/proc/meminfo"


def test_prefix(tmp_path):
    root = HostRoot(str(tmp_path))
    assert root.path("/proc/meminfo") == os.path.join(str(tmp_path), "proc/meminfo")
    assert root.path("/") == str(tmp_path)
    assert root.host_path(os.path.join(str(tmp_path), "dev/nvmap")) == "/dev/nvmap"
    assert root.host_path(str(tmp_path)) == "/"


@pytest.mark.parametrize("host_path", ["/../etc/passwd", "/../../etc/passwd", "/a/../../etc/passwd",
                                       "//etc/passwd", "/./etc/./passwd"])
def test_no_path_leaves_the_root(tmp_path, host_path):
    root = HostRoot(str(tmp_path))
    assert root.path(host_path) == os.path.join(str(tmp_path), "etc/passwd")


def test_relative_paths_are_refused(tmp_path):
    with pytest.raises(ValueError):
        HostRoot(str(tmp_path)).path("proc/meminfo")
    with pytest.raises(ValueError):
        HostRoot(str(tmp_path)).glob("dev/*")


def test_read_and_exists(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_bytes(b"jetson\xff\n")
    root = HostRoot(str(tmp_path))
    assert root.exists("/etc/hostname") and not root.exists("/etc/missing")
    assert root.read_text("/etc/hostname") == "jetson\ufffd\n"
    assert root.read_bytes("/etc/hostname", limit=3) == b"jet"
    with pytest.raises(FileNotFoundError):
        root.read_text("/etc/missing")


def test_glob_gives_sorted_host_paths(tmp_path):
    weird = tmp_path / "root[1]"          # pattern characters in the root's own name
    (weird / "dev").mkdir(parents=True)
    for name in ("nvhost-gpu", "nvhost-as-gpu", "nvmap"):
        (weird / "dev" / name).write_text("")
    root = HostRoot(str(weird))
    assert root.glob("/dev/nvhost-*") == ["/dev/nvhost-as-gpu", "/dev/nvhost-gpu"]
    assert root.glob("/dev/none*") == []
    assert repr(root) == "HostRoot(%r)" % str(weird)
