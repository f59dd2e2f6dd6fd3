"""Every module's documentation loads with ansible-doc and matches its argument spec."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.modules import REPO_ROOT, VENV_BIN

MODULES = sorted(p.stem for p in (REPO_ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


@pytest.fixture(scope="module")
def docs() -> dict[str, Any]:
    """``ansible-doc --json`` of all modules, run from the checkout as a user would."""
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "--json", "-t", "module", *(f"firm.core.{name}" for name in MODULES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, ANSIBLE_CONFIG=str(Path(REPO_ROOT, "ansible.cfg"))),
    )
    assert proc.returncode == 0, proc.stderr
    loaded: dict[str, Any] = json.loads(proc.stdout)
    return loaded


def compare(documented: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    assert set(documented) == set(spec), (
        f"{where}: documented {sorted(documented)} but spec has {sorted(spec)}"
    )
    for name, option in spec.items():
        doc = documented[name]
        assert doc.get("type", "str") == option.get("type", "str"), f"{where}.{name} type"
        assert doc.get("default") == option.get("default"), f"{where}.{name} default"
        assert doc.get("choices") == option.get("choices"), f"{where}.{name} choices"
        assert bool(doc.get("required")) == bool(option.get("required")), f"{where}.{name} required"
        assert doc.get("elements") == option.get("elements"), f"{where}.{name} elements"
        assert doc.get("description"), f"{where}.{name} has no description"
        if "options" in option:
            compare(doc.get("suboptions", {}), option["options"], f"{where}.{name}")


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_the_argument_spec(docs: dict[str, Any], name: str) -> None:
    doc = docs[f"firm.core.{name}"]["doc"]
    module = importlib.import_module(f"ansible_collections.firm.core.plugins.modules.{name}")
    compare(doc.get("options", {}), module.argument_spec(), name)
    assert {"check_mode", "diff_mode"} <= set(doc["attributes"])


@pytest.mark.parametrize("name", MODULES)
def test_examples_and_return_are_yaml(docs: dict[str, Any], name: str) -> None:
    entry = docs[f"firm.core.{name}"]
    examples = yaml.safe_load(entry["examples"])
    assert examples and all(
        f"firm.core.{name}" in task or "ansible.builtin.debug" in task for task in examples
    )
    assert entry["return"], f"{name} documents no return values"
