"""Modules holding doctor checks, in report order. Each exposes ``CHECKS = [fn, ...]``."""

CHECK_MODULES = [
    "edgeagent.doctor.checks_host",
]
