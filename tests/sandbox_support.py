"""Request shortcuts for the sandbox tests (their fixtures are in conftest.py)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pypdf
from support import wait_until

from outbox.sandbox import Sandbox

INSPECTION: dict[str, Any] = {
    "inspector": "Ada Lovelace",
    "site": "North Pier",
    "findings": [{"text": "Loose railing", "severity": 2}],
}
INVOICE: dict[str, Any] = {
    "customer": {"name": "Grace Hopper", "email": "grace@example.com"},
    "amount": "120.50",
    "items": [{"description": "Survey", "qty": 2, "price": 60.25}],
}


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


def wait_status(http: httpx.Client, render_id: str, wanted: str) -> dict[str, Any]:
    """Poll until the render reaches ``wanted`` (short real-time renders only)."""

    def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(f"/v1/renders/{render_id}").json()
        return body if body["status"] == wanted else None

    return wait_until(reached, what=f"render {render_id} to be {wanted}")
