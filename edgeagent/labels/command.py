"""``edgeagent labels [--remove] [--apply] [--json] [--kubeconfig FILE] [--node-name NAME]``.

Without flags: print the labels this node should carry and the merge patch that would bring its
Node there (read-only: one GET). ``--apply`` sends that patch once. ``--remove`` removes exactly
the labels edgeagent owns and the ownership annotation (uninstall). Exit 0 done, 1 the API server
refused or failed (403: this identity may not modify that Node), 2 operator error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, Optional, Tuple


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgeagent.invocation import add_kube_arguments

    group = parser.add_mutually_exclusive_group()
    group.add_argument("--remove", action="store_true",
                       help="remove the labels edgeagent owns and its annotation (uninstall)")
    group.add_argument("--apply", action="store_true", help="send the patch once")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    add_kube_arguments(parser)


def _fail(message: str) -> int:
    sys.stderr.write("edgeagent: error: %s\n" % message.replace("\n", " "))
    return 1


async def _patch_with_retries(client: Any, name: str, make_plan) -> Tuple[Any, bool]:
    """Plan against a fresh GET and send it; a 409 reads again (5 tries). (plan, sent)."""
    from edgeagent.kube.errors import KubeError

    for _ in range(5):
        node = await client.get_node(name)
        plan = make_plan(node)
        if plan.patch is None:
            return plan, False
        try:
            await client.patch_node(name, plan.patch)
            return plan, True
        except KubeError as e:
            if e.status != 409:
                raise
    raise KubeError("Node %s kept changing; try again" % name, status=409)


def _client_and_name(cli: Any) -> Tuple[Any, str, str]:
    from edgeagent.kube.client import CredentialCache, KubeClient
    from edgeagent.kube.credentials import find_credentials
    from edgeagent.kube.nodename import resolve_node_name

    config = cli.config
    cache = CredentialCache(lambda: find_credentials(cli.root, config["kubeconfig"]))
    creds = cache.reload()  # CredentialsError (exit 2) before any network
    name, source = resolve_node_name(config, cli.root, creds)
    return KubeClient(cache, timeout=config["kube.timeout_seconds"]), name, source


async def _remove(cli: Any) -> int:
    from edgeagent.labels.plan import owned_annotation_key, plan_removal

    prefix = cli.config["labels.prefix"]
    client, name, _ = _client_and_name(cli)
    async with client:
        plan, sent = await _patch_with_retries(client, name,
                                               lambda node: plan_removal(node, prefix))
    if not sent:
        print("Node %s: no labels owned by edgeagent" % name)
    else:
        print("Node %s: removed %d label%s%s and the %s annotation" % (
            name, len(plan.removed), "" if len(plan.removed) == 1 else "s",
            " (%s)" % ", ".join(plan.removed) if plan.removed else "",
            owned_annotation_key(prefix)))
    return 0


def remove_owned_labels(cli: Any) -> int:
    """Remove exactly the labels edgeagent owns on this node's Node, and the ownership
    annotation. For ``uninstall``: never raises; prints one line and returns 0 (done or nothing
    to do), 1 (the API server refused or failed) or 2 (credentials unusable)."""
    import asyncio

    from edgeagent.errors import OperatorError
    from edgeagent.kube.errors import KubeError

    try:
        return asyncio.run(_remove(cli))
    except OperatorError as e:
        sys.stderr.write("edgeagent: error: %s\n" % str(e).replace("\n", " "))
        return e.exit_code
    except KubeError as e:
        return _fail(_kube_message(e))


def _kube_message(e: Any) -> str:
    if e.status == 403:
        return "%s (this identity may modify only its own Node: check --node-name)" % e
    if e.status == 401:
        return "%s (credentials rejected: expired or revoked?)" % e
    if e.status == 404:
        return "%s (check --node-name; the kubelet registers the Node)" % e
    return str(e)


async def _show(cli: Any, labels: Dict[str, str]) -> Tuple[str, Any, bool]:
    from edgeagent.labels.plan import plan_labels

    prefix = cli.config["labels.prefix"]
    client, name, _ = _client_and_name(cli)
    async with client:
        if cli.args.apply:
            plan, sent = await _patch_with_retries(
                client, name, lambda node: plan_labels(node, labels, prefix))
            return name, plan, sent
        node = await client.get_node(name)
        return name, plan_labels(node, labels, prefix), False


def main(cli: Any) -> int:
    import asyncio

    from edgeagent.invocation import discover_inventory
    from edgeagent.labels.wanted import inventory_labels
    from edgeagent.kube.errors import KubeError

    if cli.args.remove:
        code = remove_owned_labels(cli)
        return code
    labels = inventory_labels(discover_inventory(cli.root), cli.config)
    if not cli.args.json:
        print("Labels this node should carry:")
        for key, value in labels.items():
            print("  %s=%s" % (key, value))
        if not labels:
            print("  (none)")
        sys.stdout.flush()
    try:
        name, plan, sent = asyncio.run(_show(cli, labels))
    except KubeError as e:
        return _fail(_kube_message(e))
    if cli.args.json:
        doc: Dict[str, Optional[Any]] = {"node": name, "labels": labels, "patch": plan.patch,
                                         "applied": sent, "owned": list(plan.owned),
                                         "left_alone": list(plan.foreign)}
        print(json.dumps(doc, indent=2))
        return 0
    if plan.foreign:
        print("Left alone (set by someone else): %s" % ", ".join(plan.foreign))
    if plan.patch is None:
        print("Node %s already carries them: no patch needed." % name)
    else:
        print("%s Node %s with this merge patch:" % ("Patched" if sent else "Would patch", name))
        print(json.dumps(plan.patch, indent=2, sort_keys=True))
        if not sent:
            print("(edgeagent run applies it; or run: edgeagent labels --apply)")
    return 0
