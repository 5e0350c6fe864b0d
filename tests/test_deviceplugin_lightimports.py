"""The stand-ins that keep betterproto's import light (edgeagent/deviceplugin/lightimports.py).

Each case runs in a fresh interpreter: the stand-ins only matter before betterproto's first
import, and this test process may have imported it already.
"""

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def run_fresh(code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


PREPARE_AND_IMPORT = """
import json, sys
from edgeagent.deviceplugin.lightimports import prepare_betterproto
prepare_betterproto()
import edgeagent.deviceplugin.plugin
import edgeagent.deviceplugin.server
import betterproto
"""


def test_the_plugin_imports_without_dateutil_or_package_metadata():
    found = run_fresh(PREPARE_AND_IMPORT + """
print(json.dumps({"loaded": sorted(m for m in sys.modules if m.startswith(
    ("dateutil", "importlib.metadata", "importlib_metadata", "decimal", "six", "email"))),
    "version": betterproto.__version__}))
""")
    # the stand-in dateutil.parser is all there is of dateutil
    assert found["loaded"] == ["dateutil.parser"], found
    assert found["version"] == "2.0.0b7"


def test_plain_betterproto_still_loads_what_the_stand_ins_avoid():
    """The day a betterproto release stops importing dateutil's parser and importlib.metadata,
    lightimports.py has no reason left: delete it (and this test)."""
    found = run_fresh("""
import json, sys
import edgeagent.deviceplugin.server
print(json.dumps({"parser": "dateutil.parser._parser" in sys.modules,
                  "metadata": "importlib.metadata" in sys.modules
                              or "importlib_metadata" in sys.modules}))
""")
    assert found == {"parser": True, "metadata": True}


def test_betterproto_takes_only_isoparse_from_dateutil():
    """The stand-in is enough only while betterproto's import reads nothing else from
    dateutil.parser (anything else would load the real parser at once)."""
    import betterproto

    with open(betterproto.__file__) as f:
        source = f.read()
    imports = [line.strip() for line in source.splitlines() if "dateutil" in line]
    assert imports == ["from dateutil.parser import isoparse"], imports


def test_the_pinned_version_is_the_installed_one():
    from importlib import metadata  # Python 3.8+

    from edgeagent.deviceplugin.lightimports import BETTERPROTO_VERSION

    assert metadata.version("betterproto") == BETTERPROTO_VERSION
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        assert '"betterproto==%s"' % BETTERPROTO_VERSION in f.read()


def test_messages_still_encode_and_decode():
    found = run_fresh(PREPARE_AND_IMPORT + """
from edgeagent.deviceplugin.proto import v1beta1 as api
resp = api.AllocateResponse(container_responses=[api.ContainerAllocateResponse(
    envs={"NVIDIA_VISIBLE_DEVICES": "all"},
    devices=[api.DeviceSpec(container_path="/dev/nvmap", host_path="/dev/nvmap",
                            permissions="rw")])])
back = api.AllocateResponse().parse(bytes(resp))
print(json.dumps({"same": back == resp, "dict": back.to_dict()}))
""")
    assert found["same"] is True
    assert found["dict"]["containerResponses"][0]["devices"][0]["hostPath"] == "/dev/nvmap"


def test_dates_are_still_parsed_by_the_real_dateutil_when_asked():
    found = run_fresh(PREPARE_AND_IMPORT + """
parsed = betterproto.isoparse("2024-03-04T05:06:07Z")
import dateutil.parser
later = dateutil.parser.parse("5 March 2024 10:00")
print(json.dumps({"iso": parsed.isoformat(), "later": later.isoformat(),
                  "real": type(sys.modules["dateutil.parser"]).__name__,
                  "parser_loaded": "dateutil.parser._parser" in sys.modules}))
""")
    assert found["iso"] == "2024-03-04T05:06:07+00:00"
    assert found["later"] == "2024-03-05T10:00:00"
    assert found["real"] == "module" and found["parser_loaded"] is True


def test_nothing_changes_once_betterproto_is_imported():
    found = run_fresh("""
import json, sys
import betterproto
before = sys.modules["dateutil.parser"]
from edgeagent.deviceplugin.lightimports import prepare_betterproto
prepare_betterproto()
print(json.dumps({"same": sys.modules["dateutil.parser"] is before,
                  "stand_ins": [m for m in ("dateutil.parser", "betterproto._version")
                                if getattr(sys.modules[m], "_edgeagent_stand_in", False)]}))
""")
    assert found == {"same": True, "stand_ins": []}
