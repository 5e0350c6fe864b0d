import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FIXTURES = os.path.join(HERE, "fixtures")
DTB_DIR = os.path.join(FIXTURES, "dtb")

if REPO not in sys.path:
    sys.path.insert(0, REPO)


def dtb_path(name: str) -> str:
    return os.path.join(DTB_DIR, name)


def all_dtbs():
    return sorted(f for f in os.listdir(DTB_DIR) if f.endswith(".dtb"))


def tegrastats_fixture_lines():
    with open(os.path.join(FIXTURES, "tegrastats", "lines.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def fixtures_dir():
    return FIXTURES
