"""firm.schema.load_yaml, the one YAML reader of every configuration: YAML 1.2's plain numbers and
unique keys, no timestamps, and aliases that cannot expand a small file into a huge value."""

from __future__ import annotations

import pytest
import yaml

from firm.schema import MAX_YAML_VALUES, load_yaml


def test_merge_keys_and_shared_anchors_still_read() -> None:
    text = "base: &b {work_ms: 1, cpus: '0'}\nservices:\n  text: {<<: *b, work_ms: 2}\n  user: *b\n"
    assert load_yaml(text)["services"] == {
        "text": {"work_ms": 2, "cpus": "0"},
        "user": {"work_ms": 1, "cpus": "0"},
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a: 2017-02-28", "2017-02-28"),  # not datetime.date: YAML 1.2 has no timestamps
        ("a: 2017-02-30", "2017-02-30"),  # not a ValueError
        ("a: 2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
        ("a: 1e3", 1000.0),
        ("a: 0x10", 16),
    ],
)
def test_plain_scalars_read_as_yaml_1_2(text: str, value: object) -> None:
    assert load_yaml(text) == {"a": value}


def test_aliases_may_share_up_to_the_bound() -> None:
    width = 300  # 300 x 300 = 90,000 values once expanded: under the bound
    row = "[" + ", ".join(["1"] * width) + "]"
    text = f"row: &r {row}\ntable: [{', '.join(['*r'] * width)}]\n"
    assert len(load_yaml(text)["table"]) == width
    wider = f"row: &r {row}\ntable: [{', '.join(['*r'] * (MAX_YAML_VALUES // width + 1))}]\n"
    with pytest.raises(yaml.YAMLError, match="expand this value to more than 100000 values"):
        load_yaml(wider)


def test_a_value_that_contains_itself_is_refused() -> None:
    with pytest.raises(yaml.YAMLError, match="refers to a value that contains it"):
        load_yaml("a: &x [1, *x]\n")
