"""Safe file operations shared by the downloads and the drop folder.

Nothing here ever overwrites a file that someone else put in place: a new name is claimed with a
hard link (atomic: it fails if the name is taken), and only where the file system has no hard
links (FAT on SD cards, some network shares) with a rename after checking the name is free.
Writes that replace a file of ours go through a temporary file and an atomic rename, so readers
see the old content or the whole new one.

A power cut keeps only what was fsynced: a file's contents once the file was, a name once its
folder was. So the helpers keep one order: contents are fsynced before a name points at them, a
new name is fsynced before the old one is removed, and a new folder is fsynced into its parent
before anything is put in it (README: "Why a power cut loses nothing").
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import stat
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

from . import platform

#: Device and inode: which file a name points to.
FileIdentity = tuple[int, int]


def identity(path: Path) -> FileIdentity | None:
    """The device and inode of ``path`` itself (a link is not followed); None if nothing is there."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class LinkedFolder(OSError):
    """A folder outbox writes into is a symbolic link (or not a folder at all)."""


def own_subfolder(parent: Path, name: str) -> Path:
    """``parent/name`` as a real folder, made if missing; never a symbolic link. Its name is
    durable before this returns (see :func:`ensure_folder`).

    Raises :class:`LinkedFolder` when ``parent/name`` is a symbolic link or not a folder (see
    :func:`check_subfolder`).
    """
    path = parent / name
    try:
        os.mkdir(path)
    except FileExistsError:
        check_subfolder(parent, name)
        _sync_name_once(path)
    else:
        check_subfolder(parent, name)
        _sync_name(path)
    return path


def check_subfolder(parent: Path, name: str) -> None:
    """Raise :class:`LinkedFolder` if ``parent/name`` exists and is a symbolic link or not a
    folder. Files written through a link could land wherever its owner pointed it (another
    user's files, ``/etc``), so outbox writes nothing there and says why."""
    path = parent / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise LinkedFolder(
            f"{path} is a symbolic link (to {os.readlink(path)}); outbox does not write through "
            "links: replace it with a real folder"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise LinkedFolder(f"{path} is not a folder; move it aside so outbox can make the folder")


def move_without_overwriting(
    source: Path,
    expected: FileIdentity,
    target_dir: Path,
    names: Callable[[int], str],
    before_release: Callable[[Path], None] | None = None,
) -> Path | None:
    """Move the file at ``source`` into ``target_dir`` under the first free name of ``names(1)``,
    ``names(2)``...; never overwrite anything, and move only the file that was read.
    ``target_dir`` is made if missing and must not be a symbolic link (:func:`own_subfolder`).

    ``expected`` is the identity of the file that was read. Returns None if it vanished or was
    replaced since (another process moved it, or a writer renamed a new file over it). A
    destination that already is this file (linked before a crash, or by another process) is
    taken as it is. ``before_release`` runs once the destination holds the file and before the
    original name is freed, so a crash in between leaves the file in place to be handled again.
    The new name is made durable before the original goes, so a power cut cannot lose both.
    """
    target = claim(source, expected, target_dir, names)
    if target is None:
        return None
    if before_release is not None:
        before_release(target)
    fsync_dir(target_dir)
    release(source, expected)
    return target


def claim(
    source: Path, expected: FileIdentity, target_dir: Path, names: Callable[[int], str]
) -> Path | None:
    """The first step of :func:`move_without_overwriting`: give the file a name in
    ``target_dir`` and keep the original, so that several files can be claimed, their folder
    fsynced once, and then released.

    Where the file system has no hard links, the file is renamed instead (the original is then
    gone already, and :func:`release` has nothing to do). ``target_dir`` is made if missing and
    must not be a symbolic link (:func:`own_subfolder`).
    """
    own_subfolder(target_dir.parent, target_dir.name)
    taken = folder_names(target_dir)
    for attempt in itertools.count(1):
        target = target_dir / names(attempt)
        if taken.in_another_case(target.name):
            continue
        try:
            with taken.changed_by_us():
                linked = hard_link(source, target)
        except FileExistsError:
            if identity(target) == expected:
                return target  # linked before a crash, or by another process
            continue
        except FileNotFoundError:
            return None
        if not linked:
            return _move_by_rename(source, expected, target_dir, names)
        if identity(target) != expected:
            _unlink(target)  # a new file took the name after ours was read
            return None
        taken.add(target.name)
        return target
    raise AssertionError("unreachable")  # pragma: no cover


def release(source: Path, expected: FileIdentity) -> None:
    """Remove the original name of a claimed file, unless another file has taken it since.

    Call it only once the claimed name is durable (:func:`fsync_dir` of its folder): a power cut
    may keep the removal and lose a new name that was not synced.
    """
    if identity(source) == expected:
        _unlink(source)


def _move_by_rename(
    source: Path, expected: FileIdentity, target_dir: Path, names: Callable[[int], str]
) -> Path | None:
    """:func:`claim` where there are no hard links."""
    taken = folder_names(target_dir)
    for attempt in itertools.count(1):
        target = target_dir / names(attempt)
        if identity(source) != expected:
            return None
        if taken.in_another_case(target.name):
            continue
        try:
            with taken.changed_by_us():
                renamed = rename_if_free(source, target)
            if not renamed:
                continue
        except FileNotFoundError:
            return None
        taken.add(target.name)
        return target
    raise AssertionError("unreachable")  # pragma: no cover


def hard_link(source: Path, target: Path) -> bool:
    """Give the file at ``source`` the extra name ``target``; False if names are claimed by a
    rename here (no hard links on this file system, or Windows: see
    :func:`outbox.platform.hard_link`).

    Never follows a symbolic link at ``source`` and never replaces ``target``: raises
    :class:`FileExistsError` if the name is taken and :class:`FileNotFoundError` if ``source`` is
    gone. Any other error is raised too; False means the caller should fall back to
    :func:`rename_if_free`.
    """
    return platform.hard_link(source, target)


def rename_if_free(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists (then return False).

    The fallback for file systems without hard links, and the way names are claimed on Windows
    (see :func:`outbox.platform.move_if_free`). Raises :class:`FileNotFoundError` if ``source``
    is gone.
    """
    return platform.move_if_free(source, target)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) so readers see the old file or the whole new one.

    The temporary file is hidden (``.XXXX.tmp``) in the same folder and fsynced before the
    rename; call :func:`fsync_dir` afterwards to make the rename itself durable.
    """
    temporary = path.with_name(f".{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | platform.BINARY, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8", "surrogateescape"))
            handle.flush()
            platform.sync_file(handle.fileno())
        platform.replace(temporary, path)
    except BaseException:
        _unlink(temporary)
        raise


def ensure_folder(path: Path, mode: int = 0o777) -> None:
    """Create the folder ``path`` (and missing parents) so that a power cut cannot take it away.

    A new folder's name lives in its parent, which therefore is fsynced after each folder is
    made; files made durable inside a folder whose own name was not would vanish with it. The
    first time a process uses a folder, its parent is fsynced even if the folder was there
    already: another process may have made it and crashed (or not got there yet) before it
    synced. Raises :class:`FileExistsError` if ``path`` exists and is not a folder.
    """
    missing = []
    folder = path
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        folder.mkdir(mode=mode, exist_ok=True)
        _sync_name(folder)
    if not missing:
        if not path.is_dir():
            raise FileExistsError(errno.EEXIST, "a file is in the way of the folder", str(path))
        _sync_name_once(path)


#: Folders whose names this process has fsynced into their parents.
_durable_folders: set[str] = set()


def _sync_name(folder: Path) -> None:
    """Make the name of ``folder`` (just made) durable in its parent."""
    fsync_dir(folder.parent)
    _durable_folders.add(os.path.abspath(folder))


def _sync_name_once(folder: Path) -> None:
    """Make the name of ``folder`` (found there) durable, the first time this process uses it."""
    if os.path.abspath(folder) not in _durable_folders:
        _sync_name(folder)


#: How the names of outbox's own work files in a user's folder begin (hidden on Unix).
WORK_PREFIX = ".outbox-"


class FolderNames:
    """Whether a folder already holds a name in another case (``Report.pdf`` when
    ``report.pdf`` is wanted), by :func:`~outbox.platform.name_key`: a case-insensitive file
    system (NTFS, APFS) finds that itself, a case-sensitive one (Linux) would make a second file
    that clashes once the folder is copied.

    Its memory is fixed, however many files the folder holds: a counting filter of
    :data:`NAME_CELLS` two-bit counters (1 MiB, made at the first listing and rebuilt in place
    by later ones). Every name adds one to :data:`NAME_HASHES` counters picked by its key (a
    counter that reached 3 stays there), so the smallest of a key's counters is never below
    the number of names with that key, or 3. A question is answered from it alone in the
    common cases: no name has the key (a counter is 0), or the only one is the name itself (a
    counter is 1 and ``lstat`` finds that very spelling, in a folder seen to tell cases apart).
    Otherwise another spelling is looked for by ``lstat`` among the usual ones (all lower or
    upper case, capitalised), and only if none is there (another spelling, or other names'
    counters colliding: about one question in a million with 100,000 names, one in 10,000 with
    200,000, one in 50 with 500,000) is the folder listed again, the filter rebuilt and the
    answer for that key kept among the last :data:`KNOWN_KEYS` answered. So the answer is
    always the listing's; only its cost depends on the folder. A listing reads the folder one
    name at a time: its memory does not grow with the folder either.
    outbox's own work files (``.outbox-…``: a download's ``.part`` file) are kept by name
    instead, as there are only as many as downloads under way and crashed attempts' leftovers.

    The folder is listed again too when its modification time changed since this process last
    saw it, so claiming one name after another in a big folder does not list it each time:
    this process makes its own changes inside :meth:`changed_by_us` and then tells
    :meth:`add` or :meth:`remove` what they were. A name another process adds within the same
    tick of the folder's clock as this process looks at it or changes it can be missed (the
    clash then exists on Linux only, as it would without this check); within one process
    nothing is missed.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.RLock()
        self._seen: int | None = None
        self._counts: bytearray | None = None  # None: not listed yet
        self._work: set[str] = set()
        self._known: OrderedDict[str, set[str]] = OrderedDict()
        self._tells_cases_apart: bool | None = None
        #: How many times the folder was listed (for tests and benchmarks).
        self.listings = 0

    def work_files(self, prefix: str) -> list[str]:
        """The names of outbox's own work files here (``.outbox-…``, e.g. a download's
        ``.part`` file) that begin with ``prefix``, as spelled. Kept beside the filter, so
        looking for a crashed attempt's leftovers costs the same in a folder of 50,000 PDFs
        as in an empty one."""
        with self._lock:
            self._refresh()
            return [name for name in self._work if name.startswith(prefix)]

    def in_another_case(self, name: str) -> bool:
        """Whether the folder holds ``name`` under another spelling of the same key, and not
        ``name`` itself (a name that exists is for the caller's own checks)."""
        key = platform.name_key(name)
        with self._lock:
            counts = self._refresh()
            if key.startswith(WORK_PREFIX):
                return any(platform.name_key(work) == key for work in self._work - {name})
            if key in self._known:
                self._known.move_to_end(key)
                return bool(self._known[key] - {name})
            held = _held(counts, key)
            if held == 0 or (held == 1 and self._is_only_spelling(name)):
                return False
            if self._holds_a_usual_spelling(name, key):
                return True
            spellings = self._list(wanted=key)
            self._known[key] = spellings
            if len(self._known) > KNOWN_KEYS:
                self._known.popitem(last=False)
            return bool(spellings - {name})

    @contextlib.contextmanager
    def changed_by_us(self) -> Iterator[None]:
        """Around one change this process makes to the folder (then :meth:`add` or
        :meth:`remove` it). If the folder was as this process last saw it just before, the
        names known stay good after the change; if another process changed it since, the
        folder is listed again at the next question.

        This process's changes to one folder are made one at a time, and no question is
        answered during one: otherwise two threads' changes (several downloads at once) would
        each find the folder changed by the other, and every question would list the folder
        again (a save into a folder of 20,000 PDFs then cost a listing of it).
        """
        with self._lock:
            before = _modified(self.folder)
            try:
                yield
            finally:
                after = _modified(self.folder)
                if self._counts is not None and before is not None and before == self._seen:
                    self._seen = after

    def add(self, name: str) -> None:
        """Note that this process just gave a file the name ``name`` in the folder."""
        with self._lock:
            if self._counts is None:
                return
            if name.startswith(WORK_PREFIX):
                self._work.add(name)
                return
            key = platform.name_key(name)
            _count(self._counts, key, +1)
            if key in self._known:
                self._known[key].add(name)

    def remove(self, name: str) -> None:
        """Note that this process just removed the name ``name`` from the folder."""
        with self._lock:
            if self._counts is None:
                return
            if name.startswith(WORK_PREFIX):
                self._work.discard(name)
                return
            key = platform.name_key(name)
            _count(self._counts, key, -1)
            if key in self._known:
                self._known[key].discard(name)

    def _is_only_spelling(self, name: str) -> bool:
        """Whether ``name`` itself is in the folder, as spelled (then it is the one name with
        its key when that key's count is 1)."""
        return identity(self.folder / name) is not None and self._tells_cases_apart_by(name)

    def _holds_a_usual_spelling(self, name: str, key: str) -> bool:
        """Whether the folder holds another usual spelling of ``key`` than ``name`` (all lower
        or upper case, capitalised, composed or not), found by ``lstat``: ``Report.pdf`` for
        ``report.pdf`` is told without a listing."""
        usual = {key, name.lower(), name.upper(), name.capitalize(), name.title()}
        usual |= {unicodedata.normalize("NFC", spelling) for spelling in usual}
        return any(
            platform.name_key(spelling) == key
            and identity(self.folder / spelling) is not None
            and self._tells_cases_apart_by(spelling)
            for spelling in usual - {name}
        )

    def _tells_cases_apart_by(self, existing: str) -> bool:
        """Whether ``lstat`` here finds a spelling as spelled and no other (Linux) rather than
        any spelling of it (NTFS, APFS, FAT): asked of the name ``existing``, found here, in
        its other case (a different file or none there: it tells them apart). Only such a
        folder answers by ``lstat``; elsewhere the listing decides."""
        if self._tells_cases_apart is None:
            other = existing.swapcase()
            if other == existing:
                return False
            self._tells_cases_apart = identity(self.folder / other) != identity(
                self.folder / existing
            )
        return self._tells_cases_apart

    def _refresh(self) -> bytearray:
        modified = _modified(self.folder)
        if self._counts is None or modified is None or modified != self._seen:
            self._list(wanted=None)
        assert self._counts is not None
        return self._counts

    def _list(self, wanted: str | None) -> set[str]:
        """List the folder: rebuild the filter (in place), the work files and the spellings of
        the keys known; return those of ``wanted``.

        The folder is read one name at a time (``scandir``), not as a list of all its names:
        a listing of 100,000 names would otherwise allocate megabytes at once, and a process
        that lives for weeks keeps the pages such short-lived peaks leave scattered.
        """
        self.listings += 1
        if self._counts is None or len(self._counts) != _filter_bytes():
            self._counts = bytearray(_filter_bytes())
        else:
            _clear(self._counts)
        counts = self._counts
        self._work.clear()
        found: dict[str, set[str]] = {key: set() for key in self._known}
        if wanted is not None:
            found[wanted] = set()
        modified = _modified(self.folder)
        self._seen = None  # until the listing is whole: a failure leaves the filter partial
        with (
            contextlib.suppress(FileNotFoundError, NotADirectoryError),
            os.scandir(self.folder) as entries,
        ):
            for entry in entries:
                name = entry.name
                if name.startswith(WORK_PREFIX):
                    self._work.add(name)
                    continue
                key = platform.name_key(name)
                _count(counts, key, +1)
                if key in found:
                    found[key].add(name)
        self._seen = modified
        for key in self._known:
            self._known[key] = found[key]
        return found[wanted] if wanted is not None else set()


#: Counters of :class:`FolderNames`' filter (two bits each, four to a byte: 1 MiB per folder),
#: and how many of them each name counts in. With 100,000 names about one question in a
#: million needs a listing, with 200,000 one in 10,000.
NAME_CELLS = 1 << 22
NAME_HASHES = 8
#: The value a counter stays at once it reached it (adds and removes leave it there).
_FULL = 3
#: Keys whose spellings :class:`FolderNames` keeps once a listing told them (an LRU).
KNOWN_KEYS = 256
#: Folders whose :class:`FolderNames` this process keeps (the least recently used goes).
KNOWN_FOLDERS = 8
#: Zeros copied over the filter, a block at a time, when a listing rebuilds it.
_ZEROS = bytes(4096)


def _filter_bytes() -> int:
    """The size of a filter of :data:`NAME_CELLS` counters."""
    return (NAME_CELLS + 3) // 4


def _clear(counts: bytearray) -> None:
    """Set every counter to 0 without allocating a second filter."""
    for start in range(0, len(counts), len(_ZEROS)):
        block = min(len(_ZEROS), len(counts) - start)
        counts[start : start + block] = _ZEROS[:block]  # the whole block: no copy


def _cells(key: str) -> list[int]:
    """The counters of ``key`` (double hashing of Python's 64-bit string hash)."""
    digest = hash(key) & 0xFFFFFFFFFFFFFFFF
    first, step = digest % NAME_CELLS, (digest >> 32) | 1
    return [(first + n * step) % NAME_CELLS for n in range(NAME_HASHES)]


def _held(counts: bytearray, key: str) -> int:
    """The smallest of ``key``'s counters: at least the number of names with that key, or
    :data:`_FULL`."""
    return min((counts[cell >> 2] >> ((cell & 3) << 1)) & _FULL for cell in _cells(key))


def _count(counts: bytearray, key: str, change: int) -> None:
    """Add ``change`` to the counters of ``key``; a full counter stays full, and a counter
    never goes below 0."""
    for cell in _cells(key):
        byte, shift = cell >> 2, (cell & 3) << 1
        value = (counts[byte] >> shift) & _FULL
        if value == _FULL or (value == 0 and change < 0):
            continue
        counts[byte] = (counts[byte] & ~(_FULL << shift)) | ((value + change) << shift)


_folder_names: OrderedDict[str, FolderNames] = OrderedDict()
_folder_names_lock = threading.Lock()


def folder_names(folder: Path) -> FolderNames:
    """The :class:`FolderNames` of ``folder``, shared by every thread of this process (for
    the last :data:`KNOWN_FOLDERS` folders used; one used again after that is listed again)."""
    key = os.path.abspath(folder)
    with _folder_names_lock:
        if key in _folder_names:
            _folder_names.move_to_end(key)
        else:
            _folder_names[key] = FolderNames(folder)
            if len(_folder_names) > KNOWN_FOLDERS:
                _folder_names.popitem(last=False)
        return _folder_names[key]


def _modified(folder: Path) -> int | None:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return None


def fsync_dir(path: Path) -> None:
    """Make renames and links in ``path`` durable (:func:`outbox.platform.sync_folder`)."""
    platform.sync_folder(path)


def _unlink(path: Path) -> None:
    platform.remove(path)
