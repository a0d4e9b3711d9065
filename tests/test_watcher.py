"""The drop folder in-process: real files, a real journal, a real watcher thread."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import INVOICE
from support import FakeClock, connected, count_folder_listings, run_cli, wait_until

from outbox import InvalidArgument, JournalBusy, Outbox, State
from outbox.models import Entry
from outbox.sandbox import Sandbox
from outbox.watcher import Accepted, DropFolder, Outcome, Rejected, ResultWritten, derive_key

JOB: dict[str, Any] = {
    "template": "inspection-report",
    "data": {"inspector": "Ada", "site": "North"},
}


# -- helpers shared with test_watcher_processes ---------------------------------------


def drop(folder: Path, name: str, content: Any) -> Path:
    """Write a job file the recommended way: NAME.tmp, then rename into place."""
    text = content if isinstance(content, str | bytes) else json.dumps(content)
    temporary = folder / f"{name}.tmp"
    if isinstance(text, bytes):
        temporary.write_bytes(text)
    else:
        temporary.write_text(text, encoding="utf-8")
    os.rename(temporary, folder / name)
    return folder / name


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def result(folder: Path, stem: str) -> dict[str, Any] | None:
    path = folder / "results" / f"{stem}.result.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class Running:
    drop: DropFolder
    thread: threading.Thread
    outcomes: list[Outcome] = field(default_factory=list)

    def rejected(self) -> dict[str, Rejected]:
        return {o.file: o for o in list(self.outcomes) if isinstance(o, Rejected)}

    def accepted(self) -> dict[str, Accepted]:
        return {o.file: o for o in list(self.outcomes) if isinstance(o, Accepted)}


@contextmanager
def running(ob: Outbox, folder: Path, **options: Any) -> Iterator[Running]:
    """A watcher thread on ``folder``; stopped (and checked to stop) on exit."""
    options.setdefault("tick", 0.1)
    stop = threading.Event()
    outcomes: list[Outcome] = []
    watcher = DropFolder(ob, folder, on_outcome=outcomes.append, **options)
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield Running(watcher, thread, outcomes)
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the watcher did not stop when asked"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "drop"
    path.mkdir()
    return path


# -- accepting --------------------------------------------------------------------------


def test_a_valid_file_becomes_an_entry_and_moves_to_accepted(ob: Outbox, folder: Path) -> None:
    job = {**JOB, "key": "inspection-42", "filename": "north-42.pdf", "version": 3}
    drop(folder, "job1.json", job)
    report = DropFolder(ob, folder).scan()
    assert [a.file for a in report.accepted] == ["job1.json"] and not report.rejected
    entry = ob.get(report.accepted[0].entry.id)
    assert (entry.template, entry.data, entry.key) == (
        JOB["template"],
        JOB["data"],
        "inspection-42",
    )
    assert (entry.filename, entry.version, entry.state) == ("north-42.pdf", 3, State.PENDING)
    assert entry.source == str(folder.resolve() / "job1.json")
    assert listing(folder) == ["accepted"]
    assert json.loads((folder / "accepted" / "job1.json").read_text()) == job


def test_hidden_tmp_and_part_files_and_other_names_are_left_alone(ob: Outbox, folder: Path) -> None:
    ignored = [".hidden.json", "a.json.tmp", "b.json.part", "notes.txt", "c.tmp", "d.part"]
    for name in ignored:
        (folder / name).write_text(json.dumps(JOB))
    report = DropFolder(ob, folder, settle=0).scan()
    assert report.accepted == [] and report.rejected == [] and report.waiting == []
    assert listing(folder) == sorted(ignored)
    assert ob.list() == []


def test_without_a_key_identical_content_is_the_same_job(ob: Outbox, folder: Path) -> None:
    drop(folder, "first.json", JOB)
    drop(folder, "other.json", {**JOB, "data": {"inspector": "Bo"}})
    watcher = DropFolder(ob, folder)
    first = watcher.scan()
    # The same content again, pretty-printed, under another name and in another scan.
    drop(folder, "again.json", json.dumps(JOB, indent=4))
    again = watcher.scan()
    entries = ob.list()
    assert len(entries) == 2
    assert again.accepted[0].entry.id == first.accepted[0].entry.id and again.accepted[0].known
    key = again.accepted[0].entry.key
    assert key == derive_key(JOB["template"], JOB["data"], None, None)
    assert re.fullmatch(r"drop-[0-9a-f]{40}", key)
    # The filename and version are part of the job: changing them makes another one.
    assert derive_key("t", {}, "a.pdf", None) != derive_key("t", {}, None, None)
    assert derive_key("t", {}, None, 2) != derive_key("t", {}, None, None)
    assert sorted(listing(folder / "accepted")) == ["again.json", "first.json", "other.json"]


def test_a_name_already_taken_in_accepted_gets_a_number_and_nothing_is_overwritten(
    ob: Outbox, folder: Path
) -> None:
    watcher = DropFolder(ob, folder)
    for n in range(3):
        drop(folder, "daily.json", {**JOB, "data": {"day": n}})
        watcher.scan()
    assert listing(folder / "accepted") == ["daily.2.json", "daily.3.json", "daily.json"]
    days = {
        json.loads((folder / "accepted" / n).read_text())["data"]["day"]
        for n in ["daily.json", "daily.2.json", "daily.3.json"]
    }
    assert days == {0, 1, 2}
    assert len(ob.list()) == 3


def test_a_key_reused_for_a_different_job_is_rejected(ob: Outbox, folder: Path) -> None:
    watcher = DropFolder(ob, folder)
    drop(folder, "a.json", {**JOB, "key": "inspection-42"})
    original = watcher.scan().accepted[0].entry
    drop(folder, "b.json", {**JOB, "key": "inspection-42", "data": {"inspector": "Eve"}})
    report = watcher.scan()
    assert [r.file for r in report.rejected] == ["b.json"]
    assert (
        'the key "inspection-42" already belongs to entry ' + original.id
        in (folder / "rejected" / "b.error.txt").read_text()
    )
    assert ob.get(original.id).data == JOB["data"] and len(ob.list()) == 1


def test_one_file_the_journal_cannot_store_does_not_hold_up_the_others(
    ob: Outbox, folder: Path
) -> None:
    drop(folder, "good.json", JOB)
    drop(folder, "huge-version.json", {**JOB, "version": 2**70})
    report = DropFolder(ob, folder).scan()
    assert [a.file for a in report.accepted] == ["good.json"]
    assert [r.file for r in report.rejected] == ["huge-version.json"]
    assert "version must be a whole number from 1" in report.rejected[0].reason


def test_a_busy_journal_leaves_the_files_for_the_next_scan(db_path: Path, folder: Path) -> None:
    with Outbox(db_path, busy_timeout=0.2) as ob:
        drop(folder, "job.json", JOB)
        locker = sqlite3.connect(db_path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        watcher = DropFolder(ob, folder)
        with pytest.raises(JournalBusy):
            watcher.scan()
        assert listing(folder) == ["job.json"]
        locker.execute("ROLLBACK")
        locker.close()
        assert [a.file for a in watcher.scan().accepted] == ["job.json"]


def test_a_file_replaced_between_enqueue_and_move_is_not_moved_unread(
    ob: Outbox, folder: Path
) -> None:
    def replace(_entries: list[Entry]) -> None:
        if not replaced:
            replaced.append(True)
            drop(folder, "job.json", {**JOB, "data": {"inspector": "second"}})

    replaced: list[bool] = []
    watcher = DropFolder(ob, folder, after_enqueue=replace)
    drop(folder, "job.json", JOB)
    assert watcher.scan().accepted == []  # the first content is an entry; its file is gone
    assert listing(folder / "accepted") == [] and (folder / "job.json").exists()
    second = watcher.scan()
    assert [a.entry.data for a in second.accepted] == [{"inspector": "second"}]
    assert sorted(e.data["inspector"] for e in ob.list()) == ["Ada", "second"]


def test_a_crash_half_way_through_a_move_is_finished_by_the_next_scan(
    ob: Outbox, folder: Path
) -> None:
    drop(folder, "job.json", JOB)
    entry = ob.enqueue_many([ob.prepare(**JOB, key="k1", source=str(folder / "job.json"))])[0]
    # The process died after linking the file into accepted/ and before unlinking it here.
    (folder / "accepted").mkdir()
    os.link(folder / "job.json", folder / "accepted" / "job.json")
    json_text = json.dumps({**JOB, "key": "k1"})
    (folder / "job.json").write_text(json_text)  # same inode, content rewritten in place
    report = DropFolder(ob, folder).scan()
    assert [a.entry.id for a in report.accepted] == [entry.id]
    assert listing(folder / "accepted") == ["job.json"] and listing(folder) == ["accepted"]
    assert len(ob.list()) == 1


# -- rejecting --------------------------------------------------------------------------

BAD_FILES: dict[str, tuple[Any, str]] = {
    "invalid.json": ('{"template": "invoice", "data": {', "is not valid JSON: Expecting"),
    "array.json": ([JOB], "must hold a JSON object"),
    "no-template.json": ({"data": {}}, 'the required field "template" is missing'),
    "data-string.json": ({"template": "invoice", "data": "x"}, '"data" must be a JSON object'),
    "binary.json": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not UTF-8 text (byte 0x89"),
    "escape.json": (
        {**JOB, "filename": "../escape.pdf"},
        "filename '../escape.pdf' is not allowed: it must be a plain name, not a path",
    ),
    "typo.json": (
        {"tempalte": "invoice", "data": {}},
        'unknown field "tempalte" (did you mean "template"?)',
    ),
    "key-number.json": ({**JOB, "key": 42}, '"key" must be a string, not 42 (a number)'),
    "version-text.json": ({**JOB, "version": "3"}, '"version" must be a whole number'),
    "bad-slug.json": ({**JOB, "template": "Not A Slug"}, "is not a valid slug"),
    "nan.json": ('{"template": "invoice", "data": {"x": NaN}}', "NaN is not a JSON number"),
    "twice.json": (
        '{"template": "invoice", "template": "other", "data": {}}',
        'the field "template" appears twice',
    ),
    "empty.json": ("", "the file is empty"),
}


def test_bad_files_are_rejected_with_the_reason_and_the_watcher_carries_on(
    ob: Outbox, folder: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps(JOB))
    with running(ob, folder, settle=0.2) as watcher:
        for name, (content, _) in BAD_FILES.items():
            drop(folder, name, content)
        big = folder / "big.json.tmp"
        with big.open("wb") as handle:
            handle.write(b'{"template": "invoice", "data": {"blob": "')
            handle.write(b"x" * (50 * 1024 * 1024))
            handle.write(b'"}}')
        big_size = big.stat().st_size
        big.rename(folder / "big.json")
        os.symlink(outside, folder / "link.json")
        (folder / "dir.json").mkdir()
        (folder / "dir.json" / "inner.json").write_text(json.dumps(JOB))
        expected = {
            **{name: reason for name, (_, reason) in BAD_FILES.items()},
            "big.json": f"the file is {big_size:,} bytes; a job file may have at most 10,485,760",
            "link.json": f"it is a symbolic link (to {outside}); a job file must be a regular file",
            "dir.json": "it is a folder, not a job file",
        }
        wait_until(lambda: set(watcher.rejected()) == set(expected), what="all rejections")
        # Still running: a good file dropped afterwards is accepted.
        drop(folder, "good.json", JOB)
        wait_until(lambda: "good.json" in watcher.accepted(), what="the good file")
        assert watcher.thread.is_alive()
    for name, reason in expected.items():
        assert reason in watcher.rejected()[name].reason, name
        error = (folder / "rejected" / f"{name[:-5]}.error.txt").read_text()
        assert error.startswith(f"{name}: ") and reason in error, error
    rejected = folder / "rejected"
    assert sorted(p.name for p in rejected.glob("*.json")) == sorted(expected)
    assert (rejected / "link.json").is_symlink() and os.readlink(rejected / "link.json") == str(
        outside
    )
    assert json.loads(outside.read_text()) == JOB  # the link's target was not touched
    assert (rejected / "dir.json" / "inner.json").exists()
    assert listing(folder) == ["accepted", "rejected"]
    assert [e.source for e in ob.list()] == [str(folder.resolve() / "good.json")]


def test_data_the_cached_template_refuses_is_rejected_with_craftkit_field_errors(
    db_path: Path, folder: Path, sandbox: Sandbox
) -> None:
    with connected(db_path, sandbox) as online:
        online.sync_templates()  # while online; the drop folder then works offline
    with Outbox(db_path) as ob:
        drop(folder, "good.json", {"template": "invoice", "data": INVOICE})
        bad = {**INVOICE, "customer": {"email": "grace@example.com"}}
        drop(folder, "bad-data.json", {"template": "invoice", "data": bad})
        report = DropFolder(ob, folder).scan()
        assert [a.file for a in report.accepted] == ["good.json"]
        [rejected] = report.rejected
        assert rejected.field_errors == {"customer.name": ["Required"]}
        assert "\n" not in rejected.describe() and "nothing was queued" in rejected.describe()
        error = (folder / "rejected" / "bad-data.error.txt").read_text()
        assert error.startswith("bad-data.json: ")
        assert "customer.name: Required" in error, error
        assert len(ob.list()) == 1


def test_a_rejected_name_already_taken_gets_a_number(ob: Outbox, folder: Path) -> None:
    watcher = DropFolder(ob, folder, settle=0)
    for text in ("[1]", "{nope"):
        drop(folder, "bad.json", text)
        watcher.scan()
    assert listing(folder / "rejected") == [
        "bad.2.error.txt",
        "bad.2.json",
        "bad.error.txt",
        "bad.json",
    ]
    assert "not valid JSON" in (folder / "rejected" / "bad.2.error.txt").read_text()
    assert "JSON object" in (folder / "rejected" / "bad.error.txt").read_text()


def test_names_that_cannot_be_answered_are_rejected(ob: Outbox, folder: Path) -> None:
    undecodable = os.fsdecode(b"caf\xe9.json")  # Latin-1, not UTF-8
    too_long = "x" * 196 + ".json"  # 201 bytes: NAME.result.json would not fit
    for name in (undecodable, too_long):
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT)
        os.write(fd, json.dumps(JOB).encode())
        os.close(fd)
    report = DropFolder(ob, folder).scan()
    reasons = {r.file: r.reason for r in report.rejected}
    assert reasons[undecodable] == "the file name is not valid UTF-8"
    assert reasons[too_long].startswith("the file name is 201 bytes long")
    assert [r.describe() for r in report.rejected if r.file == undecodable] == [
        "rejected caf\\udce9.json: the file name is not valid UTF-8"
    ]
    rejected = folder / "rejected"
    # In rejected/ the name is one that every system can hold; the explanation names the file.
    assert (rejected / "caf_.json").exists()
    assert (rejected / "caf_.error.txt").read_bytes().startswith(b"caf\xe9.json: ")
    assert (rejected / ("x" * 196 + ".error.txt")).exists()
    assert ob.list() == []


# -- files still being written ----------------------------------------------------------


def test_a_file_written_in_chunks_is_read_only_once_complete(ob: Outbox, folder: Path) -> None:
    clock = FakeClock()
    watcher = DropFolder(ob, folder, settle=2.0, clock=clock)
    text = json.dumps({**JOB, "data": {"notes": "n" * 300, "site": "North"}})
    chunks = [text[i : i + 40] for i in range(0, len(text), 40)]
    path = folder / "slow.json"
    with path.open("w", encoding="utf-8") as handle:
        for chunk in chunks[:-1]:
            handle.write(chunk)
            handle.flush()
            report = watcher.scan()
            assert report.waiting == ["slow.json"] and not report.accepted and not report.rejected
            clock.advance(1.5)  # a slow writer, but never quiet for the whole settle time
            os.utime(path, ns=(time.time_ns(), time.time_ns() + len(chunk)))
        handle.write(chunks[-1])
    report = watcher.scan()
    assert [a.file for a in report.accepted] == ["slow.json"]
    assert ob.get(report.accepted[0].entry.id).data == json.loads(text)["data"]
    assert listing(folder) == ["accepted"]


def test_a_file_that_stops_half_way_is_rejected_once_quiet_for_settle(
    ob: Outbox, folder: Path
) -> None:
    clock = FakeClock()
    watcher = DropFolder(ob, folder, settle=2.0, clock=clock)
    (folder / "stuck.json").write_text('{"template": "invoice", "da')
    assert watcher.scan().waiting == ["stuck.json"]
    clock.advance(1.9)
    assert watcher.scan().waiting == ["stuck.json"]
    clock.advance(0.2)
    report = watcher.scan()
    assert [r.file for r in report.rejected] == ["stuck.json"]
    assert "is not valid JSON" in report.rejected[0].reason


def test_a_slow_writer_process_is_never_read_half_way(ob: Outbox, folder: Path) -> None:
    text = json.dumps({**JOB, "data": {"notes": "n" * 2000}}, indent=2)
    # Pauses of 0.1 s against a settle time of 3 s: a loaded machine cannot stretch one pause
    # past the settle time, and a complete file is taken without waiting for it.
    with running(ob, folder, settle=3.0) as watcher:
        with (folder / "slow.json").open("w", encoding="utf-8") as handle:
            for i in range(0, len(text), 150):
                handle.write(text[i : i + 150])
                handle.flush()
                time.sleep(0.1)
        wait_until(lambda: "slow.json" in watcher.accepted(), what="the slow file")
        assert watcher.rejected() == {}
    assert ob.get(watcher.accepted()["slow.json"].entry.id).data == json.loads(text)["data"]


# -- bursts -----------------------------------------------------------------------------


def test_a_thousand_files_dropped_at_once_become_a_thousand_entries_once_each(
    ob: Outbox, folder: Path
) -> None:
    with running(ob, folder) as watcher:
        names = [f"job-{i:04d}.json" for i in range(1000)]
        for i, name in enumerate(names):
            drop(folder, name, {**JOB, "data": {"n": i}})
        wait_until(lambda: len(watcher.accepted()) == 1000, timeout=120, what="1,000 files")
        assert watcher.rejected() == {}
    accepted = [o for o in watcher.outcomes if isinstance(o, Accepted)]
    assert sorted(a.file for a in accepted) == names  # each reported exactly once
    entries = ob.list()
    assert len(entries) == 1000
    assert sorted(e.source or "" for e in entries) == [str(folder.resolve() / n) for n in names]
    assert sorted(e.data["n"] for e in entries) == list(range(1000))
    assert all(len(ob.history(e.id)) == 1 for e in entries)
    assert listing(folder / "accepted") == names and listing(folder) == ["accepted"]


# -- results ----------------------------------------------------------------------------


def finish(ob: Outbox, entry_id: str, outcome: State) -> None:
    """Drive an entry to ``outcome`` the way the dispatcher and replay will."""
    journal = ob.journal
    if outcome is State.REJECTED:
        journal.transition(
            entry_id,
            State.PENDING,
            State.REJECTED,
            http_status=400,
            error="data is invalid",
            error_code="invalid_input_data",
            field_errors={"site": ["is required"]},
        )
        return
    if outcome is State.CANCELLED:
        ob.cancel(entry_id)
        return
    journal.transition(
        entry_id, State.PENDING, State.SUBMITTED, render_id=f"r-{entry_id}", remote_status="queued"
    )
    if outcome is State.FAILED:
        journal.transition(
            entry_id, State.SUBMITTED, State.FAILED, error="font missing", remote_status="failed"
        )
        return
    journal.transition(entry_id, State.SUBMITTED, State.DOWNLOADING, remote_status="succeeded")
    journal.transition(
        entry_id,
        State.DOWNLOADING,
        State.DONE,
        pdf_path=f"/renders/{entry_id}.pdf",
        pdf_bytes=1234,
        pdf_sha256="ab" * 32,
    )


def test_result_files_appear_for_done_failed_rejected_and_cancelled(
    ob: Outbox, folder: Path
) -> None:
    outcomes = [State.DONE, State.FAILED, State.REJECTED, State.CANCELLED]
    for state in outcomes:
        drop(folder, f"{state.value}.json", {**JOB, "key": f"job-{state.value}"})
    drop(folder, "waiting.json", {**JOB, "key": "still-pending"})
    watcher = DropFolder(ob, folder)
    ids = {a.file: a.entry.id for a in watcher.scan().accepted}
    assert watcher.write_results() == []
    for state in outcomes:
        finish(ob, ids[f"{state.value}.json"], state)
    written = watcher.write_results()
    assert sorted(w.file for w in written) == sorted(f"{s.value}.json" for s in outcomes)
    assert listing(folder / "results") == sorted(f"{s.value}.result.json" for s in outcomes)
    done = result(folder, "done")
    assert done == {
        "file": "done.json",
        "entry_id": ids["done.json"],
        "state": "done",
        "render_id": f"r-{ids['done.json']}",
        "pdf_path": f"/renders/{ids['done.json']}.pdf",
        "pdf_bytes": 1234,
        "pdf_sha256": "ab" * 32,
        "error": None,
        "error_code": None,
        "field_errors": None,
        "updated_at": ob.get(ids["done.json"]).updated_at,
        "deliveries": [],
    }
    failed = result(folder, "failed")
    assert failed and (failed["state"], failed["error"]) == ("failed", "font missing")
    rejected = result(folder, "rejected")
    assert rejected and rejected["state"] == "rejected"
    assert (rejected["error_code"], rejected["field_errors"]) == (
        "invalid_input_data",
        {"site": ["is required"]},
    )
    cancelled = result(folder, "cancelled")
    assert cancelled and cancelled["state"] == "cancelled"
    assert watcher.write_results() == []  # each change is reported once
    assert not any(p.name.endswith(".tmp") for p in (folder / "results").iterdir())


def test_results_catch_up_after_a_restart_and_a_retry_rewrites_them(
    ob: Outbox, folder: Path
) -> None:
    drop(folder, "job.json", JOB)
    first = DropFolder(ob, folder)
    entry_id = first.scan().accepted[0].entry.id
    first.write_results()
    finish(ob, entry_id, State.FAILED)  # while no watcher runs
    restarted = DropFolder(ob, folder)
    assert [w.file for w in restarted.write_results()] == ["job.json"]
    assert (result(folder, "job") or {})["state"] == "failed"
    assert ob.status()[restarted.status_name]["results_after_event"] == ob.journal.last_event_id()
    # A person retries it; it is rendered under a new key and ends done this time.
    assert ob.retry(entry_id).key.endswith("~2")
    assert [w.file for w in DropFolder(ob, folder).write_results()] == ["job.json"]
    assert (result(folder, "job") or {})["state"] == "pending"  # no stale "failed"
    finish(ob, entry_id, State.DONE)
    assert [w.file for w in DropFolder(ob, folder).write_results()] == ["job.json"]
    assert (result(folder, "job") or {})["state"] == "done"


def test_every_file_name_of_a_job_gets_its_result(ob: Outbox, folder: Path) -> None:
    watcher = DropFolder(ob, folder)
    drop(folder, "first.json", JOB)
    entry_id = watcher.scan().accepted[0].entry.id
    drop(folder, "second.json", JOB)  # the same job again, under another name
    assert watcher.scan().accepted[0].entry.id == entry_id
    finish(ob, entry_id, State.DONE)
    assert sorted(w.file for w in DropFolder(ob, folder).write_results()) == [
        "first.json",
        "second.json",
    ]
    # Dropped again once finished: the answer is there at once.
    drop(folder, "third.json", JOB)
    report = watcher.scan()
    assert report.accepted[0].known
    assert (result(folder, "third") or {})["state"] == "done"
    assert sorted(p.name for p in (folder / "results").glob("*.json")) == [
        "first.result.json",
        "second.result.json",
        "third.result.json",
    ]


def test_writing_results_does_not_list_the_results_folder(
    ob: Outbox, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alias marks were read from ``results/`` itself, so every pass that wrote a result
    listed every result file ever written: in a long run, a listing of thousands of names
    twice a second, its cost and its memory growing with the folder."""
    watcher = DropFolder(ob, folder)
    for n in range(300):
        drop(folder, f"job-{n}.json", {**JOB, "key": f"k-{n}"})
    accepted = watcher.scan().accepted
    drop(folder, "again.json", {**JOB, "key": "k-0"})  # an alias of job-0's entry
    assert watcher.scan().accepted[0].entry.id == accepted[0].entry.id
    for one in accepted[:150]:
        finish(ob, one.entry.id, State.DONE)
    assert len(watcher.write_results()) == 151  # job-0's result under both names
    listings = count_folder_listings(monkeypatch)
    for one in accepted[150:]:
        finish(ob, one.entry.id, State.DONE)
        assert [w.file for w in watcher.write_results()] == [one.file]
    assert str(folder / "results") not in listings
    assert listings.count(str(folder / "results" / ".aliases")) == 150  # the marks alone


def test_alias_marks_an_older_version_left_among_the_results_still_count(
    ob: Outbox, folder: Path
) -> None:
    watcher = DropFolder(ob, folder)
    drop(folder, "first.json", JOB)
    entry_id = watcher.scan().accepted[0].entry.id
    old_mark = folder / "results" / f".alias-{entry_id}-second.json.alias"
    old_mark.parent.mkdir(exist_ok=True)
    old_mark.touch()  # as older versions marked "second.json" dropped with the same key
    finish(ob, entry_id, State.DONE)
    assert sorted(w.file for w in DropFolder(ob, folder).write_results()) == [
        "first.json",
        "second.json",
    ]
    assert not old_mark.exists()
    assert (folder / "results" / ".aliases" / old_mark.name).exists()


def test_a_purge_honours_alias_marks_an_older_version_left_among_the_results(
    tmp_path: Path, folder: Path
) -> None:
    """A purge may come before any watcher of the new version has read the folder: the marks
    still in ``results/`` must keep an entry whose result a later job file is still owed."""
    clock = FakeClock()
    with Outbox(tmp_path / "j.db", clock=clock) as ob:
        watcher = DropFolder(ob, folder)
        drop(folder, "first.json", JOB)
        (first,) = watcher.scan().accepted
        finish(ob, first.entry.id, State.DONE)
        watcher.write_results()  # the folder's results are written up to here
        entry = ob.enqueue(JOB["template"], JOB["data"], key="from-the-app")
        finish(ob, entry.id, State.DONE)
        (folder / "results" / f".alias-{entry.id}-second.json.alias").touch()  # old place
        clock.advance(1)
        assert ob.purge(0) == 1  # first.json's entry, whose result is written
        assert ob.get(entry.id).state is State.DONE  # second.json's result is still owed
        assert (folder / "results" / ".aliases" / f".alias-{entry.id}-second.json.alias").exists()


def test_the_running_watcher_writes_results_as_entries_finish(ob: Outbox, folder: Path) -> None:
    other = Outbox(ob.journal.path)  # a second connection, like another component
    with running(ob, folder) as watcher:
        for state in (State.DONE, State.FAILED, State.REJECTED):
            drop(folder, f"{state.value}.json", {**JOB, "key": f"k-{state.value}"})
        wait_until(lambda: len(watcher.accepted()) == 3, what="three accepted files")
        for name, accepted in watcher.accepted().items():
            finish(other, accepted.entry.id, State(name[:-5]))
        wait_until(
            lambda: all(result(folder, s) for s in ("done", "failed", "rejected")),
            what="three result files",
        )
    other.close()
    assert [o.file for o in watcher.outcomes if isinstance(o, ResultWritten)].count(
        "done.json"
    ) == 1
    for stem in ("done", "failed", "rejected"):
        assert (result(folder, stem) or {})["state"] == stem


def test_the_watcher_survives_its_folder_being_removed_and_made_again(
    ob: Outbox, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outbox.watcher")

    def noticed_it_gone() -> bool:
        messages = [record.getMessage() for record in list(caplog.records)]
        return any("cannot watch" in m or "was replaced" in m for m in messages)

    # No periodic rescan here: only a fresh watch on the new folder can see the second file.
    with running(ob, folder, rescan_interval=3600) as watcher:
        drop(folder, "before.json", JOB)
        wait_until(lambda: "before.json" in watcher.accepted(), what="the first file")
        shutil.rmtree(folder)
        wait_until(noticed_it_gone, what="the watcher to notice that its folder is gone")
        folder.mkdir()
        drop(folder, "after.json", {**JOB, "key": "after"})
        wait_until(lambda: "after.json" in watcher.accepted(), what="a file in the new folder")
        assert watcher.thread.is_alive()
    assert len(ob.list()) == 2


def test_results_keep_coming_after_a_purge_deletes_the_newest_events(
    ob: Outbox, folder: Path
) -> None:
    # The watcher keeps only the id of the last event it handled: this holds because the
    # journal never hands an event id out twice (AUTOINCREMENT), even after such a purge.
    watcher = DropFolder(ob, folder)
    for n in range(3):
        drop(folder, f"old-{n}.json", {**JOB, "data": {"n": n}})
    for accepted in watcher.scan().accepted:
        finish(ob, accepted.entry.id, State.DONE)
    assert len(watcher.write_results()) == 3
    read_up_to = ob.journal.last_event_id()
    # Everything is finished: a purge empties the journal, newest events included.
    assert ob.journal.purge(ob.clock.now() + 1) == 3
    for n in range(5):  # more new events than the watcher had read before the purge
        drop(folder, f"new-{n}.json", {**JOB, "data": {"new": n}})
    for accepted in watcher.scan().accepted:
        finish(ob, accepted.entry.id, State.FAILED)
    assert ob.journal.last_event_id() > read_up_to
    written = DropFolder(ob, folder).write_results()
    assert sorted(w.file for w in written) == [f"new-{n}.json" for n in range(5)]
    assert all((result(folder, f"new-{n}") or {})["state"] == "failed" for n in range(5))


# -- linked subfolders -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["accepted", "rejected", "results"])
def test_a_linked_subfolder_is_refused_when_the_watcher_starts(
    ob: Outbox, folder: Path, tmp_path: Path, name: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / name).symlink_to(elsewhere)
    drop(folder, "job.json", JOB)
    with pytest.raises(InvalidArgument, match=f"{name} is a symbolic link .to {elsewhere}"):
        DropFolder(ob, folder)
    result = run_cli("--db", str(ob.path), "watch", str(folder))
    assert result.returncode == 65, result.stderr
    assert "does not write through links" in result.stderr and "Traceback" not in result.stderr
    assert listing(elsewhere) == [] and ob.list() == []


def test_the_running_watcher_never_writes_through_a_subfolder_linked_later(
    ob: Outbox, folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def said_why() -> int:
        return sum("does not write through links" in r.getMessage() for r in list(caplog.records))

    with running(ob, folder) as watcher:
        drop(folder, "first.json", {**JOB, "key": "first"})
        wait_until(lambda: "first.json" in watcher.accepted(), what="the first file")
        first = watcher.accepted()["first.json"].entry.id
        finish(ob, first, State.FAILED)
        wait_until(lambda: result(folder, "first") is not None, what="the first result")
        shutil.rmtree(folder / "results")
        (folder / "rejected").symlink_to(elsewhere)
        (folder / "results").symlink_to(elsewhere)
        ob.retry(first)  # its result file would now be rewritten, through the link
        drop(folder, "bad.json", "{not json")
        drop(folder, "good.json", {**JOB, "key": "good"})
        wait_until(lambda: said_why() > 0, what="the watcher to say why files wait")
        assert listing(elsewhere) == []
        assert {"bad.json", "good.json"} <= set(listing(folder))
        assert ob.find_by_key("good") is None  # nothing is taken in while a folder is linked
        # Once the links are real folders again, the waiting files and results are handled.
        (folder / "rejected").unlink()
        (folder / "results").unlink()
        wait_until(
            lambda: "bad.json" in watcher.rejected() and "good.json" in watcher.accepted(),
            what="the waiting files to be handled",
        )
        wait_until(
            lambda: (result(folder, "first") or {}).get("state") == "pending",
            what="the retried entry's result",
        )
        assert watcher.thread.is_alive()
    assert listing(elsewhere) == []
    assert listing(folder / "rejected") == ["bad.error.txt", "bad.json"]
    assert said_why() <= 2, "a lasting problem is logged once per activity"
