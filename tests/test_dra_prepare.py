"""The Preparer: cold and cached prepares, one piece of work per claim, per-claim errors,
the checkpoint kept in step, and its metrics."""

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from edgeagent.dra.checkpoint import CheckpointStore
from edgeagent.dra.claims import ClaimRef
from edgeagent.dra.metrics import DraMetrics
from edgeagent.dra.model import DraDevice
from edgeagent.dra.prepare import Preparer
from edgeagent.kube.errors import KubeError, KubeNetworkError
from tests.draharness import NODE, Claims, claim

DEVICES = (DraDevice("gpu-0", "gpu", True, "", ("edgeagent.io/gpu=0",), {}, {}),
           DraDevice("dla-0", "dla", False, "gone", ("edgeagent.io/dla=0",), {}, {}))
A = ClaimRef("ml", "a", "uid-a")
B = ClaimRef("ml", "b", "uid-b")


class Rig:
    def __init__(self, tmp_path, claims=None, node=lambda: NODE):
        self.registry = CollectorRegistry()
        self.claims = claims or Claims()
        self.store = CheckpointStore(str(tmp_path / "edgeagent.io" / "checkpoint.json"))
        self.preparer = Preparer(self.store, self.claims.read, node, DraMetrics(self.registry),
                                 read_timeout=0.2)
        self.preparer.update_devices(DEVICES)

    def value(self, name, **labels):
        return self.registry.get_sample_value(name, labels)


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    r.claims.put(claim("ml", "a", "uid-a", ("gpu", "gpu-0")))
    r.claims.put(claim("ml", "b", "uid-b", ("dla", "dla-0"), ("gpu", "gpu-0")))
    return r


def test_cold_then_cached_without_an_api_call(rig):
    async def go():
        await rig.preparer.load()
        first = await rig.preparer.prepare([A, B])
        rig.claims.outage = KubeNetworkError("down")
        second = await rig.preparer.prepare([A, B])
        return first, second

    first, second = run(go())
    assert first == second
    assert [(d.device, d.cdi_ids, d.requests) for d in first["uid-b"].devices] == [
        ("dla-0", ("edgeagent.io/dla=0",), ("dla",)), ("gpu-0", ("edgeagent.io/gpu=0",),
                                                       ("gpu",))]
    assert sorted(rig.claims.reads) == [("ml", "a"), ("ml", "b")]     # read concurrently: any order
    assert rig.value("edgeagent_dra_prepares_total", result="ok") == 4
    assert rig.value("edgeagent_dra_prepared_claims") == 2
    assert rig.value("edgeagent_dra_node_prepare_seconds_count") == 2
    assert set(rig.store.load()) == {"uid-a", "uid-b"}       # recorded before answering


def test_concurrent_calls_for_one_claim_do_the_work_once(rig):
    rig.claims.delay = 0.05

    async def go():
        return await asyncio.gather(*(rig.preparer.prepare([A]) for _ in range(5)))

    answers = run(go())
    assert all(a == answers[0] for a in answers) and answers[0]["uid-a"].error == ""
    assert rig.claims.reads == [("ml", "a")]


def test_errors_are_per_claim(tmp_path):
    claims = Claims()
    rig = Rig(tmp_path, claims)
    claims.put(claim("ml", "a", "uid-a", ("gpu", "gpu-0")))
    claims.table[("ml", "f")] = KubeError("GET: 403 Forbidden", 403, "Forbidden")
    claims.table[("ml", "s")] = KubeError("GET: 503", 503)
    claims.table[("ml", "v")] = ValueError("a reader's own bug")
    refs = [A, ClaimRef("ml", "f", "uid-f"), ClaimRef("ml", "s", "uid-s"),
            ClaimRef("ml", "v", "uid-v")]
    out = run(rig.preparer.prepare(refs))
    assert out["uid-a"].error == ""
    assert "Node authorizer" in out["uid-f"].error
    assert "kubelet retries" in out["uid-s"].error
    assert "a reader's own bug" in out["uid-v"].error
    assert rig.value("edgeagent_dra_prepares_total", result="error") == 3
    assert set(rig.preparer.claims) == {"uid-a"}


def test_a_hanging_api_server_is_that_claims_timeout(rig):
    rig.claims.delay = 5
    out = run(rig.preparer.prepare([A]))
    assert "timed out" in out["uid-a"].error


def test_an_unknown_node_name_is_an_error_not_a_crash(tmp_path):
    def nameless():
        raise RuntimeError("no credentials")

    rig = Rig(tmp_path, node=nameless)
    out = run(rig.preparer.prepare([A]))
    assert "node_name" in out["uid-a"].error


def test_a_checkpoint_that_cannot_be_written_fails_the_claim_and_keeps_nothing(rig,
                                                                               monkeypatch):
    def full(claims):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rig.store, "save", full)
    out = run(rig.preparer.prepare([A]))
    assert "cannot record claim ml/a in the checkpoint" in out["uid-a"].error
    assert "No space left" in out["uid-a"].error
    assert rig.preparer.claims == {}
    monkeypatch.undo()
    assert run(rig.preparer.prepare([A]))["uid-a"].error == ""     # the kubelet's retry


def test_unprepare_removes_waits_for_a_prepare_in_flight_and_accepts_unknown(rig):
    rig.claims.delay = 0.05

    async def go():
        prepare = asyncio.ensure_future(rig.preparer.prepare([A, B]))
        await asyncio.sleep(0.01)
        errors = await rig.preparer.unprepare([A, ClaimRef("ml", "x", "uid-x")])
        return await prepare, errors

    prepared, errors = run(go())
    assert prepared["uid-a"].error == "" and errors == {"uid-a": "", "uid-x": ""}
    assert set(rig.store.load()) == {"uid-b"}
    assert rig.value("edgeagent_dra_unprepares_total", result="ok") == 2
    assert rig.value("edgeagent_dra_prepared_claims") == 1


def test_an_unprepare_that_cannot_be_recorded_keeps_the_claim(rig, monkeypatch):
    run(rig.preparer.prepare([A]))

    def full(claims):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rig.store, "save", full)
    errors = run(rig.preparer.unprepare([A]))
    assert "No space left" in errors["uid-a"] and "uid-a" in rig.preparer.claims
    assert rig.value("edgeagent_dra_unprepares_total", result="error") == 1


def test_a_new_preparer_answers_from_the_checkpoint(rig, tmp_path):
    first = run(rig.preparer.prepare([A]))
    again = Rig(tmp_path, Claims())
    run(again.preparer.load())
    assert run(again.preparer.prepare([A])) == first
    assert again.claims.reads == []
