"""Run a firm.core module in-process, as Ansible would, and return its result.

Unit tests use this against fake trees; integration tests also run modules through the real
``ansible`` command (see ``run_ansible_module``) to prove the collection loads from a checkout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"


def run_module(
    main: Callable[[], None],
    args: dict[str, Any],
    check_mode: bool = False,
    diff: bool = True,
    capsys: pytest.CaptureFixture[str] | None = None,
) -> dict[str, Any]:
    """Call a module's ``main`` with ``args``; returns the parsed exit_json / fail_json result."""
    full_args = dict(args)
    full_args["_ansible_check_mode"] = check_mode
    full_args["_ansible_diff"] = diff
    if capsys is None:
        raise ValueError("pass the capsys fixture so the module's JSON output can be read")
    capsys.readouterr()
    with patch_module_args(full_args), pytest.raises(SystemExit):
        main()
    out = capsys.readouterr().out
    result: dict[str, Any] = json.loads(out)
    return result


def run_ansible_module(
    module: str, args: dict[str, Any], check: bool = False, diff: bool = False
) -> dict[str, Any]:
    """Run ``ansible localhost -m <module>`` from the checkout and return its result."""
    command = [str(VENV_BIN / "ansible"), "localhost", "-m", module, "-a", json.dumps(args)]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    proc = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    # The default callback prints "localhost | CHANGED => {...}" (or SUCCESS, FAILED!).
    match = re.search(r"^localhost \| ([A-Z!]+) => (\{.*?^\})", proc.stdout, flags=re.M | re.S)
    if match is None:
        raise AssertionError(
            f"ansible printed no result (rc={proc.returncode}): {proc.stdout}\n{proc.stderr}"
        )
    result: dict[str, Any] = json.loads(match.group(2))
    if match.group(1) == "FAILED!":
        result["failed"] = True
    return result
