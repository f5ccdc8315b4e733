"""JSON Schema checks for the lineage tests: the shipped ``LiangxinRunFacet.json`` and the OpenLineage event.

No installed package ships OpenLineage's own spec files (``OpenLineage.json``, ``facets/*.json``: the Python
client ships classes generated from them, the Airflow provider only its own facets' schemas), and the tests run
offline. So the parts of the spec the LiangXin events use are written down here, field for field from the
OpenLineage 2-0-2 spec and the facet versions the client's classes name in their ``_schemaURL`` (ExternalQuery
1-0-2, ErrorMessage 1-0-1, OutputStatistics 1-0-2), and registered under the spec's own URLs, so the shipped
facet schema's ``$ref`` to ``OpenLineage.json#/$defs/RunFacet`` resolves to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

import airflow_provider_liangxin

SPEC_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
FACET_SCHEMA_PATH = Path(airflow_provider_liangxin.__file__).parent / "LiangxinRunFacet.json"

_URI = {"type": "string", "format": "uri"}
_BASE_FACET = {
    "type": "object",
    "properties": {"_producer": _URI, "_schemaURL": _URI},
    "required": ["_producer", "_schemaURL"],
    "additionalProperties": True,
}
_DATASET = {
    "type": "object",
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "facets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/BaseFacet"}},
    },
    "required": ["namespace", "name"],
}
#: The spec's core definitions the events use (RunEvent and what it contains).
OPENLINEAGE_SPEC: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SPEC_URL,
    "$defs": {
        "BaseFacet": _BASE_FACET,
        "RunFacet": {"allOf": [{"$ref": "#/$defs/BaseFacet"}]},
        "Run": {
            "type": "object",
            "properties": {
                "runId": {"type": "string", "format": "uuid"},
                "facets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/RunFacet"}},
            },
            "required": ["runId"],
        },
        "Job": {
            "type": "object",
            "properties": {
                "namespace": {"type": "string"},
                "name": {"type": "string"},
                "facets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/BaseFacet"}},
            },
            "required": ["namespace", "name"],
        },
        "OutputDataset": {
            "allOf": [
                {"$ref": "#/$defs/Dataset"},
                {
                    "type": "object",
                    "properties": {
                        "outputFacets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/BaseFacet"}}
                    },
                },
            ]
        },
        "Dataset": _DATASET,
        "RunEvent": {
            "type": "object",
            "properties": {
                "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
                "eventTime": {"type": "string", "format": "date-time"},
                "producer": _URI,
                "schemaURL": _URI,
                "run": {"$ref": "#/$defs/Run"},
                "job": {"$ref": "#/$defs/Job"},
                "inputs": {"type": "array", "items": {"$ref": "#/$defs/Dataset"}},
                "outputs": {"type": "array", "items": {"$ref": "#/$defs/OutputDataset"}},
            },
            "required": ["eventTime", "producer", "schemaURL", "run", "job"],
        },
    },
    "$ref": "#/$defs/RunEvent",
}


def _facet_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "allOf": [
            {"$ref": f"{SPEC_URL}#/$defs/RunFacet"},
            {"type": "object", "properties": properties, "required": required},
        ]
    }


#: The standard facets the LiangXin lineage uses, by the key they are emitted under.
STANDARD_FACETS: dict[str, dict[str, Any]] = {
    "externalQuery": _facet_schema(
        {"externalQueryId": {"type": "string"}, "source": {"type": "string"}}, ["externalQueryId", "source"]
    ),
    "errorMessage": _facet_schema(
        {"message": {"type": "string"}, "programmingLanguage": {"type": "string"}, "stackTrace": {"type": "string"}},
        ["message", "programmingLanguage"],
    ),
    "outputStatistics": {
        "allOf": [
            {"$ref": f"{SPEC_URL}#/$defs/BaseFacet"},
            {
                "type": "object",
                "properties": {
                    "rowCount": {"type": "integer"},
                    "size": {"type": "integer"},
                    "fileCount": {"type": "integer"},
                },
            },
        ]
    },
}


def _registry() -> tuple[Registry, dict[str, Any]]:
    facet_schema = json.loads(FACET_SCHEMA_PATH.read_text())
    registry = Registry().with_resources(
        [
            (SPEC_URL, Resource.from_contents(OPENLINEAGE_SPEC)),
            (facet_schema["$id"], Resource.from_contents(facet_schema)),
        ]
    )
    return registry, facet_schema


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    registry, _ = _registry()
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator_cls(schema, registry=registry, format_checker=jsonschema.FormatChecker()).validate(instance)


def validate_run_facets(run_facets: dict[str, Any]) -> None:
    """Every run facet against its schema: ``liangxin`` against the shipped file, the others against the spec's."""
    _, facet_schema = _registry()
    for key, facet in run_facets.items():
        if key == "liangxin":
            _validate({"liangxin": facet}, facet_schema)
        elif key in STANDARD_FACETS:
            _validate(facet, STANDARD_FACETS[key])


def validate_event(event: dict[str, Any]) -> None:
    """A whole RunEvent (as emitted, JSON): the event, then each LiangXin-produced facet in detail."""
    _validate(event, OPENLINEAGE_SPEC)
    validate_run_facets(event["run"].get("facets", {}))
    for output in event.get("outputs", []):
        for key, facet in output.get("outputFacets", {}).items():
            if key in STANDARD_FACETS:
                _validate(facet, STANDARD_FACETS[key])
