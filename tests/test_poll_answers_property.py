"""Any poll answer at all: each entry either progresses or carries a specific error, and the
queue keeps working (hypothesis, in-process through ``Outbox(transport=MockTransport)``).

One entry's render is answered with generated bodies — JSON of any shape, with non-finite
numbers, lone surrogates and control characters, render-like objects with odd fields, random
bytes — under generated status codes; another entry is answered like Craftkit. Time is fake,
so backoffs cost nothing.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FakeClock

from outbox import ExitCode, Outbox, Schedule, Settings, State
from outbox.schedule import Backoff

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
BASE_URL = "https://craftkit.test"
KEY = "ck_test_property"
POISON = "poison"

QUICK = Settings(
    retries=0,
    schedule=Schedule(download_retry=Backoff(0.5, 2.0), offline_grace=1.0).with_rng(
        random.Random(5)
    ),
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["\ud800", "\x1b[31mred\x1b[0m\r\n", "../../etc", "a?b=c#d", "é" * 40])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
render_like = st.fixed_dictionaries(
    {
        "id": st.just("r-poison") | json_values,
        "status": st.sampled_from(["queued", "rendering", "succeeded", "failed", "cancelled"])
        | json_values,
    },
    optional={
        "downloadUrl": st.none()
        | st.just("https://bucket.test/x.pdf")
        | st.just("file:///etc/passwd")
        | json_values,
        "errorMessage": json_values,
        "durationMs": json_values,
        "createdAt": json_values,
        "completedAt": json_values,
        "progress": json_values,
    },
)


def _encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    render_like.map(_encode),
    json_values.map(_encode),
    st.binary(max_size=300),
    st.just(b""),
)
answers = st.tuples(st.sampled_from([200, 200, 200, 201, 204, 302, 307, 404, 410, 500]), bodies)


def _render(render_id: str, status: str) -> dict[str, Any]:
    return {
        "id": render_id,
        "status": status,
        "downloadUrl": None,
        "errorMessage": None,
        "createdAt": "2026-06-05T10:00:00.000Z",
    }


def _craftkit(poison_answers: list[tuple[int, bytes]]) -> httpx.MockTransport:
    """Craftkit, except that the poison render's polls get ``poison_answers`` (the last one
    repeating)."""
    polls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        path = request.url.path
        if request.url.host != "craftkit.test":  # a public downloadUrl from a generated body
            return httpx.Response(200, content=PDF)
        if path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        if request.method == "POST":
            key = request.headers["Idempotency-Key"]
            return httpx.Response(202, json=_render(f"r-{key}", "queued"))
        if path == "/v1/renders/r-poison":
            status, body = poison_answers[min(polls, len(poison_answers) - 1)]
            polls += 1
            return httpx.Response(status, content=body)
        if path.startswith("/v1/renders/"):
            return httpx.Response(200, json=_render(path.rsplit("/", 1)[1], "succeeded"))
        if path.endswith("/download"):
            return httpx.Response(200, content=PDF)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    return httpx.MockTransport(handle)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never meets a new one by luck
    suppress_health_check=[HealthCheck.too_slow],
)
@given(poison_answers=st.lists(answers, min_size=1, max_size=4))
def test_any_poll_answer_is_progress_or_a_specific_error_and_the_queue_keeps_working(
    poison_answers: list[tuple[int, bytes]],
) -> None:
    with (
        tempfile.TemporaryDirectory() as folder,
        Outbox(
            Path(folder) / "j.db",
            api_key=KEY,
            base_url=BASE_URL,
            settings=QUICK,
            clock=FakeClock(),
            transport=_craftkit(poison_answers),
        ) as ob,
    ):
        good = ob.enqueue("invoice", {"n": 1}, key="good")
        poison = ob.enqueue("invoice", {"n": 2}, key=POISON)
        report = ob.flush(timeout=60)
        assert report.unexpected == [] and report.exit_code is not ExitCode.UNEXPECTED
        assert report.exit_code is not ExitCode.KEY_REFUSED
        assert ob.get(good.id).state is State.DONE
        entry = ob.get(poison.id)
        if entry.state in (State.SUBMITTED, State.DOWNLOADING) and entry.error is None:
            # Still rendering by its own account: a status Craftkit may send.
            assert entry.remote_status not in (None, "succeeded", "failed", "cancelled")
        elif entry.state in (State.SUBMITTED, State.DOWNLOADING):
            assert entry.error_code and len(entry.error or "") > 20, entry
        else:
            assert entry.state in (State.DONE, State.FAILED), entry
        shown = json.dumps([entry.error, entry.remote_status], ensure_ascii=False)
        shown.encode("utf-8")  # storable: no lone surrogate
        assert "\x1b" not in shown and "\r" not in shown  # printable: no terminal escapes
        # The queue keeps working afterwards.
        later = ob.enqueue("invoice", {"n": 3}, key="later")
        ob.flush(timeout=60)
        assert ob.get(later.id).state is State.DONE
