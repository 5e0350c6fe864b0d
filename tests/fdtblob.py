"""Helpers for tests that need hand-made or damaged flattened devicetree blobs."""

import struct

FDT_MAGIC = 0xD00DFEED
BEGIN_NODE, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9
HEADER_FIELDS = ("magic", "totalsize", "off_dt_struct", "off_dt_strings", "off_mem_rsvmap",
                 "version", "last_comp_version", "boot_cpuid_phys", "size_dt_strings",
                 "size_dt_struct")


def header(blob):
    """The ten header fields of a blob, by name."""
    return dict(zip(HEADER_FIELDS, struct.unpack_from(">10I", blob, 0)))


def with_header(blob, **fields):
    """A copy of ``blob`` with some header fields replaced."""
    values = header(blob)
    values.update(fields)
    return struct.pack(">10I", *(values[f] for f in HEADER_FIELDS)) + bytes(blob[40:])


class StructWriter:
    """Writes a structure block token by token, so tests can build blobs dtc never would."""

    def __init__(self):
        self.out = bytearray()
        self.strings = bytearray()
        self._offsets = {}

    def _pad(self):
        self.out.extend(b"\0" * (-len(self.out) % 4))

    def begin(self, name):
        self.out.extend(struct.pack(">I", BEGIN_NODE))
        self.out.extend(name.encode() + b"\0")
        self._pad()
        return self

    def end(self):
        self.out.extend(struct.pack(">I", END_NODE))
        return self

    def prop(self, name, value):
        if name not in self._offsets:
            self._offsets[name] = len(self.strings)
            self.strings.extend(name.encode() + b"\0")
        self.out.extend(struct.pack(">III", PROP, len(value), self._offsets[name]))
        self.out.extend(value)
        self._pad()
        return self

    def token(self, value):
        self.out.extend(struct.pack(">I", value))
        return self

    def finish(self):
        return self.token(END)

    def blob(self, version=17):
        rsv = b"\0" * 16
        off_struct = 40 + len(rsv)
        off_strings = off_struct + len(self.out)
        total = off_strings + len(self.strings)
        head = struct.pack(">10I", FDT_MAGIC, total, off_struct, off_strings, 40, version, 16, 0,
                           len(self.strings), len(self.out))
        return head + rsv + bytes(self.out) + bytes(self.strings)


def chain_blob(depth):
    """A blob whose root has a chain of ``depth - 1`` nested children (``depth`` levels)."""
    w = StructWriter().begin("").prop("compatible", b"test,deep\0")
    for i in range(depth - 1):
        w.begin("n%d" % i)
    for _ in range(depth):
        w.end()
    return w.finish().blob()


def build_fdt(root):
    """Serialise a model tree (a DtNode and its children) to a v17 blob with StructWriter: the
    tests' own writer, sharing no code with the parser under test."""
    w = StructWriter()

    def emit(node):
        w.begin(node.name)
        for name, value in node.props.items():
            w.prop(name, value)
        for child in node.children:
            emit(child)
        w.end()

    emit(root)
    return w.finish().blob()
