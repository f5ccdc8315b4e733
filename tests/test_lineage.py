"""lineage.py: the OpenLineage facets and datasets of one LiangXin task and of a batch, checked field by field and
against the facets' JSON schemas (the shipped LiangxinRunFacet.json, the spec's for the standard facets)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.serde import Serde

from airflow_provider_liangxin._api import TaskRecord, TaskState
from airflow_provider_liangxin.lineage import (
    FACET_KEY,
    LiangxinRunFacet,
    batch_lineage,
    dataset_for_path,
    request_fields,
    split_batch_input,
    task_lineage,
)
from tests.support.openlineage_schema import FACET_SCHEMA_PATH, validate_event, validate_run_facets

MODEL = "seedream-v4-5"
PROMPT = "a lighthouse on a basalt cliff, confidential campaign 2027"
SIGNED = "https://cdn.liangxin.example/r/abc.png?X-Sig=deadbeef&Expires=99"
REF_URL = "https://cdn.example/ref.png?token=s3cr3t"
INPUT = {"prompt": PROMPT, "aspect_ratio": "16:9", "seed": 42, "image_urls": [REF_URL], "enable_safety_checker": True}


def facets_json(lineage) -> dict:
    return {key: Serde.to_dict(facet) for key, facet in lineage.run_facets.items()}


def outputs_json(lineage) -> list[dict]:
    return [Serde.to_dict(output) for output in lineage.outputs]


def as_event(lineage, state: RunState = RunState.COMPLETE) -> dict:
    """The lineage in a real RunEvent of the OpenLineage client (its attrs validators run), as emitted JSON."""
    event = RunEvent(
        eventType=state,
        eventTime=datetime.now(UTC).isoformat(),
        run=Run(runId=str(uuid4()), facets=lineage.run_facets),
        job=Job(namespace="default", name="liangxin_dag.generate"),
        outputs=lineage.outputs,
        producer="https://github.com/airflow-provider-liangxin/airflow-provider-liangxin",
    )
    return json.loads(Serde.to_json(event))


def success_result(task_id: str = "task_seedream-v4-5_1", stored: list | None = None) -> dict:
    return {
        "task_id": task_id,
        "model": MODEL,
        "state": "success",
        "param": {"model": MODEL, "input": INPUT},
        "result_urls": [SIGNED],
        "fail_code": "",
        "fail_msg": "",
        "stored": stored
        if stored is not None
        else [
            {
                "index": 0,
                "path": f"file:///data/out/{task_id}_0.png",
                "sidecar": f"file:///data/out/{task_id}_0.json",
                "source_url": SIGNED,
                "content_type": "image/png",
                "bytes": 2048,
                "sha256": "0" * 64,
            }
        ],
    }


def assert_nothing_secret(lineage, *secrets: str) -> None:
    text = json.dumps(facets_json(lineage)) + json.dumps(outputs_json(lineage))
    for secret in (SIGNED, "X-Sig", "deadbeef", REF_URL, "s3cr3t", PROMPT, *secrets):
        assert secret not in text, secret


class TestSingleTask:
    def test_start_has_model_parameters_and_prompt_fingerprint_only(self):
        lineage = task_lineage(MODEL, INPUT)
        facets = facets_json(lineage)
        assert set(facets) == {FACET_KEY}
        facet = facets[FACET_KEY]
        assert facet["model"] == MODEL
        assert facet["parameters"] == {"aspect_ratio": "16:9", "seed": 42, "enable_safety_checker": True}
        assert facet["promptSha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()
        assert facet["promptLength"] == len(PROMPT)
        assert "prompt" not in facet
        assert "taskId" not in facet
        assert lineage.outputs == []
        assert_nothing_secret(lineage)
        validate_run_facets(facets)

    def test_success_names_the_task_and_the_stored_files_never_the_result_urls(self):
        lineage = task_lineage(MODEL, INPUT, result=success_result(), source="liangxin://127.0.0.1:8765")
        facets = facets_json(lineage)
        assert set(facets) == {FACET_KEY, "externalQuery"}
        assert facets["externalQuery"]["externalQueryId"] == "task_seedream-v4-5_1"
        assert facets["externalQuery"]["source"] == "liangxin://127.0.0.1:8765"
        facet = facets[FACET_KEY]
        assert facet["taskId"] == "task_seedream-v4-5_1"
        assert facet["state"] == "success"
        assert facet["resultCount"] == 1
        assert facet["storedCount"] == 1
        assert "failCode" not in facet
        [output] = outputs_json(lineage)
        assert (output["namespace"], output["name"]) == ("file", "/data/out/task_seedream-v4-5_1_0.png")
        assert output["outputFacets"]["outputStatistics"]["size"] == 2048
        assert output["outputFacets"]["outputStatistics"]["fileCount"] == 1
        assert_nothing_secret(lineage)
        validate_event(as_event(lineage))

    def test_a_task_record_works_like_its_dict(self):
        record = TaskRecord(task_id="t-9", model=MODEL, state=TaskState.SUCCESS, result_urls=[SIGNED])
        facet = facets_json(task_lineage(MODEL, INPUT, result=record))[FACET_KEY]
        assert (facet["taskId"], facet["state"], facet["resultCount"]) == ("t-9", "success", 1)
        assert "storedCount" not in facet

    def test_failure_carries_fail_code_and_message(self):
        failure = {"task_id": "t-7", "state": "fail", "fail_code": "422", "fail_msg": "upstream refused"}
        lineage = task_lineage(MODEL, INPUT, result=failure)
        facets = facets_json(lineage)
        assert set(facets) == {FACET_KEY, "externalQuery", "errorMessage"}
        assert facets[FACET_KEY]["failCode"] == "422"
        assert facets[FACET_KEY]["failMsg"] == "upstream refused"
        assert facets[FACET_KEY]["state"] == "fail"
        message = facets["errorMessage"]["message"]
        assert "t-7" in message
        assert "422" in message
        assert "upstream refused" in message
        assert facets["errorMessage"]["programmingLanguage"] == "python"
        assert lineage.outputs == []
        validate_event(as_event(lineage, RunState.FAIL))

    def test_failure_after_create_without_a_liangxin_outcome_names_the_task(self):
        lineage = task_lineage(MODEL, INPUT, task_id="t-8", error="Gave up waiting for LiangXin task t-8")
        facets = facets_json(lineage)
        assert facets["externalQuery"]["externalQueryId"] == "t-8"
        assert facets["errorMessage"]["message"] == "Gave up waiting for LiangXin task t-8"
        assert facets[FACET_KEY]["taskId"] == "t-8"
        validate_run_facets(facets)

    def test_prompt_text_only_on_opt_in(self):
        facet = facets_json(task_lineage(MODEL, INPUT, include_prompt=True))[FACET_KEY]
        assert facet["prompt"] == PROMPT
        validate_run_facets({FACET_KEY: facet})

    def test_unknown_string_fields_stay_out_numbers_and_flags_go_in(self):
        fields = request_fields(
            "some-new-model ",
            {"prompt": "x", "caption": "secret words", "style": "a" * 65, "width": 1024, "cfg": 0.5, "mode": "pro"},
        )
        assert fields["model"] == "some-new-model"
        assert fields["parameters"] == {"cfg": 0.5, "mode": "pro", "width": 1024}

    def test_schema_rejects_what_it_should(self):
        """The schema check can fail: an unknown field or a bad hash is refused."""
        import jsonschema

        facet = Serde.to_dict(LiangxinRunFacet(model=MODEL, promptSha256="not-a-hash"))
        with pytest.raises(jsonschema.ValidationError):
            validate_run_facets({FACET_KEY: facet})
        facet = Serde.to_dict(LiangxinRunFacet(model=MODEL))
        facet["resultUrls"] = [SIGNED]
        with pytest.raises(jsonschema.ValidationError):
            validate_run_facets({FACET_KEY: facet})
        facet = Serde.to_dict(LiangxinRunFacet(model=MODEL))
        del facet["_producer"]
        with pytest.raises(jsonschema.ValidationError):
            validate_run_facets({FACET_KEY: facet})

    def test_facet_schema_url_names_the_shipped_schema(self):
        url = Serde.to_dict(LiangxinRunFacet(model=MODEL))["_schemaURL"]
        schema = json.loads(FACET_SCHEMA_PATH.read_text())
        assert url == schema["$id"] + "#/$defs/LiangxinRunFacet"


class TestDatasetNaming:
    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("file:///data/out/a_0.png", ("file", "/data/out/a_0.png")),
            ("file:///data/my%20out/a_0.png", ("file", "/data/my out/a_0.png")),
            ("/data/out/a_0.png", ("file", "/data/out/a_0.png")),
            ("file://nas01/share/a_0.png", ("file://nas01", "/share/a_0.png")),
            ("s3://aws_default@bucket-1/prefix/a_0.png", ("s3://bucket-1", "prefix/a_0.png")),
            ("s3://bucket-1/prefix/a_0.png", ("s3://bucket-1", "prefix/a_0.png")),
            ("gs://google_cloud_default@b/x/a_0.png", ("gs://b", "x/a_0.png")),
            ("gcs://b/x/a_0.png", ("gs://b", "x/a_0.png")),
            ("memory://liangxin/run1/a_0.png", ("memory://liangxin", "/run1/a_0.png")),
            (SIGNED, None),
            ("http://cdn/x.png", None),
            ("relative/a.png", None),
            ("", None),
            ("s3://bucket-only", None),
        ],
    )
    def test_openlineage_naming(self, path, expected):
        assert dataset_for_path(path) == expected


def batch_items() -> list[dict]:
    """Result items exactly as LiangxinBatchCreateTaskOperator returns them (issue 13's interface)."""
    return [
        {
            "index": 0,
            "task_id": "task_seedream-v4-5_a",
            "state": "success",
            "result_urls": [SIGNED],
            "fail_code": "",
            "fail_msg": "",
            "stored": ["file:///data/batch/task_seedream-v4-5_a_0.png"],
        },
        {
            "index": 1,
            "task_id": "task_flux-2-pro_b",
            "state": "fail",
            "result_urls": [],
            "fail_code": "500",
            "fail_msg": "simulated generation failure",
            "stored": [],
        },
        {
            "index": 2,
            "task_id": "task_seedream-v4-5_c",
            "state": "success",
            "result_urls": [SIGNED, SIGNED],
            "fail_code": None,
            "fail_msg": None,
            "stored": [
                "s3://aws_default@bucket/batch/task_seedream-v4-5_c_0.png",
                {"path": "s3://aws_default@bucket/batch/task_seedream-v4-5_c_1.png", "bytes": 7},
            ],
        },
    ]


BATCH_INPUTS = [
    {"prompt": "one", "aspect_ratio": "1:1"},
    {"model": "flux-2-pro", "input": {"prompt": "two", "width": 1024, "image_url": REF_URL}},
    {"input": {"prompt": PROMPT, "seed": 3}},
]


class TestBatch:
    def test_complete_batch_lists_every_item_and_every_stored_file(self):
        lineage = batch_lineage(MODEL, BATCH_INPUTS, items=batch_items())
        facets = facets_json(lineage)
        assert set(facets) == {FACET_KEY, "errorMessage"}
        facet = facets[FACET_KEY]
        assert facet["model"] == MODEL
        assert facet["taskIds"] == ["task_seedream-v4-5_a", "task_flux-2-pro_b", "task_seedream-v4-5_c"]
        assert (facet["itemCount"], facet["succeededCount"], facet["failedCount"], facet["storedCount"]) == (3, 2, 1, 3)
        first, second, third = facet["items"]
        assert first["index"] == 0
        assert first["model"] == MODEL
        assert first["parameters"] == {"aspect_ratio": "1:1"}
        assert first["promptSha256"] == hashlib.sha256(b"one").hexdigest()
        assert second["model"] == "flux-2-pro"
        assert second["parameters"] == {"width": 1024}
        assert second["state"] == "fail"
        assert second["failCode"] == "500"
        assert second["failMsg"] == "simulated generation failure"
        assert third["model"] == MODEL
        assert third["parameters"] == {"seed": 3}
        assert third["storedCount"] == 2
        assert third["resultCount"] == 2
        assert "failCode" not in third
        assert "1 of 3 LiangXin tasks failed" in facets["errorMessage"]["message"]
        assert "task_flux-2-pro_b" in facets["errorMessage"]["message"]
        assert [(o["namespace"], o["name"]) for o in outputs_json(lineage)] == [
            ("file", "/data/batch/task_seedream-v4-5_a_0.png"),
            ("s3://bucket", "batch/task_seedream-v4-5_c_0.png"),
            ("s3://bucket", "batch/task_seedream-v4-5_c_1.png"),
        ]
        assert_nothing_secret(lineage, "aws_default")
        validate_event(as_event(lineage))

    def test_start_knows_the_requests_only(self):
        lineage = batch_lineage(MODEL, BATCH_INPUTS)
        facet = facets_json(lineage)[FACET_KEY]
        assert facet["itemCount"] == 3
        assert facet["taskIds"] == []
        assert "succeededCount" not in facet
        assert "failedCount" not in facet
        assert [item["index"] for item in facet["items"]] == [0, 1, 2]
        assert all("taskId" not in item for item in facet["items"])
        assert lineage.outputs == []
        validate_run_facets(facets_json(lineage))

    def test_all_success_has_no_error_and_items_are_matched_by_index(self):
        items = [item for item in batch_items() if item["state"] == "success"][::-1]  # out of order, one missing
        lineage = batch_lineage(MODEL, BATCH_INPUTS, items=items)
        facet = facets_json(lineage)[FACET_KEY]
        assert "errorMessage" not in facets_json(lineage)
        assert [item.get("taskId") for item in facet["items"]] == ["task_seedream-v4-5_a", None, "task_seedream-v4-5_c"]
        assert facet["succeededCount"] == 2
        assert facet["failedCount"] == 0
        validate_run_facets(facets_json(lineage))

    def test_failure_without_failed_items_uses_the_error(self):
        lineage = batch_lineage(MODEL, BATCH_INPUTS, items=[], error="Gave up waiting")
        assert facets_json(lineage)["errorMessage"]["message"] == "Gave up waiting"

    def test_many_failures_are_summarised(self):
        inputs = [{"prompt": f"p{i}"} for i in range(8)]
        items = [
            {"index": i, "task_id": f"t{i}", "state": "fail", "result_urls": [], "fail_code": "500",
             "fail_msg": "boom", "stored": []}
            for i in range(8)
        ]  # fmt: skip
        lineage = batch_lineage(MODEL, inputs, items=items, error="max_failed exceeded")
        message = facets_json(lineage)["errorMessage"]["message"]
        assert message.startswith("max_failed exceeded. 8 of 8 LiangXin tasks failed: #0 t0")
        assert message.endswith("; and 3 more")
        validate_event(as_event(lineage, RunState.FAIL))

    def test_opt_in_prompts(self):
        facet = facets_json(batch_lineage(MODEL, BATCH_INPUTS, include_prompt=True))[FACET_KEY]
        assert [item["prompt"] for item in facet["items"]] == ["one", "two", PROMPT]

    @pytest.mark.parametrize(
        ("item", "expected"),
        [
            ({"prompt": "x"}, (MODEL, {"prompt": "x"})),
            ({"model": "m2", "input": {"prompt": "x"}}, ("m2", {"prompt": "x"})),
            ({"input": {"prompt": "x"}}, (MODEL, {"prompt": "x"})),
            ({"input": "not a mapping"}, (MODEL, {"input": "not a mapping"})),
        ],
    )
    def test_split_batch_input(self, item, expected):
        assert split_batch_input(item, MODEL) == expected


#: What Airflow itself loads of an installed provider when it lists providers (metadata only).
_PROVIDER_METADATA = {"airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info"}
_PROBE = """
import json, sys
{block}
import airflow.sdk
from airflow_provider_liangxin.operators.liangxin import LiangxinCreateTaskOperator
op = LiangxinCreateTaskOperator(task_id="t", model="seedream-v4-5", input={{"prompt": "x"}})
loaded = sorted(m for m in sys.modules if m.startswith(("openlineage", "airflow.providers.openlineage")))
print(json.dumps(loaded))
"""
# "Absent": the OpenLineage client and every provider module but its metadata fail to import, as they would
# without the package (Airflow's provider discovery, which runs when an operator is built, needs the metadata
# of every provider whose entry point is installed; a real uninstall removes that entry point too).
_BLOCK = f"""
import importlib.abc
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        metadata = {_PROVIDER_METADATA!r}
        if name == "openlineage" or name.startswith(("openlineage.", "airflow.providers.openlineage.")):
            if name not in metadata:
                raise ImportError(f"{{name}} is not installed")
sys.meta_path.insert(0, _Absent())
"""


def _probe(block: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(block=block)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("absent", [False, True], ids=["installed", "absent"])
def test_the_operator_never_imports_openlineage(absent):
    """DAG parsing (import and construct) loads nothing of OpenLineage, and works without it."""
    assert _probe(_BLOCK if absent else "") <= _PROVIDER_METADATA


def test_the_probe_sees_openlineage_when_lineage_is_imported():
    """The probe above cannot pass vacuously: importing lineage.py does load the client and the provider."""
    loaded = _probe("import airflow_provider_liangxin.lineage")
    assert {"airflow.providers.openlineage.extractors", "openlineage.client"} <= loaded


def test_lineage_without_openlineage_fails_with_import_error():
    """Without the provider, lineage.py itself fails to import, which is why only the listener's calls (which
    exist only with the provider) import it."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys\n" + _BLOCK + "\nimport airflow_provider_liangxin.lineage"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "is not installed" in out.stderr
