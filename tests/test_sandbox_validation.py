"""Render data validation: the data-type table, nesting, loops, stripping, and the
``jsonSchema`` agreeing with the validator."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from sandbox_support import client, error_code, field_errors, pdf_text, render, wait_status

from outbox import rules
from outbox.sandbox import Sandbox
from outbox.sandbox.manifest import Manifest, ManifestError
from outbox.sandbox.schema import json_schema
from outbox.sandbox.validation import check_value, validate_data

# (dataType, value, accepted?, coerced value or expected message)
CASES: list[tuple[str, Any, bool, Any]] = [
    ("text", "hello", True, "hello"),
    ("text", "", True, ""),
    ("text", 5, False, "Expected string, received number"),
    ("text", None, False, "Expected string, received null"),
    ("longtext", "a\nb", True, "a\nb"),
    ("longtext", ["a"], False, "Expected string, received array"),
    ("number", 3, True, 3),
    ("number", 2.5, True, 2.5),
    ("number", "12", True, 12),
    ("number", "-0.25", True, -0.25),
    ("number", "1e3", True, 1000),
    ("number", "abc", False, "Expected number, received string"),
    ("number", "", False, "Expected number, received string"),
    ("number", " 1", False, "Expected number, received string"),
    ("number", True, False, "Expected number, received boolean"),
    ("number", {"v": 1}, False, "Expected number, received object"),
    ("currency", "120.50", True, 120.5),
    ("currency", 99.99, True, 99.99),
    ("currency", "12,50", False, "Expected number, received string"),
    ("date", "2026-06-05", True, "2026-06-05"),
    ("date", "2026-06-05T10:00:00Z", True, "2026-06-05T10:00:00Z"),
    ("date", "2026-02-30", False, "Invalid date"),
    ("date", "05/06/2026", False, "Invalid date"),
    ("date", "2026-6-5", False, "Invalid date"),
    ("date", 20260605, False, "Expected string, received number"),
    ("datetime", "2026-06-05T10:00:00.000Z", True, "2026-06-05T10:00:00.000Z"),
    ("datetime", "2026-06-05T10:00:00+02:00", True, "2026-06-05T10:00:00+02:00"),
    ("datetime", "2026-06-05T10:00", True, "2026-06-05T10:00"),
    ("datetime", "2026-06-05", False, "Invalid datetime"),
    ("datetime", "2026-06-05T25:00:00Z", False, "Invalid datetime"),
    ("boolean", True, True, True),
    ("boolean", False, True, False),
    ("boolean", "true", True, True),
    ("boolean", "false", True, False),
    ("boolean", "yes", False, "Expected boolean, received string"),
    ("boolean", 1, False, "Expected boolean, received number"),
    ("image", "https://cdn.example.com/photo.jpg", True, "https://cdn.example.com/photo.jpg"),
    ("image", "http://10.0.0.5:8080/p.png?x=1", True, "http://10.0.0.5:8080/p.png?x=1"),
    ("image", "data:image/png;base64,iVBORw0KGgo=", False, "Invalid url"),
    ("image", "ftp://example.com/p.png", False, "Invalid url"),
    ("image", "https://", False, "Invalid url"),
    ("image", "https://example.com/a b.png", False, "Invalid url"),
    ("url", "https://example.com", True, "https://example.com"),
    ("url", "example.com", False, "Invalid url"),
    ("url", 7, False, "Expected string, received number"),
    ("email", "ada@example.com", True, "ada@example.com"),
    ("email", "first.last+tag@sub.example.co.uk", True, "first.last+tag@sub.example.co.uk"),
    ("email", "ada@example", False, "Invalid email"),
    ("email", "ada.example.com", False, "Invalid email"),
    ("email", "ada..x@example.com", False, "Invalid email"),
    ("email", "", False, "Invalid email"),
    ("email", False, False, "Expected string, received boolean"),
]


@pytest.mark.parametrize(("data_type", "value", "ok", "outcome"), CASES)
def test_data_type_table(data_type: str, value: Any, ok: bool, outcome: Any) -> None:
    coerced, message = check_value(data_type, value)
    if ok:
        assert message is None
        assert coerced == outcome and type(coerced) is type(outcome)
    else:
        assert message == outcome


@pytest.mark.parametrize(("data_type", "value", "ok", "outcome"), CASES)
def test_json_schema_agrees_with_the_validator(
    data_type: str, value: Any, ok: bool, outcome: Any
) -> None:
    manifest = Manifest.from_json(
        {
            "variables": [
                {"key": "group.value", "label": "V", "dataType": data_type, "required": True}
            ]
        }
    )
    schema = json_schema(manifest)
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema, format_checker=None)
    valid = validator.is_valid({"group": {"value": value}})
    if data_type == "date" and value == "2026-02-30":
        assert valid  # a schema cannot know February's length; the server does
    else:
        assert valid is ok


def test_json_schema_structure() -> None:
    manifest = Manifest.from_json(
        {
            "variables": [
                {"key": "customer.name", "label": "Name", "dataType": "text", "required": True},
                {"key": "customer.address.city", "label": "City", "dataType": "text"},
                {"key": "photo", "label": "Photo", "dataType": "image"},
                {"key": "email", "label": "Email", "dataType": "email"},
            ],
            "loops": [
                {
                    "key": "rows",
                    "label": "Rows",
                    "itemFields": [
                        {"key": "n", "label": "N", "dataType": "number", "required": True}
                    ],
                }
            ],
        }
    )
    schema = json_schema(manifest)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["required"] == ["customer"]
    customer = schema["properties"]["customer"]
    assert customer["type"] == "object" and customer["required"] == ["name"]
    assert customer["properties"]["address"]["properties"]["city"]["type"] == "string"
    assert "required" not in customer["properties"]["address"]
    photo = schema["properties"]["photo"]
    assert photo["format"] == "uri" and photo["pattern"] == rules.URL_PATTERN
    assert schema["properties"]["email"]["format"] == "email"
    rows = schema["properties"]["rows"]
    assert rows["type"] == "array" and rows["maxItems"] == rules.MAX_LOOP_ITEMS
    assert rows["items"]["required"] == ["n"]
    assert {"type": "number"} in rows["items"]["properties"]["n"]["anyOf"]
    assert schema.get("additionalProperties", True) is True


def test_loop_errors_are_keyed_by_index(sb: Sandbox) -> None:
    data = {
        "inspector": "A",
        "site": "B",
        "findings": [{"text": "ok", "severity": 1}, {"severity": "high"}, "not an object"],
    }
    with client(sb) as http:
        response = render(http, data=data)
    assert response.status_code == 400 and error_code(response) == "invalid_input_data"
    assert field_errors(response) == {
        "findings.1.text": ["Required"],
        "findings.1.severity": ["Expected number, received string"],
        "findings.2": ["Expected object, received string"],
    }


def test_loop_must_be_an_array_of_at_most_10000(sb: Sandbox) -> None:
    item = {"description": "x", "qty": 1, "price": 1}
    base = {"customer": {"name": "A"}, "amount": 1}
    with client(sb) as http:
        not_array = render(http, "invoice", {**base, "items": {"0": item}})
        too_many = render(http, "invoice", {**base, "items": [item] * 10_001})
        just_enough = render(http, "invoice", {**base, "items": [item] * 10_000})
    assert field_errors(not_array) == {"items": ["Expected array, received object"]}
    assert field_errors(too_many) == {"items": ["Array must contain at most 10000 element(s)"]}
    assert just_enough.status_code == 202


def test_dotted_keys_are_nested_objects(sb: Sandbox) -> None:
    with client(sb) as http:
        flat = render(http, "invoice", {"customer.name": "A", "amount": 1})
        wrong = render(http, "invoice", {"customer": "A", "amount": 1})
        nested = render(http, "invoice", {"customer": {"name": "A"}, "amount": 1})
    assert field_errors(flat) == {"customer.name": ["Required"]}
    assert field_errors(wrong) == {"customer": ["Expected object, received string"]}
    assert nested.status_code == 202


def test_every_problem_is_reported_at_once(sb: Sandbox) -> None:
    data = {"customer": {"email": "nope"}, "amount": "lots", "items": [{"qty": "2"}]}
    with client(sb) as http:
        response = render(http, "invoice", data)
    assert field_errors(response) == {
        "customer.name": ["Required"],
        "customer.email": ["Invalid email"],
        "amount": ["Expected number, received string"],
        "items.0.description": ["Required"],
        "items.0.price": ["Required"],
    }


def test_data_uri_image_is_refused(sb: Sandbox) -> None:
    data = {"inspector": "A", "site": "B", "photo": "data:image/png;base64,AAAA"}
    with client(sb) as http:
        response = render(http, data=data)
    assert response.status_code == 400
    assert field_errors(response) == {"photo": ["Invalid url"]}


def test_unknown_keys_are_stripped_and_values_coerced(sb: Sandbox) -> None:
    data = {
        "inspector": "Ada",
        "site": "Pier",
        "passed": "true",
        "secret": "strip-me",
        "findings": [{"text": "Rust", "severity": "3", "extra": "strip-me-too"}],
    }
    with client(sb) as http:
        created = render(http, data=data)
        assert created.status_code == 202
        done = wait_status(http, created.json()["id"], "succeeded")
        text = pdf_text(http.get(done["downloadUrl"]).content)
    assert "strip-me" not in text
    assert "passed: true" in text
    assert "findings[0].severity: 3" in text


def test_validate_data_returns_cleaned_data() -> None:
    manifest = Manifest.from_json(
        {
            "variables": [
                {"key": "a.b", "label": "B", "dataType": "number", "required": True},
                {"key": "flag", "label": "F", "dataType": "boolean"},
            ],
            "loops": [
                {
                    "key": "rows",
                    "label": "R",
                    "itemFields": [{"key": "x", "label": "X", "dataType": "currency"}],
                }
            ],
        }
    )
    cleaned, errors = validate_data(
        manifest, {"a": {"b": "4", "c": 1}, "flag": "false", "rows": [{"x": "1.5", "y": 2}], "z": 0}
    )
    assert errors == {}
    assert cleaned == {"a": {"b": 4}, "flag": False, "rows": [{"x": 1.5}]}


def test_optional_fields_may_be_absent_but_not_null() -> None:
    manifest = Manifest.from_json(
        {"variables": [{"key": "note", "label": "Note", "dataType": "text", "required": False}]}
    )
    assert validate_data(manifest, {}) == ({}, {})
    assert validate_data(manifest, {"note": None})[1] == {
        "note": ["Expected string, received null"]
    }


@pytest.mark.parametrize(
    ("manifest", "code"),
    [
        (
            {"variables": [{"key": "a", "dataType": "text"}, {"key": "a.b", "dataType": "text"}]},
            "invalid_request",
        ),
        (
            {"variables": [{"key": "a", "dataType": "text"}, {"key": "a", "dataType": "text"}]},
            "invalid_request",
        ),
        ({"variables": [{"key": "a..b", "dataType": "text"}]}, "invalid_request"),
        ({"variables": [{"dataType": "text"}]}, "invalid_request"),
        ({"loops": [{"key": "a.b", "itemFields": []}]}, "invalid_loop_key"),
        (
            {
                "variables": [{"key": "rows", "dataType": "text"}],
                "loops": [{"key": "rows", "itemFields": []}],
            },
            "invalid_request",
        ),
        ([], "invalid_request"),
    ],
)
def test_bad_manifests_are_refused(manifest: object, code: str) -> None:
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(manifest)
    assert caught.value.code == code


def test_messages_are_zod_wordings() -> None:
    assert rules.MSG_REQUIRED == "Required"
    assert rules.expected("number", "x") == "Expected number, received string"
    assert rules.MSG_INVALID_URL == "Invalid url"
    assert rules.MSG_INVALID_EMAIL == "Invalid email"
    assert rules.array_too_big() == "Array must contain at most 10000 element(s)"
    assert json.loads(json.dumps(rules.DATA_TYPES and sorted(rules.DATA_TYPES))) == sorted(
        [
            "text",
            "longtext",
            "number",
            "currency",
            "date",
            "datetime",
            "boolean",
            "image",
            "url",
            "email",
        ]
    )
