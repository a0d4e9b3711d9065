"""Deliveries end to end, in-process: enqueue checks (offline), then share links and emails
made against the sandbox (through its in-process transport) — exactly once through lost answers
and 5xx, the 409/503/502/400 paths, adoption, by-hand links, revocation, the drop folder's jobs.
The real processes killed between create and record are in ``test_delivery_processes.py``."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlite_utils
from support import INSPECTION, FakeClock, connected, wait_until

from outbox import (
    Delivery,
    DeliveryState,
    DropFolder,
    ExitCode,
    IllegalTransition,
    InvalidArgument,
    KeyConflict,
    LostRace,
    Outbox,
    PermanentError,
    Schedule,
    Settings,
    State,
)
from outbox.cli_output import flush_summary
from outbox.clock import iso
from outbox.deliveries import DeliveryRequest
from outbox.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from outbox.sandbox import Sandbox
from outbox.schedule import Backoff

#: Backoffs of a few milliseconds and no in-call retries, so every answer reaches the table and
#: the tests never wait out a real backoff.
QUICK = Settings(
    connect_timeout=2.0,
    read_timeout=5.0,
    retries=0,
    schedule=Schedule(
        submit_retry=Backoff(0.01, 0.02),
        poll_retry=Backoff(0.01, 0.02),
        download_retry=Backoff(0.01, 0.02),
        delivery_retry=Backoff(0.01, 0.02),
        delivery_settle=0.0,
        offline_grace=1.0,
    ).with_rng(random.Random(9)),
)
FUTURE = "2031-01-01T00:00:00Z"


def quick(db: Path, sb: Sandbox, **kwargs: Any) -> Outbox:
    return connected(db, sb, settings=QUICK, **kwargs)


def one_each(sb: Sandbox, keys: list[str]) -> None:
    """Exactly one link and one email per key at the sandbox, and nothing else."""
    stats = sb.stats()
    assert stats["shares_per_key"] == {key: {"link": 1, "email": 1} for key in keys}, stats
    assert stats["emails_per_key"] == {key: 1 for key in keys}
    assert stats["shares_created"] == 2 * len(keys)


def recorded_everywhere(sb: Sandbox, ob: Outbox) -> None:
    """Every delivery is delivered and holds the very share the sandbox made."""
    by_id: dict[str, dict[str, Any]] = {}
    with httpx.Client(
        base_url=sb.base_url, headers={"Authorization": f"Bearer {sb.api_key}"}
    ) as http:
        for entry in ob.list():
            for row in http.get(f"/v1/renders/{entry.render_id}/shares").json()["shares"]:
                by_id[row["id"]] = row
    emails = {email["shareId"]: email for email in sb.sent_emails()}
    for entry in ob.list():
        assert entry.state is State.DONE
        assert [d.channel for d in entry.deliveries] == ["link", "email"]
        for delivery in entry.deliveries:
            assert delivery.state is DeliveryState.DELIVERED, delivery
            assert delivery.share_id is not None
            share = by_id[delivery.share_id]
            assert share["shareUrl"] == delivery.share_url and share["channel"] == delivery.channel
            if delivery.channel == "email":
                assert emails[delivery.share_id]["to"] == delivery.to


# -- checked at enqueue, offline --------------------------------------------------------------


def test_deliveries_are_journalled_offline_and_survive_a_reopen(db_path: Path) -> None:
    with Outbox(db_path) as ob:  # no API key, no network
        entry = ob.enqueue(
            "inspection-report",
            INSPECTION,
            key="visit-1",
            share={"expires_at": "2031-01-01T02:00:00+02:00", "message": "Report"},
            email=[
                {"to": "ada@example.com", "recipient_name": "Ada", "message": "Hi"},
                "bob@example.com",
            ],
        )
        assert [d.state for d in entry.deliveries] == [DeliveryState.PENDING] * 3
    with Outbox(db_path) as ob:  # a new process, reading the file
        again = ob.get(entry.id)
        assert [d.request for d in again.deliveries] == [
            DeliveryRequest("link", message="Report", expires_at="2031-01-01T00:00:00.000Z"),
            DeliveryRequest("email", "ada@example.com", "Ada", "Hi"),
            DeliveryRequest("email", "bob@example.com"),
        ]
        assert again.deliveries == entry.deliveries
        assert ob.list()[0].deliveries == entry.deliveries
        history = [e for e in ob.history(entry.id) if e.delivery_id is not None]
        assert [e.delivery_id for e in history] == [d.id for d in entry.deliveries]
        assert {e.delivery_state for e in history} == {"pending"}
        # The same request again under its key is the entry; other deliveries are another
        # request, refused.
        same = ob.enqueue(
            "inspection-report",
            INSPECTION,
            key="visit-1",
            email=[
                "bob@example.com",
                {"to": "ada@example.com", "recipient_name": "Ada", "message": "Hi"},
            ],
            share={"expires_at": "2031-01-01T00:00:00Z", "message": "Report"},
        )
        assert same == again
        with pytest.raises(KeyConflict, match=r"\(deliveries differ\); nothing was queued"):
            ob.enqueue("inspection-report", INSPECTION, key="visit-1", share=True)


@pytest.mark.parametrize(
    ("share", "email", "problem"),
    [
        (None, "bob@", "email.to 'bob@' is not an email address"),
        (None, {"to": "a@example.com", "message": "x" * 2001}, "2,001 characters"),
        (None, {"to": "a@example.com", "recipient_name": "n" * 201}, "at most 200"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, None, "is not in the future"),
        ({"expires_at": "2031-01-01T00:00:00"}, None, "with a zone"),
        ({"expires_at": "tomorrow"}, None, "not an ISO date and time"),
        ({"expire": FUTURE}, None, "unknown field(s) expire"),
        ("yes", None, "share must be true or an object"),
        (None, {"recipient_name": "Ada"}, 'needs "to"'),
        (None, ["a@example.com", {"to": 7}], "email[1].to a number is not an email address"),
        (None, ["a@example.com", "a@example.com"], "asked for twice"),
        ([True] * 51, None, "at most 50"),
    ],
)
def test_bad_deliveries_are_refused_and_nothing_is_queued(
    db_path: Path, share: Any, email: Any, problem: str
) -> None:
    with Outbox(db_path) as ob:
        with pytest.raises(InvalidArgument) as refused:
            ob.enqueue("inspection-report", INSPECTION, share=share, email=email)
        assert problem in str(refused.value)
        with pytest.raises(InvalidArgument):
            ob.enqueue_many(
                [{"template": "inspection-report", "data": {}, "email": email, "share": share}]
            )
        assert ob.list() == []


def test_enqueue_many_takes_deliveries_in_mappings(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        first, second = ob.enqueue_many(
            [
                {"template": "invoice", "data": {}, "share": True},
                {"template": "invoice", "data": {}, "email": ["a@example.com", "b@example.com"]},
            ]
        )
    assert [d.channel for d in first.deliveries] == ["link"]
    assert [d.to for d in second.deliveries] == ["a@example.com", "b@example.com"]


# -- against the sandbox ----------------------------------------------------------------------


def test_a_link_and_an_email_go_out_once_the_pdf_is_done(db_path: Path, sb: Sandbox) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue(
            "inspection-report",
            INSPECTION,
            key="visit-2",
            share=True,
            email={"to": "ada@example.com", "recipient_name": "Ada", "message": "Your report"},
        )
    with quick(db_path, sb) as ob:
        report = ob.flush(timeout=30)
        assert report.exit_code is ExitCode.OK, report.problems
        assert report.drained and not report.deliveries_waiting
        done = ob.get(entry.id)
        link, email = done.deliveries
        assert {d.id for d in report.deliveries} == {link.id, email.id}
        assert link.state is email.state is DeliveryState.DELIVERED
        assert link.share_url and link.share_url.startswith(f"{sb.base_url}/share/cks_")
        assert link.share_token and link.share_url.endswith(f"/share/{link.share_token}")
        assert email.email_message_id and email.sent_at
        [sent] = sb.sent_emails()
        assert (sent["to"], sent["recipientName"], sent["message"]) == (
            "ada@example.com",
            "Ada",
            "Your report",
        )
        assert (sent["shareId"], sent["emailMessageId"]) == (email.share_id, email.email_message_id)
        # The link is real: it serves the PDF that was downloaded.
        opened = httpx.get(link.share_url)
        assert opened.status_code == 200
        assert opened.content == Path(done.pdf_path or "").read_bytes()
        # Deliveries started only after the PDF was on disk.
        events = ob.history(entry.id)
        saved = next(
            i for i, e in enumerate(events) if e.to_state is State.DONE and e.delivery_id is None
        )
        sending = [i for i, e in enumerate(events) if e.delivery_state == "unconfirmed"]
        assert sending and min(sending) > saved
        assert ob.shares(entry.id)[-1].click_count in (0, 1)
    one_each(sb, ["visit-2"])


def test_lost_answers_and_5xx_never_make_a_second_link_or_email(db_path: Path, sb: Sandbox) -> None:
    keys = [f"lost-{i}" for i in range(25)]
    with Outbox(db_path) as ob:
        ob.enqueue_many(
            {
                "template": "inspection-report",
                "data": {**INSPECTION, "site": key},
                "key": key,
                "share": True,
                "email": {"to": f"{key}@example.com", "message": f"Report {key}"},
            }
            for key in keys
        )
    sb.set_faults(
        drop_after=0.3, error_500_after=0.05, error_500_before=0.05, email_send_failed=0.25
    )
    flushes = 0
    with quick(db_path, sb) as ob:
        while ob.flush(timeout=30).exit_code is not ExitCode.OK:
            flushes += 1
            assert flushes < 20, ob.journal.unfinished_deliveries()
        adopted = [
            e
            for entry in ob.list()
            for e in ob.history(entry.id)
            if e.detail and "adopted share" in e.detail
        ]
        assert adopted, "with 30 % of answers lost, some creates must have been adopted"
        recorded_everywhere(sb, ob)
    one_each(sb, keys)
    injected = sb.stats()["faults_injected"]
    assert injected.get("drop_after", 0) > 5 and injected.get("email_send_failed", 0) > 0


def test_a_lost_answer_is_adopted_from_the_list_not_made_again(db_path: Path, sb: Sandbox) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="adopt", email="ada@example.com")
    # Every create for this key is made and its answer lost (the render POST's too).
    sb.set_faults(keys={"adopt": {"drop_after": 1.0}})
    with quick(db_path, sb) as ob:
        assert ob.flush(timeout=30).exit_code is ExitCode.OK
        [email] = ob.get(entry.id).deliveries
        assert email.state is DeliveryState.DELIVERED and email.attempts == 1
        [sent] = sb.sent_emails()
        assert email.share_id == sent["shareId"]
        details = [e.detail or "" for e in ob.history(entry.id) if e.delivery_id]
        assert any("adopted share" in d and "nothing was sent again" in d for d in details)
        assert email.email_message_id is None, "the list does not say; the history does"
    assert sb.stats()["emails_per_key"] == {"adopt": 1}
    routes = sb.stats()["requests"]
    assert routes["GET /v1/renders/:id/shares"] == {"200": 1}


def test_email_send_failed_is_retried_after_checking_the_shares(db_path: Path, sb: Sandbox) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="e502", email="ada@example.com")
    sb.set_faults(email_send_failed=1.0)
    with quick(db_path, sb) as ob:
        report = ob.flush(timeout=3)
        assert report.exit_code is ExitCode.TRY_LATER
        [email] = ob.get(entry.id).deliveries
        assert email.state is DeliveryState.UNCONFIRMED and email.error_code == "email_send_failed"
        assert ob.get(entry.id).state is State.DONE
        # Retried by itself: the summary's waiting line, not a problem for a person.
        assert not any("email_send_failed" in line for line in report.problems)
        summary = flush_summary(report, now=ob.clock.now())
        assert any(
            line.startswith("waiting   1 deliveries") and email.error and email.error in line
            for line in summary
        )
        tries = email.attempts
        assert tries >= 2, "a 502 is retried with backoff"
        sb.set_faults(email_send_failed=0.0)
        assert ob.flush(timeout=30).exit_code is ExitCode.OK
        [email] = ob.get(entry.id).deliveries
        assert email.state is DeliveryState.DELIVERED
    routes = sb.stats()["requests"]
    assert routes["POST /v1/renders/:id/email"] == {"502": tries, "201": 1}
    # Every resend came after a listing that found nothing.
    assert routes["GET /v1/renders/:id/shares"] == {"200": tries}
    assert sb.stats()["emails_per_key"] == {"e502": 1}


def test_email_not_configured_fails_the_email_only_and_is_not_retried(
    db_path: Path, sb: Sandbox
) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue(
            "inspection-report", INSPECTION, key="e503", share=True, email="ada@example.com"
        )
    sb.set_faults(email_not_configured=True)
    with quick(db_path, sb) as ob:
        report = ob.flush(timeout=30)
        assert report.exit_code is ExitCode.DATA_ERROR
        done = ob.get(entry.id)
        assert done.state is State.DONE
        link, email = done.deliveries
        assert link.state is DeliveryState.DELIVERED
        assert email.state is DeliveryState.FAILED
        assert email.error == "email is not configured for this Craftkit project"
        assert report.failed_deliveries == [email]
        assert any(
            line.startswith(f"failed {entry.id} email to ada@example.com: email is not configured")
            and "the entry stays done" in line
            for line in report.problems
        )
        assert ob.flush(timeout=5).exit_code is ExitCode.OK  # nothing left to do
    assert sb.stats()["requests"]["POST /v1/renders/:id/email"] == {"503": 1}
    assert sb.stats()["emails_sent"] == 0


def test_an_expiry_that_passed_offline_is_a_rejected_delivery_with_craftkits_message(
    db_path: Path, clock: FakeClock
) -> None:
    with Sandbox(render_seconds=1.0, clock=clock, seed=3) as timed:
        with Outbox(db_path, clock=clock) as ob:
            soon = iso(clock.now() + 60)
            entry = ob.enqueue(
                "inspection-report",
                INSPECTION,
                key="late",
                share={"expires_at": soon},
                email="ada@example.com",
            )
        clock.advance(3600)  # the device stays offline for an hour
        with quick(db_path, timed, clock=clock) as ob:
            report = ob.flush(timeout=60)
            assert report.exit_code is ExitCode.DATA_ERROR
            link, email = ob.get(entry.id).deliveries
            assert link.state is DeliveryState.REJECTED
            assert link.error == "400 invalid_request: The request is not valid."
            assert link.field_errors == {"expiresAt": ["Must be in the future"]}
            assert email.state is DeliveryState.DELIVERED
            assert ob.get(entry.id).state is State.DONE
            assert "  field expiresAt: Must be in the future" in report.problems


class NotReadyFirst(httpx.BaseTransport):
    """In front of the sandbox: the first share POST is answered 409 ``not_ready``."""

    def __init__(self, sb: Sandbox) -> None:
        self.inner = sb.transport()
        self.refused = 0

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/shares") and not self.refused:
            self.refused += 1
            return httpx.Response(
                409,
                json={"error": {"code": "not_ready", "message": "The render has not succeeded."}},
            )
        return self.inner.handle_request(request)


def test_not_ready_waits_and_tries_again(db_path: Path, sb: Sandbox) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="nr", share=True)
    transport = NotReadyFirst(sb)
    with quick(db_path, sb, transport=transport) as ob:
        assert ob.flush(timeout=30).exit_code is ExitCode.OK
        [link] = ob.get(entry.id).deliveries
        assert link.state is DeliveryState.DELIVERED and link.attempts == 2
        states = [e.delivery_state for e in ob.history(entry.id) if e.delivery_id]
        assert states == ["pending", "unconfirmed", "pending", "unconfirmed", "delivered"]
    assert transport.refused == 1
    # 409 means nothing was made: the second try creates without listing first.
    assert "GET /v1/renders/:id/shares" not in sb.stats()["requests"]
    assert sb.stats()["shares_per_key"] == {"nr": {"link": 1, "email": 0}}


def test_a_share_id_is_recorded_by_one_delivery_only(db_path: Path, sb: Sandbox) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue(
            "inspection-report", INSPECTION, key="two", share=[True, {"message": "b"}]
        )
    with quick(db_path, sb) as ob:
        assert ob.flush(timeout=30).exit_code is ExitCode.OK
        first, second = ob.get(entry.id).deliveries
        with pytest.raises(LostRace, match="already recorded by another delivery"):
            ob.journal.move_delivery(
                second.id,
                DeliveryState.DELIVERED,
                DeliveryState.REVOKED,
                detail="x",
                share_id=first.share_id,
            )
        assert ob.get(entry.id).deliveries == (first, second)


# -- by hand ----------------------------------------------------------------------------------


def test_share_shares_and_revoke_by_hand(db_path: Path, sb: Sandbox) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="hand")
        waiting = ob.enqueue("inspection-report", INSPECTION, key="hand-2")
    with quick(db_path, sb) as ob:
        with pytest.raises(IllegalTransition, match="a link can be made once it is done"):
            ob.share(waiting.id)
        assert ob.flush(timeout=30).exit_code is ExitCode.OK
        link = ob.share(entry.id, expires_at=FUTURE, message="For the file")
        assert isinstance(link, Delivery) and link.by_hand
        assert link.state is DeliveryState.DELIVERED and link.share_url
        assert link.expires_at == "2031-01-01T00:00:00.000Z"
        assert httpx.get(link.share_url).status_code == 200  # one click
        [listed] = ob.shares(entry.id)
        assert (listed.id, listed.click_count, listed.message) == (link.share_id, 1, "For the file")
        assert link.share_id is not None
        revoked_at = ob.revoke(entry.id, link.share_id)
        assert revoked_at
        [after] = ob.get(entry.id).deliveries
        assert (after.state, after.revoked_at) == (DeliveryState.REVOKED, revoked_at)
        assert httpx.get(link.share_url).status_code == 410
        with pytest.raises(PermanentError, match="already revoked"):
            ob.revoke(entry.id, link.share_id)
        with pytest.raises(IllegalTransition, match="has no render at Craftkit yet"):
            ob.shares(ob.enqueue("invoice", {}).id)


def test_a_link_by_hand_whose_answer_is_lost_is_adopted_by_the_next_flush(
    db_path: Path, clock: FakeClock
) -> None:
    patient = Settings(
        retries=0,
        schedule=Schedule(delivery_retry=Backoff(5.0, 5.0, jitter=0.0), offline_grace=1.0),
    )
    with Sandbox(render_seconds=1.0, clock=clock, seed=4) as timed:
        with Outbox(db_path) as ob:
            entry = ob.enqueue("inspection-report", INSPECTION, key="hand-lost")
        with connected(db_path, timed, settings=patient, clock=clock) as ob:
            assert ob.flush(timeout=30).exit_code is ExitCode.OK
            timed.set_faults(drop_after=1.0)
            link = ob.share(entry.id, timeout=1.0)  # shorter than the 5 s until it is looked up
            assert link.state is DeliveryState.UNCONFIRMED
            assert link.error and "no answer" in link.error
        timed.set_faults(drop_after=0.0)
        with connected(db_path, timed, settings=patient, clock=clock) as ob:
            assert ob.flush(timeout=30).exit_code is ExitCode.OK
            [adopted] = ob.get(entry.id).deliveries
            assert adopted.state is DeliveryState.DELIVERED and adopted.attempts == 1
        assert timed.stats()["shares_per_key"] == {"hand-lost": {"link": 1, "email": 0}}


# -- the journal ------------------------------------------------------------------------------


def test_purge_keeps_a_done_entry_until_its_deliveries_are_finished(
    db_path: Path, sb: Sandbox
) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="purge", email="a@example.com")
    sb.set_faults(email_send_failed=1.0)
    with quick(db_path, sb) as ob:
        ob.flush(timeout=2)
        assert ob.get(entry.id).state is State.DONE
        assert ob.purge(older_than=-0.0) == 0, "its email is still on its way"
        sb.set_faults(email_send_failed=0.0)
        assert ob.flush(timeout=30).exit_code is ExitCode.OK
        assert ob.purge(older_than=0) == 1
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)


def test_a_journal_of_the_previous_schema_gets_deliveries(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db = sqlite_utils.Database(conn)
    for migrate in MIGRATIONS[: SCHEMA_VERSION - 1]:
        migrate(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")
    conn.commit()
    conn.close()
    with Outbox(path) as ob:
        assert ob.schema_version == SCHEMA_VERSION
        entry = ob.enqueue("invoice", {}, share=True)
        assert [d.channel for d in ob.get(entry.id).deliveries] == ["link"]


# -- the drop folder --------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "drop"
    path.mkdir()
    return path


def test_drop_folder_jobs_with_deliveries_get_their_links_in_the_result_file(
    db_path: Path, folder: Path, sb: Sandbox
) -> None:
    job = {
        "template": "inspection-report",
        "data": INSPECTION,
        "share": {"expires_at": FUTURE},
        "email": [{"to": "ada@example.com", "message": "Your report"}],
    }
    (folder / "visit.json").write_text(json.dumps(job))
    (folder / "bad.json").write_text(json.dumps({**job, "email": "ada@"}))
    with quick(db_path, sb) as ob:
        drop = DropFolder(ob, folder)
        report = drop.scan()
        assert [a.file for a in report.accepted] == ["visit.json"]
        [entry] = [a.entry for a in report.accepted]
        assert [d.channel for d in entry.deliveries] == ["link", "email"]
        assert (
            "email.to 'ada@' is not an email address"
            in (folder / "rejected" / "bad.error.txt").read_text()
        )
        # The same file dropped again (no key: it is derived from the content, deliveries
        # included) is the same job.
        (folder / "again.json").write_text(json.dumps(job))
        assert drop.scan().accepted[0].entry.id == entry.id
        assert ob.flush(timeout=30).exit_code is ExitCode.OK
        drop.write_results()
        for name in ("visit", "again"):
            result = json.loads((folder / "results" / f"{name}.result.json").read_text())
            assert result["state"] == "done"
            link, email = result["deliveries"]
            done = ob.get(entry.id).deliveries
            assert (link["state"], link["share_url"]) == ("delivered", done[0].share_url)
            assert link["expires_at"] == "2031-01-01T00:00:00.000Z"
            assert (email["state"], email["to"]) == ("delivered", "ada@example.com")
            assert email["email_message_id"] == done[1].email_message_id
    one_each(sb, [entry.key])


def test_a_job_re_dropped_with_other_deliveries_under_its_key_is_a_conflict(
    db_path: Path, folder: Path
) -> None:
    job = {"template": "invoice", "data": {}, "key": "job-7", "share": True}
    (folder / "a.json").write_text(json.dumps(job))
    with Outbox(db_path) as ob:
        drop = DropFolder(ob, folder)
        assert len(drop.scan().accepted) == 1
        (folder / "b.json").write_text(json.dumps({**job, "email": "x@example.com"}))
        [rejected] = drop.scan().rejected
        assert 'the key "job-7" already belongs to entry' in rejected.reason


@pytest.fixture
def ob_quick(db_path: Path, sb: Sandbox) -> Iterator[Outbox]:
    with quick(db_path, sb) as ob:
        yield ob


def test_on_change_sees_each_delivery_finish(ob_quick: Outbox, sb: Sandbox) -> None:
    seen: list[tuple[str | None, str | None]] = []
    ob_quick.on_change(lambda e: seen.append((e.delivery_id, e.delivery_state)))
    entry = ob_quick.enqueue("inspection-report", INSPECTION, share=True)
    ob_quick.start()
    try:
        wait_until(
            lambda: ob_quick.get(entry.id).deliveries[0].state is DeliveryState.DELIVERED,
            what="the link, made by the background worker",
        )
    finally:
        ob_quick.stop()
    [link] = ob_quick.get(entry.id).deliveries
    assert (link.id, "delivered") in seen
