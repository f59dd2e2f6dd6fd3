"""``firm experiment`` end to end on the embedded testbed, for real: three policies, one CPU anomaly each.

The testbed under test has its own names and subnet (198.18.8.0/24); the experiment brings it up
(it is down) and takes it down at the end, and the test checks that nothing is left: no namespace,
cgroup, process, anomaly. Nothing here asserts which policy wins (that depends on the machine):
only that every policy ran, was measured and reported, and that everything was cleaned up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.firm.core.plugins.module_utils import anomaly
from firm.testbed import config as testbed_config
from firm.testbed import experiment as testbed_experiment
from tests.helpers.redis_db import REDIS_URL, connect
from tests.integration.test_testbed_real import assert_nothing_left

FIRM = [sys.executable, "-c", "import sys; from firm.cli import main; sys.argv[0] = 'firm'; main()"]
POLICIES = ("firm", "hpa-fast", "static")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the experiment needs root (namespaces, cgroups, anomalies)")
    connect()  # skips, saying why, without the tests' Redis
    missing = [
        t
        for t in anomaly.TOOLS["cpu"]
        if not any(
            os.access(os.path.join(d, t), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep)
        )
    ]
    if missing:
        pytest.skip(f"the cpu anomaly needs {', '.join(missing)}")
    root = tmp_path_factory.mktemp("experiment")
    path = root / "testbed.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "subnet": "198.18.8.0/24",
                "bridge": "firmtbx0",
                "namespace_prefix": "firmtbx-",
                "veth_prefix": "ftx",
                "cgroup_parent": "firm-testbed-exp",
                "state_dir": str(root / "state"),
                "data_dir": str(root / "data"),
                "telemetry_redis": REDIS_URL,
                "seed_posts": 100,
            }
        )
    )
    return path


def test_a_short_experiment_end_to_end(config_file: Path, tmp_path: Path) -> None:
    config = testbed_config.load(config_file)
    out = tmp_path / "out"
    try:
        result = subprocess.run(
            [
                *FIRM,
                "experiment",
                "--policies",
                ",".join(POLICIES),
                "--duration",
                "30",
                "--warmup",
                "5",
                "--anomalies",
                "cpu",
                "--seed",
                "3",
                "--out",
                str(out),
                "--testbed-config",
                str(config_file),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads((out / "report.json").read_text())
        assert list(report["policies"]) == list(POLICIES)
        assert report["seed"] == 3 and report["interval_s"] == config.slo_window_s
        (planned,) = report["schedule"]
        assert planned["kind"] == "cpu"
        for name, entry in report["policies"].items():
            assert entry["requests"] > 0, name
            assert entry["cpu_cores_avg"] is not None and entry["cpu_cores_avg"] > 0, name
            assert len(entry["mitigation_s"]) == 1, f"{name}: the anomaly ran and was measured"
            (ran,) = entry["anomalies"]
            assert ran["service"] == planned["service"] and ran["end_s"] > ran["start_s"]
            assert set(entry["per_type"]) >= set(config.slo_ms)
            assert len(entry["series"]["start_s"]) == int(30 // config.slo_window_s)
        assert report["policies"]["static"]["actions"] == 0
        assert report["policies"]["static"]["scale_events"] == 0
        assert set(report["ratios_to_firm"]) == {"hpa-fast", "static"}
        assert (out / "p99.png").stat().st_size > 0 and (out / "cpu.png").stat().st_size > 0
        assert {p.name for p in (out / "runs").iterdir()} == {f"{p}.json" for p in POLICIES}
        assert "ratio to firm" in result.stdout and "ratio to firm" not in result.stderr  # results on stdout
    finally:
        left = (
            anomaly.active(testbed_experiment.anomaly_environment(config))
            if os.path.isdir(config.state_dir)
            else []
        )
        subprocess.run(
            [*FIRM, "testbed", "down", "--config", str(config_file)],
            capture_output=True,
            check=False,
            timeout=300,
        )
    assert left == [], "every anomaly was stopped"
    assert_nothing_left(config)
