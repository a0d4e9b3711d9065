"""Deliveries from the command line: ``enqueue --share/--email-to`` (offline, checked),
``flush``'s summary, ``show`` and ``--json``, and ``share``/``shares``/``revoke`` by hand,
against the sandbox over a real socket."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support import INSPECTION, run_cli, sandbox_env

from outbox import DeliveryState, Outbox, State
from outbox.sandbox import Sandbox

FUTURE = "2031-01-01T00:00:00Z"


def enqueue(*args: str, env: dict[str, str] | None = None) -> str:
    result = run_cli("enqueue", "inspection-report", "--data", json.dumps(INSPECTION), *args,
                     env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_enqueue_takes_deliveries_offline_and_show_lists_them(db_path: Path) -> None:
    env = {"OUTBOX_DB": str(db_path)}  # no API key, no network
    result = run_cli(
        "enqueue", "inspection-report", "--data", json.dumps(INSPECTION), "--key", "visit-42",
        "--share-expires", "2031-01-01T02:00:00+02:00",
        "--email-to", "owner@example.com", "--email-to", "office@example.com",
        "--email-message", "Your report", "--json",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    entry_id = json.loads(result.stdout)["id"]
    entry = json.loads(run_cli("show", entry_id, "--json", env=env).stdout)
    assert [
        (d["channel"], d["to"], d["message"], d["expires_at"], d["state"])
        for d in entry["deliveries"]
    ] == [
        ("link", None, None, "2031-01-01T00:00:00.000Z", "pending"),
        ("email", "owner@example.com", "Your report", None, "pending"),
        ("email", "office@example.com", "Your report", None, "pending"),
    ]
    shown = run_cli("show", entry["id"], env=env)
    assert shown.returncode == 0, shown.stderr
    link, owner, office = entry["deliveries"]
    assert f"{link['id']}  share link: pending" in shown.stdout
    assert f"{owner['id']}  email to owner@example.com: pending" in shown.stdout
    assert f"{office['id']}  email to office@example.com: pending" in shown.stdout
    # The same command again is the same entry; other deliveries under the key are refused.
    again = run_cli(
        "enqueue", "inspection-report", "--data", json.dumps(INSPECTION), "--key", "visit-42",
        "--share-expires", "2031-01-01T00:00:00Z",
        "--email-to", "owner@example.com", "--email-to", "office@example.com",
        "--email-message", "Your report",
        env=env,
    )  # fmt: skip
    assert (again.returncode, again.stdout.strip()) == (0, entry["id"])
    other = run_cli("enqueue", "inspection-report", "--data", json.dumps(INSPECTION),
                    "--key", "visit-42", "--share", env=env)  # fmt: skip
    assert other.returncode == 65
    assert "deliveries differ" in other.stderr


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--email-to", "bob@"], "email[0].to 'bob@' is not an email address"),
        (["--share-expires", "2020-01-01T00:00:00Z"], "is not in the future"),
        (["--share-expires", "next week"], "is not an ISO date and time with a zone"),
        (["--email-message", "hi"], "--email-message needs --email-to"),
        (
            ["--email-to", "a@example.com", "--email-message", "x" * 2001],
            "message has 2,001 characters; Craftkit takes at most 2,000",
        ),
        (["--email-to", "a@example.com", "--email-to", "a@example.com"], "asked for twice"),
    ],
)
def test_enqueue_refuses_bad_deliveries_and_queues_nothing(
    db_path: Path, options: list[str], problem: str
) -> None:
    result = run_cli("--db", str(db_path), "enqueue", "inspection-report",
                     "--data", json.dumps(INSPECTION), *options)  # fmt: skip
    assert result.returncode == 65
    assert problem in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not db_path.exists(), "a refused request creates nothing, not even the journal"


def test_flush_show_share_shares_and_revoke(db_path: Path, sb: Sandbox) -> None:
    env = sandbox_env(sb, db_path)
    entry_id = enqueue("--share", "--email-to", "ada@example.com", env=env)
    flushed = run_cli("flush", env=env)
    assert flushed.returncode == 0, flushed.stderr
    with Outbox(db_path) as ob:
        link, email = ob.get(entry_id).deliveries
    assert link.state is email.state is DeliveryState.DELIVERED
    # flush says what it delivered, one line each, with the link.
    assert f"delivered {entry_id} share link: {link.share_url}" in flushed.stdout
    assert (
        f"delivered {entry_id} email to ada@example.com: sent at {email.sent_at}, "
        f"link {email.share_url}" in flushed.stdout
    )
    # show, and show --json, carry the links and the email's status.
    shown = run_cli("show", entry_id, env=env).stdout
    assert f"{link.id}  share link: {link.share_url}" in shown
    assert f"{email.id}  email to ada@example.com: sent at {email.sent_at}" in shown
    public = json.loads(run_cli("show", entry_id, "--json", env=env).stdout)["deliveries"]
    assert [(d["state"], d["share_url"], d["share_id"]) for d in public] == [
        ("delivered", link.share_url, link.share_id),
        ("delivered", email.share_url, email.share_id),
    ]
    assert public[1]["sent_at"] == email.sent_at

    # share by hand: prints the new link, which works.
    made = run_cli("share", entry_id, "--expires", FUTURE, "--message", "For the file", env=env)
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    assert url.startswith(f"{sb.base_url}/share/cks_")
    assert httpx.get(url).status_code == 200
    assert httpx.get(url).status_code == 200

    # shares: every share at Craftkit, newest first, with clicks and the delivery holding it.
    listed = json.loads(run_cli("shares", entry_id, "--json", env=env).stdout)
    with Outbox(db_path) as ob:
        by_hand = ob.get(entry_id).deliveries[2]
    assert by_hand.by_hand and by_hand.share_url == url
    # The link by hand is the newest; the two made by the flush came at the same moment.
    rows = [(s["delivery_id"], s["channel"], s["url"]) for s in listed]
    assert rows[0] == (by_hand.id, "link", url)
    assert sorted(rows[1:]) == sorted(
        [(email.id, "email", email.share_url), (link.id, "link", link.share_url)]
    )
    assert listed[0]["click_count"] == 2
    recipients = {s["channel"]: s["recipient_email"] for s in listed[1:]}
    assert recipients == {"email": "ada@example.com", "link": None}
    assert (listed[0]["message"], listed[0]["expires_at"]) == (
        "For the file",
        "2031-01-01T00:00:00.000Z",
    )
    table = run_cli("shares", entry_id, env=env).stdout.splitlines()
    assert len(table) == 4  # a header and the three shares
    assert f"{by_hand.share_id}  link" in table[1] and f"delivery {by_hand.id}" in table[1]

    # revoke: the link stops working, and the journal says so.
    revoked = run_cli("revoke", entry_id, by_hand.share_id or "", env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"revoked {by_hand.share_id} at ")
    assert httpx.get(url).status_code == 410
    with Outbox(db_path) as ob:
        after = ob.get(entry_id).deliveries[2]
    assert after.state is DeliveryState.REVOKED
    assert (
        f"share link: revoked at {after.revoked_at} ({url})"
        in run_cli("show", entry_id, env=env).stdout
    )
    assert json.loads(run_cli("shares", entry_id, "--json", env=env).stdout)[0]["revoked_at"]
    twice = run_cli("revoke", entry_id, by_hand.share_id or "", env=env)
    assert twice.returncode != 0 and "already revoked" in twice.stderr
    assert sb.stats()["shares_created"] == 3


def test_flush_reports_an_email_craftkit_cannot_send(db_path: Path, sb: Sandbox) -> None:
    env = sandbox_env(sb, db_path)
    entry_id = enqueue("--share", "--email-to", "ada@example.com", env=env)
    sb.set_faults(email_not_configured=True)
    flushed = run_cli("flush", "--json", env=env)
    assert flushed.returncode == 65
    report = json.loads(flushed.stdout)
    assert sorted((d["channel"], d["state"], d["error"]) for d in report["deliveries"]) == [
        ("email", "failed", "email is not configured for this Craftkit project"),
        ("link", "delivered", None),
    ]
    assert report["counts"]["done"] == 1 and report["deliveries_waiting"] == 0
    plain = run_cli("flush", env=env)
    assert plain.returncode == 0, "nothing is left to do: a failed email is not retried"
    with Outbox(db_path) as ob:
        assert ob.get(entry_id).state is State.DONE, "a failed delivery leaves the entry done"
    shown = run_cli("show", entry_id, env=env).stdout
    assert "email to ada@example.com: failed: email is not configured for this Craftkit" in shown
    assert sb.stats()["emails_sent"] == 0


def test_share_needs_a_done_entry_and_waits_when_offline(db_path: Path, sb: Sandbox) -> None:
    env = sandbox_env(sb, db_path)
    waiting = enqueue(env=env)
    early = run_cli("share", waiting, env=env)
    assert early.returncode == 65
    assert "a link can be made once it is done" in early.stderr
    assert run_cli("flush", env=env).returncode == 0
    sb.stop()  # offline
    offline = run_cli("share", waiting, "--timeout", "1", env=env)
    assert offline.returncode == 75
    assert offline.stderr.startswith("outbox: share link: ")
    sb.start()
    assert run_cli("flush", env=env).returncode == 0  # the next flush makes it
    with Outbox(db_path) as ob:
        [link] = ob.get(waiting).deliveries
    assert link.state is DeliveryState.DELIVERED and link.by_hand
    assert sb.stats()["shares_created"] == 1
