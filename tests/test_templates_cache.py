"""The template cache against the sandbox: sync while online, check while offline, and refresh
when Craftkit disagrees because a template was republished."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_support import INSPECTION, INVOICE
from support import FAST, connected
from test_migrations import _write_journal_at_version

from outbox import (
    AuthError,
    CheckOutcome,
    ConfigError,
    DataInvalid,
    Offline,
    Outbox,
    State,
    TemplateUnpublished,
)
from outbox.client import CraftkitClient
from outbox.migrations import SCHEMA_VERSION
from outbox.sandbox import Sandbox
from outbox.store import Journal
from outbox.template_sync import refresh_after_rejection
from outbox.templates import CachedTemplate

SLUGS = ["always-fails", "draft-report", "inspection-report", "invoice"]

#: inspection-report, republished with one more required field.
INSPECTION_V2 = {
    "variables": [
        {"key": "inspector", "label": "Inspector", "dataType": "text", "required": True},
        {"key": "site", "label": "Site", "dataType": "text", "required": True},
        {"key": "crew", "label": "Crew size", "dataType": "number", "required": True},
    ],
    "loops": [],
}


def get_template(sb: Sandbox, slug: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {sb.api_key}"}
    response = httpx.get(f"{sb.base_url}/v1/templates/{slug}", headers=headers, timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def server_field_errors(sb: Sandbox, slug: str, data: Any) -> dict[str, list[str]]:
    headers = {"Authorization": f"Bearer {sb.api_key}"}
    response = httpx.post(
        f"{sb.base_url}/v1/templates/{slug}/render", json={"data": data}, headers=headers
    )
    assert response.status_code == 400, response.text
    errors: dict[str, list[str]] = response.json()["error"]["issues"]["fieldErrors"]
    return errors


def template_fetches(sb: Sandbox) -> int:
    return sum(sb.stats()["requests"].get("GET /v1/templates/:slug", {}).values())


def rejected_detail(ob: Outbox, entry_id: str) -> str:
    events = [e for e in ob.history(entry_id) if e.to_state is State.REJECTED]
    assert len(events) == 1
    return events[0].detail or ""


# -- sync ----------------------------------------------------------------------------------


def test_sync_caches_every_template_and_survives_a_restart(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    with connected(db, sandbox) as ob:
        assert ob.templates() == []
        synced = ob.sync_templates()
    assert [t.slug for t in synced] == SLUGS
    with Outbox(db) as ob:  # offline, no key
        cached = {t.slug: t for t in ob.templates()}
    assert list(cached) == SLUGS
    invoice = get_template(sandbox, "invoice")
    assert cached["invoice"].version == 1 and cached["invoice"].published
    assert cached["invoice"].manifest == invoice["manifest"]
    assert cached["invoice"].json_schema == invoice["jsonSchema"]
    assert cached["invoice"].name == "Invoice"
    assert cached["invoice"].synced_at.endswith("Z")
    draft = cached["draft-report"]
    assert (draft.published, draft.version, draft.manifest, draft.json_schema) == (
        False,
        None,
        None,
        None,
    )


def test_sync_needs_a_key_and_the_network_and_keeps_the_cache_when_it_fails(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob, pytest.raises(ConfigError, match="no Craftkit API key"):
        ob.sync_templates()
    with connected(db, sandbox) as ob:
        before = ob.sync_templates()
        sandbox.republish("invoice", INSPECTION_V2)
        sandbox.stop()
        with pytest.raises(Offline):
            ob.sync_templates(timeout=5)
        assert ob.templates() == before
    sandbox.start()
    wrong = Outbox(db, api_key="ck_test_wrong", base_url=sandbox.base_url, settings=FAST)
    with wrong, pytest.raises(AuthError):
        wrong.sync_templates()
    with Outbox(db) as ob:
        assert ob.templates() == before


def test_the_cache_follows_deletions_and_remembers_version_changes(tmp_path: Path) -> None:
    def record(slug: str, version: int, at: str) -> CachedTemplate:
        body = {"slug": slug, "currentVersionNumber": version, "published": True,
                "manifest": {"variables": [], "loops": []}, "jsonSchema": {"type": "object"}}  # fmt: skip
        return CachedTemplate.from_api(body, at)

    journal = Journal(tmp_path / "j.db")
    try:
        journal.save_templates([record("a", 1, "T1"), record("b", 1, "T1")], replace_all=True)
        journal.save_templates([record("a", 2, "T2")], replace_all=True)
        assert [t.slug for t in journal.cached_templates()] == ["a"]
        changed = journal.cached_template("a")
        assert changed is not None
        assert (changed.version, changed.previous_version, changed.changed_at) == (2, 1, "T2")
        journal.save_templates([record("a", 2, "T3")])
        same = journal.cached_template("a")
        assert same is not None
        assert (same.previous_version, same.changed_at, same.synced_at) == (1, "T2", "T3")
        assert journal.forget_template("a") and journal.cached_template("a") is None
        journal.save_templates([], replace_all=True)
        assert journal.cached_templates() == []
    finally:
        journal.close()


def _save_template_elsewhere(db: Path, manifest: dict[str, Any] | None, at: str) -> None:
    """Cache ``inspection-report`` with ``manifest`` (None: forget it, after a full sync that
    did not list it) from another process, as ``outbox templates sync`` run beside an app
    does."""
    script = (
        "import json, sys\n"
        "from outbox.store import Journal\n"
        "from outbox.templates import CachedTemplate\n"
        "db, manifest, at = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]\n"
        "journal = Journal(db)\n"
        "if manifest is None:\n"
        "    journal.save_templates([], replace_all=True)\n"
        "else:\n"
        "    body = {'slug': 'inspection-report', 'currentVersionNumber': manifest['version'],\n"
        "            'published': True, 'manifest': manifest['manifest'],\n"
        "            'jsonSchema': {'type': 'object'}}\n"
        "    journal.save_templates([CachedTemplate.from_api(body, at)])\n"
        "journal.close()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(db), json.dumps(manifest), at], check=True, timeout=60
    )


def test_a_template_changed_by_another_process_or_by_this_one_checks_the_next_enqueue(
    tmp_path: Path,
) -> None:
    """The template a check needs is kept between enqueues, never past a change: another
    process's sync, or this journal's own, decides the very next enqueue."""
    db = tmp_path / "j.db"
    crew = {**INSPECTION, "crew": 3}
    v1 = {"variables": INSPECTION_V2["variables"][:2], "loops": []}
    with Outbox(db) as ob:
        assert ob.enqueue("inspection-report", INSPECTION).state is State.PENDING  # not cached
        _save_template_elsewhere(db, {"version": 1, "manifest": v1}, "T1")
        assert ob.check("inspection-report", INSPECTION).outcome is CheckOutcome.VALID
        with pytest.raises(DataInvalid, match="inspector"):
            ob.enqueue("inspection-report", {"site": "North"})
        for _ in range(3):  # kept: the same answer while nothing changes
            assert ob.enqueue("inspection-report", INSPECTION).state is State.PENDING
        _save_template_elsewhere(db, {"version": 2, "manifest": INSPECTION_V2}, "T2")
        with pytest.raises(DataInvalid, match="crew"):
            ob.enqueue("inspection-report", INSPECTION)
        assert ob.enqueue("inspection-report", crew).state is State.PENDING
        # This journal's own write: SQLite's data_version does not move for it.
        ob.journal.forget_template("inspection-report")
        assert ob.check("inspection-report", crew).outcome is CheckOutcome.UNCACHED
        _save_template_elsewhere(db, None, "T3")  # a full sync that lists no such template
        assert ob.check("inspection-report", crew).outcome is CheckOutcome.UNKNOWN_TEMPLATE


def test_a_journal_of_schema_2_gains_the_template_cache(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _write_journal_at_version(path, 2)
    with Outbox(path) as ob:
        assert ob.journal.schema_version == SCHEMA_VERSION >= 3
        assert ob.get("0123456789abcdef").key == "old-key"
        assert ob.templates() == []
        assert ob.check("invoice", {}).outcome is CheckOutcome.UNCACHED


# -- enqueue, offline ----------------------------------------------------------------------


def test_valid_data_is_queued_offline_and_accepted_online(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "j.db"
    with connected(db, sandbox) as ob:
        ob.sync_templates()
        sandbox.stop()
        invoice = ob.enqueue("invoice", INVOICE, key="inv-1")
        inspection = ob.prepare("inspection-report", INSPECTION, key="insp-1", source="drop")
        ob.enqueue_many([inspection, {"template": "invoice", "data": INVOICE, "key": "inv-2"}])
        assert ob.counts()[State.PENDING] == 3
        sandbox.start()
        report = ob.flush(timeout=20)
        assert report.exit_code == 0, report.problems
        assert ob.get(invoice.id).state is State.DONE


BAD_DATA: list[tuple[str, str, dict[str, Any]]] = [
    ("missing required field", "inspection-report", {"site": "North"}),
    ("missing dotted field", "invoice", {"customer": {}, "amount": 1}),
    ("wrong type", "inspection-report", {**INSPECTION, "inspector": 42}),
    ("not a number", "invoice", {**INVOICE, "amount": "a lot"}),
    ("not a boolean", "inspection-report", {**INSPECTION, "passed": "maybe"}),
    ("not a date", "inspection-report", {**INSPECTION, "date": "05/06/2026"}),
    ("no such day", "inspection-report", {**INSPECTION, "date": "2026-02-30"}),
    ("image as a data: URI", "inspection-report", {**INSPECTION, "photo": "data:image/png;base64,AA=="}),
    ("image not http(s)", "inspection-report", {**INSPECTION, "photo": "ftp://example.com/a.png"}),
    ("bad email", "invoice", {**INVOICE, "customer": {"name": "G", "email": "grace.example.com"}}),
    ("object expected", "invoice", {**INVOICE, "customer": "Grace"}),
    ("loop not an array", "inspection-report", {**INSPECTION, "findings": "none"}),
    ("loop item not an object", "inspection-report", {**INSPECTION, "findings": ["loose rail"]}),
    ("loop item field", "invoice", {**INVOICE, "items": [INVOICE["items"][0], {"description": "x", "qty": "two", "price": 1}]}),
    ("loop too long", "inspection-report", {**INSPECTION, "findings": [{"text": "x"}] * 10_001}),
]  # fmt: skip


@pytest.mark.parametrize(("slug", "data"), [c[1:] for c in BAD_DATA], ids=[c[0] for c in BAD_DATA])
def test_each_kind_of_field_error_is_caught_offline_in_the_servers_words(
    tmp_path: Path, sandbox: Sandbox, slug: str, data: dict[str, Any]
) -> None:
    expected = server_field_errors(sandbox, slug, data)
    with connected(tmp_path / "j.db", sandbox) as ob:
        ob.sync_templates()
        sandbox.stop()
        with pytest.raises(DataInvalid) as caught:
            ob.enqueue(slug, data, key="field-job")
        assert caught.value.field_errors == expected
        assert (caught.value.template, caught.value.version) == (slug, 1)
        for name, messages in expected.items():
            for message in messages:
                assert f"  {name}: {message}" in str(caught.value).splitlines()
        # The drop folder builds its requests with prepare(): refused the same way.
        with pytest.raises(DataInvalid):
            ob.prepare(slug, data, source="drop/job.json")
        with pytest.raises(DataInvalid):
            ob.enqueue_many(
                [{"template": "invoice", "data": INVOICE}, {"template": slug, "data": data}]
            )
        assert sum(ob.counts().values()) == 0  # nothing was queued


def test_warn_and_off_queue_bad_data(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {"site": "North"}
    with connected(tmp_path / "j.db", sandbox, validation="warn") as ob:
        ob.sync_templates()
        sandbox.stop()
        with caplog.at_level(logging.WARNING, logger="outbox"):
            warned = ob.enqueue("inspection-report", bad)
        assert warned.state is State.PENDING
        assert "inspector: Required" in caplog.text and "queued anyway" in caplog.text
        with pytest.raises(DataInvalid):
            ob.enqueue("inspection-report", bad, validation="reject")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="outbox"):
            ob.enqueue("inspection-report", bad, validation="off")
        assert "inspector" not in caplog.text
    with connected(tmp_path / "j.db", sandbox, validation="off") as ob:
        assert ob.enqueue("inspection-report", bad).state is State.PENDING
        with pytest.raises(ValueError, match="validation must be one of"):
            Outbox(tmp_path / "other.db", validation="strict")  # type: ignore[arg-type]


def test_uncached_templates_and_other_versions_are_queued_with_a_note(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    with Outbox(tmp_path / "j.db") as ob, caplog.at_level(logging.INFO, logger="outbox"):
        entry = ob.enqueue("invoice", {"anything": "goes"})
        assert entry.state is State.PENDING
        assert "template invoice is not cached; run `outbox templates sync`" in caplog.text
    with connected(tmp_path / "j.db", sandbox) as ob:
        ob.sync_templates()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="outbox"):
            pinned = ob.enqueue("invoice", {"anything": "goes"}, version=7)
        assert pinned.state is State.PENDING
        assert "pinned to version 7, but the cache holds version 1" in caplog.text
        with pytest.raises(DataInvalid):
            ob.enqueue("invoice", {"anything": "goes"}, version=1)


def test_an_unpublished_template_is_refused_unless_told_otherwise(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    with connected(tmp_path / "j.db", sandbox) as ob:
        ob.sync_templates()
        with pytest.raises(TemplateUnpublished, match="'draft-report' has no published version"):
            ob.enqueue("draft-report", {})
        assert ob.enqueue("draft-report", {}, validation="warn").state is State.PENDING
        sandbox.republish("draft-report", INSPECTION_V2)
        ob.sync_templates()
        assert ob.check("draft-report", {"inspector": "A", "site": "B", "crew": 3}).passed


def test_enqueueing_a_known_key_again_returns_its_entry_whatever_the_cache_says(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    with connected(tmp_path / "j.db", sandbox) as ob:
        first = ob.enqueue("invoice", {"amount": 1}, key="inv-7")  # not cached yet: not checked
        ob.sync_templates()
        assert ob.enqueue("invoice", {"amount": 1}, key="inv-7").id == first.id
        with pytest.raises(DataInvalid):
            ob.enqueue("invoice", {"amount": 1}, key="inv-8")


def test_check_request_applies_the_mode_and_returns_the_check_without_logging(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {"site": "North"}
    with connected(tmp_path / "j.db", sandbox) as ob:
        uncached = ob.check_request(ob.prepare("inspection-report", bad, validation="off"))
        assert uncached is not None and uncached.passed
        assert "is not cached" in (uncached.message() or "")
        ob.sync_templates()
        request = ob.prepare("inspection-report", bad, key="site-1", validation="off")
        with pytest.raises(DataInvalid, match="inspector: Required"):
            ob.check_request(request)
        with caplog.at_level(logging.DEBUG, logger="outbox"):
            warned = ob.check_request(request, validation="warn")
        assert warned is not None and not warned.passed
        assert "inspector" in (warned.message() or "") and "inspector" not in caplog.text
        assert ob.check_request(request, validation="off") is None
        ob.enqueue_many([request])  # the key is in the journal now: nothing left to check
        assert ob.check_request(request) is None


# -- when Craftkit disagrees ---------------------------------------------------------------


def test_a_republished_template_refreshes_the_cache_after_the_first_rejection(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    with connected(tmp_path / "j.db", sandbox) as ob:
        ob.sync_templates()
        queued = [ob.enqueue("inspection-report", INSPECTION, key=f"insp-{n}") for n in range(3)]
        sandbox.republish("inspection-report", INSPECTION_V2)  # version 2 needs "crew"
        fetches = template_fetches(sandbox)

        report = ob.flush(timeout=20)

        assert report.exit_code == 65
        for entry in queued:
            rejected = ob.get(entry.id)
            assert (rejected.state, rejected.error_code) == (State.REJECTED, "invalid_input_data")
            assert rejected.field_errors == {"crew": ["Required"]}
            detail = rejected_detail(ob, entry.id)
            assert "template inspection-report" in detail and "(version 1 → 2)" in detail
            assert "the template cache was refreshed" in detail
            assert "(version 1 → 2)" in (rejected.error or "")
        assert any("(version 1 → 2)" in line for line in report.problems)
        assert template_fetches(sandbox) - fetches == 1  # one refresh for the whole batch
        cached = {t.slug: t for t in ob.templates()}["inspection-report"]
        assert (cached.version, cached.previous_version) == (2, 1)
        assert cached.manifest == INSPECTION_V2

        # From now on the same data is caught before it is queued, in the server's words.
        sandbox.stop()
        with pytest.raises(DataInvalid) as caught:
            ob.enqueue("inspection-report", INSPECTION, key="insp-new")
        assert caught.value.field_errors == {"crew": ["Required"]}
        assert caught.value.version == 2


def test_a_rejection_by_a_current_template_blames_the_data(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    with connected(tmp_path / "j.db", sandbox) as ob:
        ob.sync_templates()
        warned = ob.enqueue("inspection-report", {"site": "North"}, validation="warn")
        ob.flush(timeout=20)
        detail = rejected_detail(ob, warned.id)
        assert detail.startswith("400 invalid_input_data")
        assert "the cached template inspection-report (version 1" in detail
        assert "is current; the data does not match it" in detail
    with connected(tmp_path / "uncached.db", sandbox) as ob:
        unchecked = ob.enqueue("inspection-report", {"site": "North"})
        ob.flush(timeout=20)
        assert "cache" not in rejected_detail(ob, unchecked.id)
        assert ob.templates() == []  # nothing was cached, so nothing was refreshed


def test_a_failed_refresh_never_breaks_the_dispatcher(tmp_path: Path, sandbox: Sandbox) -> None:
    with connected(tmp_path / "j.db", sandbox) as ob:
        ob.sync_templates()
        entry = ob.enqueue("invoice", INVOICE)
        before = ob.templates()
        sandbox.stop()
        offline = CraftkitClient(sandbox.base_url, sandbox.api_key, connect_timeout=1.0)
        try:
            note = refresh_after_rejection(ob.journal, offline, entry)
        finally:
            offline.close()
        assert note is not None and "could not be refreshed" in note
        broken = CraftkitClient(sandbox.base_url, sandbox.api_key)
        broken.close()  # a closed client raises something no one expects
        assert refresh_after_rejection(ob.journal, broken, ob.get(entry.id)) is None
        assert ob.templates() == before
