"""`doctor --fix`: the repairs that are edits of one value in a config file.

Planning is pure: ``set_toml_key``, ``set_json_key`` and ``set_yaml_key`` take a file's text and
return the new text, changed on one line (or one line added), so the diff an operator confirms
is the whole change, comments and layout kept. No TOML writer is needed (none is in the standard
library): each result is parsed again and must equal the old document with exactly that one
value set, else the edit is refused (FixError) and the file is left alone, as is a file that
does not parse in the first place.

Applying is I/O (:class:`FixApplier`): the file is read again and must still hold the text the
plan was made from; a timestamped backup is written beside it; the new text goes to a temporary
file in the same directory, with the old one's mode and owner, and is renamed over it. Services
are restarted only on request (:class:`ServiceRunner`).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgeagent import safejson
from edgeagent.hostpaths import HostRoot


class FixError(ValueError):
    """An edit that cannot be made safely; the message says why, in one line."""


@dataclass(frozen=True)
class FileEdit:
    """One planned edit: the text read (``old``, "" for a file to create) and the text to
    write, the check it repairs and the service that must restart to read it."""

    check: str
    path: str                    # host path
    old: str
    new: str
    service: Optional[str]       # systemd unit to restart (without .service)
    why: str                     # one line: what the edit does
    create: bool = False         # the file does not exist yet

    def diff(self) -> str:
        """A unified diff of the edit (``/dev/null`` as the old side of a new file)."""
        lines = difflib.unified_diff(
            self.old.splitlines(True), self.new.splitlines(True),
            "/dev/null" if self.create else "a" + self.path, "b" + self.path)
        out = []
        for line in lines:
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
        return "".join(out)

    def to_json(self) -> Dict[str, Any]:
        return {"check": self.check, "path": self.path, "why": self.why,
                "service": self.service, "diff": self.diff()}


# --- TOML ----------------------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+$")
_HEADER = re.compile(r"^\s*\[(\[?)(.*?)\]?\]\s*(?:#.*)?$")
_KEY_PART = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*(\.|$)""")


def _split_key(text: str) -> Optional[Tuple[str, ...]]:
    """A dotted TOML key (``plugins."io.containerd.grpc.v1.cri".containerd``) as its parts;
    None when it is not one this editor understands."""
    parts: List[str] = []
    pos = 0
    while pos < len(text):
        m = _KEY_PART.match(text, pos)
        if not m or m.end() == pos:
            return None
        basic, literal, bare, _ = m.groups()
        if basic is not None:
            if "\\" in basic:
                return None      # escapes in table names: not worth guessing
            parts.append(basic)
        else:
            parts.append(literal if literal is not None else bare)
        pos = m.end()
    return tuple(parts) or None


def _format_key(parts: Sequence[str]) -> str:
    return ".".join(p if _BARE.match(p) else json.dumps(p) for p in parts)


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and all(c >= " " and c != "\x7f" for c in value):
        return json.dumps(value, ensure_ascii=False)
    raise FixError("cannot write %r as a TOML value" % (value,))


def _load_toml(text: str, path: str) -> Dict[str, Any]:
    from edgeagent.discovery.runtimefacts import SpecError, load_toml

    try:
        return load_toml(text, path)
    except SpecError as e:
        raise FixError("%s; not edited" % e) from None


def _set_in(doc: Dict[str, Any], table: Sequence[str], key: str, value: Any, path: str) -> None:
    node = doc
    for part in table:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise FixError("%s: %s is not a table; not edited" % (path, _format_key(table)))
    node[key] = value


def set_toml_key(text: str, table: Sequence[str], key: str, value: Any, path: str) -> str:
    """``text`` with ``key = value`` in the table ``[table]``: the key's line replaced when the
    table has it, else added under the table's header, else the table appended. FixError when
    the file does not parse, or the result is not the old document with just that value set."""
    before = _load_toml(text, path)
    lines = text.splitlines(True)
    headers = []                                 # (line index, key parts or None)
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m and not line.lstrip().startswith("#"):
            headers.append((i, None if m.group(1) else _split_key(m.group(2))))
    literal = toml_literal(value)
    target = tuple(table)
    start = next((i for i, parts in headers if parts == target), None)
    if start is None:
        tail = "" if not text or text.endswith("\n") else "\n"
        new = text + tail + ("\n" if text.strip() else "") + "[%s]\n  %s = %s\n" % (
            _format_key(target), _format_key([key]), literal)
    else:
        end = next((i for i, _ in headers if i > start), len(lines))
        key_line = re.compile(r"""^(\s*)(?:%s|"%s"|'%s')\s*=""" % ((re.escape(key),) * 3))
        found = None
        indent = None
        for i in range(start + 1, end):
            m = key_line.match(lines[i])
            if m:
                found = i
                indent = m.group(1)
                break
            if indent is None and re.match(r"^\s*[A-Za-z0-9_\"'-]", lines[i]):
                indent = re.match(r"^(\s*)", lines[i]).group(1)
        if indent is None:
            indent = re.match(r"^(\s*)", lines[start]).group(1) + "  "
        newline = "%s%s = %s\n" % (indent, _format_key([key]), literal)
        if found is not None:
            lines[found] = newline
        else:
            if not lines[start].endswith("\n"):
                lines[start] += "\n"
            lines.insert(start + 1, newline)
        new = "".join(lines)
    expected = copy.deepcopy(before)
    _set_in(expected, target, key, value, path)
    try:
        after: Optional[Dict[str, Any]] = _load_toml(new, path)
    except FixError:         # the edit broke the file (the table was defined another way)
        after = None
    if after != expected:
        raise FixError("%s: could not set %s.%s on one line without changing anything else; "
                       "edit it by hand" % (path, _format_key(target), key))
    return new


# --- JSON (Docker's daemon.json) ----------------------------------------------------------------

def set_json_key(text: str, key: str, value: str, path: str) -> str:
    """``text`` (a JSON object) with the top-level string ``key`` set to ``value``: its value
    replaced in place, or a line added after the opening brace, indented like the next line."""
    try:
        before = safejson.loads(text) if text.strip() else {}
    except (ValueError, RecursionError) as e:
        raise FixError("%s: invalid JSON (%s); not edited" % (path, str(e)[:80])) from None
    if not isinstance(before, dict):
        raise FixError("%s: not a JSON object; not edited" % path)
    encoded = json.dumps(value)
    if not text.strip():
        new = '{\n    %s: %s\n}\n' % (json.dumps(key), encoded)
    elif key in before:
        pattern = re.compile(r'("%s"\s*:\s*)("(?:[^"\\]|\\.)*"|true|false|null|-?[0-9.eE+-]+)'
                             % re.escape(key))
        matches = pattern.findall(text)
        if len(matches) != 1:
            raise FixError("%s: %s appears %d times; edit it by hand" % (path, key,
                                                                           len(matches)))
        new = pattern.sub(lambda m: m.group(1) + encoded, text, count=1)
    else:
        brace = text.index("{")
        rest = text[brace + 1:]
        m = re.match(r"[ \t]*\n([ \t]*)", rest)
        indent = m.group(1) if m and m.group(1) else "    "
        line = "\n%s%s: %s" % (indent, json.dumps(key), encoded)
        if not before:                               # {} becomes a two-line object
            new = text[:brace + 1] + line + "\n" + rest.lstrip(" \t\n")
        else:
            new = text[:brace + 1] + line + "," + (rest if m else " " + rest.lstrip())
    try:
        after = safejson.loads(new)
    except ValueError:
        after = None
    expected = dict(before)
    expected[key] = value
    if after != expected:
        raise FixError("%s: could not set %s without changing anything else; edit it by hand"
                       % (path, key))
    return new


# --- YAML (k3s's config.yaml) -------------------------------------------------------------------

def set_yaml_key(text: str, key: str, value: str, path: str) -> str:
    """``text`` (a YAML mapping) with the top-level ``key: value``: its line replaced when it
    holds a one-line scalar, else a line appended."""
    from edgeagent.safeyaml import YamlError, loads

    try:
        before = loads(text) if text.strip() else {}
    except YamlError as e:
        raise FixError("%s: invalid YAML (%s); not edited" % (path, e)) from None
    if before is None:
        before = {}
    if not isinstance(before, dict):
        raise FixError("%s: not a YAML mapping; not edited" % path)
    line = "%s: %s\n" % (key, json.dumps(value))
    lines = text.splitlines(True)
    pattern = re.compile(r"""^["']?%s["']?\s*:""" % re.escape(key))
    hits = [i for i, ln in enumerate(lines) if pattern.match(ln)]
    if hits:
        lines[hits[-1]] = line
        new = "".join(lines)
    else:
        new = text + ("" if not text or text.endswith("\n") else "\n") + line
    try:
        after = loads(new)
    except YamlError:
        after = None
    expected = dict(before)
    expected[key] = value
    if after != expected:
        raise FixError("%s: could not set %s on one line without changing anything else; "
                       "edit it by hand" % (path, key))
    return new


# --- applying ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Applied:
    edit: FileEdit
    ok: bool
    detail: str                  # the backup's host path, or why it was not applied
    backup: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        out = self.edit.to_json()
        out.update({"applied": self.ok, "backup": self.backup,
                    "error": None if self.ok else self.detail})
        return out


def backup_name(host_path: str, now: float) -> str:
    return "%s.edgeagent-%s.bak" % (host_path, time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)))


class FixApplier:
    """Writes planned edits under the host root: check, back up, write atomically."""

    def __init__(self, root: HostRoot, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.clock = clock

    def apply(self, edit: FileEdit) -> Applied:
        try:
            backup = self._apply(edit)
        except FixError as e:
            return Applied(edit, False, str(e))
        except OSError as e:
            return Applied(edit, False, "%s: %s" % (edit.path, e.strerror or e))
        return Applied(edit, True, "backup %s" % backup if backup else "created", backup)

    def _apply(self, edit: FileEdit) -> Optional[str]:
        real = self.root.resolve(edit.path)
        exists = os.path.lexists(real)
        if exists != (not edit.create):
            raise FixError("%s %s since doctor read it; not edited" % (
                edit.path, "appeared" if exists else "disappeared"))
        st = None
        backup = None
        if exists:
            st = os.stat(real)
            current = self.root.read_bytes(edit.path, 16 << 20)
            if current != edit.old.encode("utf-8"):
                raise FixError("%s changed since doctor read it; not edited" % edit.path)
            backup = backup_name(edit.path, self.clock())
            self._write(self.root.resolve(backup), edit.old.encode("utf-8"), st, exclusive=True)
        self._write(real, edit.new.encode("utf-8"), st)
        return backup

    @staticmethod
    def _write(real: str, data: bytes, like: Optional[os.stat_result],
               exclusive: bool = False) -> None:
        directory = os.path.dirname(real)
        if exclusive:
            # A backup never replaces another (two fixes in the same second would).
            fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            tmp = None
        else:
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, ".%s.edgeagent-%d.tmp" % (os.path.basename(real),
                                                                    os.getpid()))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            mode = (like.st_mode & 0o7777) if like is not None else 0o644
            if like is not None and (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, like.st_uid, like.st_gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp or real)
            raise
        os.close(fd)
        if tmp is not None:
            os.replace(tmp, real)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class ServiceRunner:
    """``systemctl restart UNIT``. Under ``--root`` it runs that root's own
    ``/usr/bin/systemctl`` (so tests put a fake there) and never this machine's."""

    TIMEOUT = 90.0               # k3s takes tens of seconds to stop on a loaded board

    def __init__(self, root: HostRoot) -> None:
        self.root = root

    def command(self) -> Optional[List[str]]:
        if self.root.root == "/":
            return ["systemctl"]
        real = self.root.resolve("/usr/bin/systemctl")
        return [real] if os.path.isfile(real) and os.access(real, os.X_OK) else None

    def restart(self, service: str) -> Tuple[bool, str]:
        cmd = self.command()
        if cmd is None:
            return False, "not restarted: no /usr/bin/systemctl under %s" % self.root.root
        try:
            done = subprocess.run(cmd + ["restart", service], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=self.TIMEOUT)
        except (OSError, subprocess.SubprocessError) as e:
            return False, "systemctl restart %s: %s" % (service, e)
        if done.returncode != 0:
            text = " ".join(done.stdout.decode("utf-8", "replace").split())[:200]
            return False, "systemctl restart %s exited %d: %s" % (service, done.returncode,
                                                                  text)
        return True, "restarted %s" % service
