"""After a full ``templates sync``, a slug Craftkit did not list is refused offline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from support import INSPECTION, connected, run_cli, sandbox_env

from outbox import CheckOutcome, DropFolder, InvalidArgument, Outbox, TemplateUnknown
from outbox.sandbox import Sandbox
from outbox.templates import CachedTemplate

NOT_CACHED = "is not cached; run `outbox templates sync` while online"


def test_a_slug_missing_after_a_full_sync_is_refused_offline(tmp_path: Path, sb: Sandbox) -> None:
    with connected(tmp_path / "j.db", sb) as ob:
        assert ob.journal.templates_synced_at() is None
        ob.sync_templates()
        synced_at = ob.journal.templates_synced_at()
        assert synced_at == ob.templates()[0].synced_at
        with pytest.raises(TemplateUnknown) as caught:
            ob.enqueue("inspection-reprot", INSPECTION)
        error = caught.value
        assert isinstance(error, InvalidArgument)  # exit 65
        assert (error.template, error.synced_at) == ("inspection-reprot", synced_at)
        assert str(error) == (
            f"template inspection-reprot does not exist at Craftkit (templates synced "
            f"{synced_at}); nothing was queued: check the slug, or run `outbox templates sync` "
            "if it was created since"
        )
        assert ob.list() == []
        check = ob.check("inspection-reprot", {})
        assert check.outcome is CheckOutcome.UNKNOWN_TEMPLATE and not check.passed
        # warn queues it anyway; off does not look.
        assert ob.enqueue("inspection-reprot", {}, validation="warn").template == (
            "inspection-reprot"
        )
        assert ob.enqueue("inspection-reprot", {"x": 1}, validation="off").state.value == (
            "pending"
        )
        # A template created at Craftkit since is found by the next sync.
        sb.republish("inspection-reprot", {"variables": []})
        ob.sync_templates()
        assert ob.enqueue("inspection-reprot", {"y": 2}).template == "inspection-reprot"


def test_only_a_full_sync_makes_the_cache_complete(ob: Outbox) -> None:
    one = CachedTemplate("invoice", "Invoice", 1, True, {"variables": []}, {}, None, "T1")
    ob.journal.save_templates([one])  # a single re-read after a rejection
    assert ob.journal.templates_synced_at() is None
    assert ob.check("other", {}).outcome is CheckOutcome.UNCACHED
    ob.enqueue("other", {})  # accepted, with the note
    ob.journal.save_templates([one], replace_all=True)
    assert ob.journal.templates_synced_at() == "T1"
    with pytest.raises(TemplateUnknown, match=r"template other does not exist at Craftkit \("):
        ob.enqueue("other", {"n": 2})


def test_a_never_synced_journal_notes_an_uncached_template_once(
    ob: Outbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outbox")
    ob.enqueue_many([{"template": "invoice", "data": {"n": n}} for n in range(5)])
    ob.enqueue("invoice", {"n": 5})
    ob.enqueue("inspection-report", INSPECTION)
    folder = tmp_path / "drop"
    folder.mkdir()
    for n in range(3):
        (folder / f"job{n}.json").write_text(json.dumps({"template": "invoice", "data": {"f": n}}))
    assert len(DropFolder(ob, folder).scan().accepted) == 3
    notes = [r.getMessage() for r in caplog.records if NOT_CACHED in r.getMessage()]
    assert notes == [
        f"template invoice {NOT_CACHED} to check data before queueing",
        f"template inspection-report {NOT_CACHED} to check data before queueing",
    ]
    assert len(ob.list()) == 10


def test_cli_and_drop_folder_refuse_an_unknown_template_after_a_sync(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    env = sandbox_env(sandbox, db)
    never = run_cli("enqueue", "invoce", "--data", "{}", env=env)
    assert never.returncode == 0 and NOT_CACHED in never.stderr
    assert run_cli("templates", "sync", env=env).returncode == 0
    refused = run_cli("enqueue", "invoce", "--data", "{}", env=env)
    assert refused.returncode == 65 and refused.stdout == ""
    assert refused.stderr.startswith(
        "outbox: template invoce does not exist at Craftkit (templates synced 20"
    )
    as_json = json.loads(run_cli("enqueue", "invoce", "--data", "{}", "--json", env=env).stdout)
    assert as_json["error"]["code"] == "template_unknown"
    warned = run_cli("enqueue", "invoce", "--data", '{"a": 1}', "--validate", "warn", env=env)
    assert warned.returncode == 0 and "warning: template invoce does not exist" in warned.stderr

    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "typo.json").write_text('{"template": "invoce", "data": {"b": 2}}')
    with Outbox(db) as ob:
        report = DropFolder(ob, folder).scan()
        assert [r.file for r in report.rejected] == ["typo.json"]
        assert "template invoce does not exist at Craftkit" in report.rejected[0].reason
        assert len(ob.list()) == 2  # the two queued before the sync and with --validate warn
