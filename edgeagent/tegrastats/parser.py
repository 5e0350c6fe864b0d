"""Pure: one tegrastats line in, one immutable :class:`TegraSample` out. No I/O, never raises.

tegrastats has no stable format; NVIDIA changes it with every JetPack and every board. What the
parser knows, with the release that introduced it (all from real published lines, see
tests/fixtures/tegrastats/):

* L4T R23-R28 (TX1): ``cpu [17%,13%]@408 EMC 1%@408 AVP 1%@115 GR3D 3%@76 MSENC 192 EDP limit 1734``
* JetPack 4 (R31/R32): ``RAM 2462/3964MB (lfb 2x4MB) SWAP 0/1982MB (cached 0MB)
  IRAM 0/252kB(lfb 252kB) CPU [1%@102,off,...] EMC_FREQ 0% GR3D_FREQ 9% APE 25 NVENC 716
  MTS fg 0% bg 0% PLL@23.5C POM_5V_IN 3410/3410`` (rails in mW without a unit; without root,
  EMC_FREQ/GR3D_FREQ lose their ``@MHz`` and rails may be missing).
* JetPack 5 (R35): a leading ``MM-DD-YYYY HH:MM:SS``; ``EMC_FREQ 0%@2133``,
  ``GR3D_FREQ 0%@[305,305]`` (one frequency per GPC), ``VIC_FREQ 729``, ``CV0@-256C`` (-256 is a
  sensor that is switched off), ``VDD_GPU_SOC 3064mW/3064mW``.
* JetPack 6 (R36): lower-case sensor names (``cpu@48.2C``), every engine listed as ``off`` or
  ``x%@MHz`` (``NVENC off NVDEC 40%@115 NVDLA0 off PVA0_FREQ off OFA off``).
* Thor, JetPack 7.0/7.1 (R38): no GPU load, ``GR3D_FREQ @[f,f,f]``, ``NVENC0_FREQ @314``.
* JetPack 7.2 (R39): three values per rail (current/average/max) and ``cpu@52.9C/52.9C``
  (current/max).
* DRIVE OS Orin: ``EMC_FREQ @3199 GR3D2_FREQ 82%@1274 NVENC_LOAD 0%``.

Units out: bytes (tegrastats "MB" is MiB, "kB" KiB), hertz (tegrastats prints MHz), ratios 0-1
(it prints percent), degrees Celsius, watts (it prints milliwatts, with or without "mW").

A token the parser does not know is skipped and listed in ``unknown``; a known field whose value
does not parse gives no value (and its tokens are listed in ``unknown``) rather than a wrong one.

Numbers are ASCII digits only: Python's ``int()``, ``float()`` and ``str.isdecimal()`` also take
Arabic-Indic, fullwidth and other Unicode digits (``١٢``), which no tegrastats prints. A line over
:data:`MAX_LINE_CHARS` is not parsed at all (an empty sample): a real line is under 2 KiB, and
callers drop longer ones whole (:mod:`edgeagent.tegrastats.lines`) rather than read their tail.

Speed matters (one line a second, forever, beside GPU work on a 4 GB board): the parser splits on
whitespace and dispatches on the field name, with no regular expression per token, and keeps a
small bounded memo of the strings that repeat from line to line ("2264", "23%", "55.5C").
"""

from __future__ import annotations

from dataclasses import dataclass, fields as _dc_fields
from operator import itemgetter
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

MHZ = 1000000
_UNIT_BYTES = {"kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
# A sensor that is powered down reads -256 C (NVIDIA Jetson Linux developer guide, tegrastats).
SENSOR_OFF_CELSIUS = -256.0
# Rails named "NC" are INA3221 channels that are not connected (AGX Orin prints two of them).
UNCONNECTED_RAIL = "NC"
# No real value has more digits; longer numbers are corruption (and int() of thousands of digits
# is slow, or refused on Python 3.11+).
_MAX_DIGITS = 18
# A real line is under 1 KiB (Thor's 14 CPUs: ~700 characters); 16 KiB leaves room for boards
# with many more cores and still bounds the cost of any one line.
MAX_LINE_CHARS = 16 * 1024
_MEMO_LIMIT = 1024          # entries per memo (a board uses a few hundred in all)
_MEMO_KEY_MAX = 24          # longer strings are never real values


class CpuCore(NamedTuple):
    """One ``CPU [...]`` entry: ``off`` is an offline core, with no load or frequency."""

    index: int
    online: bool
    utilization: Optional[float] = None      # 0-1
    frequency_hz: Optional[int] = None


class Gpc(NamedTuple):
    """One GPU graphics processing cluster: ``GR3D_FREQ x%@[f0,f1]`` or ``GR3D2_FREQ x%@f``."""

    index: int
    frequency_hz: Optional[int] = None
    utilization: Optional[float] = None      # only when tegrastats prints a load per GPC


class Engine(NamedTuple):
    """A fixed-function engine (APE, VIC, NVENC0, NVDEC, NVJPG1, NVDLA0, PVA0, OFA, ...).

    ``name`` is tegrastats' name lower-cased without ``_FREQ``/``_LOAD``. ``active`` is False for
    ``off`` and for a clock of 0 MHz, True for a running clock, None when only a load is printed.
    """

    name: str
    active: Optional[bool] = None
    utilization: Optional[float] = None
    frequency_hz: Optional[int] = None


class Temperature(NamedTuple):
    sensor: str                              # lower-cased: JetPack 6 lower-cased them itself
    celsius: float
    max_celsius: Optional[float] = None      # JetPack 7.2 ``name@cur/maxC``


class PowerRail(NamedTuple):
    name: str                                # as printed: VDD_IN, POM_5V_GPU, VDD_GPU_SOC, GPU
    current_watts: float
    average_watts: Optional[float] = None
    max_watts: Optional[float] = None        # JetPack 7.2 third value


@dataclass(frozen=True)
class TegraSample:
    """Everything one tegrastats line said. A value tegrastats did not print is None (or empty)."""

    timestamp: Optional[str] = None          # "MM-DD-YYYY HH:MM:SS" as printed (JetPack 5+)
    ram_used_bytes: Optional[int] = None
    ram_total_bytes: Optional[int] = None
    ram_lfb_blocks: Optional[int] = None
    ram_lfb_block_bytes: Optional[int] = None
    swap_used_bytes: Optional[int] = None
    swap_total_bytes: Optional[int] = None
    swap_cached_bytes: Optional[int] = None
    iram_used_bytes: Optional[int] = None
    iram_total_bytes: Optional[int] = None
    iram_lfb_bytes: Optional[int] = None
    cpus: Tuple[CpuCore, ...] = ()
    cpu_edp_limit_hz: Optional[int] = None   # old TX1 "EDP limit 1734"
    emc_utilization: Optional[float] = None
    emc_frequency_hz: Optional[int] = None
    gpu_utilization: Optional[float] = None
    gpcs: Tuple[Gpc, ...] = ()
    engines: Tuple[Engine, ...] = ()
    mts_foreground: Optional[float] = None   # Denver "MTS fg x% bg y%"
    mts_background: Optional[float] = None
    temperatures: Tuple[Temperature, ...] = ()
    rails: Tuple[PowerRail, ...] = ()
    unknown: Tuple[str, ...] = ()
    fields: int = 0                          # how many known fields parsed

    @property
    def empty(self) -> bool:
        """True when the line had no field the parser knows (not a tegrastats line)."""
        return self.fields == 0

    def to_json(self) -> Dict[str, Any]:
        """The stable JSON shape printed by `edgeagent tegrastats`."""
        return {
            "timestamp": self.timestamp,
            "ram_used_bytes": self.ram_used_bytes,
            "ram_total_bytes": self.ram_total_bytes,
            "ram_lfb_blocks": self.ram_lfb_blocks,
            "ram_lfb_block_bytes": self.ram_lfb_block_bytes,
            "swap_used_bytes": self.swap_used_bytes,
            "swap_total_bytes": self.swap_total_bytes,
            "swap_cached_bytes": self.swap_cached_bytes,
            "iram_used_bytes": self.iram_used_bytes,
            "iram_total_bytes": self.iram_total_bytes,
            "iram_lfb_bytes": self.iram_lfb_bytes,
            "cpus": [{"index": c.index, "online": c.online, "utilization": c.utilization,
                      "frequency_hz": c.frequency_hz} for c in self.cpus],
            "cpu_edp_limit_hz": self.cpu_edp_limit_hz,
            "emc_utilization": self.emc_utilization,
            "emc_frequency_hz": self.emc_frequency_hz,
            "gpu_utilization": self.gpu_utilization,
            "gpu_frequencies_hz": {str(g.index): g.frequency_hz for g in self.gpcs},
            "gpc_utilization": {str(g.index): g.utilization for g in self.gpcs
                                if g.utilization is not None},
            "engines": {e.name: {"active": e.active, "utilization": e.utilization,
                                 "frequency_hz": e.frequency_hz} for e in self.engines},
            "mts_foreground": self.mts_foreground,
            "mts_background": self.mts_background,
            "temperatures_celsius": {t.sensor: t.celsius for t in self.temperatures},
            "temperatures_max_celsius": {t.sensor: t.max_celsius for t in self.temperatures
                                         if t.max_celsius is not None},
            "power_watts": {r.name: {"current": r.current_watts, "average": r.average_watts,
                                     "max": r.max_watts} for r in self.rails},
            "unknown": list(self.unknown),
        }


_SAMPLE_DEFAULTS = {f.name: f.default for f in _dc_fields(TegraSample)}
_EMPTY = TegraSample()
_new = tuple.__new__


def _make_sample(values: Dict[str, Any]) -> TegraSample:
    # Frozen-dataclass __init__ costs ~3 us for 24 fields (object.__setattr__ each); filling the
    # instance dict directly is the same object for a quarter of that.
    sample = object.__new__(TegraSample)
    state = _SAMPLE_DEFAULTS.copy()
    state.update(values)
    object.__setattr__(sample, "__dict__", state)
    return sample


# --- value parsers: a string in, a number (or tuple) or None out; never an exception -------------

def _digits(s: str) -> bool:
    """``s`` is one or more ASCII digits (isdecimal() alone also takes "١٢" and "１２")."""
    return s.isdecimal() and s.isascii()


def _int(s: str) -> Optional[int]:
    if len(s) <= _MAX_DIGITS and _digits(s):
        return int(s)
    return None


def _float(s: str) -> Optional[float]:
    body = s[1:] if s[:1] == "-" else s
    if len(body) <= _MAX_DIGITS and _digits(body.replace(".", "", 1)):
        return float(s)
    return None


def _percent(s: str) -> Optional[float]:
    """``"35%"`` -> 0.35; anything else (or outside 0-100 %) -> None."""
    if s[-1:] != "%":
        return None
    value = _float(s[:-1])
    if value is None or not 0.0 <= value <= 100.0:
        return None
    return value / 100.0


def _mhz(s: str) -> Optional[int]:
    value = _int(s)
    return None if value is None else value * MHZ


def _size(s: str, default_unit: Optional[int] = None) -> Optional[int]:
    """``"3964MB"`` -> bytes; a bare number takes ``default_unit`` (``2462`` in ``2462/3964MB``)."""
    unit = _UNIT_BYTES.get(s[-2:])
    if unit is not None:
        value = _int(s[:-2])
    elif default_unit is not None:
        unit, value = default_unit, _int(s)
    else:
        return None
    return None if value is None else value * unit


def _used_total(s: str) -> Optional[Tuple[int, int]]:
    """``"2462/3964MB"`` -> (used, total) bytes; the unit is printed once, after the total."""
    used_s, sep, total_s = s.partition("/")
    unit = _UNIT_BYTES.get(total_s[-2:])
    if not sep or unit is None:
        return None
    used, total = _size(used_s, unit), _size(total_s)
    if used is None or total is None:
        return None
    return used, total


def _paren_size(s: str) -> Optional[int]:
    """``"252kB)"`` (the end of ``(lfb 252kB)``) -> bytes."""
    return _size(s[:-1]) if s[-1:] == ")" else None


def _cached(s: str) -> Optional[Tuple[int]]:
    """``"295MB)"`` (the end of ``(cached 295MB)``) -> (bytes,)."""
    size = _paren_size(s)
    return None if size is None else (size,)


def _lfb(s: str) -> Optional[Tuple[int, int]]:
    """``"4122x4MB)"`` (the end of ``(lfb 4122x4MB)``) -> (4122 blocks, 4 MiB)."""
    if s[-1:] != ")":
        return None
    blocks_s, x, size_s = s[:-1].partition("x")
    blocks, size = _int(blocks_s), _size(size_s)
    if not x or blocks is None or size is None:
        return None
    return blocks, size


def _load_at_freq(s: str) -> Optional[Tuple[Optional[float], Optional[int]]]:
    """``"35%@2133"``, ``"0%"``, ``"@3199"``, ``"2133"`` -> (ratio, hertz); None if malformed."""
    load_s, at, freq_s = s.partition("@")
    if not at:
        if s[-1:] == "%":
            load = _percent(s)
            return None if load is None else (load, None)
        freq = _mhz(s)
        return None if freq is None else (None, freq)
    load = None
    if load_s:
        load = _percent(load_s)
        if load is None:
            return None
    freq = _mhz(freq_s)
    if freq is None:
        return None
    return load, freq


def _celsius(s: str) -> Optional[Tuple[float, Optional[float]]]:
    """``"23.5C"`` -> (23.5, None); ``"52.968C/52.968C"`` (JetPack 7.2) -> (current, max)."""
    if s[-1:] != "C":
        return None
    cur_s, slash, max_s = s[:-1].partition("/")
    if slash:
        if cur_s[-1:] != "C":
            return None
        cur_s = cur_s[:-1]
    cur = _float(cur_s)
    if cur is None:
        return None
    if not slash:
        return cur, None
    top = _float(max_s)
    return None if top is None else (cur, top)


def _sensor(name: str) -> Optional[str]:
    """A sensor name lower-cased (JetPack 6 did it itself, so names agree across releases)."""
    return name.lower() if name[:1].isalpha() and name.isascii() else None


_SENSOR_OFF = Temperature("", SENSOR_OFF_CELSIUS)   # a known field with no value


def _temperature(tok: str) -> Optional[Temperature]:
    """``PLL@23.5C``, ``CV0@-256C`` (sensor off), ``cpu@52.968C/52.968C`` (current/max)."""
    name, _, reading = tok.partition("@")
    sensor = _sensor(name)
    value = _celsius(reading)
    if sensor is None or value is None:
        return None
    if value[0] <= SENSOR_OFF_CELSIUS:
        return _SENSOR_OFF
    return Temperature(sensor, value[0], value[1])


def _milliwatts(s: str) -> Optional[float]:
    """``"3064mW"`` or ``"3064"`` (JetPack 4 prints no unit, still mW) -> watts."""
    value = _int(s[:-2] if s[-2:] == "mW" else s)
    return None if value is None else value / 1000.0


def _kind(tok: str) -> Any:
    """The kind of a token that is not a temperature: the parser of a field with its own syntax
    (RAM, CPU, ...), else the engine name of an upper-case field name (``NVENC0_FREQ`` ->
    ``nvenc0``; rails like ``VDD_IN`` are names too), else None."""
    kind = _FIELDS.get(tok)
    if kind is not None:
        return kind
    return _lower_name(tok)


def _lower_name(tok: str) -> Optional[str]:
    if not (tok.isupper() and tok.isidentifier() and tok.isascii()):
        return None
    name = tok.lower()
    if name[-5:] in ("_freq", "_load"):
        name = name[:-5]
    return name


class _Memo(dict):
    """``memo[s]`` is ``parse(s)``, computed once. Bounded: cleared when full, so a stream of junk
    cannot grow it. A hit is a C-level dict lookup, which is why the hot paths use these.

    Strings repeat from line to line: field names always, frequencies ("2264"), loads ("23%"),
    quantised readings ("55.5C", "4280mW"). Values are immutable, so sharing them is safe."""

    __slots__ = ("parse",)

    def __init__(self, parse: Callable[[str], Any]) -> None:
        super().__init__()
        self.parse = parse

    def __missing__(self, key: str) -> Any:
        value = self.parse(key)
        if len(key) > _MEMO_KEY_MAX:
            return value                     # junk: parse it, but do not keep it
        if len(self) >= _MEMO_LIMIT:
            self.clear()
        self[key] = value
        return value


_PCT = _Memo(_percent)
_MHZ = _Memo(_mhz)
_LOAD_FREQ = _Memo(_load_at_freq)
_TEMPERATURE = _Memo(_temperature)
_MW = _Memo(_milliwatts)
_USED_TOTAL = _Memo(_used_total)
_LFB = _Memo(_lfb)
_CACHED = _Memo(_cached)
_KIND = _Memo(lambda tok: _kind(tok))   # _FIELDS is defined further down
_MEMOS = (_PCT, _MHZ, _LOAD_FREQ, _TEMPERATURE, _MW, _USED_TOTAL, _LFB, _CACHED, _KIND)


# --- fields with their own syntax: (tokens, index, line state) -> next index, or None -----------

class _Line:
    """Scratch for one line; turned into a frozen TegraSample at the end."""

    __slots__ = ("values", "unknown", "fields", "gpcs")

    def __init__(self) -> None:
        self.values: Dict[str, Any] = {}
        self.unknown: List[str] = []
        self.fields = 0
        self.gpcs: Dict[int, Gpc] = {}


_Field = Callable[[List[str], int, _Line], Optional[int]]


def _bad(tokens: List[str], i: int, end: int, st: _Line) -> int:
    """A known field whose value did not parse: no value, its tokens count as unknown."""
    end = min(end, len(tokens))
    st.unknown.extend(tokens[i:end])
    return end


def _used_total_field(name: str, paren: str, paren_memo: _Memo, first_key: str,
                      second_key: Optional[str] = None) -> _Field:
    """The parser of ``NAME used/totalMB`` with an optional ``(paren value)`` after it, whose
    memo gives a tuple of one or two values: RAM with ``(lfb 2x4MB)``, SWAP with
    ``(cached 0MB)``. (Two plain stores, not a loop over keys: this runs on every line.)"""
    used_key, total_key = name + "_used_bytes", name + "_total_bytes"

    def field(tokens: List[str], i: int, st: _Line) -> Optional[int]:
        if i + 1 >= len(tokens):
            return None
        pair = _USED_TOTAL[tokens[i + 1]]
        if pair is None:
            return _bad(tokens, i, i + 2, st)
        v = st.values
        v[used_key], v[total_key] = pair
        st.fields += 1
        j = i + 2
        if j + 1 < len(tokens) and tokens[j] == paren:
            extra = paren_memo[tokens[j + 1]]
            if extra is None:
                return _bad(tokens, j, j + 2, st)
            v[first_key] = extra[0]
            if second_key is not None:
                v[second_key] = extra[1]
            return j + 2
        return j

    return field


# RAM 2462/3964MB (lfb 2x4MB)   SWAP 0/1982MB (cached 0MB)   -- the parenthesised parts optional
_ram = _used_total_field("ram", "(lfb", _LFB, "ram_lfb_blocks", "ram_lfb_block_bytes")
_swap = _used_total_field("swap", "(cached", _CACHED, "swap_cached_bytes")


def _iram(tokens: List[str], i: int, st: _Line) -> Optional[int]:
    # IRAM 0/252kB(lfb 252kB)   -- no space before "(lfb" in every published line
    if i + 1 >= len(tokens):
        return None
    first, paren, rest = tokens[i + 1].partition("(lfb")
    j = i + 2
    pair = _used_total(first)
    if pair is None or rest:
        return _bad(tokens, i, j, st)
    v = st.values
    v["iram_used_bytes"], v["iram_total_bytes"] = pair
    st.fields += 1
    if not paren and j < len(tokens) and tokens[j] == "(lfb":
        paren, j = "(lfb", j + 1
    if paren and j < len(tokens):
        lfb = _paren_size(tokens[j])
        if lfb is None:
            return _bad(tokens, j, j + 1, st)
        v["iram_lfb_bytes"] = lfb
        return j + 1
    return j


_MAX_CPUS = 64
_OFFLINE = tuple(CpuCore(i, False) for i in range(_MAX_CPUS))
# One memo per core index ("23%@2264" on core 3 is always the same CpuCore): a whole CPU list is
# looked up with one C-level map() when its entries were seen before.
_CORES: Tuple[Dict[str, CpuCore], ...] = tuple({"off": core} for core in _OFFLINE)
_CORE_MEMO_LIMIT = 256


def _cpu(tokens: List[str], i: int, st: _Line) -> Optional[int]:
    # CPU [1%@729,off,2%@1190]  or the old  cpu [17%,13%,off]@408 (one frequency for all)
    if i + 1 >= len(tokens) or tokens[i + 1][:1] != "[":
        return None                          # "CPU 5070mW/5254mW" is a rail (AGX Xavier)
    body, close, tail = tokens[i + 1][1:].partition("]")
    shared: Optional[int] = None
    if not close or (tail and tail[:1] != "@"):
        return _bad(tokens, i, i + 2, st)
    if tail:
        shared = _mhz(tail[1:])
        if shared is None:
            return _bad(tokens, i, i + 2, st)
    entries = body.split(",")
    count = len(entries)
    if shared is None and count <= _MAX_CPUS:
        cores = list(map(dict.get, _CORES[:count], entries))
        if None not in cores:
            st.values["cpus"] = tuple(cores)
            st.fields += 1
            return i + 2
    else:
        cores = [None] * count
    pct, mhz = _PCT, _MHZ
    for index, core in enumerate(cores):
        if core is not None:
            continue
        entry = entries[index]
        if entry == "off":
            cores[index] = CpuCore(index, False)
            continue
        load_s, at, freq_s = entry.partition("@")
        load = pct[load_s]
        freq = mhz[freq_s] if at else shared
        if load is not None and freq is not None:
            core = cores[index] = _new(CpuCore, (index, True, load, freq))
            if shared is None and index < _MAX_CPUS and len(entry) <= _MEMO_KEY_MAX:
                memo = _CORES[index]
                if len(memo) >= _CORE_MEMO_LIMIT:
                    memo.clear()
                    memo["off"] = _OFFLINE[index]
                memo[entry] = core
        else:
            # one bad entry: that core has no value, the others still count
            st.unknown.append("CPU[%d]=%s" % (index, entry))
    st.values["cpus"] = tuple(core for core in cores if core is not None)
    st.fields += 1
    return i + 2


def _emc(tokens: List[str], i: int, st: _Line) -> Optional[int]:
    # EMC_FREQ 0%   EMC_FREQ 0%@2133   EMC_FREQ @3199   EMC 1%@408
    if i + 1 >= len(tokens):
        return None
    parsed = _LOAD_FREQ[tokens[i + 1]]
    if parsed is None:
        return _bad(tokens, i, i + 2, st)
    st.values["emc_utilization"], st.values["emc_frequency_hz"] = parsed
    st.fields += 1
    return i + 2


def _gpc_freqs(s: str) -> Optional[List[int]]:
    if s[:1] == "[" and s[-1:] == "]":
        out = []
        for part in s[1:-1].split(","):
            hz = _MHZ[part]
            if hz is None:
                return None
            out.append(hz)
        return out
    hz = _MHZ[s]
    return None if hz is None else [hz]


def _gr3d(tokens: List[str], i: int, st: _Line) -> Optional[int]:
    # GR3D_FREQ 9%   99%@921   0%@[305,305]   @[0,0,0] (Thor)   @0   GR3D 3%@76 (TX1)
    if i + 1 >= len(tokens):
        return None
    load_s, at, freq_s = tokens[i + 1].partition("@")
    load = _PCT[load_s] if load_s else None
    freqs = _gpc_freqs(freq_s) if at else []
    if (load_s and load is None) or freqs is None or not (freqs or load_s):
        return _bad(tokens, i, i + 2, st)
    st.values["gpu_utilization"] = load
    for index, hz in enumerate(freqs):
        st.gpcs[index] = Gpc(index, hz)
    st.fields += 1
    return i + 2


def _gr3d_n(tokens: List[str], i: int, st: _Line) -> Optional[int]:
    # GR3D2_FREQ 82%@1274 (DRIVE OS Orin): another GPC, with its own load
    if i + 1 >= len(tokens):
        return None
    parsed = _LOAD_FREQ[tokens[i + 1]]
    if parsed is None:
        return _bad(tokens, i, i + 2, st)
    index = int(tokens[i][4]) - 1
    first = st.gpcs.get(0)
    if first is not None and first.utilization is None and len(st.gpcs) == 1:
        # with one field per GPC, GR3D_FREQ's load is GPC 0's own load
        st.gpcs[0] = Gpc(0, first.frequency_hz, st.values.get("gpu_utilization"))
    st.gpcs[index] = Gpc(index, parsed[1], parsed[0])
    st.fields += 1
    return i + 2


def _mts(tokens: List[str], i: int, st: _Line) -> Optional[int]:
    # MTS fg 0% bg 0%
    if i + 4 >= len(tokens) or tokens[i + 1] != "fg" or tokens[i + 3] != "bg":
        return None
    fg, bg = _PCT[tokens[i + 2]], _PCT[tokens[i + 4]]
    if fg is None or bg is None:
        return _bad(tokens, i, i + 5, st)
    st.values["mts_foreground"], st.values["mts_background"] = fg, bg
    st.fields += 1
    return i + 5


def _edp(tokens: List[str], i: int, st: _Line) -> Optional[int]:
    # EDP limit 1734  (L4T R24 TX1: the CPU frequency cap in MHz)
    if i + 2 >= len(tokens) or tokens[i + 1] != "limit":
        return None
    hz = _mhz(tokens[i + 2])
    if hz is None:
        return _bad(tokens, i, i + 3, st)
    st.values["cpu_edp_limit_hz"] = hz
    st.fields += 1
    return i + 3


_FIELDS: Dict[str, _Field] = {
    "RAM": _ram, "SWAP": _swap, "IRAM": _iram, "CPU": _cpu, "cpu": _cpu,
    "EMC_FREQ": _emc, "EMC": _emc, "GR3D_FREQ": _gr3d, "GR3D": _gr3d,
    "GR3D2_FREQ": _gr3d_n, "GR3D3_FREQ": _gr3d_n, "MTS": _mts, "EDP": _edp,
}


def _first_of_each(items: List[Any]) -> Tuple[Any, ...]:
    """Items with distinct names (field 0), keeping the first: Prometheus refuses duplicates."""
    if len(set(map(_name_of, items))) == len(items):
        return tuple(items)
    seen: set = set()
    out = []
    for item in items:
        if item[0] not in seen:
            seen.add(item[0])
            out.append(item)
    return tuple(out)


_name_of = itemgetter(0)


def _timestamp(tokens: List[str]) -> Optional[str]:
    # "05-06-2024 11:19:04": JetPack 5 and later print the time before RAM
    d, t = tokens[0], tokens[1]
    if len(d) == 10 and len(t) == 8 and d[2] == d[5] == "-" and t[2] == t[5] == ":" \
            and _digits(d.replace("-", "")) and _digits(t.replace(":", "")):
        return d + " " + t
    return None


def parse_line(line: str) -> TegraSample:
    """Parse one tegrastats line. Never raises; unknown tokens end up in ``unknown``. A line over
    MAX_LINE_CHARS gives an empty sample (no field, nothing unknown): the caller drops it."""
    if len(line) > MAX_LINE_CHARS:
        return _EMPTY
    tokens = line.split()
    n = len(tokens)
    st = _Line()
    values = st.values
    unknown: List[str] = st.unknown
    temps: List[Temperature] = []
    engines: List[Engine] = []
    rails: List[PowerRail] = []
    temperature_of, kind_of, mw_of, load_freq_of = _TEMPERATURE, _KIND, _MW, _LOAD_FREQ
    found = 0
    i = 0
    if n >= 2:
        stamp = _timestamp(tokens)
        if stamp is not None:
            values["timestamp"] = stamp
            i = 2
    # The loop is written out by hand with memo lookups: a Python call per token would cost more
    # than all the work the token needs.
    while i < n:
        tok = tokens[i]
        if "@" in tok:
            # name@23.5C   CV0@-256C (sensor off)   cpu@52.9C/52.9C (JetPack 7.2: current/max)
            temp = temperature_of[tok]
            if temp is not None:
                found += 1
                if temp is not _SENSOR_OFF:
                    temps.append(temp)
                i += 1
                continue
            unknown.append(tok)
            i += 1
            continue
        engine = kind_of[tok]        # RAM, CPU, ...: their parser; VDD_IN, NVENC0_FREQ: a name
        if engine is not None and engine.__class__ is not str:
            nxt = engine(tokens, i, st)
            if nxt is not None:
                i = nxt
                continue
            engine = _lower_name(tok)            # "CPU 466/466" on AGX Xavier is a rail
        if engine is not None and i + 1 < n:
            value = tokens[i + 1]
            if "/" in value:
                # NAME cur/avg[/max] in mW: VDD_IN 3410/3410, VDD_SOC 1236mW/1236mW, VIN a/b/c
                parts = value.split("/")
                cur = mw_of[parts[0]]
                avg = mw_of[parts[1]]
                top = mw_of[parts[2]] if len(parts) == 3 else None
                if cur is not None and avg is not None and len(parts) <= 3 and \
                        (top is not None or len(parts) == 2):
                    found += 1
                    if tok != UNCONNECTED_RAIL:
                        rails.append(_new(PowerRail, (tok, cur, avg, top)))
                    i += 2
                    continue
            elif value == "off":
                found += 1
                engines.append(_new(Engine, (engine, False, None, None)))
                i += 2
                continue
            else:
                # APE 174   VIC_FREQ 729   NVDEC 40%@115   NVENC0_FREQ @314   NVENC_LOAD 0%
                load_freq = load_freq_of[value]
                if load_freq is not None:
                    found += 1
                    freq = load_freq[1]
                    engines.append(_new(Engine, (engine, None if freq is None else freq > 0,
                                                 load_freq[0], freq)))
                    i += 2
                    continue
        unknown.append(tok)
        i += 1
    if st.gpcs:
        values["gpcs"] = tuple(st.gpcs[k] for k in sorted(st.gpcs))
    if engines:
        values["engines"] = _first_of_each(engines)
    if rails:
        values["rails"] = _first_of_each(rails)
    if temps:
        values["temperatures"] = _first_of_each(temps)
    if unknown:
        values["unknown"] = tuple(unknown)
    values["fields"] = st.fields + found
    return _make_sample(values)
