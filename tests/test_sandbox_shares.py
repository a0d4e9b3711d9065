"""Share links and emails: create, list, revoke, email, the guest link itself, validation,
faults around creation, counts, and persistence across a restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_support import client as sandbox_client
from sandbox_support import error_code, field_errors, pdf_text, render, wait_status
from support import FakeClock

from outbox import rules
from outbox.sandbox import Faults, Sandbox

SHARE_FIELDS = {
    "id",
    "shareToken",
    "shareUrl",
    "channel",
    "recipientEmail",
    "message",
    "expiresAt",
    "revokedAt",
    "createdAt",
}


@pytest.fixture
def http(sb: Sandbox) -> Iterator[httpx.Client]:
    with sandbox_client(sb) as client:
        yield client


def succeeded(http: httpx.Client, key: str = "shared") -> str:
    """A render made with ``key`` that has succeeded; its id."""
    render_id: str = render(http, key=key).json()["id"]
    assert wait_status(http, render_id, "succeeded")["status"] == "succeeded"
    return render_id


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def in_a_day() -> datetime:
    """A day from now, on a whole quarter second (so it survives millisecond rounding)."""
    return (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=250_000)


# --- create ---------------------------------------------------------------------------------


def test_create_share_answers_201_with_the_documented_shape(
    sb: Sandbox, http: httpx.Client
) -> None:
    render_id = succeeded(http)
    expires = in_a_day()
    created = http.post(
        f"/v1/renders/{render_id}/shares",
        json={"message": "Your report", "expiresAt": expires.isoformat(), "extra": 1},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == SHARE_FIELDS
    assert body["channel"] == "link" and body["recipientEmail"] is None
    assert body["message"] == "Your report"
    assert body["expiresAt"] == iso(expires)
    assert body["revokedAt"] is None
    assert body["shareToken"].startswith("cks_")
    assert body["shareUrl"] == f"{sb.base_url}/share/{body['shareToken']}"
    bare = http.post(f"/v1/renders/{render_id}/shares")  # no body at all: every field optional
    assert bare.status_code == 201 and bare.json()["expiresAt"] is None
    assert bare.json()["shareToken"] != body["shareToken"]


def test_email_channel_share_needs_a_recipient_and_sends_nothing(
    sb: Sandbox, http: httpx.Client
) -> None:
    render_id = succeeded(http)
    missing = http.post(f"/v1/renders/{render_id}/shares", json={"channel": "email"})
    assert missing.status_code == 400
    assert field_errors(missing) == {"recipientEmail": [rules.MSG_REQUIRED]}
    made = http.post(
        f"/v1/renders/{render_id}/shares",
        json={"channel": "email", "recipientEmail": "ada@example.com"},
    )
    assert made.status_code == 201 and made.json()["channel"] == "email"
    assert sb.stats()["emails_sent"] == 0 and sb.sent_emails() == []


def test_share_before_the_render_succeeded_is_409_not_ready(
    timed: Sandbox, clock: FakeClock
) -> None:
    with sandbox_client(timed) as http:
        render_id = render(http, key="early").json()["id"]
        for path, body in (("shares", {}), ("email", {"to": "ada@example.com"})):
            early = http.post(f"/v1/renders/{render_id}/{path}", json=body)
            assert early.status_code == 409 and error_code(early) == "not_ready"
        clock.advance(11)
        assert http.post(f"/v1/renders/{render_id}/shares").status_code == 201
    assert timed.stats()["shares_created"] == 1


def test_a_failed_render_is_never_ready(sb: Sandbox, http: httpx.Client) -> None:
    render_id = render(http, slug="always-fails", data={"title": "x"}).json()["id"]
    assert wait_status(http, render_id, "failed")["status"] == "failed"
    assert http.post(f"/v1/renders/{render_id}/shares").status_code == 409


def test_shares_of_unknown_or_foreign_renders_are_404(sb: Sandbox, http: httpx.Client) -> None:
    render_id = succeeded(http)
    with sandbox_client(sb, sb.other_project_key) as other:
        for method, path in (
            ("POST", f"/v1/renders/{render_id}/shares"),
            ("GET", f"/v1/renders/{render_id}/shares"),
            ("POST", f"/v1/renders/{render_id}/email"),
            ("DELETE", f"/v1/renders/{render_id}/shares/x"),
        ):
            answer = other.request(method, path, json={"to": "a@example.com"})
            assert answer.status_code == 404 and error_code(answer) == "not_found"
    assert http.get("/v1/renders/nope/shares").status_code == 404
    assert httpx.get(f"{sb.base_url}/v1/renders/{render_id}/shares").status_code == 401
    assert http.put(f"/v1/renders/{render_id}/shares").status_code == 405


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"message": "x" * 2001}, {"message": [rules.string_too_long(2000)]}),
        ({"message": None}, {"message": ["Expected string, received null"]}),
        (
            {"channel": "sms"},
            {"channel": ["Invalid enum value. Expected 'link' | 'email', received 'sms'"]},
        ),
        ({"channel": 3}, {"channel": ["Expected 'link' | 'email', received number"]}),
        ({"recipientEmail": "not-an-address"}, {"recipientEmail": [rules.MSG_INVALID_EMAIL]}),
        ({"expiresAt": "tomorrow"}, {"expiresAt": [rules.MSG_INVALID_DATETIME]}),
        ({"expiresAt": "2031-02-30T10:00:00Z"}, {"expiresAt": [rules.MSG_INVALID_DATETIME]}),
        ({"expiresAt": "2031-01-01T10:00:00"}, {"expiresAt": [rules.MSG_INVALID_DATETIME]}),
        ({"expiresAt": "2020-01-01T00:00:00Z"}, {"expiresAt": [rules.MSG_NOT_IN_FUTURE]}),
        ({"expiresAt": 1767225600000}, {"expiresAt": ["Expected string, received number"]}),
    ],
)
def test_share_validation(http: httpx.Client, body: dict[str, Any], errors: Any) -> None:
    render_id = succeeded(http)
    refused = http.post(f"/v1/renders/{render_id}/shares", json=body)
    assert refused.status_code == 400
    assert error_code(refused) == "invalid_request"
    assert field_errors(refused) == errors


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"to": [rules.MSG_REQUIRED]}),
        ({"to": "ada@"}, {"to": [rules.MSG_INVALID_EMAIL]}),
        (
            {"to": "ada@example.com", "recipientName": "A" * 201, "message": "m" * 2001},
            {
                "recipientName": [rules.string_too_long(200)],
                "message": [rules.string_too_long(2000)],
            },
        ),
        (
            {"to": "ada@example.com", "expiresAt": "2001-01-01T00:00:00+02:00"},
            {"expiresAt": [rules.MSG_NOT_IN_FUTURE]},
        ),
    ],
)
def test_email_validation(
    sb: Sandbox, http: httpx.Client, body: dict[str, Any], errors: Any
) -> None:
    render_id = succeeded(http)
    refused = http.post(f"/v1/renders/{render_id}/email", json=body)
    assert refused.status_code == 400 and error_code(refused) == "invalid_request"
    assert field_errors(refused) == errors
    assert sb.stats()["emails_sent"] == 0


def test_limits_are_inclusive(sb: Sandbox, http: httpx.Client) -> None:
    render_id = succeeded(http)
    sent = http.post(
        f"/v1/renders/{render_id}/email",
        json={"to": "ada@example.com", "recipientName": "A" * 200, "message": "m" * 2000},
    )
    assert sent.status_code == 201, sent.text


@pytest.mark.parametrize("raw", [b"{", b"[1]", b'"text"'])
def test_bodies_that_are_not_objects(http: httpx.Client, raw: bytes) -> None:
    render_id = succeeded(http)
    refused = http.post(
        f"/v1/renders/{render_id}/shares",
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    assert refused.status_code == 400
    assert error_code(refused) == ("invalid_json" if raw == b"{" else "invalid_request")


# --- list and revoke ------------------------------------------------------------------------


def test_list_is_newest_first_with_revoked_ones_and_click_counts(
    sb: Sandbox, http: httpx.Client
) -> None:
    render_id = succeeded(http)
    other_id = succeeded(http, key="other")
    assert http.get(f"/v1/renders/{render_id}/shares").json() == {"shares": []}
    made = [
        http.post(f"/v1/renders/{render_id}/shares", json={"message": f"m{n}"}).json()
        for n in range(3)
    ]
    http.post(f"/v1/renders/{other_id}/shares")
    revoked = http.delete(f"/v1/renders/{render_id}/shares/{made[1]['id']}")
    assert revoked.status_code == 200
    assert set(revoked.json()) == {"id", "revokedAt"} and revoked.json()["id"] == made[1]["id"]
    for _ in range(2):
        assert httpx.get(made[0]["shareUrl"]).status_code == 200
    rows = http.get(f"/v1/renders/{render_id}/shares").json()["shares"]
    assert [row["id"] for row in rows] == [m["id"] for m in reversed(made)]
    assert all(set(row) == SHARE_FIELDS | {"clickCount"} for row in rows)
    assert [row["clickCount"] for row in rows] == [0, 0, 2]
    assert rows[1]["revokedAt"] == revoked.json()["revokedAt"]
    assert rows[0]["revokedAt"] is None and rows[2]["revokedAt"] is None


def test_second_revoke_and_unknown_shares_are_404(http: httpx.Client) -> None:
    render_id = succeeded(http)
    other_id = succeeded(http, key="other")
    share = http.post(f"/v1/renders/{render_id}/shares").json()
    assert http.delete(f"/v1/renders/{other_id}/shares/{share['id']}").status_code == 404
    assert http.delete(f"/v1/renders/{render_id}/shares/{share['id']}").status_code == 200
    again = http.delete(f"/v1/renders/{render_id}/shares/{share['id']}")
    assert again.status_code == 404 and error_code(again) == "not_found"
    assert http.delete(f"/v1/renders/{render_id}/shares/nope").status_code == 404


# --- the guest link ------------------------------------------------------------------------


def test_share_url_serves_the_pdf_and_stops_when_revoked(sb: Sandbox, http: httpx.Client) -> None:
    render_id = succeeded(http)
    share = http.post(f"/v1/renders/{render_id}/shares").json()
    opened = httpx.get(share["shareUrl"])  # no key: guests open it
    assert opened.status_code == 200 and opened.headers["content-type"] == "application/pdf"
    assert "Render: " + render_id in pdf_text(opened.content)
    assert httpx.head(share["shareUrl"]).status_code == 200  # a HEAD is not a click
    http.delete(f"/v1/renders/{render_id}/shares/{share['id']}")
    gone = httpx.get(share["shareUrl"])
    assert gone.status_code == 410 and "revoked" in gone.text
    assert httpx.get(f"{sb.base_url}/share/cks_unknown").status_code == 404
    assert sb.stats()["share_clicks"] == 1


def test_share_url_stops_when_expired(timed: Sandbox, clock: FakeClock) -> None:
    with sandbox_client(timed) as http:
        render_id = render(http).json()["id"]
        clock.advance(11)
        expires = datetime.fromtimestamp(clock(), UTC) + timedelta(hours=1)
        share = http.post(
            f"/v1/renders/{render_id}/shares", json={"expiresAt": expires.isoformat()}
        ).json()
        assert httpx.get(share["shareUrl"]).status_code == 200
        clock.advance(3600)
        expired = httpx.get(share["shareUrl"])
        assert expired.status_code == 410 and "expired" in expired.text
        row = http.get(f"/v1/renders/{render_id}/shares").json()["shares"][0]
        assert row["revokedAt"] is None and row["clickCount"] == 1


def test_share_links_obey_the_pdf_faults_of_the_render(sb: Sandbox, http: httpx.Client) -> None:
    render_id = succeeded(http, key="cut")
    share = http.post(f"/v1/renders/{render_id}/shares").json()
    sb.set_faults(keys={"cut": {"truncate_downloads": 1.0}})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(share["shareUrl"])


# --- email ---------------------------------------------------------------------------------


def test_email_answers_201_and_is_recorded(sb: Sandbox, http: httpx.Client) -> None:
    render_id = succeeded(http)
    expires = in_a_day()
    sent = http.post(
        f"/v1/renders/{render_id}/email",
        json={
            "to": "grace@example.com",
            "recipientName": "Grace",
            "message": "Your inspection report",
            "expiresAt": iso(expires),
        },
    )
    assert sent.status_code == 201, sent.text
    body = sent.json()
    assert set(body) == {"id", "shareToken", "shareUrl", "emailMessageId", "sentAt"}
    assert body["shareUrl"] == f"{sb.base_url}/share/{body['shareToken']}"
    assert httpx.get(body["shareUrl"]).status_code == 200
    row = http.get(f"/v1/renders/{render_id}/shares").json()["shares"][0]
    assert row["id"] == body["id"] and row["channel"] == "email"
    assert row["recipientEmail"] == "grace@example.com"
    assert row["message"] == "Your inspection report" and row["expiresAt"] == iso(expires)
    emails = sb.sent_emails()
    assert emails == [
        {
            "renderId": render_id,
            "idempotencyKey": "shared",
            "shareId": body["id"],
            "to": "grace@example.com",
            "recipientName": "Grace",
            "message": "Your inspection report",
            "expiresAt": iso(expires),
            "emailMessageId": body["emailMessageId"],
            "sentAt": body["sentAt"],
        }
    ]
    assert httpx.get(f"{sb.base_url}/_sandbox/emails").json() == {"emails": emails}


def test_email_not_configured_is_503_and_sends_nothing(sb: Sandbox, http: httpx.Client) -> None:
    render_id = succeeded(http)
    sb.set_faults(email_not_configured=True)
    refused = http.post(f"/v1/renders/{render_id}/email", json={"to": "ada@example.com"})
    assert refused.status_code == 503 and error_code(refused) == "email_not_configured"
    assert http.post(f"/v1/renders/{render_id}/shares").status_code == 201  # links still work
    stats = sb.stats()
    assert stats["emails_sent"] == 0 and stats["shares_per_render"] == {
        render_id: {"link": 1, "email": 0}
    }
    assert stats["faults_injected"]["email_not_configured"] == 1


def test_email_send_failed_is_502_and_keeps_nothing(sb: Sandbox, http: httpx.Client) -> None:
    render_id = succeeded(http)
    healthy_id = succeeded(http, key="healthy")
    sb.set_faults(keys={"shared": {"email_send_failed": 1.0}})
    failed = http.post(f"/v1/renders/{render_id}/email", json={"to": "ada@example.com"})
    assert failed.status_code == 502 and error_code(failed) == "email_send_failed"
    assert http.get(f"/v1/renders/{render_id}/shares").json() == {"shares": []}
    assert (
        http.post(f"/v1/renders/{healthy_id}/email", json={"to": "ada@example.com"}).status_code
        == 201
    )
    sb.set_faults(keys={})
    assert (
        http.post(f"/v1/renders/{render_id}/email", json={"to": "ada@example.com"}).status_code
        == 201
    )
    assert sb.stats()["emails_per_render"] == {render_id: 1, healthy_id: 1}


# --- faults around creation ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["shares", "email"])
def test_lost_answer_after_creating_a_share_or_email(
    sb: Sandbox, http: httpx.Client, path: str
) -> None:
    render_id = succeeded(http)
    sb.set_faults(drop_after=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"/v1/renders/{render_id}/{path}", json={"to": "ada@example.com"})
    sb.set_faults(drop_after=0.0)
    rows = http.get(f"/v1/renders/{render_id}/shares").json()["shares"]
    assert len(rows) == 1  # made, though the client never heard of it
    stats = sb.stats()
    assert stats["emails_sent"] == (1 if path == "email" else 0)
    assert stats["requests"][f"POST /v1/renders/:id/{path}"] == {"dropped": 1}


def test_500_after_creating_and_before_creating(sb: Sandbox, http: httpx.Client) -> None:
    render_id = succeeded(http)
    sb.set_faults(error_500_after=1.0)
    assert http.post(f"/v1/renders/{render_id}/shares").status_code == 500
    sb.set_faults(error_500_after=0.0, error_503_before=1.0)
    assert http.post(f"/v1/renders/{render_id}/shares").status_code == 503
    sb.set_faults(error_503_before=0.0, redirect_post=307)
    assert http.post(f"/v1/renders/{render_id}/email", json={"to": "a@b.co"}).status_code == 307
    assert sb.stats()["shares_created"] == 1


def test_creation_faults_for_one_key_only(sb: Sandbox, http: httpx.Client) -> None:
    poisoned = succeeded(http, key="lossy")
    healthy = succeeded(http, key="fine")
    sb.set_faults(keys={"lossy": {"drop_after": 1.0}})
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"/v1/renders/{poisoned}/shares")
    assert http.post(f"/v1/renders/{healthy}/shares").status_code == 201
    assert sb.stats()["shares_per_key"] == {
        "lossy": {"link": 1, "email": 0},
        "fine": {"link": 1, "email": 0},
    }


def test_shares_reach_a_render_through_its_hostile_id(sb: Sandbox, http: httpx.Client) -> None:
    sb.set_faults(keys={"odd": {"render_id": "a?b=c#d"}})
    assert render(http, key="odd").json()["id"] == "a?b=c#d"
    assert wait_status(http, "a%3Fb%3Dc%23d", "succeeded")["status"] == "succeeded"
    share = http.post("/v1/renders/a%3Fb%3Dc%23d/shares")
    assert share.status_code == 201
    listed = http.get("/v1/renders/a%3Fb%3Dc%23d/shares").json()["shares"]
    assert [row["id"] for row in listed] == [share.json()["id"]]


# --- counts and persistence ----------------------------------------------------------------


def test_stats_count_shares_and_emails_per_render_and_key(sb: Sandbox, http: httpx.Client) -> None:
    first = succeeded(http, key="one")
    second = succeeded(http, key="two")
    http.post(f"/v1/renders/{first}/shares")
    http.post(f"/v1/renders/{first}/email", json={"to": "a@example.com"})
    http.post(f"/v1/renders/{first}/email", json={"to": "b@example.com"})
    link = http.post(f"/v1/renders/{second}/shares").json()
    http.delete(f"/v1/renders/{second}/shares/{link['id']}")
    stats = httpx.get(f"{sb.base_url}/_sandbox/stats").json()
    assert stats["shares_created"] == 4 and stats["shares_revoked"] == 1
    assert stats["shares_per_render"] == {
        first: {"link": 1, "email": 2},
        second: {"link": 1, "email": 0},
    }
    assert stats["shares_per_key"] == {
        "one": {"link": 1, "email": 2},
        "two": {"link": 1, "email": 0},
    }
    assert stats["emails_sent"] == 2
    assert stats["emails_per_render"] == {first: 2} and stats["emails_per_key"] == {"one": 2}


def test_shares_and_emails_survive_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    state = tmp_path / "state"
    with Sandbox(state_dir=state, render_seconds=1, clock=clock) as first:
        with sandbox_client(first) as http:
            render_id = render(http, key="kept").json()["id"]
            clock.advance(2)
            link = http.post(f"/v1/renders/{render_id}/shares").json()
            revoked = http.post(f"/v1/renders/{render_id}/shares").json()
            http.delete(f"/v1/renders/{render_id}/shares/{revoked['id']}")
            http.post(f"/v1/renders/{render_id}/email", json={"to": "a@example.com"})
            assert httpx.get(link["shareUrl"]).status_code == 200
        emails = first.sent_emails()
    with Sandbox(state_dir=state, render_seconds=1, clock=clock) as second:
        assert second.sent_emails() == emails
        with sandbox_client(second) as http:
            rows = http.get(f"/v1/renders/{render_id}/shares").json()["shares"]
            assert [row["channel"] for row in rows] == ["email", "link", "link"]
            assert rows[1]["revokedAt"] is not None and rows[2]["clickCount"] == 1
            new_url = link["shareUrl"].replace(
                link["shareUrl"].split("/share/")[0], second.base_url
            )
            assert httpx.get(new_url).status_code == 200
            assert http.delete(f"/v1/renders/{render_id}/shares/{revoked['id']}").status_code == 404
        stats = second.stats()
        assert stats["shares_created"] == 3 and stats["emails_sent"] == 1
        assert stats["share_clicks"] == 2


def test_email_faults_from_the_start() -> None:
    faults = Faults(email_not_configured=True)
    with Sandbox(render_seconds=0, faults=faults) as sandbox, sandbox_client(sandbox) as http:
        render_id = render(http).json()["id"]
        refused = http.post(f"/v1/renders/{render_id}/email", json={"to": "a@example.com"})
        assert refused.status_code == 503
