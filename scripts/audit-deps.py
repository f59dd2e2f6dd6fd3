"""Audit the pinned requirements for known vulnerabilities with pip-audit (run by `make lint`).

Fails (exit 1) when a pinned package has a known vulnerability, naming it and the fixed versions.
When the vulnerability service cannot be reached, or cannot answer for some packages (an offline
machine, or a package index that serves no per-release data), it says so loudly, naming every
package it could not audit, and exits 0, so that a machine without that service can still lint;
FIRM_AUDIT_STRICT=1 makes that a failure too.

Usage: .venv/bin/python scripts/audit-deps.py requirements.txt requirements-dev.txt
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TIMEOUT_S = 300
"""Seconds the whole audit may take before it is reported as not run."""


def main(requirements: list[str]) -> int:
    strict = os.environ.get("FIRM_AUDIT_STRICT") == "1"
    pip_audit = Path(sys.executable).with_name("pip-audit")
    if not pip_audit.exists():
        print(
            f"dependency audit NOT RUN: {pip_audit} is missing; fix: make venv (requirements-dev.txt pins it)"
        )
        return 1 if strict else 0
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch, "audit.json")
        command = [
            str(pip_audit),
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "--timeout",
            "30",
            "--format",
            "json",
            "--output",
            str(report),
        ]
        for path in requirements:
            command += ["--requirement", path]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            print(
                f"dependency audit NOT RUN: pip-audit did not finish in {TIMEOUT_S} s "
                "(is PyPI's vulnerability API reachable from here?)"
            )
            return 1 if strict else 0
        if not report.exists():
            said = (proc.stderr or proc.stdout).strip().splitlines()
            print(
                f"dependency audit NOT RUN: pip-audit exited {proc.returncode}: "
                f"{said[-1] if said else 'no output'}"
            )
            return 1 if strict else 0
        dependencies = json.loads(report.read_text())["dependencies"]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    audited = len(dependencies) - len(skipped)
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release yet"
            print(f"VULNERABLE: {dep['name']}=={dep['version']}: {vuln['id']} (fixed in {fixed})")
    if skipped:
        print(
            f"dependency audit INCOMPLETE: {len(skipped)} of {len(dependencies)} pinned packages could not be "
            "audited (the vulnerability service had no answer for them from this machine):"
        )
        for dep in skipped:
            print(f"  {dep['name']}: {dep['skip_reason']}")
    if vulnerable:
        print(
            f"dependency audit FAILED: {len(vulnerable)} pinned packages have known vulnerabilities; "
            "fix: raise their pins in requirements*.txt to a fixed release"
        )
        return 1
    if audited == 0:
        print(
            f"dependency audit NOT DONE: none of the {len(dependencies)} pinned packages could be audited here"
        )
    else:
        print(
            f"dependency audit: no known vulnerabilities in the {audited} pinned packages audited"
            + (f" ({len(skipped)} not audited, above)" if skipped else "")
        )
    return 1 if strict and skipped else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["requirements.txt", "requirements-dev.txt"]))
