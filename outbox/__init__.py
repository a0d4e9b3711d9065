"""outbox: an offline-first render queue for the Craftkit PDF API.

A render request written to the outbox is never lost and never rendered twice, and its PDF ends
up on disk, verified. Start with :class:`Outbox`.

The names below are imported on first use (PEP 562), so that ``import outbox`` (and every CLI
command) loads only the modules it needs: queueing a request needs neither the network stack
nor the drop-folder watcher nor the JSON Schema library.

outbox logs through :mod:`logging` under ``outbox.*`` and prints nothing itself: without a
logging set-up of the app's own, nothing appears (not even warnings). See :mod:`outbox.logs`.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from .deliveries import Delivery, DeliveryState
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
    NoPdf,
    NotAJournal,
    Offline,
    OutboxError,
    PdfNotReady,
    PermanentError,
    RemoteError,
    TemplateUnknown,
    TemplateUnpublished,
    TransientError,
)
from .exit_codes import ExitCode
from .models import Entry, EntryPage, Event, RenderRequest, State

if TYPE_CHECKING:
    from .aio import AsyncOutbox
    from .client import Share
    from .config import Settings
    from .engine import FlushReport
    from .outbox import Outbox
    from .schedule import Schedule
    from .templates import CachedTemplate
    from .validation import CheckOutcome, DataCheck, ValidationMode
    from .watcher import DropFolder

__version__ = "0.1.0"

#: Public names that live in a module loaded only when the name is first used.
_LAZY = {
    "AsyncOutbox": "aio",
    "CachedTemplate": "templates",
    "CheckOutcome": "validation",
    "DataCheck": "validation",
    "DropFolder": "watcher",
    "FlushReport": "engine",
    "Outbox": "outbox",
    "Schedule": "schedule",
    "Settings": "config",
    "Share": "client",
    "ValidationMode": "validation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'outbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


logging.getLogger(__name__).addHandler(logging.NullHandler())


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
    "NoPdf",
    "NotAJournal",
    "Offline",
    "Outbox",
    "OutboxError",
    "PdfNotReady",
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
