"""The power-cut file system keeps exactly what was fsynced: file contents when the file was
fsynced, folder entries when the folder was. Each test writes through a real mount, cuts the
power, remounts, and looks."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from disk import PowerCutDisk


def write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reboot(disk: PowerCutDisk) -> Path:
    disk.cut()
    return disk.mount()


def test_a_synced_write_survives_a_cut_and_an_unsynced_one_does_not(disk: PowerCutDisk) -> None:
    root = disk.mountpoint
    write(root / "kept", b"first version", sync=True)
    write(root / "lost", b"never synced", sync=False)
    sync_dir(root)
    write(root / "kept", b"second version, not synced", sync=False)
    assert (root / "kept").read_bytes() == b"second version, not synced"  # until the cut

    root = reboot(disk)
    assert (root / "kept").read_bytes() == b"first version"
    # The name was made durable by the folder's fsync; the contents never were.
    assert (root / "lost").read_bytes() == b""


def test_a_partial_overwrite_keeps_the_synced_bytes_around_it(disk: PowerCutDisk) -> None:
    root = disk.mountpoint
    write(root / "file", b"0123456789", sync=True)
    sync_dir(root)
    fd = os.open(root / "file", os.O_WRONLY)
    os.pwrite(fd, b"ab", 2)
    os.fsync(fd)
    os.pwrite(fd, b"XYZ", 8)  # not synced; extends the file
    os.close(fd)
    assert (root / "file").read_bytes() == b"01ab4567XYZ"
    root = reboot(disk)
    assert (root / "file").read_bytes() == b"01ab456789"


def test_a_new_name_needs_its_folder_synced(disk: PowerCutDisk) -> None:
    root = disk.mountpoint
    write(root / "synced-file-unsynced-folder", b"data", sync=True)
    root = reboot(disk)
    assert os.listdir(root) == []

    write(root / "synced-both", b"data", sync=True)
    sync_dir(root)
    root = reboot(disk)
    assert os.listdir(root) == ["synced-both"]
    assert (root / "synced-both").read_bytes() == b"data"


def test_a_rename_is_lost_unless_the_folder_was_synced(disk: PowerCutDisk) -> None:
    root = disk.mountpoint
    write(root / "job.json.tmp", b"{}", sync=True)
    sync_dir(root)
    os.rename(root / "job.json.tmp", root / "job.json")
    root = reboot(disk)
    assert os.listdir(root) == ["job.json.tmp"]

    os.rename(root / "job.json.tmp", root / "job.json")
    sync_dir(root)
    root = reboot(disk)
    assert os.listdir(root) == ["job.json"]
    assert (root / "job.json").read_bytes() == b"{}"


def test_a_move_between_folders_is_durable_per_folder(disk: PowerCutDisk) -> None:
    root = disk.mountpoint
    (root / "accepted").mkdir()
    write(root / "a.json", b"A", sync=True)
    sync_dir(root)
    os.link(root / "a.json", root / "accepted" / "a.json")
    os.unlink(root / "a.json")
    sync_dir(root)  # the removal is durable, the new name is not: the file is gone
    root = reboot(disk)
    assert os.listdir(root) == ["accepted"]
    assert os.listdir(root / "accepted") == []

    write(root / "b.json", b"B", sync=True)
    sync_dir(root)
    os.link(root / "b.json", root / "accepted" / "b.json")
    sync_dir(root / "accepted")
    os.unlink(root / "b.json")
    sync_dir(root)
    root = reboot(disk)
    assert os.listdir(root / "accepted") == ["b.json"]
    assert (root / "accepted" / "b.json").read_bytes() == b"B"
    assert sorted(os.listdir(root)) == ["accepted"]


def test_unlink_and_mkdir_are_lost_unless_the_parent_was_synced(disk: PowerCutDisk) -> None:
    root = disk.mountpoint
    write(root / "old", b"x", sync=True)
    sync_dir(root)
    os.unlink(root / "old")
    (root / "folder").mkdir()
    write(root / "folder" / "inside", b"y", sync=True)
    sync_dir(root / "folder")  # the folder's own entries, but not the folder's name
    root = reboot(disk)
    assert os.listdir(root) == ["old"]


def test_hard_links_share_contents_and_unlinked_open_files_vanish(disk: PowerCutDisk) -> None:
    root = disk.mountpoint
    write(root / ".temp", b"%PDF-1.4 body %%EOF", sync=True)
    os.link(root / ".temp", root / "report.pdf")
    assert os.stat(root / ".temp").st_ino == os.stat(root / "report.pdf").st_ino
    assert os.stat(root / "report.pdf").st_nlink == 2
    with open(root / ".temp", "rb") as still_open:
        os.unlink(root / ".temp")
        assert os.listdir(root) == ["report.pdf"]  # no .fuse_hidden file appears
        assert still_open.read() == b"%PDF-1.4 body %%EOF"
    sync_dir(root)
    root = reboot(disk)
    assert os.listdir(root) == ["report.pdf"]
    assert (root / "report.pdf").read_bytes() == b"%PDF-1.4 body %%EOF"


def test_fsyncs_are_counted_per_path(disk: PowerCutDisk) -> None:
    root = disk.mountpoint
    write(root / "a", b"1", sync=True)
    write(root / "a", b"2", sync=True)
    sync_dir(root)
    stats = disk.stats()
    assert stats["fsync"] == 2 and stats["fsync_by_path"] == {"/a": 2}
    assert stats["fsyncdir"] == 1 and stats["fsyncdir_by_path"] == {"/": 1}


SQLITE_WRITER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, pad TEXT)")
n = db.execute("SELECT coalesce(max(n), 0) FROM t").fetchone()[0]
while True:
    n += 1
    db.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * 3000))
    print(n, flush=True)
"""


def test_sqlite_in_wal_mode_keeps_every_committed_row_across_cuts(disk: PowerCutDisk) -> None:
    db = disk.mountpoint / "journal.db"
    acknowledged = 0
    for _ in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", SQLITE_WRITER, str(db)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        target = acknowledged + 400  # each run goes past a WAL checkpoint (1000 pages)
        while acknowledged < target:
            acknowledged = int(writer.stdout.readline())
        writer.send_signal(signal.SIGKILL)
        writer.communicate()  # reaps it and closes the pipe
        db = reboot(disk) / "journal.db"
        with sqlite3.connect(db) as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = check.execute("SELECT count(*), max(n) FROM t").fetchone()
        check.close()
        assert rows[0] == rows[1] >= acknowledged
        acknowledged = rows[1]
