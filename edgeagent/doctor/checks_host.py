"""Doctor checks of the host: devicetree and board, L4T/JetPack, the GPU node, the systemd
service, shiv's cache and the Python that runs edgeagent.

Everything is read through ctx.root (links resolved inside it), so a fixture root exercises
every branch; only
`systemctl show` and running an interpreter for its version need the real root (/).
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

from edgeagent.discovery.devnodes import GPU_NODES_TEXT
from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN, CheckResult, DoctorContext
from edgeagent.errors import OperatorError
from edgeagent.hostpaths import HostRoot
from edgeagent.install.layout import (PACKAGE_PYZ_PATH, UNIT_DIRS, UNIT_NAME, UNIT_PATH,
                                      hidden_from_service, installed_paths, package_unit,
                                      parse_unit, render_unit, resolve_in_root,
                                      unit_environment, unit_template)

# The oldest JetPack edgeagent supports (README): 4.6 is L4T R32.6.1, the last JetPack 4 line.
OLDEST_JETPACK = (4, 6)
# CPython end of upstream support (PEP 569, 596, 619, 664, 693, 719): after it no security fixes.
PYTHON_EOL = {(3, 8): datetime.date(2024, 10, 7), (3, 9): datetime.date(2025, 10, 31),
              (3, 10): datetime.date(2026, 10, 31), (3, 11): datetime.date(2027, 10, 31),
              (3, 12): datetime.date(2028, 10, 31), (3, 13): datetime.date(2029, 10, 31)}
# What each JetPack major ships as python3 (NVIDIA's release notes / Ubuntu base).
JETPACK_PYTHON = {"4": "3.6", "5": "3.8", "6": "3.10", "7": "3.12"}
MIN_PYTHON = (3, 8)
LOW_SPACE_BYTES = 128 * 2 ** 20


def _on_host(ctx: DoctorContext) -> bool:
    return ctx.root.root == "/"


def _today(ctx: DoctorContext) -> datetime.date:
    return ctx.facts.get("today") or datetime.date.today()


# --- devicetree, L4T, GPU ------------------------------------------------------------------------

def check_devicetree(ctx: DoctorContext) -> CheckResult:
    name = "devicetree"
    error = ctx.facts.get("discovery_error")
    inv = ctx.inventory
    if error or inv is None:
        return CheckResult(name, FAIL, "cannot read the devicetree: %s" % (error or "no inventory"),
                           "run doctor as root on the board itself; /proc/device-tree (or "
                           "/sys/firmware/fdt) must be readable and intact")
    if not inv.has_devicetree:
        return CheckResult(name, WARN, "no devicetree at /proc/device-tree, "
                           "/sys/firmware/devicetree/base or /sys/firmware/fdt: not a "
                           "devicetree board, so no GPU or accelerator is found",
                           "run edgeagent on the Jetson or ARM board itself (or point --root at "
                           "a copy of its filesystem)")
    problems = [p for p in inv.problems if "nv_tegra_release" not in p]
    if not inv.board_model and not inv.board_compatible:
        return CheckResult(name, WARN, "%s has no model or compatible: board not recognised"
                           % inv.devicetree_source,
                           "boot with the board vendor's devicetree (L4T's on a Jetson)")
    board = inv.board_model or inv.board_compatible[0]
    soc = inv.soc or "unknown SoC"
    detail = "%s (%s%s) from %s" % (board, soc, ", NVIDIA Tegra" if inv.is_tegra else "",
                                     inv.devicetree_source)
    if problems:
        return CheckResult(name, WARN, "%s; could not read: %s" % (detail, "; ".join(problems)),
                           "run doctor (and the service) as root")
    return CheckResult(name, PASS, detail)


def _version_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text.split(" ")[0]))


def check_l4t(ctx: DoctorContext) -> CheckResult:
    name = "l4t"
    inv = ctx.inventory
    if inv is None:
        return CheckResult(name, SKIP, "no inventory (see devicetree)")
    release = ctx.root.exists("/etc/nv_tegra_release")
    if not inv.is_tegra:
        return CheckResult(name, SKIP, "not a Jetson (no Tegra SoC, no /etc/nv_tegra_release)")
    if not inv.l4t:
        if release:
            return CheckResult(name, FAIL, "/etc/nv_tegra_release has no '# R<major> (release), "
                               "REVISION: x.y' line",
                               "reinstall NVIDIA's core package: sudo apt-get install "
                               "--reinstall nvidia-l4t-core")
        return CheckResult(name, WARN, "a Tegra SoC (%s) without /etc/nv_tegra_release: not "
                           "NVIDIA's L4T (a mainline kernel has no GPU driver)" % inv.soc,
                           "flash JetPack (L4T) with NVIDIA SDK Manager for the GPU to work")
    if not inv.jetpack:
        return CheckResult(name, WARN, "L4T %s: no JetPack release in NVIDIA's archive matches"
                           % inv.l4t,
                           "upgrade to a released JetPack (4.6 or newer: sudo apt-get upgrade "
                           "within a major, SDK Manager across majors)")
    detail = "L4T %s (JetPack %s)" % (inv.l4t, inv.jetpack)
    if _version_tuple(inv.jetpack) < OLDEST_JETPACK:
        return CheckResult(name, WARN, detail + ", older than JetPack 4.6, the oldest "
                           "edgeagent supports",
                           "upgrade to JetPack 4.6 or newer (L4T R32.6.1+)")
    return CheckResult(name, PASS, detail)


def check_gpu(ctx: DoctorContext) -> CheckResult:
    name = "gpu"
    inv = ctx.inventory
    if inv is None:
        return CheckResult(name, SKIP, "no inventory (see devicetree)")
    gpu = inv.gpu
    if gpu is None:
        if inv.is_tegra:
            return CheckResult(name, FAIL, "no GPU node in the devicetree and no GPU device "
                               "nodes (%s)" % GPU_NODES_TEXT,
                               "boot the L4T kernel and devicetree; `dmesg | grep -i nvgpu` "
                               "shows why the GPU driver did not load")
        return CheckResult(name, SKIP, "no GPU on this board")
    where = "%s %s" % (gpu.path, ",".join(gpu.compatible))
    if not gpu.is_nvidia:
        return CheckResult(name, SKIP, "%s (%s): not an NVIDIA GPU, not advertised"
                           % (where, gpu.status))
    if not gpu.usable:
        return CheckResult(name, FAIL, "%s has status %r" % (where, gpu.status),
                           "enable the GPU node (status = \"okay\"): L4T's devicetree does; a "
                           "custom DTB or overlay disabled it")
    if not gpu.family:
        return CheckResult(name, WARN, "%s: an NVIDIA GPU edgeagent does not know" % where,
                           "upgrade edgeagent; until then no compute capability is labelled")
    if not gpu.device_nodes:
        return CheckResult(name, FAIL, "%s is okay but its device nodes are missing (no %s)"
                           % (where, GPU_NODES_TEXT),
                           "the GPU driver is not loaded: `dmesg | grep -i nvgpu`; on JetPack 6+ "
                           "`sudo modprobe nvgpu`")
    source = " (no devicetree node: from the SoC table)" if gpu.source == "soc" else ""
    return CheckResult(name, PASS, "%s okay, %s, compute capability %s, %d device nodes%s"
                       % (where, gpu.family, gpu.compute_capability, len(gpu.device_nodes),
                          source))


# --- the systemd service -------------------------------------------------------------------------

def find_unit(root: HostRoot) -> Optional[str]:
    """The host path of the edgeagent unit systemd would load, or None."""
    for folder in UNIT_DIRS:
        path = "%s/%s" % (folder, UNIT_NAME)
        if root.lexists(path):
            return path
    return None


def _read_unit(ctx: DoctorContext) -> Tuple[Optional[str], Optional[str], Dict[str, List[str]]]:
    """(host path, text, parsed) of the installed unit; cached in ctx.facts for later checks."""
    if "host.unit" not in ctx.facts:
        path = find_unit(ctx.root)
        text = None
        if path is not None and not _masked(ctx.root, path):
            try:
                text = ctx.root.read_text(path)
            except OSError:
                text = None
        ctx.facts["host.unit"] = (path, text, parse_unit(text) if text else {})
    return ctx.facts["host.unit"]


def _masked(root: HostRoot, path: str) -> bool:
    return root.islink(path) and root.readlink(path) == "/dev/null"


def systemctl_show(unit: str, timeout: float) -> Optional[Dict[str, str]]:
    """`systemctl show` properties of ``unit``, or None when systemctl is unavailable."""
    try:
        proc = subprocess.run(["systemctl", "show", unit, "--property=LoadState,ActiveState,"
                               "SubState,NRestarts,StatusText,ActiveEnterTimestamp,Result"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    props = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def running_result(props: Optional[Dict[str, str]]) -> CheckResult:
    """The "service running" line from `systemctl show` properties."""
    name = "service running"
    if props is None:
        return CheckResult(name, SKIP, "systemctl did not answer")
    state, sub = props.get("ActiveState", "unknown"), props.get("SubState", "")
    restarts = int(props["NRestarts"]) if props.get("NRestarts", "").isdigit() else 0
    status = props.get("StatusText", "")
    detail = "%s (%s)" % (state, sub) if sub else state
    if props.get("ActiveEnterTimestamp") and state == "active":
        detail += " since %s" % props["ActiveEnterTimestamp"]
    if status:
        detail += "; %s" % status
    logs = "journalctl -u edgeagent -b -p warning --no-pager"
    if sub == "auto-restart":  # it failed and waits for its next start: a crash loop
        result = props.get("Result", "")
        return CheckResult(name, FAIL, "failing: waiting to restart after %s%s" % (
            "result %r" % result if result and result != "success" else "an exit",
            ", %d restarts so far" % restarts if restarts else ""),
            "see why it fails: journalctl -u edgeagent -b --no-pager | tail -n 30")
    if state == "active":
        if restarts:
            return CheckResult(name, WARN, "%s; systemd restarted it %d time%s" % (
                detail, restarts, "" if restarts == 1 else "s"),
                "see why it exited: %s" % logs)
        return CheckResult(name, PASS, detail)
    if state in ("activating", "reloading"):
        return CheckResult(name, WARN, detail,
                           "still starting (the first start unpacks dependencies); if it stays "
                           "so, %s" % logs)
    return CheckResult(name, FAIL, detail, "sudo systemctl start edgeagent; then %s" % logs)


def check_service(ctx: DoctorContext) -> List[CheckResult]:
    """Three lines: the unit is installed and current, enabled, and running."""
    path, text, unit = _read_unit(ctx)
    if path is None:
        skip = "edgeagent.service is not installed"
        return [CheckResult("service unit", FAIL, "no %s (nor in /lib/systemd/system)" % UNIT_PATH,
                            "install the service: sudo ./edgeagent.pyz install"),
                CheckResult("service enabled", SKIP, skip),
                CheckResult("service running", SKIP, skip)]
    if _masked(ctx.root, path):
        return [CheckResult("service unit", FAIL, "%s is masked (a link to /dev/null)" % path,
                            "sudo systemctl unmask edgeagent && sudo systemctl enable --now "
                            "edgeagent"),
                CheckResult("service enabled", SKIP, "masked"),
                CheckResult("service running", SKIP, "masked")]
    results = [_unit_result(ctx, path, text, unit)]

    links = ctx.root.glob("/etc/systemd/system/*.wants/" + UNIT_NAME)
    if links:
        targets = ", ".join(link.split("/")[-2][:-len(".wants")] for link in links)
        results.append(CheckResult("service enabled", PASS, "enabled (wanted by %s)" % targets))
    else:
        results.append(CheckResult("service enabled", WARN,
                                   "not enabled: it will not start at boot",
                                   "sudo systemctl enable edgeagent"))

    if not _on_host(ctx):
        results.append(CheckResult("service running", SKIP, "not checked under --root %s"
                                   % ctx.root.root))
    elif not os.path.isdir("/run/systemd/system"):
        results.append(CheckResult("service running", SKIP, "systemd is not running here"))
    else:
        results.append(running_result(systemctl_show(UNIT_NAME, max(ctx.timeout, 2.0))))
    return results


def _unit_result(ctx: DoctorContext, path: str, text: Optional[str],
                 unit: Dict[str, List[str]]) -> CheckResult:
    name = "service unit"
    if text is None:
        return CheckResult(name, FAIL, "%s is not readable" % path,
                           "run doctor as root (sudo edgeagent doctor)")
    python, pyz = installed_paths(unit)
    if pyz is None:
        return CheckResult(name, WARN, "%s does not run an edgeagent .pyz (ExecStart=%s)"
                           % (path, " ".join(unit.get("Service.ExecStart", [""])[-1:])),
                           "sudo ./edgeagent.pyz install (writes edgeagent's own unit)")
    # The Debian package's unit runs its pyz from /usr/lib; `install` writes its own unit.
    packaged = pyz == PACKAGE_PYZ_PATH
    reinstall = "sudo apt install --reinstall edgeagent" if packaged else \
        "sudo python3 ./edgeagent.pyz install"
    for what in (python, pyz):
        if what and not ctx.root.exists(what):
            return CheckResult(name, FAIL, "%s runs %s, which is missing" % (path, what),
                               "reinstall: %s" % reinstall)
        if what and hidden_from_service(ctx.root, what):
            return CheckResult(name, FAIL, "%s runs %s, under a home directory the service "
                               "cannot see (ProtectHome=yes)" % (path, what),
                               "reinstall with a system Python: sudo /usr/bin/python3 "
                               "./edgeagent.pyz install")
    dropins = ctx.root.glob(path + ".d/*.conf")
    extra = " with drop-ins %s" % ", ".join(os.path.basename(d) for d in dropins) \
        if dropins else ""
    try:
        if packaged:
            expected = package_unit(python or "/usr/bin/python3")
        else:
            expected = render_unit(unit_template(), python or "/usr/bin/python3", pyz)
    except (OperatorError, ValueError):
        expected = None
    if expected is None or expected != text:
        return CheckResult(name, WARN, "%s%s differs from the unit this edgeagent installs (an "
                           "older version, or edited)" % (path, extra),
                           "%s (rewrites it; keep local changes in drop-ins: systemctl edit "
                           "edgeagent)" % (reinstall if packaged else "sudo edgeagent install"))
    return CheckResult(name, PASS, "%s%s runs %s %s" % (path, extra, python, pyz))


# --- shiv's cache --------------------------------------------------------------------------------

def shiv_root(ctx: DoctorContext) -> Tuple[Optional[str], str]:
    """(host path of the cache, where that came from): the unit's SHIV_ROOT, else this
    process's, else shiv's default ~/.shiv (only meaningful on the real root)."""
    _, _, unit = _read_unit(ctx)
    env = unit_environment(unit) if unit else {}
    if env.get("SHIV_ROOT"):
        return env["SHIV_ROOT"], "the unit's SHIV_ROOT"
    if _on_host(ctx) and _running_from_pyz():
        if os.environ.get("SHIV_ROOT"):
            return os.environ["SHIV_ROOT"], "SHIV_ROOT"
        return os.path.expanduser("~/.shiv"), "shiv's default"
    return None, ""


def _running_from_pyz() -> bool:
    from edgeagent.install.pyz import shiv_build_id

    return bool(sys.argv and sys.argv[0] and os.path.isfile(sys.argv[0])
                and shiv_build_id(sys.argv[0]))


def cache_verdict(path: str, exists: bool, is_dir: bool, write_error: Optional[str],
                  free_bytes: Optional[int], stale: List[str], unpacked: bool,
                  parent: Optional[str], parent_ok: bool, source: str) -> CheckResult:
    """Pure: the "shiv cache" line from what was found on disk."""
    name = "shiv cache"
    if exists and not is_dir:
        return CheckResult(name, FAIL, "%s (%s) is not a directory" % (path, source),
                           "sudo rm %s (systemd recreates it at the next start)" % path)
    if not exists:
        if parent_ok:
            return CheckResult(name, PASS, "%s (%s) will be created at the next start (%s is "
                               "writable)" % (path, source, parent))
        return CheckResult(name, FAIL, "%s (%s) is missing and %s cannot hold it" % (
            path, source, parent or "no parent"),
            "make %s a writable directory (a read-only /var needs it on a writable mount)"
            % (parent or os.path.dirname(path)))
    if write_error:
        return CheckResult(name, FAIL, "%s (%s) is not writable: %s" % (path, source, write_error),
                           "shiv unpacks the dependencies there: make it writable, or point "
                           "SHIV_ROOT (Environment= in a drop-in) at a writable directory")
    free = " , %.0f MiB free" % (free_bytes / 2 ** 20) if free_bytes is not None else ""
    free = free.replace(" ,", ",")
    if not unpacked and free_bytes is not None and free_bytes < LOW_SPACE_BYTES:
        return CheckResult(name, WARN, "%s (%s) is writable but has only %.0f MiB free for "
                           "the first unpack" % (path, source, free_bytes / 2 ** 20),
                           "free some space on %s (the dependencies take about 50 MiB)" % path)
    if stale:
        return CheckResult(name, WARN, "%s (%s): writable%s; %d older build%s left behind: %s"
                           % (path, source, free, len(stale), "" if len(stale) == 1 else "s",
                              ", ".join(stale)),
                           "sudo rm -rf %s (edgeagent install prunes them on upgrade)"
                           % " ".join(os.path.join(path, s) for s in stale))
    return CheckResult(name, PASS, "%s (%s): writable%s%s" % (
        path, source, free, ", dependencies unpacked" if unpacked else ""))


def check_shiv_cache(ctx: DoctorContext) -> CheckResult:
    from edgeagent.install.pyz import shiv_build_id, stale_builds
    host_path, source = shiv_root(ctx)
    if host_path is None:
        return CheckResult("shiv cache", SKIP, "not installed and not running from a .pyz: no "
                           "shiv cache in use")
    # Resolved inside the root: a cache directory that is a link out of it is not looked at.
    real = ctx.root.resolve(host_path)
    exists, is_dir = ctx.root.lexists(host_path), ctx.root.isdir(host_path)
    write_error = None
    free = None
    stale: List[str] = []
    unpacked = False
    parent, parent_ok = None, False
    if is_dir:
        try:
            fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=real)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            write_error = e.strerror or str(e)
        try:
            st = os.statvfs(real)
            free = st.f_bavail * st.f_frsize
        except OSError:
            pass
        _, _, unit = _read_unit(ctx)
        _, pyz = installed_paths(unit) if unit else (None, None)
        if pyz and ctx.root.isfile(pyz):
            build = shiv_build_id(ctx.root.resolve(pyz))
            name = os.path.basename(pyz)
            stale = [s for s in stale_builds(real, name, build) if not s.startswith(".")]
            unpacked = os.path.isdir(os.path.join(real, "%s_%s" % (name, build)))
    elif not exists:
        parent = os.path.dirname(host_path.rstrip("/"))
        while parent not in ("", "/") and not ctx.root.isdir(parent):
            parent = os.path.dirname(parent)
        parent_ok = ctx.root.isdir(parent) and os.access(ctx.root.resolve(parent), os.W_OK)
    return cache_verdict(host_path, exists, is_dir, write_error, free, stale, unpacked,
                         parent, parent_ok, source)


# --- Python --------------------------------------------------------------------------------------

def _version_from_name(path: str) -> Optional[Tuple[int, int]]:
    m = re.search(r"python(\d)\.(\d+)$", path)
    return (int(m.group(1)), int(m.group(2))) if m else None


def interpreter_version(root: HostRoot, host_path: str, timeout: float) -> Optional[Tuple[int, int]]:
    """X.Y of an interpreter: from its name after following symlinks inside the root
    (/usr/bin/python3 -> python3.8), else by running it (real root only)."""
    path = resolve_in_root(root, host_path)
    found = _version_from_name(host_path) or _version_from_name(path)
    if found:
        return found
    if root.root != "/" or not os.path.exists(path):
        return None
    if os.path.realpath(path) == os.path.realpath(sys.executable):
        return sys.version_info[:2]
    try:
        proc = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.match(r"^(\d+)\.(\d+)$", proc.stdout.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def python_verdict(version: Optional[Tuple[int, int]], path: str, role: str,
                   today: datetime.date, jetpack: Optional[str] = None) -> CheckResult:
    """Pure: the "python" line for the interpreter the service (``role``) uses."""
    name = "python"
    if version is None:
        return CheckResult(name, WARN, "%s (%s): version unknown" % (path, role),
                           "check that `%s --version` is 3.8 or newer" % path)
    shown = "%d.%d" % version
    if version < MIN_PYTHON:
        shipped = " (JetPack 4 ships 3.6)" if version == (3, 6) else ""
        return CheckResult(name, FAIL, "%s is Python %s%s (%s); edgeagent needs 3.8+" % (
            path, shown, shipped, role),
            "sudo apt-get install python3.8, then sudo python3.8 ./edgeagent.pyz install "
            "(a pyz built with ./build.sh --python 3.8)")
    eol = PYTHON_EOL.get(version)
    if eol is not None and today >= eol:
        ships = ""
        if jetpack and JETPACK_PYTHON.get(jetpack.split(".")[0]) == shown:
            ships = ", the one JetPack %s ships" % jetpack.split(" ")[0]
        return CheckResult(name, WARN, "%s is Python %s (%s%s), past its upstream end of life "
                           "(%s): no more security fixes" % (path, shown, role, ships,
                                                             eol.isoformat()),
                           "edgeagent runs on it; for security fixes install a newer Python "
                           "(e.g. python3.12), build for it (./build.sh --python 3.12) and run "
                           "`sudo python3.12 ./edgeagent.pyz install`")
    return CheckResult(name, PASS, "%s is Python %s (%s)" % (path, shown, role))


def check_python(ctx: DoctorContext) -> CheckResult:
    _, _, unit = _read_unit(ctx)
    python, _ = installed_paths(unit) if unit else (None, None)
    jetpack = ctx.inventory.jetpack if ctx.inventory is not None else None
    if python is None:
        if not _on_host(ctx):
            return CheckResult("python", SKIP, "no installed unit under --root to read its "
                               "interpreter from")
        return python_verdict(sys.version_info[:2], sys.executable, "running doctor; the "
                              "service is not installed", _today(ctx), jetpack)
    if not ctx.root.exists(python):
        return CheckResult("python", FAIL, "the unit runs %s, which is missing" % python,
                           "reinstall with an existing Python: sudo python3 ./edgeagent.pyz "
                           "install")
    version = interpreter_version(ctx.root, python, max(ctx.timeout, 2.0))
    return python_verdict(version, python, "the service's interpreter", _today(ctx), jetpack)


CHECKS = [check_devicetree, check_l4t, check_gpu, check_service, check_shiv_cache, check_python]
