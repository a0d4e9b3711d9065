"""A desktop app that embeds outbox: inspection reports queued offline, PDFs when online.

Tkinter is in Python's standard library, so this runs wherever Python does::

    python examples/desktop_app.py --sandbox          # against the bundled sandbox
    CRAFTKIT_API_KEY=... python examples/desktop_app.py --db field.db

It is the reference for embedding outbox in any GUI toolkit. Three rules:

1. Start the background worker once (``ob.start()``); it submits, polls and downloads, and
   waits out outages by itself. On exit, ``ob.close()`` stops it — off the UI thread, since
   requests on the wire are allowed to finish.
2. ``on_change`` calls back on outbox's worker thread: never touch a widget there. Put the
   event in a ``queue.Queue`` and let the UI thread drain it (Tk: ``after``; Qt: emit a
   signal, delivered to the UI thread by a queued connection; GTK: ``GLib.idle_add``;
   wx: ``wx.CallAfter``).
3. Calls that only touch the journal (``enqueue``, ``get``, ``list``, ``retry``, ``status``)
   take milliseconds: make them from the UI thread. Never call ``flush`` there; the worker
   does that work.
"""

from __future__ import annotations

import argparse
import datetime
import os
import queue
import subprocess
import sys
import threading
import tkinter as tk
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from tkinter import ttk
from typing import Any

from outbox import Entry, Event, Outbox, OutboxError, State
from outbox.sandbox import Sandbox

#: How often the UI thread looks for changes handed over by the worker (milliseconds).
DRAIN_EVERY_MS = 100
#: How often the online/offline indicator is refreshed from the journal (milliseconds).
STATUS_EVERY_MS = 1000

STATE_COLOURS = {
    State.PENDING: "#8a6d00",
    State.SUBMITTED: "#1f5fbf",
    State.DOWNLOADING: "#1f5fbf",
    State.DONE: "#1b7f3b",
    State.FAILED: "#b3261e",
    State.REJECTED: "#b3261e",
    State.CANCELLED: "#666666",
}


def open_with_system_viewer(path: str) -> None:
    """Open a file the way a double click in the file manager would."""
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]  # Windows only
    else:
        subprocess.Popen(["open" if sys.platform == "darwin" else "xdg-open", path])


class InspectionApp:
    """The app's window. It owns ``outbox`` from here on: closing the window closes it."""

    def __init__(
        self,
        root: tk.Tk,
        outbox: Outbox,
        *,
        sandbox: Sandbox | None = None,
        open_file: Callable[[str], None] = open_with_system_viewer,
    ) -> None:
        self.root = root
        self.outbox = outbox
        self.sandbox = sandbox
        self.open_file = open_file
        self.changes: queue.Queue[Event] = queue.Queue()
        self.closing = False
        self.key = self._new_key()

        root.title("Inspections — outbox")
        root.minsize(760, 480)
        if root.tk.call("tk", "windowingsystem") == "x11":
            ttk.Style(root).theme_use("clam")  # the default X11 theme looks dated
        root.protocol("WM_DELETE_WINDOW", self.close)
        self._build()
        for entry in reversed(outbox.list(limit=200)):
            self._show(entry)

        # Rule 2: the worker's callback only puts the event in a queue; the UI thread drains it.
        self._remove_listener = outbox.on_change(self.changes.put)
        outbox.start()  # rule 1
        self._timers: dict[str, str] = {}
        self._drain()
        self._refresh_status()

    # -- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        self.root.columnconfigure(0, weight=1)
        self.root.rowconfigure(1, weight=1)
        top = ttk.Frame(self.root, padding=(12, 10, 12, 0))
        top.grid(row=0, column=0, sticky="ew")
        top.columnconfigure(0, weight=1)

        form = ttk.LabelFrame(top, text="Inspection report", padding=10)
        form.grid(row=0, column=0, sticky="ew")
        form.columnconfigure(1, weight=1)
        self.inspector = self._field(form, 0, "Inspector")
        self.site = self._field(form, 1, "Site")
        self.date = self._field(form, 2, "Date")
        self.date.insert(0, datetime.date.today().isoformat())
        self.passed = tk.BooleanVar(value=True)
        ttk.Checkbutton(form, text="Passed", variable=self.passed).grid(
            row=3, column=1, sticky="w", pady=2
        )
        ttk.Label(form, text="Findings").grid(row=4, column=0, sticky="nw", padx=(0, 8))
        self.findings = tk.Text(form, height=3, width=40, wrap="word")
        self.findings.grid(row=4, column=1, sticky="ew", pady=2)
        ttk.Label(form, text="one per line; '2: text' sets severity 2", foreground="#666").grid(
            row=5, column=1, sticky="w"
        )
        self.queue_button = ttk.Button(form, text="Queue", command=self.queue_report)
        self.queue_button.grid(row=6, column=1, sticky="e", pady=(6, 0))

        side = ttk.Frame(top, padding=(12, 4, 0, 0))
        side.grid(row=0, column=1, sticky="ne")
        self.network = tk.Label(side, text="● not checked yet", fg="#666", anchor="w")
        self.network.grid(row=0, column=0, sticky="w")
        if self.sandbox is not None:
            self.sandbox_online = tk.BooleanVar(value=self.sandbox.running)
            self.sandbox_switch = ttk.Checkbutton(
                side,
                text="Sandbox online",
                variable=self.sandbox_online,
                command=self.toggle_sandbox,
            )
            self.sandbox_switch.grid(row=1, column=0, sticky="w", pady=(6, 0))
        self.message = ttk.Label(side, text="", wraplength=260, justify="left")
        self.message.grid(row=2, column=0, sticky="w", pady=(12, 0))

        listing = ttk.Frame(self.root, padding=12)
        listing.grid(row=1, column=0, sticky="nsew")
        listing.columnconfigure(0, weight=1)
        listing.rowconfigure(0, weight=1)
        columns = ("site", "state", "detail")
        self.table = ttk.Treeview(listing, columns=columns, show="tree headings", height=8)
        self.table.heading("#0", text="Entry")
        self.table.column("#0", width=150, stretch=False)
        self.table.heading("site", text="Site (or template)")
        self.table.column("site", width=160, stretch=False)
        self.table.heading("state", text="State")
        self.table.column("state", width=100, stretch=False)
        self.table.heading("detail", text="Detail")
        for state, colour in STATE_COLOURS.items():
            self.table.tag_configure(state.value, foreground=colour)
        self.table.grid(row=0, column=0, sticky="nsew")
        self.table.bind("<<TreeviewSelect>>", lambda _event: self._update_buttons())
        scroll = ttk.Scrollbar(listing, orient="vertical", command=self.table.yview)
        scroll.grid(row=0, column=1, sticky="ns")
        self.table.configure(yscrollcommand=scroll.set)

        actions = ttk.Frame(listing, padding=(0, 8, 0, 0))
        actions.grid(row=1, column=0, sticky="e")
        self.open_button = ttk.Button(actions, text="Open PDF", command=self.open_pdf)
        self.open_button.grid(row=0, column=0, padx=4)
        self.retry_button = ttk.Button(actions, text="Retry", command=self.retry)
        self.retry_button.grid(row=0, column=1, padx=4)
        self._update_buttons()

    def _field(self, parent: ttk.Frame | ttk.LabelFrame, row: int, label: str) -> ttk.Entry:
        ttk.Label(parent, text=label).grid(row=row, column=0, sticky="w", padx=(0, 8))
        entry = ttk.Entry(parent, width=40)
        entry.grid(row=row, column=1, sticky="ew", pady=2)
        return entry

    # -- actions (UI thread) -----------------------------------------------------------------

    def queue_report(self) -> None:
        """Save the form as a render request: works offline, durable once it returns.

        The key is made when the form is (re)started, so a double click queues it once.
        """
        try:
            entry = self.outbox.enqueue(
                "inspection-report", self._form_data(), key=self.key, filename=self._filename()
            )
        except OutboxError as exc:  # bad input: a clear message, and the form stays as it was
            self._say(str(exc), error=True)
            return
        self._show(entry)
        self._say(f"Queued {entry.id[:8]} for {entry.data['site']}; it is saved on this device.")
        self.key = self._new_key()
        for widget in (self.site, self.inspector):
            widget.delete(0, "end")
        self.findings.delete("1.0", "end")

    def open_pdf(self) -> None:
        entry = self._selected()
        if entry is not None and entry.state is State.DONE and entry.pdf_path:
            self.open_file(entry.pdf_path)

    def retry(self) -> None:
        entry = self._selected()
        if entry is None:
            return
        try:
            self._show(self.outbox.retry(entry.id))
        except OutboxError as exc:
            self._say(str(exc), error=True)

    def toggle_sandbox(self) -> None:
        """Switch the bundled sandbox off and on, to watch the app work offline."""
        assert self.sandbox is not None
        if self.sandbox_online.get():
            self.sandbox.start()
        else:
            self.sandbox.stop()

    def close(self) -> None:
        """Stop the worker and close the journal off the UI thread, then close the window."""
        if self.closing:
            return
        self.closing = True
        self._remove_listener()
        for timer in self._timers.values():
            self.root.after_cancel(timer)
        for button in (self.queue_button, self.open_button, self.retry_button):
            button.state(["disabled"])
        self._say("Stopping: letting requests on the wire finish…")
        done = queue.Queue[BaseException | None]()

        def close_outbox() -> None:
            try:
                self.outbox.close()
            except BaseException as exc:  # reported below, on the UI thread
                done.put(exc)
            else:
                done.put(None)

        threading.Thread(target=close_outbox, name="outbox-close").start()

        def wait() -> None:
            try:
                error = done.get_nowait()
            except queue.Empty:
                self.root.after(50, wait)
                return
            if error is not None:
                print(f"closing the outbox failed: {error}", file=sys.stderr)
            self.root.destroy()

        wait()

    # -- changes from the worker, on the UI thread -------------------------------------------

    def _drain(self) -> None:
        if self.closing:
            return
        changed: set[str] = set()
        while True:
            try:
                changed.add(self.changes.get_nowait().entry_id)
            except queue.Empty:
                break
        for entry_id in changed:  # several changes of one entry: one read
            self._show(self.outbox.get(entry_id))
        if changed:
            self._update_buttons()
        self._timers["drain"] = self.root.after(DRAIN_EVERY_MS, self._drain)

    def _refresh_status(self) -> None:
        if self.closing:
            return
        facts = self.outbox.status()
        connectivity = facts.get("connectivity")
        auth = facts.get("auth")
        if isinstance(auth, dict) and not auth.get("ok", True):
            self.network.configure(text=f"● key refused: {auth.get('reason')}", fg="#b3261e")
        elif isinstance(connectivity, dict) and connectivity.get("online"):
            self.network.configure(text="● online", fg="#1b7f3b")
        elif isinstance(connectivity, dict):
            self.network.configure(text="● offline — queued work waits", fg="#b3261e")
        self._timers["status"] = self.root.after(STATUS_EVERY_MS, self._refresh_status)

    # -- helpers -----------------------------------------------------------------------------

    def _show(self, entry: Entry) -> None:
        """Insert or update the entry's row."""
        if entry.state is State.DONE:
            detail = Path(entry.pdf_path or "").name + f" ({entry.pdf_bytes:,} bytes)"
        else:
            detail = entry.error or ""
        values = (entry.data.get("site", entry.template), entry.state.value, detail)
        if self.table.exists(entry.id):
            self.table.item(entry.id, values=values, tags=(entry.state.value,))
        else:
            self.table.insert(
                "", 0, iid=entry.id, text=entry.id[:12], values=values, tags=(entry.state.value,)
            )

    def _selected(self) -> Entry | None:
        selection = self.table.selection()
        return self.outbox.get(selection[0]) if selection else None

    def _update_buttons(self) -> None:
        selection = self.table.selection()
        state = self.table.set(selection[0], "state") if selection else ""
        self.open_button.state(["!disabled"] if state == "done" else ["disabled"])
        self.retry_button.state(["!disabled"] if state in ("failed", "rejected") else ["disabled"])

    def _form_data(self) -> dict[str, Any]:
        findings = []
        for line in self.findings.get("1.0", "end").splitlines():
            severity, _, text = line.partition(":")
            if text and severity.strip().isdigit():
                findings.append({"text": text.strip(), "severity": int(severity)})
            elif line.strip():
                findings.append({"text": line.strip()})
        data: dict[str, Any] = {
            "inspector": self.inspector.get().strip(),
            "site": self.site.get().strip(),
            "passed": self.passed.get(),
            "findings": findings,
        }
        if self.date.get().strip():
            data["date"] = self.date.get().strip()
        return data

    def _filename(self) -> str:
        site = "".join(c if c.isalnum() else "-" for c in self.site.get().strip().lower())
        return f"inspection-{site or 'report'}-{self.key[-6:]}.pdf"

    def _new_key(self) -> str:
        return f"desktop-inspection-{uuid.uuid4().hex[:12]}"

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message.configure(text=text, foreground="#b3261e" if error else "")


def main() -> None:
    parser = argparse.ArgumentParser(description="Queue inspection reports, offline or not.")
    parser.add_argument("--db", default="desktop-app.db", help="the journal file")
    parser.add_argument("--sandbox", action="store_true", help="use the bundled sandbox")
    args = parser.parse_args()
    with ExitStack() as stack:
        sandbox = None
        if args.sandbox:
            sandbox = stack.enter_context(Sandbox(render_seconds=1.0))
            api_key, base_url = sandbox.api_key, sandbox.base_url
        else:
            api_key = os.environ["CRAFTKIT_API_KEY"]
            base_url = os.environ.get("CRAFTKIT_BASE_URL", "https://api.craftkit.dev")
        root = tk.Tk()
        outbox = Outbox(args.db, api_key=api_key, base_url=base_url)
        InspectionApp(root, outbox, sandbox=sandbox)
        root.mainloop()  # returns once the window closed, after the outbox was closed


if __name__ == "__main__":
    main()
