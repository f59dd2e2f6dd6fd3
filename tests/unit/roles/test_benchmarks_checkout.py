"""The benchmarks role's check of a DeathStarBench checkout (roles/benchmarks/tasks/source.yml).

The checkout is on the controller, so the role checks its files there with the ``exists`` test, in
one assert, rather than a ``stat`` module run per path. The assert is evaluated here as ansible does,
from the task file itself: a complete checkout passes (test_manifests.py renders with one through
ansible-playbook), and one that lacks files fails naming each of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

ROLE = Path(__file__).resolve().parents[3] / "roles" / "benchmarks"


def _check(checkout: Path) -> tuple[bool, str]:
    """The assert's outcome and failure message for ``checkout``, with the role's defaults."""
    loader = DataLoader()
    tasks: list[dict[str, Any]] = loader.load_from_file(
        str(ROLE / "tasks" / "source.yml"), trusted_as_template=True
    )
    (task,) = [t for t in tasks if "ansible.builtin.assert" in t]
    defaults = loader.load_from_file(str(ROLE / "defaults" / "main.yml"), trusted_as_template=True)
    templar = Templar(
        loader=loader, variables={**defaults, "benchmarks_dsb_checkout": str(checkout), **task["vars"]}
    )
    check = task["ansible.builtin.assert"]
    return templar.evaluate_conditional(check["that"]), str(templar.template(check["fail_msg"]))


def _checkout(root: Path, lacking: tuple[str, ...] = ()) -> Path:
    paths: dict[str, str] = DataLoader().load_from_file(str(ROLE / "defaults" / "main.yml"))[
        "benchmarks_dsb_paths"
    ]
    for relative in paths.values():
        if relative in lacking:
            continue
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix:
            path.write_text("")
        else:
            path.mkdir(exist_ok=True)
    return root


def test_a_complete_checkout_passes(tmp_path: Path) -> None:
    assert _check(_checkout(tmp_path))[0] is True


def test_a_checkout_that_lacks_files_fails_naming_each(tmp_path: Path) -> None:
    lacking = ("socialNetwork/keys", "socialNetwork/config/jaeger-config.yml")
    passed, message = _check(_checkout(tmp_path, lacking))
    assert passed is False
    assert all(f"{tmp_path}/{relative}" in message for relative in lacking), message
    assert "socialNetwork/config/service-config.json" not in message
    assert "Fix: pin benchmarks_dsb_version" in message
