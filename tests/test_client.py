"""Unit tests of the Craftkit client's answer classification, with a stand-in transport."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from outbox.client import CraftkitClient, NotReady, Render
from outbox.errors import (
    AuthError,
    ForeignAnswer,
    NotFound,
    Offline,
    OutcomeUnknown,
    PermanentError,
    PublicCopyBroken,
    RateLimited,
    RemoteError,
    ServerError,
)

KEY = "ck_test_secret_value_9f8e7d"
RENDER = {
    "id": "r-1",
    "status": "queued",
    "pollUrl": "x",
    "downloadUrl": None,
    "errorMessage": None,
    "createdAt": "2026-06-05T10:00:00.000Z",
}


def _client(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> CraftkitClient:
    return CraftkitClient(
        "https://api.craftkit.test",
        KEY,
        transport=httpx.MockTransport(handler),
        sleep=lambda _s: None,
        **kwargs,
    )


def _envelope(code: str, message: str = "msg", **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **extra}}


def test_submit_sends_key_header_and_options_and_parses_202_and_200() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202 if len(seen) == 1 else 200, json=RENDER)

    client = _client(handler)
    render, replayed = client.submit("invoice", {"a": 1}, key="inv-1", filename="a.pdf", version=3)
    assert (render.id, render.status, replayed) == ("r-1", "queued", False)
    assert client.submit("invoice", {"a": 1}, key="inv-1")[1] is True
    request = seen[0]
    assert request.headers["Idempotency-Key"] == "inv-1"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.url.path == "/v1/templates/invoice/render"
    assert request.read() == b'{"data":{"a":1},"options":{"versionNumber":3,"filename":"a.pdf"}}'


@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        (httpx.Response(400, json=_envelope("invalid_json")), PermanentError, "invalid_json"),
        (httpx.Response(400, json=_envelope("invalid_request")), PermanentError, "invalid_request"),
        (httpx.Response(422, json=_envelope("invalid_request")), PermanentError, "invalid_request"),
        (
            httpx.Response(404, json=_envelope("template_not_found")),
            PermanentError,
            "template_not_found",
        ),
        (
            httpx.Response(404, json=_envelope("version_not_found")),
            PermanentError,
            "version_not_found",
        ),
        (
            httpx.Response(409, json=_envelope("no_published_version")),
            PermanentError,
            "no_published_version",
        ),
        (httpx.Response(404, json=_envelope("not_found")), NotFound, "not_found"),
        (httpx.Response(401, json=_envelope("unauthorized")), AuthError, "unauthorized"),
        (
            httpx.Response(401, json={"error": "invalid_credentials"}),
            AuthError,
            "invalid_credentials",
        ),
        (httpx.Response(403, json=_envelope("forbidden")), AuthError, "forbidden"),
        (httpx.Response(500, json=_envelope("internal")), ServerError, "internal"),
        (
            httpx.Response(503, json=_envelope("queue_unavailable")),
            ServerError,
            "queue_unavailable",
        ),
        (httpx.Response(502, text="<html>Bad gateway</html>"), ServerError, None),
        (httpx.Response(504), ServerError, None),
        (httpx.Response(429, json=_envelope("rate_limited")), RateLimited, "rate_limited"),
        (httpx.Response(400, json=_envelope("rate_limited")), RateLimited, "rate_limited"),
        (
            httpx.Response(
                200, text="<html>Hotel Wi-Fi login</html>", headers={"Content-Type": "text/html"}
            ),
            ForeignAnswer,
            None,
        ),
        (httpx.Response(200, json={"ok": True}), ForeignAnswer, None),
        (httpx.Response(302, headers={"Location": "http://login.hotel"}), ForeignAnswer, None),
        (httpx.Response(404, text="<html>Not found</html>"), ForeignAnswer, None),
    ],
)
def test_answers_are_classified_as_the_contract_says(
    response: httpx.Response, error: type[RemoteError], code: str | None
) -> None:
    client = _client(lambda _request: response)
    with pytest.raises(error) as raised:
        client.submit("invoice", {}, key="k")
    assert type(raised.value) is error
    if code is not None:
        assert raised.value.code == code
    assert KEY not in str(raised.value)


def test_field_errors_are_kept() -> None:
    body = _envelope(
        "invalid_input_data",
        "bad",
        issues={"formErrors": [], "fieldErrors": {"customer.name": ["Required"]}},
    )
    client = _client(lambda _r: httpx.Response(400, json=body))
    with pytest.raises(PermanentError) as raised:
        client.submit("invoice", {}, key="k")
    assert raised.value.field_errors == {"customer.name": ["Required"]}


def test_retry_after_is_honoured_in_seconds_and_dates() -> None:
    client = _client(lambda _r: httpx.Response(429, headers={"Retry-After": "7"}))
    with pytest.raises(RateLimited) as raised:
        client.get_render("r-1")
    assert raised.value.retry_after == 7
    client = _client(lambda _r: httpx.Response(429, headers={"Retry-After": "99999"}))
    with pytest.raises(RateLimited) as raised:
        client.get_render("r-1")
    assert raised.value.retry_after == 600


def test_transport_failures_offline_versus_outcome_unknown() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(Offline, match="Connection refused"):
        _client(refuse).submit("invoice", {}, key="k")
    for handler in (reset, slow):
        with pytest.raises(OutcomeUnknown):
            _client(handler).submit("invoice", {}, key="k")


def test_lost_answers_are_retried_in_the_call_with_the_same_key() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) < 3:
            raise httpx.ReadError("connection reset by peer", request=request)
        return httpx.Response(200, json=RENDER)

    render, replayed = _client(handler).submit("invoice", {}, key="same")
    assert keys == ["same", "same", "same"] and replayed and render.id == "r-1"


def test_requests_leave_no_reference_cycles() -> None:
    """A busy run makes about 240 requests a second. Each once left garbage only the cyclic
    collector frees: a class made per request (the retry's stop condition), a retrying
    controller and its per-thread state per request, and for every failed one the finished
    frames of its attempts, which hold the exception (tenacity's record of the outcome) and
    the request's httpx objects. Held until a full collection, they made memory rise and fall
    by megabytes and fragment."""
    answers = iter(
        [(200, RENDER)] * 20
        + [(500, _envelope("internal"))] * 30  # retried, then raised
        + [(404, _envelope("not_found"))] * 10
    )

    def answer(_request: httpx.Request) -> httpx.Response:
        status, body = next(answers)
        return httpx.Response(status, json=body)

    client = _client(answer)
    client.get_render("r-1")  # anything made once, on first use
    gc.collect()
    gc.disable()
    try:
        classes = sum(isinstance(o, type) for o in gc.get_objects())
        failed = 0
        for _ in range(19 + 10 + 10):  # 10 calls of 3 attempts each answered 500
            try:
                client.get_render("r-1")
            except RemoteError:
                failed += 1
        assert failed == 20
        assert sum(isinstance(o, type) for o in gc.get_objects()) == classes
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_downloads_leave_no_reference_cycles() -> None:
    """The same for PDFs, by the public copy and by the private stream."""
    pdf = b"%PDF-1.4 ... %%EOF"
    client = _client(lambda _r: httpx.Response(200, content=pdf))
    public = Render("r-1", "succeeded", "https://cdn.craftkit.test/r-1.pdf", None)
    renders = [public, replace(public, download_url=None)]
    with client.open_pdf(public) as (_length, chunks):
        b"".join(chunks)  # anything made once, on first use
    gc.collect()
    gc.disable()
    try:
        for render in renders * 10:
            with client.open_pdf(render) as (_length, chunks):
                assert b"".join(chunks) == pdf
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_health_requires_the_real_answer() -> None:
    _client(lambda _r: httpx.Response(200, json={"status": "ok"})).health()
    with pytest.raises(Offline, match="captive portal"):
        _client(lambda _r: httpx.Response(200, text="<html>login</html>")).health()
    with pytest.raises(Offline):
        _client(lambda _r: httpx.Response(200, json={"status": "degraded"})).health()


def test_public_download_never_carries_the_key_and_the_private_stream_does() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"%PDF-1.4 ... %%EOF", headers={"Content-Length": "18"})

    client = _client(handler)
    public = Render("r-1", "succeeded", "https://cdn.craftkit.test/r-1.pdf", None)
    with client.open_pdf(public) as (length, chunks):
        assert length == 18 and b"".join(chunks).startswith(b"%PDF-")
    with client.open_pdf(replace(public, download_url=None)) as (length, chunks):
        assert b"".join(chunks).startswith(b"%PDF-")
    assert seen[0].url.host == "cdn.craftkit.test" and "Authorization" not in seen[0].headers
    assert seen[1].url.path == "/v1/embed/renders/r-1/download"
    assert seen[1].headers["Authorization"] == f"Bearer {KEY}"


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


@pytest.mark.parametrize(
    ("url", "answer", "words"),
    [
        ("https://cdn.craftkit.test/r-1.pdf", _refused, "cdn.craftkit.test: [Errno 111]"),
        (
            "https://cdn.craftkit.test/r-1.pdf",
            lambda _r: httpx.Response(302, headers={"Location": "https://cdn.craftkit.test/x"}),
            "cdn.craftkit.test answered 302 (a redirect to https://cdn.craftkit.test/x)",
        ),
        (
            "https://cdn.craftkit.test/r-1.pdf",
            lambda _r: httpx.Response(401, json={"error": {"code": "unauthorized"}}),
            "cdn.craftkit.test answered 401",
        ),
        (
            "https://cdn.craftkit.test/r-1.pdf",
            lambda _r: httpx.Response(503),
            "cdn.craftkit.test answered 503",
        ),
        ("file:///etc/passwd", _refused, "'file:///etc/passwd' is not a plain http(s) URL"),
    ],
)
def test_every_failure_of_the_public_copy_is_the_buckets_never_the_apis(
    url: str, answer: Callable[[httpx.Request], httpx.Response], words: str
) -> None:
    """A refused or redirecting bucket is not "offline"; its 401 is not "the key was refused"."""
    client = _client(answer)
    with (
        pytest.raises(PublicCopyBroken) as raised,
        client.open_pdf(Render("r-1", "succeeded", url, None)),
    ):
        pass
    assert words in raised.value.message
    assert "API key" not in raised.value.message


def test_private_stream_404_means_not_ready() -> None:
    client = _client(lambda _r: httpx.Response(404, json={"error": {"message": "Not found"}}))
    with pytest.raises(NotReady), client.open_pdf(Render("r-1", "succeeded", None, None)):
        pass
