"""The names DRA users and the kubelet see: the driver, its sockets, its CDI kinds.

These are contracts: DeviceClasses select ``device.driver == "edgeagent.io"`` and CEL reads
``device.attributes["edgeagent.io"].<name>``; the kubelet finds the registration socket by its
folder and the DRA socket by the endpoint GetInfo names.
"""

import posixpath

DRIVER = "edgeagent.io"

# pluginregistration/v1: what GetInfo answers. The kubelet takes the first DRAPlugin service
# it knows; kubelets since 1.37 (and patched 1.36) open the device-health stream only for a
# DRAResourceHealth service listed here, so both health versions the plugin serves are named.
PLUGIN_TYPE = "DRAPlugin"
SUPPORTED_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth",
                      "v1alpha1.DRAResourceHealth")

REGISTRATION_SOCKET = DRIVER + "-reg.sock"   # in dra.registry_directory
DRA_SOCKET = "dra.sock"                       # in <dra.plugins_directory>/<DRIVER>/
CHECKPOINT = "checkpoint.json"                # beside it: the prepared claims

# Device names in the node's pool (DNS labels): "gpu-0", "dla-0", "dla-1".
GPU_DEVICE = "gpu-0"


def dla_device(engine: int) -> str:
    return "dla-%d" % engine


def plugin_folder(plugins_directory: str) -> str:
    """Host path of the driver's folder (the DRA socket and the checkpoint)."""
    return posixpath.join(plugins_directory, DRIVER)


def dra_socket(plugins_directory: str) -> str:
    """Host path of the DRA socket: GetInfo's endpoint, which the kubelet dials as it is."""
    return posixpath.join(plugin_folder(plugins_directory), DRA_SOCKET)


def registration_socket(registry_directory: str) -> str:
    return posixpath.join(registry_directory, REGISTRATION_SOCKET)
