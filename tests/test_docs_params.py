"""The parameter tables of docs/operators.md match the constructors: every parameter documented, none stale."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from airflow_provider_liangxin.operators.liangxin import LiangxinBatchCreateTaskOperator, LiangxinCreateTaskOperator
from airflow_provider_liangxin.sensors.liangxin import LiangxinTaskSensor
from airflow_provider_liangxin.triggers.liangxin import LiangxinBatchTrigger, LiangxinTaskTrigger

DOC = Path(__file__).resolve().parents[1] / "docs" / "operators.md"


def documented(section: str) -> list[str]:
    """The names in the first column of the section's parameter table, in order."""
    return list(table_rows(section))


def parameters(cls: type) -> list[str]:
    return [
        name
        for name, param in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
    ]


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("LiangxinCreateTaskOperator", LiangxinCreateTaskOperator),
        ("LiangxinTaskSensor", LiangxinTaskSensor),
        ("LiangxinTaskTrigger", LiangxinTaskTrigger),
        ("LiangxinBatchCreateTaskOperator", LiangxinBatchCreateTaskOperator),
        ("LiangxinBatchTrigger", LiangxinBatchTrigger),
    ],
)
def test_parameter_table_matches_the_signature(section, cls):
    rows = documented(section)
    assert set(rows) - set(parameters(cls)) == set(), f"{section}: documented but not accepted"
    assert set(parameters(cls)) - set(rows) == set(), f"{section}: accepted but not documented"


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("LiangxinCreateTaskOperator", LiangxinCreateTaskOperator),
        ("LiangxinTaskSensor", LiangxinTaskSensor),
        ("LiangxinTaskTrigger", LiangxinTaskTrigger),
        ("LiangxinBatchCreateTaskOperator", LiangxinBatchCreateTaskOperator),
        ("LiangxinBatchTrigger", LiangxinBatchTrigger),
    ],
)
def test_documented_literal_defaults_match(section, cls):
    """Where the default column is a Python literal (a number, None, a bool, a string), it is the code's."""
    signature = inspect.signature(cls.__init__).parameters
    checked = 0
    for name, cells in table_rows(section).items():
        match = re.match(r"`([^`]+)`", cells[1].strip())
        if not match:
            continue
        try:
            default = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            continue  # e.g. "[operators] default_deferrable"
        assert default == signature[name].default, f"{section}.{name}: documented {default!r}"
        checked += 1
    assert checked >= 3


def table_rows(section: str) -> dict[str, list[str]]:
    """``name -> [type, default, meaning]`` of the first table under ``## <section>`` whose header starts with
    ``| parameter`` or ``| kwarg`` (other tables, e.g. XCom keys or event statuses, are not parameters)."""
    text = DOC.read_text()
    block = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert block, f"no section {section!r} in {DOC}"
    lines = block.group(1).splitlines()
    header = next((i for i, line in enumerate(lines) if re.match(r"^\| (parameter|kwarg) \|", line)), None)
    assert header is not None, f"no parameter table in section {section!r}"
    rows: dict[str, list[str]] = {}
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        match = re.match(r"^\| `(\w+)` \|(.*)\|$", line)
        assert match, f"{section}: unreadable table row {line!r}"
        assert match.group(1) not in rows, f"{section}: {match.group(1)} is documented twice"
        rows[match.group(1)] = re.split(r"(?<!\\)\|", match.group(2))
    return rows
