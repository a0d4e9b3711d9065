"""The platform layer: every decision as a pure function of the platform name (so Windows and
macOS choices are checked here, on Linux), and every path that runs on Linux, on real files,
processes and signals.

Windows' and macOS' branches run here too, on real files, against a stand-in for the calls
that exist on those systems alone (:class:`FakeWindows` for kernel32, a recorder for macOS'
``fcntl(F_FULLFSYNC)``): every decision outbox takes on their answers is checked, with the
answers those systems give. The calls themselves (``ctypes`` into kernel32, ``fcntl``) cannot
run on Linux; ``mypy --platform win32`` and ``--platform darwin`` type-check them in CI
(``.ci/run``).
"""

from __future__ import annotations

import errno
import os
import plistlib
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import count_folder_listings

from outbox import platform
from outbox.files import FolderNames, folder_names
from outbox.platform import (
    BUSY_WAITS,
    CTRL_BREAK_EVENT,
    CTRL_C_EVENT,
    CTRL_CLOSE_EVENT,
    CTRL_LOGOFF_EVENT,
    CTRL_SHUTDOWN_EVENT,
    MAX_NAME_BYTES,
    MOVEFILE_REPLACE_EXISTING,
    MOVEFILE_WRITE_THROUGH,
    RULES,
    STILL_ACTIVE,
    NotOnThisSystem,
    System,
    fit_name,
    move_if_free,
    name_key,
    on_stop_request,
    portable_name,
    process_alive,
    remove,
    replace,
    retry_while_busy,
    rules_for,
    stop_on_console_close,
    sync_file,
    sync_folder,
    this_system,
)

# -- a stand-in for Windows -------------------------------------------------------------------

ERROR_ACCESS_DENIED = 5
ERROR_SHARING_VIOLATION = 32
ERROR_INVALID_PARAMETER = 87
ERROR_ALREADY_EXISTS = 183


def _windows_error(kind: type[OSError], number: int, winerror: int, message: str) -> OSError:
    """The exception Python raises on Windows for ``winerror`` (there it sets ``winerror``
    itself and picks the subclass; on Linux both are done by hand)."""
    exc = kind(number, message)
    exc.winerror = winerror  # type: ignore[attr-defined]
    return exc


class FakeWindows:
    """The kernel32 calls of :class:`outbox.platform.WindowsApi`, answering as Windows does,
    over this machine's real files: processes with exit codes, files another process holds
    open for a number of attempts (sharing violations), console handlers, and every call made.
    """

    def __init__(self) -> None:
        #: pid -> its exit code (STILL_ACTIVE while it runs), or the error OpenProcess gives
        self.processes: dict[int, int | OSError] = {}
        #: exit codes that cannot be read (GetExitCodeProcess fails)
        self.unreadable: set[int] = set()
        #: path -> how many more attempts find it open in another process
        self.busy: dict[str, int] = {}
        self.calls: list[tuple[object, ...]] = []
        self.open_handles: dict[int, int] = {}
        self.console_handlers: list[Callable[[int], bool]] = []

    def open_process(self, pid: int) -> int:
        self.calls.append(("OpenProcess", pid))
        known = self.processes.get(pid)
        if known is None:
            raise _windows_error(OSError, errno.EINVAL, ERROR_INVALID_PARAMETER, "no process")
        if isinstance(known, OSError):
            raise known
        handle = 1000 + len(self.calls)
        self.open_handles[handle] = pid
        return handle

    def exit_code(self, handle: int) -> int:
        pid = self.open_handles[handle]
        if pid in self.unreadable:
            raise _windows_error(PermissionError, errno.EACCES, ERROR_ACCESS_DENIED, "denied")
        code = self.processes[pid]
        assert isinstance(code, int)
        return code

    def close_handle(self, handle: int) -> None:
        del self.open_handles[handle]

    def _check_not_busy(self, *paths: str) -> None:
        for path in paths:
            if self.busy.get(path, 0) > 0:
                self.busy[path] -= 1
                raise _busy()

    def move_file(self, source: str, target: str, flags: int) -> None:
        self.calls.append(("MoveFileExW", source, target, flags))
        self._check_not_busy(source, target)
        if not os.path.lexists(source):
            raise _windows_error(FileNotFoundError, errno.ENOENT, 2, "file not found")
        if not flags & MOVEFILE_REPLACE_EXISTING and os.path.lexists(target):
            raise _windows_error(FileExistsError, errno.EEXIST, ERROR_ALREADY_EXISTS, "exists")
        os.replace(source, target)

    def delete_file(self, path: str) -> None:
        self.calls.append(("DeleteFileW", path))
        self._check_not_busy(path)
        os.unlink(path)

    def add_console_handler(self, handler: Callable[[int], bool]) -> Callable[[], None]:
        self.console_handlers.append(handler)
        return lambda: self.console_handlers.remove(handler)


# -- which way each platform goes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "liveness", "file_sync", "folder_sync", "name_claim", "busy_retries", "signals"),
    [
        ("linux", "kill-0", "fsync", "fsync", "hard link", False, ("SIGINT", "SIGTERM")),
        (
            "darwin",
            "kill-0",
            "F_FULLFSYNC",
            "F_FULLFSYNC",
            "hard link",
            False,
            ("SIGINT", "SIGTERM"),
        ),
        (
            "win32",
            "OpenProcess",
            "FlushFileBuffers",
            "none",
            "MoveFileEx write-through",
            True,
            ("SIGINT", "SIGBREAK"),
        ),
        ("freebsd14", "kill-0", "fsync", "fsync", "hard link", False, ("SIGINT", "SIGTERM")),
        ("cygwin", "kill-0", "fsync", "fsync", "hard link", False, ("SIGINT", "SIGTERM")),
    ],
)
def test_each_platform_gets_its_own_liveness_sync_moves_and_stop_signals(
    name: str,
    liveness: str,
    file_sync: str,
    folder_sync: str,
    name_claim: str,
    busy_retries: bool,
    signals: tuple[str, ...],
) -> None:
    rules = rules_for(name)
    assert rules.liveness == liveness
    assert rules.file_sync == file_sync
    assert rules.folder_sync == folder_sync
    assert rules.name_claim == name_claim
    assert rules.retries_busy_files is busy_retries
    assert rules.stop_signals == signals
    assert rules.console_close_stops is (name == "win32")
    expected_pragmas = ("PRAGMA fullfsync=ON", "PRAGMA checkpoint_fullfsync=ON")
    assert rules.journal_pragmas == (expected_pragmas if name == "darwin" else ())


def test_this_machine_uses_the_rules_of_its_platform() -> None:
    assert rules_for(sys.platform) == RULES
    assert sys.platform == "linux" and RULES.liveness == "kill-0"  # CI runs on Linux


def test_the_macos_journal_pragmas_are_ones_sqlite_knows(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "j.db")
    try:
        for pragma in rules_for("darwin").journal_pragmas:
            conn.execute(pragma)
        assert conn.execute("PRAGMA fullfsync").fetchone() == (1,)
        assert conn.execute("PRAGMA checkpoint_fullfsync").fetchone() == (1,)
    finally:
        conn.close()


def test_every_stop_signal_named_exists_on_its_platform() -> None:
    for name in rules_for("linux").stop_signals:
        assert isinstance(getattr(signal, name), signal.Signals)
    # Windows' names are Python's own there (signal.SIGBREAK is Windows-only).
    assert set(rules_for("win32").stop_signals) <= {"SIGINT", "SIGBREAK", "SIGTERM"}


# -- process liveness (POSIX path) -----------------------------------------------------------


def test_this_process_is_alive_and_a_finished_one_is_not() -> None:
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # exited and reaped: its id names no process now
    assert not process_alive(child.pid)
    assert not process_alive(0) and not process_alive(-1)


def test_a_running_child_is_alive_until_it_is_killed() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)


def test_a_process_of_another_user_is_alive_for_us() -> None:
    """Signal 0 to another user's process is refused (EPERM): it exists all the same. A forked
    child becomes the user 'nobody' and asks about process 1 (root's)."""
    if os.geteuid() != 0:
        pytest.fail("this test runs as root (as CI does) to become another user")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only os._exit
        try:
            os.setgid(65534)
            os.setuid(65534)
            refused = b"refused" if _signal_zero_refused(1) else b"allowed"
            os.write(write_end, refused + b" " + str(process_alive(1)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read_end, 100).decode()
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == "refused True"  # the EPERM path was taken, and it means "alive"


def _signal_zero_refused(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    return False


# -- durable contents and names (Linux path) -------------------------------------------------


def test_sync_file_and_sync_folder_fsync_the_file_and_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | platform.BINARY)
    try:
        os.write(fd, b"x")
        sync_file(fd)
    finally:
        os.close(fd)
    sync_folder(tmp_path)
    assert synced == ["file", "folder"]
    sync_folder(tmp_path / "missing")  # nothing to open: nothing to do, no error
    assert synced == ["file", "folder"]


def test_a_closed_descriptor_cannot_be_synced() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError):
        sync_file(fd)


def test_move_if_free_never_replaces_and_replace_does(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    assert not move_if_free(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "b" and (tmp_path / "a").exists()
    assert move_if_free(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "a" and not (tmp_path / "a").exists()
    with pytest.raises(FileNotFoundError):
        move_if_free(tmp_path / "gone", tmp_path / "d")
    replace(tmp_path / "c", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "a" and not (tmp_path / "c").exists()
    remove(tmp_path / "b")
    remove(tmp_path / "b")  # already gone: fine
    assert list(tmp_path.iterdir()) == []


def _busy() -> OSError:
    """The error Windows gives for a file another process has open (ERROR_SHARING_VIOLATION);
    built by hand, since Linux has no such error."""
    return _windows_error(PermissionError, errno.EACCES, 32, "The process cannot access the file")


def test_busy_files_are_retried_briefly_on_windows_only() -> None:
    failures = [_busy(), _busy()]
    waits: list[float] = []
    windows = System(rules_for("win32"), windows=FakeWindows(), sleep=waits.append)
    linux = System(rules_for("linux"), sleep=waits.append)

    def move() -> str:
        if failures:
            raise failures.pop(0)
        return "moved"

    assert retry_while_busy(move, windows) == "moved"
    assert waits == list(BUSY_WAITS[:2])

    waits.clear()

    def always_busy() -> None:
        raise _busy()

    with pytest.raises(PermissionError):
        retry_while_busy(always_busy, windows)
    assert waits == list(BUSY_WAITS) and 1.5 < sum(waits) < 3

    waits.clear()
    with pytest.raises(PermissionError):
        retry_while_busy(always_busy, linux)
    assert waits == []  # POSIX has no sharing violations: a refusal is real

    def missing() -> None:
        raise FileNotFoundError(2, "gone")

    with pytest.raises(FileNotFoundError):
        retry_while_busy(missing, windows)
    assert waits == []  # only "busy" is worth waiting for


# -- stop requests (POSIX path) --------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_calls_stop_and_the_old_handlers_come_back(signum: int) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    calls: list[str] = []
    with on_stop_request(lambda: calls.append("stop")):
        signal.raise_signal(signum)
        assert calls == ["stop"]
    assert {sig: signal.getsignal(sig) for sig in before} == before


# -- Windows' and macOS' branches, against stand-ins for their calls ------------------------


def _no_signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record any os.kill instead of sending it: on Windows, signal 0 is Ctrl-C."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    return sent


def test_windows_asks_open_process_whether_a_process_runs_and_sends_no_signal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _no_signals(monkeypatch)
    windows = FakeWindows()
    windows.processes = {
        100: STILL_ACTIVE,  # running
        200: 0,  # exited, its handle still held somewhere
        300: _windows_error(PermissionError, errno.EACCES, ERROR_ACCESS_DENIED, "denied"),
        400: STILL_ACTIVE,
    }
    windows.unreadable = {400}
    system = System(rules_for("win32"), windows=windows)
    assert process_alive(100, system)
    assert not process_alive(200, system)
    assert process_alive(300, system)  # another user's or a protected process: it exists
    assert process_alive(400, system)  # cannot tell: its leases expire on their own
    assert not process_alive(500, system)  # gone: ERROR_INVALID_PARAMETER
    assert not process_alive(2**32, system)  # not a Windows process id
    assert not process_alive(0, system)
    assert sent == []
    assert windows.open_handles == {}  # every handle closed
    assert [call[1] for call in windows.calls] == [100, 200, 300, 400, 500]


def test_posix_systems_ask_with_signal_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _no_signals(monkeypatch)
    for name in ("linux", "darwin"):
        assert process_alive(1234, System(rules_for(name)))
    assert sent == [(1234, 0), (1234, 0)]


def test_another_systems_calls_are_never_made_up_here() -> None:
    with pytest.raises(NotOnThisSystem):
        process_alive(1, System(rules_for("win32")))  # Windows without kernel32
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        with pytest.raises(NotOnThisSystem):
            sync_file(fd, System(rules_for("darwin")))  # macOS without fcntl
    finally:
        os.close(fd)
    assert this_system().rules == RULES
    assert this_system().windows is None and this_system().full_fsync is None  # Linux


@pytest.mark.parametrize(
    ("name", "file_syncs", "folder_syncs"),
    [
        ("linux", [("fsync", "file")], [("fsync", "folder")]),
        ("darwin", [("F_FULLFSYNC", "file")], [("F_FULLFSYNC", "folder")]),
        ("win32", [("fsync", "file")], []),  # os.fsync is FlushFileBuffers; no folder handles
    ],
)
def test_each_system_syncs_files_and_folders_its_own_way(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    file_syncs: list[tuple[str, str]],
    folder_syncs: list[tuple[str, str]],
) -> None:
    synced: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def kind(fd: int) -> str:
        return "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"

    def recording_fsync(fd: int) -> None:
        synced.append(("fsync", kind(fd)))
        real_fsync(fd)

    def full_fsync(fd: int) -> None:  # fcntl(fd, F_FULLFSYNC) on macOS
        synced.append(("F_FULLFSYNC", kind(fd)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    system = System(
        rules_for(name),
        windows=FakeWindows() if name == "win32" else None,
        full_fsync=full_fsync if name == "darwin" else None,
    )
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT | platform.BINARY)
    try:
        sync_file(fd, system)
    finally:
        os.close(fd)
    assert synced == file_syncs
    synced.clear()
    sync_folder(tmp_path, system)
    assert synced == folder_syncs


def test_macos_falls_back_to_fsync_where_the_file_system_has_no_full_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMB shares and exFAT SD cards refuse F_FULLFSYNC (ENOTSUP): fsync is the best there."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)

    def refused(fd: int) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    system = System(rules_for("darwin"), full_fsync=refused)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT | platform.BINARY)
    try:
        sync_file(fd, system)
        assert synced == [fd]
    finally:
        os.close(fd)


def test_macos_journal_syncs_flush_the_drive_cache(tmp_path: Path) -> None:
    for name, expected in (("darwin", (1, 1)), ("linux", (0, 0)), ("win32", (0, 0))):
        conn = sqlite3.connect(tmp_path / f"{name}.db")
        try:
            for pragma in platform.journal_pragmas(System(rules_for(name))):
                conn.execute(pragma)
            got = tuple(
                conn.execute(f"PRAGMA {p}").fetchone()[0]
                for p in ("fullfsync", "checkpoint_fullfsync")
            )
            assert got == expected, name
        finally:
            conn.close()


def test_windows_claims_names_by_write_through_moves_that_never_overwrite(
    tmp_path: Path,
) -> None:
    windows = FakeWindows()
    system = System(rules_for("win32"), windows=windows, sleep=lambda seconds: None)
    (tmp_path / "job.json").write_text("new")
    (tmp_path / "taken.json").write_text("someone else's")
    assert not hard_link_on(system, tmp_path / "job.json", tmp_path / "linked.json")
    assert not (tmp_path / "linked.json").exists()  # no CreateHardLink: it cannot write through
    assert not move_if_free(tmp_path / "job.json", tmp_path / "taken.json", system)
    assert (tmp_path / "taken.json").read_text() == "someone else's"
    assert move_if_free(tmp_path / "job.json", tmp_path / "accepted.json", system)
    assert (tmp_path / "accepted.json").read_text() == "new"
    with pytest.raises(FileNotFoundError):
        move_if_free(tmp_path / "job.json", tmp_path / "again.json", system)
    replace(tmp_path / "accepted.json", tmp_path / "taken.json", system)
    assert (tmp_path / "taken.json").read_text() == "new"
    flags = [call[3] for call in windows.calls if call[0] == "MoveFileExW"]
    write_through, replacing = MOVEFILE_WRITE_THROUGH, MOVEFILE_REPLACE_EXISTING
    assert flags == [write_through, write_through, write_through, replacing | write_through]


def hard_link_on(system: System, source: Path, target: Path) -> bool:
    return platform.hard_link(source, target, system)


def test_windows_waits_out_a_file_another_process_holds_open(tmp_path: Path) -> None:
    """A viewer showing the old PDF, a reader of a results file, a producer still closing its
    job file, an antivirus scan: each refuses the move for a moment, then lets go."""
    waits: list[float] = []
    windows = FakeWindows()
    system = System(rules_for("win32"), windows=windows, sleep=waits.append)
    results, new = tmp_path / "job.result.json", tmp_path / ".tmp"
    results.write_text("old")
    new.write_text("new")
    windows.busy[str(results)] = 3  # a reader has it open for three attempts
    replace(new, results, system)
    assert results.read_text() == "new" and not new.exists()
    assert waits == list(BUSY_WAITS[:3])

    waits.clear()
    job = tmp_path / "job.json"
    job.write_text("{}")
    windows.busy[str(job)] = 2  # the producer has not closed it yet
    assert move_if_free(job, tmp_path / "accepted.json", system)
    assert waits == list(BUSY_WAITS[:2])

    waits.clear()
    windows.busy[str(results)] = 1
    remove(results, system)
    assert not results.exists() and waits == [BUSY_WAITS[0]]


def test_windows_reports_a_file_held_open_for_long_and_loses_nothing(tmp_path: Path) -> None:
    waits: list[float] = []
    windows = FakeWindows()
    system = System(rules_for("win32"), windows=windows, sleep=waits.append)
    pdf, part = tmp_path / "report.pdf", tmp_path / ".part"
    pdf.write_text("shown in a viewer")
    part.write_text("new")
    windows.busy[str(pdf)] = 10**6
    with pytest.raises(PermissionError) as raised:
        replace(part, pdf, system)
    assert getattr(raised.value, "winerror", None) == ERROR_SHARING_VIOLATION
    assert waits == list(BUSY_WAITS)  # about two seconds, then the error
    assert pdf.read_text() == "shown in a viewer" and part.read_text() == "new"


def test_closing_the_console_stops_cleanly_and_holds_windows_off_until_done() -> None:
    windows = FakeWindows()
    stopped = threading.Event()
    answers: list[bool] = []
    with stop_on_console_close(stopped.set, windows, grace=600):
        [handler] = windows.console_handlers
        # Ctrl-C and Ctrl-Break go on to Python's own handler (SIGINT, SIGBREAK).
        assert handler(CTRL_C_EVENT) is False and handler(CTRL_BREAK_EVENT) is False
        assert not stopped.is_set()
        closing = threading.Thread(target=lambda: answers.append(handler(CTRL_CLOSE_EVENT)))
        closing.start()
        assert stopped.wait(600)
        assert closing.is_alive() and answers == []  # Windows waits while outbox stops
    closing.join()
    assert answers == [True]
    assert windows.console_handlers == []


@pytest.mark.parametrize("event", [CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT])
def test_a_console_event_lets_windows_end_the_process_after_the_grace(event: int) -> None:
    windows = FakeWindows()
    stops: list[str] = []
    with stop_on_console_close(lambda: stops.append("stop"), windows, grace=0.01):
        [handler] = windows.console_handlers
        assert handler(event) is True  # returned without the block being left
    assert stops == ["stop"]


def test_stop_requests_on_posix_leave_the_console_alone() -> None:
    calls: list[str] = []
    with on_stop_request(lambda: calls.append("stop"), System(rules_for("darwin"))):
        signal.raise_signal(signal.SIGTERM)
    assert calls == ["stop"]


# -- names that are valid everywhere ---------------------------------------------------------

RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{device}{digit}" for device in ("COM", "LPT") for digit in "0123456789¹²³"
}


def problem_somewhere(name: str) -> str | None:
    """Why ``name`` would fail on Windows, macOS or Linux; written from the documented limits,
    apart from the module under test."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "not text every system can store"
    if not name or name in (".", ".."):
        return "empty"
    if len(encoded) > 255:
        return "longer than 255 bytes"
    if len(name.encode("utf-16-le")) // 2 > 255:
        return "longer than 255 UTF-16 units (NTFS)"
    if any(char in '<>:"/\\|?*' or ord(char) < 32 for char in name):
        return "a character Windows forbids"
    if name[-1] in " .":
        return "ends in a dot or a space (Windows drops them)"
    if name.split(".")[0].rstrip(" ").upper() in RESERVED:
        return "a device name Windows reserves"
    return None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # reserved device names, with any extension and in any case
        ("CON.pdf", "CON_.pdf"),
        ("con.pdf", "con_.pdf"),
        ("nul.PDF", "nul_.PDF"),
        ("Con.Tar.Gz", "Con_.Tar.Gz"),
        ("NUL", "NUL_"),
        ("aux.result.json", "aux_.result.json"),
        ("PRN.json", "PRN_.json"),
        ("COM1.pdf", "COM1_.pdf"),
        ("lpt9.txt", "lpt9_.txt"),
        ("COM0.pdf", "COM0_.pdf"),
        ("com¹.pdf", "com¹_.pdf"),
        ("CONOUT$.log", "CONOUT$_.log"),
        ("CON .pdf", "CON_ .pdf"),
        ("COM10.pdf", "COM10.pdf"),  # not a device
        ("CONSOLE.pdf", "CONSOLE.pdf"),
        ("my CON.pdf", "my CON.pdf"),
        # characters Windows forbids, control characters, unpaired surrogates
        ("a:b.pdf", "a_b.pdf"),
        ('<>:"/\\|?*.pdf', "_________.pdf"),
        ("tab\there.pdf", "tab_here.pdf"),
        ("line\nbreak.pdf", "line_break.pdf"),
        ("nul\x00byte.pdf", "nul_byte.pdf"),
        ("del\x7f.pdf", "del_.pdf"),
        ("x\udce9.json", "x_.json"),
        # trailing dots and spaces
        ("trailing. . .", "trailing"),
        ("name.pdf ", "name.pdf"),
        ("...", "fallback"),
        ("", "fallback"),
        ("  ", "fallback"),
        # valid everywhere already: unchanged
        ("Prüfbericht Nord.pdf", "Prüfbericht Nord.pdf"),
        ("報告書 2026.pdf", "報告書 2026.pdf"),
        ("Q&A #3 [draft] (v2) 100%.pdf", "Q&A #3 [draft] (v2) 100%.pdf"),
        ("emoji 📄.pdf", "emoji 📄.pdf"),
        (" leading space.pdf", " leading space.pdf"),
        # 255 bytes at most, the extension kept, never half a character
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
        ("é" * 200 + ".pdf", "é" * 125 + ".pdf"),
        ("📄" * 70 + ".pdf", "📄" * 62 + ".pdf"),
        ("x" * 300, "x" * 255),
        ("x" * 254 + " y", "x" * 254),  # cut after the space, which then goes
        ("CON." + "x" * 300, "CON_." + "x" * 250),
    ],
)
def test_names_are_made_valid_on_every_system(name: str, expected: str) -> None:
    made = portable_name(name, fallback="fallback")
    assert made == expected
    assert problem_somewhere(made) is None, made
    assert portable_name(made, fallback="other") == made  # already portable: unchanged


def test_the_fallback_is_made_portable_too() -> None:
    assert portable_name("", fallback="CON") == "CON_"
    assert portable_name("...", fallback="...") == "_"


names = st.text(st.characters(codec="utf-8"), max_size=300) | st.text(max_size=80)


@given(names)
def test_any_name_becomes_valid_everywhere_and_stays_so(name: str) -> None:
    made = portable_name(name, fallback="entry-1")
    assert problem_somewhere(made) is None, (name, made)
    assert portable_name(made, fallback="entry-1") == made
    assert len(made.encode("utf-8")) <= MAX_NAME_BYTES


@given(names, st.integers(min_value=2, max_value=10**6))
def test_numbered_names_fit_and_end_as_asked(name: str, number: int) -> None:
    stem = portable_name(name, fallback="r")
    ending = f" ({number}).pdf"
    fitted = fit_name(stem, ending)
    assert fitted.endswith(ending) and len(fitted.encode("utf-8")) <= MAX_NAME_BYTES
    assert problem_somewhere(fitted) is None, fitted


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ("Report.pdf", "report.pdf", True),
        ("REPORT.PDF", "report.pdf", True),
        (unicodedata.normalize("NFC", "Café.pdf"), unicodedata.normalize("NFD", "café.pdf"), True),
        ("Straße.pdf", "STRASSE.pdf", True),  # folded alike: kept apart, to be safe
        ("ΣΊΣΥΦΟΣ.pdf", "σίσυφος.pdf", True),
        ("report.pdf", "report (2).pdf", False),
        ("a.pdf", "b.pdf", False),
    ],
)
def test_names_are_compared_as_a_case_insensitive_file_system_does(
    one: str, other: str, same: bool
) -> None:
    assert (name_key(one) == name_key(other)) is same


# -- the names a folder holds, by key (files.FolderNames) ------------------------------------


def test_a_name_held_in_another_case_is_seen(tmp_path: Path) -> None:
    (tmp_path / "Report.pdf").write_bytes(b"%PDF-")
    names = FolderNames(tmp_path)
    assert names.in_another_case("report.pdf")
    assert names.in_another_case("REPORT.PDF")
    assert not names.in_another_case("Report.pdf")  # the name itself: the caller's business
    assert not names.in_another_case("other.pdf")


def test_names_added_by_others_are_seen_once_the_folder_changed(tmp_path: Path) -> None:
    names = FolderNames(tmp_path)
    assert not names.in_another_case("job.json")
    (tmp_path / "Job.json").write_text("{}")
    os.utime(tmp_path, ns=(0, 1_000_000_000))  # as another tick of the folder's clock would
    assert names.in_another_case("job.json")


def test_a_big_folder_is_listed_once_while_this_process_adds_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(200):
        (tmp_path / f"old-{n}.pdf").write_bytes(b"")
    listings = count_folder_listings(monkeypatch)
    names = folder_names(tmp_path)
    for n in range(50):
        assert not names.in_another_case(f"new-{n}.pdf")
        with names.changed_by_us():
            (tmp_path / f"new-{n}.pdf").write_bytes(b"")
        names.add(f"new-{n}.pdf")
    assert names.in_another_case("NEW-7.PDF") and names.in_another_case("Old-3.pdf")
    assert listings == [str(tmp_path)]
    assert folder_names(tmp_path) is names  # one per folder, shared by the process


def test_a_change_by_another_process_meanwhile_makes_the_folder_be_listed_again(
    tmp_path: Path,
) -> None:
    names = FolderNames(tmp_path)
    os.utime(tmp_path, ns=(0, 10**9))
    assert not names.in_another_case("report.pdf")  # listed as of that time
    (tmp_path / "Report.pdf").write_bytes(b"")  # another process
    with names.changed_by_us():
        (tmp_path / "mine.pdf").write_bytes(b"")
    names.add("mine.pdf")
    assert names.in_another_case("report.pdf")  # not hidden behind our own change
    assert names.in_another_case("MINE.pdf")


# -- running as a service ----------------------------------------------------------------------


def test_the_launchd_example_starts_outbox_run_with_the_key_from_the_keychain(
    tmp_path: Path,
) -> None:
    """The agent's command, run as launchd would (its argument list), with stand-ins for
    macOS' ``security`` and for ``outbox``: the key comes from the keychain into the
    environment, never into a file or onto a command line."""
    plist = Path(__file__).parent.parent / "examples" / "macos" / "dev.outbox.run.plist"
    agent = plistlib.loads(plist.read_bytes())
    assert agent["Label"] == "dev.outbox.run" and agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}  # restarted after a crash only
    assert "ck_" not in plist.read_text(encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    security = bin_dir / "security"
    security.write_text(
        '#!/bin/sh\n[ "$*" = "find-generic-password -s outbox -a craftkit -w" ] && echo ck_from_keychain\n'
    )
    fake_outbox = bin_dir / "outbox"
    fake_outbox.write_text('#!/bin/sh\necho "key=$CRAFTKIT_API_KEY args=$*"\n')
    for script in (security, fake_outbox):
        script.chmod(0o755)
    arguments = agent["ProgramArguments"]
    arguments[3:] = [str(fake_outbox), "/Users/ada/outbox-drop"]
    result = subprocess.run(
        arguments, capture_output=True, text=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "key=ck_from_keychain args=run --watch /Users/ada/outbox-drop\n"
    assert "ck_from_keychain" not in " ".join(arguments)
