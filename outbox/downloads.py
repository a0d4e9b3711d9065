"""Landing PDFs on disk: complete, verified, atomically, and only inside the downloads folder.

A download streams into a hidden temporary file in the destination folder, is checked
(``Content-Length``, the ``%PDF-`` header, the ``%%EOF`` trailer), fsynced, and only then linked
to its final name, which never replaces another file. Memory use does not grow with the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import platform
from .errors import DownloadError, StorageFull
from .files import WORK_PREFIX, ensure_folder, folder_names, fsync_dir, hard_link, rename_if_free

CHUNK = 64 * 1024
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_PDF = ".pdf"


@dataclass(frozen=True)
class SavedPdf:
    path: Path
    size: int
    sha256: str


def safe_filename(name: str | None, fallback: str) -> str:
    """A plain file name ending in ``.pdf`` that is valid on Windows, macOS and Linux alike
    (:func:`outbox.platform.portable_name`: ``CON.pdf`` -> ``CON_.pdf``, ``a:b.pdf`` ->
    ``a_b.pdf``): no folders, no hidden files. ``fallback`` (the entry id) names a PDF that was
    given no usable name."""
    base = os.path.basename((name or "").replace("\\", "/")).lstrip(" .")
    if base.lower().endswith(_PDF):
        base = base[: -len(_PDF)]
    stem = platform.portable_name(base, fallback=fallback).lstrip(" .") or fallback
    return platform.portable_name(stem + _PDF, fallback=fallback + _PDF)


def save_pdf(
    chunks: Iterable[bytes],
    *,
    folder: Path,
    name: str,
    entry_id: str,
    expected_size: int | None,
    sync_folder: bool = True,
) -> SavedPdf:
    """Stream ``chunks`` into ``folder/name`` (or ``name (2).pdf``... if that is taken).

    ``sync_folder=False`` leaves the fsync of the folder (which makes the new name durable) to
    the caller, who must do it before recording the PDF as saved: the engine syncs the folder
    once for all the PDFs of one group commit.

    Raises :class:`DownloadError` for an incomplete or non-PDF body (nothing is kept) and
    :class:`StorageFull` when the disk is full. If the target already holds exactly these
    bytes (a previous attempt crashed after saving), that file is reused.
    """
    try:
        ensure_folder(folder)
        taken = folder_names(folder)
        for stale in taken.work_files(f"{WORK_PREFIX}{entry_id}-"):
            if stale.endswith(".part"):
                with taken.changed_by_us():
                    platform.remove(folder / stale)
                taken.remove(stale)
        temp = folder / f"{WORK_PREFIX}{entry_id}-{secrets.token_hex(4)}.part"
        limit = platform.name_limit(folder)
        with taken.changed_by_us():
            fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | platform.BINARY, 0o644)
        taken.add(temp.name)
        try:
            size, digest = _write_verified(chunks, fd, expected_size)
            path = _link_unique(
                temp, folder, platform.fit_name(name, limit=limit), size, digest, limit
            )
        finally:
            with taken.changed_by_us():
                platform.remove(temp)
            taken.remove(temp.name)
        if sync_folder:
            fsync_dir(folder)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise StorageFull(
                f"no space left on the disk holding {folder}; the download will be retried"
            ) from exc
        raise
    return SavedPdf(path=path, size=size, sha256=digest)


def _write_verified(chunks: Iterable[bytes], fd: int, expected_size: int | None) -> tuple[int, str]:
    """Write ``chunks`` to the new file open as ``fd`` (closed here) and make them durable;
    their size and SHA-256, or :class:`DownloadError` if they are not the PDF announced."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    tail = b""
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            if not chunk:
                continue
            handle.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if len(head) < 5:
                head = (head + chunk)[:5]
            tail = (tail + chunk)[-1024:]
            if expected_size is not None and size > expected_size:
                raise DownloadError(
                    f"the PDF download sent more than the announced {expected_size} bytes"
                )
        handle.flush()
        platform.sync_file(handle.fileno())
    if expected_size is not None and size != expected_size:
        raise DownloadError(
            f"the PDF download was truncated: {size} of {expected_size} bytes arrived"
        )
    if head != b"%PDF-":
        raise DownloadError(f"the download is not a PDF (it starts with {head!r})")
    if b"%%EOF" not in tail:
        raise DownloadError(f"the PDF is incomplete: no %%EOF marker at its end ({size} bytes)")
    return size, digest.hexdigest()


def _link_unique(temp: Path, folder: Path, name: str, size: int, digest: str, limit: int) -> Path:
    """Give the verified file ``temp`` the first free name of ``name``, ``stem (2).pdf``...
    (each at most ``limit`` bytes, the folder's file system's limit). A name the folder holds
    in another case (``Report.pdf`` for ``report.pdf``) is taken too: on Windows and macOS it
    is the same file."""
    stem, suffix = name[: -len(_PDF)], name[-len(_PDF) :]
    taken = folder_names(folder)
    for n in range(1, 10_000):
        candidate = folder / (name if n == 1 else platform.fit_name(stem, f" ({n}){suffix}", limit))
        if candidate.parent != folder:  # defence in depth: never outside the folder
            raise DownloadError(f"refusing to write {candidate} outside {folder}")
        if taken.in_another_case(candidate.name):
            continue
        try:
            with taken.changed_by_us():
                claimed = hard_link(temp, candidate) or rename_if_free(temp, candidate)
            if claimed:
                taken.add(candidate.name)
                return candidate
        except FileExistsError:
            pass
        # The name is taken: by this very PDF if a previous attempt crashed after saving it.
        if _same_content(candidate, size, digest):
            return candidate
    raise DownloadError(f"no free file name for {name} in {folder}")


def _same_content(path: Path, size: int, digest: str) -> bool:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != size:
            return False
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(CHUNK):
                sha.update(block)
        return sha.hexdigest() == digest
    except OSError:
        return False
