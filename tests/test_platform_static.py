"""Only ``outbox/platform.py`` knows which system it runs on: every other module of the package
is parsed, and none may look at ``sys.platform`` or ``os.name``, probe a module for what this
system has, or call what differs between systems (``os.kill``, ``fsync``, renames, signal
handlers, ``fcntl``, ``msvcrt``, ``ctypes``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import outbox

PACKAGE = Path(outbox.__file__).parent
PLATFORM_MODULE = PACKAGE / "platform.py"

#: Attributes of these modules that are either a platform check or an operation that differs
#: between systems (outbox.platform has the portable version of each).
FORBIDDEN_ATTRIBUTES = {
    "os": {
        "name": "os.name is a platform check",
        "uname": "os.uname is a platform check",
        "kill": "os.kill(pid, 0) is Ctrl-C on Windows: use platform.process_alive",
        "killpg": "process groups are POSIX only",
        "fsync": "fsync is not durable on macOS: use platform.sync_file / sync_folder",
        "fdatasync": "not durable on macOS: use platform.sync_file",
        "replace": "use platform.replace (write-through and busy-file retries on Windows)",
        "rename": "use platform.move_if_free or platform.replace",
        "link": "use platform.hard_link (names are claimed by moves on Windows)",
        "unlink": "use platform.remove (Windows refuses to delete a file another process has open)",
        "remove": "use platform.remove (Windows refuses to delete a file another process has open)",
        "O_BINARY": "use platform.BINARY",
        "O_NOFOLLOW": "use platform.NO_FOLLOW",
        "O_NONBLOCK": "use platform.NO_BLOCK",
        "O_CLOEXEC": "use platform.CLOSE_ON_EXEC",
        "O_NOINHERIT": "use platform.CLOSE_ON_EXEC",
    },
    "sys": {
        "platform": "sys.platform is a platform check",
        "getwindowsversion": "a platform check",
    },
    "signal": {
        "signal": "stop signals differ per system: use platform.on_stop_request",
        "SIGTERM": "stop signals differ per system: use platform.on_stop_request",
        "SIGBREAK": "stop signals differ per system: use platform.on_stop_request",
    },
}
#: Methods (of ``Path``) that delete or rename a file, bypassing outbox.platform, whatever
#: object they are called on (``.replace`` is left out: it is also ``str.replace``).
FORBIDDEN_METHODS = {
    "unlink": "Path.unlink: use platform.remove (retries a busy file on Windows)",
    "rename": "Path.rename: use platform.move_if_free or platform.replace",
    "hardlink_to": "Path.hardlink_to: use platform.hard_link",
}
#: Modules that exist on one system only, or that are how code branches on the system.
FORBIDDEN_MODULES = {
    "fcntl": "POSIX only (F_FULLFSYNC lives in platform.sync_file)",
    "msvcrt": "Windows only",
    "winreg": "Windows only",
    "_winapi": "Windows only",
    "ctypes": "calls into the system's own libraries (ctypes.windll...) belong in outbox.platform",
    "platform": "the standard library's platform module is a platform check",
    "termios": "POSIX only",
    "resource": "POSIX only",
    "pwd": "POSIX only",
    "grp": "POSIX only",
}


def platform_dependent_code(source: str, filename: str = "<module>") -> list[str]:
    """Every place in ``source`` that depends on the system it runs on, as ``line: why``."""
    tree = ast.parse(source, filename)
    modules: dict[str, str] = {}  # local name -> the module it is bound to
    found: list[str] = []

    def flag(node: ast.AST, why: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {why}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    flag(node, f"import {alias.name}: {FORBIDDEN_MODULES[top]}")
                modules[alias.asname or top] = top if alias.asname is None else alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                flag(node, f"from {node.module} import ...: {FORBIDDEN_MODULES[top]}")
            for alias in node.names:
                why = FORBIDDEN_ATTRIBUTES.get(node.module, {}).get(alias.name)
                if why:
                    flag(node, f"from {node.module} import {alias.name}: {why}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = modules.get(node.value.id)
            why = FORBIDDEN_ATTRIBUTES.get(module or "", {}).get(node.attr)
            if why:
                flag(node, f"{node.value.id}.{node.attr}: {why}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in FORBIDDEN_METHODS
            and not (isinstance(node.func.value, ast.Name) and node.func.value.id in modules)
        ):
            flag(node, f".{node.func.attr}(): {FORBIDDEN_METHODS[node.func.attr]}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and node.args
            and isinstance(node.args[0], ast.Name)
            and modules.get(node.args[0].id) in FORBIDDEN_ATTRIBUTES
        ):
            flag(node, f"{node.func.id}({node.args[0].id}, ...) probes what this system has")
    return found


def test_no_module_but_the_platform_module_depends_on_the_system() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert PLATFORM_MODULE in modules and len(modules) > 30
    found = []
    for path in modules:
        if path == PLATFORM_MODULE:
            continue
        found += platform_dependent_code(
            path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent))
        )
    assert found == []


def test_the_platform_module_is_where_those_differences_are() -> None:
    found = platform_dependent_code(PLATFORM_MODULE.read_text(encoding="utf-8"))
    assert any("sys.platform" in line for line in found)
    assert any("os.kill" in line for line in found)
    assert any("os.fsync" in line for line in found)
    assert any("import fcntl" in line for line in found)
    assert any("import ctypes" in line for line in found)
    assert any("signal.signal" in line for line in found)


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nif sys.platform == 'win32': pass",
        "import os\nWINDOWS = os.name == 'nt'",
        "import os\nos.kill(1, 0)",
        "import os as system\nsystem.fsync(3)",
        "from os import kill\n",
        "from sys import platform\n",
        "import os\nos.replace('a', 'b')",
        "import os\nflags = os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0)",
        "import os\nfd = os.open('x', os.O_NOFOLLOW)",
        "import fcntl\n",
        "import msvcrt\n",
        "from ctypes import windll\n",
        "import ctypes\nctypes.windll.kernel32.GetLastError()",
        "import signal\nsignal.signal(signal.SIGTERM, print)",
        "import platform\nplatform.system()",
        "import sys\nhasattr(sys, 'getwindowsversion')",
        "import os\nos.unlink('x')",
        "from os import remove\n",
        "path.unlink(missing_ok=True)",
        "folder.joinpath('a').rename('b')",
        "Path('a').hardlink_to('b')",
    ],
)
def test_the_check_finds_each_kind_of_platform_dependence(source: str) -> None:
    assert platform_dependent_code(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.path.join('a', 'b'); os.open('x', os.O_RDONLY); os.getpid()",
        "from . import platform\nplatform.sync_file(3); platform.RULES.liveness",
        "from .platform import on_stop_request, process_alive\n",
        "import sys\nsys.stdout.write('x'); sys.executable",
        "import signal\nsignal.SIGINT",
        "name = 'x'\nname.replace('a', 'b')",
    ],
)
def test_the_check_leaves_portable_code_alone(source: str) -> None:
    assert platform_dependent_code(source) == []
