"""Entry states, the moves allowed between them, and the public records.

Pure data: nothing here does I/O. The words in :class:`State` are the public vocabulary used
by the CLI, the JSON output, the library and the database alike.
"""

from __future__ import annotations

import enum
import json
import math
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict, TypeVar, cast

from . import ids, rules
from .deliveries import Delivery, DeliveryRequest, same_deliveries
from .errors import InvalidArgument, KeyConflict


class State(enum.StrEnum):
    """Where an entry stands. See the README's states table."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True when nothing will happen to the entry unless a person acts (``retry``)."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({State.DONE, State.FAILED, State.REJECTED, State.CANCELLED})
UNFINISHED_STATES = frozenset({State.PENDING, State.SUBMITTED, State.DOWNLOADING})

#: Every move the journal accepts. A move to the same state records an event (a retry
#: scheduled, a remote status change) without changing the state.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset(
        {
            State.PENDING,
            State.SUBMITTED,
            State.DOWNLOADING,
            State.FAILED,
            State.REJECTED,
            State.CANCELLED,
        }
    ),
    State.SUBMITTED: frozenset({State.SUBMITTED, State.DOWNLOADING, State.FAILED}),
    State.DOWNLOADING: frozenset({State.DOWNLOADING, State.DONE}),
    State.DONE: frozenset(),
    State.FAILED: frozenset({State.PENDING}),
    State.REJECTED: frozenset({State.PENDING}),
    # Only ``amend`` brings a cancelled entry back: its new request goes out.
    State.CANCELLED: frozenset({State.PENDING}),
}


def can_move(source: State, target: State) -> bool:
    """Whether the journal allows ``source`` -> ``target``."""
    return target in TRANSITIONS[source]


class RemoteStatus(enum.StrEnum):
    """A render's status as Craftkit documents it (``GET /v1/renders/:id``).

    Craftkit may one day answer a status outside this list; :meth:`of` gives None for it, and
    such a render counts as unfinished (it is polled on), never as terminal.
    """

    QUEUED = "queued"
    RENDERING = "rendering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Documented, but Craftkit has no way to cancel a render; treated like ``failed``.
    CANCELLED = "cancelled"

    @classmethod
    def of(cls, text: str) -> RemoteStatus | None:
        """The documented status ``text`` names, or None for one Craftkit does not document."""
        try:
            return cls(text)
        except ValueError:
            return None

    @property
    def is_terminal(self) -> bool:
        """True once the render will not change any more."""
        return self in (RemoteStatus.SUCCEEDED, RemoteStatus.FAILED, RemoteStatus.CANCELLED)


class Changes(TypedDict, total=False):
    """The fields of an entry that a move may change, with their types.

    :meth:`~outbox.store.Journal.transition` and :meth:`~outbox.store.Journal.reschedule` take
    them as keyword arguments typed by this dict, so a misspelled field is a type error.
    """

    key: str
    generation: int
    remote_status: str | None
    render_id: str | None
    download_url: str | None
    attempts: int
    polls: int
    error: str | None
    error_code: str | None
    field_errors: dict[str, list[str]] | None
    due_at: float
    pdf_path: str | None
    pdf_bytes: int | None
    pdf_sha256: str | None
    submitted_at: float | None
    finished_at: float | None
    #: The request itself: only ``amend`` changes it.
    data: dict[str, Any]
    filename: str | None
    version: int | None


#: The fields of an entry that the CLI's ``--json`` output promises to keep stable.
PUBLIC_FIELDS = (
    "id",
    "template",
    "key",
    "state",
    "remote_status",
    "render_id",
    "attempts",
    "error",
    "pdf_path",
    "pdf_bytes",
    "pdf_sha256",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True)
class Entry:
    """One render request in the journal, as it stood when it was read.

    ``key`` is the idempotency key currently sent to Craftkit; after a ``retry`` of a failed
    entry it is a derived key (``KEY~2``) while ``base_key`` stays what the caller gave.
    """

    id: str
    template: str
    data: dict[str, Any]
    key: str
    base_key: str
    state: State
    remote_status: str | None
    render_id: str | None
    attempts: int
    error: str | None
    error_code: str | None
    field_errors: dict[str, list[str]] | None
    filename: str | None
    version: int | None
    pdf_path: str | None
    pdf_bytes: int | None
    pdf_sha256: str | None
    source: str | None
    created_at: str
    updated_at: str
    due_at: float = field(repr=False, default=0.0)
    generation: int = field(repr=False, default=1)
    polls: int = field(repr=False, default=0)
    submitted_at: float | None = field(repr=False, default=None)
    download_url: str | None = field(repr=False, default=None)
    #: The share links and emails that go with the request (see :mod:`outbox.deliveries`),
    #: oldest first. Filled in by the journal's reads (``get``, ``list``, ``find_by_key``,
    #: ``enqueue``); empty on the entries a worker claims.
    deliveries: tuple[Delivery, ...] = field(repr=False, default=())
    #: Why the stored ``data`` cannot be read back (then ``data`` is empty); see
    #: :func:`load_data`. Only journals from before the enqueue limits can hold such data.
    data_problem: str | None = field(repr=False, default=None)

    def to_public(self) -> dict[str, Any]:
        """The stable, JSON-ready view used by ``--json`` output."""
        return {name: _plain(getattr(self, name)) for name in PUBLIC_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """Every field except internal bookkeeping, JSON-ready; deliveries as a list.

        Unreadable stored data shows as ``data: null`` with ``data_problem`` saying why.
        """
        hidden = {
            "due_at",
            "generation",
            "polls",
            "submitted_at",
            "download_url",
            "deliveries",
            "data_problem",
        }
        fields = {
            name: _plain(getattr(self, name))
            for name in self.__dataclass_fields__
            if name not in hidden
        }
        fields["deliveries"] = [delivery.to_public() for delivery in self.deliveries]
        if self.data_problem is not None:
            fields.update(data=None, data_problem=self.data_problem)
        return fields


_Frozen = TypeVar("_Frozen")


def assembled(cls: type[_Frozen], /, **fields: Any) -> _Frozen:
    """An instance of the frozen dataclass ``cls`` holding ``fields``, set in one step.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (27 calls
    for an :class:`Entry`, a third of the Python an enqueue runs besides its SQL). For the
    objects every write returns, built from what was just written. The caller gives every
    field (a test checks both callers against :func:`dataclasses.fields`).
    """
    made = object.__new__(cls)
    vars(made).update(fields)
    return made


@dataclass(frozen=True)
class Event:
    """One row of an entry's event journal: a state change or a noteworthy attempt."""

    id: int
    entry_id: str
    at: str
    from_state: State | None
    to_state: State
    attempt: int
    http_status: int | None
    error_code: str | None
    detail: str | None
    #: Set when the event is about one of the entry's deliveries (the entry's own state is
    #: then unchanged: ``from_state == to_state``), with the delivery's state after it.
    delivery_id: str | None = None
    delivery_state: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: _plain(value) for name, value in asdict(self).items()}


@dataclass(frozen=True)
class EntryPage:
    """One page of entries; ``next`` is the cursor for the page after it (None: last page)."""

    entries: list[Entry]
    next: str | None


def _plain(value: Any) -> Any:
    if isinstance(value, State):
        return value.value
    return value


MAX_VERSION = 2**31 - 1
#: How deeply ``data`` may nest objects and arrays (the data object itself is level 1).
#: Craftkit's data is shallow (fields, loops of items); deeper data is a mistake or an attack,
#: and would otherwise exhaust Python's recursion limit wherever it is read back.
MAX_DATA_DEPTH = 64
#: The largest ``data``, as compact UTF-8 JSON. Images travel as URLs, so real data is far
#: smaller; the cap keeps one entry from filling memory wherever the journal is read.
MAX_DATA_BYTES = 2 * 1024 * 1024
#: The longest file name, in UTF-8 bytes, that common file systems (ext4, APFS, NTFS) allow.
MAX_FILENAME_BYTES = 255


def _generated_key() -> str:
    """A key for a request given none: a time-ordered id (see :mod:`outbox.ids`), so that the
    new key lands at the end of the keys' index as the id does, then 64 random bits, so that it
    is unique among processes and journals as a UUID would be."""
    return f"outbox-{ids.new_id(time.time())}{secrets.token_hex(8)}"


@dataclass(frozen=True)
class RenderRequest:
    """A validated request to render ``template`` with ``data``: what ``enqueue`` stores.

    Raises :class:`~outbox.errors.InvalidArgument` naming the argument and the rule broken.
    With no ``key``, a random one is generated (so the request is still sent idempotently),
    so ``key`` is never None once constructed.
    """

    template: str
    data: dict[str, Any]
    key: str | None = None
    filename: str | None = None
    version: int | None = None
    #: Where the request came from (e.g. a drop-folder file); kept in the journal, not sent.
    source: str | None = None
    #: Share links and emails to make once the PDF is done, checked by
    #: :func:`outbox.deliveries.delivery_requests`.
    deliveries: tuple[DeliveryRequest, ...] = ()
    #: ``data`` as compact JSON, made once while checking it.
    data_json: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        _check_template(self.template)
        object.__setattr__(self, "data_json", _data_json(self.data))
        if self.key is None:
            object.__setattr__(self, "key", _generated_key())
        else:
            _check_key(self.key)
        if self.filename is not None:
            _check_filename(self.filename)
        if not isinstance(self.deliveries, tuple) or not all(
            isinstance(item, DeliveryRequest) for item in self.deliveries
        ):
            raise InvalidArgument(
                "deliveries must be a tuple of DeliveryRequest (use Outbox.prepare(share=..., "
                "email=...))"
            )
        if self.version is not None and (
            isinstance(self.version, bool)
            or not isinstance(self.version, int)
            or not 1 <= self.version <= MAX_VERSION
        ):
            raise InvalidArgument(
                f"version must be a whole number from 1 to {MAX_VERSION}, not {self.version!r}"
            )


#: What "the same request" compares, in the order a conflict names the differences.
REQUEST_FIELDS = ("template", "data", "filename", "version", "deliveries")


def request_differences(entry: Entry, request: RenderRequest) -> list[str]:
    """Which of :data:`REQUEST_FIELDS` differ between ``entry``'s request and ``request``.

    Two requests are *the same request* when they render the same template slug, with data
    equal as JSON values (object keys in any order; numbers by value, so ``1`` and ``1.0``
    are equal but ``true`` and ``1`` are not; strings exactly), the same ``filename`` and the
    same ``version`` (no filename and no version are values of their own), and the same share
    links and emails (in any order; links made later by hand do not count). Where the request
    came from (``source``) does not count.
    """
    different = []
    if entry.template != request.template:
        different.append("template")
    if canonical_json(entry.data) != canonical_json(request.data):
        different.append("data")
    if entry.filename != request.filename:
        different.append("filename")
    if entry.version != request.version:
        different.append("version")
    asked_with_it = tuple(d.request for d in entry.deliveries if not d.by_hand)
    if not same_deliveries(asked_with_it, request.deliveries):
        different.append("deliveries")
    return different


def key_conflict(entry: Entry, request: RenderRequest) -> KeyConflict | None:
    """The error for enqueueing ``request`` under the key ``entry`` already holds, or None
    when ``request`` is the same request (enqueueing it again returns ``entry``).

    One rule and one wording for the library, the CLI and the drop folder.
    """
    different = request_differences(entry, request)
    if not different:
        return None
    origin = f"made from {os.path.basename(entry.source)}" if entry.source else "enqueued"
    return KeyConflict(
        f'the key "{request.key}" already belongs to entry {entry.id} ({entry.state}; '
        f"{origin} at {entry.created_at}), which asks for a different request "
        f"({' and '.join(different)} {'differ' if _plural(different) else 'differs'}); nothing was "
        "queued. Give this request its own key, or change that entry's request with "
        f"`outbox amend {entry.id}`",
        key=str(request.key),
        entry_id=entry.id,
        state=entry.state.value,
        differences=different,
    )


def _plural(different: list[str]) -> bool:
    return len(different) > 1 or different == ["deliveries"]


def canonical_json(value: Any) -> str:
    """``value`` as JSON text that is equal for equal JSON values (see
    :func:`request_differences`): sorted keys, integral numbers written as integers."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _check_template(template: object) -> None:
    if not rules.is_slug(template):
        raise InvalidArgument(
            f"template {template!r} is not a valid slug: use {rules.SLUG_RULE} "
            "(e.g. 'inspection-report')"
        )


#: Compact JSON refusing NaN and Infinity; made once (``json.dumps`` with options makes an
#: encoder per call, on every enqueue).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _data_json(data: object) -> str:
    """``data`` as compact JSON, after checking it is an object within the limits."""
    if not isinstance(data, dict):
        kind = "a JSON array" if isinstance(data, list) else f"{type(data).__name__}"
        raise InvalidArgument(f"data must be a JSON object ({{...}}), not {kind}")
    try:
        text = _COMPACT_JSON.encode(data)
    except (ValueError, TypeError, RecursionError) as exc:
        _check_depth(data)  # data nested too deep (or in a circle) is told so first
        if isinstance(exc, TypeError):
            raise InvalidArgument(f"data must be JSON-serialisable: {exc}") from None
        problem = _first_problem(data) or "data holds a value JSON cannot carry"
        raise InvalidArgument(problem) from None
    if text.count("{") + text.count("[") > MAX_DATA_DEPTH:  # else it cannot be nested deeper
        _check_depth(data)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(
            _first_problem(data) or "data holds half of a surrogate pair, which is not text"
        ) from None
    if size > MAX_DATA_BYTES:
        raise InvalidArgument(
            f"data is {size:,} bytes as JSON; at most {MAX_DATA_BYTES:,} bytes "
            f"({MAX_DATA_BYTES // 1024 // 1024} MiB) are allowed (images go in as URLs)"
        )
    return text


def check_data(data: object) -> str:
    """Check ``data`` against enqueue's limits and return it as compact JSON.

    Raises :class:`~outbox.errors.InvalidArgument` naming the rule broken (and where).
    """
    return _data_json(data)


def load_data(text: str, *, strict: bool = True) -> dict[str, Any]:
    """Parse ``data`` stored in the journal without ever crashing the reader.

    Journals written before the enqueue limits existed may hold data nested so deeply that
    parsing it exhausts the recursion limit. Raises :class:`~outbox.errors.InvalidArgument`
    for such data; ``strict`` also applies every other enqueue rule (size, finite numbers), as
    is done before the data is sent.
    """
    try:
        data = json.loads(text)
    except RecursionError:
        raise InvalidArgument(f"data is nested more than {MAX_DATA_DEPTH} levels deep") from None
    except ValueError as exc:
        raise InvalidArgument(f"the stored data is not valid JSON ({exc})") from None
    if strict:
        _data_json(data)
    elif isinstance(data, dict):
        _check_depth(data)
    else:
        raise InvalidArgument("the stored data is not a JSON object")
    return cast(dict[str, Any], data)


def _check_depth(data: object) -> None:
    """Refuse nesting deeper than :data:`MAX_DATA_DEPTH`, without recursion."""
    level: list[object] = [data]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DATA_DEPTH:
            raise InvalidArgument(f"data is nested more than {MAX_DATA_DEPTH} levels deep")
        children: list[object] = []
        for node in level:
            values = node.values() if isinstance(node, dict) else node
            children.extend(v for v in cast(list[object], values) if isinstance(v, dict | list))
        level = children


def _first_problem(data: object) -> str | None:
    """Where ``data`` holds a non-finite number or a lone surrogate, said for a person."""
    pending: list[tuple[str, object]] = [("data", data)]
    while pending:
        path, node = pending.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return f"{path} is {node!r}; JSON numbers must be finite (no NaN or Infinity)"
        if isinstance(node, str) and _has_lone_surrogate(node):
            return f"{path} holds half of a surrogate pair (a broken \\u escape), which is not text"
        if isinstance(node, dict):
            for name, value in node.items():
                if isinstance(name, str) and _has_lone_surrogate(name):
                    return f"a key in {path} holds half of a surrogate pair, which is not text"
                pending.append((f"{path}.{name}", value))
        elif isinstance(node, list):
            pending.extend((f"{path}.{index}", value) for index, value in enumerate(node))
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_key(key: object) -> None:
    shortest, longest = rules.IDEMPOTENCY_KEY_MIN, rules.IDEMPOTENCY_KEY_MAX
    if not isinstance(key, str) or not shortest <= len(key) <= longest:
        length = len(key) if isinstance(key, str) else type(key).__name__
        raise InvalidArgument(
            f"key must be a string of {shortest}-{longest} characters (got {length})"
        )
    if not rules.is_header_safe(key):
        raise InvalidArgument(
            "key may contain only printable ASCII characters (it is sent as an HTTP header)"
        )
    if key != key.strip(" "):
        raise InvalidArgument(
            f"key {key!r} starts or ends with a space, which an HTTP header cannot carry"
        )
    if rules.has_retry_suffix(key):
        raise InvalidArgument(
            f"key {key!r} ends in '~' and a number, which outbox reserves for retries"
        )


def _check_filename(filename: object) -> None:
    if not isinstance(filename, str):
        raise InvalidArgument(f"filename must be a string, not {type(filename).__name__}")
    problem = None
    if "/" in filename or "\\" in filename:
        problem = "it must be a plain name, not a path"
    elif filename.startswith("."):
        problem = "it must not start with '.'"
    elif any(ord(char) < 32 or ord(char) == 127 for char in filename):
        problem = "it must not contain control characters"
    elif _has_lone_surrogate(filename):
        problem = "it holds half of a surrogate pair, which is not text"
    elif len(filename.encode("utf-8")) > MAX_FILENAME_BYTES:
        problem = (
            f"it is {len(filename.encode('utf-8'))} bytes in UTF-8; file systems allow at most "
            f"{MAX_FILENAME_BYTES}"
        )
    elif not filename.lower().endswith(".pdf") or len(filename) == 4:
        problem = "it must end in '.pdf'"
    if problem:
        raise InvalidArgument(f"filename {filename!r} is not allowed: {problem}")
