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


# --- links never lead outside the root ------------------------------------------------------------

@pytest.fixture
def outside(tmp_path):
    """A secret outside the root, and the root next to it."""
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0:secret\n")
    root = tmp_path / "root"
    root.mkdir()
    return str(root), str(secret)


def link(root, host_path, target):
    real = os.path.join(root, host_path.lstrip("/"))
    os.makedirs(os.path.dirname(real), exist_ok=True)
    os.symlink(target, real)


@pytest.mark.parametrize("target", [
    "{secret}/passwd",                            # absolute, to the real file
    "../../../../../../../../{rel}/passwd",       # relative, climbing past the root
    "/../../../{rel}/passwd",
])
def test_a_link_to_a_file_outside_resolves_inside(outside, target):
    root, secret = outside
    target = target.format(secret=secret, rel=secret.lstrip("/"))
    link(root, "/etc/nv_tegra_release", target)
    host = HostRoot(root)
    real = host.resolve("/etc/nv_tegra_release")
    assert real.startswith(root + "/")
    with pytest.raises(FileNotFoundError):
        host.read_text("/etc/nv_tegra_release")
    assert not host.exists("/etc/nv_tegra_release")
    assert host.lexists("/etc/nv_tegra_release") and host.islink("/etc/nv_tegra_release")


def test_a_link_inside_the_root_is_followed_inside_it(outside):
    root, secret = outside
    os.makedirs(os.path.join(root, "real/etc"))
    with open(os.path.join(root, "real/etc/passwd"), "w") as f:
        f.write("inside\n")
    link(root, "/etc", "/real/etc")                   # absolute: from the root
    link(root, "/a/b/passwd", "../../real/etc/passwd")  # relative
    host = HostRoot(root)
    assert host.read_text("/etc/passwd") == "inside\n"
    assert host.read_text("/a/b/passwd") == "inside\n"
    assert host.path("/etc/passwd") == os.path.join(root, "real/etc/passwd")


def test_directory_links_and_globs_stay_inside(outside):
    root, secret = outside
    link(root, "/sys/bus/usb/devices/1-1", secret)             # a sysfs device link
    link(root, "/dev", "../../../../" + secret.lstrip("/"))
    host = HostRoot(root)
    assert host.glob("/sys/bus/usb/devices/*/passwd") == []
    assert host.glob("/dev/*") == []
    assert host.listdir("/sys/bus/usb/devices") == ["1-1"]
    with pytest.raises(FileNotFoundError):
        host.listdir("/dev")


def test_link_loops_stop(outside):
    root, _ = outside
    link(root, "/a", "/b")
    link(root, "/b", "/a")
    host = HostRoot(root)
    with pytest.raises(OSError) as e:
        host.read_text("/a")
    assert e.value.errno == 40      # ELOOP
    assert not host.exists("/a")


def test_a_fifo_does_not_hang_a_read(tmp_path):
    os.mkfifo(str(tmp_path / "meminfo"))
    with pytest.raises(OSError, match="not a regular file"):
        HostRoot(str(tmp_path)).read_text("/meminfo")


def test_absent_and_unreadable_are_told_apart():
    import errno

    from edgeagent.hostpaths import is_absent

    assert is_absent(FileNotFoundError(errno.ENOENT, "x"))
    assert is_absent(NotADirectoryError(errno.ENOTDIR, "x"))
    for code in (errno.EMFILE, errno.ENFILE, errno.EACCES, errno.EIO):
        assert not is_absent(OSError(code, "x"))
