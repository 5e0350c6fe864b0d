"""The whole agent, as built into one pyz, against real peers, then under faults.

One agent process runs on a fixture Jetson Nano (real tegra210 devicetree, L4T R32.7.4, GPU
device nodes as files, a tegrastats replay of real Nano lines) for the whole module, with a
grpcio kubelet, the HTTPS test Kubernetes API server and a real Prometheus scraping it. The
tests run in file order: the healthy state first, then faults (the API server outage runs in
the background while the kubelet, tegrastats and the GPU device node are broken), then SIGKILL
and SIGTERM. Every fault test ends by checking the agent's log holds no traceback.

The API outage lasts $EDGEAGENT_E2E_API_DOWN_SECONDS (default 30, the issue's figure).
"""

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest

from tests.e2e.agent import AgentProcess, http_get, pyz_path, run_pyz
from tests.peers.hosts import PLUGIN_DIR, FixtureHost
from tests.tools import free_port, require_tool, wait_until

# The pyz and the package run under the system's python3, whatever runs the tests.
pytestmark = pytest.mark.artifact

NODE = "jetson-1"
GPU = "nvidia.com/gpu"
PREFIX = "edgeagent.io/"
OWNED = PREFIX + "owned-labels"
NODE_PATH = "/api/v1/nodes/" + NODE
DRIFT_SECONDS = 10   # the smallest labels.drift_check_seconds allowed
API_DOWN_SECONDS = float(os.environ.get("EDGEAGENT_E2E_API_DOWN_SECONDS", "30"))

# Tunables that make the agent react within seconds instead of minutes; everything else is the
# shipped default. The address is in the file (not a flag) so `doctor` checks the same port.
CONFIG = """\
[metrics]
address = "127.0.0.1:%(port)d"

[labels]
drift_check_seconds = %(drift)d
startup_jitter_seconds = 0

[device_plugin]
health_interval_seconds = 0.5

[tegrastats]
interval_ms = 250
"""


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class World:
    """Everything the module's tests share."""

    def __init__(self, host, api, kubeconfig, kubelet, agent, prometheus, port):
        self.host = host
        self.api = api
        self.kubeconfig = kubeconfig
        self.kubelet = kubelet
        self.agent = agent
        self.prometheus = prometheus
        self.port = port
        self.metrics_url = "http://127.0.0.1:%d/metrics" % port
        self.outage = None
        self.faults_began = None
        self.ready_seconds = None

    def scrape(self):
        """The agent's /metrics as {(name, frozenset of label pairs): value}."""
        status, body = http_get(self.metrics_url)
        assert status == 200, status
        values = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                name, _, labels = series.partition("{")
                pairs = frozenset(_LABEL.findall(labels))
                values[(name, pairs)] = float(value)
        return values

    def metric(self, name, default=None, **labels):
        """One series' value: ``metric("x_total", resource="nvidia.com/gpu")``."""
        return self.scrape().get((name, frozenset(labels.items())), default)

    def watch(self):
        return self.kubelet.watch(GPU, timeout=20)

    def wait_gpu_health(self, health, timeout=20.0):
        return self.watch().wait_for(lambda devices: bool(devices) and all(
            h == health for _, h in devices), timeout=timeout)

    def node_records(self, since, method=None):
        return [r for r in self.api.records(since) if r.path == NODE_PATH
                and (method is None or r.method == method)]


@pytest.fixture(scope="module")
def world(shiv_root):
    pyz_path()
    prometheus_exe = require_tool("prometheus")
    from tests.e2e.peers import ApiServerThread, Prometheus
    from tests.peers.kubelet import FakeKubelet

    host = FixtureHost("nano")
    # The node name must come from the kubelet's client certificate, not the hostname.
    host.write("/proc/sys/kernel/hostname", "nano-lab-07\n")
    port = free_port()
    host.write("/etc/edgeagent/config.toml", CONFIG % {"port": port, "drift": DRIFT_SECONDS})
    api = ApiServerThread(nodes=[NODE]).start()
    kubeconfig = api.write_kubeconfig("system:node:" + NODE)
    kubelet = FakeKubelet(host.path(PLUGIN_DIR)).start()
    prometheus = Prometheus(prometheus_exe, "127.0.0.1:%d" % port).start()
    agent = AgentProcess(host.root, ["--kubeconfig", kubeconfig], shiv_root=shiv_root)
    w = World(host, api, kubeconfig, kubelet, agent, prometheus, port)
    try:
        agent.start()
        yield w
    finally:
        if w.outage is not None:
            w.outage.finish()
        agent.cleanup()
        kubelet.stop()
        prometheus.stop()
        api.close()
        host.cleanup()


def assert_no_traceback(world):
    world.agent.assert_clean_log()


# --- the healthy agent ---------------------------------------------------------------------------

def test_ready(world):
    world.ready_seconds = world.agent.wait_ready(timeout=60)
    assert world.agent.alive()


def test_gpu_registered_and_healthy(world):
    requests = world.kubelet.wait_registrations(1, timeout=20)
    gpu = [r for r in requests if r.resource_name == GPU]
    assert gpu, [r.resource_name for r in requests]
    assert gpu[0].version == "v1beta1"
    assert os.path.exists(os.path.join(world.host.path(PLUGIN_DIR), gpu[0].endpoint))
    devices = world.wait_gpu_health("Healthy")
    assert len(devices) == 1, devices   # sharing.replicas = 1: one nvidia.com/gpu


def test_allocate_answers(world):
    device_id = world.wait_gpu_health("Healthy")[0][0]
    client = world.kubelet.clients[GPU]
    response = client.allocate([device_id])
    assert len(response.container_responses) == 1
    container = response.container_responses[0]
    specs = {d.host_path: d for d in container.devices}
    # No CDI spec and no NVIDIA runtime on the fixture host: device-specs, from the L4T CSV
    # list plus the GPU's own nodes, each mapped to the same path inside the container.
    for node in world.host.board.gpu_nodes:
        assert node in specs, (node, sorted(specs))
        assert specs[node].container_path == node
        assert "r" in specs[node].permissions and "w" in specs[node].permissions
    mounts = {m.host_path for m in container.mounts}
    assert "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1" in mounts, sorted(mounts)
    # An unknown device id is refused (the kubelet never sends one; a broken kubelet might).
    with pytest.raises(grpc.RpcError):
        client.allocate(["no-such-gpu"])


def expected_labels(world, shiv_root=None):
    """The labels `discover --json` computes for the same host and config."""
    result = run_pyz(["--root", world.host.root, "discover", "--json"], shiv_root=shiv_root)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["labels"]


def test_labels_on_the_node_with_ownership_annotation(world, shiv_root):
    want = expected_labels(world, shiv_root)
    assert want.get("nvidia.com/gpu.present") == "true", want
    assert want.get(PREFIX + "l4t") == "32.7.4", want

    def labelled():
        return OWNED in world.api.annotations(NODE)

    wait_until(labelled, 20, "the ownership annotation on Node %s" % NODE)
    labels = world.api.labels(NODE)
    for key, value in want.items():
        assert labels.get(key) == value, (key, labels.get(key), value)
    owned = world.api.annotations(NODE)[OWNED].split(",")
    assert owned == sorted(set(owned)), owned
    assert set(owned) == set(want), (owned, sorted(want))
    # The kubelet's own labels are left alone.
    assert labels["kubernetes.io/hostname"] == NODE


def test_prometheus_scrapes_every_series(world):
    prom = world.prometheus
    prom.wait_ready()
    prom.wait_value('up{job="edgeagent"}', lambda v: v == 1, 30, "Prometheus scraping the agent")
    fixture_ram = {int(re.search(r"RAM (\d+)/", line).group(1)) * 1024 * 1024
                   for line in world.host.tegrastats_lines}
    ram = prom.wait_value('jetson_ram_used_bytes{job="edgeagent"}', lambda v: True, 15,
                          "tegrastats RAM in Prometheus")
    assert int(ram) in fixture_ram, (ram, fixture_ram)
    assert prom.value('jetson_tegrastats_up{job="edgeagent"}') == 1
    assert prom.value('jetson_cpu_online{job="edgeagent",cpu="0"}') == 1
    prom.wait_value('edgeagent_device_plugin_registered{resource="%s"}' % GPU,
                    lambda v: v == 1, 15, "GPU registration in Prometheus")
    assert prom.value('edgeagent_device_plugin_devices{resource="%s",health="Healthy"}'
                      % GPU) == 1
    owned = len(world.api.annotations(NODE)[OWNED].split(","))
    prom.wait_value("edgeagent_labels_owned", lambda v: v == owned, 15, "owned label count")
    info = prom.query('edgeagent_node_info{job="edgeagent"}')
    assert len(info) == 1
    assert info[0]["metric"]["board"] == "NVIDIA Jetson Nano Developer Kit"
    assert info[0]["metric"]["l4t"] == "32.7.4" and info[0]["metric"]["jetpack"] == "4.6.4"
    down = prom.query('edgeagent_component_up{job="edgeagent"} == 0')
    assert down == [], down
    up = {r["metric"]["component"] for r in prom.query('edgeagent_component_up == 1')}
    assert {"device-plugin", "labels", "metrics", "tegrastats"} <= up, up


def test_doctor_json_agrees(world, shiv_root):
    result = run_pyz(["--root", world.host.root, "doctor", "--json",
                      "--kubeconfig", world.kubeconfig], shiv_root=shiv_root, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    checks = {r["check"]: r for r in json.loads(result.stdout)}

    def status(name):
        assert name in checks, (name, sorted(checks))
        return checks[name]["status"], checks[name]["detail"]

    for name in ("devicetree", "l4t", "gpu", "kubelet device-plugin socket",
                 "device plugin registered", "L4T CSV files", "GPU device list strategy",
                 "kube.credentials", "kube.reachable", "kube.tls", "kube.clock", "kube.node",
                 "kube.patch", "tegrastats"):
        assert status(name)[0] == "PASS", (name, checks[name])
    assert "gm20b" in status("gpu")[1]
    assert "32.7.4" in status("l4t")[1]
    assert GPU in status("device plugin registered")[1]
    assert "device-specs" in status("GPU device list strategy")[1]
    assert NODE in status("kube.node")[1]
    # The running agent holds the port: doctor must see that as the agent serving, not a clash.
    metrics_status, metrics_detail = status("metrics port")
    assert metrics_status == "PASS", checks["metrics port"]
    assert str(world.port) in metrics_detail
    # The fixture is not a systemd host with the unit installed: that is the only failure.
    failed = sorted(n for n, r in checks.items() if r["status"] == "FAIL")
    assert failed == ["service unit"], [checks[n] for n in failed]
    assert result.returncode == 1


# --- faults ----------------------------------------------------------------------------------------

def test_api_answers_429_500_409_in_turns(world):
    before = world.api.labels(NODE)
    annotation = world.api.annotations(NODE)[OWNED]
    victim = PREFIX + "soc"
    t0 = time.monotonic()
    world.api.inject(status=429, method="GET", path=NODE_PATH, retry_after=1)
    world.api.inject(status=500, method="GET", path=NODE_PATH)
    world.api.inject(status=409, method="PATCH", path=NODE_PATH)
    # Someone deletes one of our labels: the next drift check must put it back through the
    # throttling, the server error and the conflict.
    world.api.edit_node(NODE, {"metadata": {"labels": {victim: None}}})
    wait_until(lambda: world.api.labels(NODE).get(victim) == before[victim], 45,
               "the drift check to restore %s" % victim, interval=0.2)
    statuses = [(r.method, r.status) for r in world.node_records(t0)]
    assert statuses[:2] == [("GET", 429), ("GET", 500)], statuses
    # the conflict made it read the Node again and patch the new version
    assert ("PATCH", 409) in statuses, statuses
    after = statuses[statuses.index(("PATCH", 409)) + 1:]
    assert after[:2] == [("GET", 200), ("PATCH", 200)], statuses
    assert world.api.labels(NODE) == before
    assert world.api.annotations(NODE)[OWNED] == annotation
    assert world.metric("edgeagent_labels_patches_total", result="conflict") >= 1
    assert world.metric("edgeagent_labels_patches_total", result="error") >= 2
    assert world.agent.alive()
    assert_no_traceback(world)


class Outage:
    """The API server down for ``seconds`` on a background thread, then back with its state."""

    def __init__(self, api, seconds):
        self.api = api
        self.seconds = seconds
        self.went_down = None
        self.came_back = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-outage", daemon=True)

    def start(self):
        self.api.stop()
        self.went_down = time.monotonic()
        self._thread.start()
        return self

    def _run(self):
        self._cancel.wait(self.seconds)
        self.api.start()
        self.came_back = time.monotonic()

    def finish(self, timeout=None):
        if timeout is None:
            self._cancel.set()
        self._thread.join(timeout if timeout is not None else 30)
        return self.came_back is not None


def test_api_server_goes_down(world):
    """Starts the outage; the next tests break other things while it lasts."""
    world.labels_before_outage = world.api.labels(NODE)
    world.log_mark = len(world.agent.log())
    world.faults_began = time.monotonic()
    world.outage = Outage(world.api, API_DOWN_SECONDS).start()
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(world.api.server.url + "/version", timeout=2)


def test_kubelet_restarts_ten_times(world):
    kubelet = world.kubelet
    counted = "edgeagent_device_plugin_registrations_total"
    first_request = len(kubelet.requests)
    first_count = world.metric(counted, resource=GPU)
    for i in range(10):
        count = len(kubelet.requests)
        kubelet.restart(wipe=True)   # the devicemanager wipes the directory at start
        kubelet.wait_registrations(count + 1, timeout=20)
        # The agent counts a registration when Register returns to it, a moment after the
        # kubelet saw it; the next restart comes once it has (kubelets restart seconds apart).
        wait_until(lambda: world.metric(counted, resource=GPU) == first_count + i + 1, 10,
                   "registration %d counted by the agent" % (i + 1))
        world.wait_gpu_health("Healthy")
    # One registration per kubelet start, no more (no duplicate or racing Register calls).
    assert len(kubelet.requests) == first_request + 10, [r.resource_name for r in kubelet.requests]
    assert world.host.plugin_sockets() == ["edgeagent-nvidia.com-gpu.sock"]
    assert world.metric("edgeagent_device_plugin_registered", resource=GPU) == 1
    device_id = world.wait_gpu_health("Healthy")[0][0]
    response = kubelet.clients[GPU].allocate([device_id])
    assert response.container_responses[0].devices
    assert world.agent.alive()
    assert_no_traceback(world)


def test_tegrastats_killed_five_times_and_prints_garbage(world):
    host = world.host
    restarts = world.metric("jetson_tegrastats_restarts_total")
    errors = world.metric("jetson_tegrastats_parse_errors_total")
    assert errors == 0, "real Nano lines must parse without unknown tokens"
    for i in range(5):
        killed = host.kill_tegrastats(world.agent.proc.pid)
        # the runner restarts it with backoff (1 s base, doubling, full jitter): up to 16 s
        wait_until(lambda: host.tegrastats_pid(world.agent.proc.pid) not in (None, killed), 40,
                   "tegrastats restarted after kill %d" % (i + 1))
    wait_until(lambda: world.metric("jetson_tegrastats_restarts_total") == restarts + 5, 10,
               "jetson_tegrastats_restarts_total to count 5 restarts")
    lines = world.metric("jetson_tegrastats_lines_total")
    host.tegrastats_garbage("segmentation fault (core dumped) \x01\x02 RAM banana/MB CPU [?]")
    wait_until(lambda: not host.garbage_pending(), 10, "the replay to print the garbage")
    wait_until(lambda: world.metric("jetson_tegrastats_parse_errors_total") > errors, 10,
               "the garbage counted as parse errors")
    # Good lines keep coming after the garbage: the latest sample is fresh and real.
    wait_until(lambda: world.metric("jetson_tegrastats_lines_total") >= lines + 3, 10,
               "more tegrastats lines after the garbage")
    assert world.metric("jetson_tegrastats_up") == 1
    assert world.metric("jetson_tegrastats_restarts_total") == restarts + 5
    assert_no_traceback(world)


def test_gpu_device_node_disappears_and_returns(world):
    node = "/dev/nvhost-gpu"
    world.wait_gpu_health("Healthy")
    world.host.remove_device(node)
    try:
        world.wait_gpu_health("Unhealthy")
        assert world.metric("edgeagent_device_plugin_devices", resource=GPU,
                            health="Unhealthy") == 1
    finally:
        world.host.restore_device(node)
    world.wait_gpu_health("Healthy")
    device_id = world.wait_gpu_health("Healthy")[0][0]
    response = world.kubelet.clients[GPU].allocate([device_id])
    assert node in {d.host_path for d in response.container_responses[0].devices}
    assert_no_traceback(world)


@pytest.mark.timeout(400)
def test_api_server_returns_and_labels_recover(world):
    if world.outage is None:  # run alone: have the outage now
        test_api_server_goes_down(world)
    outage = world.outage
    assert outage.finish(timeout=API_DOWN_SECONDS + 30), "the API server did not come back"
    assert outage.came_back - outage.went_down >= API_DOWN_SECONDS - 0.01
    # The labels' retries back off with full jitter (1 s doubling, capped at 300 s): after a
    # 30 s outage the next attempt is usually seconds away, rarely minutes.
    wait_until(lambda: any(r.status == 200 for r in world.node_records(outage.came_back, "GET")),
               330, "a successful Node read after the API server came back", interval=0.5)
    assert world.api.labels(NODE) == world.labels_before_outage
    log = world.agent.log()[world.log_mark:]
    noticed = log.count("node labels: unreachable")
    if API_DOWN_SECONDS > DRIFT_SECONDS * 1.25:  # a drift check certainly fell in the outage
        assert noticed, log[-3000:]
    if noticed:
        # Logged once when the outage began (not once per retry) and once when it ended.
        assert noticed == 1, log[-3000:]
        wait_until(lambda: "Node labels reconciled again" in world.agent.log()[world.log_mark:],
                   10, "the recovery logged")
    # The metrics endpoint never went away through the outage, kubelet restarts, tegrastats
    # kills and the device node's absence: Prometheus saw every scrape succeed.
    window = int(time.monotonic() - world.faults_began) + 1
    assert world.prometheus.value('min_over_time(up{job="edgeagent"}[%ds])' % window) == 1
    assert world.agent.alive()
    assert_no_traceback(world)


# --- the process itself ----------------------------------------------------------------------------

def test_sigkill_then_restart(world):
    agent, kubelet, host = world.agent, world.kubelet, world.host
    labels = world.api.labels(NODE)
    annotation = world.api.annotations(NODE)[OWNED]
    sockets = host.plugin_sockets()
    assert sockets == ["edgeagent-nvidia.com-gpu.sock"]
    old_tegrastats = host.tegrastats_pid(agent.proc.pid)
    count = len(kubelet.requests)
    t0 = time.monotonic()
    agent.kill()
    assert host.plugin_sockets() == sockets     # a stale socket: nobody listens on it now
    agent.start()
    agent.wait_ready(timeout=30)
    kubelet.wait_registrations(count + 1, timeout=20)
    device_id = world.wait_gpu_health("Healthy")[0][0]
    assert kubelet.clients[GPU].allocate([device_id]).container_responses[0].devices
    assert host.plugin_sockets() == sockets
    wait_until(lambda: any(r.status == 200 for r in world.node_records(t0, "GET")), 20,
               "the restarted agent to read its Node")
    wait_until(lambda: world.metric("edgeagent_labels_patches_total", 0,
                                           result="unchanged") >= 1, 20, "the restarted agent to find its labels in place")
    # State rebuilt from the Node: the same labels, owned once each, and nothing to patch.
    assert world.api.labels(NODE) == labels
    assert world.api.annotations(NODE)[OWNED] == annotation
    assert world.node_records(t0, "PATCH") == []
    # The orphaned tegrastats of the killed agent dies on its next write (SIGPIPE); a new one
    # serves the restarted agent.
    if old_tegrastats is not None:
        wait_until(lambda: not _alive(old_tegrastats), 10, "the orphaned tegrastats to exit")
    wait_until(lambda: world.metric("jetson_tegrastats_up") == 1, 15, "tegrastats metrics back")
    assert_no_traceback(world)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_exits_zero_within_two_seconds_and_removes_sockets(world):
    agent, host = world.agent, world.host
    tegrastats = host.tegrastats_pid(agent.proc.pid)
    assert tegrastats is not None
    code, seconds = agent.terminate(timeout=10)
    assert code == 0, agent.log()[-3000:]
    assert seconds < 2.0, "took %.2fs to exit after SIGTERM" % seconds
    assert host.plugin_sockets() == []
    assert os.path.exists(os.path.join(host.path(PLUGIN_DIR), "kubelet.sock"))  # not ours
    assert not _alive(tegrastats), "tegrastats outlived the agent"
    with pytest.raises(OSError):
        http_get(world.metrics_url, timeout=2)
    assert "STOPPING=1" in agent.notifications
    assert_no_traceback(world)
