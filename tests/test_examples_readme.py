"""The README's guide points at examples that exist, and its fleet-discovery command writes a
target list Prometheus accepts."""

import json
import os
import re
import shutil
import subprocess

from tests.conftest import REPO
from tests.tools import require_tool


def readme():
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_every_example_the_readme_names_exists():
    paths = set(re.findall(r"examples/[A-Za-z0-9_./-]+[A-Za-z0-9_]", readme()))
    assert "examples/kubernetes/gpu-device-query.yaml" in paths
    missing = [p for p in sorted(paths) if not os.path.exists(os.path.join(REPO, p))]
    assert missing == []


def test_the_target_list_command_makes_a_valid_file_sd(tmp_path):
    """`kubectl get nodes -l edgeagent.io/soc -o jsonpath=...` from the guide, applied by kubectl
    to two Nodes offline, gives targets that `promtool check config` accepts."""
    kubectl = require_tool("kubectl")
    promtool = require_tool("promtool")
    m = re.search(r"kubectl get nodes -l edgeagent\.io/soc -o jsonpath='([^']+)'", readme())
    assert m, "the guide's target-list command is gone"
    template = m.group(1)
    assert template.startswith("{range .items[*]}") and template.endswith("{end}")
    per_node = template[len("{range .items[*]}"):-len("{end}")]
    nodes = []
    for name, ip in (("orin-01", "10.0.0.5"), ("nano-01", "10.0.0.6")):
        nodes.append({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": name, "labels": {"edgeagent.io/soc": "tegra234"}},
                      "status": {"addresses": [{"type": "Hostname", "address": name},
                                               {"type": "InternalIP", "address": ip}]}})
    (tmp_path / "nodes.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                                     "items": nodes}))
    # `label --local` prints each item of a List on its own: the template without its range
    result = subprocess.run([kubectl, "label", "--local", "-f", str(tmp_path / "nodes.json"),
                             "edgeagent.io/kit-check=1", "-o", "jsonpath=" + per_node],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=60,
                            env=dict(os.environ, KUBECONFIG=os.devnull))
    assert result.returncode == 0, result.stderr
    assert '"10.0.0.5:9745"' in result.stdout and "node: nano-01" in result.stdout
    examples = os.path.join(REPO, "examples", "prometheus")
    shutil.copy(os.path.join(examples, "prometheus.yml"), str(tmp_path))
    shutil.copy(os.path.join(examples, "edgeagent-alerts.yml"), str(tmp_path))
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "edgeagent.yml").write_text(result.stdout)
    check = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=60)
    assert check.returncode == 0, check.stdout
    # and a broken target list is refused, so the check above means something
    (tmp_path / "targets" / "edgeagent.yml").write_text("- targets: 10.0.0.5:9745\n")
    check = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=60)
    assert check.returncode != 0
