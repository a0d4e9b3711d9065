"""outbox in one minute: enqueue while offline, come online, flush, PDFs on disk.

Runs against the Craftkit sandbox that ships with outbox, on a real local socket:

    python examples/demo.py            # writes into ./demo-output/
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from outbox import Outbox, State
from outbox.sandbox import Sandbox

OUT = Path("demo-output")

JOBS = [
    (
        "inspection-report",
        {
            "inspector": "Ada",
            "site": "North Pier",
            "passed": True,
            "findings": [{"text": "Loose railing", "severity": 2}],
        },
        "inspection-north-42",
        "north-42.pdf",
    ),
    (
        "inspection-report",
        {"inspector": "Grace", "site": "South Dock", "findings": [{"text": "All clear"}]},
        "inspection-south-7",
        "south-7.pdf",
    ),
    (
        "invoice",
        {
            "customer": {"name": "Harbour Ltd", "email": "ap@harbour.example"},
            "amount": "480.00",
            "items": [{"description": "Inspection", "qty": 2, "price": 240}],
        },
        "invoice-2026-005",
        "invoice-2026-005.pdf",
    ),
]


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    shutil.rmtree(OUT, ignore_errors=True)
    with Sandbox(state_dir=OUT / "sandbox-state", render_seconds=(0.3, 1.0)) as sandbox:
        sandbox.stop()
        print(f"1. The Craftkit sandbox at {sandbox.base_url} is down: we are offline.")

        with Outbox(
            OUT / "field.db",
            api_key=sandbox.api_key,
            base_url=sandbox.base_url,
            downloads=OUT / "renders",
        ) as ob:
            for template, data, key, filename in JOBS:
                entry = ob.enqueue(template, data, key=key, filename=filename)
                print(f"   enqueued {entry.id}  {template:<18} key={key}")
            report = ob.flush(timeout=5)
            print(
                f"2. flush while offline: exit code {report.exit_code} (work remains); "
                f"{report.counts[State.PENDING]} entries wait safely in the journal."
            )
            for line in report.problems:
                print(f"   {line}")

            sandbox.start()
            print("3. The network is back.")
            report = ob.flush(timeout=30)
            print(
                f"4. flush: exit code {report.exit_code}; "
                + ", ".join(f"{s} {n}" for s, n in report.counts.items() if n)
            )
            for entry in ob.list():
                print(
                    f"   {entry.state:<5} {entry.pdf_path}  {entry.pdf_bytes} bytes  "
                    f"sha256 {(entry.pdf_sha256 or '')[:16]}…"
                )
        created = sandbox.stats()["renders_created"]
        print(f"5. Craftkit rendered {created} PDFs for {len(JOBS)} jobs: none lost, none twice.")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
