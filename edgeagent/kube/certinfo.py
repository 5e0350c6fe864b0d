"""The subject common name of a PEM client certificate, from a minimal DER walk (no crypto
library): the kubelet's certificate is ``CN=system:node:<node name>``, which names the Node this
identity may modify even when the kubelet runs with ``--hostname-override``."""

from __future__ import annotations

import base64
from typing import List, Optional, Tuple

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"
_OID_CN = bytes([0x06, 0x03, 0x55, 0x04, 0x03])
NODE_USER_PREFIX = "system:node:"


def _tlv(der: bytes, pos: int) -> Tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at ``pos``."""
    tag = der[pos]
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[pos:pos + n], "big")
        pos += n
    end = pos + length
    if end > len(der):
        raise ValueError("truncated DER")
    return tag, pos, end


def _children(der: bytes, start: int, end: int) -> List[Tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, s, e = _tlv(der, pos)
        out.append((tag, s, e))
        pos = e
    return out


def subject_cn(pem: bytes) -> Optional[str]:
    """The first certificate's subject CN, or None when absent or unparsable."""
    # Two finds, not a lazy regex: "(.+?)" retried from every BEGIN of a file full of BEGINs
    # without an END is quadratic (8,000 of them: 15 s).
    begin = pem.find(_BEGIN)
    end = pem.find(_END, begin + len(_BEGIN)) if begin >= 0 else -1
    if end < 0:
        return None
    try:
        der = base64.b64decode(b"".join(pem[begin + len(_BEGIN):end].split()))
        _, cs, ce = _tlv(der, 0)                      # Certificate
        tbs_tag, ts, te = _children(der, cs, ce)[0]  # TBSCertificate
        fields = _children(der, ts, te)
        if fields and fields[0][0] == 0xA0:          # [0] version
            fields = fields[1:]
        # serial, signature algorithm, issuer, validity, subject
        _, ss, se = fields[4]
        cn = None
        for _, rs, re_ in _children(der, ss, se):    # RelativeDistinguishedName SETs
            for _, as_, ae in _children(der, rs, re_):
                parts = _children(der, as_, ae)
                if len(parts) == 2 and der[parts[0][1] - 2:parts[0][2]] == _OID_CN:
                    cn = der[parts[1][1]:parts[1][2]].decode("utf-8", "replace")
        return cn
    except (ValueError, IndexError):
        return None


def node_name_from_cert(pem: bytes) -> Optional[str]:
    """``<name>`` when the certificate is a node identity ``system:node:<name>``."""
    cn = subject_cn(pem)
    if cn and cn.startswith(NODE_USER_PREFIX) and len(cn) > len(NODE_USER_PREFIX):
        return cn[len(NODE_USER_PREFIX):]
    return None
