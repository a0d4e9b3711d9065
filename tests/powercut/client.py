"""A field app under a power cut: enqueues through the library and drops job files.

``python client.py JOURNAL DROP_FOLDER PREFIX SEED`` runs until it is killed. It prints one line
per acknowledgement, only after the call returned:

- ``enqueued KEY ID`` once ``Outbox.enqueue`` (or ``enqueue_many``) returned that entry;
- ``dropped NAME`` once ``NAME`` was written, fsynced and renamed into the drop folder and the
  folder was fsynced: what a careful app does before it tells its user "sent".
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from outbox import Outbox


def drop(folder: Path, name: str, document: dict[str, object]) -> None:
    temporary = folder / f"{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, json.dumps(document).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, folder / name)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def job(key: str) -> dict[str, object]:
    return {
        "template": "inspection-report",
        "key": key,
        "filename": f"{key}.pdf",
        "data": {"inspector": "Power Cut", "site": key},
    }


def main(journal: str, folder: str, prefix: str, seed: str) -> None:
    rng = random.Random(seed)
    drop_folder = Path(folder)
    with Outbox(journal) as ob:
        n = 0
        while True:
            n += 1
            choice = rng.random()
            if choice < 0.45:
                key = f"{prefix}-e{n}"
                entry = ob.enqueue(**job(key))  # type: ignore[arg-type]
                print(f"enqueued {key} {entry.id}", flush=True)
            elif choice < 0.55:
                keys = [f"{prefix}-b{n}-{i}" for i in range(3)]
                for key, entry in zip(keys, ob.enqueue_many(job(k) for k in keys), strict=True):
                    print(f"enqueued {key} {entry.id}", flush=True)
            else:
                name = f"{prefix}-d{n}.json"
                drop(drop_folder, name, job(f"{prefix}-d{n}"))
                print(f"dropped {name}", flush=True)
            time.sleep(rng.uniform(0.0, 0.04))


if __name__ == "__main__":
    main(*sys.argv[1:])
