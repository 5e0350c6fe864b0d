"""The PromQL name checker that guards the dashboard and the alert rules (tests/promql_names.py)."""

import pytest

from tests.promql_names import (PromQLNameError, Selector, check_expression, expression_names,
                          grafana_label_values, served_series, substitute_grafana_variables)

# A hand-written exposition in the shape prometheus_client writes: a gauge with and without
# labels, a counter with samples (and its _created series), a labelled counter nothing has
# incremented yet (HELP/TYPE only), and an info-style gauge.
EXPOSITION = """\
# HELP jetson_ram_used_bytes RAM in use (tegrastats RAM), bytes
# TYPE jetson_ram_used_bytes gauge
jetson_ram_used_bytes 2.5e+09
# HELP jetson_cpu_utilization_ratio CPU core load (tegrastats CPU [x%@f]), 0-1
# TYPE jetson_cpu_utilization_ratio gauge
jetson_cpu_utilization_ratio{cpu="0"} 0.12
jetson_cpu_utilization_ratio{cpu="1"} 0.5
# HELP edgeagent_device_plugin_allocations_total Allocate calls by result
# TYPE edgeagent_device_plugin_allocations_total counter
edgeagent_device_plugin_allocations_total{resource="nvidia.com/gpu",result="ok"} 3.0
# HELP edgeagent_device_plugin_allocations_created Allocate calls by result
# TYPE edgeagent_device_plugin_allocations_created gauge
edgeagent_device_plugin_allocations_created{resource="nvidia.com/gpu",result="ok"} 1.7e+09
# HELP edgeagent_labels_patches_total Node label patches by result
# TYPE edgeagent_labels_patches_total counter
# HELP edgeagent_node_info The board this agent runs on
# TYPE edgeagent_node_info gauge
edgeagent_node_info{board="Jetson AGX Xavier",jetpack="5.1.2",l4t="35.4.1",soc="tegra194"} 1.0
"""

TARGET = ("job", "instance", "node")


@pytest.fixture(scope="module")
def served():
    return served_series(EXPOSITION)


def test_served_series_names_and_labels(served):
    assert served["jetson_ram_used_bytes"] == frozenset()
    assert served["jetson_cpu_utilization_ratio"] == frozenset({"cpu"})
    # a counter is queried by its sample name, with _total
    assert served["edgeagent_device_plugin_allocations_total"] == frozenset({"resource", "result"})
    assert "edgeagent_device_plugin_allocations" not in served
    # declared but no samples yet: served by name, labels unknown
    assert served["edgeagent_labels_patches_total"] is None
    assert served["edgeagent_node_info"] == frozenset({"board", "soc", "l4t", "jetpack"})


@pytest.mark.parametrize("expr, selectors, grouping", [
    ("jetson_ram_used_bytes", [("jetson_ram_used_bytes", ())], ()),
    ('jetson_cpu_utilization_ratio{node=~"$node", instance=~"$instance"}',
     [("jetson_cpu_utilization_ratio", ("instance", "node"))], ()),
    ('sum by (node, result) (increase(edgeagent_labels_patches_total{result!="unchanged"}'
     '[$__rate_interval]))',
     [("edgeagent_labels_patches_total", ("result",))], ("node", "result")),
    ('max by (node, instance) (jetson_power_watts{rail=~"(?i)vdd_in|pom_5v_in"}) '
     'or sum by (node, instance) (jetson_power_watts)',
     [("jetson_power_watts", ("rail",)), ("jetson_power_watts", ())], ("node", "instance")),
    ("time() - jetson_tegrastats_last_sample_timestamp_seconds > 30",
     [("jetson_tegrastats_last_sample_timestamp_seconds", ())], ()),
    ('jetson_tegrastats_up == 0 and on (instance) edgeagent_node_info{soc=~"tegra.*"}',
     [("jetson_tegrastats_up", ()), ("edgeagent_node_info", ("soc",))], ("instance",)),
    ("a * on (instance) group_left (board) b", [("a", ()), ("b", ())], ("instance", "board")),
    ("sum without (cpu) (rate(x_total[5m:1m] offset 1h)) > bool 1e3",
     [("x_total", ())], ("cpu",)),
    ('{__name__="up", job="edgeagent"}', [("up", ("job",))], ()),
    ("topk(3, max_over_time(jetson_temperature_celsius[1h]))",
     [("jetson_temperature_celsius", ())], ()),
    ('# a comment\nabsent(up{job="edgeagent"} @ end())', [("up", ("job",))], ()),
    ("count_values(\"version\", edgeagent_build_info) or vector(0) + Inf - NaN",
     [("edgeagent_build_info", ())], ()),
    # label names that are also keywords are still label names inside braces
    ('x{on="1", by="2"} unless y', [("x", ("by", "on")), ("y", ())], ()),
])
def test_expression_names(expr, selectors, grouping):
    names = expression_names(expr)
    assert [(s.metric, tuple(sorted(s.labels))) for s in names.selectors] == selectors
    assert names.grouping == frozenset(grouping)


@pytest.mark.parametrize("expr", [
    "sum(rat(x[5m]))",                           # typo in a function name
    'label_replace(x, "dst", "$1", "src", "(.*)")',  # label names hidden in strings
    '{job="edgeagent"}',                         # no metric name: cannot be checked
    "sum by x",                                  # grouping without a list
    'x{cpu~"0"}',                                # not a matcher
    "x ? y",                                     # not PromQL
])
def test_expressions_the_checker_refuses(expr):
    with pytest.raises(PromQLNameError):
        expression_names(expr)


def test_grafana_variables_become_all():
    assert (substitute_grafana_variables('rate(x{node=~"$node",i=~"${instance}"}'
                                         '[$__rate_interval])')
            == 'rate(x{node=~".*",i=~".*"}[5m])')
    assert substitute_grafana_variables("x[$__range]", interval="1h") == "x[1h]"


def test_label_values_queries():
    assert grafana_label_values("label_values(edgeagent_build_info, node)") == (
        "edgeagent_build_info", "node")
    assert grafana_label_values('label_values(edgeagent_build_info{node=~"$node"}, instance)') == (
        'edgeagent_build_info{node=~"$node"}', "instance")
    assert grafana_label_values("label_values(node)") == (None, "node")
    with pytest.raises(PromQLNameError):
        grafana_label_values("query_result(up)")


def test_check_expression_accepts_served_names(served):
    expr = ('avg by (node, cpu) (jetson_cpu_utilization_ratio{node=~"$node"}) '
            '* on (instance) group_left (board) edgeagent_node_info')
    assert check_expression(expr, served, TARGET) == []


@pytest.mark.parametrize("expr, problem", [
    ("jetson_ram_free_bytes", "metric jetson_ram_free_bytes is not served"),
    # a counter asked for without _total is not what Prometheus stores
    ("rate(edgeagent_device_plugin_allocations[5m])",
     "metric edgeagent_device_plugin_allocations is not served"),
    ('jetson_cpu_utilization_ratio{core="0"}', "has no label core"),
    ("sum by (gpc) (jetson_cpu_utilization_ratio)", "grouping by gpc"),
    ("edgeagent_labels_patches_total", "no samples and no contract labels"),
])
def test_check_expression_reports(served, expr, problem):
    problems = check_expression(expr, served, TARGET)
    assert len(problems) == 1 and problem in problems[0], problems


def test_contract_labels_for_families_without_samples(served):
    contract = {"edgeagent_labels_patches_total": frozenset({"result"})}
    assert check_expression("sum by (result) (edgeagent_labels_patches_total)",
                            served, TARGET, contract) == []
    problems = check_expression('edgeagent_labels_patches_total{outcome="error"}',
                                served, TARGET, contract)
    assert problems and "no label outcome" in problems[0]


def test_selector_is_hashable_value():
    assert Selector("x", frozenset({"a"})) == Selector("x", frozenset({"a"}))
