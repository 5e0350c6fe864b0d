"""Kubernetes label syntax, and the one rule that turns any text into a valid label name or value.

Label syntax (k8s.io/apimachinery/pkg/util/validation: IsQualifiedName, IsValidLabelValue):

- key   = [prefix "/"] name; prefix a DNS subdomain (lowercase, at most 253 characters);
- name  = at most 63 characters of ``[A-Za-z0-9_.-]``, beginning and ending alphanumeric;
- value = empty, or the same shape as a name.

The sanitizing rule, applied to devicetree ``compatible`` strings (key names) and to facts (values):

1. For a compatible only: the vendor before the first comma takes the devicetree node labeller's
   vendor alias (``xlnx`` -> ``xilinx``) and that first comma becomes ``-``: ``nvidia,tegra210``
   -> ``nvidia-tegra210``, the same name the labeller gives, so existing selectors keep working.
2. Every run of characters outside ``[A-Za-z0-9_.-]`` (further commas, ``+``, ``/``, spaces, any
   non-ASCII) becomes one ``-``. Uppercase letters and ``_`` are valid and kept as they are.
3. Characters that are not letters or digits are stripped from both ends.
4. A result longer than 63 characters keeps its first 54 characters (then trailing non-alphanumerics
   are stripped), and gets ``-`` plus the first 8 hex digits of the SHA-256 of the original text:
   stable across runs and machines, and distinct for distinct long strings.
5. A result that is empty is no label: the caller drops it with a warning.

So ``nvidia,p3737-0000+p3701-0000`` -> ``nvidia-p3737-0000-p3701-0000``. The labeller kept only
the text between the first and second comma and left ``+`` in place (an invalid key the API
server rejects); this rule keeps all of the text.
"""

from __future__ import annotations

import hashlib
import re
from typing import Optional

from edgeagent.k8snames import is_dns_subdomain

MAX_NAME = 63
HASH_DIGITS = 8

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_INVALID_RUN = re.compile(r"[^A-Za-z0-9_.-]+")
_EDGE = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+\Z")

# The devicetree node labeller's vendor aliases (adaptant-labs/k8s-dt-node-labeller, main.go:
# vendorNormalizationMap).
VENDOR_ALIASES = {"xlnx": "xilinx"}


def _syntax_problem(what: str, s: str) -> Optional[str]:
    """A label name and a non-empty label value obey the same rule (63 characters at most)."""
    if len(s) > MAX_NAME:
        return "%s %r is longer than %d characters" % (what, s, MAX_NAME)
    if not _NAME.fullmatch(s):
        return ("%s %r must be letters, digits, '-', '_' or '.', beginning and ending with a "
                "letter or digit" % (what, s))
    return None


def name_problem(name: str) -> Optional[str]:
    """Why ``name`` is not a valid label name (the part after the prefix), or None."""
    if not name:
        return "name is empty"
    return _syntax_problem("name", name)


def key_problem(key: str) -> Optional[str]:
    """Why ``key`` is not a valid label key, or None."""
    if not isinstance(key, str):
        return "key %r is not a string" % (key,)
    prefix, sep, name = key.rpartition("/")
    if sep:
        if not prefix:
            return "key %r has an empty prefix" % key
        if not is_dns_subdomain(prefix):
            return "key %r: prefix %r is not a lowercase DNS subdomain" % (key, prefix)
    problem = name_problem(name)
    return "key %r: %s" % (key, problem) if problem else None


def value_problem(value: str) -> Optional[str]:
    """Why ``value`` is not a valid label value, or None (the empty string is valid)."""
    if not isinstance(value, str):
        return "value %r is not a string" % (value,)
    if value == "":
        return None
    return _syntax_problem("value", value)


def is_valid_key(key: str) -> bool:
    return key_problem(key) is None


def is_valid_value(value: str) -> bool:
    return value_problem(value) is None


def _shorten(text: str, original: str) -> str:
    if len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_DIGITS]
    head = _EDGE.sub("", text[:MAX_NAME - HASH_DIGITS - 1])
    return (head + "-" + digest) if head else digest


def sanitize_name(text: str) -> Optional[str]:
    """Any text -> a valid label name/value by rules 2-5 above; None when nothing is left."""
    cleaned = _EDGE.sub("", _INVALID_RUN.sub("-", text))
    if not cleaned:
        return None
    return _shorten(cleaned, text)


def sanitize_value(text: str) -> Optional[str]:
    """A fact (board model, version) as a label value; None when nothing valid is left."""
    return sanitize_name(text)


def compatible_name(compatible: str) -> Optional[str]:
    """A devicetree compatible string -> the label name under ``beta.devicetree.org/`` (rules
    1-5): ``nvidia,jetson-nano`` -> ``nvidia-jetson-nano``."""
    vendor, comma, model = compatible.partition(",")
    if comma:
        text = VENDOR_ALIASES.get(vendor, vendor) + "-" + model
    else:
        text = compatible
    cleaned = _EDGE.sub("", _INVALID_RUN.sub("-", text))
    if not cleaned:
        return None
    return _shorten(cleaned, compatible)
