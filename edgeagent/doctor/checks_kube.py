"""Doctor checks of the path to the API server, in the order a failure would be diagnosed:
credentials found, API server reachable, TLS valid, clock agrees with the API server, the Node
exists under the agent's name, and the identity may patch it (SelfSubjectAccessReview); then
who owns the ``nvidia.com/gpu.*`` labels where GPU feature discovery or NFD also run
(``labels.gpu-labels-owner``: the Node read, its NodeFeature objects, labels/contest.py).

One async check produces all six results in order, because each step needs the one before
(no point asking about the Node when the server is unreachable). Every network step is bounded
by ``ctx.timeout`` and the whole network phase by NETWORK_BUDGET (inside the runner's bound of
one check), so a dead API server costs at most one timeout.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN, CheckResult

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import LabelsOptions
    from edgeagent.doctor.model import DoctorContext
    from edgeagent.labels.contest import NodeFeatures

CLOCK_WARN_SECONDS = 5.0
CLOCK_FAIL_SECONDS = 60.0
NETWORK_BUDGET = 2.5    # seconds for all requests together; the runner allows a check 3 s


def _skip_rest(results: List[CheckResult], names: List[str], why: str) -> List[CheckResult]:
    done = {r.check for r in results}
    return results + [CheckResult(n, SKIP, why) for n in names if n not in done]


GPU_OWNER = "labels.gpu-labels-owner"
ALL = ["kube.credentials", "kube.reachable", "kube.tls", "kube.clock", "kube.node", "kube.patch",
       GPU_OWNER]


def gpu_owner_result(node: Dict[str, Any], options: "LabelsOptions",
                     nodefeatures: "NodeFeatures") -> CheckResult:
    """Who owns ``nvidia.com/gpu.*`` on ``node`` and what the setting does there. Pure."""
    from edgeagent.labels.contest import mode_for, node_contest, unknown_reason

    name = str((node.get("metadata") or {}).get("name") or "?")
    contest = node_contest(node, nodefeatures)
    unknown = unknown_reason(nodefeatures)
    mode = mode_for(options.nvidia_gpu_labels, options.nvidia_gpu_labels_owner)
    setting = 'labels.nvidia_gpu_labels_owner = "%s"' % options.nvidia_gpu_labels_owner
    if mode == "off":
        return CheckResult(GPU_OWNER, PASS, "labels.nvidia_gpu_labels = false: edgeagent sets no "
                           "nvidia.com/gpu.* labels%s" % (
                               "; GPU feature discovery / NFD do on Node %s (%s)"
                               % (name, contest.describe()) if contest.present else ""))
    if not contest.present:
        return CheckResult(GPU_OWNER, PASS, "edgeagent owns the nvidia.com/gpu.* labels of Node "
                           "%s: neither GPU feature discovery nor NFD labels them there%s"
                           % (name, " (NodeFeature objects unknown: %s)" % unknown
                              if unknown else ""))
    if mode == "defer":
        return CheckResult(GPU_OWNER, PASS, "GPU feature discovery / NFD own the "
                           "nvidia.com/gpu.* labels of Node %s (%s): edgeagent defers and "
                           "neither writes nor removes them (%s; \"own\" would write them)"
                           % (name, contest.describe(), setting))
    from edgeagent.labels.compute import NVIDIA_GPU_KEYS

    contested = sorted(k for k in contest.managed if k in NVIDIA_GPU_KEYS)
    return CheckResult(GPU_OWNER, WARN, "GPU feature discovery / NFD also label "
                       "nvidia.com/gpu.* on Node %s (%s), and %s makes edgeagent write them "
                       "anyway%s: each rewrites the other's values (a value set by hand stays)"
                       % (name, contest.describe(), setting,
                          ", overwriting " + ", ".join(contested) if contested else ""),
                       "keep GPU feature discovery off this node (its DaemonSet's nodeSelector "
                       "or affinity), or set labels.nvidia_gpu_labels_owner = \"defer\"")


def clock_result(server_time: Optional[float], local_time: float,
                 latency: float = 0.0) -> CheckResult:
    """Compare the server's Date header (1 s resolution) with the local clock at the request's
    midpoint. Pure, for tests."""
    if server_time is None:
        return CheckResult("kube.clock", SKIP, "the API server sent no Date header")
    skew = local_time - server_time
    # The header truncates to whole seconds: allow one second plus the round trip.
    slack = 1.0 + latency
    magnitude = max(0.0, abs(skew) - slack)
    detail = "local clock is %.0fs %s the API server's" % (abs(skew), "ahead of" if skew > 0
                                                           else "behind")
    if magnitude <= CLOCK_WARN_SECONDS:
        return CheckResult("kube.clock", PASS, "local clock agrees with the API server (within "
                           "%.0fs)" % (abs(skew) + 0.5))
    fix = ("enable time sync (timedatectl set-ntp true; check systemd-timesyncd or chrony): "
           "certificates and tokens are time-limited")
    return CheckResult("kube.clock", WARN if magnitude <= CLOCK_FAIL_SECONDS else FAIL, detail,
                       fix)


async def _may_publish(client: Any, namespace: str, step_timeout: Any) -> CheckResult:
    """kube.patch for labels.publish = "nodefeature": may this identity write NodeFeatures?"""
    from edgeagent.kube.errors import KubeError

    missing = []
    try:
        for verb in ("get", "create", "update"):
            allowed, _ = await client.can_i(verb, "nodefeatures", group="nfd.k8s-sigs.io",
                                            namespace=namespace, timeout=step_timeout())
            if not allowed:
                missing.append(verb)
    except KubeError as e:
        return CheckResult("kube.patch", WARN, "could not ask the API server "
                           "(SelfSubjectAccessReview): %s" % e,
                           "run `edgeagent labels --apply` to try a real write")
    if missing:
        return CheckResult("kube.patch", FAIL, "labels.publish = \"nodefeature\", and this "
                           "identity may not %s nodefeatures (nfd.k8s-sigs.io) in namespace %s"
                           % ("/".join(missing), namespace),
                           "bind a Role with get, create and update on nodefeatures in %s to "
                           "this node (or the group system:nodes), or set labels.publish = "
                           "\"node\"" % namespace)
    return CheckResult("kube.patch", PASS, "may write NodeFeature objects in namespace %s "
                       "(labels.publish = \"nodefeature\")" % namespace)


def gpu_owner_result_publishing() -> CheckResult:
    # Publishing through NFD, NFD's annotation lists edgeagent's own labels too: it cannot show
    # who else labels the GPU, so this is not judged here (the reconciler logs what it sees).
    return CheckResult(GPU_OWNER, SKIP, "labels.publish = \"nodefeature\": nfd-master applies "
                       "edgeagent's NodeFeature, which leaves nvidia.com/gpu.* out where GFD's "
                       "labels or NodeFeature are seen (\"defer\")")


async def check_kube(ctx: "DoctorContext") -> List[CheckResult]:
    from edgeagent.kube.client import CredentialCache, KubeClient, header_date
    from edgeagent.kube.credentials import find_credentials
    from edgeagent.kube.errors import CredentialsError, KubeError, KubeNetworkError, \
        KubeTLSError, NoCredentials
    from edgeagent.kube.nodename import resolve_node_name
    from edgeagent.kube.tls import make_ssl_context

    results: List[CheckResult] = []
    options = ctx.config.options
    if not options.enabled("labels"):
        return [CheckResult(n, SKIP, "the labels component is disabled") for n in ALL]
    try:
        creds = find_credentials(ctx.root, options.kube.kubeconfig)
        make_ssl_context(creds)
    except NoCredentials as e:
        results.append(CheckResult("kube.credentials", FAIL, str(e),
                                   "join the node to the cluster (k3s agent or kubeadm join), or "
                                   "give --kubeconfig / kubeconfig in the config"))
        return _skip_rest(results, ALL, "no credentials")
    except CredentialsError as e:
        results.append(CheckResult("kube.credentials", FAIL, str(e),
                                   "fix or replace the kubeconfig named in the message"))
        return _skip_rest(results, ALL, "no usable credentials")
    name, name_source = resolve_node_name(options.kube, ctx.root, creds)
    if creds.insecure:
        results.append(CheckResult("kube.credentials", WARN, creds.describe() +
                                   " with insecure-skip-tls-verify",
                                   "set certificate-authority(-data) instead of "
                                   "insecure-skip-tls-verify"))
    else:
        results.append(CheckResult("kube.credentials", PASS, creds.describe()))

    timeout = float(ctx.timeout)
    deadline = time.monotonic() + max(NETWORK_BUDGET, timeout)

    def step_timeout() -> float:
        return max(0.0, min(timeout, deadline - time.monotonic()))

    client = KubeClient(CredentialCache(lambda: creds), timeout=timeout)
    async with client:
        # 1. reachable + TLS + clock, from GET /version (any HTTP answer proves the first two).
        started = time.time()
        headers = {}
        try:
            resp = await client.version(timeout=step_timeout())
            headers = resp.headers
            reach = "API server %s answered (Kubernetes %s)" % (
                creds.server, (resp.body or {}).get("gitVersion", "?") if isinstance(
                    resp.body, dict) else "?")
        except KubeTLSError as e:
            results.append(CheckResult("kube.reachable", PASS, "connected to %s" % creds.server))
            results.append(CheckResult("kube.tls", FAIL, str(e),
                                       "the kubeconfig's certificate-authority must be the "
                                       "cluster CA, and the server name must be in its "
                                       "certificate; check the clock too"))
            return _skip_rest(results, ALL, "TLS failed")
        except KubeNetworkError as e:
            results.append(CheckResult("kube.reachable", FAIL, str(e),
                                       "check that the API server runs and that %s is reachable "
                                       "from this node (firewall, VPN, DNS)" % creds.server))
            return _skip_rest(results, ALL, "API server unreachable")
        except KubeError as e:
            headers = e.headers
            reach = "API server %s answered (HTTP %s)" % (creds.server, e.status)
        latency = time.time() - started
        results.append(CheckResult("kube.reachable", PASS, reach))
        if not creds.server.startswith("https://"):
            clear = (": the bearer token travels in clear text" if creds.auth == "bearer token"
                     else "")
            results.append(CheckResult("kube.tls", WARN, "plain http:// server: no TLS" + clear,
                                       "use the API server's https:// address"))
        elif creds.insecure:
            results.append(CheckResult("kube.tls", WARN, "server certificate NOT verified "
                                       "(insecure-skip-tls-verify)",
                                       "set certificate-authority(-data) to the cluster CA"))
        else:
            results.append(CheckResult("kube.tls", PASS, "server certificate verified against "
                                       "the cluster CA"))
        results.append(clock_result(header_date(headers), started + latency / 2, latency))

        # 2. the Node under the agent's name.
        if step_timeout() < 0.1:
            return _skip_rest(results, ALL, "API server too slow")
        try:
            node = await client.get_node(name, timeout=step_timeout())
            results.append(CheckResult("kube.node", PASS, "Node %s exists (name from %s)"
                                       % (name, name_source)))
        except KubeError as e:
            fixes = {
                404: "set --node-name (or node_name in the config) to this node's name in "
                     "`kubectl get nodes`; the kubelet registers the Node when it starts",
                401: "the credentials are rejected: renew the kubelet certificate or token",
                403: "a node identity may read only its own Node: set --node-name to the name "
                     "in its certificate, or grant this identity get/patch on nodes",
            }
            results.append(CheckResult("kube.node", FAIL, "Node %s (name from %s): %s"
                                       % (name, name_source, e),
                                       fixes.get(e.status or 0, "see the error")))
            return _skip_rest(results, ALL, "Node not readable")

        # 3. may this identity patch its Node?
        if step_timeout() < 0.1:
            return _skip_rest(results, ALL, "API server too slow")
        if options.labels.publish == "nodefeature":
            results.append(await _may_publish(client, options.labels.nodefeature_namespace,
                                              step_timeout))
            return results + [gpu_owner_result_publishing()]
        try:
            allowed, reason = await client.can_i("patch", "nodes", name,
                                                 timeout=step_timeout())
        except KubeError as e:
            results.append(CheckResult("kube.patch", WARN, "could not ask the API server "
                                       "(SelfSubjectAccessReview): %s" % e,
                                       "run `edgeagent labels --apply` to try a real patch"))
        else:
            if allowed:
                results.append(CheckResult("kube.patch", PASS, "%s may patch Node %s"
                                           % (creds.auth, name)))
            else:
                results.append(CheckResult("kube.patch", FAIL, "this identity may not patch "
                                           "Node %s%s" % (name, ": " + reason if reason else ""),
                                           "use the kubelet's own kubeconfig (a node may patch "
                                           "its own Node) or grant patch on nodes"))

        # 4. who owns nvidia.com/gpu.* (the Node is read; its NodeFeatures if the budget allows)
        from edgeagent.labels.contest import NF_SKIPPED, NOT_ASKED, NodeFeatures
        from edgeagent.labels.nodefeatures import read_nodefeatures

        nodefeatures = NOT_ASKED
        if options.labels.nvidia_gpu_labels:
            if step_timeout() >= 0.1:
                nodefeatures = await read_nodefeatures(client, name, timeout=step_timeout())
            else:
                nodefeatures = NodeFeatures(NF_SKIPPED, detail="the API server was too slow")
        results.append(gpu_owner_result(node, options.labels, nodefeatures))
    return results


CHECKS = [check_kube]
