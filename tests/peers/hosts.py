"""Fake hosts: a board's filesystem as a folder, for ``--root`` (the one builder every test and
benchmark uses).

The devicetree comes from a real DTB (tests/fixtures/dtb): as the raw blob
(/sys/firmware/fdt), or in the kernel's directory form, which is written from what Debian's
``dtc`` decompiles the blob to, so the directory form is made by a tool that shares no code with
the agent's parser. Around it: /etc/nv_tegra_release, /proc/meminfo, /sys/devices/soc0, /dev
nodes as plain files, USB devices in sysfs, the kubelet's device-plugin directory and, for the
end-to-end tests, a replay script as /usr/bin/tegrastats (FixtureHost).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
FIXTURES = os.path.join(TESTS, "fixtures")
REPO = os.path.dirname(TESTS)
DEMO_HOST = os.path.join(REPO, "edgeagent", "demo", "host")
PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
TEGRASTATS = "/usr/bin/tegrastats"
CSV_DIR = "/etc/nvidia-container-runtime/host-files-for-container.d"

XAVIER = "tegra194-p2972-0000.dtb"
NANO = "tegra210-p3450-0000.dtb"
ORIN_NANO = "tegra234-p3768-0000+p3767-0005.dtb"
RPI4 = "bcm2711-rpi-4-b.dtb"

NV_TEGRA_RELEASE = {
    "R32.7.1": "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
               "DATE: Sat Feb 19 17:05:08 UTC 2022\n",
    "R35.4.1": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
               "DATE: Tue Aug  1 19:57:35 UTC 2023\n# KERNEL_VARIANT: oot\n"
               "TARGET_USERSPACE_LIB_DIR=nvidia\n"
               "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n",
    "R36.3.0": "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
               "DATE: Mon May  6 17:34:21 UTC 2024\n# KERNEL_VARIANT: oot\n"
               "TARGET_USERSPACE_LIB_DIR=nvidia\n"
               "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n",
}
R35_4_1 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n"
MEMINFO_8G = ("MemTotal:        7765304 kB\nMemFree:         5120344 kB\n"
              "MemAvailable:    6403720 kB\nBuffers:           52424 kB\n")
XAVIER_GPU_NODES = ("nvhost-ctrl-gpu", "nvhost-gpu", "nvhost-as-gpu", "nvmap")


def dtb_path(name: str) -> str:
    return os.path.join(FIXTURES, "dtb", name)


def write(root, host_path: str, data=b"", mode: Optional[int] = None) -> str:
    """Write a file of the fake host (str or bytes); ``mode`` is its permission bits."""
    path = os.path.join(str(root), host_path.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        os.chmod(path, mode)
    return path


# --- the directory form, from dtc's decompilation ------------------------------------------------

_DTS_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|<(?P<cells>[^>]*)>|\[(?P<bytes>[^\]]*)\]'
                        r'|(?P<comma>,))')
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "0": b"\0", "\\": b"\\", '"': b'"', "'": b"'",
            "a": b"\a", "b": b"\b", "v": b"\v", "f": b"\f"}


def _dts_string(body: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            out.append(int(m.group(0), 16))
            i += 2 + len(m.group(0))
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(int(m.group(0), 8))
            i += 1 + len(m.group(0))
        else:
            out += _ESCAPES[nxt]
            i += 2
    return bytes(out) + b"\0"


def _dts_value(text: str) -> bytes:
    """The bytes of a property value as dtc writes it: "strings", <cells>, [bytes], with
    commas between."""
    out = bytearray()
    pos = 0
    while pos < len(text.rstrip()):
        m = _DTS_TOKEN.match(text, pos)
        if not m:
            raise ValueError("dtc output: cannot read value %r" % text[pos:pos + 40])
        pos = m.end()
        if m.group("str") is not None:
            out += _dts_string(m.group("str")[1:-1])
        elif m.group("cells") is not None:
            for cell in m.group("cells").split():
                out += int(cell, 0).to_bytes(4, "big")
        elif m.group("bytes") is not None:
            out += bytes.fromhex(m.group("bytes").replace(" ", ""))
    return bytes(out)


def dtb_to_dir(dtb: str, directory: str, kernel_names: bool = True) -> None:
    """Write the directory form of a DTB file, as the kernel shows it under /proc/device-tree
    (with its extra ``name`` property in every node), from ``dtc -I dtb -O dts``."""
    from tests.tools import require_tool

    dts = subprocess.run([require_tool("dtc"), "-q", "-I", "dtb", "-O", "dts", dtb],
                         stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout
    stack: List[Tuple[str, str]] = []       # (real folder, node name)
    pending = ""
    for raw in dts.splitlines():
        line = (pending + " " + raw.strip()).strip() if pending else raw.strip()
        if not line or line.startswith(("/dts-v1/", "/memreserve/", "//")):
            continue
        if line.endswith("{"):
            name = line[:-1].strip()
            folder = directory if name == "/" else os.path.join(stack[-1][0], name)
            os.makedirs(folder, exist_ok=True)
            stack.append((folder, "" if name == "/" else name))
            continue
        if line == "};":
            folder, name = stack.pop()
            if kernel_names and not os.path.exists(os.path.join(folder, "name")):
                write(folder, "/name", name.split("@")[0].encode() + b"\0")
            continue
        if not line.endswith(";"):                  # a value continued on the next line
            pending = line
            continue
        pending = ""
        name, eq, value = line[:-1].partition("=")
        write(stack[-1][0], "/" + name.strip(), _dts_value(value) if eq else b"")


def put_tree(root: str, dtb: str, form: str) -> None:
    """Put a real DTB on the host as /sys/firmware/fdt ("blob"), /proc/device-tree ("proc") or
    /sys/firmware/devicetree/base with /proc/device-tree linking to it, as on a real host
    ("sys")."""
    if form == "blob":
        os.makedirs(os.path.join(root, "sys/firmware"), exist_ok=True)
        shutil.copyfile(dtb_path(dtb), os.path.join(root, "sys/firmware/fdt"))
    elif form == "proc":
        dtb_to_dir(dtb_path(dtb), os.path.join(root, "proc/device-tree"))
    elif form == "sys":
        dtb_to_dir(dtb_path(dtb), os.path.join(root, "sys/firmware/devicetree/base"))
        os.makedirs(os.path.join(root, "proc"), exist_ok=True)
        os.symlink("/sys/firmware/devicetree/base", os.path.join(root, "proc/device-tree"))
    else:
        raise ValueError(form)


def write_proc_tree(root, nodes: Dict[str, Dict[str, bytes]]) -> None:
    """A hand-made /proc/device-tree: {"/": {"model": b"..."}, "/gpu@0": {...}}."""
    for path, props in nodes.items():
        folder = os.path.join(str(root), "proc/device-tree", path.strip("/"))
        os.makedirs(folder, exist_ok=True)
        for name, value in props.items():
            write(folder, "/" + name, value)


# --- whole hosts ----------------------------------------------------------------------------------

def make_host(root: str, dtb: Optional[str] = None, form: str = "blob",
              release: Optional[str] = None, meminfo: Optional[str] = MEMINFO_8G,
              soc0: Optional[Dict[str, str]] = None, dev: Iterable[str] = (),
              usb: Iterable[tuple] = ()) -> str:
    """A whole fake host under ``root`` (created); returns ``root``. ``release`` is a key of
    NV_TEGRA_RELEASE or the file's text; ``dev`` host paths of device nodes; ``usb``
    (vendor, product) pairs, as /sys/bus/usb/devices/2-N."""
    os.makedirs(root, exist_ok=True)
    if dtb:
        put_tree(root, dtb, form)
    if release is not None:
        write(root, "/etc/nv_tegra_release", NV_TEGRA_RELEASE.get(release, release))
    if meminfo is not None:
        write(root, "/proc/meminfo", meminfo)
    for key, value in (soc0 or {}).items():
        write(root, "/sys/devices/soc0/" + key, value + "\n")
    for node in dev:
        write(root, node, "")
    for i, (vendor, product) in enumerate(usb):
        write(root, "/sys/bus/usb/devices/2-%d/idVendor" % (i + 1), vendor + "\n")
        write(root, "/sys/bus/usb/devices/2-%d/idProduct" % (i + 1), product + "\n")
    return root


def make_root(tmp_path, dtb: Optional[str] = XAVIER, release: Optional[str] = R35_4_1,
              dev: Iterable[str] = XAVIER_GPU_NODES, name: str = "host"):
    """A board root for the ops tests (install, doctor): the DTB as /sys/firmware/fdt, the L4T
    release, /dev nodes (names under /dev), 32 GiB of memory and the folders install writes
    to. Returns a pathlib path."""
    root = tmp_path / name
    make_host(str(root), dtb, release=release, meminfo="MemTotal:       32559412 kB\n",
              dev=["/dev/" + n for n in dev or ()])
    for folder in ("var/cache", "etc/systemd/system", "usr/bin"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def short_root(demo: bool = True) -> str:
    """A short temporary host root (unix socket paths must fit in 108 bytes for grpcio): the
    packaged demo Jetson AGX Xavier (when ``demo``), plus the kubelet's device-plugin
    directory."""
    root = tempfile.mkdtemp(prefix="eadp-", dir="/tmp")
    if demo:
        shutil.copytree(DEMO_HOST, root, dirs_exist_ok=True)
    os.makedirs(os.path.join(root, PLUGIN_DIR.lstrip("/")), exist_ok=True)
    return root


def fake_pyz(path, build_id: str = "0123456789abcdef") -> str:
    """A zip shaped like a shiv build of edgeagent (what install checks), without running."""
    with zipfile.ZipFile(str(path), "w") as z:
        z.writestr("environment.json", json.dumps({"build_id": build_id, "root": None}))
        z.writestr("site-packages/edgeagent/__init__.py", "")
        z.writestr("__main__.py", "raise SystemExit('fake pyz')\n")
    return str(path)


# --- the end-to-end tests' boards ----------------------------------------------------------------

@dataclass(frozen=True)
class Board:
    """What differs between fixture boards."""

    dtb: str                      # file in tests/fixtures/dtb
    nv_tegra_release: str
    mem_total_kb: int
    soc0: Tuple[str, str, str]    # family, machine, soc_id
    gpu_nodes: Tuple[str, ...]    # host paths of the GPU's device nodes
    other_nodes: Tuple[str, ...]  # more device nodes (NVDLA...)
    tegrastats_models: Tuple[str, ...]  # fixture-line "model" prefixes to replay
    l4t_csv: str = ""             # nvidia-container-runtime's host-files-for-container.d/l4t.csv


# nvgpu's nodes on JetPack 4/5 (see edgeagent/discovery/inventory.py _gpu_dev_nodes).
_NVGPU = ("/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvhost-as-gpu", "/dev/nvhost-dbg-gpu",
          "/dev/nvhost-prof-gpu", "/dev/nvhost-tsg-gpu", "/dev/nvhost-sched-gpu", "/dev/nvmap")

BOARDS: Dict[str, Board] = {
    # Jetson Nano Developer Kit on JetPack 4.6.4 (L4T R32.7.4): the 4 GB board most fleets run.
    "nano": Board(
        dtb="tegra210-p3450-0000.dtb",
        nv_tegra_release="# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, "
                         "EABI: aarch64, DATE: Fri Jun  9 04:25:08 UTC 2023\n",
        mem_total_kb=4059712,
        soc0=("Tegra", "jetson-nano", "33"),
        gpu_nodes=_NVGPU,
        other_nodes=("/dev/nvhost-ctrl", "/dev/nvhost-vic", "/dev/nvhost-nvdec"),
        tegrastats_models=("Jetson Nano",),
        # An excerpt of JetPack 4.6's l4t.csv (the nvidia-container-csv-* packages), in its
        # "kind, /path" format; the files it names exist in the fixture as empty files.
        l4t_csv="dev, /dev/nvhost-ctrl\ndev, /dev/nvhost-ctrl-gpu\ndev, /dev/nvhost-prof-gpu\n"
                "dev, /dev/nvmap\ndev, /dev/nvhost-gpu\ndev, /dev/nvhost-as-gpu\n"
                "dev, /dev/nvhost-vic\n"
                "lib, /usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1\n"
                "lib, /usr/lib/aarch64-linux-gnu/tegra/libnvrm_gpu.so\n"
                "sym, /usr/lib/aarch64-linux-gnu/tegra/libcuda.so\n",
    ),
    # Jetson AGX Xavier Developer Kit on JetPack 5.1.2 (L4T R35.4.1), two NVDLA engines.
    "agx-xavier": Board(
        dtb="tegra194-p2972-0000.dtb",
        nv_tegra_release="# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, "
                         "EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
                         "# KERNEL_VARIANT: oot\n",
        mem_total_kb=31716636,
        soc0=("Tegra", "Jetson-AGX", "25"),
        gpu_nodes=_NVGPU,
        other_nodes=("/dev/nvhost-ctrl", "/dev/nvhost-nvdla0", "/dev/nvhost-nvdla1",
                     "/dev/nvhost-ctrl-nvdla0", "/dev/nvhost-ctrl-nvdla1"),
        tegrastats_models=("Jetson AGX Xavier",),
    ),
}


def fixture_tegrastats_lines(models: Tuple[str, ...]) -> List[str]:
    with open(os.path.join(FIXTURES, "tegrastats", "lines.jsonl")) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    lines = [e["line"] for e in entries if any((e.get("model") or "").startswith(m)
                                                for m in models)]
    if not lines:
        raise ValueError("no fixture tegrastats lines for %s" % (models,))
    return lines


class FixtureHost:
    """A fake host under ``root`` (a short /tmp path: unix socket paths must fit 108 bytes)."""

    def __init__(self, board: str = "nano", root: Optional[str] = None) -> None:
        self.board_name = board
        self.board = BOARDS[board]
        self.root = root or tempfile.mkdtemp(prefix="eae2e-", dir="/tmp")
        self.tegrastats_lines = fixture_tegrastats_lines(self.board.tegrastats_models)
        self.ctl = self.path("/run/e2e-tegrastats")
        self._build()

    # --- layout ---------------------------------------------------------------------------

    def path(self, host_path: str) -> str:
        return os.path.join(self.root, host_path.lstrip("/"))

    def write(self, host_path: str, data, mode: int = 0o644) -> str:
        return write(self.root, host_path, data, mode)

    def _build(self) -> None:
        b = self.board
        with open(dtb_path(b.dtb), "rb") as f:
            self.dtb = f.read()
        self.write("/sys/firmware/fdt", self.dtb, 0o400)
        self.write("/etc/nv_tegra_release", b.nv_tegra_release)
        free = b.mem_total_kb * 3 // 4
        self.write("/proc/meminfo",
                   "MemTotal:       %d kB\nMemFree:        %d kB\nMemAvailable:   %d kB\n"
                   "Buffers:           43156 kB\nCached:          638924 kB\n"
                   "SwapCached:            0 kB\nSwapTotal:       2029696 kB\n"
                   "SwapFree:        2029696 kB\n" % (b.mem_total_kb, free, free))
        for name, value in zip(("family", "machine", "soc_id"), b.soc0):
            self.write("/sys/devices/soc0/" + name, value + "\n")
        for node in b.gpu_nodes + b.other_nodes:
            self.write(node, "", 0o660)
        if b.l4t_csv:
            self.write(CSV_DIR + "/l4t.csv", b.l4t_csv)
            for line in b.l4t_csv.splitlines():
                kind, _, target = (p.strip() for p in line.partition(","))
                if kind != "dev" and not os.path.exists(self.path(target)):
                    self.write(target, "")
        os.makedirs(self.path(PLUGIN_DIR), exist_ok=True)
        os.makedirs(self.ctl, exist_ok=True)
        with open(os.path.join(self.ctl, "lines.json"), "w") as f:
            json.dump(self.tegrastats_lines, f)
        with open(os.path.join(TESTS, "e2e", "tegrastats_replay.py")) as f:
            script = f.read()
        # The interpreter running the tests, by absolute path: the replay needs nothing else.
        self.write(TEGRASTATS, "#!%s\n%s" % (sys.executable, script), 0o755)

    # --- faults -----------------------------------------------------------------------------

    def truncate_dtb(self, size: int = 200) -> None:
        """Make /sys/firmware/fdt a blob cut short (the header says more than there is)."""
        os.chmod(self.path("/sys/firmware/fdt"), 0o600)
        self.write("/sys/firmware/fdt", self.dtb[:size], 0o400)

    def remove_device(self, host_path: str) -> None:
        os.unlink(self.path(host_path))

    def restore_device(self, host_path: str) -> None:
        self.write(host_path, "", 0o660)

    def tegrastats_starts(self) -> int:
        try:
            with open(os.path.join(self.ctl, "starts")) as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def tegrastats_pids(self, parent: Optional[int] = None) -> List[int]:
        """Live (not zombie) processes running this host's tegrastats, children of ``parent``
        when given (``doctor`` runs the tool too: only the agent's own child counts)."""
        script = self.path(TEGRASTATS)
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if fields[0] == "Z" or script.encode() not in argv[:2]:
                continue
            if parent is None or int(fields[1]) == parent:
                found.append(int(entry))
        return sorted(found)

    def tegrastats_pid(self, parent: Optional[int] = None) -> Optional[int]:
        """The running replay's pid (the child of ``parent``), or None when none runs."""
        pids = self.tegrastats_pids(parent)
        if len(pids) > 1:
            raise AssertionError("%d tegrastats running: %s" % (len(pids), pids))
        return pids[0] if pids else None

    def kill_tegrastats(self, parent: Optional[int] = None, sig: int = signal.SIGKILL,
                        timeout: float = 10.0) -> int:
        """Kill the running replay (waiting for one to run first); return its pid."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self.tegrastats_pid(parent)
            if pid is not None:
                os.kill(pid, sig)
                return pid
            if time.monotonic() > deadline:
                raise AssertionError("no tegrastats running under %s" % self.root)
            time.sleep(0.05)

    def tegrastats_garbage(self, text: str) -> None:
        """The replay prints ``text`` as its next line, once."""
        tmp = os.path.join(self.ctl, "garbage.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.ctl, "garbage"))

    def garbage_pending(self) -> bool:
        return os.path.exists(os.path.join(self.ctl, "garbage"))

    def plugin_sockets(self) -> List[str]:
        d = self.path(PLUGIN_DIR)
        return sorted(n for n in os.listdir(d) if n != "kubelet.sock")

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
