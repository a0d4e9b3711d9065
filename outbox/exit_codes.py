"""The process exit codes of ``outbox`` commands, shared by the engine's report and the CLI.

The numbers follow BSD's ``sysexits.h`` so that shell scripts and service managers can tell
"try again later" (75) from "fix the input" (65) without parsing any text.
"""

from __future__ import annotations

import enum

from . import errors


class ExitCode(enum.IntEnum):
    """What a command's exit status means. See the README's "Exit codes" table."""

    #: Drained: nothing left pending or in progress, and nothing failed in this run.
    OK = 0
    #: A bug or an error nobody planned for; the message says what happened.
    UNEXPECTED = 1
    #: The command line does not parse: an unknown option, a missing argument (``EX_USAGE``).
    USAGE = 64
    #: Bad input to a command, or a run that moved an entry to ``failed`` or ``rejected``
    #: (``EX_DATAERR``).
    DATA_ERROR = 65
    #: Work remains or a resource is busy: offline, server trouble, rate limited, still
    #: rendering, the journal locked; run again later (``EX_TEMPFAIL``).
    TRY_LATER = 75
    #: Craftkit refused the API key (``EX_NOPERM``).
    KEY_REFUSED = 77
    #: The configuration is missing or wrong, or ``--db`` is not a usable journal
    #: (not a journal, damaged, too new) (``EX_CONFIG``).
    CONFIG_ERROR = 78


#: Most specific first: the first matching class decides the exit code.
_FOR_ERROR: tuple[tuple[type[errors.OutboxError], ExitCode], ...] = (
    (errors.ConfigError, ExitCode.CONFIG_ERROR),
    (errors.JournalMissing, ExitCode.CONFIG_ERROR),
    (errors.NotAJournal, ExitCode.CONFIG_ERROR),
    (errors.JournalDamaged, ExitCode.CONFIG_ERROR),
    (errors.JournalTooNew, ExitCode.CONFIG_ERROR),
    (errors.AuthError, ExitCode.KEY_REFUSED),
    (errors.EntryBusy, ExitCode.TRY_LATER),
    (errors.PdfNotReady, ExitCode.TRY_LATER),
    (errors.NoPdf, ExitCode.DATA_ERROR),
    (errors.JournalBusy, ExitCode.TRY_LATER),
    (errors.JournalFull, ExitCode.TRY_LATER),
    (errors.TransientError, ExitCode.TRY_LATER),
    (errors.InvalidArgument, ExitCode.DATA_ERROR),
    (errors.EntryNotFound, ExitCode.DATA_ERROR),
    (errors.IllegalTransition, ExitCode.DATA_ERROR),
    (errors.LostRace, ExitCode.DATA_ERROR),
    (errors.PermanentError, ExitCode.DATA_ERROR),
)


def exit_code_for(exc: errors.OutboxError) -> ExitCode:
    """The exit code a command ends with when ``exc`` stops it."""
    for kind, code in _FOR_ERROR:
        if isinstance(exc, kind):
            return code
    return ExitCode.UNEXPECTED
