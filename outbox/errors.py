"""One exception tree for everything outbox raises.

Catch :class:`OutboxError` to handle them all. Messages are written for the person who has to
act on them, and never contain the API key. The tree::

    OutboxError
    ├── ConfigError           missing or wrong configuration (no API key where one is needed)
    ├── InvalidArgument       a malformed argument; the message names it and the rule (ValueError)
    │   ├── DataInvalid       data the cached template says Craftkit would refuse
    │   ├── TemplateUnpublished
    │   ├── TemplateUnknown   not among the templates Craftkit listed at the last full sync
    │   └── KeyConflict       the key already belongs to an entry asking for another request
    ├── JournalError          the journal file cannot be used
    │   ├── JournalMissing    there is none, and it was opened for reading only (create=False)
    │   ├── NotAJournal       not an outbox journal; left untouched
    │   ├── JournalDamaged    an outbox journal, but cut short or corrupt; left untouched
    │   ├── JournalTooNew     written by a newer outbox; left untouched
    │   ├── JournalBusy       locked by another process for longer than the busy timeout
    │   └── JournalFull       the disk is full; nothing was written
    ├── EntryNotFound         no entry has this id (LookupError)
    ├── NoPdf                 the entry has no PDF, and never will (failed, cancelled, file gone)
    │   └── PdfNotReady       not yet: the entry is still pending or in progress
    ├── IllegalTransition     the transition table forbids the move: a bug, or a request such
    │                         as cancelling an entry that is already done
    ├── LostRace              someone else changed the entry first (compare-and-set lost)
    │   └── EntryBusy         the entry is leased right now; try again in a moment
    ├── RemoteError           Craftkit, or the network in front of it, did not say yes
    │   ├── TransientError    try again later with the same key
    │   │   ├── Offline       the API was not reached, or something else answered
    │   │   │   └── ForeignAnswer  a redirect or a body that is not the API's: offline
    │   │   │                    unless GET /health answers ok, then that request's problem
    │   │   ├── OutcomeUnknown  sent, but no answer came back
    │   │   ├── ServerError   a 5xx
    │   │   ├── RateLimited   a 429
    │   │   ├── UnusableAnswer  too large, or an id or text outbox refuses: this entry's problem
    │   │   ├── DownloadError an incomplete or foreign PDF
    │   │   └── PublicCopyBroken  the public downloadUrl failed; the private stream takes over
    │   ├── AuthError         the API key was refused (401/403)
    │   └── PermanentError    refused for good (400/404/409...)
    │       └── NotFound      Craftkit does not know the render
    └── StorageFull           the downloads folder's disk is full
"""

from __future__ import annotations


class OutboxError(Exception):
    """Root of every error outbox raises on purpose."""


class ConfigError(OutboxError):
    """The configuration is missing or wrong (for example no API key where one is needed)."""


class InvalidArgument(OutboxError, ValueError):
    """An argument given to outbox is malformed; the message names the argument and the rule."""


class DataInvalid(InvalidArgument):
    """Data that the cached template says Craftkit would refuse with ``invalid_input_data``.

    ``field_errors`` has Craftkit's ``fieldErrors`` shape: dotted field keys (``customer.name``,
    ``findings.0.severity``) to Zod's messages. The message lists them one per line, so it can
    be shown as is (on stderr, or in a drop folder's ``NAME.error.txt``).
    """

    def __init__(
        self,
        message: str,
        *,
        template: str,
        version: int | None,
        field_errors: dict[str, list[str]],
    ) -> None:
        super().__init__(message)
        self.template = template
        self.version = version
        self.field_errors = field_errors


class TemplateUnpublished(InvalidArgument):
    """The cached template has no published version, so Craftkit would refuse any render of it."""

    def __init__(self, message: str, *, template: str) -> None:
        super().__init__(message)
        self.template = template


class TemplateUnknown(InvalidArgument):
    """The template is not among those Craftkit listed at the last full ``templates sync``,
    so Craftkit would answer ``template_not_found``. ``synced_at`` is when that sync ran."""

    def __init__(self, message: str, *, template: str, synced_at: str) -> None:
        super().__init__(message)
        self.template = template
        self.synced_at = synced_at


class KeyConflict(InvalidArgument):
    """The idempotency key already belongs to an entry that asks for a different request.

    Enqueueing the *same* request under a key returns the existing entry; a different one is
    refused, whoever enqueues it (the library, the CLI, a drop-folder file), because Craftkit
    would hand back the render of the first request for it. ``entry_id`` and ``state`` name
    the entry that holds the key; ``differences`` lists what differs (``template``, ``data``,
    ``filename``, ``version``).
    """

    def __init__(
        self, message: str, *, key: str, entry_id: str, state: str, differences: list[str]
    ) -> None:
        super().__init__(message)
        self.key = key
        self.entry_id = entry_id
        self.state = state
        self.differences = differences


class JournalError(OutboxError):
    """The journal file cannot be used."""


class JournalMissing(JournalError):
    """There is no journal at the path, and it was opened with ``create=False``: nothing was
    created (no file, no folder). ``path`` is where it was looked for."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class NotAJournal(JournalError):
    """The file exists but is not an outbox journal. It is left untouched."""


class JournalDamaged(JournalError):
    """The file is an outbox journal (or its remains), but cut short or corrupt: SQLite cannot
    read it, or its main file is empty or missing beside a write-ahead log. It is left untouched,
    to be restored from a backup."""


class JournalTooNew(JournalError):
    """The journal was written by a newer outbox; it is refused rather than rewritten."""


class JournalBusy(JournalError):
    """Another process held the journal locked for longer than the busy timeout."""


class JournalFull(JournalError):
    """The disk holding the journal is full; nothing was written."""


class EntryNotFound(OutboxError, LookupError):
    """No entry has this id."""


class IllegalTransition(OutboxError):
    """A state change that the transition table (``models.TRANSITIONS``) forbids.

    Inside outbox this is a bug; from the facade it refuses a request such as cancelling an
    entry that Craftkit already accepted.
    """


class LostRace(OutboxError):
    """Someone else changed the entry first: it is no longer in the state the change expected,
    or no longer leased by this process. Nothing was written; read the entry again."""


class EntryBusy(LostRace):
    """The entry is leased by a worker (a request for it is on the wire); try again shortly."""


class RemoteError(OutboxError):
    """Craftkit (or the network in front of it) answered with something other than success."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field_errors: dict[str, list[str]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field_errors = field_errors
        self.retry_after = retry_after


class TransientError(RemoteError):
    """Worth trying again later with the same idempotency key; counts as an attempt."""


class Offline(TransientError):
    """The API could not be reached, or something other than the API answered.

    Does not count as an attempt: nothing reached Craftkit.
    """


class ForeignAnswer(Offline):
    """Something answered that is not the Craftkit API's answer: a redirect, a 2xx whose body
    is not what the API sends, an error without Craftkit's envelope.

    A captive portal or a proxy answers like this, so on its own it means offline; but when
    ``GET /health`` answers ok right after, the API is there and the odd answer concerns only
    the request (and the entry) it came for.
    """


class OutcomeUnknown(TransientError):
    """The request was sent but no answer came back; the render may or may not exist."""


class ServerError(TransientError):
    """Craftkit answered 5xx."""


class RateLimited(TransientError):
    """Craftkit answered 429; ``retry_after`` holds its ``Retry-After`` in seconds, if any."""


class AuthError(RemoteError):
    """The API key was refused (401/403). Every submission pauses until it is fixed."""


class PermanentError(RemoteError):
    """Craftkit refused the request for good (400/404/409...); retrying will not help."""


class NotFound(PermanentError):
    """Craftkit does not know the render (404 ``not_found``), usually a key from another project."""


class UnusableAnswer(TransientError):
    """An answer that cannot be used: too large, or holding an id outbox refuses.

    It concerns the one request (and its entry), which is tried again later with backoff;
    the API still counts as online and every other entry carries on.
    """


class DownloadError(TransientError):
    """A PDF download was incomplete or not a PDF; it is retried, never kept."""


class PublicCopyBroken(TransientError):
    """The public ``downloadUrl`` could not be fetched: refused, redirected, any 4xx or 5xx (a
    401 from the bucket too), or not an http(s) URL.

    The bucket is not the API: this never says anything about the network or the API key. The
    entry downloads through the private stream instead.
    """


class StorageFull(OutboxError):
    """The downloads folder's disk is full; the entry waits for space."""


class NoPdf(OutboxError):
    """The entry has no PDF and will not get one: it failed, was rejected or cancelled, or its
    file was deleted since. ``entry_id`` and ``state`` say which entry and where it is."""

    def __init__(self, message: str, *, entry_id: str, state: str) -> None:
        super().__init__(message)
        self.entry_id = entry_id
        self.state = state


class PdfNotReady(NoPdf):
    """The entry has no PDF yet: it is pending, submitted or downloading."""
