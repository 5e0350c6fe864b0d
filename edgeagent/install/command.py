"""`edgeagent install` and `edgeagent uninstall`: the one-step set-up of the systemd service.

install copies the running pyz to /usr/local/lib/edgeagent/edgeagent.pyz, writes the command
/usr/local/bin/edgeagent, the unit and (only when absent) /etc/edgeagent/config.toml, unpacks the
dependencies into the unit's cache directory, then `systemctl daemon-reload` and
`enable --now` (`restart` when it was already running: an upgrade). uninstall reverses it.
With --root other than / every file goes under that root and systemctl is not run: the unit is
enabled with its wants symlink, as `systemctl --root` would (an image being built).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from edgeagent.atomicfile import replace_atomic, write_atomic
from edgeagent.errors import OperatorError
from edgeagent.install.layout import (CACHE_DIR, COMMAND_PATH, CONFIG_PATH, DEFAULT_PYTHON,
                                      PACKAGE_PYZ_PATH, PYZ_PATH, UNIT_NAME, UNIT_PATH,
                                      WANTS_LINK, WRAPPER_MARK, example_config,
                                      hidden_from_service, render_unit, unit_template,
                                      wrapper_script)
from edgeagent.install.pyz import find_pyz, shiv_build_id, stale_builds
from edgeagent.invocation import Invocation, add_kube_arguments

Out = Callable[[str], None]
# How long `systemctl enable --now` may wait for READY=1: the unit's TimeoutStartSec plus margin.
START_TIMEOUT = 200.0
# Unpacking and byte-compiling the dependencies on a Nano's SD card takes tens of seconds.
PREWARM_TIMEOUT = 600.0


# --- arguments -----------------------------------------------------------------------------------

def add_install_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pyz", metavar="FILE",
                        help="the edgeagent .pyz to install (default: the one running)")
    parser.add_argument("--python", metavar="FILE",
                        help="interpreter the service runs the pyz with (default: this one; "
                             "/usr/bin/python3 under --root)")


def add_uninstall_arguments(parser: argparse.ArgumentParser) -> None:
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--remove-labels", action="store_true", default=None,
                        help="also remove the node labels edgeagent set (asked when a terminal)")
    labels.add_argument("--keep-labels", action="store_false", dest="remove_labels",
                        help="leave the node labels in place without asking")
    parser.add_argument("--purge", action="store_true",
                        help="also remove /etc/edgeagent/config.toml and unit drop-ins")
    add_kube_arguments(parser)


# --- systemctl -----------------------------------------------------------------------------------

class Systemctl:
    """Runs ``systemctl``; each call returns (ok, one line of output for the report)."""

    def __init__(self, binary: str = "systemctl") -> None:
        self.binary = binary

    def __call__(self, *args: str, timeout: float = 60.0) -> Tuple[bool, str]:
        try:
            proc = subprocess.run([self.binary] + list(args), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, "timed out after %ds" % timeout
        except OSError as e:
            return False, "%s: %s" % (self.binary, e.strerror or e)
        text = " ".join(proc.stdout.split())
        return proc.returncode == 0, text

    def is_active(self) -> bool:
        ok, _ = self("is-active", "--quiet", UNIT_NAME)
        return ok


def systemd_running(root_dir: str) -> bool:
    """sd_booted(3): the system was booted with systemd and it is running."""
    return root_dir == "/" and os.path.isdir("/run/systemd/system") and \
        shutil.which("systemctl") is not None


# --- the pyz -------------------------------------------------------------------------------------

def _copy_atomic(src: str, path: str, mode: int) -> None:
    def copy(f) -> None:
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)

    # A running service keeps its open inode; the next start gets the new file.
    replace_atomic(path, copy, mode)


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _mib(n: int) -> str:
    return "%.1f MiB" % (n / 2 ** 20)


def is_our_wrapper(path: str) -> bool:
    """True when ``path`` starts like the wrapper install writes (only its head is read: the
    file there may be anyone's, a large binary included)."""
    try:
        with open(path, "rb") as f:
            head = f.read(300)
    except OSError:
        return False
    return WRAPPER_MARK.encode() in head


# --- install -------------------------------------------------------------------------------------

def prewarm(python: str, pyz: str, cache_dir: str = CACHE_DIR,
            timeout: float = PREWARM_TIMEOUT) -> Tuple[bool, str]:
    """Run the installed pyz once with the service's SHIV_ROOT: it unpacks the dependencies now
    (so the first start is quick) and proves the interpreter can run it."""
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    env = dict(os.environ, SHIV_ROOT=cache_dir)
    try:
        proc = subprocess.run([python, pyz, "version"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "timed out after %ds" % timeout
    except OSError as e:
        return False, "%s: %s" % (python, e.strerror or e)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return False, lines[-1].strip() if lines else "exit status %d" % proc.returncode
    return True, proc.stdout.splitlines()[0] if proc.stdout else ""


def install(root, pyz: str, python: str, out: Out, systemctl: Optional[Systemctl] = None,
            prewarm_run: Optional[Callable[[str, str, str], Tuple[bool, str]]] = None) -> int:
    """Put edgeagent in place under ``root`` (a HostRoot). ``systemctl`` None: enable offline
    with the wants symlink and start nothing. Returns the exit code."""
    if not python.startswith("/"):
        raise OperatorError("--python %s: must be an absolute path" % python)
    if not os.path.exists(root.path(python)):
        raise OperatorError("--python %s: not found%s" % (
            python, "" if root.root == "/" else " under --root %s" % root.root))
    if hidden_from_service(root, python):
        raise OperatorError("--python %s: lives under /home, /root or /run/user, which the "
                            "service cannot see (ProtectHome=yes); install with a system Python: "
                            "sudo /usr/bin/python3 ./edgeagent.pyz install (or --python)" % python)
    unit_text = render_unit(unit_template(), python, PYZ_PATH)

    # the pyz
    target = root.path(PYZ_PATH)
    size = os.path.getsize(pyz)
    if os.path.exists(target) and os.path.samefile(pyz, target):
        out("kept %s (installing from it)" % PYZ_PATH)
    elif _read(target) == _read(pyz):
        out("kept %s (unchanged, %s)" % (PYZ_PATH, _mib(size)))
    else:
        _copy_atomic(pyz, target, 0o755)
        out("installed %s (%s, from %s)" % (PYZ_PATH, _mib(size), pyz))

    # the command
    wrapper = root.path(COMMAND_PATH)
    if os.path.lexists(wrapper) and not is_our_wrapper(wrapper):
        out("left %s alone: not written by edgeagent (run %s %s)" % (COMMAND_PATH, python,
                                                                      PYZ_PATH))
    else:
        text = wrapper_script(python, PYZ_PATH).encode()
        if _read(wrapper) != text:
            write_atomic(wrapper, text, 0o755)
            out("wrote %s (the edgeagent command)" % COMMAND_PATH)

    # the unit
    unit_path = root.path(UNIT_PATH)
    if os.path.islink(unit_path) and os.readlink(unit_path) == "/dev/null":
        raise OperatorError("%s is masked (a link to /dev/null): sudo systemctl unmask %s, "
                            "then install again" % (UNIT_PATH, UNIT_NAME))
    if _read(unit_path) == unit_text.encode():
        out("kept %s (unchanged)" % UNIT_PATH)
    else:
        existed = os.path.exists(unit_path)
        write_atomic(unit_path, unit_text.encode(), 0o644)
        out("%s %s (ExecStart=%s %s run)" % ("updated" if existed else "wrote", UNIT_PATH,
                                             python, PYZ_PATH))

    # the config: never overwritten
    config_path = root.path(CONFIG_PATH)
    if os.path.lexists(config_path):
        out("kept %s" % CONFIG_PATH)
    else:
        write_atomic(config_path, example_config().encode(), 0o644)
        out("wrote %s (every option, commented out: the defaults)" % CONFIG_PATH)

    if systemctl is None:
        _enable_offline(root, out)
        return 0

    prewarm_run = prewarm_run or prewarm
    ok, text = prewarm_run(python, PYZ_PATH, root.path(CACHE_DIR))
    if not ok:
        out("error: %s %s does not start: %s" % (python, PYZ_PATH, text))
        out("not enabled. Use a Python the pyz was built for (./build.sh --python X.Y), "
            "then: sudo pythonX.Y edgeagent.pyz install")
        return 1
    out("unpacked the dependencies into %s (%s)" % (CACHE_DIR, text))

    was_active = systemctl.is_active()
    steps: List[Sequence[str]] = [("daemon-reload",)]
    if was_active:
        steps += [("enable", UNIT_NAME), ("restart", UNIT_NAME)]
    else:
        steps += [("enable", "--now", UNIT_NAME)]
    for step in steps:
        ok, text = systemctl(*step, timeout=START_TIMEOUT)
        out("systemctl %s%s" % (" ".join(step), "" if ok else ": failed: " + text))
        if not ok:
            out("see why: journalctl -u edgeagent -b --no-pager | tail -n 30")
            return 1
    build_id = shiv_build_id(root.path(PYZ_PATH))
    cache_dir = root.path(CACHE_DIR)
    for name in stale_builds(cache_dir, os.path.basename(PYZ_PATH), build_id):
        path = os.path.join(cache_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
        out("removed %s/%s (an older build's dependencies)" % (CACHE_DIR, name))
    out("edgeagent is %s. Check it: systemctl status edgeagent; journalctl -u edgeagent -f; "
        "edgeagent doctor" % ("restarted" if was_active else "running"))
    return 0


def _enable_offline(root, out: Out) -> None:
    link = root.path(WANTS_LINK)
    if os.path.islink(link) and os.readlink(link) == UNIT_PATH:
        out("kept %s (enabled)" % WANTS_LINK)
    else:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(UNIT_PATH, link)
        out("enabled: %s -> %s" % (WANTS_LINK, UNIT_PATH))
    if root.root != "/":
        out("systemctl not run (--root %s): the unit starts when that system boots"
            % root.root)
    else:
        out("systemd is not running here: enabled for the next boot, not started")


def refuse_if_packaged(root, command: str) -> None:
    """The Debian package owns its files and the service's enablement: install would put a
    second unit in front of its own, uninstall would disable it behind dpkg's back."""
    if not os.path.lexists(root.path(PACKAGE_PYZ_PATH)):
        return
    if command == "install":
        how = "upgrade with sudo apt install ./edgeagent_VERSION_ARCH.deb"
    else:
        how = ("sudo apt remove edgeagent (apt purge also removes /etc/edgeagent; sudo env "
               "EDGEAGENT_PURGE_LABELS=1 apt purge edgeagent removes the node labels too)")
    raise OperatorError("%s: edgeagent is installed here by its Debian package (%s): %s"
                        % (command, PACKAGE_PYZ_PATH, how))


def install_main(cli: Invocation) -> int:
    refuse_if_packaged(cli.root, "install")
    on_host = cli.root.root == "/"
    if on_host and os.geteuid() != 0:
        raise OperatorError("install: needs root: sudo %s install" % (
            sys.argv[0] if sys.argv[0].endswith(".pyz") else "edgeagent"))
    pyz = find_pyz(cli.args.pyz)
    python = cli.args.python or (sys.executable if on_host else DEFAULT_PYTHON)
    systemctl = Systemctl() if systemd_running(cli.root.root) else None
    return install(cli.root, pyz, python, print, systemctl)


# --- uninstall -----------------------------------------------------------------------------------

def _ask(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def want_label_removal(flag: Optional[bool], interactive: bool,
                       ask: Callable[[str], bool] = _ask) -> bool:
    """--remove-labels / --keep-labels decide; else ask, but only on a terminal."""
    if flag is not None:
        return flag
    if not interactive:
        return False
    return ask("Remove the node labels edgeagent set on this node? [y/N] ")


def remove_labels(cli: Invocation, out: Out) -> bool:
    try:
        from edgeagent.labels.command import remove_owned_labels
    except ImportError as e:
        out("error: label removal is not in this build (%s)" % e)
        return False
    try:
        code = remove_owned_labels(cli)
    except OperatorError as e:
        out("error: removing the node labels: %s" % e)
        return False
    if code:
        out("error: removing the node labels failed (exit %d)" % code)
        return False
    return True


def remove_slices(cli: Invocation, out: Out) -> bool:
    """Delete this node's ResourceSlices of the driver edgeagent.io: with the agent gone no
    kubelet plugin would prepare their devices, and the scheduler would keep placing claims on
    them. Best effort: an API server that cannot be reached, or no credentials, is one line
    with what to do; False (a failed uninstall) only where gpu_mode = "dra" published them."""
    import asyncio

    from edgeagent.dra.names import DRIVER
    from edgeagent.dra.publisher import NoSliceApi, SlicePublisher, explain
    from edgeagent.kube.connect import make_client, node_name_function
    from edgeagent.kube.errors import CredentialsError, KubeError

    dra = cli.config.options.gpu_mode == "dra"
    kube = cli.config.options.kube
    client = make_client(cli.root, kube)
    later = ("kubectl delete resourceslices --field-selector spec.nodeName=<node>,spec.driver=%s"
             % DRIVER)
    try:
        client.credentials.reload()
        node = node_name_function(cli.root, kube, client)()
    except CredentialsError as e:
        out("%s: this node's ResourceSlices were not checked: no usable credentials (%s); if "
            "it published any: %s" % ("error" if dra else "note", str(e).replace("\n", " "),
                                      later))
        return not dra

    async def remove() -> int:
        async with client:
            return await SlicePublisher(client, lambda: node, None).remove_all()

    try:
        removed = asyncio.run(remove())
    except NoSliceApi:
        out("Node %s: no ResourceSlices (the API server serves no resource.k8s.io/v1 or "
            "v1beta2)" % node)
        return True
    except KubeError as e:
        out("%s: could not remove the ResourceSlices of Node %s: %s; once the API server is "
            "reachable: %s" % ("error" if dra else "note", node, explain(e),
                               later.replace("<node>", node)))
        return not dra
    if removed:
        out("removed %d ResourceSlice%s of Node %s (driver %s)" % (
            removed, "" if removed == 1 else "s", node, DRIVER))
    else:
        out("Node %s: no ResourceSlices of driver %s" % (node, DRIVER))
    return True


def _remove(root, host_path: str, out: Out, what: str = "") -> bool:
    path = root.path(host_path)
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    out("removed %s%s" % (host_path, what))
    return True


def _rmdir_if_empty(root, host_path: str) -> None:
    try:
        os.rmdir(root.path(host_path))
    except OSError:
        pass


def uninstall(root, out: Out, systemctl: Optional[Systemctl] = None, purge: bool = False,
              labels: Optional[Callable[[], bool]] = None,
              slices: Optional[Callable[[], bool]] = None,
              dra_paths: Sequence[str] = ()) -> int:
    """Stop and remove edgeagent under ``root``; ``labels`` (when given) removes the node labels
    and ``slices`` the node's ResourceSlices, after the service stopped (it would put them
    back) and before its files go. ``dra_paths``: the DRA plugin's files in the kubelet's
    folders (its registration socket, its folder with the DRA socket and checkpoint)."""
    failed = False
    unit_path = root.path(UNIT_PATH)
    installed = os.path.lexists(unit_path) or os.path.lexists(root.path(PYZ_PATH))
    if systemctl is not None and installed:
        ok, text = systemctl("disable", "--now", UNIT_NAME, timeout=60.0)
        out("systemctl disable --now %s%s" % (UNIT_NAME, "" if ok else ": failed: " + text))
        failed = failed or not ok
    if labels is not None:
        if labels():
            out("removed the node labels edgeagent owned")
        else:
            failed = True
    if slices is not None and not slices():
        failed = True
    # enabled offline, or left behind by a failed disable
    for link in root.glob("/etc/systemd/system/*.wants/" + UNIT_NAME):
        _remove(root, link, out)
    _remove(root, UNIT_PATH, out)
    dropins = UNIT_PATH + ".d"
    if os.path.isdir(root.path(dropins)):
        if purge:
            _remove(root, dropins, out, " (drop-ins)")
        else:
            out("kept %s (your drop-ins; --purge removes them)" % dropins)
    if os.path.lexists(root.path(COMMAND_PATH)):
        if is_our_wrapper(root.path(COMMAND_PATH)):
            _remove(root, COMMAND_PATH, out)
        else:
            out("left %s alone: not written by edgeagent" % COMMAND_PATH)
    _remove(root, PYZ_PATH, out)
    _rmdir_if_empty(root, os.path.dirname(PYZ_PATH))
    _remove(root, CACHE_DIR, out, " (unpacked dependencies)")
    # The agent's CDI specs outlive its restarts (a pod's container may restart meanwhile);
    # with the agent gone nothing keeps them current, so they go with it.
    from edgeagent.cdi.spec import SPEC_PATHS

    for spec in SPEC_PATHS:
        _remove(root, spec, out, " (CDI spec)")
    # A registration socket left by a killed agent makes the kubelet retry GetInfo for ever,
    # and a later install would load the old checkpoint.
    for path in dra_paths:
        _remove(root, path, out, " (DRA plugin)")
    if purge:
        _remove(root, CONFIG_PATH, out)
        _rmdir_if_empty(root, os.path.dirname(CONFIG_PATH))
        if os.path.isdir(root.path(os.path.dirname(CONFIG_PATH))):
            out("kept %s: it holds other files" % os.path.dirname(CONFIG_PATH))
    elif os.path.exists(root.path(CONFIG_PATH)):
        out("kept %s (--purge removes it)" % CONFIG_PATH)
    if systemctl is not None and installed:
        ok, text = systemctl("daemon-reload")
        out("systemctl daemon-reload%s" % ("" if ok else ": failed: " + text))
        failed = failed or not ok
        systemctl("reset-failed", UNIT_NAME)  # forget a failed state; fine when there is none
    if not installed:
        out("edgeagent was not installed (no %s, no %s)" % (UNIT_PATH, PYZ_PATH))
    return 1 if failed else 0


def uninstall_main(cli: Invocation) -> int:
    refuse_if_packaged(cli.root, "uninstall")
    on_host = cli.root.root == "/"
    if on_host and os.geteuid() != 0:
        raise OperatorError("uninstall: needs root: sudo edgeagent uninstall")
    systemctl = Systemctl() if systemd_running(cli.root.root) else None
    remove = want_label_removal(cli.args.remove_labels, sys.stdin.isatty())
    if not remove and cli.args.remove_labels is None:
        print("keeping the node labels; to remove them later (also after uninstalling): "
              "sudo ./edgeagent.pyz uninstall --remove-labels")
    from edgeagent.dra.names import plugin_folder, registration_socket

    dra = cli.config.options.dra
    return uninstall(cli.root, print, systemctl, purge=cli.args.purge,
                     labels=(lambda: remove_labels(cli, print)) if remove else None,
                     slices=lambda: remove_slices(cli, print),
                     dra_paths=(registration_socket(dra.registry_directory),
                                plugin_folder(dra.plugins_directory)))
