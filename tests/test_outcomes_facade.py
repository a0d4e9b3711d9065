"""The outcome table end to end through the facade, in-process: Outbox(transport=MockTransport).

A small scripted Craftkit answers each request; the journal is a real SQLite file. Each test
walks one branch of the README's "What happens on each answer" from enqueue to the report.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from outbox import ExitCode, Outbox, Schedule, Settings, State
from outbox.schedule import Backoff, PollSchedule

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
BASE_URL = "https://craftkit.test"
KEY = "ck_test_in_process"

#: Quick backoffs, one poll step and no in-call retries, so every answer reaches the table.
QUICK = Settings(
    retries=0,
    schedule=Schedule(
        submit_retry=Backoff(0.01, 0.01),
        poll_retry=Backoff(0.01, 0.01),
        download_retry=Backoff(0.01, 0.01),
        polling=PollSchedule(steps=(0.01,)),
        offline_grace=0.0,
    ).with_rng(random.Random(3)),
)

Answer = Callable[[httpx.Request], httpx.Response]


def envelope(status: int, code: str, message: str = "", **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, **extra}})


@dataclass
class FakeCraftkit:
    """Answers like Craftkit: renders are created once per idempotency key and finish as
    ``statuses`` says (one status per poll, the last one repeating). ``submit_answers`` are
    given to the next submissions instead, first come first served."""

    statuses: list[str] = field(default_factory=lambda: ["succeeded"])
    submit_answers: list[Answer] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    renders: dict[str, str] = field(default_factory=dict)  # idempotency key -> render id
    polls: dict[str, int] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return envelope(401, "unauthorized", "Invalid API key.")
        if request.method == "POST" and path.endswith("/render"):
            if self.submit_answers:
                return self.submit_answers.pop(0)(request)
            key = request.headers["Idempotency-Key"]
            replay = key in self.renders
            render_id = self.renders.setdefault(key, f"r{len(self.renders) + 1}")
            status = self._status(render_id) if replay else "queued"
            return httpx.Response(200 if replay else 202, json=self._render(render_id, status))
        if request.method == "GET" and path.startswith("/v1/renders/"):
            render_id = path.rsplit("/", 1)[1]
            self.polls[render_id] = self.polls.get(render_id, 0) + 1
            return httpx.Response(200, json=self._render(render_id, self._status(render_id)))
        if path.startswith("/v1/embed/renders/") and path.endswith("/download"):
            return httpx.Response(200, content=PDF, headers={"Content-Type": "application/pdf"})
        return envelope(404, "not_found", f"no route {path}")

    def _status(self, render_id: str) -> str:
        return self.statuses[min(self.polls.get(render_id, 1) - 1, len(self.statuses) - 1)]

    def _render(self, render_id: str, status: str) -> dict[str, Any]:
        return {
            "id": render_id,
            "status": status,
            "pollUrl": f"{BASE_URL}/v1/renders/{render_id}",
            "downloadUrl": None,
            "errorMessage": "font missing" if status == "failed" else None,
            "createdAt": "2026-06-05T10:00:00.000Z",
        }

    def posts(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST"]


@pytest.fixture
def craftkit() -> FakeCraftkit:
    return FakeCraftkit()


@pytest.fixture
def outbox(tmp_path: Path, craftkit: FakeCraftkit) -> Iterator[Outbox]:
    with Outbox(
        tmp_path / "journal.db",
        api_key=KEY,
        base_url=BASE_URL,
        downloads=tmp_path / "renders",
        settings=QUICK,
        transport=httpx.MockTransport(craftkit),
    ) as ob:
        yield ob


def details(ob: Outbox, entry_id: str) -> list[str]:
    return [event.detail or "" for event in ob.history(entry_id)]


def test_accepted_then_succeeded_lands_the_pdf(outbox: Outbox, craftkit: FakeCraftkit) -> None:
    entry = outbox.enqueue("invoice", {"n": 1}, key="inspection-42", filename="north-42.pdf")
    report = outbox.flush(timeout=10)
    assert report.exit_code is ExitCode.OK, report.problems
    done = outbox.get(entry.id)
    assert done.state is State.DONE and Path(done.pdf_path or "").read_bytes() == PDF
    [post] = craftkit.posts()
    assert post.headers["Idempotency-Key"] == "inspection-42"
    assert json.loads(post.content) == {"data": {"n": 1}, "options": {"filename": "north-42.pdf"}}
    assert [e.to_state for e in outbox.history(entry.id)] == [
        State.PENDING,
        State.SUBMITTED,
        State.DOWNLOADING,
        State.DONE,
    ]


def test_a_5xx_is_sent_again_with_the_same_key(outbox: Outbox, craftkit: FakeCraftkit) -> None:
    craftkit.submit_answers.append(lambda _: envelope(503, "queue_unavailable", "Queue down."))
    entry = outbox.enqueue("invoice", {}, key="k-503")
    assert outbox.flush(timeout=10).exit_code is ExitCode.OK
    assert [p.headers["Idempotency-Key"] for p in craftkit.posts()] == ["k-503", "k-503"]
    assert "submit failed, retrying in" in details(outbox, entry.id)[1]
    assert outbox.get(entry.id).attempts == 2


def test_a_lost_answer_is_sent_again_and_renders_once(
    outbox: Outbox, craftkit: FakeCraftkit
) -> None:
    def created_then_lost(request: httpx.Request) -> httpx.Response:
        craftkit.renders[request.headers["Idempotency-Key"]] = "r1"
        raise httpx.ReadTimeout("no answer", request=request)

    craftkit.submit_answers.append(created_then_lost)
    entry = outbox.enqueue("invoice", {}, key="k-lost")
    assert outbox.flush(timeout=10).exit_code is ExitCode.OK
    assert outbox.get(entry.id).render_id == "r1" and len(craftkit.renders) == 1
    assert outbox.history(entry.id)[1].error_code == "outcome_unknown"
    assert "replayed (key already known)" in details(outbox, entry.id)[2]


def test_refused_data_is_rejected_with_field_errors(outbox: Outbox, craftkit: FakeCraftkit) -> None:
    craftkit.submit_answers.append(
        lambda _: envelope(
            400,
            "invalid_input_data",
            "Invalid input.",
            issues={"formErrors": [], "fieldErrors": {"customer.name": ["Required"]}},
        )
    )
    entry = outbox.enqueue("invoice", {})
    report = outbox.flush(timeout=10)
    assert report.exit_code is ExitCode.DATA_ERROR
    rejected = outbox.get(entry.id)
    assert rejected.state is State.REJECTED and rejected.error_code == "invalid_input_data"
    assert rejected.field_errors == {"customer.name": ["Required"]}
    assert [e.id for e in report.rejected] == [entry.id]


def test_a_refused_key_changes_nothing(tmp_path: Path, craftkit: FakeCraftkit) -> None:
    with Outbox(
        tmp_path / "journal.db",
        api_key="ck_test_revoked",
        base_url=BASE_URL,
        settings=QUICK,
        transport=httpx.MockTransport(craftkit),
    ) as ob:
        entry = ob.enqueue("invoice", {})
        report = ob.flush(timeout=10)
        assert report.exit_code is ExitCode.KEY_REFUSED
        assert report.auth_error and "refused the API key" in report.auth_error
        same = ob.get(entry.id)
        assert (same.state, same.attempts, same.error) == (State.PENDING, 0, None)


def test_offline_changes_nothing(outbox: Outbox, craftkit: FakeCraftkit) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    craftkit.submit_answers.append(unreachable)
    entry = outbox.enqueue("invoice", {})
    report = outbox.flush(timeout=10)
    assert report.exit_code is ExitCode.TRY_LATER and report.offline
    same = outbox.get(entry.id)
    assert (same.state, same.attempts, same.error) == (State.PENDING, 0, None)


def test_a_failed_render_fails_and_a_retry_renders_under_a_new_key(
    outbox: Outbox, craftkit: FakeCraftkit
) -> None:
    craftkit.statuses = ["rendering", "failed"]
    entry = outbox.enqueue("invoice", {}, key="k-fail")
    report = outbox.flush(timeout=10)
    assert report.exit_code is ExitCode.DATA_ERROR
    failed = outbox.get(entry.id)
    assert (failed.state, failed.error, failed.error_code) == (
        State.FAILED,
        "font missing",
        "render_failed",
    )
    craftkit.statuses = ["succeeded"]
    outbox.retry(entry.id)
    assert outbox.flush(timeout=10).exit_code is ExitCode.OK
    assert [p.headers["Idempotency-Key"] for p in craftkit.posts()] == ["k-fail", "k-fail~2"]
    assert outbox.get(entry.id).state is State.DONE


def test_an_undocumented_status_is_polled_on(outbox: Outbox, craftkit: FakeCraftkit) -> None:
    craftkit.statuses = ["paused", "paused", "succeeded"]
    entry = outbox.enqueue("invoice", {})
    assert outbox.flush(timeout=10).exit_code is ExitCode.OK
    assert "render r1 is paused" in details(outbox, entry.id)
    assert outbox.get(entry.id).state is State.DONE and craftkit.polls["r1"] == 3


def test_a_misspelled_field_is_a_type_error(tmp_path: Path) -> None:
    """Journal moves take typed changes (Changes), so mypy catches a misspelled field."""
    snippet = tmp_path / "misspelled.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from outbox.models import State
            from outbox.store import Journal

            def move(journal: Journal) -> None:
                journal.transition("e1", State.PENDING, State.PENDING, atempts=1)
                journal.reschedule("e1", State.PENDING, due_at="soon")
                journal.transition("e1", State.PENDING, State.PENDING, attempts=1, due_at=2.0)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(snippet)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines = result.stdout.splitlines()
    assert any(':6: error: Unexpected keyword argument "atempts"' in line for line in lines)
    assert any(':7: error: Argument "due_at"' in line for line in lines), lines
    assert not any(":8:" in line for line in lines), lines
