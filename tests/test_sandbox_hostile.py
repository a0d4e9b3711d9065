"""Hostile modes at the HTTP level: slow drips, huge bodies, broken public URLs, odd values,
poisoned poll answers, hostile ids and redirects, for every render or for one key only."""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from sandbox_support import client, error_code, pdf_text, render, wait_status

from outbox.sandbox import Faults, Sandbox
from outbox.sandbox.faults import FaultInjector, parse_fault_value


def strict_json(raw: bytes) -> Any:
    """Parse JSON the way a strict client does: NaN and Infinity are refused."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def finished(http: httpx.Client, key: str) -> dict[str, Any]:
    """Make a render with ``key`` and wait until it has succeeded (read leniently)."""
    created = render(http, key=key)
    assert created.status_code == 202, created.text
    return wait_status(http, created.json()["id"], "succeeded")


def timed_download(url: str, **kwargs: Any) -> tuple[bytes, float, httpx.Headers]:
    """Fetch ``url`` in a stream; return the body, the seconds between the first and the
    last byte, and the headers."""
    pieces: list[bytes] = []
    first = last = 0.0
    with httpx.stream("GET", url, timeout=30, **kwargs) as response:
        for piece in response.iter_raw():
            now = time.monotonic()
            if not pieces:
                first = now
            last = now
            pieces.append(piece)
        return b"".join(pieces), last - first, response.headers


@pytest.fixture
def timed_sandbox() -> Iterator[Sandbox]:
    """A sandbox whose renders take an hour."""
    with Sandbox(render_seconds=3600, seed=3) as sandbox:
        yield sandbox


# --- slow drips -----------------------------------------------------------------------------


def test_slow_body_drips_poll_answers_of_one_key_only(sb: Sandbox) -> None:
    with client(sb) as http:
        slow_id = finished(http, "slow")["id"]
        healthy_id = finished(http, "healthy")["id"]
        sb.set_faults(keys={"slow": {"slow_body": 400}})
        headers = {"Authorization": f"Bearer {sb.api_key}"}
        body, spread, _ = timed_download(f"{sb.base_url}/v1/renders/{slow_id}", headers=headers)
        assert json.loads(body)["status"] == "succeeded"
        # 20 writes a second of 20 bytes: the last byte leaves (len - 20) / 400 s after the first.
        assert spread >= (len(body) - 20) / 400 * 0.9
        _, healthy_spread, _ = timed_download(
            f"{sb.base_url}/v1/renders/{healthy_id}", headers=headers
        )
        assert healthy_spread < spread / 4


def test_slow_body_applies_to_every_answer_but_control_ones(sb: Sandbox) -> None:
    sb.set_faults(slow_body=200)
    body, spread, _ = timed_download(f"{sb.base_url}/health")
    assert json.loads(body) == {"status": "ok"}
    assert spread >= (len(body) - 10) / 200 * 0.9
    for path in ("/_sandbox/stats", "/_sandbox/faults"):
        with httpx.stream("GET", f"{sb.base_url}{path}") as response:
            pieces = list(response.iter_raw())
        assert len(pieces) == 1  # sent in one write, not dripped 10 bytes at a time
        assert len(pieces[0]) > 100


def test_slow_pdf_drips_the_public_url_and_the_private_stream_not_the_polls(sb: Sandbox) -> None:
    with client(sb) as http:
        done = finished(http, "pdf")
        sb.set_faults(slow_pdf=4000)
        started = time.monotonic()
        assert http.get(f"/v1/renders/{done['id']}").status_code == 200
        poll_time = time.monotonic() - started
        body, spread, headers = timed_download(done["downloadUrl"])
        assert body.startswith(b"%PDF-") and len(body) == int(headers["content-length"])
        assert spread >= (len(body) - 200) / 4000 * 0.9
        assert poll_time < spread
        private, private_spread, _ = timed_download(
            f"{sb.base_url}/v1/embed/renders/{done['id']}/download",
            headers={"Authorization": f"Bearer {sb.api_key}"},
        )
        assert private == body and private_spread >= (len(body) - 200) / 4000 * 0.9
        assert "Render: " + done["id"] in pdf_text(body)


def test_a_dripping_answer_ends_when_the_sandbox_stops() -> None:
    sandbox = Sandbox(render_seconds=0, faults=Faults(slow_body=1)).start()
    first_byte = threading.Event()
    outcome: list[object] = []

    def fetch() -> None:
        try:
            with httpx.stream("GET", f"{sandbox.base_url}/health", timeout=60) as response:
                for _ in response.iter_raw():
                    first_byte.set()
            outcome.append(response)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    try:
        caller = threading.Thread(target=fetch)
        caller.start()
        assert first_byte.wait(30)
        sandbox.stop()
        caller.join(30)
        assert not caller.is_alive()
        assert isinstance(outcome[0], httpx.TransportError)
    finally:
        sandbox.close()


# --- huge bodies ----------------------------------------------------------------------------


def test_huge_poll_answer_is_valid_json_of_the_asked_size(sb: Sandbox) -> None:
    with client(sb) as http:
        done = finished(http, "big")
        other = finished(http, "small")
        sb.set_faults(keys={"big": {"huge_poll": "5MB"}})
        response = http.get(f"/v1/renders/{done['id']}")
        assert int(response.headers["content-length"]) == 5_000_000
        assert len(response.content) == 5_000_000
        body = strict_json(response.content)
        assert body["status"] == "succeeded" and body["id"] == done["id"]
        assert len(body["padding"]) > 4_900_000
        small = http.get(f"/v1/renders/{other['id']}")
        assert len(small.content) < 1000 and "padding" not in small.json()


def test_huge_error_bodies_keep_the_envelope(sb: Sandbox) -> None:
    sb.set_faults(huge_errors=2_000_000)
    with client(sb) as http:
        missing = http.get("/v1/renders/nope")
        assert missing.status_code == 404 and len(missing.content) == 2_000_000
        assert error_code(missing) == "not_found"
        unauthorised = httpx.get(f"{sb.base_url}/v1/templates")
        assert unauthorised.status_code == 401 and len(unauthorised.content) == 2_000_000
        assert http.get("/v1/templates").status_code == 200  # successes are left alone


def test_huge_error_bodies_for_one_key(sb: Sandbox) -> None:
    sb.set_faults(keys={"loud": {"huge_errors": "1MB", "error_503_before": 1.0}})
    with client(sb) as http:
        loud = render(http, key="loud")
        assert loud.status_code == 503 and len(loud.content) == 1_000_000
        assert error_code(loud) == "queue_unavailable"
        quiet = http.get("/v1/renders/nope")
        assert quiet.status_code == 404 and len(quiet.content) < 200


def test_huge_pdf_without_content_length(sb: Sandbox) -> None:
    with client(sb) as http:
        big = finished(http, "big-pdf")
        small = finished(http, "small-pdf")
        sb.set_faults(keys={"big-pdf": {"huge_pdf": "3MB", "pdf_no_length": True}})
        body, _, headers = timed_download(big["downloadUrl"])
        assert "content-length" not in headers
        assert headers["transfer-encoding"] == "chunked"
        assert abs(len(body) - 3_000_000) <= 16 and body.startswith(b"%PDF-")
        assert body.rstrip().endswith(b"%%EOF")
        assert "Render: " + big["id"] in pdf_text(body)
        plain = http.get(small["downloadUrl"])
        assert int(plain.headers["content-length"]) == len(plain.content) < 10_000


def test_cut_download_without_content_length_never_ends_cleanly(sb: Sandbox) -> None:
    with client(sb) as http:
        done = finished(http, "cut")
        sb.set_faults(pdf_no_length=True, truncate_downloads=1.0)
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(done["downloadUrl"])


# --- a broken public downloadUrl ------------------------------------------------------------


def private_stream_works(sb: Sandbox, http: httpx.Client, render_id: str) -> None:
    private = http.get(f"/v1/embed/renders/{render_id}/download")
    assert private.status_code == 200 and private.content.startswith(b"%PDF-")


def test_download_url_refused(sb: Sandbox) -> None:
    with client(sb) as http:
        sb.set_faults(keys={"refused": {"download_url": "refused"}})
        done = finished(http, "refused")
        url = urlsplit(done["downloadUrl"])
        assert url.scheme == "http" and url.hostname == "127.0.0.1" and url.port != sb.port
        with pytest.raises(httpx.ConnectError):
            httpx.get(done["downloadUrl"])
        private_stream_works(sb, http, done["id"])
        assert urlsplit(finished(http, "fine")["downloadUrl"]).port == sb.port


def test_download_url_redirects_to_itself(sb: Sandbox) -> None:
    with client(sb) as http:
        sb.set_faults(download_url="redirect")
        done = finished(http, "loop")
        first = httpx.get(done["downloadUrl"])
        assert first.status_code == 302 and first.headers["location"] == done["downloadUrl"]
        with pytest.raises(httpx.TooManyRedirects):
            httpx.get(done["downloadUrl"], follow_redirects=True)
        private_stream_works(sb, http, done["id"])


def test_download_url_with_a_file_scheme(sb: Sandbox) -> None:
    with client(sb) as http:
        sb.set_faults(download_url="file")
        done = finished(http, "file")
        assert done["downloadUrl"] == "file:///etc/passwd"
        with pytest.raises(httpx.UnsupportedProtocol):
            httpx.get(done["downloadUrl"])
        private_stream_works(sb, http, done["id"])


@pytest.mark.parametrize(
    ("mode", "status"), [("unauthorized", 401), ("wrong_body", 200), ("not_found", 404)]
)
def test_download_url_answers_badly(sb: Sandbox, mode: str, status: int) -> None:
    with client(sb) as http:
        done = finished(http, mode)
        sb.set_faults(keys={mode: {"download_url": mode}})
        public = httpx.get(done["downloadUrl"])
        assert public.status_code == status
        assert not public.content.startswith(b"%PDF-")
        if mode == "unauthorized":
            assert error_code(public) == "unauthorized"
        if mode == "wrong_body":
            assert public.headers["content-type"] == "application/pdf"
        private_stream_works(sb, http, done["id"])
        assert httpx.get(finished(http, "other-" + mode)["downloadUrl"]).status_code == 200
    assert sb.stats()["faults_injected"]["download_url"] == 1


# --- odd values -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e12", "99999999999999999999"])
def test_odd_retry_after_on_429(sb: Sandbox, value: str) -> None:
    sb.set_faults(rate_limit=1, retry_after=value)
    with client(sb) as http:
        answers = [http.get("/v1/templates") for _ in range(3)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(a.headers["retry-after"] == value for a in limited)


def test_retry_after_on_429_and_503_before_creating_for_one_key(sb: Sandbox) -> None:
    sb.set_faults(
        keys={
            "limited": {"error_429_before": 1.0},
            "odd": {"error_429_before": 1.0, "retry_after": "nan"},
            "down": {"error_503_before": 1.0, "retry_after": "-1"},
        }
    )
    with client(sb) as http:
        limited = render(http, key="limited")
        assert limited.status_code == 429 and error_code(limited) == "rate_limited"
        assert limited.headers["retry-after"] == "1"
        assert render(http, key="odd").headers["retry-after"] == "nan"
        down = render(http, key="down")
        assert down.status_code == 503 and down.headers["retry-after"] == "-1"
        assert render(http, key="healthy").status_code == 202
    stats = sb.stats()
    assert stats["renders_per_key"] == {"healthy": 1}
    assert stats["faults_injected"]["error_429_before"] == 2


def test_503_has_no_retry_after_unless_asked(sb: Sandbox) -> None:
    sb.set_faults(error_503_before=1.0)
    with client(sb) as http:
        assert "retry-after" not in render(http).headers


@pytest.mark.parametrize(
    ("literal", "expected"),
    [("NaN", math.nan), ("Infinity", math.inf), ("-1", -1), ("1e308", 1e308)],
)
def test_odd_duration_ms(sb: Sandbox, literal: str, expected: float) -> None:
    sb.set_faults(keys={"odd": {"duration_ms": literal}})
    with client(sb) as http:
        created = render(http, key="odd").json()
        assert created["status"] == "queued"
        done = wait_status(http, created["id"], "succeeded")
        raw = http.get(f"/v1/renders/{created['id']}").content
        assert raw.endswith(b'"durationMs":' + literal.encode() + b"}")
        value = done["durationMs"]
        assert (math.isnan(value) and math.isnan(expected)) or value == expected
        healthy = finished(http, "healthy")
        assert isinstance(healthy["durationMs"], int) and healthy["durationMs"] >= 0


def test_odd_duration_ms_waits_for_the_render_to_finish(timed_sandbox: Sandbox) -> None:
    timed_sandbox.set_faults(duration_ms="NaN")
    with client(timed_sandbox) as http:
        created = render(http).json()
        polled = strict_json(http.get(f"/v1/renders/{created['id']}").content)
        assert polled["durationMs"] is None and polled["status"] == "queued"


# --- poisoned poll answers ------------------------------------------------------------------


def test_poll_answer_garbage_json_for_one_key(sb: Sandbox) -> None:
    with client(sb) as http:
        poisoned = finished(http, "poison")
        healthy = finished(http, "healthy")
        sb.set_faults(keys={"poison": {"poll_answer": "garbage_json"}})
        answer = http.get(f"/v1/renders/{poisoned['id']}")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/json")
        with pytest.raises(ValueError):
            json.loads(answer.content)
        assert http.get(f"/v1/renders/{healthy['id']}").json() == healthy


def test_poll_answer_non_finite(sb: Sandbox) -> None:
    with client(sb) as http:
        created = render(http, key="nf").json()
        sb.set_faults(keys={"nf": {"poll_answer": "non_finite"}})
        raw = http.get(f"/v1/renders/{created['id']}").content
        with pytest.raises(ValueError):
            strict_json(raw)
        lenient = json.loads(raw)
        assert math.isnan(lenient["durationMs"]) and lenient["progress"] == math.inf


def test_poll_answer_unknown_status_for_ever(sb: Sandbox) -> None:
    with client(sb) as http:
        done = finished(http, "odd-status")
        sb.set_faults(keys={"odd-status": {"poll_answer": "unknown_status"}})
        for _ in range(3):
            body = http.get(f"/v1/renders/{done['id']}").json()
            assert body["status"] == "processing" and body["downloadUrl"] is None
        assert http.get(f"/v1/embed/renders/{done['id']}/download").status_code == 200


@pytest.mark.parametrize(("mode", "raw"), [("wrong_shape", b"["), ("empty", b"")])
def test_poll_answer_wrong_shape_and_empty(sb: Sandbox, mode: str, raw: bytes) -> None:
    with client(sb) as http:
        done = finished(http, mode)
        sb.set_faults(poll_answer=mode)
        answer = http.get(f"/v1/renders/{done['id']}")
        assert answer.status_code == 200 and answer.content[:1] == raw
        if mode == "wrong_shape":
            assert answer.json()[0]["id"] == done["id"]


# --- hostile render ids ---------------------------------------------------------------------


def raw_get(sb: Sandbox, path: str) -> int:
    """GET a path exactly as written (no client-side normalisation); return the status."""
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {sb.api_key}"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("shown", ["../../x", "a?b=c#d", "%2e%2e", "x/../../y"])
def test_hostile_render_id_for_one_key(sb: Sandbox, shown: str) -> None:
    sb.set_faults(keys={"hostile": {"render_id": shown}})
    with client(sb) as http:
        created = render(http, key="hostile")
        assert created.status_code == 202 and created.json()["id"] == shown
        assert created.json()["pollUrl"] == f"{sb.base_url}/v1/renders/{shown}"
        escaped = quote(shown, safe="")
        done = wait_status(http, escaped, "succeeded")
        assert done["id"] == shown
        assert http.get(f"/v1/embed/renders/{escaped}/download").status_code == 200
        assert render(http, key="hostile").json()["id"] == shown  # the replay too
        normal = render(http, key="normal").json()["id"]
        assert len(normal) == 36 and normal != shown
    assert raw_get(sb, f"/v1/renders/{shown}") == 404  # pasted into the URL unescaped


def test_hostile_render_id_pattern_for_every_render(sb: Sandbox) -> None:
    sb.set_faults(render_id="../../{id}")
    with client(sb) as http:
        first = render(http, key="one").json()["id"]
        second = render(http, key="two").json()["id"]
        assert first.startswith("../../") and second.startswith("../../") and first != second
        done = wait_status(http, quote(first, safe=""), "succeeded")
        assert done["id"] == first
        real = first.removeprefix("../../")
        assert http.get(f"/v1/renders/{real}").json()["id"] == first  # the real id works too
        assert http.get(f"/v1/renders/{quote('../../nope', safe='')}").status_code == 404
    assert raw_get(sb, f"/v1/renders/{first}") == 404


def test_a_render_id_for_every_render_must_keep_ids_unique(sb: Sandbox) -> None:
    with pytest.raises(ValueError, match=r"\{id\}"):
        sb.set_faults(render_id="../../x")
    assert sb.faults.render_id is None


# --- redirects ------------------------------------------------------------------------------


def test_redirect_on_the_post_creates_nothing(sb: Sandbox) -> None:
    sb.set_faults(keys={"moved": {"redirect_post": 307}})
    with client(sb) as http:
        moved = render(http, key="moved")
        assert moved.status_code == 307
        assert moved.headers["location"] == f"{sb.base_url}/v1/templates/inspection-report/render"
        with client(sb, follow_redirects=True) as following, pytest.raises(httpx.TooManyRedirects):
            render(following, key="moved")
        assert render(http, key="fine").status_code == 202
    stats = sb.stats()
    assert stats["renders_per_key"] == {"fine": 1}
    assert stats["requests"]["POST /v1/templates/:slug/render"]["307"] >= 21


@pytest.mark.parametrize("status", [301, 302, 303, 308])
def test_redirect_statuses_for_every_post(sb: Sandbox, status: int) -> None:
    sb.set_faults(redirect_post=status)
    with client(sb) as http:
        assert render(http).status_code == status
        assert http.get("/v1/templates").status_code == 200  # only POSTs move


# --- switching -----------------------------------------------------------------------------


def test_per_key_faults_through_the_control_endpoint(sb: Sandbox) -> None:
    base = sb.base_url
    body = {"huge_errors": "1k", "keys": {"k1": {"poll_answer": "garbage_json", "huge_pdf": "2MB"}}}
    answer = httpx.post(f"{base}/_sandbox/faults", json=body)
    assert answer.status_code == 200, answer.text
    shown = httpx.get(f"{base}/_sandbox/faults").json()
    assert shown["huge_errors"] == 1024
    assert shown["keys"] == {"k1": {"poll_answer": "garbage_json", "huge_pdf": 2_000_000}}
    assert sb.faults.for_key("k1").poll_answer == "garbage_json"
    refused = httpx.post(f"{base}/_sandbox/faults", json={"keys": {"k1": {"latency": 1}}})
    assert refused.status_code == 400 and "latency" in refused.json()["error"]["message"]
    refused = httpx.post(f"{base}/_sandbox/faults", json={"keys": {"k1": {"poll_answer": "x"}}})
    assert refused.status_code == 400 and "poll_answer" in refused.json()["error"]["message"]
    cleared = httpx.post(f"{base}/_sandbox/faults", json={"keys": {}})
    assert cleared.json()["keys"] == {}


def test_faults_given_at_start_with_keys() -> None:
    faults = Faults(keys={"bad": {"poll_answer": "empty"}})
    with Sandbox(render_seconds=0, faults=faults) as sandbox, client(sandbox) as http:
        bad = render(http, key="bad").json()["id"]
        good = render(http, key="good").json()["id"]
        assert http.get(f"/v1/renders/{bad}").content == b""
        assert http.get(f"/v1/renders/{good}").json()["status"] == "succeeded"


@pytest.mark.parametrize(
    "changes",
    [
        {"slow_body": 0},
        {"slow_pdf": -1},
        {"huge_poll": 0},
        {"huge_pdf": "lots"},
        {"retry_after": "1\r\nX-Injected: yes"},
        {"duration_ms": "soon"},
        {"poll_answer": "explode"},
        {"download_url": "ftp"},
        {"redirect_post": 200},
        {"render_id": ""},
        {"pdf_no_length": "yes"},
        {"email_send_failed": 2},
        {"keys": {"": {"drop_after": 1}}},
        {"keys": {"k": {"rate_limit": 1}}},
        {"keys": {"k": "drop"}},
    ],
)
def test_bad_fault_values_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultInjector(Faults(**changes))


def test_fault_values_are_normalised() -> None:
    given: dict[str, Any] = {"huge_poll": "1.5MiB", "duration_ms": "inf", "retry_after": -5}
    faults = Faults(**given)  # texts and numbers as JSON or a command line gives them
    assert faults.huge_poll == 1572864
    assert faults.duration_ms == "Infinity"
    assert faults.retry_after == "-5"
    for number, literal in ((float("nan"), "NaN"), (-1, "-1"), (float("-inf"), "-Infinity")):
        changes: dict[str, Any] = {"duration_ms": number}
        assert Faults(**changes).duration_ms == literal


def test_parse_fault_value_from_command_line_text() -> None:
    assert parse_fault_value("drop_after", "0.5") == 0.5
    assert parse_fault_value("pdf_no_length", "true") is True
    assert parse_fault_value("redirect_post", "307") == 307
    assert parse_fault_value("render_id", "123") == "123"
    assert parse_fault_value("huge_poll", "300MB") == "300MB"
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault_value("explode", "1")
    with pytest.raises(ValueError):
        parse_fault_value("drop_after", "often")
    assert parse_fault_value("redirect_post", "") is None
    assert parse_fault_value("poll_answer", "none") is None
