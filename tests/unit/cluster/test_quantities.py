"""Kubernetes resource quantities in every form the API server keeps them.

The API server stores a quantity in the form it was written (``129e6`` stays ``129e6``, ``128974848000m``
stays so), and the Kubernetes documentation gives ``128974848, 129e6, 129M, 128974848000m, 123Mi`` as
memory limits of about the same size. firm refused all but three of those forms as "not understood"
(so `firm cluster` and `firm run --cluster` stopped at such a pod), and ``1.2.3`` was a ValueError.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from firm.cluster.config import ClusterError, ServiceSpec
from firm.cluster.discovery import Discovery, cpu_cores, memory_bytes
from firm.cluster.kube import KubernetesExecutor
from tests.unit.cluster import kube_api
from tests.unit.cluster.fixture_server import FixtureServer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("128974848", 128974848),
        ("129e6", 129_000_000),
        ("129E6", 129_000_000),
        ("129M", 129_000_000),
        ("128974848000m", 128974848),
        ("123Mi", 128974848),
        ("0.5Gi", 1 << 29),
        ("1.5", 2),  # a fraction of a byte is rounded up, as the API server rounds it
        ("400m", 1),  # the documented mistake: 0.4 bytes
        ("1Pi", 1 << 50),
        ("7Ei", 7 << 60),
        ("2E", 2 * 10**18),
        ("1e-3", 1),
        (".5Ki", 512),
        ("+1k", 1000),
        (" 64Mi\n", 64 << 20),
    ],
)
def test_every_memory_quantity_form_reads_as_the_api_server_reads_it(text: str, expected: int) -> None:
    assert memory_bytes(text) == expected


@pytest.mark.parametrize(
    ("text", "cores"),
    [("100m", 0.1), ("0.1", 0.1), ("1e-1", 0.1), ("2", 2.0), ("1500m", 1.5), ("500000u", 0.5)],
)
def test_every_cpu_quantity_form_reads_as_cores(text: str, cores: float) -> None:
    assert cpu_cores(text) == pytest.approx(cores)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("1.2.3", "not a Kubernetes quantity"),
        (".", "not a Kubernetes quantity"),
        ("-1", "not a Kubernetes quantity"),
        ("1KiB", "not a Kubernetes quantity"),
        ("1ki", "not a Kubernetes quantity"),
        ("1mi", "not a Kubernetes quantity"),
        ("\u0661\u0662\u0668Mi", "not a Kubernetes quantity"),  # Arabic-Indic digits
        ("1_000", "not a Kubernetes quantity"),
        ("nan", "not a Kubernetes quantity"),
        ("1e3m", "not a Kubernetes quantity"),  # an exponent and a suffix at once
        ("1e400", "out of range"),
        ("8Ei", "larger than a Kubernetes quantity holds"),
    ],
)
def test_what_the_api_server_would_refuse_is_named_not_a_traceback(text: str, words: str) -> None:
    with pytest.raises(ClusterError, match=words) as caught:
        memory_bytes(text)
    assert caught.value.fix


def test_a_pod_whose_limits_are_written_in_exponent_and_milli_form_is_read(
    fixture_server: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real client: the recorded pod, its limits as a user wrote them in the pod spec."""
    doc: dict[str, Any] = copy.deepcopy(kube_api.recorded_pods())
    pod = next(p for p in doc["items"] if p["metadata"]["name"] == "e2e-statefulset-1")
    (container,) = pod["spec"]["containers"]
    container["resources"]["limits"] = {"cpu": "1500m", "memory": "129e6"}
    monkeypatch.setattr(kube_api, "recorded_pods", lambda: doc)
    kube_api.serve_pods(fixture_server)
    (found,) = Discovery(
        kube_api.api(fixture_server), [ServiceSpec("statefulset", "scraper", "app=statefulset")]
    ).pods()
    assert KubernetesExecutor.cpu_of(found) == pytest.approx(1.5)
    assert KubernetesExecutor.memory_of(found) == 129_000_000
