"""examples/dra: the DRA manifests are resource.k8s.io/v1 objects with the API's field names,
ask for devices by attributes of the driver's contract, and fit together (claims name the
classes, pods name the templates, containers name the pods' claims).

`kubectl create --dry-run=client` cannot check them offline: it needs an API server's
discovery to map a kind, even with --validate=false (and the kubectl of the build, 1.32, has
no resource.k8s.io/v1 types). So the resource.k8s.io objects are held against the fields of
the API reference (Kubernetes 1.34+, kubernetes.io/docs/reference/kubernetes-api/: DeviceClass
v1, ResourceClaimTemplate v1, ExactDeviceRequest, CapacityRequirements) written out below, and
the Pods go through kubectl's typed decoding as examples/kubernetes' do (a field unknown to the
Pod type is dropped there, so every field must survive the round trip).
"""

import os
import re

import pytest
import yaml

from tests.conftest import REPO
from tests.test_examples_kubernetes import has_path, json_stream, leaf_paths, typed_round_trip

EXAMPLES = os.path.join(REPO, "examples", "dra")
README = os.path.join(REPO, "README.md")
DRIVER = "edgeagent.io"
FILES = {"deviceclass-gpu.yaml", "deviceclass-dla.yaml", "resourceclaimtemplate-gpu.yaml",
         "pod-compute-capability.yaml", "pod-shared-gpu.yaml", "pod-dla.yaml"}

# The device attributes of the driver's pool (the contract the slice publisher, the examples
# and the README share) and their kinds; capacity names likewise.
ATTRIBUTES = {"type": "string", "productName": "string", "architecture": "string",
              "computeCapability": "version", "soc": "string", "board": "string",
              "l4tVersion": "version", "jetpackVersion": "version", "unifiedMemory": "bool",
              "dlaEngine": "int"}
CAPACITY = {"memory"}

# resource.k8s.io/v1 fields, from the API reference: object -> {field: nested object or None}.
# Required fields are in REQUIRED.
SCHEMA = {
    "DeviceClass": {"apiVersion": None, "kind": None, "metadata": "ObjectMeta",
                    "spec": "DeviceClassSpec"},
    "DeviceClassSpec": {"selectors": ["DeviceSelector"], "config": None,
                        "extendedResourceName": None},
    "DeviceSelector": {"cel": "CELDeviceSelector"},
    "CELDeviceSelector": {"expression": None},
    "ResourceClaimTemplate": {"apiVersion": None, "kind": None, "metadata": "ObjectMeta",
                              "spec": "ResourceClaimTemplateSpec"},
    "ResourceClaimTemplateSpec": {"metadata": "ObjectMeta", "spec": "ResourceClaimSpec"},
    "ResourceClaimSpec": {"devices": "DeviceClaim"},
    "DeviceClaim": {"requests": ["DeviceRequest"], "constraints": None, "config": None},
    "DeviceRequest": {"name": None, "exactly": "ExactDeviceRequest", "firstAvailable": None},
    "ExactDeviceRequest": {"deviceClassName": None, "selectors": ["DeviceSelector"],
                           "allocationMode": None, "count": None, "adminAccess": None,
                           "tolerations": None, "capacity": "CapacityRequirements"},
    "CapacityRequirements": {"requests": None},
    "ObjectMeta": {"name": None, "namespace": None, "labels": None, "annotations": None},
}
REQUIRED = {"DeviceClass": ["metadata", "spec"], "ResourceClaimTemplate": ["metadata", "spec"],
            "ResourceClaimTemplateSpec": ["spec"], "CELDeviceSelector": ["expression"],
            "DeviceRequest": ["name"], "ExactDeviceRequest": ["deviceClassName"],
            "ObjectMeta": ["name"]}
GPU_SELECTOR = 'device.driver == "edgeagent.io" && device.attributes["edgeagent.io"].type == "gpu"'

_ATTR = re.compile(r'device\.attributes\["([^"]+)"\]\.([A-Za-z0-9_]+)')
_SEMVER = re.compile(r'semver\("(\d+\.\d+\.\d+)"\)')


def documents(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@pytest.fixture(scope="module")
def objects():
    return {name: documents(name) for name in sorted(FILES)}


def by_kind(objects, kind):
    return [o for objs in objects.values() for o in objs if o.get("kind") == kind]


def schema_problems(value, kind, where):
    """Fields of ``value`` that the API type ``kind`` does not have, or required ones missing."""
    fields = SCHEMA[kind]
    if not isinstance(value, dict):
        return ["%s: a %s must be a mapping" % (where, kind)]
    problems = ["%s: %s has no field %r" % (where, kind, k) for k in value if k not in fields]
    problems += ["%s: %s needs %r" % (where, kind, k) for k in REQUIRED.get(kind, ())
                 if k not in value]
    for key, nested in fields.items():
        if key not in value or nested is None:
            continue
        if isinstance(nested, list):
            items = value[key]
            if not isinstance(items, list):
                problems.append("%s.%s: must be a list" % (where, key))
                continue
            for i, item in enumerate(items):
                problems += schema_problems(item, nested[0], "%s.%s[%d]" % (where, key, i))
        else:
            problems += schema_problems(value[key], nested, "%s.%s" % (where, key))
    return problems


def cel_expressions(obj):
    out = []

    def walk(value):
        if isinstance(value, dict):
            if isinstance(value.get("cel"), dict):
                out.append(" ".join(str(value["cel"].get("expression", "")).split()))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(obj)
    return out


def exact_requests(template):
    return [r["exactly"] for r in template["spec"]["spec"]["devices"]["requests"]]


# --- the files -----------------------------------------------------------------------------------

def test_the_examples_are_there():
    assert {f for f in os.listdir(EXAMPLES) if f.endswith(".yaml")} == FILES


def test_every_object_is_a_known_kind_of_its_api_version(objects):
    kinds = {"DeviceClass": "resource.k8s.io/v1", "ResourceClaimTemplate": "resource.k8s.io/v1",
             "Pod": "v1"}
    for name, objs in objects.items():
        assert objs, name
        for obj in objs:
            assert kinds.get(obj.get("kind")) == obj.get("apiVersion"), (name, obj.get("kind"))


@pytest.mark.parametrize("kind", ["DeviceClass", "ResourceClaimTemplate"])
def test_resource_objects_use_the_apis_field_names(objects, kind):
    problems = []
    for name, objs in objects.items():
        for obj in objs:
            if obj["kind"] == kind:
                problems += schema_problems(obj, kind, "%s %s" % (name, obj["metadata"]["name"]))
    assert problems == []


def test_the_schema_check_catches_a_misspelt_field():
    bad = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
           "metadata": {"name": "x"}, "spec": {"spec": {"devices": {"requests": [
               {"name": "gpu", "exactly": {"deviceClass": "gpu.edgeagent.io"}}]}}}}
    assert schema_problems(bad, "ResourceClaimTemplate", "t") == [
        "t.spec.spec.devices.requests[0].exactly: ExactDeviceRequest has no field "
        "'deviceClass'",
        "t.spec.spec.devices.requests[0].exactly: ExactDeviceRequest needs 'deviceClassName'"]


@pytest.mark.parametrize("name", sorted(f for f in FILES if f.startswith("pod-")))
def test_pods_decode_into_the_api_types_without_losing_a_field(objects, name):
    for obj in objects[name]:
        if obj["kind"] != "Pod":
            continue
        code, out, err = typed_round_trip(obj)
        assert code == 0, "%s: %s" % (name, err)
        typed = json_stream(out)[0]
        lost = [p for p in leaf_paths(obj) if not has_path(typed, p)]
        assert lost == [], "%s: fields unknown to the Pod type: %s" % (name, lost)


# --- what they ask for ---------------------------------------------------------------------------

def test_the_gpu_class_selects_the_drivers_gpu_and_keeps_nvidia_com_gpu(objects):
    classes = {c["metadata"]["name"]: c for c in by_kind(objects, "DeviceClass")}
    gpu = classes["gpu.edgeagent.io"]
    assert cel_expressions(gpu) == [GPU_SELECTOR]
    assert gpu["spec"]["extendedResourceName"] == "nvidia.com/gpu"
    dla = classes["dla.edgeagent.io"]
    assert cel_expressions(dla) == [GPU_SELECTOR.replace('"gpu"', '"dla"')]
    assert "extendedResourceName" not in dla["spec"]


def test_every_attribute_the_cel_names_is_in_the_contract(objects):
    named = set()
    for name, objs in objects.items():
        for expr in [e for o in objs for e in cel_expressions(o)]:
            for domain, attr in _ATTR.findall(expr):
                assert domain == DRIVER, (name, expr)
                assert attr in ATTRIBUTES, (name, attr)
                named.add(attr)
            # A version compares as a semver, a string or an int with a literal of its kind.
            for attr in re.findall(_ATTR.pattern + r'\.compareTo\(semver\("', expr):
                assert ATTRIBUTES[attr[1]] == "version", (name, attr)
            for attr in re.findall(_ATTR.pattern + r'\s*==\s*"', expr):
                assert ATTRIBUTES[attr[1]] == "string", (name, attr)
            for attr in re.findall(_ATTR.pattern + r'\s*==\s*\d', expr):
                assert ATTRIBUTES[attr[1]] == "int", (name, attr)
            for version in _SEMVER.findall(expr):
                assert not version.endswith(".0.0.0"), version
    assert {"type", "computeCapability", "dlaEngine"} <= named


def test_the_compute_capability_pod_compares_a_version(objects):
    (template,) = by_kind({"f": objects["pod-compute-capability.yaml"]}, "ResourceClaimTemplate")
    (expr,) = cel_expressions(template)
    assert 'device.attributes["edgeagent.io"].computeCapability.compareTo(semver("8.7.0")) ' \
        '>= 0' in expr


def test_the_shared_gpu_pods_each_claim_part_of_its_memory(objects):
    objs = objects["pod-shared-gpu.yaml"]
    (template,) = [o for o in objs if o["kind"] == "ResourceClaimTemplate"]
    (request,) = exact_requests(template)
    assert request["deviceClassName"] == "gpu.edgeagent.io"
    assert set(request["capacity"]["requests"]) == CAPACITY
    pods = [o for o in objs if o["kind"] == "Pod"]
    assert len(pods) == 2
    for pod in pods:
        assert [c["resourceClaimTemplateName"] for c in pod["spec"]["resourceClaims"]] == [
            template["metadata"]["name"]]


def test_capacity_requests_name_only_the_contracts_capacity(objects):
    for template in by_kind(objects, "ResourceClaimTemplate"):
        for request in exact_requests(template):
            assert set((request.get("capacity") or {}).get("requests") or {}) <= CAPACITY


def test_the_pieces_fit_together(objects):
    classes = {c["metadata"]["name"] for c in by_kind(objects, "DeviceClass")}
    templates = {t["metadata"]["name"] for t in by_kind(objects, "ResourceClaimTemplate")}
    for template in by_kind(objects, "ResourceClaimTemplate"):
        for request in exact_requests(template):
            assert request["deviceClassName"] in classes, template["metadata"]["name"]
    pods = by_kind(objects, "Pod")
    assert len(pods) == 4
    for pod in pods:
        claims = {c["name"]: c for c in pod["spec"]["resourceClaims"]}
        assert all(c["resourceClaimTemplateName"] in templates for c in claims.values())
        used = {c["name"] for ctr in pod["spec"]["containers"]
                for c in ctr["resources"]["claims"]}
        assert used == set(claims), pod["metadata"]["name"]


def test_the_readme_lists_the_contracts_attributes():
    with open(README) as f:
        text = f.read()
    section = text[text.index("## Dynamic Resource Allocation"):]
    section = section[:section.index("\n## ", 4)]
    rows = re.findall(r"^\| `([A-Za-z0-9]+)` \| (string|version|bool|int) \|", section, re.M)
    assert dict(rows) == ATTRIBUTES
    for name in FILES:
        assert "examples/dra/" + name in section or name in section, name
