"""outbox: an offline-first render queue for the Craftkit PDF API.

A render request written to the outbox is never lost and never rendered twice, and its PDF ends
up on disk, verified. Start with :class:`Outbox`.
"""

from .aio import AsyncOutbox
from .client import Share
from .config import Settings
from .deliveries import Delivery, DeliveryState
from .engine import FlushReport
from .errors import (
    AuthError,
    ConfigError,
    DataInvalid,
    DownloadError,
    EntryBusy,
    EntryNotFound,
    IllegalTransition,
    InvalidArgument,
    JournalBusy,
    JournalDamaged,
    JournalError,
    JournalFull,
    JournalMissing,
    JournalTooNew,
    KeyConflict,
    LostRace,
    NotAJournal,
    Offline,
    OutboxError,
    PermanentError,
    RemoteError,
    TemplateUnknown,
    TemplateUnpublished,
    TransientError,
)
from .exit_codes import ExitCode
from .models import Entry, EntryPage, Event, RenderRequest, State
from .outbox import Outbox
from .schedule import Schedule
from .templates import CachedTemplate
from .validation import CheckOutcome, DataCheck, ValidationMode
from .watcher import DropFolder

__version__ = "0.1.0"

__all__ = [
    "AsyncOutbox",
    "AuthError",
    "CachedTemplate",
    "CheckOutcome",
    "ConfigError",
    "DataCheck",
    "DataInvalid",
    "Delivery",
    "DeliveryState",
    "DownloadError",
    "DropFolder",
    "Entry",
    "EntryBusy",
    "EntryNotFound",
    "EntryPage",
    "Event",
    "ExitCode",
    "FlushReport",
    "IllegalTransition",
    "InvalidArgument",
    "JournalBusy",
    "JournalDamaged",
    "JournalError",
    "JournalFull",
    "JournalMissing",
    "JournalTooNew",
    "KeyConflict",
    "LostRace",
    "NotAJournal",
    "Offline",
    "Outbox",
    "OutboxError",
    "PermanentError",
    "RemoteError",
    "RenderRequest",
    "Schedule",
    "Settings",
    "Share",
    "State",
    "TemplateUnknown",
    "TemplateUnpublished",
    "TransientError",
    "ValidationMode",
]
