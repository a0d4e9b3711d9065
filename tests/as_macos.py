"""``python tests/as_macos.py ARGS``: run ``python -m outbox ARGS`` as it runs on macOS.

``sys.platform`` says ``darwin`` while ``outbox.platform`` (the one module that asks) is imported
and takes its view of the system, so it takes macOS' branches; the rest of the standard library
keeps its Linux view. macOS' ``fcntl(fd, F_FULLFSYNC)`` is stood in for (Linux has no such command: here it
fsyncs). What outbox asks of the system is recorded and written, as JSON, to the file named by
``OUTBOX_AS_MACOS_REPORT`` when the process exits: each ``F_FULLFSYNC`` and each plain
``fsync`` (of a file or a folder), and the statements each SQLite connection ran.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import runpy
import sqlite3
import stat
import sys
from typing import Any

F_FULLFSYNC = 51  # <sys/fcntl.h> on macOS
seen: dict[str, list[Any]] = {"F_FULLFSYNC": [], "fsync": [], "connections": []}
real_fsync, real_fcntl, real_connect = os.fsync, fcntl.fcntl, sqlite3.connect


def kind(fd: int) -> str:
    return "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"


def fcntl_as_on_macos(fd: int, cmd: int, arg: int = 0) -> int:
    if cmd == F_FULLFSYNC:
        seen["F_FULLFSYNC"].append(kind(fd))
        real_fsync(fd)
        return 0
    return int(real_fcntl(fd, cmd, arg))


def counted_fsync(fd: int) -> None:
    seen["fsync"].append(kind(fd))
    real_fsync(fd)


def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    conn: sqlite3.Connection = real_connect(*args, **kwargs)
    statements: list[str] = []
    seen["connections"].append(statements)
    conn.set_trace_callback(statements.append)
    return conn


def report() -> None:
    with open(os.environ["OUTBOX_AS_MACOS_REPORT"], "w", encoding="utf-8") as out:
        json.dump(seen, out)


fcntl.F_FULLFSYNC = F_FULLFSYNC  # type: ignore[attr-defined]
fcntl.fcntl = fcntl_as_on_macos  # type: ignore[assignment]
os.fsync = counted_fsync  # type: ignore[assignment]
sqlite3.connect = traced_connect  # type: ignore[assignment]
atexit.register(report)

linux, sys.platform = sys.platform, "darwin"
from outbox import platform  # noqa: E402

assert platform.this_system().full_fsync is not None  # macOS' calls, taken now
sys.platform = linux
sys.argv = ["outbox", *sys.argv[1:]]
runpy.run_module("outbox", run_name="__main__", alter_sys=True)
