"""Every difference between operating systems that outbox cares about, and nothing else.

outbox runs on Linux servers, Windows tablets and Mac laptops, and a journal with its downloads
folder can move between them (an SD card, a synced folder, a restored backup). This is the only
module that knows which system it runs on: the rest of outbox calls the functions here and
never looks at ``sys.platform`` or ``os.name``, nor calls ``os.kill``, ``os.fsync``,
``os.replace``, renames, deletes, ``signal.signal``, ``fcntl``, ``msvcrt`` or the Windows API
itself
(``tests/test_platform_static.py`` parses every module to keep it so).

Each difference is decided by :func:`rules_for`, a pure function of the platform name, and
carried out with the calls that exist on that system alone (a :class:`System`: kernel32 on
Windows, ``fcntl(F_FULLFSYNC)`` on macOS). The functions below act for :func:`this_system`
unless given another, which is how Windows' and macOS' branches run in tests on Linux, with
stand-ins for those calls:

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
malloc settings     glibc: 2 arenas, fixed   the system's                 the system's
                    thresholds (``mallopt``),
                    no per-thread caches
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
from typing import Literal, Protocol, TypeVar

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


class WindowsApi(Protocol):
    """The Windows calls outbox makes, each raising :class:`OSError` with the ``winerror``
    Windows gave. On Windows they go to kernel32 through ``ctypes``; tests stand in for Windows
    with their own, so that every decision taken on Windows' answers runs on any system."""

    def open_process(self, pid: int) -> int:
        """``OpenProcess`` for a limited query: a handle to close with :meth:`close_handle`."""
        ...

    def exit_code(self, handle: int) -> int:
        """``GetExitCodeProcess``: ``STILL_ACTIVE`` (259) while the process runs."""
        ...

    def close_handle(self, handle: int) -> None:
        """``CloseHandle``."""
        ...

    def move_file(self, source: str, target: str, flags: int) -> None:
        """``MoveFileExW``; without ``MOVEFILE_REPLACE_EXISTING`` an existing ``target`` is a
        :class:`FileExistsError`."""
        ...

    def delete_file(self, path: str) -> None:
        """Delete a file (refused while another process has it open)."""
        ...

    def add_console_handler(self, handler: Callable[[int], bool]) -> Callable[[], None]:
        """``SetConsoleCtrlHandler``: ``handler`` gets each console event and returns whether
        it handled it; the result removes the handler again."""
        ...


@dataclass(frozen=True)
class System:
    """What outbox asks of one operating system: its :class:`Rules` and the calls that exist
    there alone. :func:`this_system` is the one this process runs on; a test builds another
    (``System(rules_for("win32"), windows=...)``) to run that system's branches here."""

    rules: Rules
    #: Windows' calls (on Windows only).
    windows: WindowsApi | None = None
    #: ``fcntl(fd, F_FULLFSYNC)`` (on macOS only).
    full_fsync: Callable[[int], None] | None = None
    #: How to wait before trying a busy file again.
    sleep: Callable[[float], None] = time.sleep

    def windows_api(self) -> WindowsApi:
        """The Windows calls; :class:`NotOnThisSystem` anywhere else."""
        if self.windows is None:
            raise NotOnThisSystem(f"no Windows calls on {self.rules.platform}")
        return self.windows


@functools.cache
def this_system() -> System:
    """The system this process runs on, with its own calls."""
    if sys.platform == "win32":
        return System(RULES, windows=_Kernel32())
    if sys.platform == "darwin":
        return System(RULES, full_fsync=_fcntl_full_fsync)
    return System(RULES)


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


def process_alive(pid: int, system: System | None = None) -> bool:
    """Whether a process with this id runs on this machine (used to take back the leases of a
    process that crashed, so it must never say "dead" of a live process)."""
    system = system or this_system()
    if pid <= 0:
        return False
    if system.rules.liveness == "OpenProcess":
        return _alive_by_open_process(pid, system.windows_api())
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


STILL_ACTIVE = 259
ERROR_ACCESS_DENIED = 5
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000


def _alive_by_open_process(pid: int, windows: WindowsApi) -> bool:
    """Windows: open the process for a limited query and ask for its exit code, which is
    ``STILL_ACTIVE`` while it runs. A process we may not open (another user's, a protected one)
    exists. A process that is gone cannot be opened (``ERROR_INVALID_PARAMETER``).

    A process that exited with the code 259 itself is taken as alive, and so is one whose exit
    code cannot be read: its leases then expire on their own instead of being taken back at
    once, which is safe.
    """
    if pid > 0xFFFFFFFF:  # not a Windows process id
        return False
    try:
        handle = windows.open_process(pid)
    except OSError as exc:
        return getattr(exc, "winerror", None) == ERROR_ACCESS_DENIED
    try:
        return windows.exit_code(handle) == STILL_ACTIVE
    except OSError:
        return True
    finally:
        windows.close_handle(handle)


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _HANDLER_ROUTINE = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)

    class _Kernel32:
        """:class:`WindowsApi` through kernel32.dll, with prototypes (so 64-bit handles are
        not cut)."""

        def __init__(self) -> None:
            kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
            kernel32.OpenProcess.restype = wintypes.HANDLE
            kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
            kernel32.GetExitCodeProcess.restype = wintypes.BOOL
            kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, wintypes.LPDWORD)
            kernel32.CloseHandle.restype = wintypes.BOOL
            kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
            kernel32.MoveFileExW.restype = wintypes.BOOL
            kernel32.MoveFileExW.argtypes = (wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD)
            kernel32.SetConsoleCtrlHandler.restype = wintypes.BOOL
            kernel32.SetConsoleCtrlHandler.argtypes = (_HANDLER_ROUTINE, wintypes.BOOL)
            self._kernel32 = kernel32

        def open_process(self, pid: int) -> int:
            handle = self._kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
            if not handle:
                raise ctypes.WinError(ctypes.get_last_error())
            return int(handle)

        def exit_code(self, handle: int) -> int:
            code = wintypes.DWORD()
            if not self._kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                raise ctypes.WinError(ctypes.get_last_error())
            return int(code.value)

        def close_handle(self, handle: int) -> None:
            self._kernel32.CloseHandle(handle)

        def move_file(self, source: str, target: str, flags: int) -> None:
            if not self._kernel32.MoveFileExW(source, target, flags):
                code = ctypes.get_last_error()
                # An OSError with a winerror becomes the right subclass (FileExistsError for
                # ERROR_ALREADY_EXISTS, FileNotFoundError, PermissionError...).
                raise OSError(None, ctypes.FormatError(code).strip(), source, code, target)

        def delete_file(self, path: str) -> None:
            os.unlink(path)  # DeleteFileW; its OSError carries the winerror

        def add_console_handler(self, handler: Callable[[int], bool]) -> Callable[[], None]:
            routine = _HANDLER_ROUTINE(lambda event: bool(handler(event)))
            if not self._kernel32.SetConsoleCtrlHandler(routine, True):
                raise ctypes.WinError(ctypes.get_last_error())

            def remove() -> None:
                self._kernel32.SetConsoleCtrlHandler(routine, False)  # keeps routine alive

            return remove


# -- durable contents and names ----------------------------------------------------------

if sys.platform == "darwin":
    import fcntl

    def _fcntl_full_fsync(fd: int) -> None:
        fcntl.fcntl(fd, fcntl.F_FULLFSYNC)


def sync_file(fd: int, system: System | None = None) -> None:
    """Make the contents of the open file ``fd`` durable: on the disk, not in a cache.

    Linux: ``fsync``. Windows: ``os.fsync`` is ``FlushFileBuffers`` there. macOS: ``fsync``
    only hands the data to the drive, whose cache a power cut empties; ``F_FULLFSYNC`` asks the
    drive to write its cache out (file systems without it, such as SMB or exFAT, fall back to
    ``fsync``, the best they offer).
    """
    system = system or this_system()
    if system.rules.file_sync == "F_FULLFSYNC":
        _full_fsync(fd, system)
    else:
        os.fsync(fd)


def _full_fsync(fd: int, system: System) -> None:
    if system.full_fsync is None:
        raise NotOnThisSystem(f"no F_FULLFSYNC on {system.rules.platform}")
    try:
        system.full_fsync(fd)
    except OSError:
        os.fsync(fd)


def sync_folder(path: Path, system: System | None = None) -> None:
    """Make the names in the folder ``path`` durable (links, renames, new files and folders).

    Linux: ``fsync`` of the folder. macOS: ``F_FULLFSYNC`` of the folder (see
    :func:`sync_file`). Windows cannot open a folder as a file; names are made durable there by
    moving with write-through instead (:func:`move_if_free`, :func:`replace`), so this does
    nothing. A folder that cannot be opened or synced (some network file systems) is left as it
    is: there is nothing better to do.
    """
    system = system or this_system()
    if system.rules.folder_sync == "none":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        if system.rules.folder_sync == "F_FULLFSYNC":
            _full_fsync(fd, system)
        else:
            os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def journal_pragmas(system: System | None = None) -> tuple[str, ...]:
    """Pragmas every connection to a journal runs so that SQLite's syncs are durable here:
    on macOS, ``fullfsync`` (commits) and ``checkpoint_fullfsync`` (checkpoints), which SQLite
    leaves off by default for speed (see :func:`sync_file`)."""
    return (system or this_system()).rules.journal_pragmas


#: glibc's ``mallopt`` parameters: the most arenas a process may have, the size from which a
#: block gets its own mapping, and the free space at the top of a heap that is given back.
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
#: The arenas a long-running outbox process keeps (see :func:`keep_malloc_lean`).
MALLOC_ARENAS = 2
#: From this size a block the heap has no room for is mapped on its own, and freeing it
#: unmaps it (see below).
MALLOC_MMAP_THRESHOLD = 32 * 1024
#: The free space a heap may keep at its top: glibc's own starting value, but fixed (see below).
MALLOC_TRIM_THRESHOLD = 128 * 1024


def keep_malloc_lean() -> list[str]:
    """Set glibc's malloc up for a process that runs for weeks; call it before starting
    threads. The settings it made, as their environment variable names.

    - Two arenas (:data:`MALLOC_ARENAS`), as ``MALLOC_ARENA_MAX=2`` would. glibc gives each
      new thread an arena of its own, up to eight per core, and an arena keeps the pages its
      freed blocks leave behind: ``outbox run`` (twenty threads, most of them allocating per
      request) grew about 1 KB of resident memory per entry processed that way, with Python's
      own memory flat. Its threads take turns on the GIL anyway, so two arenas cost no speed.
    - Fixed thresholds (:data:`MALLOC_MMAP_THRESHOLD`, :data:`MALLOC_TRIM_THRESHOLD`), as
      ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would. glibc raises both each
      time a mapped block is freed (the folder-name filter, a large listing, a PDF's buffer),
      after which blocks of up to that size come from the heap and up to twice it stays
      unreturned at the heap's top: a 10-minute soak climbed in steps of about 1 MB to a heap
      of 19-20 MB, and its resident memory swung by 1-2 MB between samples. The heap no longer
      grows for a block of 32 KiB or more (a socket's 64 KiB read buffer, a page of rows): it
      comes from the heap's free space if that has room, else it is mapped on its own. Grown
      for such blocks and freed, the heap kept holes only blocks as large could use: 3-4 MB
      free at 128 KiB, 0.3-0.6 MB at 32 KiB, and the soak's resident memory 1.5-2 MB lower.

    A setting given in the environment (those variables, or ``GLIBC_TUNABLES``) wins; elsewhere
    (musl, macOS, Windows) nothing is done.
    """
    if not sys.platform.startswith("linux"):
        return []
    import ctypes  # only here: most commands never need it

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return []
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    made = []
    for name, tunable, param, value in (
        ("MALLOC_ARENA_MAX", "arena_max", _M_ARENA_MAX, MALLOC_ARENAS),
        ("MALLOC_MMAP_THRESHOLD_", "mmap_threshold", _M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD),
        ("MALLOC_TRIM_THRESHOLD_", "trim_threshold", _M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD),
    ):
        if name in os.environ or f"glibc.malloc.{tunable}=" in tunables:
            continue
        if mallopt(param, value):
            made.append(name)
    return made


#: The ``GLIBC_TUNABLES`` setting that turns glibc's per-thread caches of freed blocks off (see
#: :func:`restart_without_thread_caches`).
NO_THREAD_CACHES = "glibc.malloc.tcache_count=0"


def restart_without_thread_caches() -> None:
    """Replace this process with itself, with glibc's per-thread caches of freed blocks turned
    off, unless they already are; returns only if nothing needed doing. Call it first thing in
    a process that runs for weeks, before anything is opened: ``execv`` keeps the process id,
    the arguments, the environment and the standard streams, nothing else.

    glibc keeps up to seven freed blocks of each size up to 1 KiB in a cache per thread, for
    that thread's next allocations: up to about 230 KB per thread, counted as in use and never
    given back while the thread lives, filled as the thread meets sizes it had not freed yet.
    ``outbox run``'s twenty threads (all of them asking SQLite for memory at one time or
    another) filled theirs all through a 10-minute soak: its resident memory rose 0.5 MB while
    Python's and SQLite's memory did not. Without them it was 0.8 MB lower and flat. The caches
    can only be set as a process starts (``GLIBC_TUNABLES``), hence the restart; a
    ``glibc.malloc.tcache_count`` already in ``GLIBC_TUNABLES`` wins. Elsewhere than glibc
    (musl, macOS, Windows) nothing is done.
    """
    if not _on_glibc() or not sys.executable:
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache_count=" in tunables:
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{NO_THREAD_CACHES}" if tunables else NO_THREAD_CACHES
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def _on_glibc() -> bool:
    if sys.platform == "win32":  # no confstr there
        return False
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # not glibc
        return False


# -- moves, links and removals -----------------------------------------------------------

#: Windows errors that mean another process has the file open right now (a producer app still
#: writing a job file, a viewer showing a PDF, an antivirus scan): worth a short wait.
#: ERROR_ACCESS_DENIED is among them because that is what replacing or deleting an open file
#: reports.
BUSY_WINERRORS = frozenset({5, 32, 33})  # ACCESS_DENIED, SHARING_VIOLATION, LOCK_VIOLATION
#: Waits between attempts on a busy file: about 2 s in all, then the error is raised.
BUSY_WAITS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

#: ``link()`` errors that mean "no hard links on this file system", not "something is wrong".
NO_HARD_LINK_ERRNOS = frozenset(
    {errno.EPERM, errno.EACCES, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
)


def is_busy(exc: OSError) -> bool:
    """Whether ``exc`` is Windows saying another process has the file open."""
    return getattr(exc, "winerror", None) in BUSY_WINERRORS


def retry_while_busy(operation: Callable[[], T], system: System | None = None) -> T:
    """Run ``operation``; on Windows, run it again after a short wait while the file is busy
    (:func:`is_busy`), for about two seconds (:data:`BUSY_WAITS`), then raise.

    POSIX systems have no such locks: an error there is raised at once.
    """
    system = system or this_system()
    waits = iter(BUSY_WAITS if system.rules.retries_busy_files else ())
    while True:
        try:
            return operation()
        except OSError as exc:
            wait = next(waits, None) if is_busy(exc) else None
            if wait is None:
                raise
            system.sleep(wait)


def hard_link(source: Path, target: Path, system: System | None = None) -> bool:
    """Give the file at ``source`` the extra name ``target``; False where names are claimed by
    moving instead (then use :func:`move_if_free`).

    POSIX: ``link()`` without following a symbolic link at ``source``; it never replaces
    ``target`` (:class:`FileExistsError`), and :class:`FileNotFoundError` says ``source`` is
    gone. False when the file system has no hard links (FAT on SD cards, some shares). Windows:
    always False, because ``CreateHardLink`` cannot be made write-through while a move can
    (:func:`move_if_free`), and a move is just as atomic and never overwrites there.
    """
    if (system or this_system()).rules.name_claim != "hard link":
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


MOVEFILE_REPLACE_EXISTING = 0x1
MOVEFILE_WRITE_THROUGH = 0x8


def move_if_free(source: Path, target: Path, system: System | None = None) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists (then return False); raises
    :class:`FileNotFoundError` if ``source`` is gone.

    Windows: one ``MoveFileEx`` with write-through, which refuses an existing target by itself
    (atomic) and is durable when it returns; retried briefly while a file is busy. POSIX: a
    check, then ``rename``. These are two steps, so a writer racing for the same name could be
    overwritten; with hard links that cannot happen, which is why :func:`hard_link` comes first
    there. Follow with :func:`sync_folder` to make the rename durable.
    """
    system = system or this_system()
    if system.rules.name_claim == "MoveFileEx write-through":
        windows = system.windows_api()
        try:
            retry_while_busy(
                lambda: windows.move_file(str(source), str(target), MOVEFILE_WRITE_THROUGH),
                system,
            )
        except FileExistsError:
            return False
        return True
    if os.path.lexists(target):
        return False
    os.rename(source, target)
    return True


def replace(source: Path, target: Path, system: System | None = None) -> None:
    """Rename ``source`` over ``target``, atomically: readers see the old file or the new one.

    Windows: ``MoveFileEx`` with write-through (durable when it returns), retried briefly while
    a reader has ``target`` open. POSIX: ``rename``; follow with :func:`sync_folder`.
    """
    system = system or this_system()
    if system.rules.name_claim == "MoveFileEx write-through":
        windows = system.windows_api()
        flags = MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH
        retry_while_busy(lambda: windows.move_file(str(source), str(target), flags), system)
        return
    os.replace(source, target)


def remove(path: Path, system: System | None = None) -> None:
    """Delete the file at ``path`` if it is there; on Windows, retried briefly while another
    process has it open (deleting an open file is refused there)."""
    system = system or this_system()
    delete = system.windows_api().delete_file if system.windows else os.unlink
    with contextlib.suppress(FileNotFoundError):
        retry_while_busy(lambda: delete(str(path)), system)


# -- stop requests -------------------------------------------------------------------------

CTRL_C_EVENT = 0
CTRL_BREAK_EVENT = 1
CTRL_CLOSE_EVENT = 2
CTRL_LOGOFF_EVENT = 5
CTRL_SHUTDOWN_EVENT = 6
#: Windows ends a process this long after the console closes; a clean stop must fit in it.
CONSOLE_CLOSE_GRACE = 4.5


@contextlib.contextmanager
def on_stop_request(stop: Callable[[], None], system: System | None = None) -> Iterator[None]:
    """While inside, a request to stop the process calls ``stop`` (a clean stop) instead of
    killing it mid-request. Must be entered in the main thread.

    POSIX: SIGINT (Ctrl-C) and SIGTERM (``kill``, systemd, launchd). Windows has no SIGTERM
    from outside: Ctrl-C and Ctrl-Break arrive as SIGINT and SIGBREAK, and closing the console
    window (also logging off or shutting down, where Windows tells a console process at all:
    mostly it tells services only) reaches a console control handler
    (:func:`stop_on_console_close`). A Task Scheduler "End" kills the process outright, as
    SIGKILL does; the journal is made for that (leases are taken back on the next start).
    """
    system = system or this_system()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop()

    previous = {}
    for name in system.rules.stop_signals:
        number = getattr(signal, name)
        previous[number] = signal.signal(number, on_signal)
    try:
        if system.rules.console_close_stops:
            with stop_on_console_close(stop, system.windows_api()):
                yield
        else:
            yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def stop_on_console_close(
    stop: Callable[[], None], windows: WindowsApi, grace: float = CONSOLE_CLOSE_GRACE
) -> Iterator[None]:
    """Windows: while inside, closing the console, logging off or shutting down calls ``stop``,
    and Windows is held off (it ends the process about five seconds after such an event) until
    this block is left or ``grace`` seconds have passed. Ctrl-C and Ctrl-Break are passed on to
    Python's own handler, which raises SIGINT and SIGBREAK."""
    left = threading.Event()

    def on_event(event: int) -> bool:
        if event not in (CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT):
            return False
        stop()
        left.wait(grace)
        return True

    remove_handler = windows.add_console_handler(on_event)
    try:
        yield
    finally:
        left.set()  # a waiting handler returns, and Windows ends the process
        remove_handler()


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


def name_limit(folder: Path) -> int:
    """The longest file name, in bytes of UTF-8, that the file system holding ``folder`` (or,
    while it does not exist yet, its nearest existing parent) takes: :data:`MAX_NAME_BYTES` or
    fewer (eCryptfs takes 143). A system that cannot tell (Windows has no ``pathconf``; NTFS
    takes 255 UTF-16 units, never fewer than 255 bytes) gets :data:`MAX_NAME_BYTES`."""
    ask = getattr(os, "pathconf", None)
    if ask is None:
        return MAX_NAME_BYTES
    for place in (folder, *folder.parents):
        try:
            answer = int(ask(place, "PC_NAME_MAX"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            break
        return min(MAX_NAME_BYTES, answer) if answer > 0 else MAX_NAME_BYTES
    return MAX_NAME_BYTES


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
