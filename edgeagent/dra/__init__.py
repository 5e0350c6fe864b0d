"""Dynamic Resource Allocation: the kubelet DRA plugin, its registration and the node's
ResourceSlices."""
