"""``outbox templates sync|list`` and ``outbox enqueue --validate``, called in-process."""

from __future__ import annotations

import json
from pathlib import Path

from sandbox_support import INVOICE
from support import run_cli, sandbox_env

from outbox.sandbox import Sandbox


def test_templates_sync_and_list(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "j.db"
    env = sandbox_env(sandbox, db)

    missing = run_cli("templates", "list", env=env)
    assert missing.returncode == 78 and "no journal at" in missing.stderr and not db.exists()
    assert run_cli("init", env=env).returncode == 0
    empty = run_cli("templates", "list", env=env)
    assert empty.returncode == 0 and empty.stdout == ""
    assert "no templates cached; run `outbox templates sync` while online" in empty.stderr

    no_key = run_cli("templates", "sync", env={**env, "CRAFTKIT_API_KEY": ""})
    assert no_key.returncode == 78 and "CRAFTKIT_API_KEY" in no_key.stderr
    refused = run_cli("templates", "sync", env={**env, "CRAFTKIT_API_KEY": "ck_test_nope"})
    assert refused.returncode == 77, refused.stderr
    assert "fix CRAFTKIT_API_KEY" in refused.stderr and "ck_test_nope" not in refused.stderr

    synced = run_cli("templates", "sync", env=env)
    assert synced.returncode == 0, synced.stderr
    for slug in ("always-fails", "draft-report", "inspection-report", "invoice"):
        assert slug in synced.stdout
    assert "synced 4 templates (4 new, 0 updated, 0 unchanged, 0 removed)" in synced.stdout

    sandbox.republish("invoice", {"variables": [
        {"key": "total", "label": "Total", "dataType": "currency", "required": True}]})  # fmt: skip
    again = json.loads(run_cli("templates", "sync", "--json", env=env).stdout)
    changes = {t["slug"]: t["change"] for t in again["templates"]}
    assert changes == {
        "always-fails": "unchanged",
        "draft-report": "unchanged",
        "inspection-report": "unchanged",
        "invoice": "updated",
    }
    assert again["removed"] == []

    sandbox.stop()
    offline = run_cli("templates", "sync", env=env)
    assert offline.returncode == 75 and "left as it was" in offline.stderr

    listed = run_cli("templates", "list", env=env)
    assert listed.returncode == 0
    invoice_row = next(line for line in listed.stdout.splitlines() if line.startswith("invoice"))
    assert invoice_row.split()[1] == "2" and "was version 1 until" in invoice_row
    draft_row = next(line for line in listed.stdout.splitlines() if line.startswith("draft"))
    assert draft_row.split()[1] == "unpublished"
    rows = {
        t["slug"]: t for t in json.loads(run_cli("templates", "list", "--json", env=env).stdout)
    }
    assert rows["invoice"]["version"] == 2 and rows["invoice"]["previous_version"] == 1
    assert rows["invoice"]["manifest"]["variables"][0]["key"] == "total"
    assert rows["draft-report"]["published"] is False


def test_enqueue_checks_data_offline_as_told(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "j.db"
    env = sandbox_env(sandbox, db)
    bad = json.dumps({"customer": {"email": "grace@"}, "amount": "lots", "items": [{"qty": 1}]})

    uncached = run_cli("enqueue", "invoice", "--data", bad, env=env)
    assert uncached.returncode == 0, uncached.stderr
    assert uncached.stderr.strip() == (
        "note: template invoice is not cached; run `outbox templates sync` while online to "
        "check data before queueing"
    )

    assert run_cli("templates", "sync", env=env).returncode == 0
    sandbox.stop()  # everything below happens offline

    refused = run_cli("enqueue", "invoice", "--data", bad, "--key", "inv-9", env=env)
    assert refused.returncode == 65
    assert refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert lines[0].startswith("outbox: data does not match template 'invoice' version 1")
    assert lines[1:] == [
        "  customer.name: Required",
        "  customer.email: Invalid email",
        "  amount: Expected number, received string",
        "  items.0.description: Required",
        "  items.0.price: Required",
    ]

    warned = run_cli("enqueue", "invoice", "--data", bad, "--validate", "warn", env=env)
    assert warned.returncode == 0 and len(warned.stdout.strip()) == 16
    assert warned.stderr.startswith("warning: data does not match template 'invoice'")
    assert "  amount: Expected number, received string" in warned.stderr

    off = run_cli("enqueue", "invoice", "--data", bad, "--validate", "off", env=env)
    assert off.returncode == 0 and off.stderr == ""

    good = run_cli("enqueue", "invoice", "--data", json.dumps(INVOICE), env=env)
    assert good.returncode == 0 and good.stderr == ""

    pinned = run_cli("enqueue", "invoice", "--data", bad, "--version", "4", env=env)
    assert pinned.returncode == 0
    assert "note: template invoice is pinned to version 4" in pinned.stderr

    draft = run_cli("enqueue", "draft-report", "--data", "{}", env=env)
    assert draft.returncode == 65
    assert "template 'draft-report' has no published version" in draft.stderr

    listed = json.loads(run_cli("list", "--json", env=env).stdout)
    assert len(listed) == 5  # uncached, warned, off, good, pinned; nothing from the refusals
    assert all(entry["state"] == "pending" for entry in listed)
