"""A reader for flattened devicetree blobs (/sys/firmware/fdt, .dtb files).

Format: devicetree specification v0.4, chapter 5. Written here because the format is small and
the PyPI parsers are dormant. Every offset and length is checked against the blob so that a
truncated or corrupt blob raises DeviceTreeError instead of hanging or reading garbage.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Tuple

from edgeagent.discovery.devicetree import DeviceTree, DeviceTreeError, DtNode, child_path

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
# Real blobs are 50-300 KiB; the kernel itself refuses far smaller trees than these bounds.
MAX_BLOB_BYTES = 16 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_NAME = 1024
_HEADER = struct.Struct(">10I")


def parse_fdt(blob: bytes, source: str = "<blob>") -> DeviceTree:
    """Parse a whole blob into a :class:`DeviceTree`; raise DeviceTreeError saying why not."""

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
    root = _parse_struct(blob, off_struct, off_struct + size_struct, strings, fail)
    return DeviceTree(root, source)


def _parse_struct(blob: bytes, pos: int, end: int, strings: bytes, fail) -> DtNode:
    # Each frame: (name, path, props, children); built iteratively so depth cannot blow the stack.
    stack: List[Tuple[str, str, Dict[str, bytes], List[DtNode]]] = []
    root = None
    nodes = 0
    name_cache: Dict[int, str] = {}
    u32 = struct.Struct(">I")
    while True:
        if pos + 4 > end:
            raise fail("truncated structure block at offset %d" % pos)
        (token,) = u32.unpack_from(blob, pos)
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
            nodes += 1
            if nodes > MAX_NODES:
                raise fail("more than %d nodes" % MAX_NODES)
            if not stack:
                path, name = "/", ""
            else:
                if not name or "/" in name:
                    raise fail("invalid node name %r at offset %d" % (name, pos))
                path = child_path(stack[-1][1], name)
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
            length, nameoff = struct.unpack_from(">II", blob, pos)
            pos += 8
            if pos + length > end:
                raise fail("property of %d bytes at offset %d runs past the block" % (length, pos))
            pname = name_cache.get(nameoff)
            if pname is None:
                nul = strings.find(b"\0", nameoff) if nameoff < len(strings) else -1
                if nul < 0:
                    raise fail("property name offset %d outside the strings block" % nameoff)
                pname = strings[nameoff:nul].decode("utf-8", "replace")
                name_cache[nameoff] = pname
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


def build_fdt(tree_root: DtNode) -> bytes:
    """Serialise a tree back to a v17 blob (tests and the demo host use it)."""
    strings = bytearray()
    offsets: Dict[str, int] = {}
    out = bytearray()

    def name_off(name: str) -> int:
        if name not in offsets:
            offsets[name] = len(strings)
            strings.extend(name.encode() + b"\0")
        return offsets[name]

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    def emit(node: DtNode) -> None:
        out.extend(struct.pack(">I", FDT_BEGIN_NODE))
        out.extend(node.name.encode() + b"\0")
        pad()
        for pname, value in node.props.items():
            out.extend(struct.pack(">III", FDT_PROP, len(value), name_off(pname)))
            out.extend(value)
            pad()
        for child in node.children:
            emit(child)
        out.extend(struct.pack(">I", FDT_END_NODE))

    emit(tree_root)
    out.extend(struct.pack(">I", FDT_END))
    rsv = b"\0" * 16
    off_rsv = 40
    off_struct = off_rsv + len(rsv)
    off_strings = off_struct + len(out)
    total = off_strings + len(strings)
    header = _HEADER.pack(FDT_MAGIC, total, off_struct, off_strings, off_rsv, 17, 16, 0,
                          len(strings), len(out))
    return header + rsv + bytes(out) + bytes(strings)
