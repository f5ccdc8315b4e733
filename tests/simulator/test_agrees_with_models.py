"""The simulator and the operator's validation never disagree: every table case of tests/test_models.py is sent
to the running simulator over HTTP, and it must answer 400 exactly when ``validate_input`` rejects the input."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from airflow_provider_liangxin.models import InputValidationError, validate_input
from tests.test_models import INVALID, VALID


def _sendable(inp: dict[str, Any]) -> bool:
    """NaN/Infinity cases exist only for the Python API: JSON cannot carry them to the simulator."""
    try:
        json.dumps(inp, allow_nan=False)
    except ValueError:
        return False
    return True


CASES = [(m, i) for m, i in VALID] + [(m, i) for m, i, _field, _fragment in INVALID]
CASES = [(m, i) for m, i in CASES if _sendable(i)]


@pytest.fixture(scope="module")
def client(simulator):
    with httpx.Client(base_url=simulator.base_url, headers={"Authorization": f"Bearer {simulator.api_key}"}) as c:
        yield c


@pytest.mark.parametrize(("model", "inp"), CASES)
def test_simulator_and_provider_agree(client, model: str, inp: dict[str, Any]) -> None:
    try:
        validate_input(model, inp, strict=True)
        expected = None
    except InputValidationError as exc:
        expected = exc.problems
    response = client.post("/api/v1/jobs/createTask", json={"model": model, "input": inp})
    if expected is None:
        assert response.status_code == 200, response.text
        assert response.json()["data"]["taskId"].startswith(f"task_{model}_")
    else:
        assert response.status_code == 400, response.text
        assert response.json() == {"code": 400, "msg": "; ".join(expected), "data": None}
