"""Pure tables: inventory + host facts + config -> advertised resources and their health."""

import pytest

from edgeagent.config import DevicePluginOptions, ResourceConfig, SharingOptions, load_config
from edgeagent.deviceplugin.model import (DLA_RESOURCE, EDGETPU_RESOURCE, GPU_RESOURCE,
                                          SHARED_GPU_RESOURCE, HostFacts, UsbNode,
                                          build_resources, health_changes, natural_key,
                                          path_device_id, scan_plan)
from edgeagent.discovery.inventory import Accelerator, Gpu, Inventory
from edgeagent.discovery.scan import discover
from edgeagent.hostpaths import HostRoot
from tests.conftest import all_dtbs, dtb_path

NODES = ("/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvmap")


def inventory(gpu_status="okay", nodes=NODES, vendor="nvidia", source="devicetree",
              accelerators=()):
    gpu = None
    if gpu_status is not None:
        gpu = Gpu("/gpu@17000000", ("nvidia,gv11b",) if vendor == "nvidia" else ("arm,mali",),
                  gpu_status, vendor, "volta", "7.2", tuple(nodes), source)
    return Inventory("board", (), "tegra194", True, "35.4.1", "5.1.2", None, gpu,
                     tuple(accelerators), "/proc/device-tree")


def facts(*paths, status=None, usb=(), globs=None):
    return HostFacts(existing=frozenset(paths), globs=globs or {}, gpu_status=status,
                     usb=tuple(usb))


def ids(resource):
    return [(d.id, d.health) for d in resource.devices]


def Options(replicas=1, rename_by_default=False, fail_requests_greater_than_one=False,
            builtin_profiles=True, resources=()):
    """The config's DevicePluginOptions, defaults but for what a case sets."""
    return DevicePluginOptions(
        directory="/var/lib/kubelet/device-plugins", device_list_strategy="auto",
        health_interval_seconds=2.0, builtin_profiles=builtin_profiles,
        resources=tuple(resources),
        sharing=SharingOptions(replicas, rename_by_default, fail_requests_greater_than_one))


NO_PROFILES = Options(builtin_profiles=False)


def test_the_helper_matches_the_configs_defaults():
    assert Options() == load_config(None, env={}).options.device_plugin
    assert Options(replicas=4, rename_by_default=True) == load_config(None, env={}).replace(
        **{"sharing.replicas": 4, "sharing.rename_by_default": True}).options.device_plugin


@pytest.mark.parametrize("inv, host, options, expect", [
    (inventory(), facts(*NODES), NO_PROFILES, {GPU_RESOURCE: [("0", "Healthy")]}),
    (inventory(), facts(*NODES[:2]), NO_PROFILES, {GPU_RESOURCE: [("0", "Unhealthy")]}),
    (inventory(), facts(*NODES, status="disabled"), NO_PROFILES,
     {GPU_RESOURCE: [("0", "Unhealthy")]}),
    (inventory(), facts(*NODES, status="absent"), NO_PROFILES,
     {GPU_RESOURCE: [("0", "Unhealthy")]}),
    (inventory(nodes=()), facts(), NO_PROFILES, {GPU_RESOURCE: [("0", "Unhealthy")]}),
    (inventory(gpu_status="disabled"), facts(*NODES), NO_PROFILES, {}),
    (inventory(gpu_status="disabled"), facts(*NODES, status="okay"), NO_PROFILES, {}),
    (inventory(vendor="arm"), facts(*NODES), NO_PROFILES, {}),
    (inventory(gpu_status=None), facts(*NODES), NO_PROFILES, {}),
    (inventory(), facts(*NODES), Options(replicas=3, builtin_profiles=False),
     {GPU_RESOURCE: [("0::1", "Healthy"), ("0::2", "Healthy"), ("0::3", "Healthy")]}),
    (inventory(), facts(*NODES), Options(replicas=2, rename_by_default=True,
                                         builtin_profiles=False),
     {SHARED_GPU_RESOURCE: [("0::1", "Healthy"), ("0::2", "Healthy")]}),
    (inventory(), facts(*NODES), Options(replicas=1, rename_by_default=True,
                                         builtin_profiles=False),
     {GPU_RESOURCE: [("0", "Healthy")]}),
])
def test_gpu_table(inv, host, options, expect):
    got = build_resources(inv, host, options)
    assert {name: ids(r) for name, r in got.items()} == expect


def test_reasons_say_what_is_wrong():
    (gpu,) = build_resources(inventory(), facts(*NODES[:2]), NO_PROFILES).values()
    assert gpu.units[0].reason == "device node /dev/nvmap is missing"
    (gpu,) = build_resources(inventory(), facts(*NODES, status="disabled"),
                             NO_PROFILES).values()
    assert "status 'disabled'" in gpu.units[0].reason


@pytest.mark.parametrize("options, limit", [
    (Options(replicas=4, fail_requests_greater_than_one=True), 1),
    (Options(replicas=4), 0),
    (Options(replicas=1, fail_requests_greater_than_one=True), 0),
])
def test_fail_requests_greater_than_one_only_when_shared(options, limit):
    got = build_resources(inventory(), facts(*NODES), options)
    assert next(r for r in got.values() if r.gpu).max_per_container == limit


def test_gpu_that_was_advertised_stays_when_it_turns_unusable():
    before = build_resources(inventory(), facts(*NODES), NO_PROFILES)
    after = build_resources(inventory(gpu_status="disabled"), facts(*NODES), NO_PROFILES, before)
    assert ids(after[GPU_RESOURCE]) == [("0", "Unhealthy")]
    gone = build_resources(inventory(gpu_status=None), facts(*NODES), NO_PROFILES, before)
    assert ids(gone[GPU_RESOURCE]) == [("0", "Unhealthy")]
    back = build_resources(inventory(), facts(*NODES), NO_PROFILES, gone)
    assert ids(back[GPU_RESOURCE]) == [("0", "Healthy")]


JP5_DLA = ("/dev/nvhost-ctrl-nvdla0", "/dev/nvhost-ctrl-nvdla1", "/dev/nvhost-nvdla0",
           "/dev/nvhost-nvdla1")
JP6_DLA = ("/dev/nvhost-ctrl-nvdla0", "/dev/nvhost-ctrl-nvdla1")


def _dla_globs(nodes):
    return {"/dev/nvhost-nvdla*": tuple(n for n in nodes if "nvhost-nvdla" in n),
            "/dev/nvhost-ctrl-nvdla*": tuple(n for n in nodes if "ctrl-nvdla" in n),
            "/dev/nvdla*": ()}


@pytest.mark.parametrize("nodes, expect_paths", [
    (JP5_DLA, {"nvdla0": ("/dev/nvhost-ctrl-nvdla0", "/dev/nvhost-nvdla0", "/dev/nvmap"),
               "nvdla1": ("/dev/nvhost-ctrl-nvdla1", "/dev/nvhost-nvdla1", "/dev/nvmap")}),
    (JP6_DLA, {"nvdla0": ("/dev/nvhost-ctrl-nvdla0", "/dev/nvmap"),
               "nvdla1": ("/dev/nvhost-ctrl-nvdla1", "/dev/nvmap")}),
])
def test_nvdla_profile_one_device_per_engine(nodes, expect_paths):
    host = facts(*(nodes + NODES), globs=_dla_globs(nodes))
    got = build_resources(inventory(), host, Options())
    dla = got[DLA_RESOURCE]
    assert {u.id: u.paths for u in dla.units} == expect_paths
    assert all(d.healthy for d in dla.devices)
    assert EDGETPU_RESOURCE not in got


def test_nvdla_profile_switches_on_from_the_inventory_alone():
    inv = inventory(accelerators=[Accelerator("nvdla", "/bus@0/nvdla0@15880000")])
    got = build_resources(inv, facts(*NODES), Options())
    assert got[DLA_RESOURCE].devices == ()          # found, but no nodes yet: zero devices


def test_edgetpu_profile_and_no_profiles_when_switched_off():
    host = facts("/dev/apex_0", "/dev/apex_1",
                 globs={"/dev/apex_*": ("/dev/apex_1", "/dev/apex_0")})
    got = build_resources(inventory(gpu_status=None), host, Options())
    assert ids(got[EDGETPU_RESOURCE]) == [("apex_0", "Healthy"), ("apex_1", "Healthy")]
    assert build_resources(inventory(gpu_status=None), host, NO_PROFILES) == {}
    usb_tpu = Accelerator("edgetpu", "/sys/bus/usb/devices/2-1", ("usb:18d1:9302",))
    got = build_resources(inventory(gpu_status=None, accelerators=[usb_tpu]), facts(), Options())
    assert EDGETPU_RESOURCE not in got              # the profile is the PCIe Coral only


def test_config_resources_paths_usb_and_pods_per_device():
    rc = ResourceConfig("example.com/serial", ("/dev/ttyUSB*",), ("1a6e:089a",), 2)
    host = facts("/dev/ttyUSB0", "/dev/bus/usb/002/003",
                 globs={"/dev/ttyUSB*": ("/dev/ttyUSB0",)},
                 usb=[UsbNode("2-1", "1a6e", "089a", "/dev/bus/usb/002/003"),
                      UsbNode("1-1", "0bda", "8153", "/dev/bus/usb/001/002")])
    got = build_resources(inventory(gpu_status=None), host, Options(resources=(rc,)))
    res = got["example.com/serial"]
    assert ids(res) == [("ttyUSB0::1", "Healthy"), ("ttyUSB0::2", "Healthy"),
                        ("usb-2-1::1", "Healthy"), ("usb-2-1::2", "Healthy")]
    assert res.unit("usb-2-1").paths == ("/dev/bus/usb/002/003",)
    empty = build_resources(inventory(gpu_status=None), facts(), Options(resources=(rc,)))
    assert ids(empty["example.com/serial"]) == []   # advertised (the operator asked), no devices


def test_config_cannot_take_the_gpu_name_but_can_take_a_profile_name():
    rcs = (ResourceConfig(GPU_RESOURCE, ("/dev/foo*",)),
           ResourceConfig(DLA_RESOURCE, ("/dev/mydla*",)))
    host = facts(*(NODES + JP5_DLA), "/dev/mydla0",
                 globs=dict(_dla_globs(JP5_DLA), **{"/dev/mydla*": ("/dev/mydla0",)}))
    got = build_resources(inventory(), host, Options(resources=rcs))
    assert got[GPU_RESOURCE].gpu and ids(got[GPU_RESOURCE]) == [("0", "Healthy")]
    assert ids(got[DLA_RESOURCE]) == [("mydla0", "Healthy")]


def test_vanished_devices_stay_unhealthy_and_recover():
    rc = ResourceConfig("example.com/cam", ("/dev/video*",))
    opts = Options(builtin_profiles=False, resources=(rc,))
    inv = inventory(gpu_status=None)
    both = facts("/dev/video0", "/dev/video1", globs={"/dev/video*": ("/dev/video0",
                                                                       "/dev/video1")})
    one = facts("/dev/video1", globs={"/dev/video*": ("/dev/video1",)})
    r1 = build_resources(inv, both, opts)
    r2 = build_resources(inv, one, opts, r1)
    assert ids(r2[rc.name]) == [("video0", "Unhealthy"), ("video1", "Healthy")]
    assert "gone" in r2[rc.name].unit("video0").reason
    assert health_changes(r1[rc.name], r2[rc.name]) == [
        (False, "example.com/cam: device video0 is Unhealthy: device node /dev/video0 is gone")]
    r3 = build_resources(inv, both, opts, r2)
    assert ids(r3[rc.name]) == [("video0", "Healthy"), ("video1", "Healthy")]
    assert health_changes(r2[rc.name], r3[rc.name]) == [
        (True, "example.com/cam: device video0 is Healthy")]
    hot = facts("/dev/video0", "/dev/video1", "/dev/video2",
                globs={"/dev/video*": ("/dev/video0", "/dev/video1", "/dev/video2")})
    r4 = build_resources(inv, hot, opts, r3)
    assert [i for i, _ in ids(r4[rc.name])] == ["video0", "video1", "video2"]


def test_a_node_missing_from_a_multi_node_device_makes_it_unhealthy():
    host = facts(*(NODES + JP5_DLA), "/dev/nvmap", globs=_dla_globs(JP5_DLA))
    before = build_resources(inventory(), host, Options())
    less = tuple(n for n in JP5_DLA if n != "/dev/nvhost-nvdla1")
    after = build_resources(inventory(), facts(*(NODES + less), globs=_dla_globs(less)),
                            Options(), before)
    assert ids(after[DLA_RESOURCE]) == [("nvdla0", "Healthy"), ("nvdla1", "Unhealthy")]


def test_scan_plan_asks_for_what_health_needs():
    rc = ResourceConfig("example.com/x", ("/dev/x*",), ("1a6e:089a",))
    before = {"example.com/old": build_resources(
        inventory(gpu_status=None), facts("/dev/old0", globs={"/dev/old*": ("/dev/old0",)}),
        Options(builtin_profiles=False, resources=(ResourceConfig("example.com/old",
                                                                  ("/dev/old*",)),))
    )["example.com/old"]}
    plan = scan_plan(inventory(), Options(resources=(rc,)), before)
    assert set(NODES) <= set(plan.paths) and "/dev/old0" in plan.paths
    assert "/dev/x*" in plan.globs and "/dev/apex_*" in plan.globs
    assert plan.gpu_node == "/gpu@17000000" and plan.usb
    soc = scan_plan(inventory(source="soc"), NO_PROFILES, {})
    assert soc.gpu_node is None and not soc.usb and soc.globs == ()


def test_device_ids():
    assert path_device_id("/dev/apex_0") == "apex_0"
    assert path_device_id("/dev/bus/usb/001/002") == "bus_usb_001_002"
    long = path_device_id("/dev/" + "x" * 100)
    assert len(long) <= 63 and long != path_device_id("/dev/" + "x" * 101)
    assert sorted(["0::10", "0::2", "0::1"], key=natural_key) == ["0::1", "0::2", "0::10"]


@pytest.mark.parametrize("dtb", all_dtbs())
def test_real_devicetrees(dtb, tmp_path):
    """Every real DTB: a GPU resource exactly for a usable NVIDIA iGPU; no /dev nodes in an
    empty root means it is advertised Unhealthy, never Healthy."""
    inv = discover(HostRoot(str(tmp_path)), dtb_path(dtb))
    got = build_resources(inv, facts(), Options())
    has_gpu = inv.gpu is not None and inv.gpu.is_nvidia and inv.gpu.usable
    assert (GPU_RESOURCE in got) == has_gpu
    if has_gpu:
        assert ids(got[GPU_RESOURCE]) == [("0", "Unhealthy")]
    with_nodes = facts(*(inv.gpu.device_nodes if inv.gpu else ()))
    assert all(d.healthy is False for r in build_resources(inv, with_nodes, Options()).values()
               for d in r.devices)
