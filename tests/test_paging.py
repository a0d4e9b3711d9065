"""Keyset paging over a real journal: every filter combination walks to the same entries as a
plain scan would find, whichever index the journal chooses to walk."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from outbox import Entry, InvalidArgument, Outbox, State
from outbox import store as journal_module

TEMPLATES = ("inspection-report", "invoice", "always-fails")
PREFIXES = (None, "a", "job-1", "job-10", "zz")


@pytest.fixture(scope="module")
def varied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outbox]:
    """600 entries over three templates, every state but failed, keys of two shapes; done is
    the biggest state, as in a long-lived journal."""
    path: Path = tmp_path_factory.mktemp("paging") / "journal.db"
    rng = random.Random(5)
    with Outbox(path, validation="off") as ob:
        entries = ob.enqueue_many(
            {
                "template": rng.choice(TEMPLATES),
                "data": {"n": i},
                "key": f"job-{i}" if i % 4 else f"a{rng.randrange(10**6):06d}-{i}",
            }
            for i in range(600)
        )
        journal = ob.journal
        for entry in entries:
            move = rng.randrange(7)
            if move == 1:
                ob.cancel(entry.id)
            elif move == 2:
                journal.transition(entry.id, State.PENDING, State.REJECTED, error="bad data")
            elif move >= 3:
                journal.transition(entry.id, State.PENDING, State.SUBMITTED, render_id="r")
                if move >= 4:
                    journal.transition(entry.id, State.SUBMITTED, State.DOWNLOADING)
                if move >= 5:
                    journal.transition(entry.id, State.DOWNLOADING, State.DONE)
        yield ob


def walk(ob: Outbox, **filters: str | None) -> list[str]:
    """Every entry id, page by page (7 at a time), following the cursors."""
    ids: list[str] = []
    after = None
    while True:
        page = ob.page(limit=7, after=after, **filters)
        assert len(page.entries) <= 7
        ids += [entry.id for entry in page.entries]
        if page.next is None:
            return ids
        assert len(page.entries) == 7, "only the last page may be short"
        after = page.next


def expected(ob: Outbox, state: str | None, template: str | None, prefix: str | None) -> list[str]:
    def keep(entry: Entry) -> bool:
        return (
            (state is None or entry.state.value == state)
            and (template is None or entry.template == template)
            and (prefix is None or entry.base_key.startswith(prefix))
        )

    matches = [entry for entry in ob.list() if keep(entry)]  # newest first
    if prefix is not None:
        matches.sort(key=lambda entry: entry.base_key)
    return [entry.id for entry in matches]


@pytest.mark.parametrize("narrow", [0, 10_000], ids=["walk-either", "walk-narrow"])
def test_every_filter_combination_pages_through_exactly_the_matches(
    varied: Outbox, narrow: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NARROW decides which index the journal walks; the entries found must not depend on it.
    monkeypatch.setattr(journal_module, "NARROW", narrow)
    assert {entry.state for entry in varied.list()} == set(State) - {State.FAILED}
    for state in (None, "pending", "done", "rejected", "cancelled", "failed"):
        for template in (None, *TEMPLATES, "unknown"):
            for prefix in PREFIXES:
                got = walk(varied, state=state, template=template, key_prefix=prefix)
                assert got == expected(varied, state, template, prefix), (state, template, prefix)


def test_newest_first_and_search_in_key_order(varied: Outbox) -> None:
    newest = varied.page(limit=3).entries
    assert [entry.id for entry in newest] == [entry.id for entry in varied.list(limit=3)]
    found = varied.page(key_prefix="job-10", limit=50).entries
    assert [entry.base_key for entry in found] == sorted(
        ["job-10", *(f"job-{n}" for n in range(100, 110) if n % 4)]  # n % 4 == 0: 'a…' keys
    )


def test_a_page_started_from_a_cursor_is_stable_while_new_entries_arrive(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "j.db", validation="off") as ob:
        for i in range(10):
            ob.enqueue("invoice", {"n": i}, key=f"k{i}")
        first = ob.page(limit=4)
        ob.enqueue("invoice", {"n": 99}, key="newer")
        second = ob.page(limit=4, after=first.next)
        assert [e.key for e in first.entries] == ["k9", "k8", "k7", "k6"]
        assert [e.key for e in second.entries] == ["k5", "k4", "k3", "k2"]


def test_bad_page_arguments_are_refused(ob: Outbox) -> None:
    with pytest.raises(InvalidArgument, match="limit must be from 1 to 500"):
        ob.page(limit=0)
    with pytest.raises(InvalidArgument, match="not a page cursor"):
        ob.page(after="abc")
    with pytest.raises(InvalidArgument, match="not a page cursor"):
        ob.page(after="²")
    with pytest.raises(ValueError, match="'stuck' is not a valid State"):
        ob.page(state="stuck")


def test_templates_in_use_and_purge_dry_run(tmp_path: Path) -> None:
    with Outbox(tmp_path / "j.db", validation="off") as ob:
        assert ob.journal.templates_in_use() == []
        kept = ob.enqueue("invoice", {}, key="kept")
        gone = ob.enqueue("inspection-report", {}, key="gone")
        ob.cancel(gone.id)
        assert ob.journal.templates_in_use() == ["inspection-report", "invoice"]
        assert ob.purge(3600, dry_run=True) == 0  # nothing finished an hour ago
        counted = ob.journal.purge(ob.clock.now() + 60, dry_run=True)
        assert counted == 1
        assert ob.get(gone.id).state is State.CANCELLED, "a dry run deletes nothing"
        assert ob.journal.purge(ob.clock.now() + 60) == 1
        assert [e.id for e in ob.list()] == [kept.id]
