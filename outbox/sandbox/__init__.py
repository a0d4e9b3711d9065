"""A Craftkit-compatible sandbox server for demos, tests and offline development.

It serves the Craftkit endpoints (``Authorization: Bearer <key>`` unless noted):

- ``GET /health`` (no key)
- ``GET /v1/templates``, ``GET /v1/templates/:slug``, ``PUT /v1/templates/:slug``
- ``POST /v1/templates/:slug/render`` (``Idempotency-Key`` header or ``jobId``)
- ``GET /v1/renders/:id``
- ``GET /v1/embed/renders/:id/download`` (private stream) and the older
  ``GET /v1/renders/:id/download``
- ``POST /v1/renders/:id/shares``, ``GET /v1/renders/:id/shares``,
  ``DELETE /v1/renders/:id/shares/:shareId`` and ``POST /v1/renders/:id/email``
- ``GET /public/renders/:id.pdf`` (no key): what ``downloadUrl`` points at, unless the
  sandbox runs without a public bucket
- ``GET /share/:token`` (no key): a share link; serves the PDF and counts the click until the
  share is revoked or expires

Control endpoints (no key, never affected by faults), for tests that run the sandbox in
another process:

- ``GET /_sandbox/stats``: renders created, per idempotency key, per payload; shares and
  emails, per render and per key; requests by route and status; 429s and other faults
- ``GET /_sandbox/emails``: every email sent
- ``GET /_sandbox/faults`` and ``POST /_sandbox/faults`` (a JSON object of faults to change,
  ``keys`` poisoning the render of one idempotency key; see :class:`Faults`)
- ``POST /_sandbox/revoke`` with ``{"key": "..."}``

``Sandbox.transport()`` answers from the same sandbox without a socket, as an httpx transport
(``Outbox(..., transport=sb.transport())``); see :mod:`outbox.sandbox.transport`.
"""

from outbox.sandbox.faults import Faults
from outbox.sandbox.runner import Sandbox

__all__ = ["Faults", "Sandbox"]
