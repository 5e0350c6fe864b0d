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
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.invocation import Invocation
    from edgeagent.kube.client import KubeClient
    from edgeagent.labels.contest import NodeFeatures
    from edgeagent.labels.plan import Plan


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


def _client_and_name(cli: "Invocation") -> Tuple["KubeClient", str, str]:
    from edgeagent.kube.client import CredentialCache, KubeClient
    from edgeagent.kube.credentials import find_credentials
    from edgeagent.kube.nodename import resolve_node_name

    kube = cli.config.options.kube
    cache = CredentialCache(lambda: find_credentials(cli.root, kube.kubeconfig))
    creds = cache.reload()  # CredentialsError (exit 2) before any network
    name, source = resolve_node_name(kube, cli.root, creds)
    return KubeClient(cache, timeout=kube.timeout_seconds), name, source


async def _single_pass(cli: "Invocation",
                       make_plan: Callable[[Dict[str, Any], "NodeFeatures"], "Plan"],
                       send: bool, nodefeatures: bool = False) -> Tuple[str, "Plan", bool]:
    """The reconciler's own single pass (GET, plan, PATCH, 409: again): (node, plan, sent).
    ``nodefeatures``: list the Node's NodeFeature objects first, for the plan."""
    from edgeagent.labels.contest import NOT_ASKED
    from edgeagent.labels.nodefeatures import read_nodefeatures
    from edgeagent.labels.reconciler import patch_node_labels, warn_ignored

    client, name, _ = _client_and_name(cli)
    async with client:
        found = await read_nodefeatures(client, name) if nodefeatures else NOT_ASKED
        plan, _, sent = await patch_node_labels(client, name,
                                                lambda node: make_plan(node, found), send=send)
    if plan.ignored:
        warn_ignored(plan, cli.config.options.labels.prefix)
    return name, plan, sent


async def _remove(cli: "Invocation") -> int:
    from edgeagent.kube.errors import KubeError
    from edgeagent.labels.plan import owned_annotation_key, plan_removal

    prefix = cli.config.options.labels.prefix
    name, plan, sent = await _single_pass(cli, lambda node, _: plan_removal(node, prefix), True)
    if not sent:
        print("Node %s: no labels owned by edgeagent" % name)
    else:
        print("Node %s: removed %d label%s%s and the %s annotation" % (
            name, len(plan.removed), "" if len(plan.removed) == 1 else "s",
            " (%s)" % ", ".join(plan.removed) if plan.removed else "",
            owned_annotation_key(prefix)))
    if plan.deferred:
        print("Left on the Node: %s (NFD lists them as its own: GPU feature discovery's labels)"
              % ", ".join(plan.deferred))
    options = cli.config.options.labels
    if options.publish == "nodefeature":
        # nfd-master removes the labels it applied from it once the object is gone.
        from edgeagent.labels.nodefeatures import NodeFeatureForbidden
        from edgeagent.labels.publish import nodefeature_name

        client, _, _ = _client_and_name(cli)
        where = "%s/%s" % (options.nodefeature_namespace, nodefeature_name(name))
        async with client:
            try:
                gone = await client.delete_nodefeature(options.nodefeature_namespace,
                                                       nodefeature_name(name))
            except KubeError as e:
                if e.status == 403:
                    raise NodeFeatureForbidden(str(e), status=403, reason=e.reason) from None
                raise
        print("NodeFeature %s: %s" % (where, "deleted (nfd-master removes its labels)" if gone
                                      else "none"))
    return 0


def remove_owned_labels(cli: "Invocation") -> int:
    """Remove exactly the labels edgeagent owns on this node's Node, and the ownership
    annotation. For ``uninstall``: never raises; prints one line and returns 0 (done or nothing
    to do), 1 (the API server refused or failed) or 2 (credentials unusable)."""
    import asyncio

    from edgeagent.errors import OperatorError
    from edgeagent.kube.errors import KubeError
    from edgeagent.labels.reconciler import explain

    try:
        return asyncio.run(_remove(cli))
    except OperatorError as e:
        sys.stderr.write("edgeagent: error: %s\n" % str(e).replace("\n", " "))
        return e.exit_code
    except KubeError as e:
        return _fail(explain(e))


def _publish(cli: "Invocation", labels: Dict[str, str], mode: str) -> int:
    """``labels.publish = "nodefeature"``: the reconciler's publishing pass, once."""
    import asyncio

    from edgeagent.kube.errors import KubeError
    from edgeagent.labels.nodefeatures import publish_labels, read_nodefeatures
    from edgeagent.labels.reconciler import explain

    options = cli.config.options.labels
    apply = bool(cli.args.apply)

    async def once() -> Tuple[str, Any]:
        client, name, _ = _client_and_name(cli)
        async with client:
            found = await read_nodefeatures(client, name) if mode != "off" else None
            from edgeagent.labels.contest import NOT_ASKED

            return name, await publish_labels(client, name, options.nodefeature_namespace,
                                              labels, options.prefix, mode, found or NOT_ASKED,
                                              send=apply)

    try:
        name, done = asyncio.run(once())
    except KubeError as e:
        return _fail(explain(e))
    where = "%s/%s" % (done.namespace, done.name)
    if cli.args.json:
        print(json.dumps({"node": name, "labels": labels, "nodefeature": where,
                          "object": done.body, "node_patch": done.plan.patch,
                          "applied": apply and (done.body is not None or
                                                done.plan.patch is not None),
                          "deferred": list(done.plan.deferred)}, indent=2))
        return 0
    if done.plan.deferred:
        print("Left to GPU feature discovery / NFD: %s" % ", ".join(done.plan.deferred))
    if done.body is None:
        print("NodeFeature %s already says them: nothing to write." % where)
    else:
        print("%s NodeFeature %s (labels.publish = \"nodefeature\"):" % (
            "Wrote" if apply else "Would write", where))
        print(json.dumps(done.body, indent=2, sort_keys=True))
    if done.plan.patch is not None:
        print("%s Node %s over to nfd-master with this merge patch:" % (
            "Handed" if apply else "Would hand", name))
        print(json.dumps(done.plan.patch, indent=2, sort_keys=True))
    if not apply and (done.body is not None or done.plan.patch is not None):
        print("(edgeagent run applies it; or run: edgeagent labels --apply)")
    return 0


def main(cli: "Invocation") -> int:
    import asyncio

    from edgeagent.invocation import discover_inventory
    from edgeagent.labels.wanted import inventory_labels
    from edgeagent.kube.errors import KubeError
    from edgeagent.labels.contest import mode_for
    from edgeagent.labels.plan import plan_labels
    from edgeagent.labels.reconciler import explain

    if cli.args.remove:
        return remove_owned_labels(cli)
    labels = inventory_labels(discover_inventory(cli.root), cli.config.options.labels)
    if not cli.args.json:
        print("Labels this node should carry:")
        for key, value in labels.items():
            print("  %s=%s" % (key, value))
        if not labels:
            print("  (none)")
        sys.stdout.flush()
    options = cli.config.options.labels
    prefix = options.prefix
    mode = mode_for(options.nvidia_gpu_labels, options.nvidia_gpu_labels_owner)
    if options.publish == "nodefeature":
        return _publish(cli, labels, mode)
    try:
        name, plan, sent = asyncio.run(_single_pass(
            cli, lambda node, found: plan_labels(node, labels, prefix, mode, found),
            bool(cli.args.apply), nodefeatures=mode != "off"))
    except KubeError as e:
        return _fail(explain(e))
    if cli.args.json:
        doc: Dict[str, Any] = {"node": name, "labels": labels, "patch": plan.patch,
                               "applied": sent, "owned": list(plan.owned),
                               "left_alone": list(plan.foreign),
                               "deferred": list(plan.deferred), "taken": list(plan.taken)}
        print(json.dumps(doc, indent=2))
        return 0
    if plan.foreign:
        print("Left alone (set by someone else): %s" % ", ".join(plan.foreign))
    if plan.contest.present and mode != "off":
        print("GPU feature discovery / NFD label nvidia.com/gpu.* here: %s"
              % plan.contest.describe())
    if plan.deferred:
        print("Left to them (labels.nvidia_gpu_labels_owner = \"defer\"): %s"
              % ", ".join(plan.deferred))
    if plan.taken:
        print("WARNING: overwriting their values (labels.nvidia_gpu_labels_owner = \"own\"): %s"
              % ", ".join(plan.taken))
    if plan.patch is None:
        print("Node %s already carries them: no patch needed." % name)
    else:
        print("%s Node %s with this merge patch:" % ("Patched" if sent else "Would patch", name))
        print(json.dumps(plan.patch, indent=2, sort_keys=True))
        if not sent:
            print("(edgeagent run applies it; or run: edgeagent labels --apply)")
    return 0
