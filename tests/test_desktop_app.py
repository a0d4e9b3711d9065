"""examples/desktop_app.py, a real Tkinter window on a virtual display (Xvfb), driven through
Tk's event system: typed into, clicked, offline then online, until its entry shows ``done``;
then a screenshot (ImageMagick's ``import``) that must not be blank, and a clean shutdown.

``DESKTOP_SCREENSHOT=docs/desktop-app.png pytest -m e2e tests/test_desktop_app.py`` also
writes the screenshot there (the README shows it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sqlite3
import subprocess
import threading
import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support import wait_until

from outbox import Outbox, Schedule, Settings, State
from outbox.errors import JournalError
from outbox.sandbox import Sandbox
from outbox.schedule import Backoff

pytestmark = pytest.mark.e2e  # a real X server (Xvfb) and ImageMagick

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Offline probes every 0.25-1 s instead of up to 10 s, so coming back online is seen soon.
QUICK = Settings(
    connect_timeout=2.0,
    read_timeout=5.0,
    schedule=Schedule(offline_grace=1.0, health_probe=Backoff(0.25, 1.0, jitter=0.0)),
)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("desktop_app", EXAMPLES / "desktop_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def display(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A virtual X display of its own (Xvfb picks a free display number)."""
    with subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "1024x700x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE,
        text=True,
    ) as xvfb:
        try:
            assert xvfb.stdout is not None
            name = ":" + xvfb.stdout.readline().strip()
            monkeypatch.setenv("DISPLAY", name)
            yield name
        finally:
            xvfb.terminate()
            xvfb.wait(10)


# -- driving Tk through its event system --------------------------------------------------


def pump_until(root: tk.Tk, condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Let Tk process events until ``condition()`` is truthy (a generous safety timeout)."""

    def check() -> Any:
        root.update()
        return condition()

    return wait_until(check, timeout, what)


def type_into(root: tk.Tk, widget: tk.Widget, text: str) -> None:
    """Type ``text`` into a focused widget, one key press at a time."""
    widget.focus_force()
    root.update()
    names = {" ": "space", "-": "minus", ":": "colon", "\n": "Return", ".": "period"}
    for char in text:
        widget.event_generate("<KeyPress>", keysym=names.get(char, char))
    root.update()


def click(root: tk.Tk, widget: tk.Widget, x: int = 6, y: int = 6) -> None:
    """Press and release the left mouse button over ``widget`` at (x, y)."""
    root.update()
    widget.event_generate("<Enter>", x=x, y=y)
    widget.event_generate("<ButtonPress-1>", x=x, y=y)
    widget.event_generate("<ButtonRelease-1>", x=x, y=y)
    root.update()


def click_row(root: tk.Tk, table: Any, iid: str) -> None:
    x, y, _, height = table.bbox(iid)
    click(root, table, x + 20, y + height // 2)


def row_state(table: Any, iid: str) -> str | None:
    return str(table.set(iid, "state")) if table.exists(iid) else None


# -- the screenshot ------------------------------------------------------------------------


def screenshot(root: tk.Tk, path: Path) -> None:
    """The app's window as the X server shows it, cropped from the whole screen."""
    root.update()
    x, y = root.winfo_rootx(), root.winfo_rooty()
    width, height = root.winfo_width(), root.winfo_height()
    subprocess.run(
        ["import", "-window", "root", "-crop", f"{width}x{height}+{x}+{y}", "+repage", path],
        check=True,
        timeout=60,
    )


def assert_not_blank(path: Path) -> None:
    """Many colours, and a good share of pixels that differ from the background."""
    size = subprocess.run(
        ["identify", "-format", "%w %h", path], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(size[0]) >= 500 and int(size[1]) >= 300, size
    histogram = subprocess.run(
        ["convert", path, "-format", "%c", "histogram:info:-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts = sorted(
        (int(line.split(":")[0]) for line in histogram.splitlines() if line), reverse=True
    )
    assert len(counts) >= 20, f"only {len(counts)} colours"
    assert 1 - counts[0] / sum(counts) >= 0.05, "almost every pixel is the background"


# -- the test ------------------------------------------------------------------------------


def test_the_desktop_app_queues_offline_and_shows_the_pdf_once_online(
    display: str, tmp_path: Path
) -> None:
    app_module = load_example()
    opened: list[str] = []
    db = tmp_path / "desktop.db"
    with Sandbox(render_seconds=0.3, seed=3) as sb:
        root = tk.Tk()
        ob = Outbox(db, api_key=sb.api_key, base_url=sb.base_url, settings=QUICK)
        app = app_module.InspectionApp(root, ob, sandbox=sb, open_file=opened.append)
        root.geometry("900x560+0+0")
        pump_until(root, root.winfo_viewable, "the window to show")

        # The network goes away: the app's own switch stops the sandbox.
        click(root, app.sandbox_switch)
        assert not sb.running

        # Fill the form and queue it while offline.
        type_into(root, app.inspector, "Ada Lovelace")
        type_into(root, app.site, "North Pier")
        type_into(root, app.findings, "2: Loose railing\nRust on the ladder")
        click(root, app.queue_button)
        [queued] = app.table.get_children()
        assert row_state(app.table, queued) == "pending"
        assert "saved on this device" in str(app.message.cget("text"))
        assert app.site.get() == ""  # the form is ready for the next report
        pump_until(root, lambda: "offline" in str(app.network.cget("text")), "offline shown")

        # Back online: the worker submits, follows and downloads by itself.
        click(root, app.sandbox_switch)
        assert sb.running
        pump_until(root, lambda: row_state(app.table, queued) == "done", "the entry done")
        assert "online" in str(app.network.cget("text"))
        entry = ob.get(queued)
        assert entry.data["findings"] == [
            {"text": "Loose railing", "severity": 2},
            {"text": "Rust on the ladder"},
        ]
        assert (entry.data["inspector"], entry.data["site"]) == ("Ada Lovelace", "North Pier")

        # A failed render (from elsewhere in the app) shows up, and Retry sends it again.
        doomed = ob.enqueue("always-fails", {"title": "Boiler"}, key="doomed")
        pump_until(root, lambda: row_state(app.table, doomed.id) == "failed", "failed shown")
        click_row(root, app.table, doomed.id)
        assert app.retry_button.instate(["!disabled"])
        assert app.open_button.instate(["disabled"])
        click(root, app.retry_button)
        pump_until(root, lambda: ob.get(doomed.id).key == "doomed~2", "the retry")
        pump_until(root, lambda: row_state(app.table, doomed.id) == "failed", "failed again")

        # Open PDF on the done entry hands its verified file to the system viewer.
        click_row(root, app.table, queued)
        assert app.open_button.instate(["!disabled"]) and app.retry_button.instate(["disabled"])
        click(root, app.open_button)
        assert opened == [entry.pdf_path]
        assert Path(opened[0]).read_bytes().startswith(b"%PDF-")

        shot = tmp_path / "desktop-app.png"
        screenshot(root, shot)
        assert_not_blank(shot)
        if os.environ.get("DESKTOP_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["DESKTOP_SCREENSHOT"])

        # Closing the window stops the worker and closes the journal, then the window.
        root.tk.call(root.protocol("WM_DELETE_WINDOW"))

        def closed() -> bool:
            root.update()  # still answers once the window is gone
            try:
                root.winfo_exists()
            except tk.TclError:  # "application has been destroyed"
                return True
            return False

        wait_until(closed, 60, "the window to close")
        assert not [t for t in threading.enumerate() if t.name == "outbox"]
        with pytest.raises(JournalError):
            ob.get(queued)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        leased = conn.execute("SELECT count(*) FROM entries WHERE lease_owner IS NOT NULL")
        assert leased.fetchone()[0] == 0
    with Outbox(db) as reopened:
        assert reopened.get(queued).state is State.DONE
