"""Take the README's dashboard screenshots: a small journal worked by the sandbox, shown by
``Outbox.dashboard`` in headless Chromium (the distribution's package, via Playwright).

    python docs/screenshots.py            # writes docs/dashboard-*.png
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from outbox import Outbox
from outbox.sandbox import Sandbox

HERE = Path(__file__).parent
ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]
SITES = ["North Pier", "South Dock", "East Quay", "Harbour Gate", "Old Mill", "Lighthouse"]


def fill(ob: Outbox) -> None:
    for number, site in enumerate(SITES, start=40):
        ob.enqueue(
            "inspection-report",
            {"inspector": "Ada Lovelace", "site": site, "findings": []},
            key=f"inspection-{number}",
        )
    ob.enqueue(
        "invoice",
        {
            "customer": {"name": "Grace Hopper", "email": "grace@example.com"},
            "amount": "120.50",
            "items": [{"description": "Survey", "qty": 2, "price": 60.25}],
        },
        key="invoice-2024-118",
        filename="invoice-118.pdf",
    )
    ob.enqueue("always-fails", {"inspector": "Ada", "site": "Dry Dock"}, key="inspection-47")
    ob.enqueue(
        "inspection-report", {"inspector": "Ada Lovelace"}, key="inspection-48", validation="off"
    )
    ob.flush(timeout=30)
    ob.enqueue(
        "inspection-report",
        {"inspector": "Ada Lovelace", "site": "West Jetty"},
        key="inspection-49",
    )
    cancelled = ob.enqueue("inspection-report", {"inspector": "Ada", "site": "X"}, key="typo-1")
    ob.cancel(cancelled.id)


def shoot(page: Page, url: str, name: str, *, open_key: str | None = None) -> None:
    page.goto(url)
    page.wait_for_selector("#live[data-state=live]")
    if open_key:
        page.locator("#rows tr", has_text=open_key).click()
        page.wait_for_selector("#detail:not([hidden])")
    page.wait_for_timeout(300)
    page.screenshot(path=str(HERE / f"dashboard-{name}.png"))
    print("wrote", HERE / f"dashboard-{name}.png")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outbox-demo-") as folder:
        db = Path(folder) / "field.db"
        with (
            Sandbox(render_seconds=0.2, seed=3) as sandbox,
            Outbox(db, api_key=sandbox.api_key, base_url=sandbox.base_url) as ob,
        ):
            fill(ob)
            board = ob.dashboard(port=0)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                desktop = {"width": 1100, "height": 720}
                shoot(browser.new_page(viewport=desktop), board.url, "light")
                dark = browser.new_page(viewport=desktop, color_scheme="dark")
                shoot(dark, board.url, "detail-dark", open_key="inspection-48")
                phone = browser.new_page(viewport={"width": 390, "height": 760})
                shoot(phone, board.url, "phone")
                browser.close()


if __name__ == "__main__":
    main()
