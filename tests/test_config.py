"""Configuration: defaults < TOML file < EDGEAGENT_* environment < flags; one-line errors."""

import os

import pytest

from edgeagent.config import (
    DEFAULT_METRICS_PORT, OPTIONS, SCHEMA, Config, ResourceConfig, label_prefix_problem,
    load_config)
from edgeagent.errors import ConfigError, OperatorError


def toml(tmp_path, text, name="config.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error_of(**kwargs):
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert isinstance(info.value, OperatorError) and info.value.exit_code == 2
    return message


# --- sources and precedence ---------------------------------------------------------------------

def test_defaults():
    config = load_config(env={})
    assert config.options.log_level == "info"
    assert config.options.log_format == "text"
    assert config.options.metrics.address == ("0.0.0.0", DEFAULT_METRICS_PORT)
    assert config.options.device_plugin.directory == "/var/lib/kubelet/device-plugins"
    assert config.options.device_plugin.sharing.replicas == 1
    assert config.options.labels.prefix == "edgeagent.io/"
    assert config.options.disable == ()
    assert config.options.kube.dry_run is False
    assert config.options.kube.node_name is None and config.options.kube.kubeconfig is None
    assert config.options.tegrastats.path == "/usr/bin/tegrastats"
    assert config.options.device_plugin.resources == ()
    assert set(config.sources.values()) == {"default"}
    assert config.path is None


def test_every_default_passes_its_own_parser():
    for option in SCHEMA:
        if option.default is None or option.key in ("metrics.address",
                                                     "device_plugin.resources"):
            continue
        value = option.default
        if isinstance(value, tuple):
            value = list(value)
        assert option.parse(value) == option.default, option.key
    assert len(OPTIONS) == len(SCHEMA)                 # no key declared twice


def test_toml_file(tmp_path):
    path = toml(tmp_path, """
log_level = "debug"
node_name = "jetson-01"
disable = ["labels"]

[metrics]
address = "127.0.0.1:9100"

[sharing]
replicas = 4

[labels]
prefix = "example.com/"

[device_plugin]
directory = "/var/lib/kubelet/device-plugins"

[[device_plugin.resources]]
name = "example.com/camera"
paths = ["/dev/video*"]
pods_per_device = 2

[[device_plugin.resources]]
name = "example.com/tpu"
usb_ids = ["1A6E:089A", "18d1:9302"]
""")
    config = load_config(path, env={})
    assert config.options.log_level == "debug"
    assert config.options.kube.node_name == "jetson-01"
    assert config.options.disable == ("labels",)
    assert config.options.metrics.address == ("127.0.0.1", 9100)
    assert config.options.device_plugin.sharing.replicas == 4
    assert config.options.labels.prefix == "example.com/"
    assert config.options.device_plugin.resources == (
        ResourceConfig("example.com/camera", ("/dev/video*",), (), 2),
        ResourceConfig("example.com/tpu", (), ("1a6e:089a", "18d1:9302"), 1))
    assert config.sources["sharing.replicas"] == path
    assert config.sources["tegrastats.path"] == "default"
    assert config.path == path


def test_dotted_keys_at_the_top_level_work_too(tmp_path):
    path = toml(tmp_path, 'sharing.replicas = 3\n"tegrastats".interval_ms = 500\n')
    config = load_config(path, env={})
    assert (config.options.device_plugin.sharing.replicas, config.options.tegrastats.interval_ms) == (3, 500)


@pytest.mark.parametrize("var, key, text, value", [
    ("EDGEAGENT_LOG_LEVEL", "log_level", "WARNING", "warning"),
    ("EDGEAGENT_SHARING_REPLICAS", "sharing.replicas", " 8 ", 8),
    ("EDGEAGENT_DRY_RUN", "dry_run", "yes", True),
    ("EDGEAGENT_DRY_RUN", "dry_run", "0", False),
    ("EDGEAGENT_DISABLE", "disable", "labels, metrics", ("labels", "metrics")),
    ("EDGEAGENT_METRICS_ADDRESS", "metrics.address", "[::1]:9745", ("::1", 9745)),
    ("EDGEAGENT_METRICS_ADDRESS", "metrics.address", ":9000", ("0.0.0.0", 9000)),
    ("EDGEAGENT_KUBE_TIMEOUT_SECONDS", "kube.timeout_seconds", "2.5", 2.5),
    ("EDGEAGENT_DEVICE_PLUGIN_DEVICE_LIST_STRATEGY", "device_plugin.device_list_strategy",
     "cdi", "cdi"),
    ("EDGEAGENT_LABELS_EXTRA_NODES", "labels.extra_nodes", "/soc/npu,/gpu",
     ("/soc/npu", "/gpu")),
    ("EDGEAGENT_NODE_NAME", "node_name", "", None),
])
def test_environment(var, key, text, value):
    config = load_config(env={var: text})
    assert config.as_dict()[key] == value
    assert config.sources[key] == var


def test_environment_names_follow_the_keys():
    assert OPTIONS["device_plugin.directory"].env_name == "EDGEAGENT_DEVICE_PLUGIN_DIRECTORY"
    assert OPTIONS["sharing.replicas"].env_name == "EDGEAGENT_SHARING_REPLICAS"
    # a table of tables cannot come from one variable
    config = load_config(env={"EDGEAGENT_DEVICE_PLUGIN_RESOURCES": "nonsense"})
    assert config.options.device_plugin.resources == ()


def test_unknown_environment_variables_are_ignored():
    # EDGEAGENT_ROOT, EDGEAGENT_CONFIG (CLI), EDGEAGENT_PYZ (tests) share the prefix
    config = load_config(env={"EDGEAGENT_ROOT": "/x", "EDGEAGENT_NO_SUCH": "1"})
    assert set(config.sources.values()) == {"default"}


def test_flags(tmp_path):
    config = load_config(env={}, flags={"metrics.address": "127.0.0.1:9200", "dry_run": True,
                                        "disable": "device-plugin", "node_name": None})
    assert config.options.metrics.address == ("127.0.0.1", 9200)
    assert config.options.kube.dry_run is True
    assert config.options.disable == ("device-plugin",)
    assert config.sources["metrics.address"] == "command line"
    assert config.sources["node_name"] == "default"          # None: flag not given


def test_precedence_default_file_env_flag(tmp_path):
    path = toml(tmp_path, 'log_level = "warning"\nnode_name = "from-file"\n'
                          '[sharing]\nreplicas = 2\n')
    env = {"EDGEAGENT_LOG_LEVEL": "error", "EDGEAGENT_SHARING_REPLICAS": "3"}
    config = load_config(path, env=env, flags={"log_level": "debug"})
    assert config.options.log_level == "debug"            # flag beats env and file
    assert config.options.device_plugin.sharing.replicas == 3           # env beats file
    assert config.options.kube.node_name == "from-file"        # file beats default
    assert config.options.tegrastats.interval_ms == 1000  # default
    assert config.sources == {**{o.key: "default" for o in SCHEMA}, "log_level": "command line",
                              "sharing.replicas": "EDGEAGENT_SHARING_REPLICAS",
                              "node_name": path}


def test_default_environment_is_the_process_environment(monkeypatch):
    monkeypatch.setenv("EDGEAGENT_SHARING_REPLICAS", "5")
    assert load_config().options.device_plugin.sharing.replicas == 5


def test_replace_validates():
    config = load_config(env={})
    other = config.replace(**{"sharing.replicas": 4})
    assert other.options.device_plugin.sharing.replicas == 4 and config.options.device_plugin.sharing.replicas == 1
    assert other.sources["sharing.replicas"] == "override"
    with pytest.raises(ConfigError, match="override: sharing.replicas: must be between 1 and 1024"):
        config.replace(**{"sharing.replicas": 0})
    assert isinstance(config.as_dict(), dict) and isinstance(config, Config)


# --- bad values: one line naming source, key and problem ----------------------------------------

BAD_VALUES = [
    ("log_level", "loud", "must be one of debug, info, warning, error"),
    ("log_level", 3, "must be a string, got 3"),
    ("log_format", "xml", "must be one of text, json"),
    ("node_name", 42, "must be a string"),
    ("dry_run", "maybe", "must be true or false"),
    ("dry_run", 1, "must be true or false"),
    ("disable", "gpu", "unknown component 'gpu'"),
    ("disable", [1], "must be a list of strings"),
    ("kube.timeout_seconds", "fast", "must be a number"),
    ("kube.timeout_seconds", 0.1, "must be between 0.5 and 120"),
    ("kube.timeout_seconds", "nan", "must be a number"),
    ("kube.timeout_seconds", True, "must be a number"),
    ("device_plugin.directory", "var/lib/kubelet", "must be an absolute path"),
    ("device_plugin.device_list_strategy", "magic", "must be one of auto, envvar, cdi"),
    ("device_plugin.health_interval_seconds", 10, "must be between 0.1 and 5"),
    ("sharing.replicas", 0, "must be between 1 and 1024, got 0"),
    ("sharing.replicas", 1.5, "must be an integer, got 1.5"),
    ("sharing.replicas", True, "must be an integer"),
    ("sharing.replicas", "four", "must be an integer, got 'four'"),
    ("labels.prefix", "edgeagent.io", "must end with '/'"),
    ("labels.prefix", "Edge_Agent/", "is not a DNS subdomain"),
    ("labels.drift_check_seconds", 1, "must be between 10 and 86400"),
    ("metrics.address", "9745", "must be HOST:PORT"),
    ("metrics.address", "localhost:0", "port from 1 to 65535"),
    ("metrics.address", "localhost:65536", "port from 1 to 65535"),
    ("metrics.address", "localhost:http", "must be HOST:PORT"),
    ("metrics.address", 9745, "must be a string"),
    ("tegrastats.path", "tegrastats", "must be an absolute path"),
    ("tegrastats.interval_ms", 50, "must be between 100 and 60000"),
    ("labels.extra_nodes", "x", None),   # a string is a one-item list: valid
]


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"%s"' % value
    if isinstance(value, list):
        return "[%s]" % ", ".join(_toml_value(v) for v in value)
    return repr(value)


@pytest.mark.parametrize("key, value, problem", BAD_VALUES)
def test_bad_value_in_the_file(tmp_path, key, value, problem):
    if "." in key:
        table, name = key.split(".", 1)
        text = "[%s]\n%s = %s\n" % (table, name, _toml_value(value))
    else:
        text = "%s = %s\n" % (key, _toml_value(value))
    path = toml(tmp_path, text)
    if problem is None:
        load_config(path, env={})
        return
    message = error_of(path=path, env={})
    assert message.startswith("config file %s: %s: " % (path, key)), message
    assert problem in message


@pytest.mark.parametrize("key, value, problem",
                         [b for b in BAD_VALUES if isinstance(b[1], str) and b[2]])
def test_bad_value_in_the_environment(key, value, problem):
    var = OPTIONS[key].env_name
    message = error_of(env={var: value})
    assert message.startswith("environment %s: %s: " % (var, key)), message
    assert problem in message


@pytest.mark.parametrize("key, value, problem",
                         [b for b in BAD_VALUES if isinstance(b[1], str) and b[2]])
def test_bad_value_on_the_command_line(key, value, problem):
    message = error_of(env={}, flags={key: value})
    assert message.startswith("command line: %s: " % key), message
    assert problem in message


def test_a_bad_env_value_is_reported_even_when_a_flag_overrides_it():
    message = error_of(env={"EDGEAGENT_SHARING_REPLICAS": "x"}, flags={"sharing.replicas": 2})
    assert "EDGEAGENT_SHARING_REPLICAS" in message


def test_long_bad_values_are_shortened(tmp_path):
    path = toml(tmp_path, 'log_level = "%s"\n' % ("x" * 500))
    message = error_of(path=path, env={})
    assert len(message) < 200 + len(path) and "..." in message


# --- unknown keys -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, key", [
    ("colour = 1\n", "colour"),
    ("[metrics]\nadress = '0.0.0.0:9745'\n", "metrics.adress"),
    ("[nosuch]\nthing = 1\n", "nosuch.thing"),
    ("metrics = 'x'\n", "metrics"),
    ("[sharing.replicas]\nvalue = 2\n", None),      # a table where a number belongs
])
def test_unknown_keys(tmp_path, text, key):
    path = toml(tmp_path, text)
    message = error_of(path=path, env={})
    assert message.startswith("config file %s: " % path)
    if key is not None:
        assert message == "config file %s: unknown key %r" % (path, key)
    else:
        assert "sharing.replicas: must be an integer" in message


# --- resources tables ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, problem", [
    ("[device_plugin.resources]\nname = 'a.com/b'\n", "must be an array of tables"),
    ("[device_plugin]\nresources = [1]\n", "[0]: must be a table"),
    ("[[device_plugin.resources]]\nname = 'a.com/b'\npaths = ['/dev/x']\ncolour = 1\n",
     "[0]: unknown key colour"),
    ("[[device_plugin.resources]]\npaths = ['/dev/x']\n", "[0].name: must be a resource name"),
    ("[[device_plugin.resources]]\nname = 'camera'\npaths = ['/dev/x']\n",
     "[0].name: must be a resource name like 'example.com/device', got 'camera'"),
    ("[[device_plugin.resources]]\nname = 'a.com/b'\npaths = ['/dev/x']\n"
     "[[device_plugin.resources]]\nname = 'a.com/b'\npaths = ['/dev/y']\n",
     "[1].name: a.com/b is defined twice"),
    ("[[device_plugin.resources]]\nname = 'a.com/b'\npaths = ['/tmp/x']\n",
     "[0].paths: '/tmp/x' must be a glob under /dev/"),
    ("[[device_plugin.resources]]\nname = 'a.com/b'\nusb_ids = ['1a6e089a']\n",
     "[0].usb_ids: '1a6e089a' must be vendor:product in hex"),
    ("[[device_plugin.resources]]\nname = 'a.com/b'\n", "[0]: needs paths or usb_ids"),
    ("[[device_plugin.resources]]\nname = 'a.com/b'\npaths = ['/dev/x']\npods_per_device = 0\n",
     "[0]: must be between 1 and 1000, got 0"),
    ("[[device_plugin.resources]]\nname = 'a.com/b'\npaths = '/dev/x'\n", None),
    ("[[device_plugin.resources]]\nname = 'a.com/b'\npaths = [1]\n",
     "[0]: must be a list of strings"),
])
def test_resources(tmp_path, text, problem):
    path = toml(tmp_path, text)
    if problem is None:
        assert load_config(path, env={}).options.device_plugin.resources[0].paths == ("/dev/x",)
        return
    message = error_of(path=path, env={})
    assert message.startswith("config file %s: device_plugin.resources: " % path), message
    assert problem in message


# --- label prefix and NodeRestriction ---------------------------------------------------------

@pytest.mark.parametrize("prefix, problem", [
    ("edgeagent.io/", None),
    ("example.com/", None),
    ("feature.node.example.org/", None),
    ("kubernetes.io/", "NodeRestriction admission plugin forbids nodes to set kubernetes.io"),
    ("k8s.io/", "NodeRestriction admission plugin forbids nodes to set k8s.io"),
    ("gpu.kubernetes.io/", "NodeRestriction admission plugin forbids nodes to set kubernetes.io"),
    ("feature.k8s.io/", "forbids nodes to set k8s.io"),
    ("node-restriction.kubernetes.io/", "may only be set by administrators"),
    ("node.kubernetes.io/", "reserved for Kubernetes itself"),
    ("kubelet.kubernetes.io/", "reserved for Kubernetes itself"),
    ("notkubernetes.io/", None),
    ("edgeagent.io", "must end with '/'"),
    ("/", "is not a DNS subdomain"),
    ("-bad.io/", "is not a DNS subdomain"),
    ("a" * 254 + "/", "is not a DNS subdomain"),
])
def test_label_prefix(prefix, problem):
    assert (label_prefix_problem(prefix) is None) == (problem is None)
    if problem:
        assert problem in label_prefix_problem(prefix)
        message = error_of(env={"EDGEAGENT_LABELS_PREFIX": prefix})
        assert message.startswith("environment EDGEAGENT_LABELS_PREFIX: labels.prefix: ")
    else:
        assert load_config(env={"EDGEAGENT_LABELS_PREFIX": prefix}).options.labels.prefix == prefix


# --- the file itself ----------------------------------------------------------------------------

def test_invalid_toml(tmp_path):
    path = toml(tmp_path, "log_level = \n[metrics\n")
    message = error_of(path=path, env={})
    assert message.startswith("config file %s: invalid TOML: " % path)


def test_duplicate_key_is_invalid_toml(tmp_path):
    path = toml(tmp_path, 'log_level = "info"\nlog_level = "debug"\n')
    assert "invalid TOML" in error_of(path=path, env={})


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.toml")
    assert error_of(path=path, env={}) == "config file %s: not found" % path


def test_directory_instead_of_file(tmp_path):
    assert error_of(path=str(tmp_path), env={}) == "config file %s: is a directory" % tmp_path


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('node_name = "k\xf6ln"\n'.encode("latin-1"))
    message = error_of(path=str(path), env={})
    assert message.startswith("config file %s: " % path)
    assert "UTF-8" in message or "invalid TOML" in message


def test_symlink_loop(tmp_path):
    loop = str(tmp_path / "loop.toml")
    os.symlink(loop, loop)
    message = error_of(path=loop, env={})
    assert message.startswith("config file %s: " % loop) and "symbolic links" in message


def test_empty_file_is_all_defaults(tmp_path):
    config = load_config(toml(tmp_path, ""), env={})
    assert set(config.sources.values()) == {"default"}
