"""The task lifecycle as pure arithmetic on absolute epoch milliseconds.

A task's state is never stored: it is derived from its creation time and its three phase lengths whenever it is
asked for. That needs no timer per task (5,000 live tasks cost nothing while nobody polls), and because the
times are absolute a task restored from SQLite after a restart simply continues where the clock says it is.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any, NamedTuple

from airflow_provider_liangxin._api import TaskState

WAITING = TaskState.WAITING.value
QUEUING = TaskState.QUEUING.value
GENERATING = TaskState.GENERATING.value
SUCCESS = TaskState.SUCCESS.value
FAIL = TaskState.FAIL.value

#: Longest phase a task may be given (one year): bounds the epoch-ms arithmetic and the SQLite integers.
MAX_PHASE_SECONDS = 365 * 86400.0


def parse_durations(value: Any) -> tuple[float, float, float]:
    """Accept ``"W,Q,G"`` or a 3-sequence of non-negative seconds; anything else is a configuration error."""
    if isinstance(value, str):
        parts: list[Any] = [p for p in value.replace(" ", "").split(",") if p != ""]
    else:
        try:
            parts = list(value)
        except TypeError:
            raise ValueError(f"durations must be three numbers, got {value!r}") from None
    if len(parts) != 3:
        raise ValueError(f"durations need exactly three values (waiting, queuing, generating), got {value!r}")
    try:
        w, q, g = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"durations must be numbers, got {value!r}") from None
    if not all(math.isfinite(d) and 0 <= d <= MAX_PHASE_SECONDS for d in (w, q, g)):
        # NaN would pass a plain ">= 0" and poison every task's times; "forever" is the [sim:never] marker.
        raise ValueError(f"durations must be finite numbers in [0, {MAX_PHASE_SECONDS:g}] seconds, got {value!r}")
    return (w, q, g)


def phase_lengths_ms(
    durations: tuple[float, float, float], jitter: float, seed: int, task_id: str
) -> tuple[int, int, int]:
    """Phase lengths of one task in ms; with jitter each phase is scaled by a factor seeded by the task id."""
    if jitter <= 0:
        return tuple(round(d * 1000) for d in durations)  # type: ignore[return-value]
    digest = hashlib.sha256(f"{seed}:{task_id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return tuple(round(d * 1000 * rng.uniform(1 - jitter, 1 + jitter)) for d in durations)  # type: ignore[return-value]


class Phase(NamedTuple):
    """Where a task stands at one instant."""

    state: str
    update_ms: int
    #: Set once the task is terminal.
    complete_ms: int | None
    #: 0-99 while generating, None otherwise.
    progress: int | None


def phase_at(created_ms: int, lengths: tuple[int, int, int], never: bool, failed: bool, now_ms: int) -> Phase:
    """The phase of a task ``now_ms``; ``never`` tasks stay generating, ``failed`` ones end in fail."""
    w, q, g = lengths
    elapsed = now_ms - created_ms
    if elapsed < w:
        return Phase(WAITING, created_ms, None, None)
    if elapsed < w + q:
        return Phase(QUEUING, created_ms + w, None, None)
    start = created_ms + w + q
    if never or elapsed < w + q + g:
        progress = int(99 * (now_ms - start) / g) if g > 0 else 0
        return Phase(GENERATING, start, None, min(99, max(0, progress)))
    done = start + g
    return Phase(FAIL if failed else SUCCESS, done, done, None)
