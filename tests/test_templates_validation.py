"""The offline check speaks like the server: same field keys, same words, same verdicts.

Each case is sent to the sandbox over a real socket and checked offline against the template
cache; the two ``fieldErrors`` must be identical. The cases cover the data-type table, dotted
keys, loops (and their 10,000-item cap), and what a JSON Schema alone cannot say.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_support import INSPECTION, INVOICE
from support import connected
from test_sandbox_validation import CASES

from outbox import CheckOutcome, DataInvalid, InvalidArgument, Outbox, TemplateUnpublished, rules
from outbox.sandbox import Sandbox
from outbox.sandbox.manifest import Manifest
from outbox.sandbox.schema import json_schema
from outbox.sandbox.validation import validate_data
from outbox.templates import CachedTemplate
from outbox.validation import Checker, ManifestCheck, validation_mode

#: A template with one optional field of every dataType, as a dotted variable and in a loop.
EVERY_TYPE = {
    "variables": [
        {"key": f"v.{data_type}", "label": data_type, "dataType": data_type, "required": False}
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


@pytest.fixture(scope="module")
def sandbox_module() -> Iterator[Sandbox]:
    with Sandbox(render_seconds=0.05, seed=3) as sb:
        sb.republish("every-type", EVERY_TYPE)
        yield sb


@pytest.fixture(scope="module")
def synced(sandbox_module: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outbox]:
    """An outbox whose template cache holds every sandbox template."""
    with connected(tmp_path_factory.mktemp("cache") / "j.db", sandbox_module) as ob:
        ob.sync_templates()
        yield ob


@pytest.fixture(scope="module")
def http(sandbox_module: Sandbox) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sandbox_module.api_key}"}
    with httpx.Client(base_url=sandbox_module.base_url, headers=headers, timeout=10) as client:
        yield client


def server_says(http: httpx.Client, slug: str, data: Any) -> dict[str, list[str]]:
    """The server's ``fieldErrors`` for ``data`` (empty when it accepts the render)."""
    response = http.post(f"/v1/templates/{slug}/render", json={"data": data})
    if response.status_code == 202:
        return {}
    assert response.status_code == 400, response.text
    body = response.json()["error"]
    assert body["code"] == "invalid_input_data"
    errors: dict[str, list[str]] = body["issues"]["fieldErrors"]
    return errors


def agree(http: httpx.Client, ob: Outbox, slug: str, data: Any) -> dict[str, list[str]]:
    """Check ``data`` offline and online; they must say the same. Returns what they say."""
    local = ob.check(slug, data)
    server = server_says(http, slug, data)
    assert local.field_errors == server, (slug, data)
    assert local.outcome is (CheckOutcome.INVALID if server else CheckOutcome.VALID)
    return server


@pytest.mark.parametrize(("data_type", "value", "ok", "outcome"), CASES)
def test_every_data_type_as_the_server_words_it(
    http: httpx.Client, synced: Outbox, data_type: str, value: Any, ok: bool, outcome: Any
) -> None:
    nested = agree(http, synced, "every-type", {"v": {data_type: value}})
    in_loop = agree(http, synced, "every-type", {"rows": [{}, {data_type: value}]})
    if ok:
        assert nested == in_loop == {}
    else:
        assert nested == {f"v.{data_type}": [outcome]}
        assert in_loop == {f"rows.1.{data_type}": [outcome]}


STRUCTURE: list[tuple[str, str, Any]] = [
    ("valid invoice", "invoice", INVOICE),
    ("valid inspection", "inspection-report", INSPECTION),
    ("nothing at all", "invoice", {}),
    ("dotted key missing", "invoice", {"customer": {}, "amount": 1}),
    ("parent is null", "invoice", {"customer": None, "amount": 1}),
    ("parent is a string", "invoice", {"customer": "Grace", "amount": 1}),
    ("parent is an array", "invoice", {"customer": ["Grace"], "amount": 1}),
    ("unknown keys are stripped", "invoice", {**INVOICE, "notes": 1, "customer": {"name": "G", "x": 2}}),
    ("loop is not an array", "invoice", {**INVOICE, "items": {"qty": 1}}),
    ("loop is null", "invoice", {**INVOICE, "items": None}),
    ("loop item is not an object", "invoice", {**INVOICE, "items": [1, "two", None]}),
    ("loop item misses fields", "invoice", {**INVOICE, "items": [{}, {"qty": "2"}]}),
    ("loop errors keep their index", "inspection-report", {
        **INSPECTION, "findings": [{"text": "ok"}] * 3 + [{"text": 4, "severity": "high"}]}),
    ("empty loop", "inspection-report", {**INSPECTION, "findings": []}),
    ("data: URI image", "inspection-report", {**INSPECTION, "photo": "data:image/png;base64,AA=="}),
    ("URL with a trailing newline", "inspection-report", {**INSPECTION, "photo": "https://x.io/p.png\n"}),
    ("date with a trailing newline", "inspection-report", {**INSPECTION, "date": "2026-06-05\n"}),
    ("no such day", "inspection-report", {**INSPECTION, "date": "2026-02-30"}),
    ("number too large", "inspection-report", {**INSPECTION, "findings": [{"text": "a", "severity": "1e999"}]}),
    ("coerced strings pass", "inspection-report", {**INSPECTION, "passed": "false", "findings": [{"text": "a", "severity": "3"}]}),
    ("boolean word", "inspection-report", {**INSPECTION, "passed": "yes"}),
    ("email without a domain", "invoice", {**INVOICE, "customer": {"name": "G", "email": "grace@"}}),
    ("currency with a comma", "invoice", {**INVOICE, "amount": "120,50"}),
    ("every problem at once", "invoice", {"customer": {"email": 5}, "amount": True, "items": [{"price": []}]}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("slug", "data"), [c[1:] for c in STRUCTURE], ids=[c[0] for c in STRUCTURE]
)
def test_structure_as_the_server_reports_it(
    http: httpx.Client, synced: Outbox, slug: str, data: Any
) -> None:
    agree(http, synced, slug, data)


def test_the_examples_of_the_docs(http: httpx.Client, synced: Outbox) -> None:
    """Spot checks that the shared answers are the documented ones, not just equal."""
    assert agree(http, synced, "invoice", {"amount": 1}) == {"customer.name": ["Required"]}
    assert agree(http, synced, "invoice", {"customer": "Grace", "amount": 1}) == {
        "customer": ["Expected object, received string"]
    }
    assert agree(
        http, synced, "inspection-report", {**INSPECTION, "findings": [{"severity": "x"}]}
    ) == {
        "findings.0.text": ["Required"],
        "findings.0.severity": ["Expected number, received string"],
    }


def test_loops_are_capped_at_10000_items(http: httpx.Client, synced: Outbox) -> None:
    item = {"description": "Bolt", "qty": 1, "price": 0.5}
    full = {**INVOICE, "items": [item] * rules.MAX_LOOP_ITEMS}
    assert agree(http, synced, "invoice", full) == {}
    # One more is refused as a whole; the items of a refused loop are not looked into.
    over = {**INVOICE, "items": [{"qty": "bad"}] * (rules.MAX_LOOP_ITEMS + 1)}
    assert agree(http, synced, "invoice", over) == {
        "items": ["Array must contain at most 10000 element(s)"]
    }


# -- the same, for random data -------------------------------------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(
        [
            "",
            "12",
            "1e3",
            "1e999",
            "abc",
            "true",
            "2026-06-05",
            "2026-02-30",
            "ada@example.com",
            "https://example.com/p.png",
            "data:image/png;base64,AA==",
            "x\n",
        ]
    ),
    st.lists(st.integers(0, 2), max_size=2),
)
_objects = st.dictionaries(
    st.sampled_from(["name", "email", "description", "qty", "price", "other"]), _values, max_size=4
)
_invoice_data = st.fixed_dictionaries(
    {},
    optional={
        "customer": st.one_of(_values, _objects),
        "amount": _values,
        "items": st.one_of(_values, st.lists(st.one_of(_objects, _values), max_size=3)),
    },
)


INVOICE_MANIFEST = Manifest.from_json(
    {
        "variables": [
            {"key": "customer.name", "label": "N", "dataType": "text", "required": True},
            {"key": "customer.email", "label": "E", "dataType": "email"},
            {"key": "amount", "label": "A", "dataType": "currency", "required": True},
        ],
        "loops": [
            {
                "key": "items",
                "label": "I",
                "itemFields": [
                    {"key": "description", "label": "D", "dataType": "text", "required": True},
                    {"key": "qty", "label": "Q", "dataType": "number", "required": True},
                    {"key": "price", "label": "P", "dataType": "currency"},
                ],
            }
        ],
    }
)
#: The offline check built from what the sandbox publishes for that manifest.
INVOICE_CHECK = ManifestCheck(INVOICE_MANIFEST.to_json())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_invoice_data)
def test_random_data_gets_the_servers_verdict(data: dict[str, Any]) -> None:
    """The server's validator (in process) and the offline check agree on any data."""
    _, server = validate_data(INVOICE_MANIFEST, data)
    assert INVOICE_CHECK.errors(data) == server


# -- what the result means -----------------------------------------------------------------


def cached(**changes: Any) -> CachedTemplate:
    """The invoice template as a cache record, with ``changes``."""
    body = {
        "slug": "invoice",
        "name": "Invoice",
        "currentVersionNumber": 2,
        "published": True,
        "manifest": INVOICE_MANIFEST.to_json(),
        "jsonSchema": json_schema(INVOICE_MANIFEST),
        "updatedAt": "2026-06-05T10:00:00.000Z",
    }
    return CachedTemplate.from_api({**body, **changes}, "2026-06-05T11:00:00.000Z")


def test_invalid_data_is_refused_with_one_line_per_field_error() -> None:
    check = Checker().check(cached(), "invoice", {"amount": "x", "items": [{}]})
    assert check.outcome is CheckOutcome.INVALID and not check.passed
    assert check.version == 2
    with pytest.raises(DataInvalid) as caught:
        check.enforce("reject")
    error = caught.value
    assert error.field_errors == {
        "customer.name": ["Required"],
        "amount": ["Expected number, received string"],
        "items.0.description": ["Required"],
        "items.0.qty": ["Required"],
    }
    assert str(error).splitlines() == [
        "data does not match template 'invoice' version 2 (synced 2026-06-05T11:00:00.000Z);"
        " nothing was queued:",
        "  customer.name: Required",
        "  amount: Expected number, received string",
        "  items.0.description: Required",
        "  items.0.qty: Required",
    ]
    assert isinstance(error, InvalidArgument)  # the CLI's exit code 65
    check.enforce("warn")
    check.enforce("off")


def test_valid_data_passes_silently() -> None:
    check = Checker().check(cached(), "invoice", {"customer": {"name": "G"}, "amount": "1"})
    assert (check.outcome, check.passed, check.message()) == (CheckOutcome.VALID, True, None)
    check.enforce("reject")


def test_uncached_template_is_accepted_with_a_note() -> None:
    check = Checker().check(None, "invoice", {"anything": 1})
    assert check.outcome is CheckOutcome.UNCACHED and check.passed
    assert check.message() == (
        "template invoice is not cached; run `outbox templates sync` while online to check data "
        "before queueing"
    )
    check.enforce("reject")


def test_unpublished_template_is_refused_in_reject_mode_only() -> None:
    draft = cached(slug="draft", currentVersionNumber=None, published=False, manifest=None,
                   jsonSchema=None)  # fmt: skip
    check = Checker().check(draft, "draft", {})
    assert check.outcome is CheckOutcome.UNPUBLISHED and not check.passed
    with pytest.raises(TemplateUnpublished, match="template 'draft' has no published version"):
        check.enforce("reject")
    check.enforce("warn")


def test_a_pinned_version_other_than_the_cached_one_is_not_checked() -> None:
    checker = Checker()
    other = checker.check(cached(), "invoice", {}, version=1)
    assert other.outcome is CheckOutcome.UNCHECKED and other.passed
    assert "pinned to version 1, but the cache holds version 2" in (other.message() or "")
    same = checker.check(cached(), "invoice", {}, version=2)
    assert same.outcome is CheckOutcome.INVALID


def test_the_schema_is_never_evaluated_and_an_unreadable_manifest_never_blocks_enqueue() -> None:
    data = {"customer": {"name": "G"}, "amount": "x"}
    expected = {"amount": ["Expected number, received string"]}
    for schema in ({"type": "no-such-type"}, {"$ref": "http://127.0.0.1:9/never.json"}, None):
        assert Checker().check(cached(jsonSchema=schema), "invoice", data).field_errors == (
            expected
        )
    unreadable = cached(manifest={"variables": "all of them"})
    check = Checker().check(unreadable, "invoice", data)
    assert check.outcome is CheckOutcome.UNCHECKED and check.passed
    assert check.message() == (
        "the cached manifest of template invoice cannot be read (variables is not an array); "
        "the data was not checked"
    )


def test_a_new_version_in_the_cache_is_compiled_again() -> None:
    checker = Checker()
    data = {"customer": {"name": "G"}, "amount": 1, "po": 7}
    assert checker.check(cached(), "invoice", data).outcome is CheckOutcome.VALID
    manifest = INVOICE_MANIFEST.to_json()
    manifest["variables"].append({"key": "po", "label": "PO", "dataType": "text"})
    republished = Manifest.from_json(manifest)
    newer = cached(currentVersionNumber=3, manifest=manifest, jsonSchema=json_schema(republished))
    assert checker.check(newer, "invoice", data).field_errors == {
        "po": ["Expected string, received number"]
    }


def test_unknown_modes_are_refused() -> None:
    assert validation_mode("warn") == "warn"
    with pytest.raises(InvalidArgument, match="reject, warn, off"):
        validation_mode("strict")
