"""Multipart uploads of the directory store: parts as files, joined into the object at Complete.

The layout (``<root>/.uploads/<upload id>/<part number>``) is described in the
``directory`` module's docstring; this module builds on its writes and helpers.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3orchestrator.stores.directory import (
    DirectoryWrite,
    _copy_fd,
    _create_temp,
    _fsync_directory,
    _make_directories,
    _unavailable,
    _unlink_quietly,
)
from s3orchestrator.stores.interface import IObjectWrite, IPartWrite, ObjectMissing, StoredPart, StoreUnavailable

__all__ = ["MAX_PART_NUMBER", "DirectoryCompletion", "DirectoryPartWrite", "DirectoryUploads"]

MAX_PART_NUMBER = 10000
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
# How often removing an upload starts over when a part was published into it meanwhile.
_REMOVE_ATTEMPTS = 5

_log = Logger()


# -- validation (pure) -------------------------------------------------------------------------


def _upload_name(upload_id: str) -> bytes:
    if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
        raise ValueError(f"malformed upload id {upload_id!r}")
    return upload_id.encode("ascii")


def _part_name(part_number: int) -> bytes:
    if not isinstance(part_number, int) or isinstance(part_number, bool) or not 1 <= part_number <= MAX_PART_NUMBER:
        raise ValueError(f"part number {part_number!r} is not in 1..{MAX_PART_NUMBER}")
    return str(part_number).encode("ascii")


# -- blocking helpers (run in the thread pool) -------------------------------------------------


def _make_upload(directory: bytes, root: bytes) -> None:
    uploads = os.path.dirname(directory)
    created = _make_directories(uploads, root)
    os.mkdir(directory)
    for parent in {uploads, *(os.path.dirname(path) for path in created)}:
        _fsync_directory(parent)


def _install_part(temp: bytes, final: bytes) -> None:
    """Rename the synced temp file onto the part file, durably; or remove it.

    Unlike an object's install this creates no directory: a missing upload
    directory means the upload was aborted (or completed), and recreating it
    would resurrect a part nobody will remove.
    """
    try:
        try:
            os.replace(temp, final)
        except FileNotFoundError:
            if not os.path.exists(temp):
                raise
            raise ObjectMissing(f"the upload of {os.fsdecode(final)} no longer exists") from None
        _fsync_directory(os.path.dirname(final))
    except BaseException:
        _unlink_quietly(temp)
        raise


def _append(target: int, source_path: bytes, size: int, description: str) -> None:
    try:
        source = os.open(source_path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectMissing(f"{description} is missing") from None
    try:
        actual = os.fstat(source).st_size
        if actual != size:
            raise ObjectMissing(f"{description} has {actual} bytes, not {size}")
        copied = _copy_fd(source, target, size)
        if copied != size:
            raise StoreUnavailable(f"{description} ended after {copied} of {size} bytes")
    finally:
        os.close(source)


def _join(temp: bytes, sources: Sequence[tuple[bytes, int, str]]) -> None:
    """Append the files ``sources`` ((path, size, description) each) to a new, synced
    temp file; or leave nothing."""
    target = _create_temp(temp)
    try:
        for path, size, description in sources:
            _append(target, path, size, description)
        os.fsync(target)
    except BaseException:
        os.close(target)
        _unlink_quietly(temp)
        raise
    os.close(target)


def _remove_upload(directory: bytes) -> None:
    """Remove an upload's directory and parts; succeed if it is gone already."""
    for _ in range(_REMOVE_ATTEMPTS):
        try:
            shutil.rmtree(directory)
            return
        except FileNotFoundError:
            # Gone already, or a concurrent removal took a part from under rmtree.
            if not os.path.lexists(directory):
                return
        except OSError as error:
            # ENOTEMPTY: a part was published into it meanwhile; remove that one too.
            if error.errno != errno.ENOTEMPTY:
                raise
    raise StoreUnavailable(f"{os.fsdecode(directory)} kept getting new parts while being removed")


# -- writes ------------------------------------------------------------------------------------


@implementer(IPartWrite)
class DirectoryPartWrite(DirectoryWrite):
    """One part streamed like an object; ``publish`` renames it onto its part file
    (replacing an earlier part with that number) and fails with ObjectMissing if the
    upload's directory is gone."""

    def __init__(
        self, reactor: Any, body: IBodyProducer | None, length: int, temp: bytes, final: bytes, root: bytes
    ) -> None:
        super().__init__(reactor, body, length, temp, final, root)
        self.store_etag: str | None = None
        # First on ``done``, so every later callback sees the tag.
        self.done.addCallback(self._tag)

    def _tag(self, result: None) -> None:
        self.store_etag = os.fsdecode(os.path.basename(self._final))
        return result

    def install(self) -> None:
        """In a thread, for ``publish``: rename onto the part file, never creating its directory."""
        _install_part(self._temp, self._final)


class DirectoryCompletion(DirectoryWrite):
    """An upload's parts joined into a temp file; ``publish`` renames it to the
    object's path and then removes the upload (best effort: the object is complete)."""

    def __init__(
        self, reactor: Any, length: int, temp: bytes, final: bytes, root: bytes, upload: bytes, store_name: str
    ) -> None:
        super().__init__(reactor, None, length, temp, final, root)
        self._upload = upload
        self._store_name = store_name

    def install(self) -> None:
        """In a thread, for ``publish``: install the object, then remove the upload's directory."""
        super().install()
        try:
            _remove_upload(self._upload)
        except (OSError, StoreUnavailable) as error:
            _log.warn(
                "Store {store}: could not remove the completed upload {upload}: {error}",
                store=self._store_name,
                upload=os.fsdecode(os.path.basename(self._upload)),
                error=str(error),
            )


# -- the uploads of one store ------------------------------------------------------------------


class DirectoryUploads:
    """The multipart uploads of one DirectoryStore, which delegates its upload methods here.

    Upload ids and part numbers that could not have come from this store
    (``create_upload``, 1..10000) are refused with ValueError, as are unmappable
    locations: through the Deferred or ``done``, like the store's other calls.
    """

    def __init__(
        self,
        store_name: str,
        reactor: Any,
        root: bytes,
        temp_path: Callable[[], bytes],
        uploads_directory: bytes,
        path_for: Callable[[str], bytes],
    ) -> None:
        self._store_name = store_name
        self._reactor = reactor
        self._root = root
        self._temp_path = temp_path
        self._uploads_directory = uploads_directory
        self._path_for = path_for

    def _in_thread(self, func: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), func, *args)

    def _temp(self) -> bytes:
        return self._temp_path()

    def _directory(self, upload_id: str) -> bytes:
        return os.path.join(self._uploads_directory, _upload_name(upload_id))

    def create(self, location: str) -> Deferred[str]:
        """Make a new upload's (empty) directory durably; fire with its id."""
        try:
            self._path_for(location)
        except ValueError:
            return fail()
        upload_id = uuid.uuid4().hex
        d = self._in_thread(_make_upload, self._directory(upload_id), self._root)
        d.addCallbacks(lambda _: upload_id, _unavailable)
        return d

    def start_part_write(
        self, location: str, upload_id: str, part_number: int, body: IBodyProducer, length: int
    ) -> IPartWrite:
        """Stream ``body`` into a temp file (``done`` once synced, with ``store_etag``
        the part's file name); ``publish`` renames it onto the part's file."""
        try:
            if length < 0:
                raise ValueError("length must be >= 0")
            self._path_for(location)
            final = os.path.join(self._directory(upload_id), _part_name(part_number))
        except ValueError:
            return DirectoryPartWrite.failed(self._reactor, body, Failure())
        write = DirectoryPartWrite(self._reactor, body, length, self._temp(), final, self._root)
        write.start()
        return write

    def start_complete(self, location: str, upload_id: str, parts: Sequence[StoredPart]) -> IObjectWrite:
        """Join ``parts`` (in this order) into a synced temp file in a thread (``done``);
        ``publish`` renames it to ``location`` and removes the upload. A part missing or
        of another size fails ``done`` with ObjectMissing, leaving the upload intact."""
        try:
            final = self._path_for(location)
            directory = self._directory(upload_id)
            if not parts:
                raise ValueError("an upload is completed from at least one part")
            sources: list[tuple[bytes, int, str]] = []
            for part in parts:
                name = _part_name(part.number)
                if part.store_etag != name.decode("ascii"):
                    raise ValueError(f"part {part.number} has the tag {part.store_etag!r}, not this store's")
                if part.size < 0:
                    raise ValueError(f"part {part.number} has a negative size")
                sources.append((os.path.join(directory, name), part.size, f"part {part.number} of upload {upload_id}"))
        except ValueError:
            return DirectoryWrite.failed(self._reactor, None, Failure())
        temp = self._temp()
        length = sum(size for _, size, _ in sources)
        write = DirectoryCompletion(self._reactor, length, temp, final, self._root, directory, self._store_name)
        write.start_fill(_join, temp, sources)
        return write

    def abort(self, location: str, upload_id: str) -> Deferred[None]:
        """Remove the upload's directory and parts; succeed if it is gone already."""
        try:
            self._path_for(location)
            directory = self._directory(upload_id)
        except ValueError:
            return fail()
        d = self._in_thread(_remove_upload, directory)
        d.addErrback(_unavailable)
        return d
