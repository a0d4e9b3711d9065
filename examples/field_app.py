"""Embedding outbox in a long-running app: enqueue from the UI, watch entries change.

CRAFTKIT_API_KEY=... CRAFTKIT_BASE_URL=... python examples/field_app.py
python examples/field_app.py --sandbox      # against the bundled sandbox
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import ExitStack

from outbox import Event, Outbox, State
from outbox.sandbox import Sandbox


def main() -> None:
    with ExitStack() as stack:
        if "--sandbox" in sys.argv:
            sandbox = stack.enter_context(Sandbox(render_seconds=0.5))
            api_key, base_url = sandbox.api_key, sandbox.base_url
        else:
            api_key = os.environ["CRAFTKIT_API_KEY"]
            base_url = os.environ.get("CRAFTKIT_BASE_URL", "https://api.craftkit.dev")
        ob = stack.enter_context(Outbox("field-app.db", api_key=api_key, base_url=base_url))
        finished = threading.Event()

        def on_change(event: Event) -> None:
            # Runs on outbox's worker thread: a GUI would post this to its UI thread.
            print(f"{event.entry_id}: {event.from_state or 'new'} -> {event.to_state}")
            if event.to_state in (State.DONE, State.FAILED, State.REJECTED):
                finished.set()

        ob.on_change(on_change)
        ob.start()  # background submit, poll and download; survives outages
        entry = ob.enqueue(
            "inspection-report",
            {"inspector": "Ada", "site": "North"},
            key="field-app-demo-1",
            filename="field-app-demo.pdf",
        )
        finished.wait(timeout=60)
        print("PDF:", ob.get(entry.id).pdf_path)


if __name__ == "__main__":
    main()
