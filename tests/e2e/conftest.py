import shutil
import tempfile

import pytest

from tests.peers.hosts import FixtureHost


@pytest.fixture(scope="session")
def shiv_root():
    """One shiv cache per test session: the first start unpacks the pyz, later starts reuse it
    (a warm cache, as on a host after its first boot), and nothing lands in $HOME."""
    d = tempfile.mkdtemp(prefix="eashiv-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def host():
    h = FixtureHost("nano")
    yield h
    h.cleanup()
