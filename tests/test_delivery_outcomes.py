"""The delivery rows of the outcome table, one case per row, for a delivery in every state.

Pure: a delivery as the journal hands it to a worker, an answer (a share, a share list, an
error) and the time go in; the move comes out. The README's "Delivering" rows are
:class:`~outbox.outcomes.Rule` members; ``test_outcomes.py`` checks the README lists them all.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from outbox import outcomes
from outbox.client import Share
from outbox.clock import iso
from outbox.deliveries import (
    Delivery,
    DeliveryChanges,
    DeliveryState,
    can_move_delivery,
)
from outbox.errors import (
    AuthError,
    IllegalTransition,
    NotFound,
    Offline,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    RemoteError,
    ServerError,
)
from outbox.models import State
from outbox.outcomes import DeliveryMove, DeliveryOutcome, GiveBack, Network, Rule
from outbox.schedule import Schedule

NOW = 1_780_000_000.0
STARTED = NOW - 10.0
SCHEDULE = Schedule().with_rng(random.Random(5))


def delivery(state: DeliveryState, channel: str = "email", **fields: Any) -> Delivery:
    base: dict[str, Any] = {
        "id": "d1",
        "entry_id": "e1",
        "channel": channel,
        "to": "ada@example.com" if channel == "email" else None,
        "recipient_name": "Ada" if channel == "email" else None,
        "message": "Your report",
        "expires_at": "2030-01-01T00:00:00.000Z",
        "state": state,
        "attempts": 1,
        "share_id": None,
        "share_token": None,
        "share_url": None,
        "email_message_id": None,
        "sent_at": None,
        "revoked_at": None,
        "error": None,
        "error_code": None,
        "field_errors": None,
        "by_hand": False,
        "created_at": "2026-06-05T10:00:00.000Z",
        "updated_at": "2026-06-05T10:00:00.000Z",
        "attempt_started_at": STARTED,
    }
    base.update(fields)
    return Delivery(**base)


def share(
    share_id: str = "s1",
    *,
    channel: str = "email",
    to: str | None = "ada@example.com",
    message: str | None = "Your report",
    expires_at: str | None = "2030-01-01T00:00:00.000Z",
    created: float = STARTED + 0.2,
    revoked_at: str | None = None,
) -> Share:
    return Share(
        id=share_id,
        token=f"cks_{share_id}",
        url=f"https://craftkit.test/share/cks_{share_id}",
        channel=channel,
        recipient_email=to,
        message=message,
        expires_at=expires_at,
        revoked_at=revoked_at,
        created_at=iso(created),
    )


@dataclass(frozen=True)
class Case:
    name: str
    #: The one state the outcome may arrive in.
    phase: DeliveryState
    decide: Callable[[Delivery], DeliveryOutcome]
    rule: Rule
    #: None: the lease is given back untouched.
    target: DeliveryState | None
    event: bool
    network: Network
    changes: DeliveryChanges = field(default_factory=lambda: DeliveryChanges())
    http_status: int | None = None
    keep_lease: bool = False


def failed(error: RemoteError) -> Callable[[Delivery], DeliveryOutcome]:
    return lambda d: outcomes.delivery_failed(d, error, now=NOW, schedule=SCHEDULE)


def listed(
    shares: list[Share], recorded: frozenset[str] = frozenset()
) -> Callable[[Delivery], DeliveryOutcome]:
    return lambda d: outcomes.shares_listed(
        d, shares, recorded=set(recorded), now=NOW, schedule=SCHEDULE
    )


def listing_error(error: RemoteError) -> Callable[[Delivery], DeliveryOutcome]:
    return lambda d: outcomes.listing_failed(d, error, now=NOW, schedule=SCHEDULE)


DELIVERY_CASES = [
    Case(
        "sending",
        DeliveryState.PENDING,
        lambda d: outcomes.delivery_sending(d, now=NOW, schedule=SCHEDULE),
        Rule.DELIVERY_SENDING,
        DeliveryState.UNCONFIRMED,
        True,
        Network.NOTHING,
        DeliveryChanges(attempts=2, attempt_started_at=NOW, due_at=NOW + 2.0),
        keep_lease=True,
    ),
    Case(
        "created",
        DeliveryState.UNCONFIRMED,
        lambda d: outcomes.delivery_created(
            d, replace(share(), email_message_id="m1", sent_at="2026-06-05T10:00:01.000Z"), now=NOW
        ),
        Rule.DELIVERY_CREATED,
        DeliveryState.DELIVERED,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(
            share_id="s1",
            share_token="cks_s1",
            share_url="https://craftkit.test/share/cks_s1",
            email_message_id="m1",
            sent_at="2026-06-05T10:00:01.000Z",
            error=None,
        ),
        201,
    ),
    Case(
        "not-ready",
        DeliveryState.UNCONFIRMED,
        failed(PermanentError("409 not_ready", status=409, code="not_ready")),
        Rule.DELIVERY_NOT_READY,
        DeliveryState.PENDING,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(error_code="not_ready"),
        409,
    ),
    Case(
        "email-not-configured",
        DeliveryState.UNCONFIRMED,
        failed(ServerError("503 email_not_configured", status=503, code="email_not_configured")),
        Rule.DELIVERY_EMAIL_NOT_CONFIGURED,
        DeliveryState.FAILED,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(
            error="email is not configured for this Craftkit project",
            error_code="email_not_configured",
        ),
        503,
    ),
    Case(
        "refused",
        DeliveryState.UNCONFIRMED,
        failed(
            PermanentError(
                "400 invalid_request: The request is not valid.",
                status=400,
                code="invalid_request",
                field_errors={"expiresAt": ["Must be in the future"]},
            )
        ),
        Rule.DELIVERY_REFUSED,
        DeliveryState.REJECTED,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(
            error="400 invalid_request: The request is not valid.",
            error_code="invalid_request",
            field_errors={"expiresAt": ["Must be in the future"]},
            attempt_started_at=None,
        ),
        400,
    ),
    Case(
        "render-unknown",
        DeliveryState.UNCONFIRMED,
        failed(NotFound("404 not_found: Render not found.", status=404, code="not_found")),
        Rule.DELIVERY_REFUSED,
        DeliveryState.REJECTED,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(error_code="not_found"),
        404,
    ),
    Case(
        "email-send-failed",
        DeliveryState.UNCONFIRMED,
        failed(ServerError("502 email_send_failed", status=502, code="email_send_failed")),
        Rule.DELIVERY_OUTCOME_UNKNOWN,
        DeliveryState.UNCONFIRMED,
        True,
        Network.ANSWERED,
        DeliveryChanges(error_code="email_send_failed"),
        502,
    ),
    Case(
        "server-error-after-sending",
        DeliveryState.UNCONFIRMED,
        failed(ServerError("500 internal", status=500, code="internal")),
        Rule.DELIVERY_OUTCOME_UNKNOWN,
        DeliveryState.UNCONFIRMED,
        True,
        Network.TROUBLE,
        DeliveryChanges(error_code="internal"),
        500,
    ),
    Case(
        "answer-lost",
        DeliveryState.UNCONFIRMED,
        failed(OutcomeUnknown("no complete answer")),
        Rule.DELIVERY_OUTCOME_UNKNOWN,
        DeliveryState.UNCONFIRMED,
        True,
        Network.NOTHING,
        DeliveryChanges(error_code="OutcomeUnknown"),
    ),
    Case(
        "adopted",
        DeliveryState.UNCONFIRMED,
        listed([share("newer", message="another"), share("s1")]),
        Rule.DELIVERY_ADOPTED,
        DeliveryState.DELIVERED,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(share_id="s1", share_url="https://craftkit.test/share/cks_s1"),
        200,
    ),
    Case(
        "adopted-though-revoked",
        DeliveryState.UNCONFIRMED,
        listed([share("s1", revoked_at=iso(NOW - 1))]),
        Rule.DELIVERY_ADOPTED,
        DeliveryState.DELIVERED,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(share_id="s1"),
        200,
    ),
    Case(
        "no-match",
        DeliveryState.UNCONFIRMED,
        listed([]),
        Rule.DELIVERY_NO_MATCH,
        DeliveryState.UNCONFIRMED,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(attempts=2, attempt_started_at=NOW, due_at=NOW + 2.0),
        200,
        keep_lease=True,
    ),
    Case(
        "only-a-recorded-share-matches",
        DeliveryState.UNCONFIRMED,
        listed([share("s1")], recorded=frozenset({"s1"})),
        Rule.DELIVERY_NO_MATCH,
        DeliveryState.UNCONFIRMED,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(attempt_started_at=NOW),
        200,
        keep_lease=True,
    ),
    Case(
        "listing-failed",
        DeliveryState.UNCONFIRMED,
        listing_error(ServerError("503", status=503, code="queue_unavailable")),
        Rule.DELIVERY_LIST_FAILED,
        DeliveryState.UNCONFIRMED,
        True,
        Network.TROUBLE,
        DeliveryChanges(error="checking the render's shares failed: 503"),
        503,
    ),
    Case(
        "listing-lost",
        DeliveryState.UNCONFIRMED,
        listing_error(OutcomeUnknown("reset")),
        Rule.DELIVERY_LIST_FAILED,
        DeliveryState.UNCONFIRMED,
        True,
        Network.NOTHING,
    ),
    *[
        Case(
            f"{name}-offline",
            DeliveryState.UNCONFIRMED,
            decide(Offline("cannot reach")),
            Rule.OFFLINE,
            None,
            False,
            Network.TROUBLE,
        )
        for name, decide in (("create", failed), ("listing", listing_error))
    ],
    Case(
        "create-key-refused",
        DeliveryState.UNCONFIRMED,
        failed(AuthError("refused", status=401)),
        Rule.KEY_REFUSED,
        None,
        False,
        Network.TROUBLE,
    ),
    Case(
        "create-rate-limited",
        DeliveryState.UNCONFIRMED,
        failed(RateLimited("429", status=429, retry_after=7.0)),
        Rule.RATE_LIMITED,
        DeliveryState.UNCONFIRMED,
        False,
        Network.TROUBLE,
        DeliveryChanges(due_at=NOW + 7.0),
    ),
    Case(
        "revoked",
        DeliveryState.DELIVERED,
        lambda d: outcomes.revoke_recorded(d, "2026-06-05T11:00:00.000Z", now=NOW),
        Rule.REVOKE,
        DeliveryState.REVOKED,
        True,
        Network.KEY_ACCEPTED,
        DeliveryChanges(revoked_at="2026-06-05T11:00:00.000Z"),
        200,
    ),
]

#: The rules these cases cover (``test_outcomes.py`` checks every rule is covered somewhere).
COVERED = {case.rule for case in DELIVERY_CASES} | {Rule.SHARE}


@pytest.mark.parametrize("state", list(DeliveryState))
@pytest.mark.parametrize("case", DELIVERY_CASES, ids=lambda case: case.name)
def test_every_delivery_outcome_in_every_state(case: Case, state: DeliveryState) -> None:
    before = delivery(state)
    if state is not case.phase:
        with pytest.raises(IllegalTransition, match=f"for delivery d1, which is {state}"):
            case.decide(before)
        return
    outcome = case.decide(before)
    assert outcome.rule is case.rule
    assert outcome.network is case.network
    if case.target is None:
        assert isinstance(outcome, GiveBack)
        return
    assert isinstance(outcome, DeliveryMove)
    assert outcome.target is case.target
    assert can_move_delivery(state, outcome.target)
    assert (outcome.detail is not None) is case.event
    if not case.event:
        assert outcome.target is state, "a move without an event never changes the state"
    assert outcome.http_status == case.http_status
    assert outcome.keep_lease is case.keep_lease
    assert {name: outcome.changes.get(name, "absent") for name in case.changes} == case.changes


def test_a_failed_delivery_waits_with_backoff_from_the_schedule() -> None:
    for attempts in (4, 6):
        outcome = failed(OutcomeUnknown("lost"))(
            delivery(DeliveryState.UNCONFIRMED, attempts=attempts)
        )
        assert isinstance(outcome, DeliveryMove)
        ceiling = SCHEDULE.delivery_retry.ceiling(attempts)
        assert NOW + ceiling / 2 <= outcome.changes["due_at"] <= NOW + ceiling
    # ... but a create that may still be on its way is never looked for before it settled.
    first = failed(OutcomeUnknown("lost"))(delivery(DeliveryState.UNCONFIRMED, attempts=1))
    assert isinstance(first, DeliveryMove)
    assert first.changes["due_at"] == NOW + SCHEDULE.delivery_settle
    assert first.detail is not None and "shares are checked before sending again" in first.detail


def test_email_not_configured_says_so_plainly() -> None:
    outcome = failed(ServerError("503", status=503, code="email_not_configured"))(
        delivery(DeliveryState.UNCONFIRMED)
    )
    assert isinstance(outcome, DeliveryMove) and outcome.detail is not None
    assert "email is not configured for this Craftkit project" in outcome.detail
    assert "not retried" in outcome.detail


@pytest.mark.parametrize(
    ("why", "listed_share"),
    [
        ("another channel", share(channel="link", to=None)),
        ("another recipient", share(to="bob@example.com")),
        ("another message", share(message="Hello")),
        ("no message", share(message=None)),
        ("another expiry", share(expires_at="2030-01-02T00:00:00.000Z")),
        ("no expiry", share(expires_at=None)),
        ("created before the attempt started", share(created=STARTED - 121)),
        ("no creation time", replace(share(), created_at=None)),
    ],
)
def test_a_share_that_differs_in_anything_is_not_adopted(why: str, listed_share: Share) -> None:
    unconfirmed = delivery(DeliveryState.UNCONFIRMED)
    found = outcomes.matching_share(unconfirmed, [listed_share], recorded=set(), slack=120.0)
    assert found is None, why


def test_matching_tolerates_clock_skew_case_and_time_notation() -> None:
    unconfirmed = delivery(
        DeliveryState.UNCONFIRMED, to="Ada@Example.com", expires_at="2030-01-01T00:00:00.000Z"
    )
    listed_share = share(created=STARTED - 60, expires_at="2030-01-01T01:00:00+01:00")
    found = outcomes.matching_share(unconfirmed, [listed_share], recorded=set(), slack=120.0)
    assert found == listed_share


def test_of_several_matches_the_oldest_is_adopted() -> None:
    unconfirmed = delivery(DeliveryState.UNCONFIRMED)
    newest_first = [share("s3", created=STARTED + 3), share("s2", created=STARTED + 2)]
    found = outcomes.matching_share(unconfirmed, newest_first, recorded=set(), slack=0.0)
    assert found is not None and found.id == "s2"


def test_a_delivery_never_attempted_matches_nothing() -> None:
    never = delivery(DeliveryState.UNCONFIRMED, attempt_started_at=None)
    assert outcomes.matching_share(never, [share()], recorded=set(), slack=120.0) is None


def test_a_link_matches_a_link_share() -> None:
    link = delivery(DeliveryState.UNCONFIRMED, channel="link", message=None, expires_at=None)
    found = outcomes.matching_share(
        link,
        [share(channel="link", to=None, message=None, expires_at=None)],
        recorded=set(),
        slack=120.0,
    )
    assert found is not None


@pytest.mark.parametrize("state", list(State))
def test_share_by_hand_only_for_a_done_entry(state: State) -> None:
    from test_outcomes import entry

    if state is State.DONE:
        outcomes.share_requested(entry(state))
        return
    with pytest.raises(IllegalTransition, match="a link can be made once it is done"):
        outcomes.share_requested(entry(state))
