"""The open-file limit: the plan (pure) and raising it in a real child process."""

import resource
import subprocess
import sys

import pytest

from edgeagent.rlimits import WANTED_NOFILE, planned_soft_limit
from tests.conftest import REPO

INF = resource.RLIM_INFINITY


@pytest.mark.parametrize("soft,hard,planned", [
    (1024, 524288, WANTED_NOFILE),     # systemd's default: raised to what we want
    (1024, 4096, 4096),                # up to the hard limit only
    (1024, INF, WANTED_NOFILE),
    (WANTED_NOFILE, WANTED_NOFILE, None),
    (65536, 1048576, None),            # never lowered
    (INF, INF, None),
])
def test_plan(soft, hard, planned):
    assert planned_soft_limit(soft, hard) == planned


def test_the_agent_raises_its_soft_limit_where_it_may():
    code = ("import resource; from edgeagent.rlimits import raise_nofile_limit; "
            "print(raise_nofile_limit()[0], resource.getrlimit(resource.RLIMIT_NOFILE)[0])")

    def limit_soft():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(
            resource.RLIMIT_NOFILE)[1]))

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                         universal_newlines=True, preexec_fn=limit_soft, check=True).stdout
    expected = WANTED_NOFILE if hard == INF else min(WANTED_NOFILE, hard)
    assert out.split() == [str(expected), str(expected)]
