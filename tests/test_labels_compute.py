"""inventory + config -> labels (pure)."""


import pytest

from edgeagent.config import load_config
from edgeagent.discovery.devicetree import DeviceTree, DtNode
from edgeagent.discovery.inventory import HostFacts, build_inventory
from edgeagent.discovery.scan import discover
from edgeagent.hostpaths import HostRoot
from edgeagent.labels.compute import compute_labels, devicetree_labels, validate
from edgeagent.labels.sanitize import is_valid_key, is_valid_value
from tests.conftest import all_dtbs, dtb_path

L4T_RELEASE = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64\n"
MEMINFO = "MemTotal:        4051956 kB\n"


def node(name, path, compatible=(), children=(), status=None, **props):
    p = {"compatible": b"".join(c.encode() + b"\0" for c in compatible)} if compatible else {}
    if status:
        p["status"] = status.encode() + b"\0"
    for k, v in props.items():
        p[k] = v.encode() + b"\0"
    return DtNode(name, path, p, tuple(children))


def nano_l4t_tree(gpu_status=None):
    """The L4T (downstream) Jetson Nano tree: the one the devicetree labeller's README shows."""
    gpu = node("gpu", "/gpu", ("nvidia,tegra210-gm20b", "nvidia,gm20b"), status=gpu_status)
    fan = node("pwm-fan", "/pwm-fan", ("pwm-fan",))
    root = node("", "/", ("nvidia,jetson-nano", "nvidia,tegra210"), (gpu, fan),
                model="NVIDIA Jetson Nano Developer Kit")
    return DeviceTree(root, "test")


def inventory(tree, **facts):
    facts.setdefault("nv_tegra_release", L4T_RELEASE)
    facts.setdefault("meminfo", MEMINFO)
    return build_inventory(HostFacts(tree=tree, **facts))


@pytest.fixture
def config():
    return load_config(env={})


def opts(config, overrides):
    """The labels options of ``config`` with some keys changed."""
    return config.replace(**overrides).options.labels


def test_jetson_nano_matches_the_devicetree_labeller_readme(config):
    inv = inventory(nano_l4t_tree())
    labels = compute_labels(inv, config.options.labels).labels
    dt = {k: v for k, v in labels.items() if k.startswith("beta.devicetree.org/")}
    assert dt == {
        "beta.devicetree.org/nvidia-jetson-nano": "1",
        "beta.devicetree.org/nvidia-tegra210": "1",
        "beta.devicetree.org/nvidia-tegra210-gm20b": "1",
        "beta.devicetree.org/nvidia-gm20b": "1",
    }
    # `-n gpu pwm-fan` in the labeller is labels.extra_nodes here.
    more = compute_labels(inv, opts(config, {"labels.extra_nodes": ["gpu", "pwm-fan"]}))
    assert more.labels["beta.devicetree.org/pwm-fan"] == "1"
    assert more.labels["beta.devicetree.org/nvidia-gm20b"] == "1"  # the GPU node counted once
    assert more.problems == ()


def test_gpu_feature_discovery_labels_on_a_nano(config):
    labels = compute_labels(inventory(nano_l4t_tree()), config.options.labels).labels
    gpu = {k: v for k, v in labels.items() if k.startswith("nvidia.com/")}
    assert gpu == {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.count": "1",
        "nvidia.com/gpu.product": "NVIDIA-Tegra-X1",
        "nvidia.com/gpu.family": "maxwell",
        "nvidia.com/gpu.compute.major": "5",
        "nvidia.com/gpu.compute.minor": "3",
        "nvidia.com/gpu.machine": "NVIDIA-Jetson-Nano-Developer-Kit",
        "nvidia.com/gpu.memory": str(4051956 // 1024),
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
    }


def test_time_slicing_and_switches(config):
    inv = inventory(nano_l4t_tree())
    shared = compute_labels(inv, opts(config, {"sharing.replicas": 4})).labels
    assert shared["nvidia.com/gpu.replicas"] == "4"
    assert shared["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    assert shared["nvidia.com/gpu.product"] == "NVIDIA-Tegra-X1-SHARED"
    renamed = compute_labels(inv, opts(config, {"sharing.replicas": 4,
                                                   "sharing.rename_by_default": True})).labels
    assert renamed["nvidia.com/gpu.product"] == "NVIDIA-Tegra-X1"
    off = compute_labels(inv, opts(config, {"labels.nvidia_gpu_labels": False,
                                                "labels.devicetree_labels": False})).labels
    assert not [k for k in off if k.startswith(("nvidia.com/", "beta.devicetree.org/"))]
    assert off["edgeagent.io/board"] == "NVIDIA-Jetson-Nano-Developer-Kit"


def test_own_labels_under_the_prefix(config):
    labels = compute_labels(inventory(nano_l4t_tree()),
                            opts(config, {"labels.prefix": "example.org/"})).labels
    own = {k: v for k, v in labels.items() if k.startswith("example.org/")}
    assert own == {"example.org/board": "NVIDIA-Jetson-Nano-Developer-Kit",
                   "example.org/soc": "tegra210", "example.org/l4t": "32.7.1",
                   "example.org/jetpack": "4.6.1"}


def test_disabled_gpu_gives_no_gpu_labels(config):
    labels = compute_labels(inventory(nano_l4t_tree(gpu_status="disabled")),
                            config.options.labels).labels
    assert not [k for k in labels if k.startswith("nvidia.com/")]
    assert "beta.devicetree.org/nvidia-gm20b" not in labels


def test_demo_host_accelerator_counts(config):
    from edgeagent.app import DEMO_PACKAGE_DIR

    labels = compute_labels(discover(HostRoot(DEMO_PACKAGE_DIR)), config.options.labels).labels
    assert labels["edgeagent.io/nvdla.count"] == "2"
    assert labels["edgeagent.io/jetpack"] == "5.1.2"
    assert labels["edgeagent.io/l4t"] == "35.4.1"
    assert labels["nvidia.com/gpu.product"] == "Xavier"
    assert labels["nvidia.com/gpu.compute.major"] == "7"


@pytest.mark.parametrize("dtb", all_dtbs())
def test_every_real_board_gives_only_valid_labels(dtb, config, tmp_path):
    inv = discover(HostRoot(str(tmp_path)), dtb_path(dtb))
    result = compute_labels(inv, opts(config, {"labels.extra_nodes": ["gpu", "/cpus"]}))
    assert result.labels
    for k, v in result.labels.items():
        assert is_valid_key(k) and is_valid_value(v), (k, v)
    root_keys = [k for k in result.labels if k.startswith("beta.devicetree.org/")]
    assert len(root_keys) >= len(inv.board_compatible)


def test_orin_plus_compatible_is_mapped_not_dropped(config, tmp_path):
    inv = discover(HostRoot(str(tmp_path)), dtb_path("tegra234-p3768-0000+p3767-0005.dtb"))
    labels = compute_labels(inv, config.options.labels).labels
    assert labels["beta.devicetree.org/nvidia-p3768-0000-p3767-0005"] == "1"


def test_invalid_candidate_is_dropped_alone():
    problems = []
    out = validate([("good.io/a", "1"), ("bad key", "1"), ("good.io/b", "-bad"),
                    ("good.io/c", "2")], problems)
    assert out == {"good.io/a": "1", "good.io/c": "2"}
    assert len(problems) == 2 and "bad key" in problems[0]


def test_unknown_extra_node_is_reported(config):
    result = compute_labels(inventory(nano_l4t_tree()),
                            opts(config, {"labels.extra_nodes": ["no-such-node"]}))
    assert result.problems == ("labels.extra_nodes: no devicetree node matches 'no-such-node'",)


def test_occurrences_are_counted():
    a = node("a@1", "/a@1", ("acme,widget",))
    b = node("a@2", "/a@2", ("acme,widget",))
    tree = DeviceTree(node("", "/", ("acme,board",), (a, b)), "t")
    assert devicetree_labels(tree, None, ["a"]) == {"beta.devicetree.org/acme-board": "1",
                                                   "beta.devicetree.org/acme-widget": "2"}


def test_no_devicetree_host_gives_no_devicetree_labels(config):
    inv = build_inventory(HostFacts())
    assert compute_labels(inv, config.options.labels).labels == {}


def test_discover_json_shows_the_labels(tmp_path, capsys):
    import json

    from edgeagent.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--root", str(tmp_path), "discover", "--json", "--fdt",
              dtb_path("tegra210-p3450-0000.dtb")])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["labels"]["beta.devicetree.org/nvidia-tegra210"] == "1"
    assert doc["labels"]["nvidia.com/gpu.product"] == "NVIDIA-Tegra-X1"


def test_prefix_refused_at_config_time():
    from edgeagent.errors import ConfigError

    for bad in ("kubernetes.io/", "node.kubernetes.io/", "k8s.io/", "x.k8s.io/",
                "node-restriction.kubernetes.io/", "Edge.io/", "edgeagent.io"):
        with pytest.raises(ConfigError):
            load_config(env={"EDGEAGENT_LABELS_PREFIX": bad})
    assert load_config(env={"EDGEAGENT_LABELS_PREFIX": "edge.example.com/"}
                       ).options.labels.prefix == "edge.example.com/"
