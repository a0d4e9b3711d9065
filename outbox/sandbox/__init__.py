"""A Craftkit-compatible sandbox server for demos, tests and offline development.

It serves the Craftkit endpoints an offline-first client needs, with the documented status
codes, error envelope, idempotency and render lifecycle, produces real PDF files, keeps its
state in a folder across restarts, and injects faults on demand::

    from outbox.sandbox import Sandbox, Faults

    with Sandbox(render_seconds=0.1, faults=Faults(drop_after=0.5), seed=1) as sb:
        sb.base_url, sb.api_key          # "http://127.0.0.1:PORT", "ck_test_..."
        sb.set_faults(drop_after=0.0)
        sb.stats()["renders_created"]

Run it as a command with ``outbox sandbox --port 8787`` or ``python -m outbox.sandbox``.

Craftkit endpoints (``Authorization: Bearer <key>`` unless noted):

- ``GET /health`` (no key)
- ``GET /v1/templates``, ``GET /v1/templates/:slug``, ``PUT /v1/templates/:slug``
- ``POST /v1/templates/:slug/render`` (``Idempotency-Key`` header or ``jobId``)
- ``GET /v1/renders/:id``
- ``GET /v1/embed/renders/:id/download`` (private stream) and the older
  ``GET /v1/renders/:id/download``
- ``GET /public/renders/:id.pdf`` (no key): what ``downloadUrl`` points at, unless the
  sandbox runs without a public bucket

Control endpoints (no key, never affected by faults), for tests that run the sandbox in
another process:

- ``GET /_sandbox/stats``: renders created, per idempotency key, per payload; requests by
  route and status; 429s and other injected faults
- ``GET /_sandbox/faults`` and ``POST /_sandbox/faults`` (a JSON object of faults to change)
- ``POST /_sandbox/revoke`` with ``{"key": "..."}``
"""

from outbox.sandbox.faults import Faults
from outbox.sandbox.runner import Sandbox

__all__ = ["Faults", "Sandbox"]
