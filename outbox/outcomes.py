"""What each answer means: the outcome of a request (or a person's action) -> the entry's move.

This is the table the README's "What happens on each answer" section shows, row for row and in
the same order (:class:`Rule`). Every function here is pure: it takes the entry as it was read,
the outcome (a submit answer, a poll answer, a saved PDF, an error) and the time, and returns
what to do — a :class:`Move` (the target state, the typed field changes, the history line and
the HTTP status) or a :class:`GiveBack` — together with what the outcome tells the gate about
the network as a whole (:class:`Network`). The dispatcher and the replay loop only do the I/O
and apply the result (:meth:`outbox.pool.Crew.apply`); ``Outbox.cancel``, ``retry`` and
``amend`` do the same for a person's action. Which moves are legal at all is
:data:`outbox.models.TRANSITIONS`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .clock import iso, parse_iso
from .deliveries import EMAIL, Delivery, DeliveryChanges, DeliveryState, same_instant
from .downloads import SavedPdf
from .errors import (
    AuthError,
    ForeignAnswer,
    IllegalTransition,
    InvalidArgument,
    NotFound,
    Offline,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    RemoteError,
    ServerError,
    StorageFull,
    TransientError,
)
from .models import (
    Changes,
    Entry,
    RemoteStatus,
    RenderRequest,
    State,
    canonical_json,
    request_differences,
)
from .rules import derived_key
from .schedule import Schedule

if TYPE_CHECKING:  # a person's moves (cancel, retry, amend) need no network stack
    from .client import Render, Share

#: The error code Craftkit answers when data does not match the template.
INVALID_INPUT_DATA = "invalid_input_data"
#: The error codes of shares and emails that decide something (craftkit-api.md 3.2).
NOT_READY = "not_ready"
EMAIL_NOT_CONFIGURED = "email_not_configured"
EMAIL_SEND_FAILED = "email_send_failed"


class Rule(enum.Enum):
    """Every row of the README's "What happens on each answer" tables, in their order.

    The value is the row's first cell, word for word.
    """

    # -- any request --
    OFFLINE = (
        "connection refused, DNS failure, connect timeout; a redirect or an answer that is not "
        "Craftkit's, while `GET /health` does not answer ok either (a captive portal, a proxy)"
    )
    FOREIGN_ANSWER = (
        "a redirect or an answer that is not Craftkit's (garbage, the wrong shape, empty), "
        "while `GET /health` answers ok"
    )
    KEY_REFUSED = "401, 403"
    RATE_LIMITED = "429 or `rate_limited`"
    # -- submitting --
    ACCEPTED = "202, or 200 (a replay of a known key), with `queued`, `rendering` or an undocumented status"
    ACCEPTED_SUCCEEDED = "202 or 200 with `succeeded` (a replay of a finished render)"
    ACCEPTED_FAILED = "202 or 200 with `failed` or `cancelled`"
    SUBMIT_OUTCOME_UNKNOWN = "read timeout, connection reset after sending"
    SUBMIT_SERVER_ERROR = "500, 502, 503 `queue_unavailable`, 504"
    SUBMIT_REFUSED = (
        "other 4xx (`invalid_input_data`, `template_not_found`, `no_published_version`, ...)"
    )
    # -- polling --
    POLL_UNFINISHED = "`queued`, `rendering` or an undocumented status"
    POLL_SUCCEEDED = "`succeeded`"
    POLL_FAILED = "`failed` or `cancelled`"
    POLL_NOT_FOUND = "404 `not_found`: Craftkit does not know the render"
    POLL_ERROR = "read timeout, 5xx, other 4xx"
    # -- downloading --
    SAVED = "the whole PDF (`Content-Length`, `%PDF-` header, `%%EOF` trailer)"
    NOT_READY = "404 from the private stream: no PDF yet"
    PUBLIC_COPY_BROKEN = (
        "the public `downloadUrl` fails: refused, a redirect, any 4xx (a 401 from the bucket "
        "too) or 5xx, not http(s), a body that is not the whole PDF"
    )
    DOWNLOAD_BROKEN = (
        "from the private stream: a truncated or foreign body, read timeout, 5xx, other 4xx"
    )
    DISK_FULL = "no space left on the downloads folder's disk"
    FOLDER_UNWRITABLE = "the downloads folder cannot be written"
    # -- delivering --
    DELIVERY_SENDING = "before each create"
    DELIVERY_CREATED = "201 with the share (for an email, also its message id and time)"
    DELIVERY_NOT_READY = "409 `not_ready`"
    DELIVERY_EMAIL_NOT_CONFIGURED = "503 `email_not_configured`"
    DELIVERY_REFUSED = "400 and other 4xx"
    DELIVERY_OUTCOME_UNKNOWN = (
        "502 `email_send_failed`, other 5xx, read timeout, connection reset after sending"
    )
    DELIVERY_ADOPTED = (
        "`unconfirmed`, and the render's shares include a match: same channel, recipient, "
        "message and expiry, created after the attempt started, recorded by no other delivery"
    )
    DELIVERY_NO_MATCH = "`unconfirmed`, and no share matches"
    DELIVERY_LIST_FAILED = "`unconfirmed`, and listing the shares failed"
    # -- by hand --
    CANCEL = "`cancel` a `pending` entry"
    RETRY_FAILED = "`retry` a `failed` entry"
    RETRY_REJECTED = "`retry` a `rejected` entry"
    AMEND_SAME_KEY = (
        "`amend` a `pending` entry never sent, a `rejected` one, or one `cancelled` before it "
        "was sent"
    )
    AMEND_NEW_KEY = (
        "`amend` a `failed` entry, or a `pending` or `cancelled` one whose earlier submission's "
        "outcome is unknown"
    )
    SHARE = "`share` a `done` entry"
    REVOKE = "`revoke` a share of a `done` entry"
    NOT_ALLOWED = "`cancel`, `retry`, `amend` or `share` an entry in any other state"


class Network(enum.Enum):
    """What an outcome tells the gate about the network as a whole (see :mod:`outbox.gate`)."""

    #: Nothing to learn (no answer came back, or the problem is local).
    NOTHING = "nothing"
    #: The API answered: online, and the pace may rise again.
    ANSWERED = "answered"
    #: The API answered and accepted the key.
    KEY_ACCEPTED = "key accepted"
    #: Offline, key refused, 429 or 5xx: the gate acts on the error itself.
    TROUBLE = "trouble"


@dataclass(frozen=True)
class Move:
    """Move the entry to ``target`` (its current state for "stay"), changing ``changes``.

    With a ``detail``, the move is one journal transition and adds that line to the entry's
    history; without one it only updates bookkeeping (``due_at``, counters), so routine
    outcomes such as "still rendering" do not flood the history.
    """

    rule: Rule
    target: State
    changes: Changes = field(default_factory=lambda: Changes())
    detail: str | None = None
    http_status: int | None = None
    network: Network = Network.NOTHING


@dataclass(frozen=True)
class GiveBack:
    """Leave the entry exactly as it was and give its lease back: the problem concerns every
    request (offline, key refused), so no attempt is used up."""

    rule: Rule
    network: Network = Network.TROUBLE


Outcome = Move | GiveBack


@dataclass(frozen=True)
class DeliveryMove:
    """Move a delivery to ``target`` (its current state for "stay"), changing ``changes``.

    As with :class:`Move`, a ``detail`` adds a line to the entry's history. ``keep_lease``
    keeps the delivery leased after the move: the worker is about to send its create.
    """

    rule: Rule
    target: DeliveryState
    changes: DeliveryChanges = field(default_factory=lambda: DeliveryChanges())
    detail: str | None = None
    http_status: int | None = None
    network: Network = Network.NOTHING
    keep_lease: bool = False


DeliveryOutcome = DeliveryMove | GiveBack


# -- any request -----------------------------------------------------------------------------


def _everyone(
    entry: Entry, error: RemoteError, now: float, schedule: Schedule, health_ok: bool
) -> Outcome | None:
    """The outcome of an error that concerns every request, not this entry; None if not one.

    ``health_ok``: ``GET /health`` answered ok after ``error`` came, so a :class:`ForeignAnswer`
    concerns this request only (see :func:`_foreign`), not the network.
    """
    if isinstance(error, Offline) and not (health_ok and isinstance(error, ForeignAnswer)):
        return GiveBack(Rule.OFFLINE)
    if isinstance(error, AuthError):
        return GiveBack(Rule.KEY_REFUSED)
    if isinstance(error, RateLimited):
        pause = schedule.pacing.pause_after(error.retry_after)
        return Move(
            Rule.RATE_LIMITED, entry.state, Changes(due_at=now + pause), network=Network.TROUBLE
        )
    return None


# -- submitting ------------------------------------------------------------------------------


def submit_answered(
    entry: Entry, render: Render, *, replayed: bool, now: float, first_poll: float
) -> Move:
    """Craftkit accepted the request (202), or knew its key already (200, ``replayed``).

    ``first_poll`` is how long after now to poll first (see ``RenderTimes.first_poll_delay``).
    """
    _expect(entry, State.PENDING, "a submit answer")
    status = RemoteStatus.of(render.status)
    changes = Changes(
        render_id=render.id,
        remote_status=render.status,
        attempts=entry.attempts + 1,
        error=None,
        error_code=None,
        field_errors=None,
        submitted_at=now,
        polls=0,
    )
    how = "replayed (key already known)" if replayed else "accepted"
    detail = f"{how}: render {render.id} is {render.status}"
    http_status = 200 if replayed else 202
    if status is RemoteStatus.SUCCEEDED:
        changes.update(Changes(download_url=render.download_url, due_at=now, finished_at=now))
        return Move(
            Rule.ACCEPTED_SUCCEEDED,
            State.DOWNLOADING,
            changes,
            detail,
            http_status,
            Network.KEY_ACCEPTED,
        )
    if status is not None and status.is_terminal:
        message = render.error_message or f"the render was {render.status}"
        changes.update(
            Changes(error=message, error_code=f"render_{render.status}", finished_at=now)
        )
        return Move(
            Rule.ACCEPTED_FAILED,
            State.FAILED,
            changes,
            f"{detail}: {message}",
            http_status,
            Network.KEY_ACCEPTED,
        )
    changes["due_at"] = now + first_poll
    return Move(Rule.ACCEPTED, State.SUBMITTED, changes, detail, http_status, Network.KEY_ACCEPTED)


def needs_health_check(error: RemoteError) -> bool:
    """Whether ``GET /health`` must be asked before deciding what ``error`` means.

    A redirect or a body that is not the API's (:class:`ForeignAnswer`) is what a captive
    portal sends, so it means offline; but if the API's health check answers ok right after,
    it was one bad answer, and the entry it came for is its only concern: the ``*_failed``
    functions take the check's verdict as ``health_ok``.
    """
    return isinstance(error, ForeignAnswer)


def needs_template_refresh(error: RemoteError) -> bool:
    """Whether Craftkit refused the data, so the cached template should be re-read first."""
    return isinstance(error, PermanentError) and error.code == INVALID_INPUT_DATA


def submit_failed(
    entry: Entry,
    error: RemoteError,
    *,
    now: float,
    schedule: Schedule,
    note: str | None = None,
    health_ok: bool = False,
) -> Outcome:
    """The submission got no usable answer, or a refusal.

    ``note`` is what re-reading the cached template found after ``invalid_input_data`` (see
    :func:`needs_template_refresh`); it is added to the error. ``health_ok``: see
    :func:`needs_health_check`.
    """
    _expect(entry, State.PENDING, "a submit error")
    shared = _everyone(entry, error, now, schedule, health_ok)
    if shared is not None:
        return shared
    attempts = entry.attempts + 1
    if isinstance(error, ForeignAnswer):
        delay = schedule.submit_retry.delay(attempts)
        return Move(
            Rule.FOREIGN_ANSWER,
            State.PENDING,
            Changes(
                attempts=attempts,
                error=_foreign(error, "submitting"),
                error_code="foreign_answer",
                due_at=now + delay,
            ),
            f"{_foreign(error, 'submitting')}; sent again with the same key in {delay:.1f} s",
            error.status,
            Network.ANSWERED,
        )
    if isinstance(error, TransientError):
        unknown = isinstance(error, OutcomeUnknown)
        delay = schedule.submit_retry.delay(attempts)
        return Move(
            Rule.SUBMIT_OUTCOME_UNKNOWN if unknown else Rule.SUBMIT_SERVER_ERROR,
            State.PENDING,
            Changes(
                attempts=attempts,
                error=error.message,
                error_code=error.code or ("outcome_unknown" if unknown else "server"),
                due_at=now + delay,
            ),
            f"submit failed, retrying in {delay:.1f} s with the same key",
            error.status,
            Network.NOTHING if unknown else Network.TROUBLE,
        )
    if isinstance(error, PermanentError):
        detail = f"{error.message.rstrip('.')}; {note}" if note else error.message
        return Move(
            Rule.SUBMIT_REFUSED,
            State.REJECTED,
            Changes(
                attempts=attempts,
                error=detail,
                error_code=error.code,
                field_errors=error.field_errors,
                finished_at=now,
            ),
            detail,
            error.status,
            Network.KEY_ACCEPTED,
        )
    raise error  # every kind of RemoteError is handled above


# -- polling ---------------------------------------------------------------------------------


def poll_answered(
    entry: Entry, render: Render, *, now: float, schedule: Schedule, learning: bool = False
) -> Move:
    """Craftkit told the render's current state. ``learning``: the render is a probe and no
    render time is known yet, so it is polled again at the docs' first step, to learn one soon."""
    _expect(entry, State.SUBMITTED, "a poll answer")
    polls = entry.polls + 1
    status = RemoteStatus.of(render.status)
    if status is RemoteStatus.SUCCEEDED:
        return Move(
            Rule.POLL_SUCCEEDED,
            State.DOWNLOADING,
            Changes(
                remote_status=render.status,
                download_url=render.download_url,
                polls=polls,
                error=None,
                error_code=None,
                due_at=now,
                finished_at=now,
            ),
            f"render {render.id} succeeded",
            200,
            Network.KEY_ACCEPTED,
        )
    if status is not None and status.is_terminal:
        message = render.error_message or f"the render was {render.status}"
        return Move(
            Rule.POLL_FAILED,
            State.FAILED,
            Changes(
                remote_status=render.status,
                polls=polls,
                error=message,
                error_code=f"render_{render.status}",
                finished_at=now,
            ),
            f"render {render.id} {render.status}: {message}",
            200,
            Network.KEY_ACCEPTED,
        )
    gap = schedule.polling.steps[0] if learning else schedule.polling.delay(polls, _age(entry, now))
    due_at = now + gap
    if render.status == entry.remote_status and not entry.error:
        return Move(
            Rule.POLL_UNFINISHED,
            State.SUBMITTED,
            Changes(polls=polls, due_at=due_at),
            network=Network.KEY_ACCEPTED,
        )
    return Move(
        Rule.POLL_UNFINISHED,
        State.SUBMITTED,
        Changes(
            remote_status=render.status, polls=polls, error=None, error_code=None, due_at=due_at
        ),
        f"render {render.id} is {render.status}",
        200,
        Network.KEY_ACCEPTED,
    )


def poll_failed(
    entry: Entry,
    error: RemoteError,
    *,
    now: float,
    schedule: Schedule,
    health_ok: bool = False,
) -> Outcome:
    """Asking about the render failed. Nothing ever gives up on a submitted render.

    ``health_ok``: see :func:`needs_health_check`.
    """
    _expect(entry, State.SUBMITTED, "a poll error")
    shared = _everyone(entry, error, now, schedule, health_ok)
    if shared is not None:
        return shared
    polls = entry.polls + 1
    age = _age(entry, now)
    if isinstance(error, NotFound):
        # Never drop it: the render exists somewhere, most likely under another project.
        message = (
            f"Craftkit does not know render {entry.render_id} ({error.message}); is the API key "
            "one of the project that created it? Still checking."
        )
        delay = schedule.polling.delay(polls, max(age, schedule.unknown_render_age))
        return _problem(
            Rule.POLL_NOT_FOUND, entry, error, message, polls, now + delay, Network.ANSWERED
        )
    delay = min(
        schedule.poll_retry.delay(polls),
        schedule.polling.delay(polls, age) * schedule.poll_retry_factor,
    )
    if isinstance(error, ForeignAnswer):
        message = f"{_foreign(error, f'checking render {entry.render_id}')}; still checking"
        return _problem(
            Rule.FOREIGN_ANSWER, entry, error, message, polls, now + delay, Network.ANSWERED
        )
    return _problem(
        Rule.POLL_ERROR,
        entry,
        error,
        f"checking render {entry.render_id} failed: {error.message}",
        polls,
        now + delay,
        Network.TROUBLE if isinstance(error, ServerError) else Network.ANSWERED,
    )


# -- downloading -----------------------------------------------------------------------------


def download_saved(entry: Entry, saved: SavedPdf, *, now: float) -> Move:
    """The PDF is on disk, complete and verified."""
    _expect(entry, State.DOWNLOADING, "a saved PDF")
    return Move(
        Rule.SAVED,
        State.DONE,
        Changes(
            pdf_path=str(saved.path),
            pdf_bytes=saved.size,
            pdf_sha256=saved.sha256,
            error=None,
            error_code=None,
            finished_at=now,
        ),
        f"saved {saved.path.name}{_asked_for(entry.filename, saved.path.name)} "
        f"({saved.size} bytes, sha256 {saved.sha256[:12]}…)",
        200,
        Network.ANSWERED,
    )


def _asked_for(filename: str | None, used: str) -> str:
    """Why the PDF's name is not the one the request gave: another file had it (in any case),
    or it is not valid on every system (``CON.pdf``, ``a:b.pdf``)."""
    if filename is None or filename == used:
        return ""
    return f" (the request asked for {filename!r})"


def download_failed(
    entry: Entry,
    error: Exception,
    *,
    now: float,
    schedule: Schedule,
    folder: str,
    health_ok: bool = False,
) -> Outcome:
    """The PDF could not be fetched or written into ``folder``; it is tried again, never kept
    half-done. Raises ``error`` itself when it is not a download problem.

    An entry with a ``download_url`` was fetched from the public copy; whatever went wrong
    there is the bucket's problem, not the network's or the key's: the entry forgets the URL
    and goes through the private stream at once. ``health_ok``: see :func:`needs_health_check`.
    """
    _expect(entry, State.DOWNLOADING, "a download error")
    tries = entry.polls + 1
    retry_at = now + schedule.download_retry.delay(tries)
    from .client import NotReady  # loaded already by whoever downloaded

    if entry.download_url and isinstance(error, RemoteError) and not isinstance(error, NotReady):
        message = (
            f"the public copy of render {entry.render_id} failed ({error.message}); "
            "downloading through the private stream instead"
        )
        return Move(
            Rule.PUBLIC_COPY_BROKEN,
            State.DOWNLOADING,
            Changes(
                download_url=None,
                error=message,
                error_code=error.code or type(error).__name__,
                due_at=now,
            ),
            message,
            error.status,
        )
    if isinstance(error, NotReady):
        return Move(Rule.NOT_READY, State.DOWNLOADING, Changes(polls=tries, due_at=retry_at))
    if isinstance(error, StorageFull):
        return _problem(
            Rule.DISK_FULL,
            entry,
            error,
            str(error),
            tries,
            now + schedule.storage_retry,
            code=DISK_FULL,
        )
    if isinstance(error, RemoteError):
        shared = _everyone(entry, error, now, schedule, health_ok)
        if shared is not None:
            return shared
        if isinstance(error, ForeignAnswer):
            message = f"{_foreign(error, 'downloading')}; will retry"
            return _problem(
                Rule.FOREIGN_ANSWER, entry, error, message, tries, retry_at, Network.ANSWERED
            )
        message = f"download failed, will retry: {error.message}"
        return _problem(Rule.DOWNLOAD_BROKEN, entry, error, message, tries, retry_at)
    if isinstance(error, OSError):
        message = f"cannot write the PDF into {folder}: {error.strerror or error}"
        return _problem(
            Rule.FOLDER_UNWRITABLE,
            entry,
            error,
            message,
            tries,
            now + schedule.storage_retry,
            code=FOLDER_UNWRITABLE,
        )
    raise error


# -- delivering ------------------------------------------------------------------------------


def delivery_sending(delivery: Delivery, *, now: float, schedule: Schedule) -> DeliveryMove:
    """Record, before anything is sent, that a create is about to go out, and when.

    Once this is on disk a crash can only leave the delivery ``unconfirmed``, and the next
    worker looks for the share (:func:`shares_listed`) before it creates anything. It is due
    again ``delivery_settle`` seconds later at the earliest, so a create the server was still
    working on when its sender died has landed by the time anyone looks.
    """
    _expect_delivery(delivery, (DeliveryState.PENDING,), "a new create")
    attempt = delivery.attempts + 1
    return DeliveryMove(
        Rule.DELIVERY_SENDING,
        DeliveryState.UNCONFIRMED,
        _attempt(delivery, now, schedule),
        f"sending the {delivery.describe()} (attempt {attempt})",
        keep_lease=True,
    )


def delivery_created(delivery: Delivery, share: Share, *, now: float) -> DeliveryMove:
    """Craftkit made the share (201); for an email, it was sent."""
    _expect_delivery(delivery, (DeliveryState.UNCONFIRMED,), "a create answer")
    changes = _recorded(share)
    if delivery.channel == EMAIL:
        changes["sent_at"] = share.sent_at or iso(now)
        detail = f"email to {delivery.to} sent"
        if share.email_message_id:
            detail += f" (message {share.email_message_id})"
        detail += f"; link {share.url}"
    else:
        detail = f"share link created: {share.url}"
    return DeliveryMove(
        Rule.DELIVERY_CREATED,
        DeliveryState.DELIVERED,
        changes,
        detail,
        201,
        Network.KEY_ACCEPTED,
    )


def delivery_failed(
    delivery: Delivery, error: RemoteError, *, now: float, schedule: Schedule
) -> DeliveryOutcome:
    """The create got no usable answer, or a refusal. A failed delivery never touches the
    entry: it stays ``done``."""
    _expect_delivery(delivery, (DeliveryState.UNCONFIRMED,), "a create error")
    shared = _everyone_delivery(delivery, error, now, schedule)
    if shared is not None:
        return shared
    retry_at = now + schedule.delivery_retry.delay(delivery.attempts)
    if error.code == EMAIL_NOT_CONFIGURED:
        message = "email is not configured for this Craftkit project"
        return DeliveryMove(
            Rule.DELIVERY_EMAIL_NOT_CONFIGURED,
            DeliveryState.FAILED,
            DeliveryChanges(error=message, error_code=error.code, attempt_started_at=None),
            f"{delivery.describe()} failed: {message}; not retried",
            error.status,
            Network.KEY_ACCEPTED,
        )
    if isinstance(error, PermanentError) and error.code == NOT_READY:
        message = f"the render is not ready to share yet ({error.message})"
        return DeliveryMove(
            Rule.DELIVERY_NOT_READY,
            DeliveryState.PENDING,
            DeliveryChanges(error=message, error_code=error.code, due_at=retry_at),
            f"{message}; trying again in {retry_at - now:.1f} s",
            error.status,
            Network.KEY_ACCEPTED,
        )
    if isinstance(error, TransientError):
        # The server may still be working on it: never look for it sooner than the settle time.
        retry_at = max(retry_at, now + schedule.delivery_settle)
        message = f"no answer to the {delivery.describe()} ({error.message})"
        send_failed = error.code == EMAIL_SEND_FAILED
        if send_failed:
            message = f"Craftkit could not send the email to {delivery.to} ({error.message})"
        return DeliveryMove(
            Rule.DELIVERY_OUTCOME_UNKNOWN,
            DeliveryState.UNCONFIRMED,
            DeliveryChanges(
                error=message,
                error_code=error.code or type(error).__name__,
                due_at=retry_at,
            ),
            f"{message}; in {retry_at - now:.1f} s the render's shares are checked before "
            "sending again",
            error.status,
            Network.TROUBLE
            if isinstance(error, ServerError) and not send_failed
            else Network.ANSWERED
            if send_failed
            else Network.NOTHING,
        )
    if isinstance(error, PermanentError):
        return DeliveryMove(
            Rule.DELIVERY_REFUSED,
            DeliveryState.REJECTED,
            DeliveryChanges(
                error=error.message,
                error_code=error.code,
                field_errors=error.field_errors,
                attempt_started_at=None,
            ),
            f"Craftkit refused the {delivery.describe()}: {error.message}",
            error.status,
            Network.KEY_ACCEPTED,
        )
    raise error  # every kind of RemoteError is handled above


def shares_listed(
    delivery: Delivery,
    shares: list[Share],
    *,
    recorded: set[str],
    now: float,
    schedule: Schedule,
) -> DeliveryMove:
    """An ``unconfirmed`` delivery's render has these shares (newest first): adopt the one
    its lost create made, or, if none matches, send the create again (recording the new
    attempt first, as :func:`delivery_sending` does). ``recorded`` are the share ids other
    deliveries of the entry hold."""
    _expect_delivery(delivery, (DeliveryState.UNCONFIRMED,), "a share listing")
    share = matching_share(delivery, shares, recorded=recorded, slack=schedule.share_clock_slack)
    if share is not None:
        changes = _recorded(share)
        if delivery.channel == EMAIL:
            changes["sent_at"] = share.sent_at or share.created_at
        return DeliveryMove(
            Rule.DELIVERY_ADOPTED,
            DeliveryState.DELIVERED,
            changes,
            f"the lost create of the {delivery.describe()} did reach Craftkit: adopted share "
            f"{share.id} ({share.url}); nothing was sent again",
            200,
            Network.KEY_ACCEPTED,
        )
    started = delivery.attempt_started_at
    since = f" since {iso(started)}" if started is not None else ""
    return DeliveryMove(
        Rule.DELIVERY_NO_MATCH,
        DeliveryState.UNCONFIRMED,
        _attempt(delivery, now, schedule),
        f"no share of the render matches the {delivery.describe()}{since}: it never reached "
        f"Craftkit; sending it again (attempt {delivery.attempts + 1})",
        200,
        Network.KEY_ACCEPTED,
        keep_lease=True,
    )


def listing_failed(
    delivery: Delivery, error: RemoteError, *, now: float, schedule: Schedule
) -> DeliveryOutcome:
    """The render's shares could not be listed: nothing may be created until they are."""
    _expect_delivery(delivery, (DeliveryState.UNCONFIRMED,), "a listing error")
    shared = _everyone_delivery(delivery, error, now, schedule)
    if shared is not None:
        return shared
    due_at = now + schedule.delivery_retry.delay(max(1, delivery.attempts))
    message = f"checking the render's shares failed: {error.message}"
    network = (
        Network.TROUBLE
        if isinstance(error, ServerError)
        else Network.NOTHING
        if isinstance(error, OutcomeUnknown)
        else Network.ANSWERED
    )
    if message == delivery.error:
        return DeliveryMove(
            Rule.DELIVERY_LIST_FAILED,
            DeliveryState.UNCONFIRMED,
            DeliveryChanges(due_at=due_at),
            network=network,
        )
    return DeliveryMove(
        Rule.DELIVERY_LIST_FAILED,
        DeliveryState.UNCONFIRMED,
        DeliveryChanges(
            error=message, error_code=error.code or type(error).__name__, due_at=due_at
        ),
        message,
        error.status,
        network,
    )


def matching_share(
    delivery: Delivery, shares: list[Share], *, recorded: set[str], slack: float
) -> Share | None:
    """The share an ``unconfirmed`` delivery's lost create made, if the list holds it.

    It has the delivery's channel, recipient, message and expiry, Craftkit created it no
    earlier than the attempt started (less ``slack`` seconds, for the two clocks), and no
    other delivery recorded it. Revoked shares count: the create happened. Of several, the
    oldest is the first create that landed.
    """
    started = delivery.attempt_started_at
    if started is None:
        return None
    for share in reversed(shares):
        if share.id in recorded or share.channel != delivery.channel:
            continue
        if (share.recipient_email or "").casefold() != (delivery.to or "").casefold():
            continue
        if (share.message or None) != (delivery.message or None):
            continue
        if not same_instant(share.expires_at, delivery.expires_at):
            continue
        try:
            created = parse_iso(share.created_at) if share.created_at else None
        except ValueError:
            created = None
        if created is None or created < started - slack:
            continue
        return share
    return None


def revoke_recorded(delivery: Delivery, revoked_at: str | None, *, now: float) -> DeliveryMove:
    """A person revoked the share a delivery recorded."""
    _expect_delivery(delivery, (DeliveryState.DELIVERED,), "a revocation")
    stamp = revoked_at or iso(now)
    return DeliveryMove(
        Rule.REVOKE,
        DeliveryState.REVOKED,
        DeliveryChanges(revoked_at=stamp),
        f"revoked by hand: share {delivery.share_id} ({delivery.share_url}) no longer opens",
        200,
        Network.KEY_ACCEPTED,
    )


def share_requested(entry: Entry) -> None:
    """A person asks for a link to the entry's PDF now; only a ``done`` entry has one."""
    if entry.state is not State.DONE:
        raise IllegalTransition(
            f"entry {entry.id} is {entry.state}; a link can be made once it is done"
        )


def _attempt(delivery: Delivery, now: float, schedule: Schedule) -> DeliveryChanges:
    return DeliveryChanges(
        attempts=delivery.attempts + 1,
        attempt_started_at=now,
        due_at=now + schedule.delivery_settle,
    )


def _recorded(share: Share) -> DeliveryChanges:
    return DeliveryChanges(
        share_id=share.id,
        share_token=share.token,
        share_url=share.url,
        email_message_id=share.email_message_id,
        error=None,
        error_code=None,
        field_errors=None,
    )


def _everyone_delivery(
    delivery: Delivery, error: RemoteError, now: float, schedule: Schedule
) -> DeliveryOutcome | None:
    """The outcome of an error that concerns every request (as :func:`_everyone`)."""
    if isinstance(error, Offline):
        return GiveBack(Rule.OFFLINE)
    if isinstance(error, AuthError):
        return GiveBack(Rule.KEY_REFUSED)
    if isinstance(error, RateLimited):
        pause = schedule.pacing.pause_after(error.retry_after)
        return DeliveryMove(
            Rule.RATE_LIMITED,
            delivery.state,
            DeliveryChanges(due_at=now + pause),
            network=Network.TROUBLE,
        )
    return None


def _expect_delivery(delivery: Delivery, states: tuple[DeliveryState, ...], what: str) -> None:
    if delivery.state not in states:
        wanted = " or ".join(state.value for state in states)
        raise IllegalTransition(
            f"{what} for delivery {delivery.id}, which is {delivery.state}, not {wanted}"
        )


# -- by hand ---------------------------------------------------------------------------------


def cancel_requested(entry: Entry) -> Move:
    """A person cancels the entry. Only what Craftkit has not accepted can be cancelled."""
    if entry.state is not State.PENDING:
        raise IllegalTransition(
            f"entry {entry.id} is {entry.state}; only pending entries can be cancelled"
            + (f" (Craftkit already has render {entry.render_id})" if entry.render_id else "")
        )
    detail = "cancelled by the user"
    if entry.attempts:
        detail += "; an earlier submission's outcome was unknown, so Craftkit may hold a render"
    return Move(Rule.CANCEL, State.CANCELLED, Changes(), detail)


def retry_requested(entry: Entry, *, now: float) -> Move:
    """A person asks for a ``failed`` or ``rejected`` entry to be rendered again.

    A failed render sticks to its idempotency key at Craftkit, so a failed entry gets a new
    derived key (``KEY~2``); a rejected one keeps its key, since nothing was created.
    """
    if entry.state is State.FAILED:
        rule, generation = Rule.RETRY_FAILED, entry.generation + 1
        key = derived_key(entry.base_key, generation)
        detail = (
            f"retry with new key {key}: render {entry.render_id} failed under key {entry.key} "
            "and stays failed there"
        )
    elif entry.state is State.REJECTED:
        rule, generation, key = Rule.RETRY_REJECTED, entry.generation, entry.key
        detail = f"retry with the same key {key}: Craftkit created nothing for it"
    else:
        raise IllegalTransition(
            f"entry {entry.id} is {entry.state}; only failed or rejected entries can be retried"
        )
    return Move(rule, State.PENDING, _fresh_start(key, generation, now), detail)


def amend_requested(entry: Entry, request: RenderRequest, *, now: float) -> Move:
    """A person replaces the entry's request (its data, filename or version) with ``request``.

    The entry keeps its id, key lineage and history. Its key stays only while Craftkit
    provably holds nothing for it: never sent, ``rejected``, or ``cancelled`` before any
    submission. A ``failed`` entry's render sticks to its key, and a submission whose outcome
    is unknown (attempts made, no answer kept) may have created a render under it, so the
    amended request moves to a new derived key (``KEY~2``), as ``retry`` does, and Craftkit
    cannot hand back the old render. Entries Craftkit is rendering or has rendered are refused.
    """
    if entry.state in (State.SUBMITTED, State.DOWNLOADING, State.DONE):
        held = f" (render {entry.render_id})" if entry.render_id else ""
        raise IllegalTransition(
            f"entry {entry.id} is {entry.state}: Craftkit already accepted its request{held}, "
            "so it cannot be amended; enqueue the corrected request under a new key instead"
        )
    changed = describe_amendment(entry, request)
    if not changed:
        hint = "; `retry` sends it again" if entry.state in (State.FAILED, State.REJECTED) else ""
        raise InvalidArgument(
            f"the amended request is the same as entry {entry.id}'s; nothing was changed{hint}"
        )
    content = Changes(data=request.data, filename=request.filename, version=request.version)
    sent = entry.attempts > 0
    if entry.state is State.REJECTED or (
        entry.state in (State.PENDING, State.CANCELLED) and not sent
    ):
        why = {
            State.PENDING: "it was never sent",
            State.CANCELLED: "it was cancelled before it was sent",
            State.REJECTED: "Craftkit refused it and created nothing",
        }[entry.state]
        rule, generation, key = Rule.AMEND_SAME_KEY, entry.generation, entry.key
        detail = f"amended, same key {key} ({why}): {changed}"
    else:
        rule, generation = Rule.AMEND_NEW_KEY, entry.generation + 1
        key = derived_key(entry.base_key, generation)
        why = (
            f"render {entry.render_id} failed under key {entry.key} and stays failed there"
            if entry.state is State.FAILED
            else f"an earlier submission under key {entry.key} has an unknown outcome, so "
            "Craftkit may hold a render for it"
        )
        detail = f"amended, new key {key} ({why}): {changed}"
    changes = _fresh_start(key, generation, now)
    changes.update(content)
    return Move(rule, State.PENDING, changes, detail)


def describe_amendment(entry: Entry, request: RenderRequest) -> str:
    """What an amendment changes, old and new, for the history ("" when nothing changes).

    Data is compared field by field (dotted keys, loops as a whole), each value shown as
    compact JSON and shortened when long.
    """
    parts: list[str] = []
    if "data" in request_differences(entry, request):
        old, new = _flat(entry.data), _flat(request.data)
        paths = [*old, *(path for path in new if path not in old)]
        changed = [p for p in paths if canonical_json(old.get(p)) != canonical_json(new.get(p))]
        for path in changed[:_SHOWN_FIELDS]:
            parts.append(f"{path}: {_shown(old, path)} → {_shown(new, path)}")
        if len(changed) > _SHOWN_FIELDS:
            parts.append(f"and {len(changed) - _SHOWN_FIELDS} more fields")
    if entry.filename != request.filename:
        parts.append(f"filename: {entry.filename or '(none)'} → {request.filename or '(none)'}")
    if entry.version != request.version:
        parts.append(f"version: {entry.version or '(current)'} → {request.version or '(current)'}")
    return "; ".join(parts)


_SHOWN_FIELDS = 20
_SHOWN_CHARS = 120


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys (``customer.name``); arrays stay whole values."""
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _shown(values: dict[str, Any], path: str) -> str:
    if path not in values:
        return "(none)"
    text = json.dumps(values[path], ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _fresh_start(key: str, generation: int, now: float) -> Changes:
    """An entry about to be sent (again) under ``key``: nothing of an earlier try remains."""
    return Changes(
        key=key,
        generation=generation,
        attempts=0,
        polls=0,
        render_id=None,
        remote_status=None,
        download_url=None,
        error=None,
        error_code=None,
        field_errors=None,
        submitted_at=None,
        finished_at=None,
        due_at=now,
    )


# -- what needs a person --------------------------------------------------------------------

#: ``error_code`` of an entry waiting because the downloads folder's disk is full.
DISK_FULL = "disk_full"
#: ``error_code`` of an entry waiting because the downloads folder cannot be written.
FOLDER_UNWRITABLE = "folder_unwritable"
#: Codes of waiting entries that nothing but a person can unblock (outbox keeps trying).
_NEEDS_A_PERSON = frozenset({DISK_FULL, FOLDER_UNWRITABLE, "not_found"})


def needs_a_person(entry: Entry) -> bool:
    """Whether a waiting entry is stuck on something only a person can fix: Craftkit does not
    know its render (the API key of another project?), or its PDF cannot be written (a full
    disk, a folder without write permission). Outages, 5xx and rate limits pass by themselves.
    """
    return not entry.state.is_terminal and entry.error_code in _NEEDS_A_PERSON


# -- shared ----------------------------------------------------------------------------------


def _problem(
    rule: Rule,
    entry: Entry,
    error: Exception,
    message: str,
    polls: int,
    due_at: float,
    network: Network = Network.NOTHING,
    *,
    code: str | None = None,
) -> Move:
    """Keep the entry where it is, show the problem, and try again at ``due_at``.

    The history gets a line only when the problem is new, so a long outage does not flood it
    with identical lines.
    """
    if message == entry.error:
        return Move(rule, entry.state, Changes(polls=polls, due_at=due_at), network=network)
    return Move(
        rule,
        entry.state,
        Changes(
            error=message,
            error_code=code or getattr(error, "code", None) or type(error).__name__,
            polls=polls,
            due_at=due_at,
        ),
        message,
        getattr(error, "status", None),
        network,
    )


def _foreign(error: RemoteError, doing: str) -> str:
    """What to say about a :class:`ForeignAnswer` that concerns one request only."""
    return (
        f"{doing} got an answer that is not Craftkit's ({error.message.rstrip('.')}) while "
        "the API's health check answers ok, so only this entry waits"
    )


def _age(entry: Entry, now: float) -> float:
    """Seconds since the entry's render was accepted."""
    submitted_at = entry.submitted_at if entry.submitted_at is not None else now
    return max(0.0, now - submitted_at)


def _expect(entry: Entry, state: State, what: str) -> None:
    if entry.state is not state:
        raise IllegalTransition(f"{what} for entry {entry.id}, which is {entry.state}, not {state}")
