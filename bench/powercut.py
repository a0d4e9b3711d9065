"""Power-cut soak: many more cuts than the CI test, and the price of durability in fsyncs.

The journal, the downloads folder and the drop folder live on the power-cut file system
(tests/powercut/powercutfs.py), which keeps only what was fsynced. ``outbox run --watch``
works against a faulty sandbox while an app enqueues and drops job files; at a random moment
every process gets SIGKILL and the power goes; after the remount the invariants are checked (see
tests/powercut/scenario.py). Then it counts the fsyncs outbox asks for to drain a journal: its
price per entry, for entries enqueued by the library and for drop-folder files.

    python bench/powercut.py [--cuts 300] [--cuts-per-site 6] [--seed 14] [--entries 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "powercut"))

from scenario import Scenario, drain_price  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=300)
    parser.add_argument("--cuts-per-site", type=int, default=6)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--entries", type=int, default=200, help="entries for the fsync price")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outbox-powercut-") as tmp:
        started = time.monotonic()
        figures = Scenario(
            Path(tmp) / "soak",
            cuts=args.cuts,
            cuts_per_site=args.cuts_per_site,
            seed=args.seed,
            say=lambda line: print(line, flush=True),
        ).run()
        soak_seconds = time.monotonic() - started
        library = drain_price(Path(tmp) / "price-library", args.entries)
        dropped = drain_price(Path(tmp) / "price-drop", args.entries, drop_files=True)
    print()
    print(f"power cuts: {figures.cuts} over {figures.sites} sites in {soak_seconds:.0f} s")
    print(
        f"entries: {figures.entries} ({figures.acknowledged_enqueues} acknowledged enqueues, "
        f"{figures.acknowledged_drops} acknowledged drops); done entries checked after cuts: "
        f"{figures.done_seen_at_cuts}; renders at the sandbox: {figures.renders}"
    )
    print(
        f"violations: {len(figures.violations)} distinct, found after "
        f"{figures.cuts_with_violations} of {figures.cuts + figures.sites} checks"
    )
    for kind, checks in sorted(figures.kinds.items()):
        print(f"  {kind}: after {checks} checks")
    phases = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in figures.seconds.items())
    print(f"time: {phases}")
    for violation in figures.violations[:10]:
        print(f"  for example: {violation}")
    for name, price in (("library enqueues", library), ("drop-folder files", dropped)):
        print(
            f"fsyncs per entry, full drain of {price.entries} {name}: {price.per_entry:.2f} "
            f"({price.fsync} file fsyncs + {price.fsyncdir} folder fsyncs)"
        )
        for place, count in price.by_place.items():
            print(f"  {place}: {count / price.entries:.2f} per entry")
    return 1 if figures.violations else 0


if __name__ == "__main__":
    sys.exit(main())
