"""The prepared claims on disk: a round trip, the atomic write, and a corrupt or hostile file
that is moved aside once (the agent goes on empty, no crash loop)."""

import json
import logging
import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.dra.checkpoint import (CheckpointError, CheckpointStore, PreparedClaim,
                                      PreparedDevice, decode, encode)
from tests.costbound import within_memory

FUZZ = settings(max_examples=200, deadline=timedelta(seconds=2), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

CLAIMS = {
    "uid-1": PreparedClaim("ml", "train", "uid-1", (
        PreparedDevice(("gpu",), "jetson-1", "gpu-0", ("edgeagent.io/gpu=0",), "share-1"),
        PreparedDevice(("dla",), "jetson-1", "dla-1", ("edgeagent.io/dla=1",)))),
    "uid-2": PreparedClaim("default", "empty", "uid-2", ()),
}


@pytest.fixture
def store(tmp_path):
    return CheckpointStore(str(tmp_path / "plugins" / "edgeagent.io" / "checkpoint.json"))


def test_round_trip_and_versioned(store):
    assert store.load() == {}                            # no file yet
    store.save(CLAIMS)
    assert store.load() == CLAIMS
    body = json.loads(open(store.path).read())
    assert body["version"] == 1 and [c["uid"] for c in body["claims"]] == ["uid-1", "uid-2"]
    assert decode(encode(CLAIMS)) == CLAIMS
    assert [n for n in os.listdir(os.path.dirname(store.path))] == ["checkpoint.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(store, monkeypatch):
    store.save(CLAIMS)

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        store.save({})
    monkeypatch.undo()
    assert store.load() == CLAIMS
    assert os.listdir(os.path.dirname(store.path)) == ["checkpoint.json"]


@pytest.mark.parametrize("data, why", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'{"version": 2, "claims": []}', "version 2"),
    (b'{"version": 1, "claims": {}}', "claims is not a list"),
    (b'{"version": 1, "claims": [{"uid": "", "namespace": "a", "name": "b", "devices": []}]}',
     "uid is empty"),
    (b'{"version": 1, "claims": [{"uid": "u", "namespace": 1, "name": "b", "devices": []}]}',
     "namespace is not a string"),
    (b"[" * 100000, "not JSON"),
])
def test_a_corrupt_checkpoint_is_moved_aside_once(store, caplog, data, why):
    os.makedirs(os.path.dirname(store.path))
    with open(store.path, "wb") as f:
        f.write(data)
    with pytest.raises(CheckpointError, match=why):
        decode(data)
    caplog.set_level(logging.WARNING)
    assert store.load() == {}
    assert not os.path.exists(store.path)
    aside = [n for n in os.listdir(os.path.dirname(store.path)) if ".corrupt-" in n]
    assert len(aside) == 1
    assert len([r for r in caplog.records if "moved aside" in r.getMessage()]) == 1
    assert store.load() == {}                              # the next start: nothing to say
    assert len([r for r in caplog.records if "moved aside" in r.getMessage()]) == 1


def test_an_unreadable_checkpoint_is_not_fatal(store):
    os.makedirs(store.path)                                # a directory where the file goes
    assert store.load() == {}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.sampled_from(
                        ["version", "claims", "uid", "namespace", "name", "devices", "requests",
                         "pool", "device", "cdiIDs", "shareID"]) | st.text(max_size=5),
                        inner, max_size=6), max_leaves=50)


@FUZZ
@given(st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_hostile_files_end_in_claims_or_checkpoint_error(data):
    out = within_memory(lambda: decode(data), 4 << 20, (CheckpointError,))
    assert isinstance(out, (dict, CheckpointError))


@FUZZ
@given(st.builds(lambda v: {"version": 1, "claims": [v]}, JSON))
def test_a_claim_of_any_shape(body):
    out = within_memory(lambda: decode(json.dumps(body).encode()), 4 << 20, (CheckpointError,))
    if isinstance(out, dict):
        assert decode(encode(out)) == out


def test_an_oversized_file_is_refused_before_parsing():
    from edgeagent.dra.checkpoint import MAX_BYTES

    with pytest.raises(CheckpointError, match="more than a checkpoint holds"):
        decode(b"[" + b" " * MAX_BYTES + b"]")


def test_a_checkpoint_that_cannot_be_read_is_left_where_it_is(store, caplog):
    s = store
    os.makedirs(s.path)             # EISDIR on open: a read error, not a corrupt file
    with caplog.at_level(logging.WARNING):
        assert s.load() == {}
    assert os.path.isdir(s.path) and "cannot read the DRA checkpoint" in caplog.text
    assert not [n for n in os.listdir(os.path.dirname(s.path)) if ".corrupt-" in n]
