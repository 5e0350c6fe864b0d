"""Hostile input for what the device plugin reads from outside: the kubelet's device ids
(Allocate, GetPreferredAllocation; any string the kubelet or a stale checkpoint sends), and
the kubelet's checkpoint file doctor reads. Each input must end in an answer or the documented
refusal, within a time and memory bound."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.deviceplugin.allocate import (AllocationError, preferred_allocation,
                                             validate_allocate)
from edgeagent.deviceplugin.model import Resource, Unit, natural_key
from edgeagent.doctor.checks_plugin import parse_checkpoint
from tests.costbound import within_memory

# Per input: hypothesis' deadline bounds the time, tracemalloc the memory allocated.
FUZZ = settings(max_examples=300, deadline=500,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PEAK_BYTES = 8 << 20


def bounded(fn, *args):
    return within_memory(lambda: fn(*args), PEAK_BYTES)


RES = Resource("nvidia.com/gpu", "gpu", (Unit("0", ("/dev/nvhost-gpu",), True),),
               replicas=64, gpu=True)
OURS = [d.id for d in RES.devices]
ids = st.one_of(st.sampled_from(OURS), st.text(max_size=80),
                st.text(alphabet="0123456789:", min_size=1, max_size=6000),
                st.sampled_from(["", "0", "0::0", "0::65", "0::01", "0::\u0661", "0::\uff11",
                                 "\x00", "0::1\n"]))


@FUZZ
@given(st.text(max_size=10000), st.text(max_size=100))
def test_natural_key_orders_any_text(a, b):
    ka, kb = bounded(natural_key, a), natural_key(b)
    assert (ka < kb) + (ka == kb) + (ka > kb) == 1     # any two keys compare, one way


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10 ** 30), st.integers(0, 10 ** 30), st.integers(0, 3))
def test_natural_key_orders_numbers_by_value(m, n, zeros):
    a, b = "0::%s%d" % ("0" * zeros, m), "0::%d" % n
    assert (natural_key(a) < natural_key(b)) == (m < n)
    assert (natural_key(a) == natural_key(b)) == (m == n)


@FUZZ
@given(st.lists(st.lists(ids, max_size=70), max_size=5))
def test_allocate_requests_end_in_an_answer_or_a_refusal(requests):
    try:
        units = bounded(validate_allocate, RES, requests)
    except AllocationError as e:
        assert e.code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION")
        assert len(str(e)) < 1000            # the ids list is summarised, not echoed
        return
    assert units == [("0",)] * len(requests)


@FUZZ
@given(st.lists(ids, max_size=200), st.lists(ids, max_size=5), st.integers(-5, 300))
def test_preferred_allocation_picks_only_available_healthy_devices(available, must, size):
    got = bounded(preferred_allocation, RES, available, must, size)
    extra = got[len(dict.fromkeys(must)):]
    assert len(set(extra)) == len(extra)
    assert set(extra) <= set(available) & set(OURS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner,
                                                                 max_size=4),
    max_leaves=30)


@FUZZ
@given(st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: __import__("json").dumps(v).encode()),
    st.integers(1, 100000).map(lambda n: b"[" * n + b"]" * n),          # deep nesting
    st.integers(1, 10000).map(lambda n: b'{"Data": {"RegisteredDevices": {"a/b": [' +
                              b"9" * n + b"]}}}"),                     # huge integers
    st.dictionaries(st.text(max_size=30), st.lists(st.text(max_size=5), max_size=3),
                    max_size=20).map(lambda d: __import__("json").dumps(
                        {"Data": {"RegisteredDevices": d}}).encode())))
def test_the_kubelet_checkpoint_is_parsed_or_rejected(data):
    got = bounded(parse_checkpoint, data)
    assert got is None or all(isinstance(n, str) for n in got)


def test_the_checkpoint_shapes():
    assert parse_checkpoint(b'{"Data": {"PodDeviceEntries": null, "RegisteredDevices": '
                            b'{"nvidia.com/gpu": ["0"]}}, "Checksum": 1}') == {"nvidia.com/gpu"}
    assert parse_checkpoint(b'{"Data": {"RegisteredDevices": null}}') == set()
    assert parse_checkpoint(b'{"Data": {"RegisteredDevices": ["x"]}}') is None
    assert parse_checkpoint(b"[" * 100000) is None
    assert parse_checkpoint(b"\xff") is None
