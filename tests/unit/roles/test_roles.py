"""The roles' conventions: role-prefixed variables, documented once in defaults and once in the
argument specs with the same defaults, a main.yml that only dispatches into files by concern."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = Path(__file__).resolve().parents[3]
ROLES = sorted(path.name for path in (ROOT / "roles").iterdir() if (path / "tasks" / "main.yml").exists())
EXPECTED = {
    "preflight",
    "kubernetes",
    "jaeger",
    "cadvisor",
    "anomaly_tools",
    "redis",
    "firm_node",
    "benchmarks",
    "testbed",
}
"""Roles that must exist; every role found is checked by the tests below, these and any other."""


def load(role: str, *parts: str) -> Any:
    return yaml.safe_load((ROOT / "roles" / role / Path(*parts)).read_text())


def test_every_role_exists() -> None:
    assert set(ROLES) >= EXPECTED


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_agree(role: str) -> None:
    defaults: dict[str, Any] = load(role, "defaults", "main.yml")
    options: dict[str, Any] = load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert all(name.startswith(f"{role}_") for name in defaults), "every variable carries the role's name"
    assert set(defaults) == set(options), "each default is documented in meta/argument_specs.yml, and back"
    for name, value in defaults.items():
        spec = options[name]
        assert spec.get("description"), f"{name} has no description"
        if isinstance(value, str) and "{{" in value:
            continue  # a template: the spec shows what it renders to
        assert spec.get("default") == value, (
            f"{name}: default {value!r} but the spec says {spec.get('default')!r}"
        )


def _validator_spec(options: dict[str, Any]) -> dict[str, Any]:
    keep = ("type", "elements", "choices", "required", "default", "options")
    return {
        name: {key: value for key, value in spec.items() if key in keep} for name, spec in options.items()
    }


@pytest.mark.parametrize("role", ROLES)
def test_defaults_pass_the_argument_specs(role: str) -> None:
    """What Ansible checks when the role starts: the defaults themselves must be valid input."""
    defaults: dict[str, Any] = load(role, "defaults", "main.yml")
    options: dict[str, Any] = load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    result = ArgumentSpecValidator(_validator_spec(options)).validate(defaults)
    assert not result.error_messages


def test_argument_specs_reject_a_bad_value() -> None:
    options: dict[str, Any] = load("redis", "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    result = ArgumentSpecValidator(_validator_spec(options)).validate({"redis_appendfsync": "sometimes"})
    assert any("redis_appendfsync" in message for message in result.error_messages)


@pytest.mark.parametrize("role", ROLES)
def test_main_dispatches_into_files_by_concern(role: str) -> None:
    tasks = load(role, "tasks", "main.yml")
    imports = [task for task in tasks if "ansible.builtin.import_tasks" in task]
    assert len(imports) >= len(tasks) - 1, "main.yml holds imports (and at most one small check)"
    for task in tasks:
        assert task["name"][0].isupper(), task["name"]
        assert role in task.get("tags", []), f"{task['name']} carries the tag {role}"
    for task in imports:
        assert (ROOT / "roles" / role / "tasks" / task["ansible.builtin.import_tasks"]).exists()


@pytest.mark.parametrize("role", ROLES)
def test_meta_names_the_role(role: str) -> None:
    meta = load(role, "meta", "main.yml")
    assert meta["galaxy_info"]["role_name"] == role
    assert meta["dependencies"] == []
