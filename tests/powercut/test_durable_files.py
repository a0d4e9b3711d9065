"""Each place where outbox puts a name on disk keeps it through a power cut: the journal in a
folder it creates, a PDF in a downloads folder it creates, a job file moved to ``accepted/``
while the app syncs the drop folder, a result file in a ``results/`` folder it creates, and a
folder another process made but never synced."""

from __future__ import annotations

import json
import os
from pathlib import Path

from disk import PowerCutDisk

from outbox import Outbox
from outbox.downloads import save_pdf
from outbox.files import identity, move_without_overwriting
from outbox.models import Entry, State
from outbox.resultfiles import ResultFiles, ResultWritten
from outbox.watcher import DropFolder

PDF = b"%PDF-1.7\n" + b"x" * 5000 + b"\n%%EOF\n"
DATA = {"inspector": "Ada", "site": "North"}
JOB = {"template": "inspection-report", "data": DATA}


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_file(path: Path, data: bytes) -> None:
    """What a careful app does: write, fsync, and fsync the folder."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    sync_dir(path.parent)


def reboot(disk: PowerCutDisk) -> Path:
    disk.cut()
    return disk.mount()


def test_an_enqueue_into_a_journal_in_new_folders_survives(disk: PowerCutDisk) -> None:
    db = disk.mountpoint / "new" / "deeper" / "journal.db"
    with Outbox(db) as ob:
        entry = ob.enqueue("inspection-report", DATA, key="kept")
    db = reboot(disk) / "new" / "deeper" / "journal.db"
    with Outbox(db) as ob:
        assert ob.get(entry.id).key == "kept"
        assert ob.journal.integrity_check() == "ok"


def test_a_pdf_saved_into_a_new_downloads_folder_survives(disk: PowerCutDisk) -> None:
    folder = disk.mountpoint / "data" / "renders"
    saved = save_pdf(
        [PDF[:100], PDF[100:]], folder=folder, name="r.pdf", entry_id="e1", expected_size=len(PDF)
    )
    assert saved.path == folder / "r.pdf"
    folder = reboot(disk) / "data" / "renders"
    assert os.listdir(folder) == ["r.pdf"]
    assert (folder / "r.pdf").read_bytes() == PDF


def test_a_folder_another_process_made_but_never_synced_is_synced_on_first_use(
    disk: PowerCutDisk,
) -> None:
    folder = disk.mountpoint / "renders"
    folder.mkdir()  # made by a process that died before it synced the parent
    save_pdf([PDF], folder=folder, name="r.pdf", entry_id="e2", expected_size=len(PDF))
    folder = reboot(disk) / "renders"
    assert (folder / "r.pdf").read_bytes() == PDF


def test_a_moved_file_survives_when_the_app_syncs_the_old_folder(disk: PowerCutDisk) -> None:
    drop = disk.mountpoint
    durable_file(drop / "job.json", b"{}")
    target = move_without_overwriting(
        drop / "job.json",
        identity(drop / "job.json") or (0, 0),
        drop / "accepted",
        lambda n: "job.json",
    )
    assert target == drop / "accepted" / "job.json"
    durable_file(drop / "next.json", b"{}")  # the app drops the next file: the removal is durable
    drop = reboot(disk)
    assert sorted(os.listdir(drop)) == ["accepted", "next.json"]
    assert (drop / "accepted" / "job.json").read_bytes() == b"{}"


def test_files_the_watcher_accepted_survive_with_their_entries(disk: PowerCutDisk) -> None:
    drop = disk.mountpoint / "drop"
    drop.mkdir()
    sync_dir(disk.mountpoint)
    for i in range(5):
        durable_file(drop / f"job-{i}.json", json.dumps({**JOB, "key": f"job-{i}"}).encode())
    with Outbox(disk.mountpoint / "journal.db") as ob:
        report = DropFolder(ob, drop, recheck=0).scan()
    assert len(report.accepted) == 5
    durable_file(drop / "next.json.tmp", b"")  # the app syncs the drop folder again
    root = reboot(disk)
    assert sorted(os.listdir(root / "drop" / "accepted")) == [f"job-{i}.json" for i in range(5)]
    with Outbox(root / "journal.db") as ob:
        assert sorted(e.key for e in ob.list()) == [f"job-{i}" for i in range(5)]


def test_a_result_file_in_a_new_results_folder_survives(disk: PowerCutDisk) -> None:
    drop = disk.mountpoint / "drop"
    drop.mkdir()
    sync_dir(disk.mountpoint)
    written: list[ResultWritten] = []
    with Outbox(disk.mountpoint / "journal.db") as ob:
        entry = ob.enqueue("inspection-report", DATA, key="k")
        results = ResultFiles(ob, drop, written.append)
        results.write("job.json", entry)
        results.sync()
    assert [w.entry.state for w in written] == [State.PENDING]
    drop = reboot(disk) / "drop"
    result = json.loads((drop / "results" / "job.result.json").read_text())
    assert result["entry_id"] == entry.id and isinstance(entry, Entry)
