"""The testbed's anomaly injector: what it asks firm.core.anomaly for (the module itself is run for real
in tests/integration/test_anomaly_real.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from firm.testbed import config as testbed_config
from firm.testbed import experiment


@pytest.mark.parametrize(("instance", "cpus"), [("compose-post-0", "0"), ("home-timeline-0", "1")])
def test_an_anomaly_is_pinned_to_the_cpus_its_service_is_configured_with(
    monkeypatch: pytest.MonkeyPatch, instance: str, cpus: str
) -> None:
    """Not to the cgroup's cpuset of the moment, which a policy may have widened: every policy of an
    experiment must meet the same contention."""
    config = testbed_config.TestbedConfig()
    plan = experiment.AnomalyPlan("cpu", instance, 80, 0.0, 5)
    sent: list[dict[str, Any]] = []

    def run_module(name: str, args: dict[str, Any]) -> dict[str, Any]:
        sent.append(args)
        return {"localhost": SimpleNamespace(failed=False, result={"anomaly": {"name": args["name"]}})}

    monkeypatch.setattr(experiment, "run_module", run_module)
    injector = experiment.Injector(
        experiment.anomaly_spec(config, plan), experiment.anomaly_environment(config), plan, lambda _: None
    )
    injector._start()
    (args,) = sent
    assert args["target_cpus"] == cpus and args["target_cgroup"] == f"{config.cgroup_parent}/{instance}"
    assert args["kind"] == "cpu" and args["intensity"] == 80
