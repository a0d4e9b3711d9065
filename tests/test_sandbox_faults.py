"""Injected faults, at start and at runtime: latency, 5xx around creation, dropped answers,
rate limits, truncated downloads, hangs, captive portals and the control endpoints."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from sandbox_support import client, error_code, render, wait_status
from support import wait_until

from outbox.sandbox import Faults, Sandbox
from outbox.sandbox.faults import FaultInjector


def test_faults_are_off_by_default(sb: Sandbox) -> None:
    assert sb.faults == Faults()
    assert Faults().rate_limit is None and Faults().hang_seconds == 600


def test_latency_is_added_to_every_request(sb: Sandbox) -> None:
    sb.set_faults(latency=0.2)
    with client(sb) as http:
        started = time.monotonic()
        assert http.get("/health").status_code == 200
        assert http.get("/v1/templates").status_code == 200
        elapsed = time.monotonic() - started
        assert elapsed >= 0.4
    # Control endpoints get no latency: with an hour of it they still answer (the timeout is
    # only there to turn a regression into a failure instead of an hour's wait).
    sb.set_faults(latency=3600)
    assert httpx.get(f"{sb.base_url}/_sandbox/stats", timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("error_500_before", 500, "internal"),
        ("error_503_before", 503, "queue_unavailable"),
    ],
)
def test_errors_before_creating_create_nothing(
    sb: Sandbox, fault: str, status: int, code: str
) -> None:
    sb.set_faults(**{fault: 1.0})
    with client(sb) as http:
        for _ in range(3):
            response = render(http, key="k")
            assert response.status_code == status
            assert error_code(response) == code
        assert http.get("/v1/templates").status_code == 200  # other routes unaffected
        assert sb.stats()["renders_created"] == 0
        sb.set_faults(**{fault: 0.0})
        assert render(http, key="k").status_code == 202
    assert sb.stats()["faults_injected"][fault] == 3


def test_error_after_creating_keeps_the_render(sb: Sandbox) -> None:
    sb.set_faults(error_500_after=1.0)
    with client(sb) as http:
        failed = render(http, key="after")
        assert failed.status_code == 500 and error_code(failed) == "internal"
        assert sb.stats()["renders_created"] == 1
        retry = render(http, key="after")  # replays are never turned into errors
    assert retry.status_code == 200
    assert sb.stats()["renders_per_key"] == {"after": 1}


def test_dropped_answer_after_creating(sb: Sandbox) -> None:
    sb.set_faults(drop_after=1.0)
    with client(sb) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            render(http, key="lost")
        assert sb.stats()["renders_created"] == 1
        retry = render(http, key="lost")
        assert retry.status_code == 200
        assert retry.json()["status"] in ("queued", "rendering", "succeeded")
        with pytest.raises(httpx.RemoteProtocolError):
            render(http, key="lost-2")
    stats = sb.stats()
    assert stats["renders_per_key"] == {"lost": 1, "lost-2": 1}
    assert stats["requests"]["POST /v1/templates/:slug/render"] == {"dropped": 2, "200": 1}


def test_rate_limit_answers_429_with_retry_after(sb: Sandbox) -> None:
    sb.set_faults(rate_limit=3)
    with client(sb) as http:
        statuses = [http.get("/v1/templates").status_code for _ in range(6)]
        limited = http.get("/v1/templates")
        assert http.get("/health").status_code == 200  # only /v1 is limited
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429, 429, 429]
    assert limited.status_code == 429
    assert error_code(limited) == "rate_limited"
    assert limited.headers["retry-after"] == "1"
    assert sb.stats()["rate_limited"] == 4
    assert sb.stats()["requests"]["GET /v1/templates"] == {"200": 3, "429": 4}
    sb.set_faults(rate_limit=None)
    with client(sb) as http:
        assert http.get("/v1/templates").status_code == 200


def test_rate_limiter_window_slides() -> None:
    now = [100.0]
    injector = FaultInjector(Faults(rate_limit=2), monotonic=lambda: now[0])
    assert injector.rate_limited() is None
    now[0] += 0.4
    assert injector.rate_limited() is None
    assert injector.rate_limited() == 1
    now[0] += 0.61  # the first request left the window
    assert injector.rate_limited() is None
    assert injector.rate_limited() == 1
    injector.update({"rate_limit": 0.5})
    now[0] += 5
    assert injector.rate_limited() is None
    assert injector.rate_limited() == 1


def test_truncated_downloads(sb: Sandbox) -> None:
    with client(sb) as http:
        url = wait_status(http, render(http).json()["id"], "succeeded")["downloadUrl"]
        sb.set_faults(truncate_downloads=1.0)
        received = 0
        with pytest.raises(httpx.RemoteProtocolError), http.stream("GET", url) as response:
            announced = int(response.headers["content-length"])
            for chunk in response.iter_raw():
                received += len(chunk)
        assert 0 < received < announced
        sb.set_faults(truncate_downloads=0.0)
        whole = http.get(url)
        assert len(whole.content) == announced
    assert sb.stats()["faults_injected"]["truncate_downloads"] == 1


def test_truncated_private_stream(sb: Sandbox) -> None:
    with client(sb) as http:
        render_id = render(http).json()["id"]
        wait_status(http, render_id, "succeeded")
        sb.set_faults(truncate_downloads=1.0)
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(f"/v1/embed/renders/{render_id}/download")


def test_hanging_request_times_the_client_out(sb: Sandbox) -> None:
    sb.set_faults(hang=1.0, hang_seconds=0.5)
    with client(sb) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get("/v1/templates", timeout=0.1)
        assert http.get("/health").status_code == 200  # only /v1 hangs
        started = time.monotonic()
        assert http.get("/v1/templates", timeout=5).status_code == 200
        assert time.monotonic() - started >= 0.45


def test_stop_ends_a_hang_early() -> None:
    sandbox = Sandbox(faults=Faults(hang=1.0)).start()
    outcome: list[object] = []

    def call() -> None:
        try:
            with client(sandbox) as http:
                outcome.append(http.get("/v1/templates", timeout=30))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    try:
        caller = threading.Thread(target=call)
        caller.start()
        wait_until(lambda: sandbox.stats()["faults_injected"].get("hang"), what="the hang")
        sandbox.stop()
        caller.join(30)  # the hang lasts 600 s unless the stop ends it
        assert not caller.is_alive()
        assert isinstance(outcome[0], httpx.TransportError)
    finally:
        sandbox.close()


def test_captive_portal_answers_everything_with_html(sb: Sandbox) -> None:
    sb.set_faults(captive_portal=True)
    with client(sb) as http:
        for path in ("/health", "/v1/templates", "/v1/renders/x"):
            response = http.get(path)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            assert "sign in" in response.text.lower()
        posted = render(http, key="portal")
        assert posted.status_code == 200 and posted.headers["content-type"].startswith("text/html")
        assert httpx.get(f"{sb.base_url}/_sandbox/stats").json()["renders_created"] == 0
        sb.set_faults(captive_portal=False)
        assert http.get("/health").json() == {"status": "ok"}


def test_set_faults_refuses_unknown_names_and_bad_values(sb: Sandbox) -> None:
    with pytest.raises(TypeError):
        sb.set_faults(explode=1.0)
    with pytest.raises(ValueError):
        sb.set_faults(drop_after=1.5)
    with pytest.raises(ValueError):
        sb.set_faults(latency=-1)
    with pytest.raises(ValueError):
        sb.set_faults(rate_limit=0)
    with pytest.raises(ValueError):
        Faults(hang=True)
    assert sb.faults == Faults()


def test_set_faults_is_a_partial_update(sb: Sandbox) -> None:
    sb.set_faults(latency=0.01, drop_after=0.5)
    faults = sb.set_faults(drop_after=0.0)
    assert faults.latency == 0.01 and faults.drop_after == 0.0
    assert sb.faults == faults


def test_faults_given_at_start() -> None:
    with Sandbox(faults=Faults(error_503_before=1.0)) as sandbox, client(sandbox) as http:
        assert render(http).status_code == 503


def test_control_endpoints(sb: Sandbox) -> None:
    base = sb.base_url
    response = httpx.post(f"{base}/_sandbox/faults", json={"error_503_before": 1.0})
    assert response.status_code == 200 and response.json()["error_503_before"] == 1.0
    assert httpx.get(f"{base}/_sandbox/faults").json()["error_503_before"] == 1.0
    with client(sb) as http:
        assert render(http).status_code == 503
        bad = httpx.post(f"{base}/_sandbox/faults", json={"nope": 1})
        assert bad.status_code == 400 and "nope" in bad.json()["error"]["message"]
        assert httpx.post(f"{base}/_sandbox/faults", json={"hang": 2}).status_code == 400
        assert httpx.post(f"{base}/_sandbox/faults", json=[1]).status_code == 400
        httpx.post(f"{base}/_sandbox/faults", json={"error_503_before": 0})
        assert render(http).status_code == 202
        revoked = httpx.post(f"{base}/_sandbox/revoke", json={"key": sb.api_key})
        assert revoked.json() == {"revoked": True}
        assert http.get("/v1/templates").status_code == 401
        assert httpx.post(f"{base}/_sandbox/revoke", json={}).status_code == 400


def test_seeded_faults_are_reproducible() -> None:
    def run() -> list[int]:
        with (
            Sandbox(seed=42, faults=Faults(error_503_before=0.5)) as sandbox,
            client(sandbox) as http,
        ):
            return [render(http).status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert {202, 503} == set(first)


def test_probability_zero_and_one_are_exact() -> None:
    injector = FaultInjector(Faults(drop_after=1.0), seed=1)
    assert all(injector.chance("drop_after") for _ in range(100))
    assert not any(injector.chance("hang") for _ in range(100))
    assert injector.injected() == {"drop_after": 100}
