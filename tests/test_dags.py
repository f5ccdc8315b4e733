"""The example DAGs in ``dags/`` parse cleanly, have the documented shape, and touch nothing at parse time."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
PROVIDER = "airflow_provider_liangxin"

EXPECTED_TASKS = {
    "liangxin_seedream_single": {"generate_image", "report_image"},
    "liangxin_content_batch": {
        "plan_generations",
        "generate",
        "generate_batch",
        "plan_submissions",
        "submit",
        "wait",
        "save",
        "write_manifest",
    },
}


class ParseTimeAccess(AssertionError):
    """Raised by the guards: something tried the network or a connection while the DAG files were parsed."""


def _forbidden(what: str):
    def guard(*args, **kwargs):
        raise ParseTimeAccess(f"{what} called while parsing the example DAGs: args={args!r}")

    return guard


def _load_dagbag():
    from tests.support.airflow_versions import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER), safe_mode=False)


@pytest.fixture
def guarded_dagbag(monkeypatch, tmp_path):
    """Parse ``dags/`` with sockets and connection look-ups booby-trapped, re-importing the provider too."""
    from airflow.models.connection import Connection
    from airflow.providers.common.compat.sdk import BaseHook

    monkeypatch.setenv("LIANGXIN_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("LIANGXIN_POLL_INTERVAL", "2.5")
    for name in ("connect", "connect_ex", "sendto", "sendall"):
        monkeypatch.setattr(socket.socket, name, _forbidden(f"socket.{name}"))
    monkeypatch.setattr(socket, "create_connection", _forbidden("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", _forbidden("socket.getaddrinfo"))
    monkeypatch.setattr(BaseHook, "get_connection", classmethod(_forbidden("BaseHook.get_connection")))
    monkeypatch.setattr(Connection, "get_connection_from_secrets", classmethod(_forbidden("Connection lookup")))

    # Import the provider afresh under the guards, so its import-time code is checked as well; then put the
    # original modules back so other tests keep one identity per class.
    saved = {name: mod for name, mod in sys.modules.items() if name == PROVIDER or name.startswith(f"{PROVIDER}.")}
    for name in saved:
        del sys.modules[name]
    try:
        yield _load_dagbag()
    finally:
        for name in [n for n in sys.modules if n == PROVIDER or n.startswith(f"{PROVIDER}.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_example_dags_import_without_errors(guarded_dagbag):
    assert guarded_dagbag.import_errors == {}
    assert set(guarded_dagbag.dag_ids) == set(EXPECTED_TASKS)


def test_no_network_or_connection_access_at_parse_time(guarded_dagbag):
    # An access would have raised ParseTimeAccess inside the DAG file and shown up as an import error.
    assert not any("ParseTimeAccess" in str(err) for err in guarded_dagbag.import_errors.values())
    assert guarded_dagbag.size() == len(EXPECTED_TASKS)


def test_guards_would_catch_parse_time_access(monkeypatch, tmp_path):
    """The guard itself works: a DAG file that looks a connection up at parse time becomes an import error."""
    from airflow.providers.common.compat.sdk import BaseHook

    from tests.support.airflow_versions import DagBag

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(_forbidden("BaseHook.get_connection")))
    bad = tmp_path / "bad_dag.py"
    bad.write_text(
        "from airflow.providers.common.compat.sdk import BaseHook\n"
        "from airflow.sdk import dag\n"
        "BaseHook.get_connection('liangxin_default')\n"
        "@dag(dag_id='bad', schedule=None)\n"
        "def bad():\n    pass\n"
        "bad()\n"
    )
    bag = DagBag(dag_folder=str(tmp_path), safe_mode=False)
    assert any("ParseTimeAccess" in err for err in bag.import_errors.values())


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_TASKS))
def test_dag_shape(guarded_dagbag, dag_id):
    dag = guarded_dagbag.dags[dag_id]
    assert dag is not None
    assert {t.task_id for t in dag.tasks} == EXPECTED_TASKS[dag_id]
    assert dag.doc_md
    assert "LiangXin" in dag.doc_md
    assert "liangxin" in dag.tags


def test_seedream_single(guarded_dagbag, tmp_path):
    dag = guarded_dagbag.dags["liangxin_seedream_single"]
    generate = dag.get_task("generate_image")
    assert type(generate).__name__ == "LiangxinCreateTaskOperator"
    assert generate.model == "seedream-v4-5"
    assert generate.deferrable is True
    assert generate.input["prompt"] == "{{ params.prompt }}"
    # Parse-time settings come from the environment (set by the fixture), nothing else.
    assert generate.output_path == str(tmp_path / "out")
    assert generate.poll_interval == 2.5
    assert dag.params["prompt"]
    assert dag.params["aspect_ratio"] == "16:9"
    assert dag.schedule is None
    assert dag.get_task("report_image").upstream_task_ids == {"generate_image"}


def test_content_batch(guarded_dagbag, tmp_path):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = guarded_dagbag.dags["liangxin_content_batch"]
    assert dag.schedule == "@daily"
    assert dag.catchup is False
    assert len(dag.params["prompts"]) == 3
    assert set(dag.params["models"]) >= {"seedream-v4-5", "z-image"}

    generate, submit, wait = (dag.get_task(t) for t in ("generate", "submit", "wait"))
    # Every per-image step fans out with dynamic task mapping.
    for mapped in (generate, submit, wait, dag.get_task("save")):
        assert isinstance(mapped, MappedOperator), mapped.task_id
    assert generate.partial_kwargs["deferrable"] is True
    assert generate.partial_kwargs["output_path"] == str(tmp_path / "out")
    assert submit.partial_kwargs["wait_for_completion"] is False
    assert wait.operator_class.__name__ == "LiangxinTaskSensor"
    assert wait.partial_kwargs["deferrable"] is True
    assert wait.upstream_task_ids == {"submit"}
    # The batch variant: the same planned requests in one task instance.
    batch = dag.get_task("generate_batch")
    assert batch.__class__.__name__ == "LiangxinBatchCreateTaskOperator"
    assert not isinstance(batch, MappedOperator)
    assert batch.upstream_task_ids == {"plan_generations"} == generate.upstream_task_ids
    assert batch.deferrable is True
    assert batch.output_path == str(tmp_path / "out")
    assert dag.get_task("write_manifest").upstream_task_ids == {
        "generate",
        "generate_batch",
        "save",
        "plan_generations",
    }


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_TASKS))
def test_docs_are_markdown_and_every_param_is_described(guarded_dagbag, dag_id):
    """``doc_md`` is rendered as Markdown in the Airflow UI: a Sphinx role would show literally."""
    import re

    dag = guarded_dagbag.dags[dag_id]
    assert not re.search(r":[a-z]+:`", dag.doc_md), "Sphinx role in doc_md"
    for name in dag.params:
        assert dag.params.get_param(name).description, f"trigger-form param {name!r} has no description"


def test_content_batch_mapped_tasks_have_readable_labels(guarded_dagbag):
    import jinja2

    dag = guarded_dagbag.dags["liangxin_content_batch"]
    for task_id in ("generate", "submit", "wait", "save"):
        assert dag.get_task(task_id).map_index_template, f"{task_id} shows bare map indexes"
    prompt = "Isometric illustration of a tiny floating island with a windmill and a waterfall"
    render = jinja2.Environment().from_string
    task = {"model": "z-image", "input": {"prompt": prompt}, "liangxin_task_id": "task_z-image_1"}
    label = render(dag.get_task("generate").map_index_template).render(task=task)
    assert label.startswith("z-image: Isometric illustration of a tiny")
    assert label.endswith("…")
    cut = label.removeprefix("z-image: ").removesuffix("…")
    assert prompt.startswith(cut)
    assert prompt[len(cut)] == " ", f"cut mid-word: {label!r}"
    assert render(dag.get_task("submit").map_index_template).render(task=task).endswith("…")
    assert render(dag.get_task("submit").map_index_template).render(task={"input": {"prompt": "short"}}) == "short"
    assert render(dag.get_task("wait").map_index_template).render(task=task) == "task_z-image_1"
