import re

from configs.settings import REPO_ROOT

PIN = re.compile(r"^\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s#]+)")


def pins(path):
    return {m.group(1).lower(): m.group(2) for line in path.read_text().splitlines() if (m := PIN.match(line))}


def test_environment_yml_pins_what_the_requirements_pin():
    req = pins(REPO_ROOT / "requirements.txt") | pins(REPO_ROOT / "requirements-dev.txt")
    assert req["torch"] == "2.14.1" and req["torchvision"] == "0.29.1"
    assert pins(REPO_ROOT / "environment.yml") == req
