"""The pure CDI spec builder (edgeagent/cdi/spec.py): L4T CSV entries and device-node facts in,
CDI specs out, checked against the CDI JSON schema (tests/fixtures/cdi)."""

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.cdi import spec as cdispec
from edgeagent.discovery.runtimefacts import (DeviceNodeFact, parse_cdi_spec, parse_csv,
                                              spec_mode)
from tests.costbound import within_memory
from tests.peers.hosts import BOARDS

jsonschema = pytest.importorskip("jsonschema")

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "fixtures", "cdi", "schema.json")) as f:
    SCHEMA = json.load(f)
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)

# nvgpu's nodes as a Nano has them (major 10 is misc: nvmap; the nvhost majors are dynamic).
NANO_NODES = (
    DeviceNodeFact("/dev/nvhost-ctrl", "c", 508, 0, 0o666, 0, 44),
    DeviceNodeFact("/dev/nvhost-ctrl-gpu", "c", 506, 0, 0o666, 0, 44),
    DeviceNodeFact("/dev/nvhost-prof-gpu", "c", 506, 2, 0o666, 0, 44),
    DeviceNodeFact("/dev/nvmap", "c", 10, 61, 0o666, 0, 44),
    DeviceNodeFact("/dev/nvhost-gpu", "c", 506, 1, 0o666, 0, 44),
    DeviceNodeFact("/dev/nvhost-as-gpu", "c", 506, 3, 0o666, 0, 44),
    DeviceNodeFact("/dev/nvhost-vic", "c", 508, 9, 0o660, 0, 44),
)
LIBCUDA = "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so"


def nano_facts(**changes) -> cdispec.CdiFacts:
    entries, problems = parse_csv(BOARDS["nano"].l4t_csv, "l4t.csv")
    assert problems == []
    base = dict(csv_entries=tuple(entries), links=((LIBCUDA, LIBCUDA + ".1.1"),),
                nodes=NANO_NODES)
    base.update(changes)
    return cdispec.CdiFacts(**base)


def assert_valid(doc):
    errors = sorted(VALIDATOR.iter_errors(doc), key=str)
    assert not errors, [e.message for e in errors]


def test_the_schema_accepts_nvidia_ctks_own_csv_spec_and_refuses_junk():
    # The schema is not ours to trust blindly: nvidia-ctk's real output must pass it.
    import yaml

    with open(os.path.join(HERE, "fixtures", "runtime", "cdi-csv-orin-jp6.yaml")) as f:
        assert_valid(yaml.safe_load(f))
    bad = json.loads(cdispec.render(cdispec.build_gpu_spec(nano_facts())))
    bad["devices"][0]["containerEdits"]["deviceNodes"][0]["major"] = "506"
    assert list(VALIDATOR.iter_errors(bad))
    del bad["kind"]
    assert list(VALIDATOR.iter_errors(bad))


def test_gpu_spec_from_the_nano_l4t_csv():
    doc = cdispec.build_gpu_spec(nano_facts())
    assert_valid(doc)
    assert doc["cdiVersion"] == "0.5.0" and doc["kind"] == "edgeagent.io/gpu"
    assert [d["name"] for d in doc["devices"]] == ["0", "all"]
    nodes = doc["devices"][0]["containerEdits"]["deviceNodes"]
    # CSV order first (every dev line, the VIC too, as nvidia-container-runtime's csv mode
    # gives them), then the driver's own nodes the CSV did not list: none here.
    assert [n["path"] for n in nodes] == [
        "/dev/nvhost-ctrl", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-prof-gpu", "/dev/nvmap",
        "/dev/nvhost-gpu", "/dev/nvhost-as-gpu", "/dev/nvhost-vic"]
    assert nodes[1] == {"path": "/dev/nvhost-ctrl-gpu", "type": "c", "major": 506, "minor": 0,
                        "fileMode": 0o666, "permissions": "rw", "uid": 0, "gid": 44}
    assert doc["devices"][1]["containerEdits"] == doc["devices"][0]["containerEdits"]
    common = doc["containerEdits"]
    assert common["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert common["mounts"] == [
        {"hostPath": LIBCUDA + ".1.1", "containerPath": LIBCUDA + ".1.1",
         "options": ["ro", "nosuid", "nodev", "bind"]},
        {"hostPath": "/usr/lib/aarch64-linux-gnu/tegra/libnvrm_gpu.so",
         "containerPath": "/usr/lib/aarch64-linux-gnu/tegra/libnvrm_gpu.so",
         "options": ["ro", "nosuid", "nodev", "bind"]},
        # the sym line: the file it reaches, bound at the link's own path
        {"hostPath": LIBCUDA + ".1.1", "containerPath": LIBCUDA,
         "options": ["ro", "nosuid", "nodev", "bind"]},
    ]
    # doctor's mode detection reads it as a csv-mode spec, like nvidia-ctk's.
    parsed = parse_cdi_spec(cdispec.render(doc).decode(), cdispec.GPU_SPEC_PATH)
    assert spec_mode(parsed) == "csv"
    assert parsed.qualified("0") == cdispec.gpu_device_id() == "edgeagent.io/gpu=0"


def test_a_dangling_sym_line_and_a_fake_node_are_left_out():
    facts = nano_facts(links=(), nodes=NANO_NODES[:3])
    doc = cdispec.build_gpu_spec(facts)
    assert [m["containerPath"] for m in doc["containerEdits"]["mounts"]] == [
        LIBCUDA + ".1.1", "/usr/lib/aarch64-linux-gnu/tegra/libnvrm_gpu.so"]
    assert [n["path"] for n in doc["devices"][0]["containerEdits"]["deviceNodes"]] == [
        "/dev/nvhost-ctrl", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-prof-gpu"]


def test_no_gpu_node_no_gpu_spec():
    # Libraries without a GPU node would be a spec that hands out no GPU; nvmap alone is the
    # memory allocator, not the GPU.
    assert cdispec.build_gpu_spec(nano_facts(nodes=())) is None
    assert cdispec.build_gpu_spec(nano_facts(nodes=(NANO_NODES[3],))) is None
    assert cdispec.build_specs(nano_facts(nodes=())) == {
        cdispec.GPU_SPEC_PATH: None, cdispec.DLA_SPEC_PATH: None}


def test_thor_openrm_nodes_without_csv_lines():
    # JetPack 7 lists no dev lines for OpenRM's nodes: the driver's own nodes carry the spec.
    thor = tuple(DeviceNodeFact(p, "c", 195, m, 0o666, 0, 0) for p, m in (
        ("/dev/nvidia0", 0), ("/dev/nvidiactl", 255), ("/dev/nvidia-modeset", 254)))
    uvm = (DeviceNodeFact("/dev/nvidia-uvm", "c", 511, 0, 0o666, 0, 0),
           DeviceNodeFact("/dev/nvidia-uvm-tools", "c", 511, 1, 0o666, 0, 0))
    doc = cdispec.build_gpu_spec(cdispec.CdiFacts(
        csv_entries=(("lib", "/usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1"),),
        nodes=thor + uvm))
    assert_valid(doc)
    # the driver's nodes devnodes.GPU_NODE knows, sorted; then the OpenRM ones it does not
    assert [n["path"] for n in doc["devices"][0]["containerEdits"]["deviceNodes"]] == [
        "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0", "/dev/nvidiactl",
        "/dev/nvidia-modeset"]
    assert doc["devices"][0]["containerEdits"]["deviceNodes"][1]["minor"] == 1


def test_dla_spec_one_device_per_engine():
    engines = (DeviceNodeFact("/dev/nvhost-nvdla0", "c", 507, 3, 0o660, 0, 44),
               DeviceNodeFact("/dev/nvhost-ctrl-nvdla0", "c", 507, 2, 0o660, 0, 44),
               DeviceNodeFact("/dev/nvhost-ctrl-nvdla1", "c", 507, 4, 0o660, 0, 44),
               DeviceNodeFact("/dev/host1x-fence", "c", 235, 0, 0o660, 0, 44))
    csv = parse_csv("dev, /dev/nvhost-ctrl-nvdla0\ndev, /dev/nvmap\n"
                    "lib, /usr/lib/aarch64-linux-gnu/tegra/libnvdla_runtime.so\n")[0]
    facts = cdispec.CdiFacts(csv_entries=tuple(csv), nodes=NANO_NODES[3:4] + engines)
    doc = cdispec.build_dla_spec(facts)
    assert_valid(doc)
    assert doc["kind"] == "edgeagent.io/dla"
    by_name = {d["name"]: [n["path"] for n in d["containerEdits"]["deviceNodes"]]
               for d in doc["devices"]}
    assert by_name == {"0": ["/dev/nvhost-ctrl-nvdla0", "/dev/nvhost-nvdla0"],
                       "1": ["/dev/nvhost-ctrl-nvdla1"],
                       "all": ["/dev/nvhost-ctrl-nvdla0", "/dev/nvhost-nvdla0",
                               "/dev/nvhost-ctrl-nvdla1"]}
    assert [n["path"] for n in doc["containerEdits"]["deviceNodes"]] == [
        "/dev/nvmap", "/dev/host1x-fence"]
    assert doc["containerEdits"]["mounts"][0]["containerPath"].endswith("libnvdla_runtime.so")
    assert cdispec.dla_device_id(1) == "edgeagent.io/dla=1"
    # An engine's node is never the GPU's, even when the CSV lists it as a dev line; with only
    # nvmap besides, there is no GPU spec at all.
    assert cdispec.build_gpu_spec(facts) is None


def test_render_is_stable_and_is_json():
    a = cdispec.render(cdispec.build_gpu_spec(nano_facts()))
    b = cdispec.render(cdispec.build_gpu_spec(nano_facts()))
    assert a == b and a.endswith(b"\n")
    assert json.loads(a)["kind"] == "edgeagent.io/gpu"


# --- any CSV text and any node set make a schema-valid spec, within bounds -----------------

PATHS = st.from_regex(r"/[a-z0-9_./*-]{0,30}", fullmatch=True)
LINES = st.lists(st.one_of(
    st.tuples(st.sampled_from(["dev", "lib", "sym", "dir", "bogus", ""]), PATHS).map(
        lambda t: "%s, %s" % t),
    st.text(max_size=40)), max_size=40)
NODE_PATHS = st.sampled_from(["/dev/nvhost-ctrl-gpu", "/dev/nvmap", "/dev/nvidia0",
                              "/dev/nvhost-nvdla1", "/dev/nvdla0", "/dev/nvhost-ctrl-nvdla7",
                              "/dev/host1x-fence", "/dev/nvhost-vic"])
NODES = st.lists(st.builds(DeviceNodeFact, NODE_PATHS, st.sampled_from(["c", "b"]),
                           st.integers(0, 4095), st.integers(0, 2 ** 20 - 1),
                           st.integers(0, 0o777), st.integers(0, 2 ** 32 - 1),
                           st.integers(0, 2 ** 32 - 1)), max_size=10)


@settings(max_examples=150, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(lines=LINES, nodes=NODES)
def test_fuzz_any_csv_and_nodes_give_valid_specs(lines, nodes):
    text = "\n".join(lines)

    def build():
        entries, _ = parse_csv(text, "fuzz.csv")
        links = tuple((p, p + ".target") for k, p in entries if k == "sym")
        return cdispec.build_specs(cdispec.CdiFacts(tuple(entries), links, tuple(nodes)))

    specs = within_memory(build, 4 << 20)
    for path, doc in specs.items():
        if doc is None:
            continue
        assert_valid(doc)
        parsed = parse_cdi_spec(cdispec.render(doc).decode(), path)
        assert "all" in parsed.devices
