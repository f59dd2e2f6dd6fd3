"""docs/control-loop.md's table of settings agrees with controller/firm/loop/config.py: every
setting of every model documented, and each bound the model enforces written in its row."""

from __future__ import annotations

import re
from pathlib import Path

import annotated_types
import pytest
from pydantic import BaseModel

from firm.loop.config import Aimd, FirmDecider, Guard, LoopConfig, Reclaim, ScaleIn

DOC = Path(__file__).resolve().parents[3] / "docs" / "control-loop.md"

NESTED: dict[str, type[BaseModel]] = {
    "guards.<resource>": Guard,
    "reclaim": Reclaim,
    "scale_in": ScaleIn,
    "aimd": Aimd,
    "firm": FirmDecider,
}


def _rows() -> dict[str, str]:
    """Setting -> its "accepted" cell, from the table of the Configuration section."""
    text = DOC.read_text()
    section = text[text.index("## Configuration") :]
    table = section[section.index("| setting |") :].split("\n\n")[0]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        for name in re.findall(r"`([a-z_<>.]+)`", cells[0]):
            rows[name] = cells[-1]
    return rows


ROWS = _rows()


def _number(value: object) -> str:
    assert isinstance(value, (int, float)), value
    return str(int(value)) if float(value).is_integer() else repr(value)


def _bounds_written(cell: str, metadata: list[object]) -> None:
    for bound in metadata:
        if isinstance(bound, annotated_types.Gt):
            assert f"above {_number(bound.gt)}" in cell, cell
        elif isinstance(bound, annotated_types.Lt):
            assert f"below {_number(bound.lt)}" in cell, cell
        elif isinstance(bound, (annotated_types.Ge, annotated_types.Le)):
            value = bound.ge if isinstance(bound, annotated_types.Ge) else bound.le
            assert re.search(rf"\b{re.escape(_number(value))}\b", cell), cell


def test_every_setting_is_documented() -> None:
    assert set(LoopConfig.model_fields) - {"guards", "services"} <= set(ROWS)
    assert {"guards.<resource>", "services.<service>.<resource>"} <= set(ROWS)
    for name, model in NESTED.items():
        cell = ROWS[name]
        for field in model.model_fields:
            assert f"`{field}`" in cell, (name, field)


@pytest.mark.parametrize(
    "name", [n for n in LoopConfig.model_fields if n not in ("guards", "services", *NESTED)]
)
def test_each_bound_of_a_setting_is_in_its_row(name: str) -> None:
    _bounds_written(ROWS[name], list(LoopConfig.model_fields[name].metadata))


@pytest.mark.parametrize(("where", "field"), [(w, f) for w, m in NESTED.items() for f in m.model_fields])
def test_each_bound_of_a_nested_setting_is_in_its_row(where: str, field: str) -> None:
    cell = ROWS[where]
    part = cell[cell.index(f"`{field}`") :]
    _bounds_written(part.split(";")[0], list(NESTED[where].model_fields[field].metadata))
