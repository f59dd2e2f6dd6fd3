"""The testbed's state file: one versioned record; another version or a corrupt file is refused with the fix."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef
from firm.testbed import config as testbed_config
from firm.testbed import lifecycle
from firm.testbed.state import STATE_VERSION, StateFileError, TestbedState, read, write

SERVER_KEYS = {
    "instances",
    "redis_address",
    "redis_password_file",
    "span_retention",
    "sampling",
    "port",
    "data_dir",
}
"""What an instance's server (firm.testbed.server) reads from the file."""


@pytest.fixture
def config(tmp_path: Path) -> testbed_config.TestbedConfig:
    return dataclasses.replace(
        testbed_config.load(), state_dir=str(tmp_path / "state"), data_dir=str(tmp_path / "d")
    )


def a_state(config: testbed_config.TestbedConfig) -> TestbedState:
    instances = config.instances()
    me = dataclasses.asdict(ProcessRef.of(os.getpid()))
    return TestbedState(
        bridge=config.bridge,
        port=config.port,
        redis_address=instances[0].address,
        frontend="http://198.51.100.3:8080",
        data_dir=config.data_dir,
        instances=tuple(dict(dataclasses.asdict(i), process=me) for i in instances),
        telemetry=me,
        telemetry_redis=config.telemetry_redis,
    )


def test_a_state_round_trips_and_keeps_the_keys_the_servers_read(
    config: testbed_config.TestbedConfig,
) -> None:
    os.makedirs(config.state_dir)
    state = a_state(config)
    lifecycle.write_state(config, state)
    assert lifecycle.read_state(config) == state
    on_disk = json.loads(Path(lifecycle.state_file(config)).read_text())
    assert on_disk["version"] == STATE_VERSION and set(on_disk) >= SERVER_KEYS
    assert [e["name"] for e in on_disk["instances"]] == [i.name for i in config.instances()]
    assert lifecycle.state_instances(state) == config.instances()
    assert lifecycle.is_up(config)


def test_no_file_means_not_up(config: testbed_config.TestbedConfig) -> None:
    assert lifecycle.read_state(config) is None and not lifecycle.is_up(config)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"redis_address": "10.0.0.2"}', r"has version None.*older firm"),
        ("VERSION_PLUS_ONE", r"has version \d+.*newer firm"),
        ("UNKNOWN_FIELD", r"unknown fields \['colour'\]"),
        ("BAD_INSTANCE", "has instances that are not entries"),
    ],
)
def test_another_version_or_a_corrupt_file_is_refused_with_the_fix(
    config: testbed_config.TestbedConfig, content: str, says: str
) -> None:
    os.makedirs(config.state_dir)
    good = a_state(config).to_json()
    content = {
        "VERSION_PLUS_ONE": json.dumps({**good, "version": STATE_VERSION + 1}),
        "UNKNOWN_FIELD": json.dumps({**good, "colour": "blue"}),
        "BAD_INSTANCE": json.dumps({**good, "instances": [{"name": "x"}]}),
    }.get(content, content)
    Path(lifecycle.state_file(config)).write_text(content)
    with pytest.raises(StateFileError, match=says) as raised:
        lifecycle.read_state(config)
    assert isinstance(raised.value, FirmError)
    assert "`firm testbed down`, then `firm testbed up`" in str(raised.value)
    with pytest.raises(StateFileError):
        lifecycle.is_up(config)


def test_write_replaces_the_file_whole(tmp_path: Path, config: testbed_config.TestbedConfig) -> None:
    path = str(tmp_path / "testbed.json")
    state = a_state(config)
    write(path, state)
    write(path, state.with_instances(state.instances[:1], next_index=7))
    again = read(path)
    assert again is not None and len(again.instances) == 1 and again.next_index == 7
    assert not os.path.exists(path + ".tmp")
