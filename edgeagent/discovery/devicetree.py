"""The devicetree model shared by both sources: the raw blob (FDT) and the /proc directory form."""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple


class DeviceTreeError(Exception):
    """A devicetree that cannot be read: truncated, corrupt, oversized or too deep."""


class DtNode:
    """One devicetree node: full path, properties as raw bytes, children in source order."""

    __slots__ = ("name", "path", "props", "children")

    def __init__(self, name: str, path: str, props: Dict[str, bytes],
                 children: Tuple["DtNode", ...]) -> None:
        self.name = name
        self.path = path
        self.props = props
        self.children = children

    def prop(self, name: str) -> Optional[bytes]:
        return self.props.get(name)

    def string(self, name: str) -> Optional[str]:
        values = self.strings(name)
        return values[0] if values else None

    def strings(self, name: str) -> List[str]:
        """A stringlist property (NUL-separated), decoded leniently; [] when absent."""
        raw = self.props.get(name)
        if not raw:
            return []
        return [s.decode("utf-8", "replace") for s in raw.rstrip(b"\0").split(b"\0") if s]

    @property
    def compatible(self) -> Tuple[str, ...]:
        return tuple(self.strings("compatible"))

    @property
    def status(self) -> str:
        """The node's status; an absent property means "okay" (devicetree spec 2.3.4)."""
        value = self.string("status")
        if value is None:
            return "okay"
        return "okay" if value == "ok" else value  # "ok" is the pre-ePAPR spelling

    @property
    def enabled(self) -> bool:
        return self.status == "okay"

    def __repr__(self) -> str:
        return "DtNode(%r)" % self.path

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DtNode) and self.path == other.path
                and self.props == other.props and self.children == other.children)

    __hash__ = None  # type: ignore[assignment]


class DeviceTree:
    """A whole tree plus where it was read from (for messages)."""

    __slots__ = ("root", "source", "_index")

    def __init__(self, root: DtNode, source: str) -> None:
        self.root = root
        self.source = source
        self._index: Optional[Dict[str, DtNode]] = None

    def walk(self) -> Iterator[DtNode]:
        """Every node, depth first, parents before children."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def get(self, path: str) -> Optional[DtNode]:
        if self._index is None:
            self._index = {n.path: n for n in self.walk()}
        return self._index.get(path.rstrip("/") or "/")


def child_path(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else parent + "/" + name
