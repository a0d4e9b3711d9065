"""Argument validation and the transition table (pure, no I/O)."""

from __future__ import annotations

import pytest

from outbox import InvalidArgument, RenderRequest, State
from outbox.models import TERMINAL_STATES, TRANSITIONS, can_move
from outbox.rules import derived_key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"template": "Bad Slug"}, "not a valid slug"),
        ({"template": "../etc"}, "not a valid slug"),
        ({"template": ""}, "not a valid slug"),
        ({"data": [1, 2]}, "not a JSON array"),
        ({"data": "text"}, "must be a JSON object"),
        ({"data": {"x": float("nan")}}, "JSON numbers must be finite"),
        ({"data": {"x": object()}}, "JSON-serialisable"),
        ({"key": "k" * 201}, "1-200 characters"),
        ({"key": "line\nbreak"}, "printable ASCII"),
        ({"key": "event~2"}, "reserves for retries"),
        ({"filename": "../escape.pdf"}, "plain name"),
        ({"filename": "a\\b.pdf"}, "plain name"),
        ({"filename": ".hidden.pdf"}, "start with '.'"),
        ({"filename": "report.docx"}, "end in '.pdf'"),
        ({"filename": "nul\x00.pdf"}, "control characters"),
        ({"version": 0}, "whole number from 1"),
        ({"version": 2**70}, "whole number from 1"),
        ({"version": True}, "whole number from 1"),
    ],
)
def test_invalid_requests_name_the_rule(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"template": "inspection-report", "data": {"a": 1}, **kwargs}
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        RenderRequest(**args)  # type: ignore[arg-type]


def test_valid_request_gets_a_generated_key() -> None:
    one = RenderRequest("inspection-report", {"a": 1})
    two = RenderRequest("inspection-report", {"a": 1})
    assert one.key is not None and one.key.startswith("outbox-") and one.key != two.key
    assert RenderRequest("invoice", {}, "k" * 200, "North 42.PDF", 3).key == "k" * 200


def test_derived_keys_stay_unique_and_within_200_characters() -> None:
    assert derived_key("inspection-42", 1) == "inspection-42"
    assert derived_key("inspection-42", 2) == "inspection-42~2"
    long_a, long_b = "a" * 199 + "x", "a" * 199 + "y"
    assert len(derived_key(long_a, 12)) <= 200
    assert derived_key(long_a, 12) != derived_key(long_b, 12)
    assert derived_key(long_a, 12).endswith("~12")


def test_transition_table() -> None:
    assert can_move(State.PENDING, State.SUBMITTED)
    assert can_move(State.FAILED, State.PENDING)
    assert not can_move(State.DONE, State.PENDING)
    assert not can_move(State.SUBMITTED, State.CANCELLED)
    assert not can_move(State.SUBMITTED, State.PENDING)
    for state in TERMINAL_STATES:
        assert state.is_terminal
        assert State.SUBMITTED not in TRANSITIONS[state]
