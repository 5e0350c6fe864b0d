"""HostRoot: every host path the agent touches goes through it."""

import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgeagent.hostpaths import HostRoot
from tests.costbound import bounded


def test_identity_at_slash():
    root = HostRoot("/")
    assert root.path("/proc/meminfo") == "/proc/meminfo"
    assert root.path("/dev//nvmap") == "/dev/nvmap"


def test_prefix(tmp_path):
    root = HostRoot(str(tmp_path))
    assert root.path("/proc/meminfo") == os.path.join(str(tmp_path), "proc/meminfo")
    assert root.path("/") == str(tmp_path)


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


# --- fuzzing: any links, any path: the result is inside the root ---------------------------------

COMPONENT = st.sampled_from(["a", "b", "c", "..", ".", ""])
TARGET = (st.lists(COMPONENT, min_size=1, max_size=6).map("/".join) |
          st.lists(COMPONENT, min_size=0, max_size=4).map(lambda p: "/" + "/".join(p))
          ).filter(bool)


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("EDGEAGENT_FUZZ_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(links=st.dictionaries(st.sampled_from(["a", "b", "a/b", "b/c", "c", "a/b/c"]), TARGET,
                             max_size=5),
       dirs=st.lists(st.sampled_from(["a", "b", "a/b", "c/a"]), max_size=4),
       path=(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4)
             | st.lists(COMPONENT, max_size=6)).map(lambda p: "/" + "/".join(p)))
def test_resolution_never_leaves_the_root_and_agrees_with_the_kernel_inside_it(links, dirs, path):
    import tempfile

    base = os.path.realpath(tempfile.mkdtemp(prefix="eahp-"))
    try:
        root = os.path.join(base, "r")
        os.makedirs(root)
        for d in dirs:
            os.makedirs(os.path.join(root, d), exist_ok=True)
        for name, target in links.items():
            real = os.path.join(root, name)
            parent = os.path.dirname(real)
            # Only where no link is on the way: the test must not write through its own links.
            if os.path.isdir(parent) and os.path.realpath(parent) == parent \
                    and not os.path.lexists(real):
                os.symlink(target, real)
        host = HostRoot(root)
        resolved = bounded(lambda: host.resolve(path), 1.0, 1 << 20, (OSError,))
        if isinstance(resolved, OSError):
            assert resolved.errno == 40          # only a loop may stop a resolution
            return
        assert resolved == root or resolved.startswith(root + "/")
        # Where the kernel's own resolution stays inside the root (relative links that do not
        # climb out), both agree on existing paths.
        real = os.path.realpath(os.path.join(root, path.lstrip("/")))
        relative_only = all(not t.startswith("/") for t in links.values())
        if relative_only and real.startswith(root + "/") and os.path.exists(real) \
                and ".." not in path.split("/"):
            assert os.path.realpath(resolved) == real
            event("compared with the kernel's resolution")
    finally:
        import shutil

        shutil.rmtree(base)
