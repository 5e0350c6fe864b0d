"""Pure: which devices of a ResourceClaim this driver prepares on this node, or why it cannot.

The claim is the API server's JSON (``resource.k8s.io/v1``; v1beta1 and v1beta2 have the same
``status.allocation.devices.results[]``: request, driver, pool, device, optional shareID). It is
outside input: anything not shaped like a claim is a ClaimError, never another exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, List, Mapping, Optional, Tuple

API_GROUP = "resource.k8s.io/"


class ClaimError(Exception):
    """One claim that cannot be prepared: the message says why and what to do (the kubelet
    shows it in the pod's events and retries)."""


@dataclass(frozen=True)
class ClaimRef:
    """A claim as the kubelet names it in NodePrepareResources."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return "%s/%s" % (self.namespace, self.name)


@dataclass(frozen=True)
class AllocatedDevice:
    """One allocation result of our driver: the request that got it, and which device."""

    requests: Tuple[str, ...]
    pool: str
    device: str
    share_id: Optional[str] = None     # set when the device is shared (consumable capacity)


def _show(value: Any) -> str:
    """A short, safe rendering of an outside value for a message (repr of a deeply nested one
    would recurse, of a long one flood the pod's events)."""
    if isinstance(value, str):
        return repr(value[:80]) + ("..." if len(value) > 80 else "")
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "<int>"
    return "<%s>" % type(value).__name__


def _field(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, Mapping):
        raise ClaimError("%s is not an object" % what)
    return obj.get(key)


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ClaimError("%s is missing or not a string" % what)
    return value


def devices_to_prepare(claim: Any, ref: ClaimRef, driver: str, pool: str,
                       known_devices: Collection[str]) -> Tuple[AllocatedDevice, ...]:
    """The results of ``claim`` for ``driver``, all of which must be in ``pool`` (the node's
    name) and name a device in ``known_devices``. Results of other drivers are theirs to
    prepare. ClaimError when the claim is not the one the kubelet means, not allocated, or
    allocated elsewhere."""
    if not isinstance(claim, Mapping):
        raise ClaimError("the API server's answer for claim %s is not an object" % ref)
    api_version = claim.get("apiVersion")
    if api_version is not None and (not isinstance(api_version, str)
                                    or not api_version.startswith(API_GROUP)):
        raise ClaimError("the API server's answer for claim %s is not a ResourceClaim "
                         "(apiVersion %s)" % (ref, _show(api_version)))
    uid = _field(claim.get("metadata"), "uid", "metadata")
    if uid != ref.uid:
        raise ClaimError("claim %s now has uid %s, the kubelet asked for %s: it was "
                         "deleted and re-created; delete the pod that used the old claim so "
                         "it gets the new one" % (ref, _show(uid), _show(ref.uid)))
    allocation = _field(claim.get("status") or {}, "allocation", "status")
    if not allocation:
        raise ClaimError("claim %s is not allocated yet (the scheduler allocates it before the "
                         "pod is bound); the kubelet retries" % ref)
    results = _field(_field(allocation, "devices", "status.allocation") or {}, "results",
                     "status.allocation.devices")
    if results is None:
        results = []
    if not isinstance(results, list):
        raise ClaimError("claim %s: status.allocation.devices.results is not a list" % ref)
    out: List[AllocatedDevice] = []
    for i, result in enumerate(results):
        what = "claim %s: status.allocation.devices.results[%d]" % (ref, i)
        if _field(result, "driver", what) != driver:
            continue
        request = _string(result.get("request"), what + ".request")
        result_pool = _string(result.get("pool"), what + ".pool")
        device = _string(result.get("device"), what + ".device")
        share_id = result.get("shareID")
        if share_id is not None and not isinstance(share_id, str):
            raise ClaimError("%s.shareID is not a string" % what)
        if result_pool != pool:
            raise ClaimError("claim %s is allocated to %s in pool %s, not to this node "
                             "(%s): the pod was bound to another node than the claim's; delete "
                             "the pod" % (ref, _show(device), _show(result_pool), pool))
        if device not in known_devices:
            raise ClaimError("claim %s is allocated to %s, which this node does not have "
                             "(it has %s): the ResourceSlice was stale; delete the pod so its "
                             "claim is allocated again" % (ref, _show(device),
                                                           ", ".join(sorted(known_devices))
                                                           or "no devices"))
        # A firstAvailable request's result names "<request>/<subrequest>"; the kubelet
        # matches request_names against the container's resources.claims[].request, which is
        # the request alone: the subrequest would leave the container without its device.
        base_request = request.split("/", 1)[0]
        out.append(AllocatedDevice((base_request,), result_pool, device, share_id or None))
    return tuple(out)
