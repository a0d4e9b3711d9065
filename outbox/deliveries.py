"""Deliveries: share links and emails that go with a render request, and their states.

A request may ask Craftkit to hand the finished document to people: a durable, revokable guest
link (``POST /v1/renders/:id/shares``) or an email with such a link (``POST
/v1/renders/:id/email``). Each one is a :class:`DeliveryRequest`, checked at enqueue with
Craftkit's own limits (:mod:`outbox.rules`), journalled with the entry, and carried out once
the entry is ``done``. Neither endpoint takes an idempotency key, so a delivery whose create
may have reached Craftkit is ``unconfirmed`` until the render's shares have been looked at
(see :mod:`outbox.outcomes`).

Pure data: nothing here does I/O.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from . import rules
from .errors import InvalidArgument

Channel = Literal["link", "email"]
LINK: Channel = "link"
EMAIL: Channel = "email"

#: The most deliveries one request may ask for.
MAX_DELIVERIES = 50

_EMAIL = re.compile(rules.EMAIL_PATTERN)
_DATETIME = re.compile(rules.DATETIME_PATTERN)
_SHARE_FIELDS = ("expires_at", "message")
_EMAIL_FIELDS = ("to", "recipient_name", "message", "expires_at")


class DeliveryState(enum.StrEnum):
    """Where a delivery stands. See the README's "Delivering documents" section."""

    #: Not created yet: waits for the entry to be ``done``, or for its next try.
    PENDING = "pending"
    #: A create was (or was about to be) sent and its answer is not recorded; before creating
    #: again, the render's shares are listed and a matching one is adopted.
    UNCONFIRMED = "unconfirmed"
    #: The link exists (share id, token and URL recorded); an email was sent.
    DELIVERED = "delivered"
    #: Craftkit cannot do it for this project (email is not configured); not retried.
    FAILED = "failed"
    #: Craftkit refused the request (400 and other 4xx), with its message; not retried.
    REJECTED = "rejected"
    #: The link was revoked (``outbox revoke``).
    REVOKED = "revoked"

    @property
    def is_finished(self) -> bool:
        """True when nothing will happen to the delivery by itself any more."""
        return self not in (DeliveryState.PENDING, DeliveryState.UNCONFIRMED)


#: Every move a delivery may make; a move to the same state records an event only.
DELIVERY_TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.PENDING: frozenset({DeliveryState.PENDING, DeliveryState.UNCONFIRMED}),
    DeliveryState.UNCONFIRMED: frozenset(
        {
            DeliveryState.UNCONFIRMED,
            DeliveryState.PENDING,
            DeliveryState.DELIVERED,
            DeliveryState.FAILED,
            DeliveryState.REJECTED,
        }
    ),
    DeliveryState.DELIVERED: frozenset({DeliveryState.REVOKED}),
    DeliveryState.FAILED: frozenset(),
    DeliveryState.REJECTED: frozenset(),
    DeliveryState.REVOKED: frozenset(),
}

UNFINISHED_DELIVERY_STATES = frozenset({DeliveryState.PENDING, DeliveryState.UNCONFIRMED})


def can_move_delivery(source: DeliveryState, target: DeliveryState) -> bool:
    """Whether the journal allows a delivery to move from ``source`` to ``target``."""
    return target in DELIVERY_TRANSITIONS[source]


class DeliveryChanges(TypedDict, total=False):
    """The fields of a delivery that a move may change, with their types."""

    attempts: int
    due_at: float
    attempt_started_at: float | None
    share_id: str | None
    share_token: str | None
    share_url: str | None
    email_message_id: str | None
    sent_at: str | None
    revoked_at: str | None
    error: str | None
    error_code: str | None
    field_errors: dict[str, list[str]] | None


@dataclass(frozen=True)
class DeliveryRequest:
    """One checked delivery: a ``link``, or an ``email`` to ``to``.

    ``expires_at`` is kept as UTC ISO-8601 with milliseconds (Craftkit's own form), so what is
    sent and what Craftkit lists compare equal.
    """

    channel: Channel
    to: str | None = None
    recipient_name: str | None = None
    message: str | None = None
    expires_at: str | None = None

    def describe(self) -> str:
        """``share link`` or ``email to ada@example.com``, for history lines and messages."""
        return "share link" if self.channel == LINK else f"email to {self.to}"


@dataclass(frozen=True)
class Delivery:
    """One delivery in the journal, as it stood when it was read."""

    id: str
    entry_id: str
    channel: Channel
    to: str | None
    recipient_name: str | None
    message: str | None
    expires_at: str | None
    state: DeliveryState
    attempts: int
    share_id: str | None
    share_token: str | None
    share_url: str | None
    email_message_id: str | None
    sent_at: str | None
    revoked_at: str | None
    error: str | None
    error_code: str | None
    field_errors: dict[str, list[str]] | None
    #: True for a link made with ``outbox share`` / ``Outbox.share`` rather than requested
    #: with the render.
    by_hand: bool
    created_at: str
    updated_at: str
    due_at: float = field(repr=False, default=0.0)
    #: Wall-clock time the latest create was about to be sent (None before the first).
    attempt_started_at: float | None = field(repr=False, default=None)

    @property
    def request(self) -> DeliveryRequest:
        return DeliveryRequest(
            self.channel, self.to, self.recipient_name, self.message, self.expires_at
        )

    def describe(self) -> str:
        return self.request.describe()

    def status_line(self) -> str:
        """One line for a person: what it is and how it stands (the URL once there is one)."""
        what = self.describe()
        if self.state is DeliveryState.DELIVERED:
            if self.channel == EMAIL:
                sent = f" at {self.sent_at}" if self.sent_at else ""
                return f"{what}: sent{sent}, link {self.share_url}"
            return f"{what}: {self.share_url}"
        if self.state is DeliveryState.REVOKED:
            return f"{what}: revoked at {self.revoked_at} ({self.share_url})"
        if self.error:
            return f"{what}: {self.state.value}: {self.error}"
        return f"{what}: {self.state.value}"

    def to_public(self) -> dict[str, Any]:
        """The JSON-ready view used by ``--json`` output and result files."""
        public = asdict(self)
        for hidden in ("due_at", "attempt_started_at", "entry_id"):
            public.pop(hidden)
        public["state"] = self.state.value
        return public


# -- checking what a caller asks for ---------------------------------------------------------


def delivery_requests(share: Any, email: Any, *, now: float) -> tuple[DeliveryRequest, ...]:
    """The deliveries ``share`` and ``email`` ask for, checked; :class:`InvalidArgument` names
    the first problem.

    ``share``: None or False (none), True (a link), ``{"expires_at": ISO, "message": ...}``, or
    a list of those. ``email``: None, an address, ``{"to": ..., "recipient_name": ...,
    "message": ..., "expires_at": ...}``, or a list of those. ``now`` is the time an expiry
    must lie after.
    """
    found: list[DeliveryRequest] = []
    for index, item in _items(share):
        if item is False:
            continue
        where = f"share[{index}]" if index is not None else "share"
        found.append(_link(item, where, now))
    for index, item in _items(email):
        where = f"email[{index}]" if index is not None else "email"
        found.append(_email(item, where, now))
    if len(found) > MAX_DELIVERIES:
        raise InvalidArgument(
            f"{len(found)} deliveries asked for; one request may have at most {MAX_DELIVERIES}"
        )
    seen: set[DeliveryRequest] = set()
    for request in found:
        if request in seen:
            raise InvalidArgument(
                f"the same {request.describe()} is asked for twice; list each delivery once"
            )
        seen.add(request)
    return tuple(found)


def deliveries_json(requests: tuple[DeliveryRequest, ...]) -> list[dict[str, Any]]:
    """``requests`` as JSON-ready objects, in the form :func:`delivery_requests` takes back."""
    return [
        {name: value for name, value in asdict(request).items() if value is not None}
        for request in requests
    ]


def same_deliveries(a: tuple[DeliveryRequest, ...], b: tuple[DeliveryRequest, ...]) -> bool:
    """Whether two requests ask for the same deliveries (in any order)."""
    return sorted(map(_sort_key, a)) == sorted(map(_sort_key, b))


def _sort_key(request: DeliveryRequest) -> str:
    return json.dumps(asdict(request), sort_keys=True)


def _items(value: Any) -> list[tuple[int | None, Any]]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        if not value:
            return []
        return list(enumerate(value))
    return [(None, value)]


def _link(item: Any, where: str, now: float) -> DeliveryRequest:
    if item is True:
        return DeliveryRequest(LINK)
    if not isinstance(item, Mapping):
        raise InvalidArgument(
            f'{where} must be true or an object like {{"expires_at": "2026-07-01T00:00:00Z"}}'
            f", not {_kind(item)}"
        )
    _known(item, _SHARE_FIELDS, where)
    return DeliveryRequest(
        LINK,
        message=_message(item, where),
        expires_at=_expiry(item, where, now),
    )


def _email(item: Any, where: str, now: float) -> DeliveryRequest:
    if isinstance(item, str):
        item = {"to": item}
    if not isinstance(item, Mapping):
        raise InvalidArgument(
            f'{where} must be an address or an object like {{"to": "ada@example.com"}}, '
            f"not {_kind(item)}"
        )
    _known(item, _EMAIL_FIELDS, where)
    to = item.get("to")
    if to is None:
        raise InvalidArgument(f'{where} needs "to", the address to send the document to')
    if not isinstance(to, str) or not _EMAIL.fullmatch(to):
        shown = repr(to) if isinstance(to, str) else _kind(to)
        raise InvalidArgument(f"{where}.to {shown} is not an email address")
    name = item.get("recipient_name")
    if name is not None:
        if not isinstance(name, str):
            raise InvalidArgument(f"{where}.recipient_name must be a string, not {_kind(name)}")
        if len(name) > rules.RECIPIENT_NAME_MAX:
            raise InvalidArgument(
                f"{where}.recipient_name has {len(name)} characters; Craftkit takes at most "
                f"{rules.RECIPIENT_NAME_MAX}"
            )
    return DeliveryRequest(
        EMAIL,
        to=to,
        recipient_name=name,
        message=_message(item, where),
        expires_at=_expiry(item, where, now),
    )


def _known(item: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(name) for name in item if name not in allowed)
    if unknown:
        raise InvalidArgument(
            f"{where} has unknown field(s) {', '.join(unknown)}; it may have " + ", ".join(allowed)
        )


def _message(item: Mapping[str, Any], where: str) -> str | None:
    message = item.get("message")
    if message is None:
        return None
    if not isinstance(message, str):
        raise InvalidArgument(f"{where}.message must be a string, not {_kind(message)}")
    if len(message) > rules.SHARE_MESSAGE_MAX:
        raise InvalidArgument(
            f"{where}.message has {len(message):,} characters; Craftkit takes at most "
            f"{rules.SHARE_MESSAGE_MAX:,}"
        )
    return message


def _expiry(item: Mapping[str, Any], where: str, now: float) -> str | None:
    value = item.get("expires_at")
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else _instant(value)
    if moment is None or moment.tzinfo is None:
        raise InvalidArgument(
            f"{where}.expires_at {value!r} is not an ISO date and time with a zone "
            "(e.g. 2026-07-01T17:00:00Z or 2026-07-01T19:00:00+02:00)"
        )
    if moment.timestamp() <= now:
        raise InvalidArgument(f"{where}.expires_at {value!r} is not in the future")
    return normal_time(moment)


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str) or not _DATETIME.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def normal_time(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a ``Z``, the way Craftkit writes times."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def same_instant(a: str | None, b: str | None) -> bool:
    """Whether two ISO times (or two absent ones) name the same millisecond."""
    if a is None or b is None:
        return a is None and b is None
    first, second = _instant_loose(a), _instant_loose(b)
    return first is not None and second is not None and first == second


def _instant_loose(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"
