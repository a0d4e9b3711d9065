"""The dashboard in a real headless Chromium (the distribution's package, driven by Playwright):
counts, a live pending -> done while `outbox flush` runs in another process, a retry, the
keyboard, no layout shift, nothing fetched from elsewhere, and a screenshot that is not blank.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from support import process_env, sandbox_env

from outbox import Outbox, State
from outbox.sandbox import Sandbox

CHROMIUM = "/usr/bin/chromium"
#: This machine has no internet: keep Chromium from trying to reach its services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]
pytestmark = pytest.mark.e2e  # the dashboard and flush run as real processes

VALID = {"inspector": "Ada Lovelace", "site": "North Pier", "findings": []}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM), "install the distribution's chromium (.ci/run does)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def dashboard_url(db_path: Path) -> Iterator[str]:
    """``outbox dashboard`` in its own process, as a person would start it."""
    Outbox(db_path).close()
    process = subprocess.Popen(
        [sys.executable, "-m", "outbox", "--db", str(db_path), "dashboard", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=process_env(),
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.communicate(timeout=30)


def row(page: Page, key: str) -> Locator:
    return page.locator("#rows tr", has_text=key)


def count(page: Page, state: str) -> Locator:
    return page.locator(f'#counts button[data-state="{state}"] .n')


def test_the_page_follows_a_flush_live_and_retries_a_failed_entry(
    browser: Browser, dashboard_url: str, db_path: Path, tmp_path: Path
) -> None:
    with Outbox(db_path) as ob:
        ob.enqueue("inspection-report", VALID, key="inspection-1")
        ob.enqueue("inspection-report", {**VALID, "site": "South"}, key="inspection-2")
        doomed = ob.enqueue("always-fails", VALID, key="doomed", validation="off")

    page = browser.new_page(viewport={"width": 1200, "height": 800})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.add_init_script(
        "window.__shifts = 0; new PerformanceObserver((list) => { for (const e of"
        " list.getEntries()) if (!e.hadRecentInput) window.__shifts += e.value; })"
        ".observe({type: 'layout-shift', buffered: true});"
    )
    page.goto(dashboard_url)
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    assert "token" not in page.url, "the token left the address bar"
    expect(count(page, "pending")).to_have_text("3")
    expect(row(page, "inspection-1").locator(".badge")).to_have_text("pending")
    page.evaluate("window.__sameDocument = true")
    shifts_before_updates = page.evaluate("window.__shifts")

    with Sandbox(render_seconds=0.3, seed=5) as sandbox:
        flush = subprocess.Popen(
            [sys.executable, "-m", "outbox", "flush", "--timeout", "60"],
            env=process_env(sandbox_env(sandbox, db_path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # No reload: the same document sees the entry reach done as the other process works.
            expect(row(page, "inspection-1").locator(".badge")).to_have_text("done", timeout=60_000)
            expect(row(page, "doomed").locator(".badge")).to_have_text("failed", timeout=60_000)
        finally:
            out, err = flush.communicate(timeout=90)
    assert flush.returncode == 65, (out, err)  # drained, and something failed in this run
    assert page.evaluate("window.__sameDocument") is True
    expect(count(page, "done")).to_have_text("2")
    expect(count(page, "failed")).to_have_text("1")
    expect(count(page, "pending")).to_have_text("0")
    expect(page.locator("#facts [data-fact=connectivity] dd")).to_have_class("ok")
    assert page.evaluate("window.__shifts") == shifts_before_updates, "live updates moved things"

    # Retry the failed entry from its detail view.
    row(page, "doomed").click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(page.locator("#d-explain")).to_contain_text("Craftkit could not render it")
    page.locator("#a-retry").click()
    expect(page.locator("#d-state")).to_have_text("pending")
    expect(row(page, "doomed").locator(".badge")).to_have_text("pending")
    with Outbox(db_path) as ob:
        retried = ob.get(doomed.id)
        assert (retried.state, retried.key) == (State.PENDING, "doomed~2")

    # The keyboard: Escape closes and returns to the row, j moves down, Enter opens, / searches.
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()
    assert page.evaluate("document.activeElement.dataset.id") == doomed.id
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    expect(detail).to_be_visible()
    expect(page.locator("#d-title")).to_have_text("inspection-2")
    page.keyboard.press("Escape")
    page.keyboard.press("/")
    page.keyboard.type("inspection-1")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(page.locator("#rows tr .badge")).to_have_text("done")

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert_not_blank(shot.read_bytes())
    origin = dashboard_url.split("/?")[0]
    assert requests and all(url.startswith(origin + "/") for url in requests), requests
    assert errors == []


# -- a screenshot is not blank -------------------------------------------------------------


def assert_not_blank(png: bytes) -> None:
    """Decode the PNG (8-bit RGB or RGBA) and require real content: many colours, and a good
    share of pixels that differ from the background."""
    width, height, pixels = decode_png(png)
    assert width >= 300 and height >= 300
    colours = Counter(pixels)
    background = colours.most_common(1)[0][1]
    assert len(colours) >= 50, f"only {len(colours)} colours"
    assert 1 - background / len(pixels) >= 0.05, "almost every pixel is the background"


def decode_png(png: bytes) -> tuple[int, int, list[bytes]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, header = 8, b"", b""
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        body = png[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, "unexpected PNG format"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    pixels: list[bytes] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
                line[i] = (line[i] + guess) & 0xFF
        pixels += [bytes(line[i : i + channels]) for i in range(0, stride, channels)]
        previous = line
    return width, height, pixels


def test_a_rejected_entry_is_amended_with_the_page_and_renders_once(
    browser: Browser, dashboard_url: str, db_path: Path
) -> None:
    """The Amend button, in the page: Check shows the template's field errors, Save sends the
    corrected data, and the next flush renders it once, under the entry's own key."""
    with Sandbox(render_seconds=0.05, seed=5) as sandbox:
        with Outbox(db_path, api_key=sandbox.api_key, base_url=sandbox.base_url) as ob:
            ob.sync_templates()
            entry = ob.enqueue(
                "inspection-report", {"inspector": "Ada"}, key="amend-me", validation="off"
            )
            ob.flush(timeout=30)
            assert ob.get(entry.id).state is State.REJECTED

        page = browser.new_page(viewport={"width": 1200, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(dashboard_url)
        expect(row(page, "amend-me").locator(".badge")).to_have_text("rejected")
        row(page, "amend-me").click()
        page.locator("#a-amend").click()
        editor = page.locator("#amend-data")
        expect(editor).to_be_visible()
        assert '"inspector": "Ada"' in editor.input_value()  # the entry's data to start from

        editor.fill('{"inspector": "Ada"}')
        page.locator("#amend-check").click()
        expect(page.locator("#amend-errors")).to_contain_text("site: Required")
        editor.fill('{"inspector": "Ada", "site": "South Quay"}')
        page.locator("#amend-save").click()
        expect(page.locator("#d-state")).to_have_text("pending")
        expect(page.locator("#amend")).to_be_hidden()
        expect(row(page, "amend-me").locator(".badge")).to_have_text("pending")

        with Outbox(db_path, api_key=sandbox.api_key, base_url=sandbox.base_url) as ob:
            amended = ob.get(entry.id)
            assert (amended.key, amended.data) == (
                "amend-me",
                {"inspector": "Ada", "site": "South Quay"},
            )
            assert ob.flush(timeout=30).exit_code == 0
            assert ob.get(entry.id).state is State.DONE
        assert sandbox.stats()["renders_per_key"] == {"amend-me": 1}
        expect(row(page, "amend-me").locator(".badge")).to_have_text("done", timeout=60_000)
    assert errors == []
