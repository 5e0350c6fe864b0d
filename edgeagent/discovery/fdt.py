"""A reader for flattened devicetree blobs (/sys/firmware/fdt, .dtb files).

Format: devicetree specification v0.4, chapter 5. Written here because the format is small and
the PyPI parsers are dormant. Every offset and length is checked against the blob so that a
truncated or corrupt blob raises DeviceTreeError instead of hanging or reading garbage, and
every name, path and count is bounded (``TreeBudget``), so that no blob under the size cap costs
more than linear time and a few tens of MiB (a blob whose property-name offsets all pointed
into one long string once took 1 GiB).
"""

from __future__ import annotations

import struct
from typing import Callable, Dict, List, Tuple

from edgeagent.discovery.devicetree import DeviceTree, DeviceTreeError, DtNode, child_path

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
# Bounds on what one blob may make us build, so that time and memory stay linear in the blob
# and capped in total for any input under MAX_BLOB_BYTES. Real blobs are 40-300 KiB with under
# 1,000 nodes, 4,000 properties, property names under 50 bytes and paths under 100 (the
# fixtures; the spec allows 31-byte property names); the kernel refuses far smaller trees.
MAX_BLOB_BYTES = 16 << 20
MAX_DEPTH = 64
MAX_NODES = 50_000
MAX_PROPERTIES = 250_000
MAX_NAME = 1024            # a node name (node-name@unit-address)
MAX_PROPERTY_NAME = 256
# Names and full paths built in total (a deep chain of long names would otherwise repeat its
# prefix in every path below it, and names taken at every offset of one long string would copy
# that string once per offset).
MAX_TEXT_BYTES = 8 << 20
_HEADER = struct.Struct(">10I")
_U32 = struct.Struct(">I")
_PROP = struct.Struct(">II")


class TreeBudget:
    """Counts what a reader builds, shared by both forms of the tree; raises DeviceTreeError
    (through ``fail``) the moment a bound is crossed."""

    __slots__ = ("fail", "nodes", "properties", "text")

    def __init__(self, fail: Callable[[str], DeviceTreeError]) -> None:
        self.fail = fail
        self.nodes = self.properties = self.text = 0

    def node(self, path: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail("more than %d nodes" % MAX_NODES)
        self._text(len(path))

    def prop(self, count: int = 1) -> None:
        self.properties += count
        if self.properties > MAX_PROPERTIES:
            raise self.fail("more than %d properties" % MAX_PROPERTIES)

    def _text(self, n: int) -> None:
        self.text += n
        if self.text > MAX_TEXT_BYTES:
            raise self.fail("node paths and property names over %d bytes in total"
                            % MAX_TEXT_BYTES)

    def name(self, name: str) -> None:
        self._text(len(name))


def parse_fdt(blob: bytes, source: str = "<blob>") -> DeviceTree:
    """Parse a whole blob into a :class:`DeviceTree`; raise DeviceTreeError saying why not.

    Time and memory are linear in the blob and bounded by the limits above."""

    def fail(why: str) -> DeviceTreeError:
        return DeviceTreeError("%s: %s" % (source, why))

    if len(blob) > MAX_BLOB_BYTES:
        raise fail("blob is %d bytes, over the %d-byte limit" % (len(blob), MAX_BLOB_BYTES))
    if len(blob) < 40:
        raise fail("truncated: %d bytes, shorter than the 40-byte FDT header" % len(blob))
    (magic, totalsize, off_struct, off_strings, _off_rsv, version, last_comp, _cpu,
     size_strings, size_struct) = _HEADER.unpack_from(blob, 0)
    if magic != FDT_MAGIC:
        raise fail("not a flattened devicetree (magic 0x%08x, expected 0xd00dfeed)" % magic)
    if totalsize > len(blob):
        raise fail("truncated: header says %d bytes, got %d" % (totalsize, len(blob)))
    if last_comp > 17 or version < 16:
        raise fail("unsupported FDT version %d (compatible back to %d)" % (version, last_comp))
    if version < 17:
        # v16 has no size_dt_struct: the struct block runs to the strings block or the end.
        size_struct = (off_strings if off_strings > off_struct else totalsize) - off_struct
    if off_struct < _HEADER.size or off_struct % 4:
        # The spec aligns the struct block to 4 bytes; the token alignment below relies on it.
        raise fail("struct block offset %d is inside the header or not 4-byte aligned"
                   % off_struct)
    if not (off_struct <= totalsize and off_struct + size_struct <= totalsize):
        raise fail("struct block [%d, +%d) outside the blob" % (off_struct, size_struct))
    if not (off_strings <= totalsize and off_strings + size_strings <= totalsize):
        raise fail("strings block [%d, +%d) outside the blob" % (off_strings, size_strings))
    strings = blob[off_strings:off_strings + size_strings]
    root = _parse_struct(blob, off_struct, off_struct + size_struct, strings, TreeBudget(fail))
    return DeviceTree(root, source)


def _property_name(strings: bytes, nameoff: int, budget: TreeBudget) -> str:
    # The search for the NUL is bounded: an offset into one long string must not cost (or
    # copy) that whole string, once per property that points into it.
    if nameoff >= len(strings):
        raise budget.fail("property name offset %d outside the strings block" % nameoff)
    nul = strings.find(b"\0", nameoff, nameoff + MAX_PROPERTY_NAME + 1)
    if nul < 0:
        if len(strings) - nameoff <= MAX_PROPERTY_NAME:
            raise budget.fail("property name offset %d outside the strings block (no NUL "
                              "before its end)" % nameoff)
        raise budget.fail("property name at offset %d is longer than %d bytes"
                          % (nameoff, MAX_PROPERTY_NAME))
    name = strings[nameoff:nul].decode("utf-8", "replace")
    budget.name(name)
    return name


def _parse_struct(blob: bytes, pos: int, end: int, strings: bytes,
                  budget: TreeBudget) -> DtNode:
    fail = budget.fail
    # Each frame: (name, path, props, children); built iteratively so depth cannot blow the stack.
    stack: List[Tuple[str, str, Dict[str, bytes], List[DtNode]]] = []
    root = None
    names: Dict[int, str] = {}     # property names by offset: each offset decoded once
    while True:
        if pos + 4 > end:
            raise fail("truncated structure block at offset %d" % pos)
        (token,) = _U32.unpack_from(blob, pos)
        pos += 4
        if token == FDT_BEGIN_NODE:
            nul = blob.find(b"\0", pos, min(end, pos + MAX_NAME + 1))
            if nul < 0:
                raise fail("unterminated node name at offset %d" % pos)
            name = blob[pos:nul].decode("utf-8", "replace")
            pos = (nul + 4) & ~3
            if root is not None and not stack:
                raise fail("second root node at offset %d" % pos)
            if len(stack) >= MAX_DEPTH:
                raise fail("nodes nested deeper than %d" % MAX_DEPTH)
            if not stack:
                path, name = "/", ""
            else:
                if not name or "/" in name:
                    raise fail("invalid node name %r at offset %d" % (name[:64], pos))
                path = child_path(stack[-1][1], name)
            budget.node(path)
            stack.append((name, path, {}, []))
        elif token == FDT_END_NODE:
            if not stack:
                raise fail("unbalanced end of node at offset %d" % (pos - 4))
            name, path, props, children = stack.pop()
            # Children by name, as the directory form lists them (kernfs has no source order), so
            # that both forms give the same model and the same inventory.
            node = DtNode(name, path, props, tuple(sorted(children, key=lambda n: n.name)))
            if stack:
                stack[-1][3].append(node)
            else:
                root = node
        elif token == FDT_PROP:
            if not stack:
                raise fail("property outside any node at offset %d" % (pos - 4))
            if pos + 8 > end:
                raise fail("truncated property header at offset %d" % pos)
            length, nameoff = _PROP.unpack_from(blob, pos)
            pos += 8
            if pos + length > end:
                raise fail("property of %d bytes at offset %d runs past the block" % (length, pos))
            pname = names.get(nameoff)
            if pname is None:
                pname = names[nameoff] = _property_name(strings, nameoff, budget)
            budget.prop()
            stack[-1][2][pname] = blob[pos:pos + length]
            pos = (pos + length + 3) & ~3
        elif token == FDT_NOP:
            continue
        elif token == FDT_END:
            if stack:
                raise fail("end of tree inside node %s" % stack[-1][1])
            if root is None:
                raise fail("no root node")
            return root
        else:
            raise fail("unknown token 0x%x at offset %d" % (token, pos - 4))
