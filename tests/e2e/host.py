"""Fixture hosts for the end-to-end tests: a whole Jetson as a folder, for ``--root``.

A host holds a real devicetree blob (tests/fixtures/dtb) as /sys/firmware/fdt, the L4T release
file, /proc/meminfo, /sys/devices/soc0, the GPU device nodes as plain files, the kubelet's
device-plugin directory, and a replay script as /usr/bin/tegrastats that prints real recorded
tegrastats lines of the same board family (tests/fixtures/tegrastats/lines.jsonl).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")
PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
TEGRASTATS = "/usr/bin/tegrastats"
CSV_DIR = "/etc/nvidia-container-runtime/host-files-for-container.d"


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
        path = self.path(host_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def _build(self) -> None:
        b = self.board
        with open(os.path.join(FIXTURES, "dtb", b.dtb), "rb") as f:
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
        with open(os.path.join(HERE, "tegrastats_replay.py")) as f:
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
