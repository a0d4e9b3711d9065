"""Slug and key rules: one definition (outbox.rules), read by outbox and the sandbox alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sandbox_support import client, error_code

from outbox import InvalidArgument, RenderRequest, rules
from outbox.sandbox import Sandbox
from outbox.sandbox.templates import TemplateFileError, load_templates

MANIFEST = {
    "variables": [{"key": "title", "label": "Title", "dataType": "text", "required": False}],
    "loops": [],
}

SLUGS = [
    ("a", True),
    ("invoice", True),
    ("inspection-report", True),
    ("site_visit", True),
    ("report-2026", True),
    ("x" * 100, True),
    ("", False),
    ("x" * 101, False),
    ("Invoice", False),
    ("bad slug", False),
    ("-invoice", False),
    ("invoice-", False),
    ("_invoice", False),
    ("invoice_", False),
    ("../etc", False),
    ("a/b", False),
    ("a.b", False),
    ("café", False),
    ("invoice\n", False),
]


@pytest.mark.parametrize(("slug", "valid"), SLUGS)
def test_outbox_takes_exactly_the_slugs_the_rule_allows(slug: str, valid: bool) -> None:
    assert rules.is_slug(slug) is valid
    if valid:
        assert RenderRequest(slug, {}).template == slug
    else:
        with pytest.raises(InvalidArgument, match="not a valid slug"):
            RenderRequest(slug, {})


def test_the_sandbox_takes_exactly_the_same_slugs(sb: Sandbox, tmp_path: Path) -> None:
    for slug, valid in SLUGS:
        if valid:
            assert sb.republish(slug, MANIFEST)["slug"] == slug
        else:
            with pytest.raises(ValueError, match="invalid slug"):
                sb.republish(slug, MANIFEST)
        templates = tmp_path / "templates.json"
        templates.write_text(json.dumps({"templates": [{"slug": slug, "manifest": MANIFEST}]}))
        if valid:
            assert [spec.slug for spec in load_templates(templates)] == [slug]
        else:
            with pytest.raises(TemplateFileError, match="'slug' must be 1-100 lowercase"):
                load_templates(templates)


def test_the_sandbox_api_refuses_a_bad_slug_and_takes_an_underscore(sb: Sandbox) -> None:
    with client(sb) as http:
        created = http.put("/v1/templates/site_visit", json={"manifest": MANIFEST})
        assert created.status_code == 201
        assert http.post("/v1/templates/site_visit/render", json={"data": {}}).status_code == 202
        for bad in ("Invoice", "invoice-", "x" * 101):
            refused = http.put(f"/v1/templates/{bad}", json={"manifest": MANIFEST})
            assert refused.status_code == 400 and error_code(refused) == "invalid_request"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("inspection-42", None),
        ("k" * 200, None),
        ("event~2x", None),
        ("", "1-200 characters"),
        ("k" * 201, "1-200 characters"),
        ("tab\there", "printable ASCII"),
        ("naïve", "printable ASCII"),
        ("event~2", "reserves for retries"),
        ("event~10", "reserves for retries"),
    ],
)
def test_key_rules(key: str, problem: str | None) -> None:
    assert rules.has_retry_suffix(key) is (problem == "reserves for retries")
    if problem is None:
        assert RenderRequest("invoice", {}, key).key == key
    else:
        with pytest.raises(InvalidArgument, match=problem):
            RenderRequest("invoice", {}, key)


def test_derived_keys_are_never_taken_by_callers_and_fit_craftkit() -> None:
    for key in ("inspection-42", "k" * 200):
        for generation in (2, 3, 12):
            derived = rules.derived_key(key, generation)
            assert rules.has_retry_suffix(derived)
            assert len(derived) <= rules.IDEMPOTENCY_KEY_MAX
