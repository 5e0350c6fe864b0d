"""Modules holding doctor checks, in report order. Each exposes ``CHECKS = [fn, ...]``."""

CHECK_MODULES = [
    "edgeagent.doctor.checks_host",
    "edgeagent.doctor.checks_plugin",
    "edgeagent.doctor.checks_kube",
    "edgeagent.doctor.checks_metrics",
]
