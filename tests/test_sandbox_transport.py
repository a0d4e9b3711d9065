"""The in-process transport: the sandbox's own answers without a socket, and the network's
failures the way httpx reports them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sandbox_support import INSPECTION, client, pdf_text, render
from support import FakeClock

from outbox.sandbox import Sandbox


def in_process(sandbox: Sandbox, key: str | None = None) -> httpx.Client:
    """Like ``client(sandbox)``, over the in-process transport."""
    headers = {"Authorization": f"Bearer {key or sandbox.api_key}"}
    return httpx.Client(
        base_url=sandbox.base_url, headers=headers, timeout=10.0, transport=sandbox.transport()
    )


@pytest.fixture
def both(timed: Sandbox) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """A socket client and an in-process client of one sandbox on the fake clock."""
    with client(timed) as over_socket, in_process(timed) as direct:
        yield over_socket, direct


def _answer(response: httpx.Response) -> tuple[int, str | None, Any]:
    body = response.json() if "json" in response.headers.get("content-type", "") else None
    return response.status_code, response.headers.get("content-type"), body


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/health", {}),
    ("GET", "/v1/templates", {}),
    ("GET", "/v1/templates/invoice", {}),
    ("GET", "/v1/templates/nope", {}),
    ("POST", "/v1/templates/inspection-report/render", {"json": {"data": {"site": "x"}}}),
    ("POST", "/v1/templates/inspection-report/render", {"content": b"{not json"}),
    ("POST", "/v1/templates/draft-report/render", {"json": {"data": {}}}),
    ("DELETE", "/v1/templates", {}),
    ("GET", "/v1/renders/does-not-exist", {}),
    ("GET", "/v1/nowhere", {}),
    ("GET", "/elsewhere", {}),
    ("GET", "/_sandbox/faults", {}),
]


@pytest.mark.parametrize(("method", "path", "options"), REQUESTS)
def test_the_same_request_gets_the_same_answer_with_or_without_a_socket(
    both: tuple[httpx.Client, httpx.Client], method: str, path: str, options: dict[str, Any]
) -> None:
    over_socket, direct = both
    socket_answer = over_socket.request(method, path, **options)
    direct_answer = direct.request(method, path, **options)
    assert _answer(direct_answer) == _answer(socket_answer)
    assert direct_answer.headers.get("allow") == socket_answer.headers.get("allow")


def test_a_render_lives_the_same_life_in_process(
    timed: Sandbox, clock: FakeClock, both: tuple[httpx.Client, httpx.Client]
) -> None:
    over_socket, direct = both
    created = render(direct, key="in-process-1")
    assert created.status_code == 202
    render_id = created.json()["id"]
    again = render(over_socket, key="in-process-1")  # the same key, over the socket
    assert again.status_code == 200 and again.json()["id"] == render_id
    assert direct.get(f"/v1/renders/{render_id}").json()["status"] == "queued"
    clock.advance(11)
    done = direct.get(f"/v1/renders/{render_id}").json()
    assert done["status"] == "succeeded"
    assert done == over_socket.get(f"/v1/renders/{render_id}").json()
    public = direct.get(done["downloadUrl"])
    private = direct.get(f"/v1/embed/renders/{render_id}/download")
    assert public.content == private.content == over_socket.get(done["downloadUrl"]).content
    assert public.headers["content-length"] == str(len(public.content))
    assert "Ada Lovelace" in pdf_text(public.content)
    head = direct.head(done["downloadUrl"])
    assert head.status_code == 200 and head.content == b""
    stats = timed.stats()
    assert stats["renders_created"] == 1 and stats["renders_per_key"] == {"in-process-1": 1}
    assert stats["requests"]["POST /v1/templates/:slug/render"] == {"202": 1, "200": 1}


def test_a_stopped_sandbox_refuses_the_connection(sb: Sandbox) -> None:
    with in_process(sb) as http:
        assert http.get("/health").status_code == 200
        sb.stop()
        with pytest.raises(httpx.ConnectError):
            http.get("/health")
        sb.start()
        assert http.get("/health").status_code == 200


def test_a_dropped_answer_is_a_protocol_error_after_the_render_was_made(sb: Sandbox) -> None:
    sb.set_faults(drop_after=1.0)
    with in_process(sb) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            render(http, key="dropped")
        sb.set_faults(drop_after=0.0)
        assert render(http, key="dropped").status_code == 200  # it was made: a replay
    stats = sb.stats()
    assert stats["renders_created"] == 1
    assert stats["requests"]["POST /v1/templates/:slug/render"] == {"dropped": 1, "200": 1}


def test_a_truncated_download_stops_half_way_with_a_protocol_error() -> None:
    sandbox = Sandbox(render_seconds=0.0, pdf_size=200_000).start()
    try:
        with in_process(sandbox) as http:
            render_id = render(http).json()["id"]
            sandbox.set_faults(truncate_downloads=1.0)
            received = 0
            with (
                pytest.raises(httpx.RemoteProtocolError, match="expected 200000"),
                http.stream("GET", f"/v1/embed/renders/{render_id}/download") as response,
            ):
                assert response.headers["content-length"] == "200000"
                for chunk in response.iter_raw():
                    received += len(chunk)
            assert received == 100_000
    finally:
        sandbox.close()


def test_request_wide_faults_apply_and_control_endpoints_are_spared(sb: Sandbox) -> None:
    with in_process(sb) as http:
        sb.set_faults(captive_portal=True)
        portal = http.get("/v1/templates")
        assert portal.status_code == 200 and "text/html" in portal.headers["content-type"]
        assert "Wi-Fi" in portal.text
        assert http.get("/_sandbox/stats").headers["content-type"].startswith("application/json")
        sb.set_faults(captive_portal=False, rate_limit=1)
        assert http.get("/v1/templates").status_code == 200
        limited = http.get("/v1/templates")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
        assert http.get("/health").status_code == 200  # only /v1 is rate limited
        sb.set_faults(rate_limit=None, hang=1.0, hang_seconds=3600)
        with pytest.raises(httpx.ReadTimeout):
            http.get("/v1/templates", timeout=0.05)
    assert sb.stats()["faults_injected"]["hang"] == 1


def test_a_huge_body_is_refused_as_over_the_socket(sb: Sandbox) -> None:
    from outbox.sandbox.server import MAX_BODY_BYTES

    body = json.dumps({"data": {**INSPECTION, "blob": "x" * MAX_BODY_BYTES}}).encode()
    with in_process(sb) as http:
        refused = http.post("/v1/templates/inspection-report/render", content=body)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "payload_too_large"


def test_a_pdf_without_length_and_a_dripped_body_arrive_as_over_the_socket(
    timed: Sandbox, clock: FakeClock, both: tuple[httpx.Client, httpx.Client]
) -> None:
    over_socket, direct = both
    render_id = render(direct).json()["id"]
    clock.advance(11)
    timed.set_faults(pdf_no_length=True)
    path = f"/v1/embed/renders/{render_id}/download"
    chunked, expected = direct.get(path), over_socket.get(path)
    assert "content-length" not in chunked.headers
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert chunked.content == expected.content and pdf_text(chunked.content)
    timed.set_faults(pdf_no_length=False, slow_body=2000.0)  # 2,000 bytes per second
    with direct.stream("GET", "/v1/templates") as dripped:
        pieces = list(dripped.iter_raw())
    assert len(pieces) > 1 and max(len(p) for p in pieces) <= 100  # 2,000 / 20 steps
    assert json.loads(b"".join(pieces)) == over_socket.get("/v1/templates").json()


def test_the_rate_limit_counts_seconds_of_the_sandbox_clock(
    timed: Sandbox, clock: FakeClock
) -> None:
    timed.set_faults(rate_limit=2)
    with in_process(timed) as http:
        assert [http.get("/v1/templates").status_code for _ in range(3)] == [200, 200, 429]
        clock.advance(0.5)  # still within the same second of the sandbox's clock
        assert http.get("/v1/templates").status_code == 429
        clock.advance(0.6)
        assert http.get("/v1/templates").status_code == 200
