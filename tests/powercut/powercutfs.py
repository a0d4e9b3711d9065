"""A file system that forgets everything that was not fsynced, as a power cut does.

``python powercutfs.py BACKING MOUNTPOINT CONTROL_SOCKET [NAME_MAX]`` serves MOUNTPOINT (FUSE,
through mfusepy and the distribution's libfuse3) until it is unmounted; NAME_MAX (default 255)
is the longest name it takes, in bytes.

The model, which is the strict reading of POSIX that crash-consistency research uses (ALICE,
LazyFS):

- Everything a program does happens in memory first: file contents, and the entries of every
  folder (create, mkdir, rename, link, unlink, rmdir).
- ``fsync`` of a file makes that file's contents (and size and mode) durable: they are written
  to the backing folder. Nothing else becomes durable: not the file's name, not other files.
- ``fsync`` of a folder makes that folder's entries durable, exactly as they are at that moment.
  A file renamed from one folder to another is durable in its new place once the new folder is
  fsynced, and gone from its old place once the old folder is.
- A name whose file was never fsynced survives as an empty file (the classic zero-length file).

The backing folder therefore holds exactly what a disk would hold after a power cut: ``tree.json``
(the durable entries of each folder and the mode of each inode) and ``inodes/N`` (the durable
contents of file N). Mounting loads only that. The control call ``cut`` (over the Unix socket)
freezes the backing folder at that instant -- every later operation fails with EIO -- and the
caller then unmounts, which throws away everything in memory: every unsynced change is gone.
``stats`` returns how many fsyncs the programs asked for, per path.

One lock serialises all operations: simple beats fast here, and the programs under test do
small I/O.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mfusepy

ROOT = 1


@dataclass
class Node:
    """One inode, as the programs see it now (not necessarily as the disk holds it)."""

    ino: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] | None = None  # folders only
    nlink: int = 0  # files only: names pointing at it
    #: Lowest offset changed since the contents were last made durable; None when unchanged.
    dirty_from: int | None = None
    mtime_ns: int = field(default_factory=time.time_ns)
    ctime_ns: int = field(default_factory=time.time_ns)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def changed(self, offset: int) -> None:
        self.dirty_from = offset if self.dirty_from is None else min(self.dirty_from, offset)
        self.mtime_ns = self.ctime_ns = time.time_ns()


def _fail(code: int) -> mfusepy.FuseOSError:
    return mfusepy.FuseOSError(code)


class PowerCutFS(mfusepy.Operations):
    """The operations; state in memory, durable state in ``backing``."""

    use_ns = True

    def __init__(self, backing: Path, name_max: int = 255) -> None:
        self.backing = backing
        #: The longest name, in bytes, this file system takes (ext4: 255, eCryptfs: 143).
        self.name_max = name_max
        self.blobs = backing / "inodes"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.RLock()  # not "lock": that name is the POSIX-lock operation
        self.frozen = False
        self.fsyncs: collections.Counter[str] = collections.Counter()
        self.fsyncdirs: collections.Counter[str] = collections.Counter()
        self.nodes: dict[int, Node] = {}
        self.durable_modes: dict[int, int] = {}
        self.durable_dirs: dict[int, dict[str, int]] = {}
        self._load()

    # -- the disk ------------------------------------------------------------------------

    def _load(self) -> None:
        """Mount: what the backing folder holds is all there is."""
        tree_file = self.backing / "tree.json"
        if tree_file.exists():
            tree = json.loads(tree_file.read_text())
            modes = {int(k): v for k, v in tree["modes"].items()}
            dirs = {int(k): {n: int(i) for n, i in v.items()} for k, v in tree["dirs"].items()}
        else:
            modes, dirs = {ROOT: stat.S_IFDIR | 0o755}, {}
        pending = [ROOT]
        self.nodes[ROOT] = Node(ROOT, modes[ROOT], entries={})
        while pending:
            folder = self.nodes[pending.pop()]
            assert folder.entries is not None
            for name, ino in sorted(dirs.get(folder.ino, {}).items()):
                if ino in self.nodes and self.nodes[ino].is_dir:
                    continue  # a folder reachable twice (a half-durable folder move): keep one
                if ino not in self.nodes:
                    node = Node(ino, modes[ino])
                    if node.is_dir:
                        node.entries = {}
                        pending.append(ino)
                    elif (self.blobs / str(ino)).exists():
                        node.data = bytearray((self.blobs / str(ino)).read_bytes())
                    self.nodes[ino] = node
                folder.entries[name] = ino
                self.nodes[ino].nlink += 1
        # Inodes no durable name reaches are gone, as after fsck.
        for blob in self.blobs.iterdir():
            if int(blob.name) not in self.nodes:
                blob.unlink()
        self.durable_modes = {ino: node.mode for ino, node in self.nodes.items()}
        self.durable_dirs = {
            ino: dict(node.entries) for ino, node in self.nodes.items() if node.entries
        }
        self._write_tree()
        self.next_ino = max(self.nodes) + 1

    def _write_tree(self) -> None:
        tree = {"modes": self.durable_modes, "dirs": self.durable_dirs}
        temporary = self.backing / "tree.json.tmp"
        temporary.write_text(json.dumps(tree))
        os.replace(temporary, self.backing / "tree.json")

    def _sync_file(self, node: Node) -> None:
        if node.dirty_from is not None:
            fd = os.open(self.blobs / str(node.ino), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, bytes(node.data[node.dirty_from :]), node.dirty_from)
                os.ftruncate(fd, len(node.data))
            finally:
                os.close(fd)
            node.dirty_from = None
        if self.durable_modes.get(node.ino) != node.mode:
            self.durable_modes[node.ino] = node.mode
            self._write_tree()

    def _sync_dir(self, node: Node) -> None:
        assert node.entries is not None
        self.durable_dirs[node.ino] = dict(node.entries)
        self.durable_modes[node.ino] = node.mode
        for ino in node.entries.values():
            # The inode a durable name points at exists on disk, with empty contents if its
            # own data was never synced.
            self.durable_modes.setdefault(ino, self.nodes[ino].mode)
        self._write_tree()

    # -- control -------------------------------------------------------------------------

    def cut(self) -> None:
        """The power goes: the backing folder keeps what it holds now, nothing more."""
        with self._mutex:
            self.frozen = True

    def stats(self) -> dict[str, Any]:
        with self._mutex:
            return {
                "fsync": sum(self.fsyncs.values()),
                "fsyncdir": sum(self.fsyncdirs.values()),
                "fsync_by_path": dict(self.fsyncs),
                "fsyncdir_by_path": dict(self.fsyncdirs),
            }

    # -- helpers -------------------------------------------------------------------------

    @contextmanager
    def _op(self) -> Iterator[None]:
        with self._mutex:
            if self.frozen:
                raise _fail(errno.EIO)
            yield

    def _lookup(self, path: str) -> Node:
        node = self.nodes[ROOT]
        for part in path.strip("/").split("/"):
            if not part:
                continue
            if node.entries is None:
                raise _fail(errno.ENOTDIR)
            if part not in node.entries:
                raise _fail(errno.ENOENT)
            node = self.nodes[node.entries[part]]
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        if len(name.encode("utf-8", "surrogateescape")) > self.name_max:
            raise _fail(errno.ENAMETOOLONG)
        parent = self._lookup(head or "/")
        if parent.entries is None:
            raise _fail(errno.ENOTDIR)
        return parent, name

    def _node(self, path: str | None, fh: int | None) -> Node:
        if fh:
            return self.nodes[fh]
        if path is None:
            raise _fail(errno.EBADF)
        return self._lookup(path)

    def _new(self, mode: int, entries: dict[str, int] | None = None) -> Node:
        node = Node(self.next_ino, mode, entries=entries, dirty_from=0)
        self.nodes[node.ino] = node
        self.next_ino += 1
        return node

    def _drop_name(self, parent: Node, name: str) -> None:
        assert parent.entries is not None
        node = self.nodes[parent.entries.pop(name)]
        node.nlink -= 1
        parent.mtime_ns = parent.ctime_ns = node.ctime_ns = time.time_ns()

    # -- metadata ------------------------------------------------------------------------

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        with self._op():
            node = self._node(path, fh)
            if node.entries is not None:
                nlink = 2 + sum(self.nodes[i].is_dir for i in node.entries.values())
                size = 4096
            else:
                nlink, size = node.nlink, len(node.data)
            return {
                "st_ino": node.ino,
                "st_mode": node.mode,
                "st_nlink": nlink,
                "st_size": size,
                "st_blocks": (size + 511) // 512,
                "st_blksize": 4096,
                "st_uid": os.getuid(),
                "st_gid": os.getgid(),
                "st_atime": node.mtime_ns,
                "st_mtime": node.mtime_ns,
                "st_ctime": node.ctime_ns,
            }

    def access(self, path: str, amode: int) -> int:
        with self._op():
            self._lookup(path)
            return 0

    def chmod(self, path: str | None, mode: int) -> int:
        with self._op():
            node = self._node(path, None)
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(mode)
            node.ctime_ns = time.time_ns()
            return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        with self._op():
            self._node(path, None)
            return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        with self._op():
            node = self._node(path, None)
            node.mtime_ns = times[1] if times else time.time_ns()
            return 0

    def statfs(self, path: str) -> dict[str, int]:
        with self._op():
            blocks = 1 << 22
            return {
                "f_bsize": 4096,
                "f_frsize": 4096,
                "f_blocks": blocks,
                "f_bfree": blocks // 2,
                "f_bavail": blocks // 2,
                "f_files": 1 << 20,
                "f_ffree": (1 << 20) - len(self.nodes),
                "f_namemax": self.name_max,
            }

    # -- folders -------------------------------------------------------------------------

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        with self._op():
            node = self._lookup(path)
            if node.entries is None:
                raise _fail(errno.ENOTDIR)
            listing = [(".", node.ino), ("..", node.ino), *node.entries.items()]
            # With use_ino, an entry without st_ino reads as deleted: give every one its own.
            return [(n, {"st_ino": i, "st_mode": self.nodes[i].mode}, 0) for n, i in listing]

    def opendir(self, path: str) -> int:
        with self._op():
            if self._lookup(path).entries is None:
                raise _fail(errno.ENOTDIR)
            return 0

    def releasedir(self, path: str | None, fh: int) -> int:
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._op():
            parent, name = self._parent(path)
            assert parent.entries is not None
            if name in parent.entries:
                raise _fail(errno.EEXIST)
            node = self._new(stat.S_IFDIR | stat.S_IMODE(mode), entries={})
            parent.entries[name] = node.ino
            parent.mtime_ns = parent.ctime_ns = time.time_ns()
            return 0

    def rmdir(self, path: str) -> int:
        with self._op():
            parent, name = self._parent(path)
            node = self._lookup(path)
            if node.entries is None:
                raise _fail(errno.ENOTDIR)
            if node.entries:
                raise _fail(errno.ENOTEMPTY)
            self._drop_name(parent, name)
            return 0

    def unlink(self, path: str) -> int:
        with self._op():
            parent, name = self._parent(path)
            if self._lookup(path).is_dir:
                raise _fail(errno.EISDIR)
            self._drop_name(parent, name)
            return 0

    def link(self, target: str, source: str) -> int:
        """Make ``target`` a new name of the file ``source``."""
        with self._op():
            node = self._lookup(source)
            if node.is_dir:
                raise _fail(errno.EPERM)
            parent, name = self._parent(target)
            assert parent.entries is not None
            if name in parent.entries:
                raise _fail(errno.EEXIST)
            parent.entries[name] = node.ino
            node.nlink += 1
            parent.mtime_ns = parent.ctime_ns = node.ctime_ns = time.time_ns()
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._op():
            old_parent, old_name = self._parent(old)
            new_parent, new_name = self._parent(new)
            assert old_parent.entries is not None and new_parent.entries is not None
            node = self._lookup(old)
            if node.is_dir and (new + "/").startswith(old.rstrip("/") + "/"):
                raise _fail(errno.EINVAL)
            replaced = new_parent.entries.get(new_name)
            if replaced == node.ino:
                return 0  # two names of one file: POSIX says do nothing
            if replaced is not None:
                victim = self.nodes[replaced]
                if node.is_dir and victim.entries:
                    raise _fail(errno.ENOTEMPTY)
                if node.is_dir != victim.is_dir:
                    raise _fail(errno.EISDIR if victim.is_dir else errno.ENOTDIR)
                self._drop_name(new_parent, new_name)
            del old_parent.entries[old_name]
            new_parent.entries[new_name] = node.ino
            now = time.time_ns()
            old_parent.mtime_ns = old_parent.ctime_ns = new_parent.mtime_ns = now
            new_parent.ctime_ns = node.ctime_ns = now
            return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        with self._op():
            node = self._node(path, None)
            if node.entries is None:
                raise _fail(errno.ENOTDIR)
            self.fsyncdirs[path or "?"] += 1
            self._sync_dir(node)
            return 0

    # -- files ---------------------------------------------------------------------------

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        with self._op():
            parent, name = self._parent(path)
            assert parent.entries is not None
            if name in parent.entries:
                if flags & os.O_EXCL:
                    raise _fail(errno.EEXIST)
                return self.open(path, flags)
            node = self._new(stat.S_IFREG | stat.S_IMODE(mode))
            node.nlink = 1
            parent.entries[name] = node.ino
            parent.mtime_ns = parent.ctime_ns = time.time_ns()
            return node.ino

    def open(self, path: str, flags: int) -> int:
        with self._op():
            node = self._lookup(path)
            if node.is_dir:
                raise _fail(errno.EISDIR)
            if flags & os.O_TRUNC and node.data:
                node.changed(0)
                del node.data[:]
            return node.ino

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self._op():
            return bytes(self._node(path, fh).data[offset : offset + size])

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        with self._op():
            node = self._node(path, fh)
            length = len(node.data)
            if offset > length:
                node.data.extend(bytes(offset - length))
            node.changed(min(offset, length))
            node.data[offset : offset + len(data)] = data
            return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self._op():
            node = self._node(path, fh)
            if node.is_dir:
                raise _fail(errno.EISDIR)
            old = len(node.data)
            if length != old:
                node.changed(min(old, length))
                if length < old:
                    del node.data[length:]
                else:
                    node.data.extend(bytes(length - old))
            return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def release(self, path: str | None, fh: int) -> int:
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self._op():
            node = self._node(path, fh)
            self.fsyncs[path or f"<inode {node.ino}>"] += 1
            self._sync_file(node)
            return 0


def _serve_control(fs: PowerCutFS, control: Path) -> None:
    """Answer ``cut`` and ``stats``, one command per connection, as JSON."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(control))
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn:
            command = conn.makefile("r").readline().strip()
            if command == "cut":
                fs.cut()
                reply: dict[str, Any] = {"ok": True, **fs.stats()}
            elif command == "stats":
                reply = {"ok": True, **fs.stats()}
            else:
                reply = {"ok": False, "error": f"unknown command {command!r}"}
            conn.sendall(json.dumps(reply).encode() + b"\n")


def main(argv: list[str]) -> int:
    backing, mountpoint, control = (Path(arg) for arg in argv[:3])
    fs = PowerCutFS(backing, *(int(arg) for arg in argv[3:4]))
    control.unlink(missing_ok=True)
    threading.Thread(target=_serve_control, args=(fs, control), daemon=True).start()
    mfusepy.FUSE(
        fs,
        str(mountpoint),
        foreground=True,
        nothreads=False,  # SQLite in WAL mode needs a multi-threaded server
        fsname="powercutfs",
        hard_remove=True,  # an unlinked open file is gone, not renamed to .fuse_hidden*
        use_ino=True,  # st_ino is ours, stable for hard links
        attr_timeout=0,  # the kernel must not remember sizes we are about to forget
        entry_timeout=0,
        negative_timeout=0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
