"""Embedding outbox in a long-running app: enqueue from the UI, watch entries change.

CRAFTKIT_API_KEY=... CRAFTKIT_BASE_URL=... python examples/field_app.py
python examples/field_app.py --sandbox      # against the bundled sandbox

Run it again and again: the inspection's key is the business event's, so a second run finds
the entry it made the first time (already done: it says where the PDF is) instead of waiting
for a change that will never come.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import ExitStack

from outbox import Event, Outbox, State
from outbox.sandbox import Sandbox

FINISHED = (State.DONE, State.FAILED, State.REJECTED, State.CANCELLED)


def main() -> int:
    # outbox logs through `logging` and prints nothing itself: show its outcome lines.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("outbox.activity").setLevel(logging.INFO)
    with ExitStack() as stack:
        if "--sandbox" in sys.argv:
            state = os.path.abspath("field-app-sandbox")  # kept: the renders survive reruns
            sandbox = stack.enter_context(Sandbox(state_dir=state, render_seconds=0.5))
            api_key, base_url = sandbox.api_key, sandbox.base_url
        else:
            api_key = os.environ["CRAFTKIT_API_KEY"]
            base_url = os.environ.get("CRAFTKIT_BASE_URL", "https://api.craftkit.dev")
        ob = stack.enter_context(Outbox("field-app.db", api_key=api_key, base_url=base_url))
        finished = threading.Event()
        watched: set[str] = set()

        def on_change(event: Event) -> None:
            # Runs on outbox's worker thread: a GUI would post this to its UI thread.
            print(f"{event.entry_id}: {event.from_state or 'new'} -> {event.to_state}")
            if event.entry_id in watched and event.to_state in FINISHED:
                finished.set()

        ob.on_change(on_change)
        entry = ob.enqueue(
            "inspection-report",
            {"inspector": "Ada", "site": "North"},
            key="field-app-demo-1",
            filename="field-app-demo.pdf",
        )
        watched.add(entry.id)
        ob.start()  # background submit, poll and download; survives outages
        # Asked after the callback is in place: a change between the two is not missed.
        if ob.get(entry.id).state not in FINISHED and not finished.wait(timeout=60):
            print(f"{entry.id} is still {ob.get(entry.id).state}; it carries on next time")
            return 75
        done = ob.get(entry.id)
        if done.state is not State.DONE:
            print(f"{entry.id} is {done.state}: {done.error}")
            return 65
        print("PDF:", done.pdf_path)
        return 0


if __name__ == "__main__":
    sys.exit(main())
