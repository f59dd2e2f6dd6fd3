"""Property-based tests of the library's entry points: any input ends in a result or a typed error, and
nothing is ever written outside the configured roots.

Inputs are drawn by hypothesis (seeded through its database-free ``derandomize``, so a run is
reproducible): paths with ``..``, absolute paths, symlinks that lead out of the root, NUL bytes,
unicode, huge and negative numbers, odd units. Each example runs against a fresh fake tree
(``cgroup_tree.FakeCgroupRoot``, ``resctrl_tree.FakeResctrl``) with a recorder of every call that
writes (``os.open`` for writing, ``open`` for writing, ``mkdir``, ``rmdir``, ``unlink``, ``rename``,
``replace``, the resctrl kernel calls, and every command tc would run); the properties are

- no exception other than the library's own (``FirmError`` and its subclasses) escapes;
- every write lands inside the fake root (resolved, so a symlink cannot lead out);
- tc commands are argument lists of plain strings that name a valid interface.

The inputs these properties first found crashing (NUL bytes in paths, devices and interface names,
a CPU range of 10**11) are pinned as explicit examples and in ``FOUND_CRASHES``.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.firm.core.plugins.module_utils import anomaly, cgroup, resctrl, sysfs, tc
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.kernel import Kernel
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot, fake_block_devices
from tests.unit.plugins.resctrl_tree import AMD, INTEL, INTEL_CDP, FakeResctrl

PROPERTIES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -------------------------------------------------------------------------------------------------- inputs

ODD_COMPONENTS = (
    "..",
    ".",
    "",
    "svc",
    "escape",
    "escape/..",
    "a b",
    "\x00",
    "x\x00y",
    "é",
    "\u202e",
    "💥",
    "\x01",
    "\x7f",
    "cpu.max",
    "cgroup.procs",
    "tasks",
    "schemata",
    "info",
    "-",
    "\n",
    " ",
    "~",
    "$HOME",
    "*",
)
components = st.one_of(st.sampled_from(ODD_COMPONENTS), st.text(max_size=8))
paths = st.builds(
    lambda parts, lead, trail: lead + "/".join(parts) + trail,
    st.lists(components, max_size=4),
    st.sampled_from(["", "/", "//", "./", "../"]),
    st.sampled_from(["", "/", "/.."]),
)
numbers = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 1, 999, 1000, 4096, 2**31, 2**63 - 1, 2**64]),
)
units = st.sampled_from(
    [
        "",
        "k",
        "K",
        "M",
        "Mi",
        "MiB",
        "g",
        "T",
        "P",
        "kb",
        "kbit",
        "mbit",
        "gbit",
        "kibit",
        "bps",
        "ms",
        "us",
        "s",
        "h",
        "%",
        "e3",
        "E99",
        "e-3",
        ".5",
        "x",
        "\x00",
        "\u0663",
        "\uff2d",
    ]
)
quantities = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.builds(
        lambda n, u, pad: f"{pad}{n}{u}{pad}",
        st.one_of(
            st.integers(min_value=-(10**30), max_value=10**30),
            st.floats(allow_nan=True, allow_infinity=True).map(str),
            st.sampled_from(["", "-", ".", "1e999", "0x10", "1_000", "\u0663"]),
        ),
        units,
        st.sampled_from(["", " ", "\t"]),
    ),
    st.text(max_size=10),
)
cpu_lists = st.one_of(
    st.none(),
    st.sampled_from(
        ["", "0", "0-1", "1-0", "0,,1", "-1", "0-4095", "0-99999999999", "a", "0\x00", "\u0660", " 0 ", "0-"]
    ),
    st.text(alphabet="0123456789-, \x00é", max_size=10),
)
interface_names = st.one_of(
    st.sampled_from(
        [
            "eth0",
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "x" * 15,
            "x" * 16,
            "é" * 8,
            "💥",
            "lo\n",
            "-rf",
            "--help",
            "\x01",
            "\x00",
            "eth\x00",
        ]
    ),
    st.text(max_size=17),
)


# ---------------------------------------------------------------------------------------------- recorder


class WriteRecorder:
    """Records every call that writes to the file system, and the commands tc would run.

    Installed on top of whatever is already patched (the fake kernel's mkdir and rmdir), so the
    fake still behaves as a kernel while every write is seen first.
    """

    def __init__(self, allowed: Sequence[Path]) -> None:
        self.allowed = [os.path.realpath(p) for p in allowed]
        self.writes: list[tuple[str, str]] = []

    def inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == root or real.startswith(root + os.sep) for root in self.allowed)

    def outside(self) -> list[tuple[str, str]]:
        return [(op, path) for op, path in self.writes if not self.inside(path)]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> WriteRecorder:
        def wrap(
            name: str, real: Callable[..., Any], writes: Callable[..., bool] = lambda *a, **k: True
        ) -> Callable[..., Any]:
            def recorded(path: Any, *args: Any, **kwargs: Any) -> Any:
                if writes(path, *args, **kwargs) and isinstance(path, (str, bytes, os.PathLike)):
                    where = os.fsdecode(path)
                    if kwargs.get("dir_fd") is not None:  # shutil.rmtree removes relative to a directory
                        where = os.path.join(os.readlink(f"/proc/self/fd/{kwargs['dir_fd']}"), where)
                    self.writes.append((name, where))
                return real(path, *args, **kwargs)

            return recorded

        def os_open_writes(path: Any, flags: int, *args: Any, **kwargs: Any) -> bool:
            return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))

        def open_writes(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> bool:
            return isinstance(path, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+")

        monkeypatch.setattr(os, "open", wrap("os.open", os.open, os_open_writes))
        monkeypatch.setattr(builtins, "open", wrap("open", builtins.open, open_writes))
        for name in ("mkdir", "rmdir", "unlink", "remove", "makedirs", "symlink"):
            monkeypatch.setattr(os, name, wrap(f"os.{name}", getattr(os, name)))
        for name in ("rename", "replace"):
            real = getattr(os, name)

            def moved(
                src: Any,
                dst: Any,
                *args: Any,
                _real: Callable[..., Any] = real,
                _name: str = name,
                **kwargs: Any,
            ) -> Any:
                self.writes.extend([(f"os.{_name}", os.fsdecode(src)), (f"os.{_name}", os.fsdecode(dst))])
                return _real(src, dst, *args, **kwargs)

            monkeypatch.setattr(os, name, moved)
        return self


def only_typed_errors(action: Callable[[], object]) -> object | None:
    """Run ``action``: its result, or None when it raised one of the library's own errors."""
    try:
        return action()
    except FirmError as error:
        assert str(error), "a FirmError must say what was wrong"
        return None


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh directory per example (hypothesis runs many examples in one test call)."""
    with tempfile.TemporaryDirectory(prefix="firm-properties-") as directory:
        yield Path(directory)


def escape_hatches(directories: Sequence[Path], outside: Path) -> None:
    """A symlink ``escape`` in each directory, leading out of the root."""
    outside.mkdir(exist_ok=True)
    for directory in directories:
        if directory.is_dir() and not (directory / "escape").exists():
            (directory / "escape").symlink_to(outside)


# ----------------------------------------------------------------------------------------------- sysfs


@PROPERTIES
@given(relative=paths)
@example(relative="escape/x").via("a symlink that leads out of the root")
@example(relative="a\x00b").via("a NUL byte")
def test_confined_path_stays_inside_its_root_or_refuses(relative: str) -> None:
    with scratch() as base:
        root = base / "root"
        root.mkdir()
        escape_hatches([root], base / "outside")
        joined = only_typed_errors(lambda: sysfs.confined_path(str(root), relative))
        if joined is not None:
            real = os.path.realpath(str(joined))
            assert real == os.path.realpath(root) or real.startswith(os.path.realpath(root) + os.sep)


# ---------------------------------------------------------------------------------------------- cgroup


cgroup_settings = st.builds(
    cgroup.CgroupSettings,
    cpu_quota_us=numbers,
    cpu_period_us=numbers,
    cpu_weight=numbers,
    cpuset_cpus=cpu_lists,
    cpuset_mems=cpu_lists,
    memory_max=numbers,
    disk=st.lists(
        st.builds(
            cgroup.DiskLimit,
            st.sampled_from(
                [
                    "8:0",
                    "8:1",
                    "0:0",
                    "/dev/null",
                    "../8:0",
                    "8:0\x00",
                    "/dev/sda\x00",
                    "/nonexistent",
                    "",
                    "é",
                    "8:0 ",
                ]
            ),
            numbers,
            numbers,
            numbers,
            numbers,
        ),
        max_size=2,
    ).map(tuple),
)


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
@PROPERTIES
@given(path=paths, wanted=cgroup_settings)
@example(path="escape/svc", wanted=cgroup.CgroupSettings(cpu_quota_us=50000)).via("a symlink out of the root")
@example(path="svc/../../x", wanted=cgroup.CgroupSettings()).via("'..' out of the root")
@example(path="/etc", wanted=cgroup.CgroupSettings(memory_max=4096)).via("an absolute path")
@example(path="a\x00b", wanted=cgroup.CgroupSettings()).via("a NUL byte in the path")
@example(path="svc", wanted=cgroup.CgroupSettings(disk=(cgroup.DiskLimit("/dev/sda\x00", 1),))).via(
    "a NUL in a device"
)
@example(path="svc", wanted=cgroup.CgroupSettings(cpuset_cpus="0-99999999999")).via("a CPU range of 10**11")
@example(path="svc", wanted=cgroup.CgroupSettings(cpu_quota_us=2**70, cpu_period_us=2**70)).via(
    "huge numbers"
)
def test_cgroup_changes_stay_in_the_tree_and_fail_only_with_typed_errors(
    version: int, path: str, wanted: cgroup.CgroupSettings
) -> None:
    with scratch() as base, pytest.MonkeyPatch.context() as patch:
        fake = FakeCgroupRoot(base / "cgroup", version)
        sysfs_root = fake_block_devices(base / "sys")
        escape_hatches(
            [fake.root, *(fake.root / c for c in ("cpu", "cpuset", "memory", "blkio"))], base / "outside"
        )
        recorder = WriteRecorder([fake.root]).install(patch)
        layout = cgroup.detect_layout(str(fake.root))

        def change() -> None:
            group = cgroup.group_at(layout, path)
            cgroup.ensure_cgroup(group, wanted, sysfs_root=str(sysfs_root), kernel=fake)
            cgroup.read_settings(group, wanted)
            cgroup.read_stats(group)
            cgroup.remove_group(group, kernel=fake)

        only_typed_errors(change)
        assert recorder.outside() == []
        assert os.listdir(base / "outside") == []


@PROPERTIES
@given(value=quantities)
def test_cgroup_sizes_parse_or_refuse(value: str | int) -> None:
    parsed = only_typed_errors(lambda: cgroup.parse_size(value))
    assert parsed is None or (isinstance(parsed, int) and parsed >= -1)


@PROPERTIES
@given(text=st.one_of(cpu_lists.filter(lambda t: t is not None), st.text(max_size=12)))
def test_cpu_lists_parse_or_refuse(text: str) -> None:
    parsed = only_typed_errors(lambda: cgroup.parse_list(text))
    assert parsed is None or (isinstance(parsed, list) and all(n >= 0 for n in parsed))


# --------------------------------------------------------------------------------------------- resctrl


group_names = st.one_of(
    st.sampled_from(
        [
            "g",
            "",
            ".",
            "..",
            "/",
            "a/b",
            "escape",
            "info",
            "mon_groups",
            "x" * 256,
            "\x00",
            "a\x00",
            "a\nb",
            "💥",
            "é",
            "../../etc",
        ]
    ),
    st.text(max_size=10),
)
masks = st.one_of(st.none(), quantities, st.dictionaries(st.integers(-2, 5), quantities, max_size=3))


@PROPERTIES
@given(
    platform=st.sampled_from([INTEL, INTEL_CDP, AMD]),
    name=group_names,
    l3=masks,
    mb=masks,
    tasks=st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=3),
)
@example(platform=INTEL, name="escape", l3="f", mb=None, tasks=[]).via("a symlink named like a group")
@example(platform=INTEL, name="../../etc", l3=None, mb=50, tasks=[]).via("'..' in a group name")
@example(platform=AMD, name="g", l3=None, mb=2**70, tasks=[-1]).via("a huge bandwidth and a negative task id")
def test_resctrl_changes_stay_in_the_tree_and_fail_only_with_typed_errors(
    platform: Any, name: str, l3: object, mb: object, tasks: list[int]
) -> None:
    with scratch() as base, pytest.MonkeyPatch.context() as patch:
        fake = FakeResctrl(base / "fake", platform)
        escape_hatches([fake.root_path], base / "outside")
        recorder = WriteRecorder([fake.base]).install(patch)
        info = fake.read_info()

        def change() -> None:
            request = resctrl.build_request(info, l3=l3, mb=mb)
            resctrl.ensure_group(info, name, request, tasks=tuple(tasks), kernel=fake)
            resctrl.ensure_absent(fake.root, name, kernel=fake)

        only_typed_errors(change)
        assert recorder.outside() == []
        assert all(
            not relative.startswith("..") and not os.path.isabs(relative) for _, relative, _ in fake.calls
        )
        assert os.listdir(base / "outside") == []


# -------------------------------------------------------------------------------------------------- tc


class CommandRecorder(Kernel):
    """Stands in for the kernel's tc and ip: records every command and answers like an empty veth."""

    LINK = '[{"ifname": "veth0", "mtu": 1500, "link_type": "ether", "qdisc": "noqueue"}]'

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def run(self, argv: Sequence[str]) -> str:
        command = list(argv)
        self.commands.append(command)
        if "link" in command:
            return self.LINK
        return "[]"


@PROPERTIES
@given(
    interface=interface_names,
    kind=st.sampled_from(["tbf", "htb", "netem", "", "TBF", "htb\x00"]),
    rate=quantities,
    burst=st.one_of(st.none(), quantities),
    latency=st.one_of(st.none(), quantities),
    namespace=st.one_of(st.none(), st.sampled_from(["ns", "", ".", "..", "a/b", "ns\x00", "é"])),
)
@example(interface="eth\x00", kind="tbf", rate="10mbit", burst=None, latency=None, namespace=None).via("NUL")
@example(interface="eth0", kind="tbf", rate="1e999mbit", burst=None, latency=None, namespace=None).via(
    "huge rate"
)
@example(interface="eth0", kind="htb", rate=-5, burst=-1, latency="-3ms", namespace=None).via(
    "negative numbers"
)
def test_tc_shaping_runs_only_well_formed_commands_or_refuses(
    interface: str,
    kind: str,
    rate: str | int,
    burst: str | int | None,
    latency: str | int | None,
    namespace: str | None,
) -> None:
    with scratch() as base:
        netns = base / "netns"
        netns.mkdir()
        (netns / "ns").touch()
        (netns / "é").touch()
        psched = base / "psched"
        psched.write_text("000003e8 00000040 000f4240 3b9aca00\n")
        run = CommandRecorder()

        def change() -> None:
            shaping = tc.shaping_for(
                interface,
                kind,
                rate,
                burst=burst,
                latency=latency,
                namespace=namespace,
                netns_dir=str(netns),
                psched_path=str(psched),
                kernel=run,
            )
            tc.apply_shaping(
                interface, shaping, namespace, netns_dir=str(netns), psched_path=str(psched), kernel=run
            )
            tc.remove_shaping(interface, namespace, netns_dir=str(netns), psched_path=str(psched), kernel=run)

        only_typed_errors(change)
        for command in run.commands:
            assert all(isinstance(arg, str) and "\x00" not in arg for arg in command), command
            assert command[command.index("dev") + 1] == interface
            assert tc.check_interface_name(interface) == interface


@PROPERTIES
@given(value=quantities, parser=st.sampled_from([tc.parse_rate, tc.parse_size, tc.parse_time]))
def test_tc_quantities_parse_into_the_kernels_range_or_refuse(
    value: str | int, parser: Callable[..., int]
) -> None:
    parsed = only_typed_errors(lambda: parser(value))
    assert parsed is None or (isinstance(parsed, int) and 0 < parsed < 2**67)


# --------------------------------------------------------------------------------------------- anomaly


@PROPERTIES
@given(
    name=st.one_of(group_names, st.text(max_size=70)),
    kind=st.sampled_from([*anomaly.KINDS, "", "CPU", "disk"]),
    intensity=st.integers(min_value=-(2**40), max_value=2**40),
    duration=st.integers(min_value=-(2**40), max_value=2**40),
    target=paths,
)
@example(name="../../etc/passwd", kind="cpu", intensity=10, duration=5, target="svc").via("'..' in the name")
@example(name="a", kind="cpu", intensity=10, duration=5, target="escape/x").via(
    "a symlink out of the cgroup root"
)
@example(name="a", kind="llc", intensity=2**40, duration=-1, target="svc").via("huge and negative numbers")
def test_anomaly_requests_are_refused_before_anything_is_written(
    name: str, kind: str, intensity: int, duration: int, target: str
) -> None:
    """Validation and planning write nothing anywhere; a name that passes is a plain file name in the state dir."""
    with scratch() as base, pytest.MonkeyPatch.context() as patch:
        fake = FakeCgroupRoot(base / "cgroup", 1)
        fake.make_group("svc")
        escape_hatches([fake.root / c for c in ("cpu", "cpuset")], base / "outside")
        state = base / "state"
        recorder = WriteRecorder([]).install(patch)
        env = anomaly.Environment(
            state_dir=str(state),
            cgroup_root=str(fake.root),
            sysbench_dir=str(base / "none"),
            tools_facts=str(base / "no-facts.json"),
        )
        spec = anomaly.AnomalySpec(name, kind, intensity, duration, anomaly.Target(cgroup=target))

        def check() -> None:
            anomaly.validate(spec, env)
            anomaly.plan(spec, env)
            stored = os.path.realpath(anomaly.Store(str(state)).path(name))
            assert os.path.dirname(stored) == os.path.realpath(state)

        only_typed_errors(check)
        assert recorder.writes == []


# ------------------------------------------------------------------------------------- found crashes


def _in_tree(action: Callable[[cgroup.Layout, Path], object]) -> Callable[[], object]:
    def run() -> object:
        with scratch() as base:
            fake = FakeCgroupRoot(base / "cgroup", 1)
            return action(cgroup.detect_layout(str(fake.root)), fake_block_devices(base / "sys"))

    return run


FOUND_CRASHES = [
    pytest.param(lambda: sysfs.confined_path("/sys/fs/cgroup", "a\x00b"), id="confined_path-NUL"),
    pytest.param(_in_tree(lambda layout, _: cgroup.group_at(layout, "svc\x00")), id="group_at-NUL"),
    pytest.param(
        _in_tree(lambda _, sys_root: cgroup.resolve_device("/dev/sda\x00", str(sys_root))),
        id="resolve_device-NUL",
    ),
    pytest.param(lambda: cgroup.parse_list("0-99999999999"), id="parse_list-huge-range"),
    pytest.param(lambda: tc.check_interface_name("eth\x00"), id="interface-NUL"),
]
"""Inputs these properties found crashing the library (ValueError from os.path.realpath, os.stat or
subprocess on a NUL byte; a MemoryError expanding a CPU range): each must be a typed error."""


@pytest.mark.parametrize("action", FOUND_CRASHES)
def test_inputs_that_once_crashed_are_typed_errors(action: Callable[[], object]) -> None:
    with pytest.raises(FirmError):
        action()
