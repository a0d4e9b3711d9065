"""Every rule of the docs' dataType table is enforced from the manifest alone.

The same manifest is cached with its ``jsonSchema`` written in three styles — the sandbox's
(a pattern for every form), the terse one schema generators write (``"format": "uri"``,
``"type": "number"``, no patterns), and none at all (missing, or ``{}``) — plus a hostile one
(a ``$ref`` to the network). Whatever the schema says, the offline check gives the verdict of
the sandbox's validator (``rules.check_data``), value for value, in the server's words.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_sandbox_validation import CASES

from outbox import CheckOutcome, DataInvalid, rules
from outbox.sandbox.manifest import Manifest
from outbox.sandbox.schema import json_schema
from outbox.sandbox.validation import validate_data
from outbox.templates import CachedTemplate
from outbox.validation import Checker

#: One required field of every dataType, as a dotted variable, and the same in a loop.
MANIFEST: dict[str, Any] = {
    "variables": [
        {"key": f"v.{data_type}", "label": data_type, "dataType": data_type, "required": True}
        for data_type in sorted(rules.DATA_TYPES)
    ],
    "loops": [
        {
            "key": "rows",
            "label": "Rows",
            "itemFields": [
                {"key": data_type, "label": data_type, "dataType": data_type}
                for data_type in sorted(rules.DATA_TYPES)
            ],
        }
    ],
}
PARSED = Manifest.from_json(MANIFEST)


def _terse(data_type: str) -> dict[str, Any]:
    """What a generic schema generator writes for a field: its JSON type and a format."""
    if data_type in ("number", "currency"):
        return {"type": "number"}  # numeric strings are coerced all the same
    if data_type == "boolean":
        return {"type": "boolean"}
    if data_type in ("image", "url"):
        return {"type": "string", "format": "uri"}  # no pattern: a data: URI "fits"
    if data_type == "email":
        return {"type": "string", "format": "email"}
    if data_type in ("date", "datetime"):
        return {"type": "string", "format": "date-time"}
    return {"type": "string"}


TERSE: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "v": {
            "type": "object",
            "properties": {t: _terse(t) for t in sorted(rules.DATA_TYPES)},
            "additionalProperties": False,  # a generator's default; Craftkit strips extras
        },
        "rows": {
            "type": "array",
            "items": {"type": "object", "properties": {t: _terse(t) for t in rules.DATA_TYPES}},
        },
    },
}

STYLES: dict[str, dict[str, Any] | None] = {
    "patterns (the sandbox's)": json_schema(PARSED),
    "terse (formats, no patterns)": TERSE,
    "no schema": None,
    "an empty schema": {},
    "a network $ref": {"$ref": "http://127.0.0.1:9/schema.json"},
}


def cached(schema: dict[str, Any] | None) -> CachedTemplate:
    return CachedTemplate(
        slug="every-type",
        name="Every type",
        version=1,
        published=True,
        manifest=MANIFEST,
        json_schema=schema,
        updated_at=None,
        synced_at="2026-06-05T11:00:00.000Z",
    )


def valid_values() -> dict[str, Any]:
    """A valid value for every dataType."""
    chosen: dict[str, Any] = {}
    for data_type, value, ok, _ in CASES:
        if ok:
            chosen.setdefault(data_type, value)
    return chosen


@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize(("data_type", "value", "ok", "outcome"), CASES)
def test_each_rule_of_the_table_whatever_the_schema(
    style: str, data_type: str, value: Any, ok: bool, outcome: Any
) -> None:
    template = cached(STYLES[style])
    checker = Checker()
    base = valid_values()
    data = {"v": {**base, data_type: value}, "rows": [{}, {data_type: value}], "extra": [1]}
    check = checker.check(template, "every-type", data)
    _, server = validate_data(PARSED, data)
    assert check.field_errors == server
    if ok:
        assert check.outcome is CheckOutcome.VALID
    else:
        assert check.field_errors == {f"v.{data_type}": [outcome], f"rows.1.{data_type}": [outcome]}
        with pytest.raises(DataInvalid):
            check.enforce("reject")


@pytest.mark.parametrize("style", list(STYLES))
def test_a_data_uri_never_gets_through(style: str) -> None:
    data = {"v": {**valid_values(), "image": "data:image/png;base64,iVBORw0KGgo="}}
    check = Checker().check(cached(STYLES[style]), "every-type", data)
    assert check.field_errors == {"v.image": ["Invalid url"]}


@pytest.mark.parametrize("style", list(STYLES))
def test_required_fields_come_from_the_manifest(style: str) -> None:
    check = Checker().check(cached(STYLES[style]), "every-type", {"v": {}})
    assert list(check.field_errors) == [f"v.{t}" for t in sorted(rules.DATA_TYPES)]
    assert set(map(tuple, check.field_errors.values())) == {("Required",)}


def test_a_data_type_outbox_does_not_know_takes_any_value() -> None:
    manifest = {"variables": [{"key": "sig", "dataType": "signature", "required": True}]}
    template = CachedTemplate("t", None, 1, True, manifest, None, None, "T")
    assert Checker().check(template, "t", {"sig": {"any": "thing"}}).outcome is (CheckOutcome.VALID)
    assert Checker().check(template, "t", {}).field_errors == {"sig": ["Required"]}
