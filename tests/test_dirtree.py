"""The directory form of the devicetree, and which form scan.read_devicetree picks."""

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeagent.discovery.devicetree import DeviceTreeError, DtNode
from edgeagent.discovery.dirtree import MAX_PROPERTY_BYTES, read_dir_tree
from edgeagent.discovery.fdt import MAX_DEPTH, parse_fdt
from edgeagent.discovery.inventory import HostFacts, build_inventory
from edgeagent.discovery.scan import discover, read_devicetree
from edgeagent.hostpaths import HostRoot
from tests.conftest import all_dtbs, dtb_path
from tests.costbound import bounded
from tests.peers.hosts import dtb_to_dir, make_host, put_tree, write


def blob_tree(name):
    with open(dtb_path(name), "rb") as f:
        return parse_fdt(f.read(), name)


@pytest.mark.parametrize("name", all_dtbs())
def test_directory_form_gives_the_same_model_as_the_blob(name, tmp_path):
    # Two independent readings of one DTB: our parser, and dtc's decompilation written out as
    # the kernel's directory form.
    tree = blob_tree(name)
    directory = str(tmp_path / "device-tree")
    dtb_to_dir(dtb_path(name), directory)
    assert os.path.exists(os.path.join(directory, "name"))   # the kernel's extra properties
    from_dir = read_dir_tree(directory, "/proc/device-tree")
    assert from_dir.source == "/proc/device-tree"
    assert from_dir.root == tree.root
    assert [n.path for n in from_dir.walk()] == [n.path for n in tree.walk()]
    assert (build_inventory(HostFacts(tree=from_dir)).to_json()["gpu"]
            == build_inventory(HostFacts(tree=tree)).to_json()["gpu"])
    a = build_inventory(HostFacts(tree=from_dir))
    b = build_inventory(HostFacts(tree=tree))
    assert (a.board_model, a.soc, a.gpu, a.accelerators) == (b.board_model, b.soc, b.gpu,
                                                             b.accelerators)


def test_without_the_kernel_name_properties_too(tmp_path):
    dtb_to_dir(dtb_path("tegra194-p2972-0000.dtb"), str(tmp_path), kernel_names=False)
    assert read_dir_tree(str(tmp_path), "x").root == blob_tree("tegra194-p2972-0000.dtb").root


def test_a_real_name_property_is_kept(tmp_path):
    # A "name" that differs from the unit name is the node's own property, not the kernel's.
    write(str(tmp_path), "/compatible", b"v,b\0")
    write(str(tmp_path), "/chosen/name", b"something-else\0")
    tree = read_dir_tree(str(tmp_path), "x")
    assert tree.get("/chosen").props == {"name": b"something-else\0"}


def test_links_inside_the_tree_are_not_nodes(tmp_path):
    write(str(tmp_path), "/compatible", b"v,b\0")
    os.makedirs(str(tmp_path / "soc"))
    os.symlink(str(tmp_path / "soc"), str(tmp_path / "loop"))       # would recurse forever
    os.symlink("/etc/hostname", str(tmp_path / "soc" / "leak"))     # a host file
    os.mkfifo(str(tmp_path / "soc" / "fifo"))                       # would block a read
    tree = read_dir_tree(str(tmp_path), "x")
    assert [n.path for n in tree.walk()] == ["/", "/soc"]
    assert tree.get("/soc").props == {}


def test_oversize_property_is_an_error(tmp_path):
    write(str(tmp_path), "/big", b"\0" * (MAX_PROPERTY_BYTES + 1))
    with pytest.raises(DeviceTreeError, match="property /big is over"):
        read_dir_tree(str(tmp_path), "/proc/device-tree")


def test_too_deep_is_an_error(tmp_path):
    deep = os.path.join(str(tmp_path), *["n"] * (MAX_DEPTH + 1))
    os.makedirs(deep)
    with pytest.raises(DeviceTreeError, match="deeper than %d" % MAX_DEPTH):
        read_dir_tree(str(tmp_path), "/proc/device-tree")


def test_missing_or_empty_directory_is_an_error(tmp_path):
    with pytest.raises(DeviceTreeError, match="not a directory"):
        read_dir_tree(str(tmp_path / "none"), "/proc/device-tree")
    with pytest.raises(DeviceTreeError, match="empty directory"):
        read_dir_tree(str(tmp_path), "/proc/device-tree")


# --- which form scan.read_devicetree picks ------------------------------------------------------

NANO, XAVIER, ORIN = ("tegra210-p3450-0000.dtb", "tegra194-p2972-0000.dtb",
                      "tegra234-p3768-0000+p3767-0005.dtb")


def model(tree):
    return tree.root.string("model")


def test_preference_proc_then_sys_then_fdt(tmp_path):
    root = str(tmp_path)
    put_tree(root, NANO, "proc")
    dtb_to_dir(dtb_path(XAVIER), os.path.join(root, "sys/firmware/devicetree/base"))
    shutil.copyfile(dtb_path(ORIN), os.path.join(root, "sys/firmware/fdt"))
    host = HostRoot(root)

    tree, error = read_devicetree(host)
    assert (tree.source, model(tree), error) == ("/proc/device-tree",
                                                 "NVIDIA Jetson Nano Developer Kit", None)
    shutil.rmtree(os.path.join(root, "proc/device-tree"))
    tree, error = read_devicetree(host)
    assert (tree.source, model(tree), error) == ("/sys/firmware/devicetree/base",
                                                 "NVIDIA Jetson AGX Xavier Developer Kit", None)
    shutil.rmtree(os.path.join(root, "sys/firmware/devicetree"))
    tree, error = read_devicetree(host)
    assert (tree.source, model(tree), error) == ("/sys/firmware/fdt",
                                                 "NVIDIA Jetson Orin Nano Developer Kit", None)


def test_proc_link_stays_inside_the_root(tmp_path):
    # On a real host /proc/device-tree -> /sys/firmware/devicetree/base, an absolute link.
    root = make_host(str(tmp_path), XAVIER, form="sys")
    assert os.readlink(os.path.join(root, "proc/device-tree")).startswith("/")
    tree, error = read_devicetree(HostRoot(root))
    assert error is None
    assert tree.source == "/proc/device-tree"
    assert tree.root == blob_tree(XAVIER).root


@pytest.mark.parametrize("breakage", ["oversize", "deep", "empty", "file"])
def test_broken_directory_forms_fall_through(tmp_path, breakage):
    root = str(tmp_path)
    broken = os.path.join(root, "proc/device-tree")
    os.makedirs(broken)
    if breakage == "oversize":
        write(broken, "/compatible", b"\0" * (MAX_PROPERTY_BYTES + 1))
    elif breakage == "deep":
        os.makedirs(os.path.join(broken, *["n"] * (MAX_DEPTH + 2)))
    elif breakage == "file":
        os.rmdir(broken)
        write(root, "/proc/device-tree", "not a directory")
    put_tree(root, ORIN, "blob")
    tree, error = read_devicetree(HostRoot(root))
    assert error is None
    assert tree.source == "/sys/firmware/fdt"
    assert model(tree) == "NVIDIA Jetson Orin Nano Developer Kit"


def test_every_form_broken_reports_every_error(tmp_path):
    root = str(tmp_path)
    write(root, "/proc/device-tree/compatible", b"\0" * (MAX_PROPERTY_BYTES + 1))
    os.makedirs(os.path.join(root, "sys/firmware/devicetree/base"))
    with open(dtb_path(NANO), "rb") as f:
        write(root, "/sys/firmware/fdt", f.read()[:1000])
    tree, error = read_devicetree(HostRoot(root))
    assert tree is None
    assert "/proc/device-tree: property /compatible is over" in error
    assert "/sys/firmware/devicetree/base: empty directory" in error
    assert "/sys/firmware/fdt: truncated" in error
    with pytest.raises(DeviceTreeError, match="/sys/firmware/fdt: truncated"):
        discover(HostRoot(root))


def test_no_tree_at_all(tmp_path):
    root = make_host(str(tmp_path))
    assert read_devicetree(HostRoot(root)) == (None, None)
    inventory = discover(HostRoot(root))
    assert inventory.has_devicetree is False
    assert inventory.devicetree_error is None
    assert inventory.memory_bytes == 7765304 * 1024


@pytest.mark.parametrize("form", ["blob", "proc", "sys"])
def test_discover_is_the_same_for_every_form(tmp_path, form):
    root = make_host(str(tmp_path), XAVIER, form=form, release="R35.4.1",
                     dev=["/dev/nvhost-gpu", "/dev/nvhost-ctrl-gpu", "/dev/nvmap"])
    inventory = discover(HostRoot(root))
    expected = discover(HostRoot(make_host(str(tmp_path / "ref"), XAVIER, form="blob",
                                           release="R35.4.1",
                                           dev=["/dev/nvhost-gpu", "/dev/nvhost-ctrl-gpu",
                                                "/dev/nvmap"])))
    assert inventory.devicetree_source == {"blob": "/sys/firmware/fdt", "proc": "/proc/device-tree",
                                           "sys": "/proc/device-tree"}[form]
    strip = lambda doc: {k: v for k, v in doc.items() if k != "devicetree"}  # noqa: E731
    assert strip(inventory.to_json()) == strip(expected.to_json())


# --- fuzzing: any folder gives the tree it holds, or one error line, within bounds ----------------

NAME = st.sampled_from(["compatible", "status", "name", "reg", "gpu@0", "a", "b@1,2", "#cells",
                        "x" * 200, "\u00e9t\u00e9", "n"])
FILE = st.tuples(st.just("file"), st.binary(max_size=64))
SPECIAL = st.sampled_from([("link", "/etc/passwd"), ("link", "../../../.."), ("link", "."),
                           ("fifo", None)])


def folders(depth):
    entry = st.one_of(FILE, SPECIAL) if depth == 0 else st.one_of(
        FILE, SPECIAL, st.deferred(lambda: folders(depth - 1)))
    return st.tuples(st.just("dir"), st.dictionaries(NAME, entry, max_size=6))


def materialise(folder, real):
    """Write a generated folder; return the node it should read as (links and FIFOs are not
    part of the tree), built here from the generated data, not by the reader."""
    os.makedirs(real, exist_ok=True)
    props, children = {}, []
    for name, (kind, value) in sorted(folder[1].items()):
        path = os.path.join(real, name)
        if kind == "file":
            with open(path, "wb") as f:
                f.write(value)
            props[name] = value
        elif kind == "link":
            os.symlink(value, path)
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            children.append((name, materialise((kind, value), path)))
    return props, children


def expected_node(name, path, content):
    props, children = content
    props = dict(props)
    if props.get("name") == name.split("@")[0].encode() + b"\0":
        del props["name"]
    kids = tuple(expected_node(n, (path.rstrip("/") + "/" + n), c) for n, c in children)
    return DtNode(name, path, props, kids)


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("EDGEAGENT_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(folders(3))
@example(("dir", {"name": ("file", b"\x00")}))     # only the kernel's empty root name: empty
def test_fuzzed_folders_read_as_written_or_fail_in_one_line(folder):
    base = tempfile.mkdtemp(prefix="eadt-")
    try:
        content = materialise(folder, os.path.join(base, "dt"))
        result = bounded(lambda: read_dir_tree(os.path.join(base, "dt"), "/proc/device-tree"),
                         2.0, 16 << 20, (DeviceTreeError,))
    finally:
        shutil.rmtree(base)
    if isinstance(result, DeviceTreeError):
        assert str(result).startswith("/proc/device-tree: ") and "\n" not in str(result)
        # Empty once the kernel's own root "name" property (an empty string) is dropped.
        expected = expected_node("", "/", content)
        assert "empty directory" in str(result) and not expected.props and not expected.children
        return
    assert result.root == expected_node("", "/", content)


def test_many_big_properties_hit_the_total_bound(tmp_path):
    from edgeagent.discovery.dirtree import MAX_TREE_BYTES

    for i in range(MAX_TREE_BYTES // MAX_PROPERTY_BYTES + 1):
        write(str(tmp_path), "/n%d/blob" % i, b"\0" * MAX_PROPERTY_BYTES)
    error = bounded(lambda: read_dir_tree(str(tmp_path), "/proc/device-tree"), 10.0,
                    MAX_TREE_BYTES + (8 << 20), (DeviceTreeError,))
    assert "over %d bytes in total" % MAX_TREE_BYTES in str(error)
