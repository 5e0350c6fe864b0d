"""The device plugin's cdi strategy with the agent's own specs, against the grpcio kubelet: the
demo Xavier's nodes made real (os.mknod: root only), the specs written by the CDI component's
sync, Allocate answering edgeagent.io/gpu=0 and edgeagent.io/dla=N."""

import os
import shutil
import stat

import pytest

from edgeagent.cdi.component import sync_specs
from edgeagent.hostpaths import HostRoot
from tests.dpharness import AgentThread
from tests.peers.hosts import short_root
from tests.peers.kubelet import FakeKubelet
from tests.tools import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod needs root")


@pytest.fixture
def root():
    path = short_root()
    # the demo host's stand-ins (regular files) become character devices
    for minor, name in enumerate(sorted(os.listdir(os.path.join(path, "dev")))):
        node = os.path.join(path, "dev", name)
        os.unlink(node)
        os.mknod(node, 0o660 | stat.S_IFCHR, os.makedev(507, minor))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_cdi_strategy_answers_the_agents_device_ids(root, cleanup):
    assert len(sync_specs(HostRoot(root))) == 2
    kubelet = FakeKubelet(os.path.join(root, "var/lib/kubelet/device-plugins")).start()
    cleanup.append(kubelet)
    agent = AgentThread(root, {"device_plugin.device_list_strategy": "cdi"})
    cleanup.append(agent)
    agent.start()
    kubelet.wait_registrations(2)
    gpu = kubelet.clients["nvidia.com/gpu"].allocate(["0"]).container_responses[0]
    assert [d.name for d in gpu.cdi_devices] == ["edgeagent.io/gpu=0"]
    assert dict(gpu.annotations) == {"cdi.k8s.io/edgeagent_nvidia.com_gpu": "edgeagent.io/gpu=0"}
    assert dict(gpu.envs) == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert not gpu.devices and not gpu.mounts
    dla = kubelet.clients["nvidia.com/dla"]
    wait_until(lambda: [d.name for d in dla.allocate(["nvdla1"]).container_responses[0]
                        .cdi_devices] == ["edgeagent.io/dla=1"],
               timeout=10, interval=0.05, what="DLA under cdi")
    both = dla.allocate(["nvdla0", "nvdla1"]).container_responses[0]
    assert [d.name for d in both.cdi_devices] == ["edgeagent.io/dla=0", "edgeagent.io/dla=1"]
    assert not both.devices
