"""The subset of YAML that kubeconfig files use, without a YAML library.

kubectl, kubeadm and k3s write kubeconfigs through go-yaml: block mappings and sequences (the
sequence dash at the parent's indentation or deeper), plain, single- and double-quoted scalars,
``{}``/``[]`` and short flow collections of scalars, comments, and ``|``/``>`` block scalars in
hand-written files. JSON (also YAML) is read with the json module. Anything else (anchors, tags,
several documents, multi-line flow collections) is refused with the line number, never guessed.
"""

from __future__ import annotations

import json
import re
from typing import Any, List, Optional, Tuple


class YamlError(ValueError):
    """Text outside the supported subset, or malformed; the message names the line."""


_KEY = re.compile(r"""^(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"{}\[\],&*!|>%@`][^:#]*?|[^\s#'"{}\[\],&*!|>%@`])\s*:(?:\s+|$)""")


def _strip_comment(text: str) -> str:
    """Remove a trailing `` # comment`` outside quotes."""
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                if quote == "'" and i + 1 < len(text) and text[i + 1] == "'":
                    i += 2
                    continue
                quote = None
        elif c in "\"'" and (i == 0 or text[i - 1] in " \t:[{,-"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
        i += 1
    return text.rstrip()


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", '"': '"', "\\": "\\", "/": "/",
            " ": " ", "b": "\b", "f": "\f", "e": "\x1b", "a": "\x07", "v": "\x0b"}


def _double(text: str, line: int) -> str:
    out = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            if text[i + 1:].strip():
                raise YamlError("line %d: text after a quoted string" % line)
            return "".join(out)
        if c == "\\":
            i += 1
            e = text[i:i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
            elif e in ("x", "u", "U"):
                n = {"x": 2, "u": 4, "U": 8}[e]
                try:
                    out.append(chr(int(text[i + 1:i + 1 + n], 16)))
                except ValueError:
                    raise YamlError("line %d: bad escape \\%s" % (line, e)) from None
                i += n
            else:
                raise YamlError("line %d: unknown escape \\%s" % (line, e))
        else:
            out.append(c)
        i += 1
    raise YamlError("line %d: unterminated double-quoted string" % line)


def _single(text: str, line: int) -> str:
    body = text[1:]
    out = []
    i = 0
    while i < len(body):
        if body[i] == "'":
            if body[i + 1:i + 2] == "'":
                out.append("'")
                i += 2
                continue
            if body[i + 1:].strip():
                raise YamlError("line %d: text after a quoted string" % line)
            return "".join(out)
        out.append(body[i])
        i += 1
    raise YamlError("line %d: unterminated single-quoted string" % line)


def _plain(text: str) -> Any:
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
        return float(text)
    return text


def _flow(text: str, line: int) -> Any:
    inner = text[1:-1].strip()
    if text[0] == "{":
        out = {}
        if inner:
            for part in _split_flow(inner, line):
                k, sep, v = part.partition(":")
                if not sep:
                    raise YamlError("line %d: flow mapping entry without ':'" % line)
                out[str(_scalar(k.strip(), line))] = _scalar(v.strip(), line)
        return out
    return [_scalar(p.strip(), line) for p in _split_flow(inner, line)] if inner else []


def _split_flow(inner: str, line: int) -> List[str]:
    if any(c in inner for c in "[]{}"):
        raise YamlError("line %d: nested flow collections are not supported" % line)
    parts, quote, start = [], None, 0
    for i, c in enumerate(inner):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == ",":
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    return [p for p in parts if p.strip()]


def _scalar(text: str, line: int) -> Any:
    text = text.strip()
    if not text:
        return None
    if text[0] == '"':
        return _double(text, line)
    if text[0] == "'":
        return _single(text, line)
    if text[0] in "[{":
        if text[-1] != {"[": "]", "{": "}"}[text[0]]:
            raise YamlError("line %d: multi-line flow collections are not supported" % line)
        return _flow(text, line)
    if text[0] in "&*!%@`":
        raise YamlError("line %d: anchors, aliases and tags are not supported" % line)
    return _plain(text)


class _Lines:
    def __init__(self, text: str) -> None:
        self.raw = text.splitlines()
        self.items: List[Tuple[int, int, str]] = []  # (line number, indent, content)
        for n, line in enumerate(self.raw, 1):
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise YamlError("line %d: tab in indentation" % n)
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped in ("---", "...") and not self.items:
                continue
            if stripped in ("---", "..."):
                raise YamlError("line %d: several YAML documents are not supported" % n)
            if stripped.startswith("%"):
                raise YamlError("line %d: YAML directives are not supported" % n)
            self.items.append((n, len(line) - len(line.lstrip(" ")), line.strip()))
        self.pos = 0

    def peek(self) -> Optional[Tuple[int, int, str]]:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def next_at(self, indent: int) -> Optional[Tuple[int, int, str]]:
        """The next line of a block whose lines sit at ``indent``, or None where the block ends
        (a line further left, or the end of the text)."""
        item = self.peek()
        if item is None or item[1] < indent:
            return None
        if item[1] > indent:
            raise YamlError("line %d: unexpected indentation" % item[0])
        return item


def _is_entry(content: str) -> bool:
    """A sequence entry: ``- value`` or a lone ``-``."""
    return content == "-" or content.startswith("- ")


def _block_scalar(lines: _Lines, header: str, parent_indent: int, line: int) -> str:
    style = header[0]
    chomp = header[1:].strip()
    if chomp not in ("", "-", "+"):
        raise YamlError("line %d: block scalar indicator %r is not supported" % (line, header))
    # Block scalars keep blank lines, so read raw lines after the header's line.
    raw = lines.raw
    body: List[str] = []
    indent = None
    n = line  # 1-based number of the header line == index of the next raw line
    while n < len(raw):
        text = raw[n]
        if text.strip() == "":
            body.append("")
            n += 1
            continue
        ind = len(text) - len(text.lstrip(" "))
        if ind <= parent_indent:
            break
        if indent is None:
            indent = ind
        if ind < indent:
            break
        body.append(text[indent:])
        n += 1
    while lines.pos < len(lines.items) and lines.items[lines.pos][0] <= n:
        lines.pos += 1
    while body and body[-1] == "" and chomp != "+":
        body.pop()
    if style == "|":
        value = "\n".join(body)
    else:
        value = " ".join(body)
    return value if chomp == "-" else value + "\n"


def _value(lines: _Lines, rest: str, indent: int, line: int) -> Any:
    """The value after ``key:`` (or after ``- ``): inline scalar, block scalar or nested block."""
    rest = _strip_comment(rest)
    if rest.startswith(("|", ">")):
        return _block_scalar(lines, rest, indent, line)
    if rest:
        return _scalar(rest, line)
    nxt = lines.peek()
    if nxt is None:
        return None
    _, child_indent, content = nxt
    if child_indent > indent or (child_indent == indent and _is_entry(content)):
        return _block(lines, child_indent)
    return None


def _block(lines: _Lines, indent: int) -> Any:
    first = lines.peek()
    assert first is not None
    if _is_entry(first[2]):
        return _sequence(lines, indent)
    return _mapping(lines, indent)


def _sequence(lines: _Lines, indent: int) -> List[Any]:
    out: List[Any] = []
    while True:
        item = lines.next_at(indent)
        if item is None:
            return out
        n, ind, content = item
        if not _is_entry(content):
            return out
        rest = content[1:].lstrip(" ")
        lines.pos += 1
        if not rest:
            nxt = lines.peek()
            out.append(_block(lines, nxt[1]) if nxt and nxt[1] > indent else None)
            continue
        if _KEY.match(_strip_comment(rest)) and not rest.startswith(("'", '"')) or (
                rest.startswith(("'", '"')) and _KEY.match(rest)):
            # "- key: value" opens a mapping whose keys sit at the column after "- ".
            column = ind + (len(content) - len(rest))
            lines.items.insert(lines.pos, (n, column, rest))
            out.append(_mapping(lines, column))
        else:
            out.append(_value(lines, rest, ind, n))


def _mapping(lines: _Lines, indent: int) -> dict:
    out: dict = {}
    while True:
        item = lines.next_at(indent)
        if item is None:
            return out
        n, ind, content = item
        if _is_entry(content):
            return out
        m = _KEY.match(content)
        if not m:
            raise YamlError("line %d: expected 'key: value'" % n)
        key = _scalar(m.group("key"), n)
        key = key if isinstance(key, str) else json.dumps(key)
        if key in out:
            raise YamlError("line %d: duplicate key %r" % (n, key))
        lines.pos += 1
        out[key] = _value(lines, content[m.end():], ind, n)


def loads(text: str) -> Any:
    """Parse a kubeconfig's text (YAML subset or JSON) into plain Python values."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as e:
            raise YamlError("invalid JSON: %s" % e) from None
    lines = _Lines(text)
    if lines.peek() is None:
        return None
    first = lines.peek()
    value = _block(lines, first[1])
    left = lines.peek()
    if left is not None:
        raise YamlError("line %d: unexpected indentation or content" % left[0])
    return value
