"""The client against hostile or broken answers: every one is a specific error, never a crash.

Size caps (JSON, error bodies, PDFs), odd numbers (``Retry-After``, ``durationMs``), render ids
that could travel up a URL, terminal escapes in server text, and HTTP-library messages that
could quote the API key. A stand-in transport plays the server.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from outbox import Settings
from outbox.client import (
    MAX_ERROR_BYTES,
    MAX_JSON_BYTES,
    CraftkitClient,
    Render,
    _retry_after,
    printable,
)
from outbox.clock import Clock
from outbox.engine import Engine
from outbox.errors import (
    AuthError,
    ForeignAnswer,
    Offline,
    OutcomeUnknown,
    PermanentError,
    ServerError,
    UnusableAnswer,
)
from outbox.models import RenderRequest, State
from outbox.store import Journal

KEY = "ck_test_secret_value_9f8e7d"
RENDER = {
    "id": "0197f0c2-7d5e-7b8a-9c4d-3e2f1a0b9c8d",
    "status": "queued",
    "downloadUrl": None,
    "errorMessage": None,
}
Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, **kwargs: object) -> CraftkitClient:
    return CraftkitClient(
        "https://api.craftkit.test",
        KEY,
        transport=httpx.MockTransport(handler),
        sleep=lambda _s: None,
        **kwargs,  # type: ignore[arg-type]
    )


def _streamed(
    chunks: Iterator[bytes], status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    """An answer whose body is produced as it is read, like one on the wire."""
    return httpx.Response(status, headers=headers, content=chunks)


def _endless(counter: list[int], chunk: bytes = b" " * 65536) -> Iterator[bytes]:
    while True:
        counter[0] += len(chunk)
        yield chunk


# -- size caps ---------------------------------------------------------------------------


def test_a_huge_json_answer_is_refused_after_reading_at_most_the_cap() -> None:
    read = [0]
    client = _client(lambda request: _streamed(_endless(read)))
    with pytest.raises(UnusableAnswer, match="more than 1,048,576 bytes") as raised:
        client.get_render(RENDER["id"])  # type: ignore[arg-type]
    assert raised.value.code == "answer_too_large"
    assert MAX_JSON_BYTES < read[0] <= MAX_JSON_BYTES + 2 * 65536


def test_an_announced_huge_answer_is_not_read_at_all() -> None:
    read = [0]
    client = _client(
        lambda request: _streamed(
            _endless(read), headers={"Content-Length": str(300 * 1024 * 1024)}
        )
    )
    with pytest.raises(UnusableAnswer, match="was not read"):
        client.get_render(RENDER["id"])  # type: ignore[arg-type]
    assert read[0] == 0


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, UnusableAnswer), (404, UnusableAnswer), (401, AuthError), (503, ServerError)],
)
def test_huge_error_bodies_are_cut_at_64_kib_and_the_status_still_decides(
    status: int, error: type[Exception]
) -> None:
    read = [0]
    client = _client(lambda request: _streamed(_endless(read), status=status), retries=0)
    with pytest.raises(error):
        client.get_render(RENDER["id"])  # type: ignore[arg-type]
    assert read[0] <= MAX_ERROR_BYTES + 2 * 65536


def test_a_compressed_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b" " * (50 * 1024 * 1024))
    assert len(bomb) < 100_000

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "identity"
        return _streamed(iter([bomb]), headers={"Content-Encoding": "gzip"})

    with pytest.raises(UnusableAnswer, match="more than 1,048,576 bytes"):
        _client(handler).get_render(RENDER["id"])  # type: ignore[arg-type]


def test_a_compressed_answer_within_the_cap_is_read() -> None:
    body = gzip.compress(json.dumps(RENDER).encode())
    client = _client(lambda r: _streamed(iter([body]), headers={"Content-Encoding": "gzip"}))
    assert client.get_render(RENDER["id"]).status == "queued"  # type: ignore[arg-type]


def test_pdfs_over_the_cap_are_refused_announced_or_not() -> None:
    pdf = b"%PDF-1.7\n" + b"x" * 5000 + b"\n%%EOF\n"
    render = Render(RENDER["id"], "succeeded", None, None)  # type: ignore[arg-type]
    announced = _client(lambda r: httpx.Response(200, content=pdf), max_pdf_bytes=1000)
    with (
        pytest.raises(UnusableAnswer, match="more than the 1,000 bytes allowed") as raised,
        announced.open_pdf(render),
    ):
        pass
    assert raised.value.code == "pdf_too_large"
    read = [0]
    unannounced = _client(lambda r: _streamed(_endless(read)), max_pdf_bytes=1_000_000)
    with (
        pytest.raises(UnusableAnswer, match="the download was stopped"),
        unannounced.open_pdf(render) as (length, chunks),
    ):
        assert length is None
        for _ in chunks:
            pass
    assert read[0] <= 1_000_000 + 65536
    fits = _client(lambda r: httpx.Response(200, content=pdf), max_pdf_bytes=len(pdf))
    with fits.open_pdf(render) as (length, chunks):
        assert length == len(pdf) and b"".join(chunks) == pdf


# -- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("nan", None),
        ("inf", None),
        ("-inf", None),
        ("-1", None),
        ("1e12", 600.0),
        ("1e400", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),
    ],
)
def test_odd_retry_after_values_are_clamped_or_ignored(value: str, seconds: float | None) -> None:
    assert _retry_after(value, 600.0) == seconds


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "-5", "1e20", "true", '"12"'])
def test_odd_duration_ms_is_ignored_and_the_render_still_parses(value: str) -> None:
    body = json.dumps(RENDER)[:-1] + f', "durationMs": {value}}}'
    client = _client(lambda r: httpx.Response(200, content=body.encode()))
    render = client.get_render(RENDER["id"])  # type: ignore[arg-type]
    assert render.status == "queued" and render.duration_ms is None
    good = json.dumps({**RENDER, "durationMs": 3120.7}).encode()
    assert _client(lambda r: httpx.Response(200, content=good)).get_render("r").duration_ms == 3120


def test_a_429_with_retry_after_nan_is_a_plain_rate_limit() -> None:
    client = _client(
        lambda r: httpx.Response(429, headers={"Retry-After": "nan"}, json={"error": "x"})
    )
    with pytest.raises(Exception) as raised:
        client.get_render("r-1")
    assert type(raised.value).__name__ == "RateLimited"
    assert raised.value.retry_after is None  # type: ignore[attr-defined]


# -- render ids --------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["../../x", "a?b=c#d", "a/b", "%2e%2e", "", "x" * 200, "é"])
def test_hostile_render_ids_in_answers_are_that_requests_error(hostile: str) -> None:
    client = _client(lambda r: httpx.Response(202, json={**RENDER, "id": hostile}))
    with pytest.raises(UnusableAnswer, match="render id outbox cannot use") as raised:
        client.submit("inspection-report", {}, key="k-1")
    assert raised.value.code == "bad_render_id"


def test_hostile_render_ids_never_reach_a_url() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=RENDER)

    client = _client(handler)
    for hostile in ("../../v1/templates", "a?b=c#d", "a b"):
        with pytest.raises(UnusableAnswer, match="nothing was requested"):
            client.get_render(hostile)
        with (
            pytest.raises(UnusableAnswer),
            client.open_pdf(Render(hostile, "succeeded", None, None)),
        ):
            pass
    assert seen == []
    client.get_template("a/b?c")
    assert seen[0].url.raw_path == b"/v1/templates/a%2Fb%3Fc"


def test_unusable_download_urls_are_dropped_for_the_private_stream() -> None:
    for url in ("file:///etc/passwd", "javascript:alert(1)", "https://x/a b", "https://x/\x1b[2J"):
        client = _client(
            lambda r, url=url: httpx.Response(200, json={**RENDER, "downloadUrl": url})  # type: ignore[misc]
        )
        assert client.get_render("r-1").download_url is None


# -- text from the server ----------------------------------------------------------------


def test_server_text_loses_terminal_escapes_and_control_characters() -> None:
    hostile = "\x1b[2J\x1b[31mrender\x1b[0m failed\r\nfake: done\x07 \x1b]0;title\x07ok\u202e\x9b1m"
    assert printable(hostile) == "render failed fake: done  ok"
    body = {**RENDER, "status": "failed", "errorMessage": hostile}
    render = _client(lambda r: httpx.Response(200, json=body)).get_render("r-1")
    assert render.error_message == "render failed fake: done  ok"
    envelope = {"error": {"code": "bad\x1b[1m", "message": "no\rpe\x1b[31m", "issues": {}}}
    with pytest.raises(PermanentError) as raised:
        _client(lambda r: httpx.Response(400, json=envelope)).submit("t", {}, key="k")
    assert raised.value.message == "400 bad: no pe" and raised.value.code == "bad"


def test_lone_surrogates_in_answers_become_replacement_characters() -> None:
    text = '{"id": "r-1", "status": "failed", "errorMessage": "a\\ud800b \\ud83d\\ude00 \\\\ud800"}'
    render = _client(lambda r: httpx.Response(200, content=text.encode())).get_render("r-1")
    assert render.error_message == "a\ufffdb \U0001f600 \\ud800"
    render.error_message.encode("utf-8")  # storable


def test_deeply_nested_answers_are_not_a_crash() -> None:
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    with pytest.raises(ForeignAnswer, match="not a render"):
        _client(lambda r: httpx.Response(200, content=deep)).get_render("r-1")


# -- the API key -------------------------------------------------------------------------


def _echoing(error: type[httpx.HTTPError]) -> Handler:
    """A transport failure whose message quotes the request's headers, as some libraries do."""

    def handler(request: httpx.Request) -> httpx.Response:
        header = request.headers["Authorization"]
        raise error(f"Illegal header value b'{header}\\r' in {dict(request.headers)}")

    return handler


@pytest.mark.parametrize(
    "error", [httpx.LocalProtocolError, httpx.ReadError, httpx.ConnectError, httpx.ReadTimeout]
)
def test_http_library_messages_never_carry_the_key(error: type[httpx.HTTPError]) -> None:
    client = _client(_echoing(error))
    with pytest.raises((OutcomeUnknown, Offline)) as raised:
        client.get_render("r-1")
    assert KEY not in str(raised.value) and "Bearer ck_" not in str(raised.value)
    assert raised.value.__cause__ is None  # the library's exception is not chained on


def test_the_key_reaches_neither_the_journal_nor_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    journal = Journal(tmp_path / "j.db")
    journal.enqueue(RenderRequest("inspection-report", {"a": 1}, key="leak-1"))
    engine = Engine(
        journal,
        api_key=KEY,
        base_url="https://api.craftkit.test",
        downloads=tmp_path / "pdfs",
        settings=Settings(retries=0),
        clock=Clock(),
        transport=httpx.MockTransport(_echoing(httpx.ReadError)),
    )
    try:
        report = engine.flush(timeout=2)
    finally:
        engine.close()
    entry = journal.list()[0]
    assert entry.state is State.PENDING and entry.attempts >= 1
    assert entry.error is not None and "[redacted]" in entry.error
    tables = [
        row[0]
        for row in journal._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    stored = "\n".join(
        str(value)
        for table in tables
        if not table.startswith("sqlite_")
        for row in journal._conn.execute(f'SELECT * FROM "{table}"')
        for value in row
    )
    journal.close()
    everything = stored + caplog.text + "\n".join(report.problems)
    assert KEY not in everything
    for path in tmp_path.glob("j.db*"):  # the journal and its write-ahead log
        assert KEY.encode() not in path.read_bytes()


def test_template_slugs_no_entry_could_name_are_not_cached_nor_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from outbox.template_sync import sync_templates

    def template(slug: str) -> dict[str, object]:
        return {"slug": slug, "name": "x", "published": False, "currentVersionNumber": None}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        if path == "/v1/templates":
            slugs = ["invoice", "\x1b[2Jevil", "../x", 7]
            return httpx.Response(200, json={"templates": [{"slug": s} for s in slugs]})
        if path == "/v1/templates/invoice":
            return httpx.Response(200, json=template("invoice"))
        if path == "/v1/templates/swapped":
            return httpx.Response(200, json=template("\x1b[31mother"))
        raise AssertionError(f"no request for {path} was expected")

    caplog.set_level(logging.WARNING)
    journal = Journal(tmp_path / "j.db")
    try:
        cached = sync_templates(journal, _client(handler))
        assert [t.slug for t in cached] == ["invoice"]
        assert "\x1b" not in caplog.text and "usable slug (evil)" in caplog.text
        from outbox.template_sync import fetch_template

        with pytest.raises(PermanentError, match="another template's") as raised:
            fetch_template(_client(handler), "swapped", "2026-01-01T00:00:00Z")
        assert "\x1b" not in raised.value.message
    finally:
        journal.close()


# -- deadlines ---------------------------------------------------------------------------


def test_a_request_cut_at_its_deadline_is_not_repeated_inside_the_call() -> None:
    now = [0.0]
    sent: list[httpx.Request] = []

    def slow(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        now[0] += 61.0  # the answer took longer than request_timeout
        raise httpx.ReadTimeout("the request ran out of time")

    client = _client(slow, monotonic=lambda: now[0], request_timeout=60.0, retries=2)
    with pytest.raises(OutcomeUnknown, match="the request ran out of time") as raised:
        client.get_render(RENDER["id"])  # type: ignore[arg-type]
    assert raised.value.code == "out_of_time" and len(sent) == 1

    def lost(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise httpx.ReadTimeout("timed out")  # a lost answer, well within the deadline

    sent.clear()
    client = _client(lost, monotonic=lambda: now[0], request_timeout=60.0, retries=2)
    with pytest.raises(OutcomeUnknown) as raised:
        client.get_render(RENDER["id"])  # type: ignore[arg-type]
    assert raised.value.code is None and len(sent) == 3  # quick retries as before
