"""What the environment can do to a device: a full disk, a locked journal, arbitrary input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import connected, process_env, renders_per_entry_ok, run_cli_process

from outbox import InvalidArgument, JournalBusy, Outbox, State
from outbox.sandbox import Sandbox
from outbox.watcher import DropFolder

INSPECTION = {"inspector": "Ada", "site": "North"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB file system of its own, so the test can fill it up for real."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_full_disk_in_downloads_waits_with_a_clear_error_then_finishes(
    tmp_path: Path, small_disk: Path
) -> None:
    db = tmp_path / "j.db"  # the journal lives on another disk, which has room
    filler = small_disk / "filler.bin"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    with Sandbox(render_seconds=0.1, pdf_size=300_000) as sb:
        with connected(db, sb, downloads=small_disk) as ob:
            for i in range(3):
                ob.enqueue("inspection-report", {**INSPECTION, "site": f"S{i}"})
            report = ob.flush(timeout=5)
            assert report.exit_code == 75
            waiting = ob.list(state="downloading")
            assert len(waiting) == 3
            assert all("no space left" in (e.error or "") for e in waiting)
            assert any("no space left" in line for line in report.problems)
            assert not list(small_disk.glob(".outbox-*")), "partial files must not be kept"
            filler.unlink()  # space is back
            for entry in waiting:  # the retry is scheduled 30 s out; bring it forward
                ob.journal.reschedule(entry.id, State.DOWNLOADING, due_at=0)
            report = ob.flush(timeout=30)
            assert report.exit_code == 0, report.problems
            for entry in ob.list():
                assert entry.state is State.DONE and Path(entry.pdf_path or "").stat().st_size > 0
            assert ob.journal.integrity_check() == "ok"
        renders_per_entry_ok(sb, 3)


HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    """
)


def _hold_write_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.e2e
def test_a_ten_second_write_lock_makes_commands_wait_not_fail(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        ob.enqueue("inspection-report", INSPECTION, key="before-lock")
    holder = _hold_write_lock(db, 10)
    started = time.monotonic()
    env = {
        "OUTBOX_DB": str(db),
        "CRAFTKIT_API_KEY": sandbox.api_key,
        "CRAFTKIT_BASE_URL": sandbox.base_url,
    }
    enqueue = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "outbox",
            "enqueue",
            "inspection-report",
            "--data",
            '{"inspector": "Bo", "site": "South"}',
            "--key",
            "during-lock",
        ],
        env=process_env({**env, "PATH": "/usr/bin:/bin"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    flush = run_cli_process("flush", "--timeout", "60", env=env)
    out, err = enqueue.communicate(timeout=60)
    holder.communicate(timeout=30)
    assert time.monotonic() - started >= 9.5, "the lock really was held"
    assert enqueue.returncode == 0, err
    assert flush.returncode in (0, 75), flush.stderr
    assert "Traceback" not in err + flush.stderr and "database is locked" not in err
    result = run_cli_process("flush", env=env)
    assert result.returncode == 0, result.stderr
    with Outbox(db) as ob:
        assert ob.counts()[State.DONE] == 2
        assert ob.journal.integrity_check() == "ok"


def test_a_command_that_gives_up_on_a_lock_says_so_clearly(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    Outbox(db).close()
    holder = sqlite3.connect(db, isolation_level=None)  # another connection, as another process
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Outbox(db, busy_timeout=0.5) as ob, pytest.raises(JournalBusy) as raised:
            ob.enqueue("inspection-report", INSPECTION)
        assert "locked by another process" in str(raised.value)
        assert "nothing was lost" in str(raised.value)
    finally:
        holder.execute("COMMIT")
        holder.close()
    with Outbox(db) as ob:
        assert sum(ob.counts().values()) == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    template=st.one_of(st.sampled_from(["inspection-report", "invoice"]), st.text(max_size=30)),
    data=json_values,
    key=st.none() | st.text(max_size=210),
    filename=st.none() | st.text(max_size=40) | st.just("north-42.pdf"),
    version=st.none() | st.integers(-2, 5) | st.booleans() | st.text(max_size=3),
)
def test_every_enqueue_either_becomes_an_entry_or_gets_a_specific_error(
    ob: Outbox,
    template: str,
    data: object,
    key: str | None,
    filename: str | None,
    version: object,
) -> None:
    before = sum(ob.counts().values())
    try:
        entry = ob.enqueue(
            template,
            data,  # type: ignore[arg-type]
            key=key,
            filename=filename,
            version=version,  # type: ignore[arg-type]
        )
    except InvalidArgument as exc:
        assert str(exc), "the error says what is wrong"
        assert sum(ob.counts().values()) == before, "a refused request writes nothing"
        return
    stored = ob.get(entry.id)
    assert stored.data == data and stored.template == template
    assert stored.state is State.PENDING
    assert (key is None) or stored.base_key == key
    assert sum(ob.counts().values()) in (before, before + 1)


job_fields = st.fixed_dictionaries(
    {},
    optional={
        "template": st.one_of(st.sampled_from(["inspection-report", "invoice"]), json_values),
        "data": st.one_of(
            st.dictionaries(st.text(max_size=8), json_values, max_size=3), json_values
        ),
        "key": st.one_of(st.text(max_size=30), json_values),
        "filename": st.one_of(st.just("x.pdf"), st.just("../escape.pdf"), json_values),
        "version": st.one_of(st.integers(-1, 3), json_values),
        "extra": json_values,
    },
)
file_contents = st.one_of(
    job_fields.map(lambda job: json.dumps(job).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(contents=st.lists(file_contents, min_size=1, max_size=5))
def test_every_drop_folder_file_becomes_an_entry_or_a_specific_rejection(
    ob: Outbox, tmp_path_factory: pytest.TempPathFactory, contents: list[bytes]
) -> None:
    folder = tmp_path_factory.mktemp("drop")
    for index, body in enumerate(contents):
        (folder / f"job-{index}.json").write_bytes(body)
    before = sum(ob.counts().values())
    report = DropFolder(ob, folder, settle=0.0).scan()
    assert len(report.accepted) + len(report.rejected) == len(contents)
    assert not list(folder.glob("*.json")), "every file was answered"
    for accepted in report.accepted:
        assert accepted.moved_to.exists() and accepted.moved_to.parent.name == "accepted"
        assert ob.get(accepted.entry.id).source
    for rejected in report.rejected:
        stem = rejected.file.removesuffix(".json")
        error = (folder / "rejected" / f"{stem}.error.txt").read_text()
        assert error.strip() and rejected.reason.splitlines()[0] in error
        assert rejected.moved_to.exists() and rejected.moved_to.parent.name == "rejected"
    new_entries = sum(ob.counts().values()) - before
    assert new_entries <= len(report.accepted)
