"""The v1beta1 API: field numbers and wire types as the kubelet's api.proto has them, service
paths, and generated code that matches protos/api.proto."""

import importlib
import os
import re

import pytest

from edgeagent.deviceplugin.proto import v1beta1 as api

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Transcribed from k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto:
# message -> [(field name, number, type, repeated)]; "map" fields are map<string, string>.
UPSTREAM = {
    "DevicePluginOptions": [("pre_start_required", 1, "bool", False),
                            ("get_preferred_allocation_available", 2, "bool", False)],
    "RegisterRequest": [("version", 1, "string", False), ("endpoint", 2, "string", False),
                        ("resource_name", 3, "string", False),
                        ("options", 4, "DevicePluginOptions", False)],
    "Empty": [],
    "ListAndWatchResponse": [("devices", 1, "Device", True)],
    "TopologyInfo": [("nodes", 1, "NUMANode", True)],
    "NUMANode": [("ID", 1, "int64", False)],
    "Device": [("ID", 1, "string", False), ("health", 2, "string", False),
               ("topology", 3, "TopologyInfo", False)],
    "PreStartContainerRequest": [("devices_ids", 1, "string", True)],
    "PreStartContainerResponse": [],
    "PreferredAllocationRequest": [("container_requests", 1,
                                    "ContainerPreferredAllocationRequest", True)],
    "ContainerPreferredAllocationRequest": [("available_deviceIDs", 1, "string", True),
                                            ("must_include_deviceIDs", 2, "string", True),
                                            ("allocation_size", 3, "int32", False)],
    "PreferredAllocationResponse": [("container_responses", 1,
                                     "ContainerPreferredAllocationResponse", True)],
    "ContainerPreferredAllocationResponse": [("deviceIDs", 1, "string", True)],
    "AllocateRequest": [("container_requests", 1, "ContainerAllocateRequest", True)],
    "ContainerAllocateRequest": [("devices_ids", 1, "string", True)],
    "CDIDevice": [("name", 1, "string", False)],
    "AllocateResponse": [("container_responses", 1, "ContainerAllocateResponse", True)],
    "ContainerAllocateResponse": [("envs", 1, "map", False), ("mounts", 2, "Mount", True),
                                  ("devices", 3, "DeviceSpec", True),
                                  ("annotations", 4, "map", False),
                                  ("cdi_devices", 5, "CDIDevice", True)],
    "Mount": [("container_path", 1, "string", False), ("host_path", 2, "string", False),
              ("read_only", 3, "bool", False)],
    "DeviceSpec": [("container_path", 1, "string", False), ("host_path", 2, "string", False),
                   ("permissions", 3, "string", False)],
}
UPSTREAM_METHODS = {
    "/v1beta1.Registration/Register": ("RegisterRequest", "Empty", False),
    "/v1beta1.DevicePlugin/GetDevicePluginOptions": ("Empty", "DevicePluginOptions", False),
    "/v1beta1.DevicePlugin/ListAndWatch": ("Empty", "ListAndWatchResponse", True),
    "/v1beta1.DevicePlugin/GetPreferredAllocation": ("PreferredAllocationRequest",
                                                     "PreferredAllocationResponse", False),
    "/v1beta1.DevicePlugin/Allocate": ("AllocateRequest", "AllocateResponse", False),
    "/v1beta1.DevicePlugin/PreStartContainer": ("PreStartContainerRequest",
                                                "PreStartContainerResponse", False),
}
# betterproto's Python names for the upstream ones
PY_CLASS = {"NUMANode": "NumaNode", "CDIDevice": "CdiDevice"}
PY_FIELD = {"ID": "id", "available_deviceIDs": "available_device_i_ds",
            "must_include_deviceIDs": "must_include_device_i_ds", "deviceIDs": "device_i_ds"}
WIRE = {"bool": 0, "int64": 0, "int32": 0, "string": 2, "map": 2}


def _varint(data, i):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def decode(data):
    """A minimal protobuf wire decoder: field number -> [(wire type, value)]. Independent of
    betterproto, so field numbers are checked against the table above, not against ourselves."""
    fields = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = bytes(data[i:i + n]), i + n
        else:
            raise AssertionError("unexpected wire type %d" % wire)
        fields.setdefault(number, []).append((wire, value))
    return fields


def _sample(name):
    """An instance of upstream message ``name`` with every field set (twice for repeated)."""
    cls = getattr(api, PY_CLASS.get(name, name))
    kwargs = {}
    for field, number, typ, repeated in UPSTREAM[name]:
        if typ == "bool":
            value = True
        elif typ in ("int64", "int32"):
            value = 300 + number
        elif typ == "string":
            value = "s%d" % number
        elif typ == "map":
            value = {"k%d" % number: "v"}
        else:
            value = _sample(typ)
        kwargs[PY_FIELD.get(field, field)] = [value, value] if repeated else value
    return cls(**kwargs)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_field_numbers_and_wire_types_match_upstream(name):
    data = bytes(_sample(name))
    fields = decode(data)
    expected = {number: (typ, repeated) for _, number, typ, repeated in UPSTREAM[name]}
    assert set(fields) == set(expected)
    for number, (typ, repeated) in expected.items():
        values = fields[number]
        assert len(values) == (2 if repeated else 1)
        assert all(w == WIRE.get(typ, 2) for w, _ in values)
        if typ == "map":                 # a map entry is a message {1: key, 2: value}
            entry = decode(values[0][1])
            assert entry[1][0][1] == b"k%d" % number and entry[2][0][1] == b"v"
        elif typ == "string":
            assert values[0][1] == b"s%d" % number
        elif typ in ("int64", "int32"):
            assert values[0][1] == 300 + number
        elif typ not in ("bool",):       # nested messages decode with their own numbers
            assert set(decode(values[0][1])) == {n for _, n, _, _ in UPSTREAM[typ]}


def test_register_request_bytes_by_hand():
    req = api.RegisterRequest(version="v1beta1", endpoint="x.sock", resource_name="a.b/c",
                              options=api.DevicePluginOptions(
                                  get_preferred_allocation_available=True))
    assert bytes(req) == (b"\x0a\x07v1beta1" b"\x12\x06x.sock" b"\x1a\x05a.b/c"
                          b"\x22\x02\x10\x01")


def test_service_paths_and_cardinality():
    from grpclib.const import Cardinality

    mapping = {}
    mapping.update(api.RegistrationBase().__mapping__())
    mapping.update(api.DevicePluginBase().__mapping__())
    assert set(mapping) == set(UPSTREAM_METHODS)
    for path, (req, resp, stream) in UPSTREAM_METHODS.items():
        handler = mapping[path]
        assert handler.request_type is getattr(api, PY_CLASS.get(req, req))
        assert handler.reply_type is getattr(api, PY_CLASS.get(resp, resp))
        assert handler.cardinality == (Cardinality.UNARY_STREAM if stream
                                       else Cardinality.UNARY_UNARY)


def test_the_proto_file_declares_exactly_the_upstream_api(tmp_path):
    """Compiled by protoc (grpcio-tools, the dev extra): names, numbers, types, labels."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    from google.protobuf import descriptor_pb2

    out = str(tmp_path / "api.pb")
    rc = protoc.main(["protoc", "-I", os.path.join(REPO, "protos"),
                      "--descriptor_set_out=" + out, os.path.join(REPO, "protos", "api.proto")])
    assert rc == 0
    fds = descriptor_pb2.FileDescriptorSet()
    with open(out, "rb") as f:
        fds.ParseFromString(f.read())
    (fd,) = fds.file
    assert fd.package == "v1beta1" and fd.syntax == "proto3"
    F = descriptor_pb2.FieldDescriptorProto
    scalar = {F.TYPE_BOOL: "bool", F.TYPE_STRING: "string", F.TYPE_INT64: "int64",
              F.TYPE_INT32: "int32"}
    got = {}
    for msg in fd.message_type:
        fields = []
        for f in msg.field:
            if f.type == F.TYPE_MESSAGE:
                typ = f.type_name.rsplit(".", 1)[-1]
                typ = "map" if typ.endswith("Entry") else typ
            else:
                typ = scalar[f.type]
            fields.append((f.name, f.number, typ,
                           f.label == F.LABEL_REPEATED and typ != "map"))
        got[msg.name] = fields
    assert got == UPSTREAM
    methods = {}
    for svc in fd.service:
        for m in svc.method:
            methods["/v1beta1.%s/%s" % (svc.name, m.name)] = (
                m.input_type.rsplit(".", 1)[-1], m.output_type.rsplit(".", 1)[-1],
                m.server_streaming)
            assert not m.client_streaming
    assert methods == UPSTREAM_METHODS


def _pinned(package):
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        text = f.read()
    m = re.search(r'"%s==([^"; ]+)"' % re.escape(package), text)
    assert m, "pyproject.toml's dev extra must pin %s" % package
    return m.group(1)


def test_committed_code_is_fresh(tmp_path):
    """Regenerates into a temporary folder and compares. Runs where the compiler is installed
    (the test venvs of ./build.sh test install the dev extra)."""
    pytest.importorskip("grpc_tools")
    try:
        importlib.import_module("betterproto.plugin.compiler")
    except (ImportError, SystemExit):
        pytest.skip("betterproto[compiler] is not installed")
    import black
    import isort

    wrong = ["%s %s (pinned %s)" % (m.__name__, m.__version__, _pinned(m.__name__))
             for m in (black, isort) if m.__version__ != _pinned(m.__name__)]
    if wrong:
        message = ("generated code depends on the formatter versions; installed: %s; "
                   "./build.sh test installs the pinned ones" % ", ".join(wrong))
        if os.environ.get("EDGEAGENT_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    from edgeagent import genprotos

    for target, (_, folder) in sorted(genprotos.TARGETS.items()):
        out = str(tmp_path / target)
        genprotos.generate(target, out)
        fresh = genprotos.read_tree(out)
        committed = genprotos.read_tree(folder)
        assert sorted(fresh) == sorted(committed), target
        stale = [name for name in fresh if fresh[name] != committed[name]]
        assert not stale, ("committed code in %s is stale (%s): run ./build.sh protos"
                           % (os.path.relpath(folder), ", ".join(stale)))


# --- what the server encodes itself, read by the kubelet's own messages ------------------------

def _plans():
    from edgeagent.deviceplugin.allocate import ContainerPlan, DevicePlan, MountPlan

    many = tuple(MountPlan("/usr/lib/tegra/lib%d.so" % i, "/usr/lib/tegra/lib%d.so" % i)
                 for i in range(200))                     # a part longer than 16 KiB
    return [
        ContainerPlan(envs={"NVIDIA_VISIBLE_DEVICES": "void"}, mounts=many,
                      devices=(DevicePlan("/dev/nvmap", "/dev/nvmap"),)),
        ContainerPlan(envs={"NVIDIA_VISIBLE_DEVICES": "all"}),
        ContainerPlan(annotations={"cdi.k8s.io/x": "nvidia.com/gpu=0"},
                      cdi_devices=("nvidia.com/gpu=0",)),
        ContainerPlan(),                                  # an empty answer: zero-length part
    ]


def test_allocate_response_by_hand_is_betterprotos_and_the_kubelets():
    """server.allocate_response wraps cached parts by hand (see server.py for the numbers):
    the bytes must stay exactly betterproto's, and what the kubelet's messages read."""
    from edgeagent.deviceplugin.server import allocate_response, to_proto
    from tests.peers.kubelet import api as kubelet_api

    plans = _plans()
    ours = allocate_response([bytes(to_proto(p)) for p in plans])
    assert ours == bytes(api.AllocateResponse(container_responses=[to_proto(p) for p in plans]))
    got = kubelet_api.AllocateResponse.FromString(ours).container_responses
    assert len(got) == 4
    assert [m.host_path for m in got[0].mounts] == [m.host_path for m in plans[0].mounts]
    assert all(m.read_only for m in got[0].mounts)
    assert [(d.host_path, d.permissions) for d in got[0].devices] == [("/dev/nvmap", "rw")]
    assert dict(got[1].envs) == {"NVIDIA_VISIBLE_DEVICES": "all"}
    assert [c.name for c in got[2].cdi_devices] == ["nvidia.com/gpu=0"]
    assert got[3] == kubelet_api.ContainerAllocateResponse()


def test_listings_and_preferred_answers_are_what_the_kubelet_reads():
    from edgeagent.deviceplugin.model import Resource, Unit
    from edgeagent.deviceplugin.server import listing_for, preferred_response
    from tests.peers.kubelet import api as kubelet_api

    res = Resource("nvidia.com/gpu", "gpu", (Unit("0", ("/dev/nvhost-gpu",), False, "gone"),),
                   replicas=300, gpu=True)
    listing = listing_for(res)
    got = kubelet_api.ListAndWatchResponse.FromString(listing.data)
    assert [(d.ID, d.health) for d in got.devices] == [
        ("0::%d" % k, "Unhealthy") for k in range(1, 301)]
    assert listing_for(res, listing) is listing            # unchanged: not encoded again
    healthy = Resource(res.name, res.kind, (Unit("0", ("/dev/nvhost-gpu",), True),),
                       replicas=300, gpu=True)
    assert listing_for(healthy, listing) is not listing
    data = preferred_response(healthy, [(["0::7", "0::3"], [], 1), (["0::9"], ["0::2"], 2)])
    answers = kubelet_api.PreferredAllocationResponse.FromString(data).container_responses
    assert [list(a.deviceIDs) for a in answers] == [["0::3"], ["0::2", "0::9"]]
