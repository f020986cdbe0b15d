"""Per-process temp directories of a directory store, and the sweep of dead ones.

Several processes (daemons on one database, ``server.workers``) may share one
directory store. Each writes its temp files under its own directory
``<root>/.tmp/<pid>-<random>`` and holds an exclusive ``flock`` on that directory
for its lifetime; the kernel drops the lock when the process dies, however it dies.
A sweep removes only the directories whose lock it can take (their process is
gone), so no process removes the temp files of another's writes in progress.
All functions block: run them in a thread.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid

_OPEN_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _try_lock(path: bytes) -> int | None:
    """Open the directory ``path`` and take its lock; the fd, or None if it is gone or held."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None  # gone, or not a directory
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def claim(temp_root: bytes) -> tuple[bytes, int]:
    """Make and lock a new owner directory under ``temp_root``; return its path and the
    fd holding the lock (keep it open as long as the directory is in use)."""
    os.makedirs(temp_root, exist_ok=True)
    while True:
        path = os.path.join(temp_root, f"{os.getpid()}-{uuid.uuid4().hex[:16]}".encode("ascii"))
        os.mkdir(path, 0o700)
        fd = _try_lock(path)
        if fd is None:
            continue  # a sweep took it between mkdir and lock: it removes it
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return path, fd
        except FileNotFoundError:
            pass  # a sweep locked, removed and released it before we locked
        os.close(fd)


def sweep(temp_root: bytes, own: bytes | None, loose_files: bool) -> int:
    """Remove the owner directories under ``temp_root`` no live process holds (never
    ``own``) and, if ``loose_files``, files directly in ``temp_root`` (left by older
    versions, which wrote there); return how many entries were removed."""
    removed = 0
    try:
        entries = list(os.scandir(temp_root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        path = entry.path
        if path == own:
            continue
        if entry.is_dir(follow_symlinks=False):
            fd = _try_lock(path)
            if fd is None:
                continue  # a live process's, or gone
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                os.close(fd)
            removed += 1
        elif loose_files:
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed
