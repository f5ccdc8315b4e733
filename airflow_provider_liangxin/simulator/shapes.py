"""The two documented error body shapes, as bytes, plus the answer type the service hands to the routes.

Business shape ``{"code","msg","data":null}`` is the LiangXin task layer (400/404/413/422/500); gateway shape
``{"error":{...}}`` is the new-api gateway in front of it (401/403/429). Keeping them here means one
definition for the service, the ASGI gate and the tests' expectations.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from airflow_provider_liangxin.simulator.state import dumps

JSON_CONTENT_TYPE = "application/json"


def business_error(status: int, msg: str) -> bytes:
    return dumps({"code": status, "msg": msg, "data": None})


def gateway_error(message: str, code: str = "") -> bytes:
    return dumps({"error": {"message": message, "type": "new_api_error", "code": code}})


def request_id() -> str:
    """The suffix new-api appends to gateway messages; clients extract it for support tickets."""
    return f"sim-{uuid.uuid4().hex[:20]}"


INVALID_TOKEN = gateway_error("invalid token")
BODY_TOO_LARGE = business_error(413, "request body too large")
TASK_NOT_FOUND = business_error(404, "task not found")
LOOPBACK_ONLY = business_error(403, "the simulator admin API answers loopback clients only")


@dataclass(frozen=True, slots=True)
class Answer:
    """What a route should do: send ``body`` with ``status`` after ``delay`` s, or drop the connection."""

    status: int
    body: bytes = b""
    headers: dict[str, str] | None = None
    task_id: str | None = None
    delay: float = 0.0
    drop: bool = False


def bad_request(msg: str) -> Answer:
    return Answer(400, business_error(400, msg))
