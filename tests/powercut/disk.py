"""Mount, cut and remount the power-cut file system (``powercutfs.py``) from a test."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SERVER = Path(__file__).with_name("powercutfs.py")
#: How long mounting and unmounting may take before the test fails saying why.
PATIENCE = 30.0


class MountError(RuntimeError):
    """The file system could not be mounted or unmounted; the message says why."""


class PowerCutDisk:
    """A disk that loses power on demand: ``mountpoint`` is served from ``backing``.

    ``cut()`` is a power cut: the disk keeps what was fsynced, and the mount goes away.
    ``mount()`` again is the reboot. Every process using the mount must be dead (SIGKILL) before
    a cut, as it would be.
    """

    def __init__(self, root: Path, name_max: int = 255) -> None:
        self.name_max = name_max  # the longest name the disk takes, in bytes
        self.backing = root / "backing"
        self.mountpoint = root / "mnt"
        self.control = root / "control.sock"
        self.log = root / "powercutfs.log"
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._server: subprocess.Popen[bytes] | None = None

    def mount(self) -> Path:
        if self._server is not None:
            raise MountError(f"{self.mountpoint} is mounted already")
        if shutil.which("fusermount3") is None:
            raise MountError(
                "fusermount3 is missing: install the distribution's fuse3 package "
                "(.ci/run does: apt-get install -y fuse3)"
            )
        if not os.path.exists("/dev/fuse"):
            raise MountError("/dev/fuse is missing: this machine cannot mount FUSE file systems")
        with self.log.open("ab") as log:
            self._server = subprocess.Popen(
                [
                    sys.executable,
                    str(SERVER),
                    str(self.backing),
                    str(self.mountpoint),
                    str(self.control),
                    str(self.name_max),
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + PATIENCE
        while not (os.path.ismount(self.mountpoint) and self.control.exists()):
            if self._server.poll() is not None or time.monotonic() > deadline:
                self._stop_server()
                raise MountError(
                    f"cannot mount the power-cut file system on {self.mountpoint}:\n"
                    + self.log.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.01)
        return self.mountpoint

    def command(self, command: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(PATIENCE)
            conn.connect(str(self.control))
            conn.sendall(command.encode() + b"\n")
            reply: dict[str, Any] = json.loads(conn.makefile("r").readline())
        if not reply.get("ok"):
            raise MountError(f"powercutfs refused {command!r}: {reply}")
        return reply

    def stats(self) -> dict[str, Any]:
        """Fsyncs asked for since this mount, in total and per path."""
        return self.command("stats")

    def cut(self) -> dict[str, Any]:
        """The power goes: unsynced changes are lost. Returns the mount's fsync counts."""
        stats = self.command("cut")
        self._unmount()
        return stats

    def _unmount(self) -> None:
        deadline = time.monotonic() + PATIENCE
        while True:
            done = subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, text=True
            )
            if done.returncode == 0 or not os.path.ismount(self.mountpoint):
                break
            if time.monotonic() > deadline:  # something still holds it: detach it anyway
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
                break
            time.sleep(0.02)
        self._stop_server()

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        try:
            server.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        self.control.unlink(missing_ok=True)

    def close(self) -> None:
        """Unmount if mounted (as a cut: nothing unsynced is kept)."""
        if self._server is not None:
            try:
                self.cut()
            except (OSError, MountError):
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
                self._stop_server()
