"""Every difference between operating systems that outbox cares about, and nothing else.

outbox runs on Linux servers, Windows tablets and Mac laptops, and a journal with its downloads
folder can move between them (an SD card, a synced folder, a restored backup). This is the only
module that knows which system it runs on: the rest of outbox calls the functions here and
never looks at ``sys.platform`` or ``os.name``, nor calls ``os.kill``, ``os.fsync``,
``os.replace``, ``signal.signal``, ``fcntl``, ``msvcrt`` or the Windows API itself
(``tests/test_platform_static.py`` parses every module to keep it so).

Each difference is decided by :func:`rules_for`, a pure function of the platform name, so the
choice made for Windows or macOS is tested on Linux; the functions below carry out the
:data:`RULES` of the system they run on:

==================  =======================  ===========================  ====================
difference          Linux (and other POSIX)  macOS                        Windows
==================  =======================  ===========================  ====================
process alive?      ``kill(pid, 0)``         ``kill(pid, 0)``             ``OpenProcess`` +
                                                                          ``GetExitCodeProcess``
file contents sync  ``fsync``                ``fcntl(F_FULLFSYNC)``       ``FlushFileBuffers``
folder sync         ``fsync`` of the folder  ``F_FULLFSYNC`` of the       none: moves write
                                             folder                       through instead
claiming a name     hard link, else rename   hard link, else rename       ``MoveFileEx``
                                                                          (write-through)
journal pragmas     none                     ``fullfsync``,               none
                                             ``checkpoint_fullfsync``
busy files          fail at once             fail at once                 retry briefly
stop requests       SIGINT, SIGTERM          SIGINT, SIGTERM              Ctrl-C, Ctrl-Break,
                                                                          console close
==================  =======================  ===========================  ====================

File names follow one set of rules on every system (:func:`portable_name`), because a name made
on Linux must still work when the folder is copied to an SD card for a Windows tablet.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal, TypeVar

T = TypeVar("T")

Liveness = Literal["kill-0", "OpenProcess"]
FileSync = Literal["fsync", "F_FULLFSYNC", "FlushFileBuffers"]
FolderSync = Literal["fsync", "F_FULLFSYNC", "none"]
NameClaim = Literal["hard link", "MoveFileEx write-through"]


@dataclass(frozen=True)
class Rules:
    """How outbox does each system-dependent thing on one platform (see the module's table)."""

    platform: str
    liveness: Liveness
    file_sync: FileSync
    folder_sync: FolderSync
    name_claim: NameClaim
    journal_pragmas: tuple[str, ...]
    retries_busy_files: bool
    stop_signals: tuple[str, ...]
    console_close_stops: bool


def rules_for(platform: str) -> Rules:
    """The rules for ``platform``, a value of ``sys.platform`` (``linux``, ``darwin``,
    ``win32``, ``freebsd14``, ``cygwin``...). Pure, so every platform's choice is tested here.

    Anything that is neither Windows nor macOS is treated as the POSIX system it claims to be
    (Cygwin and MSYS2 Pythons included: they emulate POSIX processes, signals and fsync).
    """
    windows = platform == "win32"
    mac = platform == "darwin"
    return Rules(
        platform=platform,
        liveness="OpenProcess" if windows else "kill-0",
        file_sync="FlushFileBuffers" if windows else "F_FULLFSYNC" if mac else "fsync",
        folder_sync="none" if windows else "F_FULLFSYNC" if mac else "fsync",
        name_claim="MoveFileEx write-through" if windows else "hard link",
        journal_pragmas=(("PRAGMA fullfsync=ON", "PRAGMA checkpoint_fullfsync=ON") if mac else ()),
        retries_busy_files=windows,
        stop_signals=("SIGINT", "SIGBREAK") if windows else ("SIGINT", "SIGTERM"),
        console_close_stops=windows,
    )


#: The rules of the system this process runs on.
RULES = rules_for(sys.platform)


class NotOnThisSystem(OSError):
    """A function for another operating system was called here (a bug in the caller)."""


# -- flags for os.open -------------------------------------------------------------------

#: Add to ``os.open`` flags whenever bytes are read or written: Windows' C runtime opens file
#: descriptors in text mode otherwise, turning ``\\n`` into ``\\r\\n`` on writing and stopping
#: at a Ctrl-Z byte on reading (a PDF or a job file would change). 0 elsewhere.
BINARY: int = getattr(os, "O_BINARY", 0)
#: Refuse to open a symbolic link (POSIX). Windows has no such flag; callers there rely on the
#: ``lstat`` they make before opening.
NO_FOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
#: Do not wait for a writer when opening a FIFO someone put in a folder (POSIX only: Windows has
#: no FIFOs in folders).
NO_BLOCK: int = getattr(os, "O_NONBLOCK", 0)
#: Keep the descriptor out of child processes (Python does so by default since 3.4; the flag
#: closes the window between ``open`` and that).
CLOSE_ON_EXEC: int = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0)


# -- is a process alive? -------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (used to take back the leases of a
    process that crashed, so it must never say "dead" of a live process)."""
    if pid <= 0:
        return False
    if RULES.liveness == "OpenProcess":
        return _alive_by_open_process(pid)
    return _alive_by_signal_zero(pid)


def _alive_by_signal_zero(pid: int) -> bool:
    """POSIX: signal 0 checks that the process exists without sending anything. A process of
    another user answers "permission denied", which still means it exists.

    Not on Windows: there ``os.kill(pid, 0)`` sends CTRL_C_EVENT to a console process group
    instead of asking anything.
    """
    if sys.platform == "win32":
        raise NotOnThisSystem("signal 0 is Ctrl-C on Windows; use OpenProcess")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_STILL_ACTIVE = 259
_ERROR_ACCESS_DENIED = 5
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000


def _alive_by_open_process(pid: int) -> bool:
    """Windows: open the process for a limited query and ask for its exit code, which is
    ``STILL_ACTIVE`` while it runs. A process we may not open (another user's, a protected one)
    exists. A process that is gone cannot be opened (``ERROR_INVALID_PARAMETER``).

    A process that exited with the code 259 itself is taken as alive: its leases then expire on
    their own instead of being taken back at once, which is safe.
    """
    if sys.platform == "win32":
        import ctypes
        from ctypes import wintypes

        if pid > 0xFFFFFFFF:
            return False
        kernel32 = _kernel32()
        handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return ctypes.get_last_error() == _ERROR_ACCESS_DENIED
        try:
            code = wintypes.DWORD()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True  # cannot tell: keep its leases until they expire
            return code.value == _STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    raise NotOnThisSystem("OpenProcess exists on Windows only")


if sys.platform == "win32":
    import ctypes as _ctypes

    @functools.cache
    def _kernel32() -> _ctypes.WinDLL:
        """kernel32.dll with the prototypes outbox uses (so 64-bit handles are not cut)."""
        from ctypes import wintypes

        kernel32 = _ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        kernel32.GetExitCodeProcess.restype = wintypes.BOOL
        kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, wintypes.LPDWORD)
        kernel32.CloseHandle.restype = wintypes.BOOL
        kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
        kernel32.MoveFileExW.restype = wintypes.BOOL
        kernel32.MoveFileExW.argtypes = (wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD)
        kernel32.SetConsoleCtrlHandler.restype = wintypes.BOOL
        kernel32.SetConsoleCtrlHandler.argtypes = (_ctypes.c_void_p, wintypes.BOOL)
        return kernel32


# -- durable contents and names ----------------------------------------------------------


def sync_file(fd: int) -> None:
    """Make the contents of the open file ``fd`` durable: on the disk, not in a cache.

    Linux: ``fsync``. Windows: ``os.fsync`` is ``FlushFileBuffers`` there. macOS: ``fsync``
    only hands the data to the drive, whose cache a power cut empties; ``F_FULLFSYNC`` asks the
    drive to write its cache out (file systems without it, such as SMB or exFAT, fall back to
    ``fsync``, the best they offer).
    """
    if RULES.file_sync == "F_FULLFSYNC":
        _full_fsync(fd)
    else:
        os.fsync(fd)


def _full_fsync(fd: int) -> None:
    if sys.platform == "darwin":
        import fcntl

        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
        except OSError:
            os.fsync(fd)
        return
    raise NotOnThisSystem("F_FULLFSYNC exists on macOS only")


def sync_folder(path: Path) -> None:
    """Make the names in the folder ``path`` durable (links, renames, new files and folders).

    Linux: ``fsync`` of the folder. macOS: ``F_FULLFSYNC`` of the folder (see
    :func:`sync_file`). Windows cannot open a folder as a file; names are made durable there by
    moving with write-through instead (:func:`move_if_free`, :func:`replace`), so this does
    nothing. A folder that cannot be opened or synced (some network file systems) is left as it
    is: there is nothing better to do.
    """
    if RULES.folder_sync == "none":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        if RULES.folder_sync == "F_FULLFSYNC":
            _full_fsync(fd)
        else:
            os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def journal_pragmas() -> tuple[str, ...]:
    """Pragmas every connection to a journal runs so that SQLite's syncs are durable here:
    on macOS, ``fullfsync`` (commits) and ``checkpoint_fullfsync`` (checkpoints), which SQLite
    leaves off by default for speed (see :func:`sync_file`)."""
    return RULES.journal_pragmas


# -- moves, links and removals -----------------------------------------------------------

#: Windows errors that mean another process has the file open right now (a producer app still
#: writing a job file, a viewer showing a PDF, an antivirus scan): worth a short wait.
#: ERROR_ACCESS_DENIED is among them because that is what replacing or deleting an open file
#: reports.
_BUSY_WINERRORS = frozenset({5, 32, 33})  # ACCESS_DENIED, SHARING_VIOLATION, LOCK_VIOLATION
#: Waits between attempts on a busy file: about 2 s in all, then the error is raised.
BUSY_WAITS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

#: ``link()`` errors that mean "no hard links on this file system", not "something is wrong".
NO_HARD_LINK_ERRNOS = frozenset(
    {errno.EPERM, errno.EACCES, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
)


def is_busy(exc: OSError) -> bool:
    """Whether ``exc`` is Windows saying another process has the file open."""
    return getattr(exc, "winerror", None) in _BUSY_WINERRORS


def retry_while_busy(
    operation: Callable[[], T],
    *,
    rules: Rules = RULES,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation``; on Windows, run it again after a short wait while the file is busy
    (:func:`is_busy`), for about two seconds (:data:`BUSY_WAITS`), then raise.

    POSIX systems have no such locks: an error there is raised at once.
    """
    waits = iter(BUSY_WAITS if rules.retries_busy_files else ())
    while True:
        try:
            return operation()
        except OSError as exc:
            wait = next(waits, None) if is_busy(exc) else None
            if wait is None:
                raise
            sleep(wait)


def hard_link(source: Path, target: Path) -> bool:
    """Give the file at ``source`` the extra name ``target``; False where names are claimed by
    moving instead (then use :func:`move_if_free`).

    POSIX: ``link()`` without following a symbolic link at ``source``; it never replaces
    ``target`` (:class:`FileExistsError`), and :class:`FileNotFoundError` says ``source`` is
    gone. False when the file system has no hard links (FAT on SD cards, some shares). Windows:
    always False, because ``CreateHardLink`` cannot be made write-through while a move can
    (:func:`move_if_free`), and a move is just as atomic and never overwrites there.
    """
    if RULES.name_claim != "hard link":
        return False
    try:
        os.link(source, target, follow_symlinks=False)
    except NotImplementedError:  # no link() without following symlinks on this system
        return False
    except OSError as exc:
        if exc.errno in NO_HARD_LINK_ERRNOS:
            return False
        raise
    return True


_MOVEFILE_REPLACE_EXISTING = 0x1
_MOVEFILE_WRITE_THROUGH = 0x8


def move_if_free(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists (then return False); raises
    :class:`FileNotFoundError` if ``source`` is gone.

    Windows: one ``MoveFileEx`` with write-through, which refuses an existing target by itself
    (atomic) and is durable when it returns; retried briefly while a file is busy. POSIX: a
    check, then ``rename``. These are two steps, so a writer racing for the same name could be
    overwritten; with hard links that cannot happen, which is why :func:`hard_link` comes first
    there. Follow with :func:`sync_folder` to make the rename durable.
    """
    if RULES.name_claim == "MoveFileEx write-through":
        try:
            retry_while_busy(lambda: _move_file_ex(source, target, _MOVEFILE_WRITE_THROUGH))
        except FileExistsError:
            return False
        return True
    if os.path.lexists(target):
        return False
    os.rename(source, target)
    return True


def replace(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target``, atomically: readers see the old file or the new one.

    Windows: ``MoveFileEx`` with write-through (durable when it returns), retried briefly while
    a reader has ``target`` open. POSIX: ``rename``; follow with :func:`sync_folder`.
    """
    if RULES.name_claim == "MoveFileEx write-through":
        retry_while_busy(
            lambda: _move_file_ex(
                source, target, _MOVEFILE_REPLACE_EXISTING | _MOVEFILE_WRITE_THROUGH
            )
        )
        return
    os.replace(source, target)


def _move_file_ex(source: Path, target: Path, flags: int) -> None:
    if sys.platform == "win32":
        import ctypes

        if not _kernel32().MoveFileExW(str(source), str(target), flags):
            code = ctypes.get_last_error()
            # OSError with a winerror becomes the right subclass (FileExistsError for
            # ERROR_ALREADY_EXISTS, FileNotFoundError, PermissionError...).
            raise OSError(None, ctypes.FormatError(code).strip(), str(source), code, str(target))
        return
    raise NotOnThisSystem("MoveFileEx exists on Windows only")


def remove(path: Path) -> None:
    """Delete the file at ``path`` if it is there; on Windows, retried briefly while another
    process has it open (deleting an open file is refused there)."""
    with contextlib.suppress(FileNotFoundError):
        retry_while_busy(lambda: os.unlink(path))


# -- stop requests -------------------------------------------------------------------------

_CTRL_CLOSE_EVENT = 2
_CTRL_LOGOFF_EVENT = 5
_CTRL_SHUTDOWN_EVENT = 6
#: Windows ends a process this long after the console closes; a clean stop must fit in it.
CONSOLE_CLOSE_GRACE = 4.5


@contextlib.contextmanager
def on_stop_request(stop: Callable[[], None]) -> Iterator[None]:
    """While inside, a request to stop the process calls ``stop`` (a clean stop) instead of
    killing it mid-request. Must be entered in the main thread.

    POSIX: SIGINT (Ctrl-C) and SIGTERM (``kill``, systemd, launchd). Windows has no SIGTERM
    from outside: Ctrl-C and Ctrl-Break arrive as SIGINT and SIGBREAK, and closing the console
    window (also logging off or shutting down, where Windows tells a console process at all:
    mostly it tells services only) reaches a console control handler, after which Windows ends
    the process within about five seconds. That handler calls ``stop`` and holds Windows off
    until this block is left or :data:`CONSOLE_CLOSE_GRACE` has passed. A Task Scheduler "End"
    kills the process outright, as SIGKILL does; the journal is made for that (leases are taken
    back on the next start).
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop()

    previous = {}
    for name in RULES.stop_signals:
        number = getattr(signal, name)
        previous[number] = signal.signal(number, on_signal)
    try:
        with _console_close_calls(stop) if RULES.console_close_stops else contextlib.nullcontext():
            yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _console_close_calls(stop: Callable[[], None]) -> Iterator[None]:
    """Windows: call ``stop`` when the console closes, the user logs off or the system shuts
    down. Ctrl-C and Ctrl-Break are passed on to Python's own handler (it raises SIGINT and
    SIGBREAK)."""
    if sys.platform == "win32":
        import ctypes
        from ctypes import wintypes

        left = threading.Event()

        def on_event(event: int) -> bool:
            if event not in (_CTRL_CLOSE_EVENT, _CTRL_LOGOFF_EVENT, _CTRL_SHUTDOWN_EVENT):
                return False
            stop()
            left.wait(CONSOLE_CLOSE_GRACE)
            return True

        handler = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)(on_event)
        kernel32 = _kernel32()
        if not kernel32.SetConsoleCtrlHandler(handler, True):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            yield
        finally:
            left.set()  # a waiting handler returns, and Windows ends the process
            kernel32.SetConsoleCtrlHandler(handler, False)
        return
    raise NotOnThisSystem("console control handlers exist on Windows only")


# -- names that are valid everywhere -------------------------------------------------------

#: Longest file name, in bytes of UTF-8: ext4, APFS and most others allow 255 bytes, NTFS and
#: FAT 255 UTF-16 units (never more units than UTF-8 bytes).
MAX_NAME_BYTES = 255
#: Characters Windows (NTFS, FAT, exFAT, SMB) refuses in names; ``/`` is refused everywhere.
FORBIDDEN_CHARACTERS = frozenset('<>:"/\\|?*')
#: Device names Windows reserves with any extension and in any case (``con.tar.gz`` too).
RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{device}{digit}" for device in ("COM", "LPT") for digit in "0123456789¹²³"}
)
#: Longest ending kept whole when a long name is shortened (``.pdf``, ``.result.json``).
_MAX_EXTENSION_BYTES = 16


def portable_name(name: str, *, fallback: str) -> str:
    """``name`` changed as little as possible into a file name valid on Windows, macOS and
    Linux alike: characters Windows forbids (``<>:"/\\|?*``), control characters and unpaired
    surrogates become ``_``; trailing dots and spaces (Windows drops them, so ``a.`` would be
    ``a``) go; a reserved device name gets ``_`` (``CON.pdf`` -> ``CON_.pdf``, ``nul.tar.gz``
    -> ``nul_.tar.gz``); a name longer than 255 bytes is shortened, keeping its extension.
    A name with nothing left becomes ``fallback`` (itself made portable).

    Applying it twice changes nothing more. Uniqueness is the caller's: see :func:`name_key`.
    """
    cleaned = "".join("_" if _forbidden(char) else char for char in name).rstrip(" .")
    if not cleaned:
        return portable_name(fallback, fallback="_") if fallback != name else "_"
    head = cleaned.split(".", 1)[0].rstrip(" ")
    if head.upper() in RESERVED_NAMES:
        cleaned = head + "_" + cleaned[len(head) :]
    return fit_name(cleaned)


def fit_name(name: str, ending: str = "", limit: int = MAX_NAME_BYTES) -> str:
    """``name + ending`` shortened to at most ``limit`` bytes of UTF-8, cutting ``name``
    between characters. Without an ``ending``, an extension of ``name`` (up to 16 bytes) is
    kept: ``"x" * 300 + ".pdf"`` keeps ``.pdf``. Never ends in a dot or a space."""
    if not ending and len(name.encode("utf-8", "surrogatepass")) > limit:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension.encode("utf-8", "surrogatepass")) <= _MAX_EXTENSION_BYTES:
            name, ending = stem, dot + extension
    room = limit - len(ending.encode("utf-8", "surrogatepass"))
    encoded = name.encode("utf-8", "surrogatepass")
    if len(encoded) > room:
        name = encoded[: max(room, 0)].decode("utf-8", "ignore")
    fitted = name + ending
    return fitted.rstrip(" .") if not ending else fitted


def name_key(name: str) -> str:
    """What a case-insensitive file system (NTFS, APFS and FAT by default) sees of ``name``:
    ``Report.pdf`` and ``report.pdf`` have the same key, and so do the composed and decomposed
    forms of ``é``. Two names with one key must never be given to two files, even on Linux,
    whose folders may be copied to such a system."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def _forbidden(char: str) -> bool:
    code = ord(char)
    return code < 32 or code == 127 or 0xD800 <= code <= 0xDFFF or char in FORBIDDEN_CHARACTERS
