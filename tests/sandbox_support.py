"""Shared helpers for the sandbox tests: fixtures, a fake clock and request shortcuts."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pypdf
import pytest

from outbox.sandbox import Sandbox

INSPECTION = {
    "inspector": "Ada Lovelace",
    "site": "North Pier",
    "findings": [{"text": "Loose railing", "severity": 2}],
}
INVOICE = {
    "customer": {"name": "Grace Hopper", "email": "grace@example.com"},
    "amount": "120.50",
    "items": [{"description": "Survey", "qty": 2, "price": 60.25}],
}


class FakeClock:
    """A wall clock that only moves when told to, so lifecycles need no sleeping."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    """A sandbox whose renders finish after 50 ms of real time."""
    with Sandbox(render_seconds=0.05, seed=7) as sandbox:
        yield sandbox


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed(clock: FakeClock) -> Iterator[Sandbox]:
    """A sandbox on a fake clock: renders take 10 s of fake time (2 s queued)."""
    with Sandbox(render_seconds=10.0, clock=clock, seed=7) as sandbox:
        yield sandbox


def client(sandbox: Sandbox, key: str | None = None, **kwargs: Any) -> httpx.Client:
    """An httpx client for the sandbox, authenticated with ``key`` (the main key by default)."""
    headers = {"Authorization": f"Bearer {key or sandbox.api_key}"}
    return httpx.Client(base_url=sandbox.base_url, headers=headers, timeout=10.0, **kwargs)


def render(
    http: httpx.Client,
    slug: str = "inspection-report",
    data: Any = None,
    key: str | None = None,
    **body: Any,
) -> httpx.Response:
    """POST a render (``data`` defaults to valid inspection data)."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    payload = {"data": INSPECTION if data is None else data, **body}
    return http.post(f"/v1/templates/{slug}/render", json=payload, headers=headers)


def field_errors(response: httpx.Response) -> dict[str, list[str]]:
    """The ``issues.fieldErrors`` of an error answer."""
    body = response.json()
    errors: dict[str, list[str]] = body["error"]["issues"]["fieldErrors"]
    return errors


def error_code(response: httpx.Response) -> str | None:
    """The ``error.code`` of an error answer."""
    code: str | None = response.json()["error"].get("code")
    return code


def pdf_text(blob: bytes) -> str:
    """Parse a PDF strictly and return the text of all its pages."""
    reader = pypdf.PdfReader(io.BytesIO(blob), strict=True)
    return "\n".join(page.extract_text() for page in reader.pages)


def wait_status(
    http: httpx.Client, render_id: str, wanted: str, timeout: float = 5.0
) -> dict[str, Any]:
    """Poll until the render reaches ``wanted`` (short real-time renders only)."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = http.get(f"/v1/renders/{render_id}").json()
        if body["status"] == wanted or time.monotonic() > deadline:
            return body
        time.sleep(0.01)
