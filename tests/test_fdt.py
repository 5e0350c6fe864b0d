"""The FDT parser: every real blob parses as documented; damaged blobs raise DeviceTreeError."""

import json
import os
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgeagent.discovery.devicetree import DeviceTree, DeviceTreeError, DtNode
from edgeagent.discovery.fdt import (MAX_BLOB_BYTES, MAX_DEPTH, MAX_NODES, MAX_PROPERTIES,
                                      MAX_PROPERTY_NAME, MAX_TEXT_BYTES, parse_fdt)
from edgeagent.discovery.inventory import HostFacts, build_inventory
from tests.conftest import all_dtbs, dtb_path
from tests.costbound import bounded
from tests.fdtblob import NOP, StructWriter, build_fdt, chain_blob, header, with_header

BLOBS = {name: open(dtb_path(name), "rb").read() for name in all_dtbs()}

# tests/fixtures/dtb/README.md: board model, root compatible, the GPU node(s) it lists.
DOCUMENTED = {
    "tegra210-p3450-0000.dtb": (
        "NVIDIA Jetson Nano Developer Kit", ("nvidia,p3450-0000", "nvidia,tegra210"),
        [("/gpu@57000000", "nvidia,gm20b", "okay")]),
    "tegra186-p3509-0000+p3636-0001.dtb": (
        "NVIDIA Jetson TX2 NX Developer Kit", ("nvidia,p3509-0000+p3636-0001", "nvidia,tegra186"),
        [("/gpu@17000000", "nvidia,gp10b", "okay")]),
    "tegra194-p2972-0000.dtb": (
        "NVIDIA Jetson AGX Xavier Developer Kit", ("nvidia,p2972-0000", "nvidia,tegra194"),
        [("/bus@0/gpu@17000000", "nvidia,gv11b", None)]),
    "tegra234-p3768-0000+p3767-0005.dtb": (
        "NVIDIA Jetson Orin Nano Developer Kit",
        ("nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"), []),
    "bcm2711-rpi-4-b.dtb": (
        "Raspberry Pi 4 Model B", ("raspberrypi,4-model-b", "brcm,bcm2711"),
        [("/gpu", "brcm,bcm2711-vc5", "okay"), ("/scb/gpu@7ec00000", "brcm,2711-v3d", "okay")]),
    "imx8mq-phanbell.dtb": (
        "Google i.MX8MQ Phanbell", ("google,imx8mq-phanbell", "fsl,imx8mq"),
        [("/soc@0/gpu@38000000", "vivante,gc", "okay")]),
    "rk3588-rock-5b.dtb": (
        "Radxa ROCK 5B", ("radxa,rock-5b", "rockchip,rk3588"),
        [("/gpu@fb000000", "arm,mali-valhall-csf", "okay")]),
    "meson-g12b-odroid-n2-plus.dtb": (
        "Hardkernel ODROID-N2Plus", ("hardkernel,odroid-n2-plus", "amlogic,s922x", "amlogic,g12b"),
        [("/soc/gpu@ffe40000", "arm,mali-bifrost", "okay")]),
    "k3-am625-beagleplay.dtb": (
        "BeagleBoard.org BeaglePlay", ("beagle,am625-beagleplay", "ti,am625"),
        [("/bus@f0000/gpu@fd00000", "img,img-axe", "okay")]),
}


def test_every_fixture_is_documented():
    assert sorted(DOCUMENTED) == sorted(BLOBS)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_real_blob_parses_as_documented(name):
    model, compatible, gpus = DOCUMENTED[name]
    tree = parse_fdt(BLOBS[name], name)
    assert tree.source == name
    assert tree.root.path == "/" and tree.root.name == ""
    assert tree.root.string("model") == model
    assert tree.root.compatible == compatible
    gpu_nodes = [n for n in tree.walk() if n.name.split("@")[0] == "gpu" and n.compatible]
    assert [n.path for n in gpu_nodes] == [g[0] for g in gpus]
    for node, (path, compat, status) in zip(gpu_nodes, gpus):
        assert compat in node.compatible
        if status is None:                          # README: "(no status)"
            assert node.prop("status") is None
        assert node.status == "okay" and node.enabled
    assert sum(1 for _ in tree.walk()) > 200       # a real tree, not a stub


@pytest.mark.parametrize("name", sorted(BLOBS))
def test_paths_and_index_agree(name):
    tree = parse_fdt(BLOBS[name])
    paths = [n.path for n in tree.walk()]
    assert len(paths) == len(set(paths))
    for node in tree.walk():
        assert tree.get(node.path) is node
        for child in node.children:
            assert child.path == (node.path.rstrip("/") + "/" + child.name)
    assert tree.get("/no/such/node") is None
    assert tree.get("/") is tree.root


@pytest.mark.parametrize("name", sorted(BLOBS))
def test_round_trip(name):
    tree = parse_fdt(BLOBS[name])
    again = parse_fdt(build_fdt(tree.root), "rebuilt")
    assert again.root == tree.root
    assert build_fdt(again.root) == build_fdt(tree.root)


def test_round_trip_of_a_hand_made_tree():
    leaf = DtNode("npu@1000", "/soc/npu@1000", {"compatible": b"a,b\0c,d\0", "reg": b"\0\0\x10\0",
                                                   "empty": b""}, ())
    soc = DtNode("soc", "/soc", {"ranges": b""}, (leaf,))
    root = DtNode("", "/", {"model": b"Board\0", "compatible": b"v,board\0v,soc\0"}, (soc,))
    tree = parse_fdt(build_fdt(root))
    assert tree.root == root
    node = tree.get("/soc/npu@1000")
    assert node.compatible == ("a,b", "c,d")
    assert struct.unpack(">I", node.prop("reg")) == (0x1000,)
    assert node.prop("empty") == b""
    assert node.strings("missing") == []


def test_v16_blob_without_struct_size_parses():
    blob = BLOBS["tegra210-p3450-0000.dtb"]
    old = with_header(blob, version=16, size_dt_struct=0xFFFFFFFF)
    assert parse_fdt(old).root == parse_fdt(blob).root


def test_status_spellings():
    w = StructWriter().begin("").prop("compatible", b"x,y\0")
    w.begin("a").prop("status", b"ok\0").end()
    w.begin("b").prop("status", b"disabled\0").end()
    w.begin("c").prop("status", b"fail-sss\0").end()
    w.begin("d").end()
    tree = parse_fdt(w.end().finish().blob())
    assert [(n.name, n.status, n.enabled) for n in tree.root.children] == [
        ("a", "okay", True), ("b", "disabled", False), ("c", "fail-sss", False),
        ("d", "okay", True)]


def test_nop_tokens_are_skipped():
    w = StructWriter().token(NOP).begin("").token(NOP).prop("model", b"M\0").token(NOP)
    tree = parse_fdt(w.end().token(NOP).finish().blob())
    assert tree.root.string("model") == "M"


# --- damaged blobs -------------------------------------------------------------------------------

def expect_error(blob, *words, source="bad.dtb"):
    with pytest.raises(DeviceTreeError) as info:
        parse_fdt(blob, source)
    message = str(info.value)
    assert message.startswith(source + ": ")
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def cut_points(blob, start, end, count=12):
    step = max(1, (end - start) // count)
    return sorted(set(list(range(start, end, step)) + [start, end - 1]))


@pytest.mark.parametrize("name", sorted(BLOBS))
def test_truncated_blobs(name):
    blob = BLOBS[name]
    h = header(blob)
    classes = {
        "header": cut_points(blob, 0, 40),
        "struct": cut_points(blob, h["off_dt_struct"], h["off_dt_struct"] + h["size_dt_struct"]),
        "strings": cut_points(blob, h["off_dt_strings"], h["totalsize"]),
    }
    for where, points in classes.items():
        for n in points:
            message = expect_error(blob[:n], "truncated")
            if where == "header":
                assert "40-byte FDT header" in message


@pytest.mark.parametrize("name", ["tegra194-p2972-0000.dtb", "bcm2711-rpi-4-b.dtb"])
def test_truncated_blobs_with_a_consistent_header(name):
    # A blob cut short whose header was rewritten to match: the parser finds the damage inside.
    blob = BLOBS[name]
    h = header(blob)
    start, size = h["off_dt_struct"], h["size_dt_struct"]
    for n in cut_points(blob, start + 4, start + size - 4, count=25):
        cut = with_header(blob[:n], totalsize=n, size_dt_struct=n - start, off_dt_strings=n,
                          size_dt_strings=0)
        expect_error(cut)
    # Strings cut: the property names past the cut point outside the strings block.
    for n in cut_points(blob, h["off_dt_strings"], h["totalsize"] - 1, count=10):
        cut = with_header(blob[:n], totalsize=n, size_dt_strings=n - h["off_dt_strings"])
        expect_error(cut, "property name offset")


def test_bad_magic():
    blob = BLOBS["rk3588-rock-5b.dtb"]
    expect_error(b"\xd0\x0d\xfe\xef" + blob[4:], "magic 0xd00dfeef")
    expect_error(b"\0" * 64, "not a flattened devicetree")
    expect_error(b"PK\x03\x04" + b"\0" * 60, "not a flattened devicetree")


@pytest.mark.parametrize("fields, words", [
    ({"totalsize": 10 ** 9}, ["truncated", "header says"]),
    ({"off_dt_struct": 10 ** 6}, ["struct block", "outside"]),
    ({"size_dt_struct": 10 ** 6}, ["struct block", "outside"]),
    ({"off_dt_struct": 0xFFFFFFFC}, ["struct block", "outside"]),
    ({"off_dt_strings": 10 ** 6}, ["strings block", "outside"]),
    ({"size_dt_strings": 10 ** 6}, ["strings block", "outside"]),
    ({"off_dt_strings": 0xFFFFFFFF, "size_dt_strings": 2}, ["strings block", "outside"]),
    ({"off_dt_struct": 8}, ["struct block offset 8"]),
    ({"off_dt_struct": 57}, ["not 4-byte aligned"]),
    ({"version": 15}, ["unsupported FDT version 15"]),
    ({"last_comp_version": 18}, ["unsupported FDT version"]),
])
def test_bad_header_fields(fields, words):
    expect_error(with_header(BLOBS["tegra210-p3450-0000.dtb"], **fields), *words)


def test_struct_block_without_end_token_runs_out():
    w = StructWriter().begin("").prop("model", b"M\0").end()
    expect_error(w.blob(), "truncated structure block")


def test_property_name_offset_outside_strings():
    w = StructWriter().begin("").prop("model", b"M\0").end().finish()
    blob = bytearray(w.blob())
    h = header(blob)
    struct.pack_into(">I", blob, h["off_dt_struct"] + 8 + 8, 4096)   # the nameoff of "model"
    expect_error(bytes(blob), "property name offset 4096")


def test_property_value_past_the_block():
    w = StructWriter().begin("").prop("model", b"M\0").end().finish()
    blob = bytearray(w.blob())
    struct.pack_into(">I", blob, header(blob)["off_dt_struct"] + 8 + 4, 1 << 20)   # prop len
    expect_error(bytes(blob), "runs past the block")


def test_oversize_blob():
    blob = BLOBS["tegra210-p3450-0000.dtb"]
    big = blob + b"\0" * (MAX_BLOB_BYTES + 1 - len(blob))
    expect_error(big, "over the %d-byte limit" % MAX_BLOB_BYTES)


def test_depth_limit():
    tree = parse_fdt(chain_blob(MAX_DEPTH))
    deepest = max(tree.walk(), key=lambda n: n.path.count("/"))
    assert deepest.path.count("/") == MAX_DEPTH - 1
    expect_error(chain_blob(MAX_DEPTH + 1), "deeper than %d" % MAX_DEPTH)
    expect_error(chain_blob(10 * MAX_DEPTH), "deeper than %d" % MAX_DEPTH)


def test_node_count_limit():
    w = StructWriter().begin("")
    for i in range(MAX_NODES):
        w.begin("n%d" % i).end()
    expect_error(w.end().finish().blob(), "more than %d nodes" % MAX_NODES)


def test_unknown_token():
    w = StructWriter().begin("").prop("model", b"M\0").token(0x7).end().finish()
    expect_error(w.blob(), "unknown token 0x7")
    # and in a real blob: the token after the root's BEGIN_NODE and name
    blob = bytearray(BLOBS["imx8mq-phanbell.dtb"])
    struct.pack_into(">I", blob, header(blob)["off_dt_struct"] + 8, 0xDEAD)
    expect_error(bytes(blob), "unknown token 0xdead")


def test_second_root():
    w = StructWriter().begin("").prop("model", b"A\0").end().begin("").end().finish()
    expect_error(w.blob(), "second root node")


@pytest.mark.parametrize("build, words", [
    (lambda w: w.begin("").end().end().finish(), ["unbalanced end of node"]),
    (lambda w: w.prop("model", b"M\0").finish(), ["property outside any node"]),
    (lambda w: w.begin("").begin("child").end().finish(), ["end of tree inside node /"]),
    (lambda w: w.finish(), ["no root node"]),
    (lambda w: w.begin("").begin("").end().end().finish(), ["invalid node name"]),
    (lambda w: w.begin("").begin("a/b").end().end().finish(), ["invalid node name"]),
    (lambda w: w.begin("").begin("x" * 2000).end().end().finish(), ["unterminated node name"]),
])
def test_malformed_structure(build, words):
    expect_error(build(StructWriter()).blob(), *words)


def test_error_is_raised_not_returned_for_empty_input():
    expect_error(b"", "truncated: 0 bytes")


# --- hostile blobs: bounded time and memory, one-line errors --------------------------------------

def long_string_blob(size, props, string=None):
    """The blob of issue 11: ``props`` properties whose name offsets all point into one long
    string (at offsets 0, 1, 2...), each a different, nearly blob-sized name."""
    string = string if string is not None else b"p" * size + b"\0"
    out = bytearray(struct.pack(">I", 1) + b"\0\0\0\0")
    for i in range(props):
        out += struct.pack(">III", 3, 0, i % len(string))
    out += struct.pack(">II", 2, 9)
    off_struct = 56
    off_strings = off_struct + len(out)
    head = struct.pack(">10I", 0xD00DFEED, off_strings + len(string), off_struct, off_strings, 40,
                       17, 16, 0, len(string), len(out))
    return head + b"\0" * 16 + bytes(out) + string


@pytest.mark.parametrize("size, props", [(1 << 20, 20_000), (6 << 20, 150_000)])
def test_property_names_into_one_long_string(size, props):
    # Before: 1 GiB and MemoryError. Now: refused at the first over-long name.
    blob = long_string_blob(size, props)
    error = bounded(lambda: parse_fdt(blob, "bad.dtb"), 5.0, 4 * len(blob) + (8 << 20),
                    (DeviceTreeError,))
    assert isinstance(error, DeviceTreeError)
    assert "longer than %d bytes" % MAX_PROPERTY_NAME in str(error) and "\n" not in str(error)


def test_many_short_names_into_one_string_hit_the_name_budget():
    # Names just under the length cap, each at a new offset: the total is what is bounded.
    blob = long_string_blob(0, 200_000, (b"p" * (MAX_PROPERTY_NAME - 1) + b"\0") * 1000)
    error = bounded(lambda: parse_fdt(blob, "bad.dtb"), 3.0, 48 << 20, (DeviceTreeError,))
    assert isinstance(error, DeviceTreeError), "parsed: %r" % error
    assert any(w in str(error) for w in ("over %d bytes in total" % MAX_TEXT_BYTES,
                                         "more than %d properties" % MAX_PROPERTIES))


def test_long_paths_hit_the_name_budget():
    # A chain of 63 long names, then thousands of leaves: every leaf path repeats 63 KiB.
    w = StructWriter().begin("")
    for i in range(MAX_DEPTH - 2):
        w.begin("n%d-" % i + "x" * 1000)
    for i in range(MAX_NODES - MAX_DEPTH):
        w.begin("l%d" % i).end()
    for _ in range(MAX_DEPTH - 1):
        w.end()
    blob = w.finish().blob()
    error = bounded(lambda: parse_fdt(blob, "bad.dtb"), 5.0, 48 << 20, (DeviceTreeError,))
    assert "over %d bytes in total" % MAX_TEXT_BYTES in str(error)


def test_property_count_limit():
    # The cheapest property there is (12 bytes, empty, one name): only the count bounds them.
    blob = long_string_blob(0, MAX_PROPERTIES + 1, b"p\0")
    error = bounded(lambda: parse_fdt(blob, "bad.dtb"), 3.0, 64 << 20, (DeviceTreeError,))
    assert "more than %d properties" % MAX_PROPERTIES in str(error)


# --- fuzzing -------------------------------------------------------------------------------------

NAMES = sorted(BLOBS)


@st.composite
def mutated_blobs(draw):
    blob = bytearray(BLOBS[draw(st.sampled_from(NAMES))])
    h = header(blob)
    struct_end = h["off_dt_struct"] + h["size_dt_struct"]
    position = st.one_of(  # mostly inside the structure block, where the parser does its work
        st.integers(h["off_dt_struct"], struct_end - 1),
        st.integers(h["off_dt_struct"], h["off_dt_struct"] + 256),
        st.integers(0, len(blob) - 1),
    )
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "flip", "word", "word", "header", "truncate",
                                   "splice", "delete"]))
        if len(blob) < 8:
            break
        pos = min(draw(position), len(blob) - 1)
        if op == "flip":
            blob[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "word":  # a token or length where one is expected: aligned like the parser
            pos &= ~3
            value = draw(st.sampled_from([0, 1, 2, 3, 4, 9, 0xFFFFFFFF, 0x7FFFFFFF, len(blob),
                                          len(blob) - pos]))
            blob[pos:pos + 4] = struct.pack(">I", value)
        elif op == "header" and len(blob) >= 40:
            field = draw(st.integers(1, 9))
            old = struct.unpack_from(">I", blob, field * 4)[0]
            value = draw(st.one_of(st.integers(0, 2 ** 32 - 1),
                                   st.integers(max(0, old - 64), old + 64)))
            blob[field * 4:field * 4 + 4] = struct.pack(">I", value)
        elif op == "truncate":
            del blob[max(pos, 8):]
        elif op == "splice":
            other = BLOBS[draw(st.sampled_from(NAMES))]
            start = draw(st.integers(0, len(other) - 1))
            piece = other[start:start + draw(st.integers(1, 4096))]
            if draw(st.booleans()):
                blob[pos:pos] = piece
            else:
                blob[pos:pos + len(piece)] = piece
        else:
            del blob[pos:pos + draw(st.integers(1, 64))]
    if len(blob) >= 8 and draw(st.booleans()):
        # keep totalsize true to the length, so the damage is met inside the blocks
        blob[4:8] = struct.pack(">I", len(blob))
    return bytes(blob)


# Per input: a real blob (at most 142 KiB) parses in ~10 ms and a few MiB under tracemalloc;
# the bounds leave room for a loaded machine, not for a quadratic path.
FUZZ_SECONDS = 2.0
FUZZ_PEAK_BYTES = 32 << 20


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("EDGEAGENT_FUZZ_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_blobs())
def test_mutated_real_blobs_give_an_inventory_or_a_devicetree_error(blob):
    tree = bounded(lambda: parse_fdt(blob, "fuzz"), FUZZ_SECONDS, FUZZ_PEAK_BYTES,
                   (DeviceTreeError,))
    if isinstance(tree, DeviceTreeError):
        assert str(tree).startswith("fuzz: ") and "\n" not in str(tree)
        event("error: " + str(tree).split(":")[1].split(" at ")[0].strip()[:40])
        return
    event("parsed")
    inventory = build_inventory(HostFacts(tree=tree))
    json.dumps(inventory.to_json())
    assert isinstance(tree, DeviceTree)
    assert inventory.devicetree_source == "fuzz"


@st.composite
def token_streams(draw):
    """Blobs built token by token from a small alphabet, valid header: the parser's state
    machine meets every order of tokens, lengths and name offsets."""
    w = StructWriter()
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(["begin", "begin", "end", "prop", "prop", "nop", "raw"]))
        if kind == "begin":
            w.begin(draw(st.sampled_from(["", "a", "b@1", "x" * 300, "a/b"])))
        elif kind == "end":
            w.end()
        elif kind == "prop":
            w.prop(draw(st.sampled_from(["compatible", "status", "p" * 300, "model"])),
                   draw(st.binary(max_size=40)))
        elif kind == "nop":
            w.token(NOP)
        else:
            w.token(draw(st.integers(0, 2 ** 32 - 1)))
    if draw(st.booleans()):
        w.finish()
    blob = bytearray(w.blob())
    if len(blob) > 64 and draw(st.booleans()):   # a name offset anywhere in (or past) strings
        h = header(blob)
        pos = draw(st.integers(h["off_dt_struct"], len(blob) - 4)) & ~3
        blob[pos:pos + 4] = struct.pack(">I", draw(st.integers(0, len(blob))))
    return bytes(blob)


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("EDGEAGENT_FUZZ_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(token_streams())
def test_token_streams_parse_or_fail_in_one_line_within_bounds(blob):
    tree = bounded(lambda: parse_fdt(blob, "fuzz"), FUZZ_SECONDS, FUZZ_PEAK_BYTES,
                   (DeviceTreeError,))
    if isinstance(tree, DeviceTreeError):
        assert str(tree).startswith("fuzz: ") and "\n" not in str(tree)
        return
    assert tree.root.path == "/"
    assert all(len(p) <= MAX_PROPERTY_NAME for n in tree.walk() for p in n.props)
