"""Pure: a tegrastats line to the JSON text `edgeagent tegrastats` prints, through a plan compiled
once per line shape. The text is byte for byte ``json.dumps(parse_line(line).to_json())``.

Why: turning a line into a :class:`~edgeagent.tegrastats.parser.TegraSample`, then a dict, then
JSON cost about 60 us a line, most of it spent deciding again, for every line, what the board
decided once: which fields it prints, in which order. Lines of one board share a shape (the same
fields in the same order; only digits change), so the shape's key is the line without its ASCII
digits. A shape's first two lines go the slow way; on the second, when every token is a field this
module plans (no unknown token, no field twice), a small function is compiled for the shape. It
checks every name token exactly (``CV0`` and ``CV1`` share a key), looks each value token up in
bounded memos of JSON fragments made by the parser's own value functions, and fills one format
string. A value the plan did not expect (digits that make a value invalid, a sensor going off, a
new name) makes it return None, and that line goes the slow way. A plan is kept only if it gives
the slow path's text on the line it was built from; tests/test_tegrastats_lineplans.py holds it to
the slow path on mutated lines.

Output through the slow way is the reference: change the JSON there, the plans follow.
"""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgeagent.tegrastats import parser as _p

_DIGITS = b"0123456789"
# Shapes kept: a board prints one or two (tegrastats without root drops fields); a stream of junk
# makes a new shape a line, so the table is cleared when full rather than grown.
_PLAN_LIMIT = 64
_MAX_PLAN_TOKENS = 256
_MEMO_LIMIT = 1024
_MEMO_KEY_MAX = 48
_dumps = json.dumps
Plan = Callable[[List[str]], Optional[str]]

# to_json's keys in order, and the field parser that sets each one (at most one per line here).
_KEYS = ("timestamp", "ram_used_bytes", "ram_total_bytes", "ram_lfb_blocks",
         "ram_lfb_block_bytes", "swap_used_bytes", "swap_total_bytes", "swap_cached_bytes",
         "iram_used_bytes", "iram_total_bytes", "iram_lfb_bytes", "cpus", "cpu_edp_limit_hz",
         "emc_utilization", "emc_frequency_hz", "gpu_utilization", "gpu_frequencies_hz",
         "gpc_utilization", "engines", "mts_foreground", "mts_background",
         "temperatures_celsius", "temperatures_max_celsius", "power_watts", "unknown")
_FIELD_KEYS: Dict[Any, Tuple[str, ...]] = {
    _p._ram: ("ram_used_bytes", "ram_total_bytes", "ram_lfb_blocks", "ram_lfb_block_bytes"),
    _p._swap: ("swap_used_bytes", "swap_total_bytes", "swap_cached_bytes"),
    _p._iram: ("iram_used_bytes", "iram_total_bytes", "iram_lfb_bytes"),
    _p._emc: ("emc_utilization", "emc_frequency_hz"),
    _p._mts: ("mts_foreground", "mts_background"),
    _p._edp: ("cpu_edp_limit_hz",),
    _p._cpu: ("cpus",),         # the old ``cpu [17%,13%]@408``; the usual list has its own memo
}


class _Fragments(dict):
    """``memo[key]`` is ``make(key)``, computed once; bounded like the parser's memos."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[Any], Any]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key: Any) -> Any:
        value = self.make(key)
        size = len(key) if key.__class__ is str else sum(map(len, key))
        if size <= _MEMO_KEY_MAX:
            if len(self) >= _MEMO_LIMIT:
                self.clear()
            self[key] = value
        return value


def _scalar(value: Any) -> str:
    """What json.dumps writes for None, a bool, an int or a finite float (the parser makes no
    other number), without its per-call cost: memo misses are frequent on a real board, whose
    readings change every second."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return repr(value)


def _core_text(core: Any) -> str:
    return '{"index": %d, "online": %s, "utilization": %s, "frequency_hz": %s}' % (
        core.index, _scalar(core.online), _scalar(core.utilization), _scalar(core.frequency_hz))


def _field_texts(fn: Any, values: Tuple[str, ...]) -> Optional[Tuple[str, ...]]:
    """The JSON texts of the keys field parser ``fn`` sets, from its value tokens; None when the
    parser would not consume exactly them or would call any of them unknown."""
    tokens = ["X"] + list(values)
    st = _p._Line()
    if fn(tokens, 0, st) != len(tokens) or st.unknown:
        return None
    if fn is _p._cpu:
        return ("[" + ", ".join(map(_core_text, st.values["cpus"])) + "]",)
    get = st.values.get
    return tuple(_scalar(get(key)) for key in _FIELD_KEYS[fn])


_GPU_KEYS = ("gpu_utilization", "gpu_frequencies_hz", "gpc_utilization")


def _gpu_texts(tokens: Tuple[str, ...]) -> Optional[Tuple[str, ...]]:
    """``GR3D_FREQ 0%@[305,305]``, with DRIVE OS's ``GR3D2_FREQ 82%@1274`` and the like: these
    fields share the GPCs (GR3D2's load becomes GPC 0's too), so they are looked up together,
    in their order, as parse_line reads them."""
    st = _p._Line()
    names = list(tokens)
    for i in range(0, len(names), 2):
        fn = _p._FIELDS.get(names[i])
        if fn is None or fn(names, i, st) != i + 2:
            return None
    if st.unknown:
        return None
    gpcs = [st.gpcs[k] for k in sorted(st.gpcs)]
    return (_scalar(st.values.get("gpu_utilization")),
            "{" + ", ".join('"%d": %s' % (g.index, _scalar(g.frequency_hz)) for g in gpcs) + "}",
            "{" + ", ".join('"%d": %s' % (g.index, _scalar(g.utilization))
                            for g in gpcs if g.utilization is not None) + "}")


_GPU = _Fragments(_gpu_texts)


def _texts_of(memo: Any) -> _Fragments:
    """A memo of the JSON texts of a parser memo's tuple of numbers (None stays None)."""
    return _Fragments(lambda tok: None if memo[tok] is None else tuple(map(_scalar, memo[tok])))


# field parser -> (texts of "used/totalMB", the parenthesis' first token, texts of its value)
_PAIRS = {
    _p._ram: (_texts_of(_p._USED_TOTAL), "(lfb", _texts_of(_p._LFB)),
    _p._swap: (_texts_of(_p._USED_TOTAL), "(cached", _texts_of(_p._CACHED)),
}
_FIELDS = {fn: _Fragments(lambda values, fn=fn: _field_texts(fn, values)) for fn in _FIELD_KEYS}

# CPU lists change every line, their entries do not: one memo per core index, as in the parser.
_CORE_TEXT: Tuple[Dict[str, str], ...] = tuple({} for _ in range(_p._MAX_CPUS))
_CORE_MEMO_LIMIT = 256


def _cpus_text(tok: str) -> Optional[str]:
    """``[1%@729,off,2%@1190]`` as parser._cpu reads it (the usual form: a frequency per core)."""
    body = tok[1:-1]
    entries = body.split(",")
    if tok[:1] != "[" or tok[-1:] != "]" or "]" in body or len(entries) > _p._MAX_CPUS:
        return None
    texts = list(map(dict.get, _CORE_TEXT, entries))   # map stops at the shorter: the entries
    if None in texts:
        pct, mhz = _p._PCT, _p._MHZ
        for index, text in enumerate(texts):
            if text is not None:
                continue
            entry = entries[index]
            if entry == "off":
                text = _core_text(_p.CpuCore(index, False))
            else:
                load_s, at, freq_s = entry.partition("@")
                load = pct[load_s]
                freq = mhz[freq_s] if at else None
                if load is None or freq is None:
                    return None              # the parser lists it as unknown: the slow way
                text = _core_text(_p.CpuCore(index, True, load, freq))
            texts[index] = text
            memo = _CORE_TEXT[index]
            if len(entry) <= _MEMO_KEY_MAX:
                if len(memo) >= _CORE_MEMO_LIMIT:
                    memo.clear()
                memo[entry] = text
    return "[" + ", ".join(texts) + "]"


def _temperature_text(tok: str) -> Tuple[str, str, Optional[str]]:
    """(what the plan checks: the sensor, "" when off, "\\0" when not a reading; celsius; max)."""
    temp = _p._TEMPERATURE[tok]
    if temp is None:
        return ("\0", "", None)
    if temp is _p._SENSOR_OFF:
        return ("", "", None)
    top = None if temp.max_celsius is None else repr(temp.max_celsius)
    return (temp.sensor, repr(temp.celsius), top)


def _watts_text(part: str) -> Optional[str]:
    watts = _p._MW[part]
    return None if watts is None else repr(watts)


_WATTS = _Fragments(_watts_text)


def _rail_text(value: str) -> Optional[str]:
    # as parse_line reads ``NAME cur/avg[/max]``
    parts = value.split("/")
    if not 2 <= len(parts) <= 3:
        return None
    cur, avg = _WATTS[parts[0]], _WATTS[parts[1]]
    top = _WATTS[parts[2]] if len(parts) == 3 else "null"
    if cur is None or avg is None or top is None:
        return None
    return '{"current": %s, "average": %s, "max": %s}' % (cur, avg, top)


def _engine_text(value: str) -> Optional[str]:
    # as parse_line reads ``NAME value`` when value is neither a rail nor "off"
    load_freq = _p._LOAD_FREQ[value]
    if load_freq is None:
        return None
    load, freq = load_freq
    return '{"active": %s, "utilization": %s, "frequency_hz": %s}' % (
        _scalar(None if freq is None else freq > 0), _scalar(load), _scalar(freq))


_TEMPERATURES = _Fragments(_temperature_text)
_RAILS = _Fragments(_rail_text)
_ENGINES = _Fragments(_engine_text)
_ENGINE_OFF = _dumps({"active": False, "utilization": None, "frequency_hz": None})


def _lit(text: str) -> str:
    return text.replace("%", "%%")


class _Builder:
    """Walks one line as parse_line does and writes the plan's source: checks on the tokens,
    memo lookups, one check of their results, one format string."""

    def __init__(self, tokens: List[str]) -> None:
        self.tokens = tokens
        self.checks: List[str] = []          # on the tokens, before any lookup
        self.exacts: List[int] = []          # indices of the tokens checked exactly
        self.lets: List[str] = []            # vN = a lookup
        self.nullable: List[str] = []        # lookups that give None for a value they refuse
        self.tags: List[str] = []            # temperatures: the sensor the plan expects
        self.consts: Dict[str, Any] = {}
        self.values: Dict[str, Tuple[str, List[str]]] = {}   # key -> (template, arguments)
        self.engines: List[Tuple[str, str, List[str]]] = []  # (name, template, arguments)
        self.temps: List[Tuple[str, str, str]] = []          # (sensor, celsius, max or "")
        self.rails: List[Tuple[str, str, List[str]]] = []
        self.used: set = set()
        self.gpu: List[int] = []             # indices of the GR3D fields' tokens

    def const(self, value: Any) -> str:
        name = "k%d" % len(self.consts)
        self.consts[name] = value
        return name

    def let(self, expr: str, nullable: bool = True) -> str:
        name = "v%d" % len(self.lets)
        self.lets.append("%s = %s" % (name, expr))
        if nullable:
            self.nullable.append(name)
        return name

    def exact(self, i: int) -> None:
        # needed even for names without digits: "R1AM" has the key of "RAM"
        self.exacts.append(i)

    def build(self) -> Optional[str]:
        tokens, n = self.tokens, len(self.tokens)
        # Same key: same non-digit characters, so the same whitespace; but a token of digits
        # only may be missing where the whitespace around it stays.
        self.checks.append("len(t) == %d" % n)
        i = 0
        if n >= 2 and _p._timestamp(tokens) is not None:
            # parser._timestamp, knowing the key: its only non-digits are "--" and "::" (and
            # the key drops ASCII digits only), so the lengths and separators are all to check
            self.checks.append("len(t[0]) == 10 and len(t[1]) == 8 and t[0][2] == t[0][5] == '-'"
                               " and t[1][2] == t[1][5] == ':'")
            self.values["timestamp"] = ('"%s %s"', ["t[0]", "t[1]"])
            i = 2
        while i < n:
            tok = tokens[i]
            if "@" in tok:
                temp = _temperature_text(tok)
                if temp[0] == "\0":
                    return None
                v = self.let("TEMPERATURES[t[%d]]" % i, nullable=False)
                self.tags.append("%s[0] != %r" % (v, temp[0]))
                if temp[0]:
                    self.temps.append((temp[0], "%s[1]" % v, "%s[2]" % v if temp[2] else ""))
                i += 1
                continue
            kind = _p._KIND[tok]
            if kind is not None and kind.__class__ is not str:
                nxt = kind(tokens, i, _p._Line())
                if nxt is not None and kind in (_p._gr3d, _p._gr3d_n):
                    if nxt != i + 2:
                        return None
                    self.exact(i)
                    self.gpu += [i, i + 1]
                    i = nxt
                    continue
                if nxt is not None:
                    if kind in self.used or kind not in _FIELD_KEYS:
                        return None
                    self.used.add(kind)
                    self.exact(i)
                    if kind is _p._cpu and tokens[i + 1][-1:] == "]":
                        self.values["cpus"] = ("%s", [self.let("cpus_text(t[%d])" % (i + 1))])
                    elif kind in _PAIRS:
                        # RAM, SWAP: memos per token, not per field; "2462/3964MB" and
                        # "(lfb 2x4MB)" change every second on a real board, each on its own
                        used_total, paren, extra = _PAIRS[kind]
                        v = self.let("%s[t[%d]]" % (self.const(used_total), i + 1))
                        keys = _FIELD_KEYS[kind]
                        self.values[keys[0]] = ("%s", ["%s[0]" % v])
                        self.values[keys[1]] = ("%s", ["%s[1]" % v])
                        if nxt == i + 4 and tokens[i + 2] == paren:
                            self.exact(i + 2)
                            w = self.let("%s[t[%d]]" % (self.const(extra), i + 3))
                            for k, key in enumerate(keys[2:]):
                                self.values[key] = ("%s", ["%s[%d]" % (w, k)])
                        elif nxt != i + 2:
                            return None
                    else:
                        # the memo's key is every value token: "(lfb", "fg" are in it too
                        v = self.let("%s[(%s,)]" % (self.const(_FIELDS[kind]), ", ".join(
                            "t[%d]" % j for j in range(i + 1, nxt))))
                        for k, key in enumerate(_FIELD_KEYS[kind]):
                            self.values[key] = ("%s", ["%s[%d]" % (v, k)])
                    i = nxt
                    continue
                if kind is not _p._cpu:
                    return None
                kind = _p._lower_name(tok)             # "CPU 466/466" on AGX Xavier is a rail
            if kind is None or i + 1 >= n:
                return None
            self.exact(i)
            value = tokens[i + 1]
            # "/" is not a digit: every line of the key has it where this one has
            if "/" in value:
                v = self.let("RAILS[t[%d]]" % (i + 1))
                if tok != _p.UNCONNECTED_RAIL:
                    self.rails.append((tok, "%s", [v]))
            elif value == "off":
                self.exact(i + 1)
                self.engines.append((kind, _lit(_ENGINE_OFF), []))
            else:
                self.engines.append((kind, "%s", [self.let("ENGINES[t[%d]]" % (i + 1))]))
            i += 2
        return self.source()

    def exact_check(self) -> List[str]:
        # one C-level itemgetter and one tuple comparison: less to compile and to run than a
        # comparison per token
        if not self.exacts:
            return []
        if len(self.exacts) == 1:
            return ["t[%d] == %r" % (self.exacts[0], self.tokens[self.exacts[0]])]
        get = self.const(itemgetter(*self.exacts))
        return ["%s(t) == %s" % (get, self.const(tuple(self.tokens[i] for i in self.exacts)))]

    def source(self) -> str:
        def first_of_each(items: List[Any]) -> List[Any]:
            seen: set = set()
            out = []
            for item in items:
                if item[0] not in seen:
                    seen.add(item[0])
                    out.append(item)
            return out

        def mapping(items: List[Tuple[str, str, List[str]]]) -> Tuple[str, List[str]]:
            parts, args = [], []
            for name, template, arguments in items:
                parts.append(_lit(_dumps(name)) + ": " + template)
                args += arguments
            return "{" + ", ".join(parts) + "}", args

        values = dict(self.values)
        if self.gpu:
            v = self.let("GPU[(%s,)]" % ", ".join("t[%d]" % j for j in self.gpu))
            for k, key in enumerate(_GPU_KEYS):
                values[key] = ("%s", ["%s[%d]" % (v, k)])
        temps = first_of_each(self.temps)
        values["engines"] = mapping(first_of_each(self.engines))
        values["temperatures_celsius"] = mapping([(s, "%s", [c]) for s, c, _m in temps])
        values["temperatures_max_celsius"] = mapping([(s, "%s", [m]) for s, _c, m in temps if m])
        values["power_watts"] = mapping(first_of_each(self.rails))
        defaults = {"cpus": "[]", "gpu_frequencies_hz": "{}", "gpc_utilization": "{}",
                    "unknown": "[]"}
        parts, args = [], []
        for key in _KEYS:
            template, arguments = values.get(key, (defaults.get(key, "null"), []))
            parts.append(_lit(_dumps(key)) + ": " + template)
            args += arguments
        refused = (["None in (%s,)" % ", ".join(self.nullable)] if self.nullable else []) \
            + self.tags
        return ("def plan(t):\n"
                "    if not (%s): return None\n"
                "    %s\n"
                "    if %s: return None\n"
                "    return %r %% (%s)\n"
                % (" and ".join(self.checks + self.exact_check()),
                   "\n    ".join(self.lets) or "pass",
                   " or ".join(refused) or "False", "{" + ", ".join(parts) + "}",
                   "".join(a + ", " for a in args)))


def build_plan(tokens: List[str]) -> Optional[Plan]:
    """A compiled plan for the shape of ``tokens`` (a line split on whitespace), or None when
    the line has something the plans leave to the slow path."""
    builder = _Builder(tokens)
    source = builder.build()
    if source is None:
        return None
    namespace: Dict[str, Any] = dict(builder.consts, TEMPERATURES=_TEMPERATURES, RAILS=_RAILS,
                                     ENGINES=_ENGINES, GPU=_GPU, cpus_text=_cpus_text)
    exec(compile(source, "<tegrastats plan>", "exec"), namespace)
    return namespace["plan"]  # type: ignore[no-any-return]


def _refuse(tokens: List[str]) -> Optional[str]:
    return None                            # the plan of a shape the plans leave to the slow way


class LineEncoder:
    """``encode(line)`` is ``json.dumps(parse_line(line).to_json())``, through the plan of the
    line's shape when there is one. One per stream.

    A plan is built the second time a shape is seen: a stream of junk, every line a new shape,
    then costs no more than the slow way; and a line of over 256 tokens (a real one has under
    80) is never planned, so no plan is big."""

    __slots__ = ("_plans", "_seen", "planned", "slow")

    def __init__(self) -> None:
        self._plans: Dict[bytes, Plan] = {}
        self._seen: set = set()
        self.planned = 0          # lines encoded by a plan (for tests and the bench)
        self.slow = 0

    def encode(self, line: str) -> str:
        if len(line) > _p.MAX_LINE_CHARS:
            self.slow += 1
            return _dumps(_p.parse_line(line).to_json())
        key = line.encode("utf-8", "surrogatepass").translate(None, _DIGITS)
        tokens = line.split()
        plan = self._plans.get(key)
        if plan is not None:
            text = plan(tokens)
            if text is not None:
                self.planned += 1
                return text
            self.slow += 1
            return _dumps(_p.parse_line(line).to_json())
        self.slow += 1
        text = _dumps(_p.parse_line(line).to_json())
        if key not in self._seen:
            if len(self._seen) >= _PLAN_LIMIT:
                self._seen.clear()
            self._seen.add(key)
            return text
        plan = build_plan(tokens) if len(tokens) <= _MAX_PLAN_TOKENS else None
        if plan is None or plan(tokens) != text:
            plan = _refuse                 # a case the builder does not know: the slow way
        if len(self._plans) >= _PLAN_LIMIT:
            self._plans.clear()
        self._plans[key] = plan
        return text
