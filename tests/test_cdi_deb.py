"""The Debian package's postrm removes the agent's CDI specs (and nothing else in the spec
directory), run in a private mount namespace with a fresh /run, as tests/test_deb.py runs it."""

import os
import subprocess

import pytest

from edgeagent.cdi.spec import SPEC_PATHS
from tests.conftest import REPO
from tests.tools import require_tool

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a private /run: root only")

SCRIPT = r"""
set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/cache
mkdir -p /var/run/cdi
for f in $SPECS /var/run/cdi/nvidia.yaml; do echo x > "$f"; done
sh "$POSTRM" "$ACTION"
ls /var/run/cdi
"""


@pytest.mark.parametrize("action", ["remove", "purge"])
def test_postrm_removes_only_the_agents_specs(action):
    unshare = require_tool("unshare")
    env = dict(os.environ, SPECS=" ".join(SPEC_PATHS), ACTION=action,
               POSTRM=os.path.join(REPO, "packaging", "deb", "postrm"))
    done = subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c", SCRIPT],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["nvidia.yaml"]
