"""Pure: YAML written by other tools (kubeconfigs, CDI specs) read with PyYAML's safe loader,
bounded. The one YAML reader of the agent.

PyYAML's C loader (libyaml) where the wheel has it, else the pure-Python one. On top of the safe
loader, the hazards of YAML itself are refused before anything is built, from the parser's event
stream (so the work is bounded by the input's size, which the caller caps):

- aliases (``*name``): the "billion laughs" expansion multiplies a small document into an
  enormous one; no kubeconfig or CDI spec uses them;
- nesting deeper than MAX_DEPTH (the constructor would otherwise hit RecursionError) and more
  than MAX_NODES nodes;
- explicit tags other than ``!!str``, ``!!map`` and ``!!seq`` (``!!python/...`` is refused by the
  safe loader anyway; ``!!int``/``!!float``/``!!binary``/``!!timestamp`` are never needed).

Plain scalars resolve only to strings, booleans and null: a kubeconfig has no numbers, a CDI
spec's device name ``0`` and version ``0.6`` are names, not numbers, and not resolving integers
keeps a 5,000-digit "number" from costing quadratic time (or, on Python 3.11+, raising the
int-conversion limit). Every problem is one line: ``line N: what``.

Cost, measured (x86-64, PyYAML 6.0 with libyaml, median of 5): importing yaml adds 788 KiB RSS
on Python 3.11 and 832 KiB on 3.8 (the hand-written subset reader it replaced: 992 and 528); a
53 KB CDI spec (300 mounts) reads in about 11 ms, once per change of the file.
"""

from __future__ import annotations

import yaml

MAX_DEPTH = 64
MAX_NODES = 20_000     # a kubeconfig with 2,000 clusters, users and contexts has fewer; a CDI
                       # spec with 300 mounts about 2,000

BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_KEEP = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:null")
_ALLOWED_TAGS = (None, "!", "tag:yaml.org,2002:str", "tag:yaml.org,2002:map",
                 "tag:yaml.org,2002:seq")


class YamlError(ValueError):
    """The text is not YAML this reader accepts; the message is one line, ``line N: ...``."""


class _Loader(BASE_LOADER):  # type: ignore[misc,valid-type]
    pass


# Only the implicit types a kubeconfig holds; everything else stays text.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _KEEP]
    for first, resolvers in BASE_LOADER.yaml_implicit_resolvers.items()
}
_Loader.yaml_implicit_resolvers = {k: v for k, v in _Loader.yaml_implicit_resolvers.items() if v}


def _line(mark: "yaml.Mark") -> int:
    return (mark.line + 1) if mark is not None else 0


def _check_events(text: str) -> None:
    depth = 0
    nodes = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            raise YamlError("line %d: aliases (*%s) are not accepted"
                            % (_line(event.start_mark), event.anchor))
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            nodes += 1
            if nodes > MAX_NODES:
                raise YamlError("line %d: more than %d values" % (_line(event.start_mark),
                                                                  MAX_NODES))
            if event.tag not in _ALLOWED_TAGS:
                raise YamlError("line %d: tag %s is not accepted" % (
                    _line(event.start_mark), str(event.tag)[:60]))
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlError("line %d: nested more than %d levels deep"
                                % (_line(event.start_mark), MAX_DEPTH))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _one_line(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    text = "%s %s" % (context, problem) if context else problem
    text = " ".join(str(text).split())
    return "line %d: %s" % (_line(mark), text) if mark is not None else text


def loads(text: str) -> object:
    """The document in ``text`` (None when empty) as dicts, lists, strings, booleans and None.
    Raises YamlError (one line) for anything else, including several documents."""
    try:
        _check_events(text)
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise YamlError(_one_line(e)) from None
    except RecursionError:  # a guard above the event check's depth bound, kept for safety
        raise YamlError("nested too deeply") from None
