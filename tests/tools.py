"""Real peer tools (promtool, prometheus, systemd-analyze, kubectl) for tests.

Missing tools skip their tests on a developer machine, but fail them in CI
(EDGEAGENT_REQUIRE_TOOLS=1, set by ./build.sh test when CI=true): a peer test must not
silently stop running.
"""

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    message = "%s is not installed (Debian package; ./build.sh test installs it as root)" % name
    if os.environ.get("EDGEAGENT_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers the tests start)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
