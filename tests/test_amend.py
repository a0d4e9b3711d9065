"""``amend``: fix a request in place, proven against the sandbox.

Each case ends with the amended request rendered once under its final key, and the PDF holding
the amended data: the sandbox's counters prove that no key rendered twice and that a key
Craftkit may hold a render for was never reused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sandbox_support import pdf_text
from support import FAST, INSPECTION, FakeClock, connected, run_cli, sandbox_env, simulated

from outbox import (
    DataInvalid,
    EntryBusy,
    IllegalTransition,
    InvalidArgument,
    LostRace,
    Outbox,
    Settings,
    State,
)
from outbox.sandbox import Sandbox

AMENDED = {"inspector": "Ada", "site": "South Quay"}


def renders_per_key(sb: Sandbox) -> dict[str, int]:
    per_key: dict[str, int] = sb.stats()["renders_per_key"]
    return per_key


def rendered_amended(ob: Outbox, entry_id: str) -> str:
    """The entry is done and its PDF shows the amended site."""
    entry = ob.get(entry_id)
    assert entry.state is State.DONE, (entry.state, entry.error)
    assert entry.pdf_path is not None
    text = pdf_text(Path(entry.pdf_path).read_bytes())
    assert "South Quay" in text and "North" not in text
    return entry.key


def history_lines(ob: Outbox, entry_id: str) -> list[str]:
    return [event.detail or "" for event in ob.history(entry_id)]


def test_a_rejected_entry_amended_renders_under_the_same_key(tmp_path: Path, sb: Sandbox) -> None:
    with connected(tmp_path / "j.db", sb) as ob:
        entry = ob.enqueue("inspection-report", {"inspector": "Ada"}, key="inspection-42")
        assert ob.flush(timeout=30).rejected[0].id == entry.id
        assert ob.get(entry.id).field_errors == {"site": ["Required"]}
        amended = ob.amend(entry.id, data=AMENDED)
        assert (amended.id, amended.state, amended.key) == (entry.id, State.PENDING, entry.key)
        assert (amended.error, amended.field_errors, amended.attempts) == (None, None, 0)
        assert history_lines(ob, entry.id)[-1] == (
            "amended, same key inspection-42 (Craftkit refused it and created nothing): "
            'site: (none) → "South Quay"'
        )
        assert ob.flush(timeout=30).exit_code == 0
        assert rendered_amended(ob, entry.id) == "inspection-42"
        # The rejected attempt created nothing; the amended request rendered once.
        assert renders_per_key(sb) == {"inspection-42": 1}
        # The key now holds the amended request: enqueueing it again is that entry.
        assert ob.enqueue("inspection-report", AMENDED, key="inspection-42").id == entry.id


def test_a_cancelled_entry_amended_goes_out_under_its_key(tmp_path: Path, sb: Sandbox) -> None:
    with connected(tmp_path / "j.db", sb) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="inspection-42")
        ob.cancel(entry.id)
        amended = ob.amend(entry.id, data=AMENDED, filename="south.pdf")
        assert (amended.state, amended.key, amended.filename) == (
            State.PENDING,
            "inspection-42",
            "south.pdf",
        )
        assert "(it was cancelled before it was sent)" in history_lines(ob, entry.id)[-1]
        assert ob.flush(timeout=30).exit_code == 0
        assert rendered_amended(ob, entry.id) == "inspection-42"
        assert Path(ob.get(entry.id).pdf_path or "").name == "south.pdf"
        assert renders_per_key(sb) == {"inspection-42": 1}


def test_a_failed_entry_amended_renders_under_a_new_key(tmp_path: Path, sb: Sandbox) -> None:
    """Craftkit keeps the failed render under the old key: reusing it would fail again."""
    sb.set_faults(keys={"inspection-42": {"fail_render": "Image could not be loaded"}})
    with connected(tmp_path / "j.db", sb) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="inspection-42")
        assert ob.flush(timeout=30).failed[0].id == entry.id
        failed = ob.get(entry.id)
        amended = ob.amend(entry.id, data=AMENDED)
        assert (amended.state, amended.key, amended.base_key) == (
            State.PENDING,
            "inspection-42~2",
            "inspection-42",
        )
        assert history_lines(ob, entry.id)[-1].startswith(
            f"amended, new key inspection-42~2 (render {failed.render_id} failed under key "
            "inspection-42 and stays failed there): site: "
        )
        assert ob.flush(timeout=30).exit_code == 0
        assert rendered_amended(ob, entry.id) == "inspection-42~2"
        assert renders_per_key(sb) == {"inspection-42": 1, "inspection-42~2": 1}
        assert ob.find_by_key("inspection-42") == ob.get(entry.id)


def test_an_entry_whose_submission_outcome_is_unknown_is_amended_under_a_new_key(
    tmp_path: Path, timed: Sandbox, clock: FakeClock
) -> None:
    """The lost answer's render exists at Craftkit with the old data; the amended request
    must not get it back."""
    timed.set_faults(keys={"inspection-42": {"drop_after": 1.0}})
    no_quick_retry = Settings(
        connect_timeout=FAST.connect_timeout,
        read_timeout=FAST.read_timeout,
        retries=0,
        schedule=FAST.schedule,
    )
    with simulated(tmp_path / "j.db", timed, clock, settings=no_quick_retry) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="inspection-42")
        ob.flush(timeout=0.5)  # the answer is lost; the retry is not due before the deadline
        unknown = ob.get(entry.id)
        assert (unknown.state, unknown.attempts, unknown.render_id) == (State.PENDING, 1, None)
        assert renders_per_key(timed) == {"inspection-42": 1}  # created, answer lost
        amended = ob.amend(entry.id, data=AMENDED)
        assert amended.key == "inspection-42~2" and amended.attempts == 0
        assert (
            "an earlier submission under key inspection-42 has an unknown outcome"
            in (history_lines(ob, entry.id)[-1])
        )
        assert ob.flush(timeout=600).exit_code == 0
        assert rendered_amended(ob, entry.id) == "inspection-42~2"
        assert renders_per_key(timed) == {"inspection-42": 1, "inspection-42~2": 1}


def test_a_pending_entry_never_sent_keeps_its_key(ob: Outbox) -> None:
    entry = ob.enqueue("inspection-report", INSPECTION, key="inspection-42", version=2)
    amended = ob.amend(entry.id, version=None, filename="a.pdf")
    assert (amended.key, amended.version, amended.filename, amended.data) == (
        "inspection-42",
        None,
        "a.pdf",
        INSPECTION,
    )
    assert history_lines(ob, entry.id)[-1] == (
        "amended, same key inspection-42 (it was never sent): filename: (none) → a.pdf; "
        "version: 2 → (current)"
    )
    assert [e.to_state for e in ob.history(entry.id)] == [State.PENDING, State.PENDING]


def test_what_craftkit_accepted_cannot_be_amended(tmp_path: Path, sb: Sandbox) -> None:
    with connected(tmp_path / "j.db", sb) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="inspection-42")
        ob.flush(timeout=30)
        done = ob.get(entry.id)
        assert done.state is State.DONE
        with pytest.raises(IllegalTransition, match="is done: Craftkit already accepted"):
            ob.amend(entry.id, data=AMENDED)
        assert ob.get(entry.id) == done


def test_an_entry_on_the_wire_is_busy_and_one_sent_since_it_was_read_is_a_lost_race(
    ob: Outbox,
) -> None:
    entry = ob.enqueue("inspection-report", INSPECTION, key="inspection-42")
    claimed = ob.journal.claim_due(
        State.PENDING, owner="worker", lease_seconds=60, limit=1, horizon=3600
    )
    assert [e.id for e in claimed] == [entry.id]
    with pytest.raises(EntryBusy, match="on the wire"):
        ob.amend(entry.id, data=AMENDED)
    ob.journal.reschedule(entry.id, State.PENDING, owner="worker", attempts=1)
    # Decided on the entry as read before that attempt: the write is refused.
    with pytest.raises(LostRace, match="sent to Craftkit since it was read"):
        ob.journal.transition(
            entry.id, State.PENDING, State.PENDING, unleased=True, attempts_were=0, detail="x"
        )
    assert ob.amend(entry.id, data=AMENDED).key == "inspection-42~2"


def test_amended_data_is_checked_offline_like_an_enqueue(tmp_path: Path, sb: Sandbox) -> None:
    with connected(tmp_path / "j.db", sb) as ob:
        ob.sync_templates()
        entry = ob.enqueue("inspection-report", INSPECTION, key="inspection-42")
        with pytest.raises(DataInvalid) as caught:
            ob.amend(entry.id, data={"inspector": "Ada", "photo": "data:image/png;base64,AA=="})
        assert caught.value.field_errors == {"site": ["Required"], "photo": ["Invalid url"]}
        assert ob.get(entry.id).data == INSPECTION and len(ob.history(entry.id)) == 1
        warned = ob.amend(entry.id, data={"inspector": "Ada"}, validation="warn")
        assert warned.data == {"inspector": "Ada"}
        with pytest.raises(InvalidArgument, match="nothing was changed"):
            ob.amend(entry.id, data={"inspector": "Ada"})
        with pytest.raises(InvalidArgument, match="filename"):
            ob.amend(entry.id, filename="../x.pdf")


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_amend_fixes_a_rejected_entry_end_to_end(tmp_path: Path, sandbox: Sandbox) -> None:
    env = sandbox_env(sandbox, tmp_path / "j.db")
    entry_id = run_cli(
        "enqueue", "inspection-report", "--data", '{"inspector": "Ada"}', "--key", "k-1", env=env
    ).stdout.strip()
    assert run_cli("flush", env=env).returncode == 65
    (tmp_path / "fixed.json").write_text(json.dumps(AMENDED))
    amended = run_cli("amend", entry_id, "--data", f"@{tmp_path / 'fixed.json'}", env=env)
    assert amended.returncode == 0, amended.stderr
    assert amended.stdout == f"{entry_id} amended; pending with key k-1\n"
    flushed = run_cli("flush", env=env)
    assert flushed.returncode == 0, flushed.stderr
    shown = json.loads(run_cli("show", entry_id, "--json", env=env).stdout)
    assert shown["state"] == "done" and shown["data"] == AMENDED
    assert any("amended, same key k-1" in (e["detail"] or "") for e in shown["events"])
    assert sandbox.stats()["renders_per_key"] == {"k-1": 1}

    again = run_cli("amend", entry_id, "--data", "{}", env=env)
    assert again.returncode == 65 and "is done: Craftkit already accepted" in again.stderr


def test_cli_amend_options_and_json(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    entry_id = run_cli("--db", db, "enqueue", "invoice", "--data", "{}").stdout.strip()
    nothing = run_cli("--db", db, "amend", entry_id)
    assert nothing.returncode == 65 and "give --data, --filename or --version" in nothing.stderr
    bad = run_cli("--db", db, "amend", entry_id, "--version", "two")
    assert bad.returncode == 65 and "'current'" in bad.stderr
    pinned = run_cli("--db", db, "amend", entry_id, "--version", "3", "--json")
    assert pinned.returncode == 0, pinned.stderr
    assert json.loads(pinned.stdout)["id"] == entry_id
    unpinned = run_cli("--db", db, "amend", entry_id, "--version", "current", "--data", "-",
                       input='{"customer": {"name": "Bo"}, "amount": 1}')  # fmt: skip
    assert unpinned.returncode == 0, unpinned.stderr
    shown = json.loads(run_cli("--db", db, "show", entry_id, "--json").stdout)
    assert shown["version"] is None and shown["data"] == {"customer": {"name": "Bo"}, "amount": 1}
    assert "is not cached" in unpinned.stderr  # the same note as enqueue
