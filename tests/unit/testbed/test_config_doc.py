"""docs/testbed.md's tables of settings agree with the schema of controller/firm/testbed/config.py:
every setting documented, and each bound the schema enforces written in its row."""

from __future__ import annotations

import re
import typing
from dataclasses import fields
from pathlib import Path

import annotated_types
import pytest
from pydantic import Strict

from ansible_collections.firm.core.plugins.module_utils.cgroup import CPU_QUOTA_MIN_US
from firm.testbed import config
from firm.testbed.config import ServiceSpec

Config = config.TestbedConfig  # not under its own name, which pytest would try to collect as a test class

DOC = Path(__file__).resolve().parents[3] / "docs" / "testbed.md"


def _rows(heading: str) -> dict[str, str]:
    """Setting -> its "accepted" cell, from the table that follows the paragraph starting ``heading``."""
    text = DOC.read_text()
    table = text[text.index(heading) :].split("\n\n")[1]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:  # past the header and its rule
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            rows[name] = cells[-1]
    return rows


SERVICE_ROWS = _rows("Per service, under")
TOP_ROWS = _rows("Top level:")


def _bounds(cls: type, name: str) -> tuple[bool, list[object]]:
    """Whether the field is a strict integer, and its annotated_types bounds."""
    hint = typing.get_type_hints(cls, include_extras=True)[name]
    strict, bounds = False, list[object]()
    for meta in getattr(hint, "__metadata__", ()):
        strict |= isinstance(meta, Strict) and typing.get_args(hint)[0] is int
        bounds.extend(getattr(meta, "metadata", []))
    return strict, bounds


def _number(value: object) -> str:
    """A bound as the table writes it: 100000, not 1e+05; 0.5 as itself."""
    assert isinstance(value, (int, float)), value
    return str(int(value)) if float(value).is_integer() else repr(value)


def test_every_setting_is_documented() -> None:
    assert set(SERVICE_ROWS) == {f.name for f in fields(ServiceSpec)} - {"name"}
    assert set(TOP_ROWS) == {f.name for f in fields(Config)} - {"services", "redis"}


@pytest.mark.parametrize(
    ("cls", "name"),
    [(ServiceSpec, n) for n in SERVICE_ROWS] + [(Config, n) for n in TOP_ROWS],
)
def test_each_bound_of_the_schema_is_in_its_row(cls: type, name: str) -> None:
    cell = (SERVICE_ROWS if cls is ServiceSpec else TOP_ROWS)[name]
    strict, bounds = _bounds(cls, name)
    assert strict == ("integer" in cell.lower()), cell
    for bound in bounds:
        if isinstance(bound, annotated_types.Gt):
            assert f"above {_number(bound.gt)}" in cell, cell
        elif isinstance(bound, annotated_types.Ge):
            assert re.search(rf"\b{re.escape(_number(bound.ge))}\b", cell), cell
        elif isinstance(bound, annotated_types.Le):
            assert re.search(rf"\b{re.escape(_number(bound.le))}\b", cell), cell


@pytest.mark.parametrize(
    ("setting", "accepted", "refused", "written"),
    [
        ("cpu_quota_us", CPU_QUOTA_MIN_US, CPU_QUOTA_MIN_US - 1, "at least 1000"),
        ("memory_max", 16 << 20, (16 << 20) - 1, "at least 16M (16777216)"),
        ("cpus", "8191", "8192", "below 8192"),
    ],
)
def test_the_bounds_of_validators_are_those_documented(
    setting: str, accepted: object, refused: object, written: str
) -> None:
    """Bounds a validator function enforces (not a pydantic constraint the test above reads)."""
    assert written in SERVICE_ROWS[setting]
    spec = config.DEFAULT_SERVICES[0]
    config.validate(Config(services=(_with(spec, setting, accepted),)))
    with pytest.raises(config.ConfigError, match=setting):
        config.validate(Config(services=(_with(spec, setting, refused),)))


def _with(spec: ServiceSpec, setting: str, value: object) -> ServiceSpec:
    return ServiceSpec(**{**{f.name: getattr(spec, f.name) for f in fields(ServiceSpec)}, setting: value})
