"""The exception tree as drawn in errors.py's docstring, and the exit code of each error."""

from __future__ import annotations

import inspect
import re

import pytest

from outbox import errors
from outbox.exit_codes import ExitCode, exit_code_for
from outbox.models import State


def drawn_tree() -> dict[str, str]:
    """Each class named in the docstring's tree, with the class drawn as its parent."""
    assert errors.__doc__ is not None
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name)
    for line in errors.__doc__.splitlines():
        branch = re.search(r"[├└]── (\w+)", line)
        if branch:
            column, name = branch.start(1), branch[1]
        elif line.strip() == "OutboxError":
            column, name = line.index("OutboxError"), "OutboxError"
        else:
            continue
        while stack and stack[-1][0] >= column:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((column, name))
    return parents


def test_the_docstring_draws_every_error_under_its_real_parent() -> None:
    classes = {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.OutboxError) and cls is not errors.OutboxError
    }
    drawn = drawn_tree()
    assert set(drawn) == set(classes)
    for name, parent in drawn.items():
        assert classes[name].__bases__[0].__name__ == parent, name


def test_a_lost_race_is_not_an_illegal_move() -> None:
    assert not issubclass(errors.LostRace, errors.IllegalTransition)
    assert not issubclass(errors.IllegalTransition, errors.LostRace)
    assert issubclass(errors.EntryBusy, errors.LostRace)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ConfigError("no key"), 78),
        (errors.NotAJournal("x"), 78),
        (errors.JournalTooNew("x"), 78),
        (errors.AuthError("refused"), 77),
        (errors.EntryBusy("leased"), 75),
        (errors.JournalBusy("locked"), 75),
        (errors.JournalFull("full"), 75),
        (errors.Offline("offline"), 75),
        (errors.ServerError("503"), 75),
        (errors.InvalidArgument("bad"), 65),
        (errors.EntryNotFound("no"), 65),
        (errors.IllegalTransition(f"cannot move from {State.DONE} to {State.PENDING}"), 65),
        (errors.LostRace("moved"), 65),
        (errors.PermanentError("400"), 65),
        (errors.StorageFull("full"), 1),
        (errors.OutboxError("?"), 1),
    ],
)
def test_every_error_has_one_exit_code(error: errors.OutboxError, code: int) -> None:
    assert exit_code_for(error) == code
    assert isinstance(exit_code_for(error), ExitCode)
