"""OpenLineage for the LiangXin operators: what a generation ran with, which LiangXin task(s) did it, what it stored.

Pure functions from what an operator has at hand (its rendered ``model``/``input``/``output_path`` and its result
or failure) to an ``OperatorLineage``; the operators' ``get_openlineage_facets_on_*`` methods are thin calls into
them. This module imports the OpenLineage provider at module level, so it is imported only *inside* those methods:
the provider is an optional extra (``airflow-provider-liangxin[openlineage]``) and DAG parsing never loads it.

What is never emitted, by construction: LiangXin's signed, expiring result URLs (stored files are reported by
their storage path only, and a stored entry's ``source_url`` is not read), reference-image URLs and any other
string input field not in :data:`PARAMETER_FIELDS` (they may carry signatures or confidential text), the prompt
text unless the caller opts in (only its SHA-256 and length), and the API key (never part of the inputs here).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import attr
from airflow.providers.common.compat.openlineage.facet import (
    ErrorMessageRunFacet,
    ExternalQueryRunFacet,
    OutputDataset,
    OutputStatisticsOutputDatasetFacet,
    RunFacet,
)
from airflow.providers.openlineage.extractors import OperatorLineage

from airflow_provider_liangxin import HOME_URL
from airflow_provider_liangxin._api import TaskRecord

#: Run facet key of :class:`LiangxinRunFacet` (custom facets are prefixed by their producer's name).
FACET_KEY = "liangxin"
#: ``ExternalQueryRunFacet.source`` when the API host is not known.
DEFAULT_SOURCE = "liangxin"
#: String input fields reported as generation parameters. Numbers and booleans of any field are reported too
#: (they cannot carry a prompt); other strings are not: an unknown model's free-text or URL field could.
PARAMETER_FIELDS = frozenset(
    {
        "aspect_ratio",
        "resolution",
        "image_size",
        "output_format",
        "duration",
        "person_generation",
        "language",
        "shot_type",
        "mode",
        "quality",
        "style",
    }
)
#: A reported string parameter longer than this is left out (an enum value is short; anything longer is text).
MAX_PARAMETER_CHARS = 64
#: Failed batch items named in the errorMessage facet (all of them are in the liangxin facet).
MAX_ERROR_ITEMS = 5
#: Where the schema of :class:`LiangxinRunFacet` is published (it ships in the package, next to this module).
SCHEMA_URL = (
    HOME_URL.replace("github.com", "raw.githubusercontent.com")
    + "/main/airflow_provider_liangxin/LiangxinRunFacet.json#/$defs/LiangxinRunFacet"
)
#: Object stores whose dataset name is the object key (no leading slash), per OpenLineage's naming conventions.
_BUCKET_SCHEMES = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs"}


@attr.define
class LiangxinRunFacet(RunFacet):  # type: ignore[misc]
    """The LiangXin side of a run: model, generation parameters, the prompt's fingerprint, task(s) and outcome.

    One class for both operators: a single task fills the top-level fields; a batch fills ``items`` (one entry per
    input, in input order, with the same fields) and the counts. Schema: ``LiangxinRunFacet.json``.
    """

    model: str | None = attr.field(default=None)
    taskId: str | None = attr.field(default=None)
    state: str | None = attr.field(default=None)
    parameters: dict[str, Any] | None = attr.field(default=None)
    promptSha256: str | None = attr.field(default=None)
    promptLength: int | None = attr.field(default=None)
    prompt: str | None = attr.field(default=None)
    failCode: str | None = attr.field(default=None)
    failMsg: str | None = attr.field(default=None)
    resultCount: int | None = attr.field(default=None)
    storedCount: int | None = attr.field(default=None)
    taskIds: list[str] | None = attr.field(default=None)
    itemCount: int | None = attr.field(default=None)
    succeededCount: int | None = attr.field(default=None)
    failedCount: int | None = attr.field(default=None)
    items: list[dict[str, Any]] | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL


# ------------------------------------------------------------------------------------------------ pieces


def request_fields(model: Any, input: Any, *, include_prompt: bool = False) -> dict[str, Any]:
    """The facet fields describing one request: model, parameters, prompt hash and length (text on opt-in)."""
    fields: dict[str, Any] = {"model": model.strip() if isinstance(model, str) and model.strip() else None}
    data = input if isinstance(input, Mapping) else {}
    parameters = {key: value for key, value in data.items() if isinstance(key, str) and _is_parameter(key, value)}
    fields["parameters"] = dict(sorted(parameters.items()))
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        fields["promptSha256"] = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()
        fields["promptLength"] = len(prompt)
        if include_prompt:
            fields["prompt"] = prompt
    return fields


def _is_parameter(key: str, value: Any) -> bool:
    """Numbers and booleans of any field (seed, width, cfg_scale, flags); strings only of known enum fields."""
    if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return True
    return key in PARAMETER_FIELDS and isinstance(value, str) and len(value) <= MAX_PARAMETER_CHARS


def outcome_fields(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The facet fields of a finished (or failed) task, from its XCom-shaped result; never its URLs."""
    if not result:
        return {}
    fields: dict[str, Any] = {
        "taskId": _text(result.get("task_id")),
        "state": _text(result.get("state")),
    }
    if fields["state"] == "fail" or result.get("fail_code") or result.get("fail_msg"):
        fields["failCode"] = _text(result.get("fail_code"))
        fields["failMsg"] = _text(result.get("fail_msg"))
    urls = result.get("result_urls")
    if isinstance(urls, list | tuple):
        fields["resultCount"] = len(urls)
    stored = result.get("stored")
    if isinstance(stored, list | tuple):
        fields["storedCount"] = len(stored)
    return fields


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def dataset_for_path(path: str) -> tuple[str, str] | None:
    """OpenLineage ``(namespace, name)`` of a stored file, following the dataset naming conventions.

    ``file:///data/a.png`` and ``/data/a.png`` -> ``("file", "/data/a.png")``; ``s3://conn_id@bucket/k/a.png`` ->
    ``("s3", ...)`` as ``("s3://bucket", "k/a.png")`` (an ObjectStoragePath's connection id is not part of the
    dataset); ``gs``/``gcs`` -> ``gs://bucket``; any other fsspec URL -> ``("<scheme>://<host>", "<path>")``.
    None for a path that names nothing (or an http(s) URL: that would be a result URL, never reported).
    """
    if not isinstance(path, str) or not path.strip():
        return None
    if "://" not in path:
        return ("file", path) if path.startswith("/") else None
    parts = urlsplit(path)
    scheme = parts.scheme.lower()
    host = parts.netloc.rpartition("@")[2]  # drop an ObjectStoragePath's conn_id (and any credentials)
    name = unquote(parts.path)
    if scheme in ("http", "https") or (not name.strip("/") and not host):
        return None
    if scheme == "file":
        return ("file", name) if not host or host == "localhost" else (f"file://{host}", name)
    if scheme in _BUCKET_SCHEMES:
        return (f"{_BUCKET_SCHEMES[scheme]}://{host}", name.lstrip("/")) if host and name.strip("/") else None
    return (f"{scheme}://{host}", name or "/")


def stored_outputs(stored: Iterable[Any]) -> list[OutputDataset]:
    """One output dataset per stored file (``stored`` entries are the operator's dicts or plain paths/URIs)."""
    outputs: list[OutputDataset] = []
    seen: set[tuple[str, str]] = set()
    for entry in stored:
        path = entry.get("path") if isinstance(entry, Mapping) else entry
        dataset = dataset_for_path(path) if isinstance(path, str) else None
        if dataset is None or dataset in seen:
            continue
        seen.add(dataset)
        facets: dict[str, Any] = {}
        size = entry.get("bytes") if isinstance(entry, Mapping) else None
        if isinstance(size, int) and not isinstance(size, bool):
            facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(size=size, fileCount=1)
        outputs.append(OutputDataset(namespace=dataset[0], name=dataset[1], outputFacets=facets))
    return outputs


def _fail_text(fields: Mapping[str, Any]) -> str:
    return f"failCode={fields.get('failCode')!r} failMsg={fields.get('failMsg')!r}"


def _facet(fields: Mapping[str, Any]) -> LiangxinRunFacet:
    return LiangxinRunFacet(**{key: value for key, value in fields.items() if value is not None})


def _result_dict(result: Mapping[str, Any] | TaskRecord | None) -> Mapping[str, Any] | None:
    return result.to_dict() if isinstance(result, TaskRecord) else result


# ------------------------------------------------------------------------------------------------ lineage


def task_lineage(
    model: Any,
    input: Any,
    *,
    result: Mapping[str, Any] | TaskRecord | None = None,
    task_id: str | None = None,
    error: str | None = None,
    include_prompt: bool = False,
    source: str = DEFAULT_SOURCE,
) -> OperatorLineage:
    """Lineage of one LiangXin task (LiangxinCreateTaskOperator).

    :param model: the rendered model.
    :param input: the rendered input.
    :param result: the operator's result dict (its XCom ``return_value``: ``task_id``, ``state``, ``fail_code``,
        ``fail_msg``, ``result_urls``, ``stored``), a :class:`TaskRecord`, or for a failure a dict with
        ``task_id``, ``state="fail"``, ``fail_code`` and ``fail_msg``. None at start.
    :param task_id: the LiangXin taskId when there is no result (a failure after createTask).
    :param error: on failure, the errorMessage facet's text; with a result that has a failCode, the text names
        the LiangXin task, failCode and failMsg instead.
    :param include_prompt: put the prompt text in the facet (prompts can be confidential; off by default).
    :param source: ``ExternalQueryRunFacet.source``: ``liangxin://<api host>`` where the operator knows it.
    """
    data = _result_dict(result)
    fields = request_fields(model, input, include_prompt=include_prompt)
    fields.update(outcome_fields(data))
    liangxin_task_id = fields.get("taskId") or _text(task_id)
    fields["taskId"] = liangxin_task_id
    run_facets: dict[str, Any] = {FACET_KEY: _facet(fields)}
    if liangxin_task_id:
        run_facets["externalQuery"] = ExternalQueryRunFacet(externalQueryId=liangxin_task_id, source=source)
    if fields.get("state") == "fail":
        error = f"LiangXin task {liangxin_task_id} failed: {_fail_text(fields)}"
    if error:
        run_facets["errorMessage"] = ErrorMessageRunFacet(message=error, programmingLanguage="python")
    stored = data.get("stored") if data else None
    outputs = stored_outputs(stored) if isinstance(stored, list | tuple) else []
    return OperatorLineage(outputs=outputs, run_facets=run_facets)


def split_batch_input(item: Any, model: Any) -> tuple[Any, Any]:
    """``(model, input)`` of one batch input: a plain input dict uses the operator's model, a ``{"model", "input"}``
    item its own (falling back to the operator's when it names none)."""
    if isinstance(item, Mapping) and isinstance(item.get("input"), Mapping) and set(item) <= {"model", "input"}:
        return item.get("model") or model, item["input"]
    return model, item


def batch_lineage(
    model: Any,
    inputs: Sequence[Any] | None,
    *,
    items: Sequence[Mapping[str, Any]] | None = None,
    error: str | None = None,
    include_prompt: bool = False,
) -> OperatorLineage:
    """Lineage of a batch of LiangXin tasks (LiangxinBatchCreateTaskOperator).

    :param model: the operator's (rendered) default model.
    :param inputs: the rendered inputs: input dicts or ``{"model", "input"}`` items.
    :param items: the result items (the operator's return value: one dict per input, in input order, with
        ``index``, ``task_id``, ``state``, ``result_urls``, ``fail_code``, ``fail_msg``, ``stored``), or the items
        known so far on failure. None at start.
    :param error: on failure, the errorMessage text when no item failed on LiangXin (a timeout, a bad input).
    :param include_prompt: put each prompt's text in the facet (off by default).
    """
    requests = list(inputs or [])
    by_index: dict[int, Mapping[str, Any]] = {}
    for position, item in enumerate(items or []):
        if isinstance(item, Mapping):
            index = item.get("index")
            by_index[index if isinstance(index, int) and not isinstance(index, bool) else position] = item
    entries: list[dict[str, Any]] = []
    stored: list[Any] = []
    for index in range(max(len(requests), max(by_index, default=-1) + 1)):
        item_model, item_input = split_batch_input(requests[index], model) if index < len(requests) else (None, None)
        entry = {"index": index, **request_fields(item_model, item_input, include_prompt=include_prompt)}
        outcome = by_index.get(index)
        entry.update(outcome_fields(outcome))
        if outcome and isinstance(outcome.get("stored"), list | tuple):
            stored.extend(outcome["stored"])
        entries.append({key: value for key, value in entry.items() if value is not None})
    failed = [entry for entry in entries if entry.get("state") == "fail"]
    task_ids = [entry["taskId"] for entry in entries if entry.get("taskId")]
    fields = {
        "model": model.strip() if isinstance(model, str) and model.strip() else None,
        "taskIds": task_ids,
        "itemCount": len(entries),
        "succeededCount": sum(entry.get("state") == "success" for entry in entries) if items is not None else None,
        "failedCount": len(failed) if items is not None else None,
        "storedCount": len(stored) if items is not None else None,
        "items": entries,
    }
    run_facets: dict[str, Any] = {FACET_KEY: _facet(fields)}
    if failed:
        named = "; ".join(
            f"#{entry['index']} {entry.get('taskId')} {_fail_text(entry)}" for entry in failed[:MAX_ERROR_ITEMS]
        )
        more = f"; and {len(failed) - MAX_ERROR_ITEMS} more" if len(failed) > MAX_ERROR_ITEMS else ""
        prefix = f"{error}. " if error else ""
        error = f"{prefix}{len(failed)} of {len(entries)} LiangXin tasks failed: {named}{more}"
    if error:
        run_facets["errorMessage"] = ErrorMessageRunFacet(message=error, programmingLanguage="python")
    return OperatorLineage(outputs=stored_outputs(stored), run_facets=run_facets)


__all__ = [
    "DEFAULT_SOURCE",
    "FACET_KEY",
    "PARAMETER_FIELDS",
    "LiangxinRunFacet",
    "batch_lineage",
    "dataset_for_path",
    "request_fields",
    "split_batch_input",
    "stored_outputs",
    "task_lineage",
]
