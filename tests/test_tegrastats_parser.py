"""The tegrastats parser against every real published line we have, and mutations of them."""

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.tegrastats import parser
from edgeagent.tegrastats.parser import MHZ, CpuCore, Engine, Gpc, PowerRail, Temperature, \
    parse_line
from tests.conftest import FIXTURES, tegrastats_fixture_lines
from tests.parser_memos import clear_memos

MIB = 1 << 20


def more_fixture_lines():
    with open(os.path.join(FIXTURES, "tegrastats", "more_lines.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


ALL = tegrastats_fixture_lines() + more_fixture_lines()
LINES = [row["line"] for row in ALL]


def by_prefix(prefix):
    matches = [line for line in LINES if line.startswith(prefix)]
    assert len(matches) == 1, prefix
    return parse_line(matches[0])


@pytest.mark.parametrize("row", ALL, ids=["%02d %s" % (i, r["model"]) for i, r in enumerate(ALL)])
def test_every_real_line_parses_without_unknown_tokens(row):
    sample = parse_line(row["line"])
    assert sample.unknown == (), row["source"]
    assert sample.ram_total_bytes and sample.ram_used_bytes is not None
    assert sample.cpus, "every published line has a CPU list"
    assert not sample.empty


def test_there_are_the_36_shared_lines_and_more():
    assert len(tegrastats_fixture_lines()) == 36
    assert len(more_fixture_lines()) >= 10


def test_jetpack4_nano():
    s = parse_line("RAM 936/3964MB (lfb 366x4MB) SWAP 0/4096MB (cached 0MB) "
                   "IRAM 0/252kB(lfb 252kB) "
                   "CPU [10%@102,3%@102,0%@102,0%@102] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 "
                   "PLL@24C CPU@27.5C PMIC@50C GPU@28C AO@29.5C thermal@28C "
                   "POM_5V_IN 920/920 POM_5V_GPU 0/0 POM_5V_CPU 119/119")
    assert s.timestamp is None
    assert (s.ram_used_bytes, s.ram_total_bytes) == (936 * MIB, 3964 * MIB)
    assert (s.ram_lfb_blocks, s.ram_lfb_block_bytes) == (366, 4 * MIB)
    assert (s.swap_used_bytes, s.swap_total_bytes, s.swap_cached_bytes) == (0, 4096 * MIB, 0)
    assert (s.iram_used_bytes, s.iram_total_bytes, s.iram_lfb_bytes) == (0, 252 * 1024, 252 * 1024)
    assert s.cpus[0] == CpuCore(0, True, 0.10, 102 * MHZ)
    assert (s.emc_utilization, s.emc_frequency_hz) == (0.0, 204 * MHZ)
    assert s.gpu_utilization == 0.0 and s.gpcs == (Gpc(0, 76 * MHZ),)
    assert s.engines == (Engine("ape", True, None, 25 * MHZ),)
    assert [t.sensor for t in s.temperatures] == ["pll", "cpu", "pmic", "gpu", "ao", "thermal"]
    assert s.temperatures[1] == Temperature("cpu", 27.5)
    assert s.rails[0] == PowerRail("POM_5V_IN", 0.92, 0.92)
    assert s.unknown == ()


def test_jetpack4_without_root_has_no_frequencies():
    s = by_prefix("RAM 1132/7859MB")
    assert s.emc_utilization == 0.0 and s.emc_frequency_hz is None
    assert s.gpu_utilization == 0.04 and s.gpcs == ()


def test_old_tx1_format_with_one_cluster_frequency():
    s = by_prefix("RAM 3468/3983MB")
    assert [c.utilization for c in s.cpus] == [0.17, 0.13, 0.29, 0.05]
    assert {c.frequency_hz for c in s.cpus} == {408 * MHZ}
    assert (s.emc_utilization, s.emc_frequency_hz) == (0.01, 408 * MHZ)
    assert s.gpu_utilization == 0.03 and s.gpcs == (Gpc(0, 76 * MHZ),)
    s = by_prefix("RAM 1104/3995MB")
    assert s.cpu_edp_limit_hz == 1734 * MHZ
    assert [e.name for e in s.engines] == ["avp", "nvdec", "msenc"]
    assert s.engines[0] == Engine("avp", True, 0.01, 115 * MHZ)


def test_kib_lfb_and_mts_and_offline_cores():
    s = by_prefix("RAM 4722/7844MB")
    assert (s.ram_lfb_blocks, s.ram_lfb_block_bytes) == (1, 512 * 1024)
    assert (s.mts_foreground, s.mts_background) == (0.0, 0.0)
    s = by_prefix("RAM 284/7860MB")
    assert [c.online for c in s.cpus] == [True, False, False, True, True, True]
    assert s.cpus[1] == CpuCore(1, False, None, None)
    # "GR3D_FREQ @0": a frequency and no load (the GPU is rail-gated)
    assert s.gpu_utilization is None and s.gpcs == (Gpc(0, 0),)


def test_agx_xavier_rails_named_cpu_and_gpu_are_rails():
    s = by_prefix("RAM 1736/15827MB")
    assert [r.name for r in s.rails] == ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"]
    assert s.rails[5] == PowerRail("SYS5V", 1.854, 1.854)
    assert len(s.cpus) == 8 and sum(c.online for c in s.cpus) == 4
    assert "iwlwifi" in {t.sensor for t in s.temperatures}


def test_jetpack5_timestamp_gpc_array_and_mw_rails():
    [line] = [x for x in LINES if x.startswith("05-06-2024 11:19:04") and "GR3D_FREQ 99%" in x]
    s = parse_line(line)
    assert s.timestamp == "05-06-2024 11:19:04"
    assert s.gpu_utilization == 0.99 and s.gpcs == (Gpc(0, 1377 * MHZ),)
    assert s.engines[0] == Engine("vic", True, None, 1036 * MHZ)
    assert s.rails[0] == PowerRail("GPU", 12.293, 11.986)


def test_sensors_that_are_off_and_unconnected_rails_give_no_value():
    s = by_prefix("04-11-2025 10:36:27")
    sensors = {t.sensor for t in s.temperatures}
    assert not sensors & {"cv0", "cv1", "cv2", "gpu"}      # -256C: switched off
    assert sensors == {"cpu", "tboard", "soc2", "tdiode", "soc0", "tj", "soc1"}
    assert [r.name for r in s.rails] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0",
                                         "VDDQ_VDD2_1V8AO"]
    assert s.gpcs == (Gpc(0, 0), Gpc(1, 0))
    assert s.unknown == ()


def test_jetpack6_engines_and_lowercase_sensors():
    s = by_prefix("05-09-2026 18:42:07")
    engines = {e.name: e for e in s.engines}
    assert engines["nvenc"] == Engine("nvenc", True, 0.78, 166 * MHZ)
    assert engines["vic"] == Engine("vic", True, 0.32, 115 * MHZ)
    assert engines["nvdla0"] == Engine("nvdla0", False, None, None)
    assert engines["pva0"].active is False
    assert "gpu" not in {t.sensor for t in s.temperatures}
    s = by_prefix("RAM 29114/30697MB")                   # runs of spaces between tokens
    assert s.unknown == () and len(s.engines) == 10 and len(s.rails) == 3


def test_thor_jetpack7_has_no_gpu_load_and_freq_only_engines():
    s = by_prefix("05-17-2026 10:00:32")
    assert s.gpu_utilization is None
    assert s.gpcs == (Gpc(0, 0), Gpc(1, 0), Gpc(2, 0))
    engines = {e.name: e for e in s.engines}
    assert engines["nvenc0"] == Engine("nvenc0", False, None, 0)
    assert engines["ofa"] == Engine("ofa", False, None, 0)
    assert engines["vic"].active is False
    assert engines["ape"] == Engine("ape", True, None, 300 * MHZ)
    assert {t.sensor for t in s.temperatures} == {"cpu", "tj", "soc012", "soc345"}
    assert len(s.cpus) == 14


def test_jetpack72_three_value_rails_and_current_max_temperatures():
    s = by_prefix("07-25-2026 09:08:28")
    assert s.rails[0] == PowerRail("VDD_GPU_SOC", 5.139, 5.139, 5.139)
    assert s.temperatures[0] == Temperature("cpu", 52.968, 52.968)
    assert s.gpu_utilization == 0.12 and [g.frequency_hz for g in s.gpcs] == [1300 * MHZ] * 2
    assert {e.name for e in s.engines} >= {"nvenc0", "nvdec0", "nvjpg0", "nvjpg1", "pva0"}


def test_drive_orin_per_gpc_fields_and_load_fields():
    s = by_prefix("06-07-2023 14:39:04")
    assert s.emc_utilization is None and s.emc_frequency_hz == 3199 * MHZ
    assert s.gpu_utilization == 0.93
    assert s.gpcs == (Gpc(0, 1274 * MHZ, 0.93), Gpc(1, 1274 * MHZ, 0.82))
    engines = {e.name: e for e in s.engines}
    assert engines["nvenc"] == Engine("nvenc", None, 0.0, None)
    assert engines["nvdla1"].utilization == 0.0
    assert s.rails == ()


def test_a_line_that_is_not_tegrastats_is_all_unknown():
    s = parse_line("pon, 6 maj 2024, 09:26:28 UTC")      # the `date` header of a published log
    assert s.empty and s.unknown == ("pon,", "6", "maj", "2024,", "09:26:28", "UTC")
    assert parse_line("").empty and parse_line("").unknown == ()


def test_unknown_tokens_are_skipped_and_the_rest_still_parses():
    s = parse_line("RAM 1/2MB FUTURE_ENGINE ~7~ CPU [5%@100] weird@thing GR3D_FREQ 1%")
    assert s.ram_total_bytes == 2 * MIB and s.cpus == (CpuCore(0, True, 0.05, 100 * MHZ),)
    assert s.gpu_utilization == 0.01
    assert s.unknown == ("FUTURE_ENGINE", "~7~", "weird@thing")


def test_a_field_that_does_not_parse_gives_no_value():
    s = parse_line("RAM 12/xxMB SWAP 5/6MB (cached ?MB) CPU [5%@100,500%@7,off] EMC_FREQ 2%@x "
                   "GR3D_FREQ 101% VDD_IN 5/bad cpu@12..5C APE -1")
    assert s.ram_used_bytes is None and s.ram_total_bytes is None
    assert (s.swap_used_bytes, s.swap_total_bytes, s.swap_cached_bytes) == (5 * MIB, 6 * MIB, None)
    assert s.cpus == (CpuCore(0, True, 0.05, 100 * MHZ), CpuCore(2, False))
    assert s.emc_utilization is None and s.emc_frequency_hz is None
    assert s.gpu_utilization is None
    assert s.rails == () and s.temperatures == () and s.engines == ()
    assert set(s.unknown) == {"RAM", "12/xxMB", "(cached", "?MB)", "CPU[1]=500%@7", "EMC_FREQ",
                              "2%@x", "GR3D_FREQ", "101%", "VDD_IN", "5/bad", "cpu@12..5C",
                              "APE", "-1"}


def test_duplicates_keep_the_first_reading():
    s = parse_line("RAM 1/2MB a@1C A@2C VDD_X 1/1 VDD_X 2/2 VIC off VIC_FREQ 5")
    assert s.temperatures == (Temperature("a", 1.0),)
    assert s.rails == (PowerRail("VDD_X", 0.001, 0.001),)
    assert s.engines == (Engine("vic", False, None, None),)


def test_negative_and_fractional_values():
    s = parse_line("RAM 1/2MB x@-12.5C y@-256C z@-300C")
    assert s.temperatures == (Temperature("x", -12.5),)


@pytest.mark.parametrize("digits", [
    "\u0661\u0662",          # Arabic-Indic 12: int() takes it, tegrastats never prints it
    "\uff11\uff12",          # fullwidth 12
    "\u00b9\u00b2",          # superscript 12 (isdigit() is True, isdecimal() is not)
    "\u09e7\u09e8",          # Bengali 12
    "1\u0662",                # one ASCII digit, one not
])
def test_numbers_are_ascii_digits_only(digits):
    line = ("RAM %s/3964MB SWAP 0/%sMB CPU [5%%@%s,%s%%@100] EMC_FREQ %s%% GR3D_FREQ %s%%@76 "
            "APE %s cpu@%s.5C VDD_IN %s/%s" % ((digits,) * 10))
    s = parse_line(line)
    assert s.ram_used_bytes is None and s.swap_total_bytes is None
    assert s.cpus == ()
    assert s.emc_utilization is None and s.gpu_utilization is None and s.gpcs == ()
    assert s.engines == () and s.temperatures == () and s.rails == ()
    assert len([u for u in s.unknown if digits in u]) == 9
    stamp = parse_line("%s-06-2024 11:19:04 RAM 1/2MB" % digits)
    assert stamp.timestamp is None and stamp.ram_total_bytes == 2 * MIB


def test_a_line_over_the_cap_is_not_parsed_at_all():
    real = LINES[0]
    padded = real + " " * (parser.MAX_LINE_CHARS - len(real))
    assert parse_line(padded) == parse_line(real)
    over = padded + " "
    assert parse_line(over).empty and parse_line(over).unknown == ()


def test_memos_do_not_change_results():
    warm = [parse_line(line) for line in LINES]
    clear_memos()
    cold = [parse_line(line) for line in LINES]
    assert warm == cold
    assert [parse_line(line) for line in LINES] == cold


def test_to_json_has_the_documented_keys():
    doc = by_prefix("07-25-2026 09:08:28").to_json()
    for key in ("ram_used_bytes", "ram_total_bytes", "swap_used_bytes", "swap_total_bytes", "cpus",
                "gpu_utilization", "temperatures_celsius", "power_watts", "unknown"):
        assert key in doc
    assert doc["cpus"][0] == {"index": 0, "online": True, "utilization": 0.23,
                              "frequency_hz": 2201 * MHZ}
    assert doc["power_watts"]["VIN_SYS_5V0"] == {"current": 5.5, "average": 5.5, "max": 5.5}
    assert doc["temperatures_celsius"]["gpu"] == 47.625
    json.dumps(doc)


# --- property tests on mutated real lines ---------------------------------------------------------

_ALPHABET = st.sampled_from(list("0123456789%@[],./-: ()xCmWBkMG_offRAMCPU\t")
                            + ["é", "\x00", "∞"])


@st.composite
def mutated_lines(draw):
    line = draw(st.sampled_from(LINES))
    tokens = line.split(" ")
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["char", "delete", "insert", "swap", "dup", "cut", "token"]))
        if not tokens:
            break
        k = draw(st.integers(0, len(tokens) - 1))
        tok = tokens[k]
        if op == "char" and tok:
            p = draw(st.integers(0, len(tok) - 1))
            tokens[k] = tok[:p] + draw(_ALPHABET) + tok[p + 1:]
        elif op == "delete" and tok:
            p = draw(st.integers(0, len(tok) - 1))
            tokens[k] = tok[:p] + tok[p + 1:]
        elif op == "insert":
            p = draw(st.integers(0, len(tok)))
            tokens[k] = tok[:p] + draw(st.text(_ALPHABET, max_size=4)) + tok[p:]
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[k], tokens[j] = tokens[j], tokens[k]
        elif op == "dup":
            tokens.insert(k, tok)
        elif op == "cut":
            tokens = tokens[:k]
        else:
            tokens[k] = draw(st.text(max_size=12))
    return " ".join(tokens)


def _check_sample(sample, line):
    assert all(0.0 <= c.utilization <= 1.0 for c in sample.cpus if c.utilization is not None)
    assert all(c.frequency_hz >= 0 for c in sample.cpus if c.frequency_hz is not None)
    assert all(not c.online for c in sample.cpus if c.utilization is None)
    indexes = [c.index for c in sample.cpus]
    assert indexes == sorted(set(indexes))
    for ratio in (sample.emc_utilization, sample.gpu_utilization, sample.mts_foreground,
                  sample.mts_background):
        assert ratio is None or 0.0 <= ratio <= 1.0
    for e in sample.engines:
        assert e.utilization is None or 0.0 <= e.utilization <= 1.0
        assert e.frequency_hz is None or e.frequency_hz >= 0
    for value in (sample.ram_used_bytes, sample.ram_total_bytes, sample.swap_used_bytes,
                  sample.swap_total_bytes, sample.swap_cached_bytes, sample.iram_used_bytes,
                  sample.iram_total_bytes, sample.iram_lfb_bytes, sample.ram_lfb_blocks,
                  sample.ram_lfb_block_bytes, sample.emc_frequency_hz):
        assert value is None or (isinstance(value, int) and value >= 0)
    for t in sample.temperatures:
        assert math.isfinite(t.celsius) and t.celsius > -256.0 and t.sensor
    for r in sample.rails:
        assert r.current_watts >= 0 and r.name != "NC"
    for group in (sample.temperatures, sample.rails, sample.engines):
        names = [item[0] for item in group]
        assert len(names) == len(set(names))
    tokens = set(line.split())
    assert all(u in tokens or u.startswith("CPU[") for u in sample.unknown)
    json.dumps(sample.to_json())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_lines())
def test_mutated_real_lines_never_raise_and_stay_in_range(line):
    sample = parse_line(line)
    _check_sample(sample, line)
    clear_memos()
    assert parse_line(line) == sample


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text):
    _check_sample(parse_line(text), text)
