"""The prepared claims on disk, so an agent restart answers NodePrepareResources for a claim it
prepared before without asking the API server again, and NodeUnprepareResources knows it.

Parsing and encoding are pure; ``CheckpointStore`` does the (blocking) file I/O and is called
from a worker thread. The file is ours (versioned JSON); a corrupt one is moved aside once and
the agent goes on empty: the kubelet calls NodePrepareResources again for every claim of a
running pod after an agent restart, so nothing is lost but one API read per claim.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from edgeagent import safejson
from edgeagent.atomicfile import write_atomic

log = logging.getLogger(__name__)

VERSION = 1
MAX_BYTES = 16 * 2 ** 20      # thousands of claims fit in far less; a bigger file is not ours


class CheckpointError(Exception):
    """A checkpoint that cannot be read as ours."""


@dataclass(frozen=True)
class PreparedDevice:
    """One device of a prepared claim, as NodePrepareResources answers it."""

    requests: Tuple[str, ...]
    pool: str
    device: str
    cdi_ids: Tuple[str, ...]
    share_id: Optional[str] = None


@dataclass(frozen=True)
class PreparedClaim:
    namespace: str
    name: str
    uid: str
    devices: Tuple[PreparedDevice, ...]


Claims = Mapping[str, PreparedClaim]    # by uid


def encode(claims: Claims) -> bytes:
    body = {"version": VERSION, "claims": [
        {"namespace": c.namespace, "name": c.name, "uid": c.uid, "devices": [
            dict({"requests": list(d.requests), "pool": d.pool, "device": d.device,
                  "cdiIDs": list(d.cdi_ids)}, **({"shareID": d.share_id} if d.share_id else {}))
            for d in c.devices]}
        for _, c in sorted(claims.items())]}
    return json.dumps(body, indent=1, sort_keys=True).encode()


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise CheckpointError("%s is not a string" % what)
    return value


def _strs(value: Any, what: str) -> Tuple[str, ...]:
    if not isinstance(value, list):
        raise CheckpointError("%s is not a list" % what)
    return tuple(_str(v, what) for v in value)


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise CheckpointError("%s is not an object" % what)
    return value


def decode(data: bytes) -> Dict[str, PreparedClaim]:
    """The claims of a checkpoint file's bytes, by uid; CheckpointError when they are not a
    checkpoint of this version."""
    if len(data) > MAX_BYTES:
        raise CheckpointError("%d bytes, more than a checkpoint holds" % len(data))
    try:
        body = safejson.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError("not JSON: %s" % e) from None
    body = _obj(body, "the file")
    version = body.get("version")
    if version != VERSION:
        shown = repr(version)[:40] if isinstance(version, (str, bool, float)) or (
            isinstance(version, int) and abs(version) < 10 ** 30) else type(version).__name__
        raise CheckpointError("version %s, this agent reads %d" % (shown, VERSION))
    claims = body.get("claims")
    if not isinstance(claims, list):
        raise CheckpointError("claims is not a list")
    out: Dict[str, PreparedClaim] = {}
    for i, raw in enumerate(claims):
        what = "claims[%d]" % i
        c = _obj(raw, what)
        devices: List[PreparedDevice] = []
        raw_devices = c.get("devices")
        if not isinstance(raw_devices, list):
            raise CheckpointError("%s.devices is not a list" % what)
        for j, rd in enumerate(raw_devices):
            dw = "%s.devices[%d]" % (what, j)
            d = _obj(rd, dw)
            share = d.get("shareID")
            devices.append(PreparedDevice(
                _strs(d.get("requests"), dw + ".requests"), _str(d.get("pool"), dw + ".pool"),
                _str(d.get("device"), dw + ".device"), _strs(d.get("cdiIDs"), dw + ".cdiIDs"),
                None if share is None else _str(share, dw + ".shareID")))
        uid = _str(c.get("uid"), what + ".uid")
        if not uid:
            raise CheckpointError("%s.uid is empty" % what)
        out[uid] = PreparedClaim(_str(c.get("namespace"), what + ".namespace"),
                                 _str(c.get("name"), what + ".name"), uid, tuple(devices))
    return out


class CheckpointStore:
    """The checkpoint file at ``path`` (a real path, under --root). Blocking: call from a
    worker thread, never on the loop."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> Dict[str, PreparedClaim]:
        """The prepared claims; empty when there is no file. A file that cannot be read as a
        checkpoint is logged, renamed ``<name>.corrupt-<time>`` and taken as empty: failing
        here would make every agent start fail the same way."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as e:
            if e.errno == errno.ENOTDIR:
                return {}
            # Left where it is: a read that failed (EIO, EACCES) says nothing of its content,
            # and the next start may read it.
            log.warning("cannot read the DRA checkpoint %s: %s; starting with no prepared "
                        "claims (the kubelet prepares them again)", self.path,
                        e.strerror or e)
            return {}
        try:
            return decode(data)
        except CheckpointError as e:
            aside = self._move_aside()
            log.warning("the DRA checkpoint %s is not readable (%s); moved aside to %s, "
                        "starting with no prepared claims (the kubelet prepares them again)",
                        self.path, e, aside or "(could not move it)")
            return {}

    def _move_aside(self) -> Optional[str]:
        aside = "%s.corrupt-%d" % (self.path, int(time.time()))
        try:
            os.replace(self.path, aside)
        except OSError:
            return None
        return aside

    def save(self, claims: Claims) -> None:
        """Write ``claims`` atomically: temp file, fsync, rename, fsync of the directory (a
        power cut leaves the old file or the new one, never half of one)."""
        write_atomic(self.path, encode(claims), 0o600, dir_mode=0o750, prefix=".checkpoint-")
