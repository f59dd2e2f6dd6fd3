"""Node inputs from the field, fourth round, on fake trees that follow the kernel's rules: every form of
a pod UID and container ID the kubelet and the runtimes show, values at the kernel's limits (where its
parsers wrap or read a number as "no limit"), names with control characters, the root group, and the
ground-truth records of campaign_record."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.firm.core.plugins.module_utils import (
    anomaly,
    campaign,
    cgroup,
    redis_auth,
    resctrl,
    tc,
)
from ansible_collections.firm.core.plugins.module_utils.errors import InvalidInputError
from ansible_collections.firm.core.plugins.module_utils.sysfs import confined_path
from ansible_collections.firm.core.plugins.modules import campaign_record
from ansible_collections.firm.core.plugins.modules import cgroup as cgroup_module
from tests.helpers.modules import run_module
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot, fake_block_devices

UID = "6f1c1f4e-1e1b-4c57-9d5b-0b6d3c2d9a10"
UID_UNDERS = UID.replace("-", "_")
STATIC_UID = "a7d3f8e2b1c94d5e8f7a6b5c4d3e2f1a"
CID = "4f2a7c1e9b0d3a6f8e5c2b1a0d9f8e7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"
GOOD = {"name": "c1-r0-node1-0", "host": "node1", "kind": "cpu", "started_at": 1_764_500_000.0}


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> FakeCgroupRoot:
    return FakeCgroupRoot(tmp_path / "cgroup", request.param)


# -- every form of a pod UID, for both drivers --------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "uid"),
    [
        (UID, UID),
        (UID.upper(), UID),
        (UID_UNDERS, UID),  # as the systemd driver writes it in the slice name
        (f"pod{UID}", UID),  # as the cgroupfs driver names the directory
        (f"pod{UID_UNDERS}", UID),
        (f"POD{UID.upper()}", UID),
        (f"{UID[:8]}_{UID[9:]}", UID),  # mixed separators
        (f" {UID}\n", UID),  # a YAML block scalar's newline, a pasted space
        (STATIC_UID, STATIC_UID),
        (STATIC_UID.upper(), STATIC_UID),
        (f"pod{STATIC_UID}", STATIC_UID),
    ],
)
def test_every_uid_form_names_the_same_pod(given: str, uid: str) -> None:
    assert cgroup.normalise_pod_uid(given) == uid
    candidates = cgroup.kubernetes_candidates(given, driver="auto")
    assert f"kubepods/burstable/pod{uid}" in candidates
    assert (
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid.replace('-', '_')}.slice"
        in candidates
    )
    assert all("\n" not in c and " " not in c for c in candidates)


@pytest.mark.parametrize(
    "given",
    [
        f"{UID}\nx",
        f"pod-{UID}",
        f"pod{UID}.slice",
        f"{UID}0",
        f"{UID[:-1]}g",
        "",
        "pod",
        f"{UID}/..",
        "\u0661" * 32,
    ],
)
def test_near_uid_forms_are_refused_naming_the_option(given: str) -> None:
    with pytest.raises(cgroup.CgroupInputError, match=r"pod_uid .* is not a pod UID"):
        cgroup.kubernetes_candidates(given)


# -- every form of a container ID, for each runtime -----------------------------------------------------


@pytest.mark.parametrize(
    ("given", "runtime", "cgroupfs", "systemd"),
    [
        (f"containerd://{CID}", "containerd", CID, f"cri-containerd-{CID}.scope"),
        (f"cri-o://{CID}", "cri-o", f"crio-{CID}", f"crio-{CID}.scope"),
        (f"crio://{CID}", "cri-o", f"crio-{CID}", f"crio-{CID}.scope"),
        (f"docker://{CID}", "docker", CID, f"docker-{CID}.scope"),
        (f"CONTAINERD://{CID.upper()}", "containerd", CID, f"cri-containerd-{CID}.scope"),
        (f"containerd://{CID}\n", "containerd", CID, f"cri-containerd-{CID}.scope"),
        # the container's own cgroup name, as `systemd-cgls` or /proc/PID/cgroup shows it
        (f"cri-containerd-{CID}.scope", "containerd", CID, f"cri-containerd-{CID}.scope"),
        (f"crio-{CID}.scope", "cri-o", f"crio-{CID}", f"crio-{CID}.scope"),
        (f"crio-{CID}", "cri-o", f"crio-{CID}", f"crio-{CID}.scope"),
        (f"docker-{CID}.scope", "docker", CID, f"docker-{CID}.scope"),
    ],
)
def test_every_container_id_form_names_the_same_container(
    given: str, runtime: str, cgroupfs: str, systemd: str
) -> None:
    candidates = cgroup.kubernetes_candidates(UID, given)
    assert f"kubepods/burstable/pod{UID}/{cgroupfs}" in candidates
    assert (
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_UNDERS}.slice/{systemd}"
        in candidates
    )
    assert cgroup._split_container_id(given) == (runtime, CID)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("", "is not a container ID"),  # an empty variable must not silently target the whole pod
        (f"containerd://{CID}/x", "is not a container ID"),
        (f"docker://cri-containerd-{CID}.scope", "is not a container ID"),  # runtimes disagree
        (f"rkt://{CID}", "container runtime 'rkt'"),
        ("containerd://", "is not a container ID"),
    ],
)
def test_bad_container_ids_are_refused(given: str, words: str) -> None:
    with pytest.raises(cgroup.CgroupInputError, match=words):
        cgroup.kubernetes_candidates(UID, given)


def test_a_static_pod_container_is_found_from_its_scope_name(fake: FakeCgroupRoot) -> None:
    path = (
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/"
        f"cri-containerd-{CID}.scope"
    )
    fake.make_group(path)
    layout = cgroup.detect_layout(str(fake.root))
    group = cgroup.group_of_pod(layout, f"pod{STATIC_UID.upper()}", f"cri-containerd-{CID}.scope")
    assert group.paths["cpu"] == path


# -- values at the kernel's limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        # v2 multiplies the quota by 1000 in 64 bits without a check: 2^64/1000+1 us becomes ~0.6 ms
        (cgroup.CgroupSettings(cpu_quota_us=2**64 // 1000 + 1), "above the kernel's largest quota"),
        (cgroup.CgroupSettings(cpu_quota_us=2**44), "above the kernel's largest quota"),
        (cgroup.CgroupSettings(cpu_quota_us=2**63), "above the kernel's largest quota"),
        # memparse wraps at 2^64 (2^64 + 4096 would be a 4 KiB limit); 2^62 and up reads back unlimited
        (cgroup.CgroupSettings(memory_max=2**64 + 4096), "use 'max'"),
        (cgroup.CgroupSettings(memory_max=2**62), "use 'max'"),
        (cgroup.CgroupSettings(memory_max=2**63 - 1), "use 'max'"),
        # v1's throttle parser wraps too, and U64_MAX / UINT_MAX are the kernel's "no limit"
        (cgroup.CgroupSettings(disk=(cgroup.DiskLimit("8:0", write_bps=2**64 - 1),)), "omit write_bps"),
        (cgroup.CgroupSettings(disk=(cgroup.DiskLimit("8:0", read_bps=2**64 + 1),)), "omit read_bps"),
        (cgroup.CgroupSettings(disk=(cgroup.DiskLimit("8:0", read_iops=2**32 - 1),)), "omit read_iops"),
        (cgroup.CgroupSettings(disk=(cgroup.DiskLimit("8:0", write_iops=2**40),)), "omit write_iops"),
    ],
)
def test_values_the_kernel_would_wrap_or_ignore_are_refused(
    settings: cgroup.CgroupSettings, words: str
) -> None:
    with pytest.raises(cgroup.CgroupInputError, match=words):
        cgroup.validate(settings)


@pytest.mark.parametrize(
    "settings",
    [
        cgroup.CgroupSettings(cpu_quota_us=2**31 - 1),
        cgroup.CgroupSettings(cpu_quota_us=2**44 - 1),
        cgroup.CgroupSettings(memory_max=2**62 - 1),
        cgroup.CgroupSettings(memory_max=-1),
        cgroup.CgroupSettings(disk=(cgroup.DiskLimit("8:0", 2**64 - 2, 2**63 - 1, 2**32 - 2, 2**31 - 1),)),
    ],
)
def test_the_largest_values_the_kernel_holds_are_accepted(settings: cgroup.CgroupSettings) -> None:
    cgroup.validate(settings)


def test_a_huge_memory_max_fails_in_the_module_before_anything_is_written(
    fake: FakeCgroupRoot, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {
        "cgroup_root": str(fake.root),
        "sysfs_root": str(fake_block_devices(tmp_path / "sys")),
        "path": "firm/web",
        "memory_max": "18446744073709551616",
    }
    result = run_module(functools.partial(cgroup_module.main, fake), args, capsys=capsys)
    assert result["failed"] is True
    assert "memory_max 18446744073709551616" in result["msg"] and "'max'" in result["msg"]
    assert not fake.group("firm", "memory").exists()


@pytest.mark.parametrize("text", ["\u0661", "0-\u0661", "\u0663,4"])
def test_cpu_lists_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(cgroup.CgroupInputError, match="is not a list like"):
        cgroup.parse_list(text, "cpuset_cpus")


def test_a_device_in_other_digits_is_not_taken_for_maj_min(tmp_path: Path) -> None:
    with pytest.raises(cgroup.CgroupNotFoundError, match="does not exist"):
        cgroup.resolve_device("\u0668:\u0660", str(fake_block_devices(tmp_path / "sys")))


# -- names with control characters, and the root group --------------------------------------------------


@pytest.mark.parametrize("relative", ["svc\n", "firm/web\r", "a\tb", "svc\x7f", "svc\x1b[0m"])
def test_paths_with_control_characters_are_refused(tmp_path: Path, relative: str) -> None:
    with pytest.raises(InvalidInputError, match="control character"):
        confined_path(str(tmp_path), relative, "cgroup path")


def test_unicode_names_are_still_accepted(tmp_path: Path) -> None:
    assert confined_path(str(tmp_path), "é/ü", "cgroup path") == str(tmp_path / "é" / "ü")


@pytest.mark.parametrize("path", ["", ".", "./"])
def test_the_root_group_is_never_changed(
    fake: FakeCgroupRoot, tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    shares = (fake.root / "cpu" / "cpu.shares") if fake.version == 1 else None
    args = {
        "cgroup_root": str(fake.root),
        "sysfs_root": str(fake_block_devices(tmp_path / "sys")),
        "path": path,
        "cpu_weight": 50,
    }
    result = run_module(functools.partial(cgroup_module.main, fake), args, capsys=capsys)
    assert result["failed"] is True
    assert "root cgroup" in result["msg"] and "firm/web" in result["msg"]
    if shares is not None:
        assert shares.read_text().strip() == "1024"


# -- campaign_record: ground truth and Redis URLs -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"entries": [{**GOOD, "kind": "nonsense"}]}, "kind 'nonsense' is not an anomaly kind"),
        ({"entries": [{**GOOD, "kind": "disk"}]}, "give one of cpu,"),
        ({"entries": [{**GOOD, "name": "a\x00b"}]}, "control character"),
        ({"entries": [{**GOOD, "host": "node1\n"}]}, "control character"),
        ({"redis_url": "redis://"}, "names no host"),  # redis-py would take localhost:6379
        ({"redis_url": "redis://127.0.0.1:1/abc"}, "not a database number"),  # redis-py: database 0
        ({"redis_url": "redis://127.0.0.1:1/99999999999999999999"}, "names database 9999"),
        ({"redis_url": "redis://127.0.0.1:1?db=x"}, "names database x"),
        ({"redis_url": "REDIS://localhost"}, "scheme 'REDIS'"),  # redis-py takes only a lower-case scheme
        ({"redis_url": "redis://127.0.0.1:99999"}, "Port out of range"),
        ({"redis_url": "redis://127.0.0.1:abc"}, "is not a Redis URL"),
        ({"redis_url": "redis://127.0.0.1:0"}, "port 0"),
        ({"redis_url": "unix://"}, "names no socket"),
        ({"redis_url": "unix:///run/redis.sock\x00"}, "a space or a control character"),
        ({"redis_url": "redis://127.0.0.1 :1"}, "a space or a control character"),
        ({"redis_url": "http://127.0.0.1:1"}, "scheme 'http'"),
    ],
)
def test_campaign_record_refuses_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: dict[str, Any], words: str
) -> None:
    path = tmp_path / "c1.jsonl"
    full = {
        "campaign": "c1",
        "event": "started",
        "entries": [GOOD],
        "jsonl": str(path),
        "redis_wait": 0,
        **args,
    }
    result = run_module(campaign_record.main, full, capsys=capsys)
    assert result["failed"] is True
    assert words in result["msg"]
    assert not path.exists()


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://user:pw@redis.example:6380/3",
        "redis://[::1]:6379",
        "unix:///run/redis/redis.sock?db=2",
    ],
)
def test_redis_urls_that_work_are_accepted(url: str) -> None:
    assert redis_auth.check_url(url) == url


def test_every_anomaly_kind_is_a_ground_truth_kind() -> None:
    entries = [{**GOOD, "kind": kind} for kind in anomaly.KINDS]
    assert [e["kind"] for e in campaign.validate_entries("started", entries)] == list(anomaly.KINDS)


# -- names that end in a newline ("$" matches before it) -----------------------------------------------


@pytest.mark.parametrize("name", ["web\n", "web-1\n", "c1\n"])
def test_anomaly_names_and_campaign_ids_with_a_final_newline_are_refused(name: str) -> None:
    spec = anomaly.AnomalySpec(name=name, kind="cpu", intensity=50, duration_s=10)
    with pytest.raises(anomaly.AnomalyInputError, match="is not a plain name"):
        anomaly.check_request(spec)
    with pytest.raises(InvalidInputError, match="is not a plain name"):
        campaign.check_id(name)


# -- resctrl numbers and tc limits ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["\u0661\u0660", "\u00b2", "1 0"])
def test_resctrl_decimals_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError):
        resctrl.parse_decimal(text)
    assert resctrl.parse_decimal(" 10 ") == 10


def test_a_rate_beyond_the_kernel_names_the_real_bound() -> None:
    with pytest.raises(tc.TcInputError, match=r"at most 147573952589676412920 bit/s"):
        tc.parse_rate(str(8 * 2**64))
    assert tc.parse_rate("2tbit") == 2 * 10**12  # far above 1tbit, within the kernel's 64-bit rate


@pytest.mark.parametrize("name", ["web\t1", "web\r", "\x1b[31mweb"])
def test_resctrl_group_names_with_control_characters_are_refused(name: str) -> None:
    with pytest.raises(resctrl.ResctrlInputError, match="control character"):
        resctrl.check_group_name(name)
