"""Kubelet device plugin: advertises the GPU and other accelerators as extended resources."""
