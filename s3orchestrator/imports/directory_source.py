"""What a directory store holds that the daemon did not write, for an import: its
plain files, in key order (the key is the path under the root, ``/``-separated).

The walk runs in the thread pool and yields keys in bytewise order without listing
the whole tree: in each directory, a subdirectory sorts as its name followed by
``/`` (every key under it starts so), and a subtree wholly before the checkpoint or
outside the prefix is not entered. Each file is read once for its MD5 (its ETag, as
a PUT of it would have). Symbolic links and special files are skipped; so are the
root's dot entries (``.tmp``, ``.uploads``) and the configured buckets' directories.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
from itertools import islice
from typing import Any, AsyncIterator, Iterator

import attrs
from twisted.internet.threads import deferToThreadPool

from s3orchestrator.config import DirectoryStoreConfig
from s3orchestrator.imports.areas import area_of, counted_skips, imported_location, skip_reason
from s3orchestrator.imports.batch import Batch
from s3orchestrator.metadata.imports import FoundObject
from s3orchestrator.s3.headers import DEFAULT_CONTENT_TYPE

#: Files per batch recorded.
BATCH_SIZE = 100
_READ = 1024 * 1024


@attrs.frozen
class _Walked:
    found: list[FoundObject]
    skipped: int
    last_key: str | None


def _entries(root: bytes, relative: bytes) -> list[tuple[bytes, bytes, bool]]:
    """(sort key, relative path, is a directory) of a directory's entries, in key order;
    symbolic links and special files as files (skipped later)."""
    entries = []
    with os.scandir(os.path.join(root, relative) if relative else root) as scan:
        for entry in scan:
            name = relative + b"/" + entry.name if relative else entry.name
            is_directory = entry.is_dir(follow_symlinks=False)
            entries.append((name + b"/" if is_directory else name, name, is_directory))
    entries.sort()
    return entries


def walk(
    root: bytes, prefix: bytes, after: bytes, own: frozenset[bytes] = frozenset(), relative: bytes = b""
) -> Iterator[bytes]:
    """The paths of the entries under ``root`` (directories excluded) starting with
    ``prefix`` and sorting after ``after``, in bytewise order; the root's directories
    named in ``own`` or starting with a dot are not entered."""
    for sort_key, name, is_directory in _entries(root, relative):
        if is_directory:
            if not (sort_key.startswith(prefix) or prefix.startswith(sort_key)):
                continue
            if sort_key < after and not after.startswith(sort_key):
                continue  # every key in there sorts before the checkpoint
            if not relative and (name.startswith(b".") or name in own):
                continue  # the store's own temp and upload areas, the buckets' objects
            yield from walk(root, prefix, after, own, name)
        elif name.startswith(prefix) and name > after:
            yield name


def _describe(config: DirectoryStoreConfig, root: bytes, name: bytes, key: str) -> FoundObject | None:
    """The file as an object (None: not a plain file, or gone)."""
    path = os.path.join(root, name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        # O_NONBLOCK: a FIFO must not hang the walk (it is no plain file: skipped below).
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        with open(os.open(path, flags), "rb") as file:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode):
                return None
            while chunk := file.read(_READ):
                digest.update(chunk)
    except OSError:
        return None  # a symbolic link (ELOOP), a special file, or gone
    return FoundObject(
        key=key,
        location=imported_location(config, key),
        area=area_of(key),
        size=status.st_size,
        etag=digest.hexdigest(),
        content_type=mimetypes.guess_type(key, strict=True)[0] or DEFAULT_CONTENT_TYPE,
        last_modified_ms=int(status.st_mtime * 1000),
    )


def walk_batch(config: DirectoryStoreConfig, prefix: str, after: str, own: frozenset[str], limit: int) -> _Walked:
    """Up to ``limit`` files after ``after`` (blocking: run in a thread)."""
    root = os.fsencode(os.path.abspath(config.path))
    found: list[FoundObject] = []
    skipped = 0
    last: str | None = None
    own_names = frozenset(os.fsencode(area) for area in own)
    for name in islice(walk(root, prefix.encode("utf-8"), after.encode("utf-8"), own_names), limit):
        try:
            key = name.decode("utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        last = key
        reason = skip_reason(config, key, own)
        if reason is not None:
            skipped += counted_skips([reason])
            continue
        described = _describe(config, root, name, key)
        if described is None:
            skipped += 1
        else:
            found.append(described)
    return _Walked(found, skipped, last)


class DirectorySource:
    """The plain files of a directory store under a prefix, in key order."""

    def __init__(self, config: DirectoryStoreConfig, reactor: Any, own: frozenset[str]) -> None:
        self.config = config
        self.own = own
        self._reactor = reactor

    async def batches(self, prefix: str, after: str) -> AsyncIterator[Batch]:
        """One batch per ``BATCH_SIZE`` files, from the first key after ``after``."""
        while True:
            walked: _Walked = await deferToThreadPool(
                self._reactor, self._reactor.getThreadPool(), walk_batch, self.config, prefix, after, self.own,
                BATCH_SIZE,
            )
            if walked.last_key is None:
                return
            yield Batch(walked.found, walked.skipped, walked.last_key)
            after = walked.last_key

    async def close(self) -> None:
        """Nothing to close."""
