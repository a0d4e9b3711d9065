"""A Craftkit-compatible sandbox server for demos, tests and offline development.

It serves the render, poll, download, template and health endpoints of the Craftkit API with
the documented status codes, error envelope, idempotency and render lifecycle, produces real
PDF files, keeps its state in a folder across restarts, and injects faults on demand.

::

    from outbox.sandbox import Sandbox, Faults

    with Sandbox(render_seconds=0.1, faults=Faults(drop_after=0.5), seed=1) as sb:
        sb.base_url, sb.api_key
        sb.set_faults(drop_after=0.0)
        sb.stats()["renders_created"]

Run it as a command with ``outbox sandbox --port 8787`` or ``python -m outbox.sandbox``.
"""

from outbox.sandbox.faults import Faults
from outbox.sandbox.runner import Sandbox

__all__ = ["Faults", "Sandbox"]
