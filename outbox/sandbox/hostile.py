"""Hostile answers: the bodies the sandbox sends when a fault asks for odd or oversized data.

Everything here is pure: it turns a healthy answer (a JSON object as bytes, or the render body
as a dict) into the hostile one a fault describes. Big bodies are never built in memory: a
:class:`PaddedBody` knows its size up front and yields its bytes in chunks from one shared
block, the way :class:`~outbox.sandbox.pdf.PdfDocument` streams a padded PDF.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

from outbox.sandbox.faults import ID_PLACEHOLDER, Faults

#: Largest chunk a streamed body yields.
CHUNK_SIZE = 64 * 1024

_PADDING_BLOCK = b"x" * CHUNK_SIZE

#: What ``poll_answer: unknown_status`` says (the status older Craftkit docs used).
UNKNOWN_STATUS = "processing"

#: What ``download_url: file`` points at: a local file that is certainly not the PDF.
FILE_URL = "file:///etc/passwd"

#: The body ``download_url: wrong_body`` sends as ``application/pdf``.
WRONG_BODY = (
    b"<!DOCTYPE html>\n<html><head><title>Bucket</title></head>"
    b"<body><h1>Object moved</h1><p>This is not a PDF.</p></body></html>\n"
)


class Body(Protocol):
    """A response body streamed in chunks, whose size is known before it is sent."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


class PaddedBody:
    """``head`` + ``padding`` filler bytes + ``tail``, streamed; ``size`` is exact."""

    def __init__(self, head: bytes, padding: int, tail: bytes = b"") -> None:
        self._head, self._padding, self._tail = head, max(0, padding), tail
        self.size = len(head) + self._padding + len(tail)

    def chunks(self) -> Iterator[bytes]:
        """The body in pieces of at most :data:`CHUNK_SIZE` bytes."""
        yield self._head
        left = self._padding
        while left > 0:
            take = min(left, CHUNK_SIZE)
            yield _PADDING_BLOCK[:take]
            left -= take
        if self._tail:
            yield self._tail


def padded(body: bytes, size: int) -> Body:
    """``body`` grown to ``size`` bytes, still valid JSON when it was.

    A JSON object gets a last member ``"padding": "xxx…"``; anything else is followed by
    spaces (JSON allows trailing whitespace). A body already that big is sent as it is.
    """
    if body.startswith(b"{") and body.endswith(b"}"):
        head = body[:-1] + (b',"padding":"' if len(body) > 2 else b'"padding":"')
        tail = b'"}'
        return PaddedBody(head, size - len(head) - len(tail), tail)
    return PaddedBody(body, size - len(body))


def shown_id(faults: Faults, render_id: str) -> str:
    """The id a render is shown with: its own, or the hostile one of ``render_id``."""
    pattern = faults.render_id
    return render_id if pattern is None else pattern.replace(ID_PLACEHOLDER, render_id)


def real_id(pattern: str, shown: str) -> str | None:
    """The real id inside ``shown`` when ``pattern`` (with ``{id}``) produced it, else None."""
    prefix, placeholder, suffix = pattern.partition(ID_PLACEHOLDER)
    if not placeholder:
        return None
    if len(shown) <= len(prefix) + len(suffix):
        return None
    if not (shown.startswith(prefix) and shown.endswith(suffix)):
        return None
    return shown[len(prefix) : len(shown) - len(suffix)]


def poll_answer(body: dict[str, Any], faults: Faults) -> bytes:
    """The bytes of a poll answer, shaped by ``poll_answer`` and ``duration_ms``."""
    mode = faults.poll_answer
    if mode == "empty":
        return b""
    if mode == "garbage_json":
        return (
            b'{"id": "'
            + str(body.get("id")).encode("utf-8", "replace")
            + b'", "status": "succeeded", "durationMs": 12\x00\xff<!-- cut -->'
        )
    if mode == "non_finite":
        body = {**body, "durationMs": float("nan"), "progress": float("inf")}
    elif mode == "unknown_status":
        body = {
            **body,
            "status": UNKNOWN_STATUS,
            "downloadUrl": None,
            "completedAt": None,
            "durationMs": None,
        }
    literal = faults.duration_ms
    if literal is not None and body.get("durationMs") is not None:
        body = {k: v for k, v in body.items() if k != "durationMs"}
        encoded = _dumps(body)
        encoded = encoded[:-1] + b',"durationMs":' + literal.encode("ascii") + b"}"
    else:
        encoded = _dumps(body)
    if mode == "wrong_shape":
        return b"[" + encoded + b"]"
    return encoded


def _dumps(body: object) -> bytes:
    """Compact JSON that writes non-finite floats as ``NaN`` / ``Infinity`` tokens."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
