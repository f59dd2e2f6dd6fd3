"""The testbed takes its state and data directories whole: `up` refuses one that holds files it did not
make, and `down` removes only the directories `up` marked as its own (never ``/var`` or a home
directory a configuration pointed at)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.testbed import config as testbed_config
from firm.testbed import lifecycle


def config_in(state: Path, data: Path) -> testbed_config.TestbedConfig:
    # names no other test uses: `down` looks for namespaces, links and cgroups by them
    return dataclasses.replace(
        testbed_config.TestbedConfig(),
        state_dir=str(state),
        data_dir=str(data),
        subnet="198.18.250.0/24",
        bridge="firmdirt0",
        namespace_prefix="firmdirt-",
        veth_prefix="fdt",
        cgroup_parent="firm-testbed-dirtest",
    )


def test_a_directory_holding_other_files_is_refused_naming_the_setting_and_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "notes.txt").write_text("mine")
    config = config_in(tmp_path / "state", tmp_path / "data")
    with pytest.raises(lifecycle.TestbedError) as raised:
        lifecycle.check_directories(config)
    assert "state_dir" in str(raised.value) and "notes.txt" in str(raised.value)
    assert "new or empty directory" in str(raised.value)
    assert sorted(os.listdir(tmp_path)) == ["state"]  # nothing made, nothing removed


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_file_or_a_symbolic_link_is_refused(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "data"
    if kind == "file":
        target.write_text("")
    else:
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(lifecycle.TestbedError, match=r"data_dir .* is (not a directory|a symbolic link)"):
        lifecycle.check_directories(config_in(tmp_path / "state", target))


def test_missing_empty_and_marked_directories_are_taken(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / lifecycle.OWNER_MARK).write_text("")
    (marked / "state.json").write_text("{}")
    lifecycle.check_directories(config_in(tmp_path / "missing", tmp_path / "empty"))
    lifecycle.check_directories(config_in(marked, tmp_path / "missing" / "data"))


def test_down_removes_marked_and_empty_directories_and_leaves_others_saying_so(tmp_path: Path) -> None:
    marked, foreign = tmp_path / "marked", tmp_path / "foreign"
    (marked / "anomalies").mkdir(parents=True)
    (marked / lifecycle.OWNER_MARK).write_text("")
    (marked / "anomalies" / "history.jsonl").write_text("")
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not firm's")
    said: list[str] = []
    removed = lifecycle.down(config_in(marked, foreign), progress=said.append)
    assert not marked.exists() and str(marked) in removed
    assert (foreign / "keep.txt").read_text() == "not firm's" and str(foreign) not in removed
    assert any(f"left data_dir {foreign}" in line for line in said)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert lifecycle.down(config_in(empty, tmp_path / "missing")) == [str(empty)]
    assert not empty.exists()


def test_down_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / lifecycle.OWNER_MARK).write_text("")
    config = config_in(marked, tmp_path / "data")
    assert lifecycle.down(config) == [str(marked)]
    assert lifecycle.down(config) == []


def settings_with_a_foreign_state_dir(tmp_path: Path) -> Path:
    """A testbed settings file whose state_dir is a directory holding a file of someone else's."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".profile").write_text("keep")
    settings = tmp_path / "testbed.yml"
    settings.write_text(
        f"state_dir: {tmp_path / 'home'}\ndata_dir: {tmp_path / 'data'}\nsubnet: 198.18.250.0/24\n"
        "bridge: firmdirt0\nnamespace_prefix: firmdirt-\nveth_prefix: fdt\ncgroup_parent: firm-testbed-dirtest\n"
    )
    return settings


@pytest.mark.skipif(os.geteuid() != 0, reason="firm testbed up checks for root first")
def test_testbed_up_refuses_a_foreign_state_directory_before_changing_anything(tmp_path: Path) -> None:
    settings = settings_with_a_foreign_state_dir(tmp_path)
    result = CliRunner().invoke(main, ["testbed", "up", "--config", str(settings)])
    assert result.exit_code == 1, result.output
    assert "state_dir" in result.output and ".profile" in result.output and "Traceback" not in result.output
    assert (tmp_path / "home" / ".profile").read_text() == "keep"
    assert not (tmp_path / "data").exists() and not Path("/sys/class/net/firmdirt0").exists()


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("/proc/firm-testbed-dirtest", ["state_dir /proc/firm-testbed-dirtest is in /proc"]),
        ("/sys/fs/firm-testbed-dirtest", ["is in /sys"]),
        ("FILE/sub", ["cannot be made", "is not a directory"]),
    ],
)
def test_a_directory_that_cannot_be_made_is_refused_before_anything(
    tmp_path: Path, state: str, words: list[str]
) -> None:
    (tmp_path / "FILE").write_text("")
    path = state.replace("FILE", str(tmp_path / "FILE"))
    with pytest.raises(lifecycle.TestbedError) as raised:
        lifecycle.check_directories(config_in(Path(path), tmp_path / "data"))
    assert all(word in str(raised.value) for word in words), str(raised.value)
    assert not (tmp_path / "data").exists()


def test_cpus_the_machine_does_not_offer_are_refused_naming_the_setting() -> None:
    offered = sorted(os.sched_getaffinity(0))
    beyond = str(max(offered) + 1)
    services = tuple(
        dataclasses.replace(s, cpus=beyond) if s.name == "text" else s
        for s in testbed_config.TestbedConfig().services
    )
    with pytest.raises(lifecycle.TestbedError) as raised:
        lifecycle.check_cpus(dataclasses.replace(testbed_config.TestbedConfig(), services=services))
    assert f"services.text.cpus is '{beyond}'" in str(raised.value) and "offers CPUs" in str(raised.value)
    redis = dataclasses.replace(testbed_config.TestbedConfig().redis, cpus=beyond)
    with pytest.raises(lifecycle.TestbedError, match=r"redis\.cpus"):
        lifecycle.check_cpus(dataclasses.replace(testbed_config.TestbedConfig(), redis=redis))
    everywhere = tuple(
        dataclasses.replace(s, cpus=str(offered[0])) for s in testbed_config.TestbedConfig().services
    )
    lifecycle.check_cpus(dataclasses.replace(testbed_config.TestbedConfig(), services=everywhere))


@pytest.mark.skipif(os.geteuid() != 0, reason="firm experiment checks for root first")
def test_firm_experiment_refuses_what_testbed_up_would_before_starting(tmp_path: Path) -> None:
    settings = settings_with_a_foreign_state_dir(tmp_path)
    result = CliRunner().invoke(
        main,
        [
            "experiment",
            "--testbed-config",
            str(settings),
            "--policies",
            "static",
            "--anomalies",
            "none",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code in (1, 2), result.output
    assert "state_dir" in result.output and ".profile" in result.output
    assert "bringing the testbed up" not in result.output and "Traceback" not in result.output
    assert result.output.count("Fix:") <= 1
    assert (tmp_path / "home" / ".profile").read_text() == "keep" and not (tmp_path / "data").exists()
