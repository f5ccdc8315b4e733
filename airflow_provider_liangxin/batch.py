"""The bookkeeping of a batch of LiangXin generations in one task instance, with no Airflow and no HTTP in it.

:class:`~airflow_provider_liangxin.operators.liangxin.LiangxinBatchCreateTaskOperator` creates up to
``max_in_flight`` LiangXin tasks, defers to one trigger that watches all of them, and is resumed when there is
work (a wave to create, results to store, the end). Between those steps, and across an Airflow retry or a
``kill -9`` of the worker, the only memory is what this module writes: one small JSON-native entry per item,
grouped into chunks of :data:`CHUNK_SIZE` items (one ``task_state_store`` key per chunk, so each write stays far
below Airflow's 64 KB value warning and a resume reads ``n / CHUNK_SIZE`` keys, not ``n``).

An entry (short keys: 1,000 of them are written and read on every resume)::

    {"t": taskId | None, "f": fingerprint, "y": try created in, "n": creations so far,
     "s": "success" | "fail" (absent while in flight), "u": result URLs, "c": fail code, "m": fail message,
     "st": stored files}

Item-retry policy (documented in docs/batch.md): within one Airflow try an item is created at most once. An
item whose taskId is stored is never created again while that task may still succeed: it is polled (in flight,
or timed out earlier) or reused (succeeded). Only an item that *failed in an earlier try* (LiangXin ``fail``, or
a createTask refused with an error) is created again, once per Airflow retry.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_liangxin._api import API_TEXT_MAX_CHARS, cap_text
from airflow_provider_liangxin.models import InputValidationError, validate_input

#: Items per persisted chunk (one task_state_store key each).
CHUNK_SIZE = 50
#: task_state_store key prefix; renaming it breaks resumes of batches deferred by an earlier version.
STATE_PREFIX = "liangxin_batch_"
#: Failure codes the batch itself sets (LiangXin's own are numbers as text).
TIMEOUT_CODE = "timeout"
ERROR_CODE = "error"
#: Event keys of a compact terminal record (what the trigger sends back, and what is persisted).
SUCCESS, FAIL = "success", "fail"


def fingerprint(model: str, input: Mapping[str, Any]) -> str:
    """A short hash of what an item asks for: a stored taskId is reused only for the very same request."""
    canonical = json.dumps({"model": model, "input": input}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def json_problem(value: Any, path: str) -> str | None:
    """The first part of ``value`` that cannot be sent as JSON, named by its path, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path} is not valid text (it holds a lone surrogate character)"
        return None
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} must be a finite number, got {value!r}"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-string key {key!r}"
            problem = json_problem(key, f"{path} key") or json_problem(item, f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    return f"{path} must be JSON data (text, number, bool, null, list or object), got {type(value).__name__}"


@dataclass(frozen=True)
class BatchItem:
    """One validated request of the batch."""

    index: int
    model: str
    input: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.model, self.input)


def _is_wrapped(item: Mapping[str, Any]) -> bool:
    """``{"model": ..., "input": {...}}`` (model optional), as opposed to a bare input dict."""
    return "input" in item and isinstance(item["input"], Mapping) and set(item) <= {"model", "input"}


def normalize_items(
    inputs: Any, default_model: Any, *, validate: bool = True, strict: bool = False
) -> tuple[list[BatchItem], list[str]]:
    """Every item checked before anything is paid for: ``(items, warnings)``, or a ValueError listing *every*
    problem of every item (``item 3: input.prompt ...``), so one run of the DAG shows all there is to fix."""
    if isinstance(inputs, str | bytes | Mapping) or not isinstance(inputs, Sequence):
        raise ValueError(f"inputs must be a list of input dicts or {{model, input}} items, got {type(inputs).__name__}")
    problems: list[str] = []
    warned: dict[str, list[int]] = {}
    items: list[BatchItem] = []
    for index, raw in enumerate(inputs):
        where = f"item {index}"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: must be an input dict or a {{model, input}} dict, got {type(raw).__name__}")
            continue
        model, data = (raw.get("model", default_model), raw["input"]) if _is_wrapped(raw) else (default_model, raw)
        if not isinstance(model, str) or not model.strip():
            problems.append(f"{where}: no model (set the operator's model or the item's 'model'), got {model!r}")
            continue
        model = model.strip()
        problem = json_problem(model, "model") or json_problem(data, "input")
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if validate:
            try:
                for warning in validate_input(model, data, strict=strict):
                    warned.setdefault(warning, []).append(index)
            except InputValidationError as exc:
                problems += [f"{where} ({model}): {p}" for p in exc.problems]
                continue
        items.append(BatchItem(index, model, json.loads(json.dumps(dict(data)))))
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in inputs, nothing was sent:\n  " + "\n  ".join(problems))
    # One line per distinct warning (an unknown model would otherwise repeat it for every item).
    return items, [f"{_indexes(indexes)}: {warning}" for warning, indexes in warned.items()]


def _indexes(indexes: list[int], shown: int = 10) -> str:
    listed = ", ".join(map(str, indexes[:shown]))
    more = f" and {len(indexes) - shown} more" if len(indexes) > shown else ""
    return f"item {listed}" if len(indexes) == 1 else f"items {listed}{more}"


def compact_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the trigger sends back per finished item (a TaskRecord.to_dict() without the echoed param)."""
    return {
        "task_id": record.get("task_id"),
        "state": record.get("state"),
        "result_urls": list(record.get("result_urls") or []),
        "fail_code": cap_text(str(record.get("fail_code") or "")),
        "fail_msg": cap_text(str(record.get("fail_msg") or "")),
        "create_time": record.get("create_time"),
        "complete_time": record.get("complete_time"),
    }


@dataclass
class Entry:
    """The persisted state of one item (see the module docstring for the short keys)."""

    task_id: str | None = None
    fp: str = ""
    try_number: int = 0
    creations: int = 0
    state: str | None = None
    result_urls: list[str] = field(default_factory=list)
    fail_code: str = ""
    fail_msg: str = ""
    stored: list[dict[str, Any]] | None = None
    #: Not persisted: the try's wait ended (timeout, or the task could not be followed) before the task did;
    #: the next try polls it again.
    timed_out: bool = False
    lost_msg: str = ""

    def dump(self) -> dict[str, Any]:
        data: dict[str, Any] = {"t": self.task_id, "f": self.fp, "y": self.try_number, "n": self.creations}
        if self.state:
            data["s"] = self.state
            if self.result_urls:
                data["u"] = self.result_urls
            if self.fail_code or self.fail_msg:
                data["c"], data["m"] = self.fail_code, self.fail_msg[:API_TEXT_MAX_CHARS]
            if self.stored is not None:
                data["st"] = self.stored
        return data

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Entry:
        return cls(
            task_id=data.get("t") or None,
            fp=str(data.get("f") or ""),
            try_number=int(data.get("y") or 0),
            creations=int(data.get("n") or 0),
            state=data.get("s") or None,
            result_urls=list(data.get("u") or []),
            fail_code=str(data.get("c") or ""),
            fail_msg=str(data.get("m") or ""),
            stored=data.get("st"),
        )


class BatchState:
    """Every item's entry, the chunks changed since the last save, and the decisions built on them."""

    def __init__(self, items: Sequence[BatchItem], try_number: int) -> None:
        self.items = list(items)
        self.try_number = try_number
        self.entries: dict[int, Entry] = {}
        self.dirty: set[int] = set()

    # ------------------------------------------------------------------------------------ persistence

    @staticmethod
    def chunk_key(chunk: int) -> str:
        return f"{STATE_PREFIX}{chunk}"

    def chunks(self) -> range:
        return range(math.ceil(len(self.items) / CHUNK_SIZE)) if self.items else range(0)

    def restore(self, chunks: Mapping[int, Any]) -> list[str]:
        """Read persisted chunks; entries made for another request (the item changed) are dropped. Returns notes
        for the log."""
        notes: list[str] = []
        for chunk, data in chunks.items():
            if not isinstance(data, Mapping):
                continue
            for key, raw in data.items():
                try:
                    index = int(key)
                except ValueError:
                    continue
                if not 0 <= index < len(self.items) or not isinstance(raw, Mapping):
                    continue
                entry = Entry.load(raw)
                if entry.fp != self.items[index].fingerprint:
                    if entry.task_id:
                        notes.append(
                            f"item {index}: stored LiangXin task {entry.task_id} was made for a different request "
                            "(the item changed since); it is not reused"
                        )
                    self.dirty.add(chunk)
                    continue
                self.entries[index] = entry
        return notes

    def dump_chunk(self, chunk: int) -> dict[str, Any]:
        start = chunk * CHUNK_SIZE
        return {
            str(i): self.entries[i].dump()
            for i in range(start, min(start + CHUNK_SIZE, len(self.items)))
            if i in self.entries
        }

    def take_dirty(self) -> list[int]:
        dirty, self.dirty = sorted(self.dirty), set()
        return dirty

    def _touch(self, index: int) -> None:
        self.dirty.add(index // CHUNK_SIZE)

    # ---------------------------------------------------------------------------------------- queries

    def start_try(self) -> list[str]:
        """At the start of a try: apply the item-retry policy to what earlier tries left."""
        notes = []
        for index, entry in list(self.entries.items()):
            if entry.state == FAIL and entry.try_number < self.try_number:
                notes.append(
                    f"item {index}: failed in try {entry.try_number} "
                    f"({entry.fail_code or '-'}: {entry.fail_msg or '-'}); it is created again"
                )
                self.entries[index] = Entry(fp=entry.fp, creations=entry.creations)
                self._touch(index)
        return notes

    def pending(self) -> list[int]:
        """Items with nothing created yet, in input order."""
        return [item.index for item in self.items if self._entry_pending(item.index)]

    def _entry_pending(self, index: int) -> bool:
        entry = self.entries.get(index)
        return entry is None or (entry.task_id is None and entry.state is None)

    def in_flight(self) -> dict[int, str]:
        """Items created and not finished (or not known to be): index -> taskId."""
        return {
            index: entry.task_id
            for index, entry in sorted(self.entries.items())
            if entry.task_id and entry.state is None and not entry.timed_out
        }

    def counts(self) -> dict[str, int]:
        success = sum(1 for e in self.entries.values() if e.state == SUCCESS)
        fail = sum(1 for e in self.entries.values() if e.state == FAIL or (e.timed_out and e.state is None))
        return {
            "items": len(self.items),
            "pending": len(self.pending()),
            "running": len(self.in_flight()),
            "success": success,
            "fail": fail,
        }

    # ---------------------------------------------------------------------------------------- changes

    def created(self, index: int, task_id: str) -> None:
        old = self.entries.get(index)
        self.entries[index] = Entry(
            task_id=task_id,
            fp=self.items[index].fingerprint,
            try_number=self.try_number,
            creations=(old.creations if old else 0) + 1,
        )
        self._touch(index)

    def create_failed(self, index: int, code: str, message: str) -> None:
        """createTask was refused (400, 422, ...): the item fails in this try, with no taskId."""
        old = self.entries.get(index)
        self.entries[index] = Entry(
            fp=self.items[index].fingerprint,
            try_number=self.try_number,
            creations=old.creations if old else 0,
            state=FAIL,
            fail_code=code,
            fail_msg=cap_text(message),
        )
        self._touch(index)

    def finished(self, index: int, record: Mapping[str, Any]) -> bool:
        """A terminal record from the trigger or a poll; False when it is not about this item's current task."""
        entry = self.entries.get(index)
        if entry is None or entry.task_id is None or record.get("task_id") != entry.task_id or entry.state:
            return False
        state = record.get("state")
        if state not in (SUCCESS, FAIL):
            return False
        entry.state = state
        entry.timed_out = False
        entry.result_urls = list(record.get("result_urls") or [])
        entry.fail_code = str(record.get("fail_code") or "")
        entry.fail_msg = str(record.get("fail_msg") or "")
        self._touch(index)
        return True

    def lost(self, index: int, task_id: str, message: str, *, final: bool) -> bool:
        """The task cannot be followed in this try: the item fails. ``final`` (LiangXin answered 404: it does
        not know the task) is persisted like a ``fail`` (a later try creates the item again); anything else (a
        401, a malformed answer) is not: the task may be running fine, so a later try polls it again."""
        entry = self.entries.get(index)
        if entry is None or entry.task_id != task_id or entry.state:
            return False
        if final:
            entry.state = FAIL
            entry.fail_code = ERROR_CODE
            entry.fail_msg = cap_text(message)
            self._touch(index)
        else:
            entry.timed_out = True
            entry.lost_msg = cap_text(message)
        return True

    def timed_out(self, indexes: Sequence[int]) -> None:
        """The wait ended first: reported as failed now, polled again (not re-created) by the next try."""
        for index in indexes:
            entry = self.entries.get(index)
            if entry is not None and entry.state is None:
                entry.timed_out = True

    def set_stored(self, index: int, stored: list[dict[str, Any]]) -> None:
        self.entries[index].stored = stored
        self._touch(index)

    # ---------------------------------------------------------------------------------------- results

    def results(self, *, with_stored: bool) -> list[dict[str, Any]]:
        """The ``return_value``: one dict per item, in input order."""
        out = []
        for item in self.items:
            entry = self.entries.get(item.index) or Entry()
            state = entry.state or FAIL
            fail_code, fail_msg = entry.fail_code, entry.fail_msg
            if entry.state is None and entry.lost_msg:
                fail_code, fail_msg = ERROR_CODE, f"{entry.lost_msg}; an Airflow retry polls it again"
            elif entry.state is None:
                fail_code = TIMEOUT_CODE
                fail_msg = (
                    "the wait ended before the LiangXin task did; it may still finish (and be billed); "
                    "an Airflow retry resumes it"
                    if entry.task_id
                    else "never created"
                )
            result: dict[str, Any] = {
                "index": item.index,
                "model": item.model,
                "task_id": entry.task_id,
                "state": state,
                "result_urls": list(entry.result_urls) if state == SUCCESS else [],
                "fail_code": "" if state == SUCCESS else fail_code,
                "fail_msg": "" if state == SUCCESS else fail_msg,
                "creations": entry.creations,
            }
            if with_stored:
                result["stored"] = list(entry.stored or [])
            out.append(result)
        return out


__all__ = [
    "CHUNK_SIZE",
    "ERROR_CODE",
    "STATE_PREFIX",
    "TIMEOUT_CODE",
    "BatchItem",
    "BatchState",
    "Entry",
    "compact_record",
    "fingerprint",
    "json_problem",
    "normalize_items",
]
