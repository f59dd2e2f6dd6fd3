"""One source of truth for dependencies: pyproject.toml's ranges and requirements*.txt's pins agree.

requirements.txt pins exactly what ``[project] dependencies`` names, requirements-dev.txt (beyond
``-r requirements.txt``) exactly what the ``dev`` extra names, and every pin lies in its range.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]


def pins(path: Path) -> dict[str, str]:
    """name -> pinned version of a requirements file (comments and ``-r`` lines left out)."""
    found: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-r"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", (
            f"{path.name}:{number}: {line!r} is not an exact pin (name==version)"
        )
        name = canonicalize_name(requirement.name)
        assert name not in found, f"{path.name}:{number}: {requirement.name} is pinned twice"
        found[name] = specifiers[0].version
    return found


def ranges(entries: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(Requirement(entry).name): Requirement(entry) for entry in entries}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CASES = {
    "runtime": (ROOT / "requirements.txt", PROJECT["dependencies"]),
    "dev": (ROOT / "requirements-dev.txt", PROJECT.get("optional-dependencies", {}).get("dev", [])),
}


@pytest.mark.parametrize("group", sorted(CASES))
def test_the_pins_and_the_ranges_name_the_same_packages(group: str) -> None:
    path, entries = CASES[group]
    pinned, declared = set(pins(path)), set(ranges(entries))
    assert not pinned - declared, (
        f"pinned in {path.name} but not in pyproject.toml ({group}): {pinned - declared}"
    )
    assert not declared - pinned, (
        f"in pyproject.toml ({group}) but not pinned in {path.name}: {declared - pinned}"
    )


@pytest.mark.parametrize("group", sorted(CASES))
def test_every_pin_lies_in_its_range(group: str) -> None:
    path, entries = CASES[group]
    declared = ranges(entries)
    outside = {
        name: f"{version} not in {declared[name].specifier}"
        for name, version in pins(path).items()
        if name in declared and not declared[name].specifier.contains(version, prereleases=True)
    }
    assert not outside, f"{path.name} pins outside pyproject.toml's ranges: {outside}"


def test_the_dev_requirements_include_the_runtime_ones() -> None:
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()
