"""The draft-07 JSON Schema that ``GET /v1/templates/:slug`` returns as ``jsonSchema``.

It describes the same rules as :mod:`outbox.sandbox.validation` (both read
:mod:`outbox.rules`): dotted keys become nested objects, loops become arrays of
objects with ``maxItems``, and unknown keys are allowed because Craftkit strips them rather
than refusing them. The one thing a schema cannot say is that a date such as ``2026-02-30``
does not exist; the server refuses it with "Invalid date".
"""

from __future__ import annotations

from typing import Any

from outbox import rules
from outbox.sandbox.manifest import Manifest, Variable

DRAFT_07: str = "http://json-schema.org/draft-07/schema#"


def value_schema(variable: Variable) -> dict[str, Any]:
    """The schema of one variable's value."""
    data_type = variable.data_type
    schema: dict[str, Any]
    if data_type in ("text", "longtext"):
        schema = {"type": "string"}
    elif data_type in ("number", "currency"):
        schema = {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": rules.NUMERIC_STRING_PATTERN},
            ]
        }
    elif data_type == "date":
        schema = {"type": "string", "pattern": rules.DATE_PATTERN}
    elif data_type == "datetime":
        schema = {"type": "string", "pattern": rules.DATETIME_PATTERN}
    elif data_type == "boolean":
        schema = {
            "anyOf": [
                {"type": "boolean"},
                {"type": "string", "enum": sorted(rules.BOOLEAN_STRINGS)},
            ]
        }
    elif data_type in ("image", "url"):
        schema = {"type": "string", "format": "uri", "pattern": rules.URL_PATTERN}
    elif data_type == "email":
        schema = {"type": "string", "format": "email", "pattern": rules.EMAIL_PATTERN}
    else:  # pragma: no cover - manifests are checked when parsed
        raise ValueError(f"unknown dataType {data_type!r}")
    schema["title"] = variable.label
    return schema


def object_schema(fields: tuple[Variable, ...]) -> dict[str, Any]:
    """An object holding ``fields``, dotted keys nested."""
    root: dict[str, Any] = {"type": "object", "properties": {}}
    for variable in fields:
        node = root
        for part in variable.path[:-1]:
            child = node["properties"].get(part)
            if child is None:
                child = {"type": "object", "properties": {}}
                node["properties"][part] = child
            if variable.required:
                _require(node, part)
            node = child
        node["properties"][variable.path[-1]] = value_schema(variable)
        if variable.required:
            _require(node, variable.path[-1])
    return root


def json_schema(manifest: Manifest) -> dict[str, Any]:
    """The draft-07 schema of the ``data`` object of a render request."""
    schema = object_schema(manifest.variables)
    for loop in manifest.loops:
        schema["properties"][loop.key] = {
            "type": "array",
            "title": loop.label,
            "maxItems": rules.MAX_LOOP_ITEMS,
            "items": object_schema(loop.item_fields),
        }
    return {"$schema": DRAFT_07, **schema}


def _require(node: dict[str, Any], name: str) -> None:
    required: list[str] = node.setdefault("required", [])
    if name not in required:
        required.append(name)
