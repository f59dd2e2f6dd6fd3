"""The testbed's configuration and social graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from firm.testbed import config, graph


def test_defaults_give_twelve_services_plus_redis_with_distinct_addresses_and_names() -> None:
    instances = config.load().instances()
    assert len(instances) == 13 and instances[0].name == "redis"
    assert len({i.address for i in instances}) == 13
    assert len({i.host_interface for i in instances}) == 13
    assert all(len(i.host_interface) <= 15 for i in instances)  # the kernel's limit for interface names
    assert {i.service for i in instances} >= {
        "frontend",
        "compose-post",
        "post-storage",
        "home-timeline",
        "social-graph",
        "url-shorten",
        "user-mention",
        "text",
    }


def test_a_yaml_file_overrides_services_by_name(tmp_path: Path) -> None:
    path = tmp_path / "testbed.yml"
    path.write_text(
        "services:\n  post-storage: {instances: 2, cpus: '1'}\nslo_ms: {compose: 120}\nrate_rps: 10\n"
    )
    loaded = config.load(path)
    assert [i.name for i in loaded.instances() if i.service == "post-storage"] == [
        "post-storage-0",
        "post-storage-1",
    ]
    assert loaded.service("post-storage").cpus == "1"
    assert loaded.slo_ms["compose-post"] == 120 and loaded.slo_ms["read-home-timeline"] == 120
    assert loaded.rate_rps == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: red\n", "unknown settings colour"),
        ("services:\n  nosuch: {instances: 2}\n", "no service named 'nosuch'"),
        ("services:\n  text: {cores: 2}\n", "services.text: unknown settings cores"),
        ("services:\n  text: {instances: 0}\n", "services.text.instances is 0"),
        ("sampling: 0\n", "sampling is 0"),
        ("slo_ms: {login: 5}\n", "unknown request type 'login'"),
        ("slo_ms: {home: -5}\n", "slo_ms.read-home-timeline is -5"),
        ("- just\n- a list\n", "not a mapping"),
    ],
)
def test_bad_settings_are_named_with_the_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load(path)


def test_the_social_graph_is_seeded_and_heavy_tailed() -> None:
    edges = graph.friendships(962, 20, seed=1)
    assert edges == graph.friendships(962, 20, seed=1)
    assert edges != graph.friendships(962, 20, seed=2)
    assert 18000 <= len(edges) <= 20000  # socfb-Reed98: 18.8K
    assert all(a < b for a, b in edges) and len(set(edges)) == len(edges)
    degree = [0] * 962
    for a, b in edges:
        degree[a] += 1
        degree[b] += 1
    ordered = sorted(degree, reverse=True)
    assert min(degree) >= 20
    assert ordered[0] > 5 * (sum(degree) / len(degree))  # hubs, as in real social networks
