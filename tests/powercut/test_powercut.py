"""Nothing acknowledged is lost when the power goes, at any moment.

The journal, the downloads folder and the drop folder live on a file system that keeps only what
was fsynced (powercutfs.py). More than 100 times, ``outbox run --watch`` works against a faulty
sandbox while an app enqueues and drops files; then every process is killed and the power cut,
the disk remounted, and the invariants checked (scenario.py lists them). ``bench/powercut.py``
runs the same with more cuts and measures the fsyncs per entry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scenario import Scenario, drain_price

pytestmark = pytest.mark.e2e

CUTS = 102
CUTS_PER_SITE = 6


def test_power_cuts_lose_nothing_acknowledged(tmp_path: Path) -> None:
    figures = Scenario(tmp_path, cuts=CUTS, cuts_per_site=CUTS_PER_SITE, seed=14).run()
    print(
        f"{figures.cuts} cuts, {figures.sites} sites, {figures.entries} entries, "
        f"{figures.acknowledged_enqueues} enqueues and {figures.acknowledged_drops} drops "
        f"acknowledged, {figures.done_seen_at_cuts} done entries checked after cuts; seconds: "
        + ", ".join(f"{phase} {seconds:.0f}" for phase, seconds in figures.seconds.items())
    )
    assert figures.cuts == CUTS
    # The workload must have been cut in the middle of real work, not only at start-up.
    assert figures.acknowledged_enqueues > CUTS and figures.acknowledged_drops > CUTS / 2
    assert figures.done_seen_at_cuts > figures.entries
    assert figures.violations == []
    assert figures.renders == figures.entries


def test_a_full_drain_costs_a_bounded_number_of_fsyncs(tmp_path: Path) -> None:
    price = drain_price(tmp_path, 40)
    print(f"fsyncs per entry for a full drain: {price.per_entry:.2f} {price.by_place}")
    # Every PDF is fsynced before it is linked. The journal's state changes share commits
    # (group commit), and the downloads folder is synced once before each commit that records
    # PDFs as done, for all of them: each a fraction of one per entry.
    assert price.by_place["fsync data/renders/*"] == 40
    folder_syncs = price.by_place["fsyncdir data/renders"]
    assert 1 <= folder_syncs <= price.by_place["fsync data/journal.db-wal"]
    assert price.per_entry <= 3
