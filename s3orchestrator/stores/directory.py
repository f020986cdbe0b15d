"""A store that keeps objects as files under a local directory.

Path scheme
-----------
A location is ``<bucket>/<key>`` and is split at every ``/`` into segments; every
segment but the last names a directory, the last names the file. Each segment is
escaped so that every location maps to exactly one path, distinct locations to
distinct paths, and nothing can leave the root:

- ``%``, ASCII control characters (``\\x01``-``\\x1f``, ``\\x7f``), a leading ``.``
  and the ``.`` of a trailing ``.d`` are percent-escaped (``%25``, ``%0A``,
  ``%2E``...); everything else, non-ASCII characters included, is kept (as UTF-8).
  So no name is ``.``, ``..`` or starts with ``.``: names starting with a dot in
  the root are ours (``.tmp`` for writes in progress, ``.uploads`` for multipart
  uploads).
- An empty segment (``a//b``, a key ending in ``/``) becomes ``%``, which no escaped
  segment can be (every other ``%`` is followed by two hex digits).
- Directory names get the suffix ``.d``, which no file name ends with, so the key
  ``a`` (file ``a``) and the key ``a/b`` (directory ``a.d``, file ``b``) coexist.
- A name longer than 255 bytes (the usual NAME_MAX) keeps the escaped segment's
  first ~180 bytes, then ``%%`` (never produced by escaping) and the SHA-256 of the
  whole segment, then ``.d`` for directories.

For example ``photos/2024/../x`` in bucket ``app`` is stored at
``app.d/photos.d/2024.d/%2E..d/x`` and the key ``docs/`` at ``app.d/docs.d/%``.

A location starting with ``/`` names a file that was in the store before the daemon
(``s3orchestrator import``): ``/photos/2024/a.jpg`` is the file ``photos/2024/a.jpg``
under the root, as it is. Its segments must be neither empty, ``.`` nor ``..``, and
its first must not start with ``.`` (the store's own ``.tmp`` and ``.uploads``).
Such a location is only read and deleted; the daemon writes at ``location_for``.
``/app.d/x`` names the file of ``app/x``: imports never record a path inside a
configured bucket's directory, nor may a bucket be configured over imported files
(``s3orchestrator.imports.areas``).

Locations that cannot be mapped (empty, NUL characters, no ``/`` at all, lone
surrogates, a bad imported path, or a resulting path of 4096 bytes or more) are
refused with ValueError, through the Deferred (``open_read``,
``delete``, ``create_upload``, ``abort_upload``) or ``IObjectWrite.done``
(``start_write`` and the other writes). The filesystem must be
case-sensitive and must not normalise Unicode (ext4, XFS, btrfs); ``start``
checks the first.

Writes go to ``<root>/.tmp/<owner>/<random>`` (same filesystem), are fsynced and
then renamed into place, so a reader sees the old object or the new one, never
part of one. ``<owner>`` is this process's own directory, locked while it lives, so
that several processes can share the store: ``start`` and every ``probe`` remove
the owner directories of dead processes only (see ``directory_temp``).

Multipart uploads
-----------------
An upload is the directory ``<root>/.uploads/<upload id>`` (32 hex digits, made by
``create_upload``), holding its parts as files named by their decimal part number
(``<root>/.uploads/0f3c.../7``). A part is written like an object (temp file,
fsync) and renamed onto its part file at ``publish``, replacing an earlier part
with the same number; the rename never recreates an upload directory that an
abort removed. Completing joins the parts, in the order given, into a temp file
(in-kernel copies where the filesystem can), syncs it and, at ``publish``, renames
it to the object's path and then removes the upload directory. ``abort_upload``
removes the directory. ``start`` keeps ``.uploads`` (uploads outlive restarts);
the metadata says which uploads exist, so a directory whose upload it no longer
knows is an orphan to remove with ``abort_upload``. The machinery lives in
``directory_multipart``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import uuid
from typing import Any, Callable, Self, Sequence

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IProducer, IPullProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3orchestrator.errors import S3Error
from s3orchestrator.stores import directory_temp
from s3orchestrator.stores.interface import (
    FileSender,
    IObjectReader,
    IObjectStore,
    IObjectWrite,
    IPartWrite,
    ObjectMissing,
    ObjectStat,
    StoredPart,
    StoreUnavailable,
    file_sender,
)

TEMP_DIRECTORY = ".tmp"
UPLOADS_DIRECTORY = ".uploads"
DIRECTORY_SUFFIX = ".d"
EMPTY_SEGMENT = "%"
HASH_MARK = "%%"
IMPORTED_MARK = "/"
READ_CHUNK = 256 * 1024
NAME_MAX = 255
PATH_MAX = 4096
# How often a write re-creates its parent directories when a concurrent delete
# removed them (now empty) between mkdir and rename.
_RENAME_ATTEMPTS = 20

_log = Logger()


# -- path mapping (pure) -----------------------------------------------------------------------


def _escape_segment(segment: str) -> list[str]:
    tokens: list[str] = []
    last = len(segment) - 1
    for index, char in enumerate(segment):
        code = ord(char)
        if (
            char == "%"
            or code < 0x20
            or code == 0x7F
            or (char == "." and (index == 0 or (index == last - 1 and segment[last] == "d")))
        ):
            tokens.append(f"%{code:02X}")
        else:
            tokens.append(char)
    return tokens or [EMPTY_SEGMENT]


def _name(segment: str, suffix: str) -> str:
    tokens = _escape_segment(segment)
    name = "".join(tokens) + suffix
    if len(name.encode("utf-8")) <= NAME_MAX:
        return name
    digest = hashlib.sha256(segment.encode("utf-8")).hexdigest()
    budget = NAME_MAX - len(HASH_MARK) - len(digest) - len(suffix)
    prefix: list[str] = []
    used = 0
    for token in tokens:
        size = len(token.encode("utf-8"))
        if used + size > budget:
            break
        prefix.append(token)
        used += size
    return "".join(prefix) + HASH_MARK + digest + suffix


def relative_path(location: str) -> str:
    """The path of ``location`` relative to a store's root (see the module docstring).

    Raises ValueError for a location that cannot be mapped.
    """
    if not isinstance(location, str) or not location:
        raise ValueError("empty location")
    if "\x00" in location:
        raise ValueError("location contains a NUL character")
    try:
        location.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("location is not valid Unicode") from error
    if location.startswith(IMPORTED_MARK):
        return imported_path(location)
    if "/" not in location:
        raise ValueError("location must be <bucket>/<key>")
    *directories, file_name = location.split("/")
    names = [_name(segment, DIRECTORY_SUFFIX) for segment in directories]
    names.append(_name(file_name, ""))
    return "/".join(names)


def imported_path(location: str) -> str:
    """The path of an imported file's location (``/<path>``) relative to the root;
    ValueError if it is not one."""
    segments = location.removeprefix(IMPORTED_MARK).split("/")
    if not location.startswith(IMPORTED_MARK) or any(segment in ("", ".", "..") for segment in segments):
        raise ValueError("an imported location is / and a relative path without empty, . or .. segments")
    if segments[0].startswith("."):
        raise ValueError("an imported location cannot name the store's own (dot) entries")
    return "/".join(segments)


# -- blocking helpers (run in the thread pool) -------------------------------------------------


def _fsync_directory(path: bytes) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: bytes) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        _log.warn("Could not remove temp file {path}: {error}", path=os.fsdecode(path), error=str(error))


def _make_directories(directory: bytes, root: bytes) -> list[bytes]:
    """Create ``directory`` and its missing ancestors below ``root``; return those created."""
    missing: list[bytes] = []
    current = directory
    while current != root and not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    if current == root and not os.path.isdir(root):
        raise StoreUnavailable("the store's root directory is missing")
    created: list[bytes] = []
    for path in reversed(missing):
        try:
            os.mkdir(path)
            created.append(path)
        except FileExistsError:
            pass
    return created


def _fsync_and_close(file: Any) -> None:
    try:
        os.fsync(file.fileno())
    finally:
        file.close()


def _copy_fd(source: int, target: int, length: int) -> int:
    """Copy up to ``length`` bytes from ``source`` to ``target`` (both at their offsets); return how many.

    Uses copy_file_range (in-kernel, a reflink on btrfs/XFS) where it works,
    else plain reads and writes.
    """
    copied = 0
    copy_file_range = getattr(os, "copy_file_range", None)
    while copied < length:
        count = min(length - copied, 1 << 30)
        if copy_file_range is not None:
            try:
                moved = copy_file_range(source, target, count)
            except OSError as error:
                unsupported = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM)
                if copied or error.errno not in unsupported:
                    raise
                copy_file_range = None
                continue
        else:
            data = os.read(source, min(count, 1 << 20))
            view = memoryview(data)
            while view:
                view = view[os.write(target, view):]
            moved = len(data)
        if not moved:
            break  # the source ended early
        copied += moved
    return copied


def _create_temp(temp: bytes) -> int:
    """Create the temp file ``temp`` (and its directory if a crash or an admin removed it); return its fd."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(temp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(temp), exist_ok=True)
        return os.open(temp, flags, 0o666)


def _copy(source: bytes, temp: bytes, length: int, location: str) -> None:
    """Copy the file ``source`` (``length`` bytes) into a new, synced temp file; or leave nothing."""
    try:
        source_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ObjectMissing(location) from None
    try:
        size = os.fstat(source_fd).st_size
        if size != length:
            raise StoreUnavailable(f"{location!r} has {size} bytes, not the {length} expected")
        target_fd = _create_temp(temp)
        try:
            copied = _copy_fd(source_fd, target_fd, length)
            if copied != length:
                raise StoreUnavailable(f"{location!r} ended after {copied} of {length} bytes")
            os.fsync(target_fd)
        except BaseException:
            os.close(target_fd)
            _unlink_quietly(temp)
            raise
        os.close(target_fd)
    finally:
        os.close(source_fd)


def _install(temp: bytes, final: bytes, root: bytes) -> None:
    """Rename the synced temp file into place and make the rename durable; or remove it."""
    try:
        parent = os.path.dirname(final)
        for _ in range(_RENAME_ATTEMPTS):
            try:
                created = _make_directories(parent, root)
                os.replace(temp, final)
                break
            except FileNotFoundError:
                if not os.path.exists(temp):
                    raise
                # A concurrent delete removed a parent directory it found empty: retry.
        else:
            raise StoreUnavailable("parent directories kept disappearing")
        for directory in {parent, *(os.path.dirname(path) for path in created)}:
            _fsync_directory(directory)
    except BaseException:
        _unlink_quietly(temp)
        raise


def _delete(path: bytes, bucket_directory: bytes) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    # Remove directories the delete left empty, up to (not including) the bucket's.
    directory = os.path.dirname(path)
    while directory != bucket_directory and directory.startswith(bucket_directory + b"/"):
        try:
            os.rmdir(directory)
        except OSError:
            # ENOTEMPTY: other objects, or a writer just created it; ENOENT: a
            # concurrent delete got there first. Either way, stop here.
            break
        directory = os.path.dirname(directory)


def _probe(temp_root: bytes, owner_directory: bytes) -> int:
    """Write, sync and remove a file in ``owner_directory``; sweep dead owners' temp files."""
    os.makedirs(owner_directory, exist_ok=True)
    path = os.path.join(owner_directory, b"probe-" + uuid.uuid4().hex.encode("ascii"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"probe")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)
    return directory_temp.sweep(temp_root, owner_directory, loose_files=False)


def _prepare(root: bytes, temp_root: bytes, uploads_directory: bytes) -> tuple[bytes, int, int]:
    """Make the store's directories, remove dead owners' temp files, claim an owner
    directory; return it, the fd holding its lock and how many entries were removed."""
    os.makedirs(temp_root, exist_ok=True)
    # Multipart uploads outlive restarts: their directory is made, never cleared.
    os.makedirs(uploads_directory, exist_ok=True)
    removed = directory_temp.sweep(temp_root, None, loose_files=True)
    owner_directory, fd = directory_temp.claim(temp_root)
    try:
        _check_case_sensitive(root, owner_directory)
    except BaseException:
        os.close(fd)
        raise
    return owner_directory, fd, removed


def _check_case_sensitive(root: bytes, directory: bytes) -> None:
    probe = os.path.join(directory, b"case-" + uuid.uuid4().hex.encode("ascii") + b"-A")
    with open(probe, "xb"):
        pass
    try:
        if os.path.exists(probe[:-1] + b"a"):
            raise StoreUnavailable(f"{os.fsdecode(root)} is on a case-insensitive filesystem")
    finally:
        os.unlink(probe)


def _unavailable(failure: Failure) -> Failure:
    if failure.check(OSError):
        return Failure(StoreUnavailable(f"I/O error: {failure.value}"))
    return failure


# -- writing -----------------------------------------------------------------------------------


@implementer(IConsumer)
class _FileConsumer:
    """What the body producer writes into: hands every chunk to its DirectoryWrite."""

    def __init__(self, write: DirectoryWrite) -> None:
        self._write = write

    def write(self, data: bytes) -> None:
        self._write._received(data)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._write._register(producer, streaming)

    def unregisterProducer(self) -> None:
        self._write._register(None, True)


@implementer(IObjectWrite)
class DirectoryWrite:
    """One object being written: temp file, fsync (``done``), rename into place (``publish``).

    States: writing (bytes arriving) -> syncing (fsync in a thread) -> staged
    (``done`` fired) -> installing (rename in a thread) -> published; or failed.
    ``abort`` works until installing starts. A copy (``start_copy``) or a joined
    multipart upload (``start_fill``) has no body: it starts in syncing, a thread
    filling and syncing the temp file. Subclasses change what ``publish`` does
    by overriding ``install``.
    """

    staged = True
    location_intact = True  # nothing reaches the location before publish

    def __init__(
        self,
        reactor: Any,
        body: IBodyProducer | None,
        length: int,
        temp: bytes,
        final: bytes,
        root: bytes,
    ) -> None:
        self.done: Deferred[None] = Deferred()
        self._reactor = reactor
        self._body = body
        self._length = length
        self._temp = temp
        self._final = final
        self._root = root
        self._state = "writing"
        self._file: Any = None
        self._written = 0
        self._pull_producer: IPullProducer | None = None

    @classmethod
    def failed(cls, reactor: Any, body: IBodyProducer | None, failure: Failure) -> Self:
        """A write that failed before it started (``done`` has already errbacked)."""
        write = cls(reactor, body, 0, b"", b"", b"")
        write._state = "failed"
        write.done.errback(failure)
        return write

    def start_copy(self, source: bytes, location: str) -> None:
        """Instead of ``start`` (no body): copy the file ``source`` into the temp file
        and sync it in a thread; ``done`` fires as for a write, ObjectMissing if
        ``source`` does not exist."""
        self.start_fill(_copy, source, self._temp, self._length, location)

    def start_fill(self, fill: Callable[..., None], *args: Any) -> None:
        """Instead of ``start`` (no body): ``fill(*args)`` creates and syncs the temp
        file in a thread (leaving nothing if it raises); ``done`` fires when it returns,
        errbacks with what it raised (OSError as StoreUnavailable)."""
        self._state = "syncing"
        filled = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fill, *args)
        filled.addCallbacks(self._synced, self._sync_failed)

    def start(self) -> None:
        """Open the temp file and start the body producer."""
        try:
            self._file = self._open_temp()
        except OSError as error:
            self._state = "failed"
            self.done.errback(StoreUnavailable(f"cannot create a temp file: {error}"))
            return
        assert self._body is not None
        try:
            produced = self._body.startProducing(_FileConsumer(self))
        except Exception:
            self._fail(Failure(), stop_body=False)
            return
        produced.addCallbacks(self._body_finished, self._body_failed)

    def _open_temp(self) -> Any:
        try:
            return open(self._temp, "xb")
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self._temp), exist_ok=True)
            return open(self._temp, "xb")

    # -- from the body producer --

    def _received(self, data: bytes) -> None:
        if self._state != "writing":
            return
        if self._written + len(data) > self._length:
            self._fail(
                Failure(S3Error("IncompleteBody", f"the body is longer than the {self._length} bytes announced")),
                stop_body=True,
            )
            return
        try:
            self._file.write(data)
        except OSError as error:
            self._fail(Failure(StoreUnavailable(f"write failed: {error}")), stop_body=True)
            return
        self._written += len(data)
        if self._pull_producer is not None:
            self._reactor.callLater(0, self._pull)

    def _register(self, producer: IProducer | None, streaming: bool) -> None:
        # A file never needs to pause a streaming producer; a pull producer is asked
        # for more after each write.
        # (Not streaming means a pull producer, by IConsumer's contract; zope cannot say so.)
        self._pull_producer = None if streaming else producer  # type: ignore[assignment]
        if self._pull_producer is not None:
            self._reactor.callLater(0, self._pull)

    def _pull(self) -> None:
        if self._state == "writing" and self._pull_producer is not None:
            self._pull_producer.resumeProducing()

    def _body_finished(self, _: object) -> None:
        if self._state != "writing":
            return
        self._pull_producer = None
        if self._written != self._length:
            self._fail(
                Failure(S3Error("IncompleteBody", f"got {self._written} of {self._length} bytes")),
                stop_body=False,
            )
            return
        try:
            self._file.flush()
        except OSError as error:
            self._fail(Failure(StoreUnavailable(f"write failed: {error}")), stop_body=False)
            return
        self._state = "syncing"
        file, self._file = self._file, None
        synced = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), _fsync_and_close, file)
        synced.addCallbacks(self._synced, self._sync_failed)

    def _body_failed(self, failure: Failure) -> None:
        if self._state == "writing":
            # The producer failed: clean up, call nothing more on it.
            self._fail(failure, stop_body=False)

    # -- after the last byte --

    def _synced(self, _: object) -> None:
        if self._state == "aborted":
            _unlink_quietly(self._temp)
            self.done.errback(CancelledError("write aborted"))
            return
        self._state = "staged"
        self.done.callback(None)

    def _sync_failed(self, failure: Failure) -> None:
        _unlink_quietly(self._temp)
        aborted = self._state == "aborted"
        self._state = "failed"
        self.done.errback(CancelledError("write aborted") if aborted else _unavailable(failure))

    def publish(self) -> Deferred[None]:
        """Rename the staged file into place (making the rename durable)."""
        if self._state != "staged":
            return fail(RuntimeError(f"cannot publish a write that is {self._state}"))
        self._state = "installing"
        installed = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self.install)
        installed.addCallbacks(self._installed, self._install_failed)
        return installed

    def install(self) -> None:
        """In a thread, for ``publish``: rename the temp file to the final path
        (creating its parent directories) durably; or remove the temp file and raise."""
        _install(self._temp, self._final, self._root)

    def _installed(self, _: object) -> None:
        self._state = "published"

    def _install_failed(self, failure: Failure) -> Failure:
        self._state = "failed"
        return Failure(_unavailable(failure))

    # -- failure --

    def _fail(self, reason: Failure, stop_body: bool) -> None:
        self._state = "failed"
        self._pull_producer = None
        if stop_body:
            self._stop_body()
        self._discard_temp()
        self.done.errback(reason)

    def _stop_body(self) -> None:
        if self._body is None:
            return
        try:
            self._body.stopProducing()
        except Exception:
            _log.failure("Body producer failed to stop")

    def _discard_temp(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass  # unflushed bytes of a file we are deleting
        _unlink_quietly(self._temp)

    def abort(self) -> None:
        """Stop the write and remove the temp file; ``done`` errbacks with CancelledError."""
        if self._state == "writing":
            self._state = "failed"
            self._pull_producer = None
            self._stop_body()
            self._discard_temp()
            self.done.errback(CancelledError("write aborted"))
        elif self._state == "syncing":
            # The fsync thread owns the file; _synced removes it and fails ``done``.
            self._state = "aborted"
        elif self._state == "staged":
            self._state = "failed"
            _unlink_quietly(self._temp)


# -- reading -----------------------------------------------------------------------------------


@implementer(IObjectReader, IPullProducer)
class FileReader:
    """An open file (or a byte range of it), streamed as a pull producer in READ_CHUNK reads,
    or handed to a consumer that sends files itself (``send_file``, see IFileConsumer)."""

    def __init__(self, file: Any, length: int, chunk_size: int = READ_CHUNK) -> None:
        self.length = length
        self.etag: str | None = None  # a file has no ETag of its own
        self._file = file
        self._remaining = length
        self._chunk_size = chunk_size
        self._consumer: IConsumer | None = None
        self._send_file: FileSender | None = None
        self._fd = -1
        self._position = 0
        self._streamed: Deferred[None] | None = None
        self._in_resume = False
        self._resume_again = False

    def stream_to(self, consumer: IConsumer) -> Deferred[None]:
        """Register as a pull producer on ``consumer``; fire once the last byte is written."""
        if self._streamed is not None:
            raise RuntimeError("stream_to called twice")
        self._streamed = Deferred()
        if self._file is None:
            self._streamed.errback(CancelledError("reader was cancelled"))
            return self._streamed
        self._consumer = consumer
        self._send_file = file_sender(consumer)
        if self._send_file is not None:
            try:
                self._fd, self._position = self._file.fileno(), self._file.tell()
            except OSError:  # not a real file
                self._send_file = None
        streamed = self._streamed
        consumer.registerProducer(self, False)
        return streamed

    def resumeProducing(self) -> None:
        # A consumer asking for more from inside write() gets it from this loop
        # rather than by recursion.
        if self._in_resume:
            self._resume_again = True
            return
        self._in_resume = True
        try:
            self._resume_again = True
            while self._resume_again and self._file is not None:
                self._resume_again = False
                self._produce()
        finally:
            self._in_resume = False

    def _produce(self) -> None:
        if self._consumer is None:  # resumeProducing before stream_to
            return
        if self._remaining == 0:
            self._finish(None, unregister=True)
            return
        if self._send_file is not None:
            self._send()
            return
        try:
            data = self._file.read(min(self._chunk_size, self._remaining))
        except OSError as error:
            self._finish(Failure(StoreUnavailable(f"read failed: {error}")), unregister=True)
            return
        if not data:
            self._finish(Failure(StoreUnavailable("the file is shorter than its object")), unregister=True)
            return
        self._remaining -= len(data)
        try:
            self._consumer.write(data)
        except Exception:
            self._finish(Failure(), unregister=False)
            return
        if self._remaining == 0:
            self._finish(None, unregister=True)

    def _send(self) -> None:
        """Let the consumer send the next bytes from the file; read them from now on if it cannot."""
        assert self._send_file is not None and self._file is not None
        try:
            sent = self._send_file(self._fd, self._position, self._remaining)
        except OSError as error:
            self._finish(Failure(StoreUnavailable(f"read failed: {error}")), unregister=True)
            return
        except Exception:
            self._finish(Failure(), unregister=False)
            return
        if self._file is None:  # the consumer stopped us meanwhile
            return
        if sent is None:
            self._send_file = None
            try:
                self._file.seek(self._position)
            except OSError as error:
                self._finish(Failure(StoreUnavailable(f"read failed: {error}")), unregister=True)
                return
            self._resume_again = True  # write this chunk now
            return
        self._position += sent
        self._remaining -= sent
        if self._remaining == 0:
            self._finish(None, unregister=True)

    def pauseProducing(self) -> None:
        """Nothing to do: a pull producer only writes when asked."""

    def stopProducing(self) -> None:
        """The consumer is gone: close the file; ``stream_to``'s Deferred errbacks."""
        self._finish(Failure(CancelledError("consumer stopped")), unregister=False)

    def cancel(self) -> None:
        """Stop streaming and close the file; ``stream_to``'s Deferred errbacks."""
        self._finish(Failure(CancelledError("reader was cancelled")), unregister=True)

    def _finish(self, failure: Failure | None, unregister: bool) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        file.close()
        consumer, self._consumer = self._consumer, None
        if consumer is not None and unregister:
            try:
                consumer.unregisterProducer()
            except Exception:
                _log.failure("Consumer failed to unregister the reader")
        streamed = self._streamed
        if streamed is not None and not streamed.called:
            if failure is None:
                streamed.callback(None)
            else:
                streamed.errback(failure)


# -- the store ---------------------------------------------------------------------------------


@implementer(IObjectStore)
class DirectoryStore:
    """Objects as files under ``root``; see the module docstring for the path scheme.

    Blocking file I/O runs in the reactor's thread pool where it can take long
    (fsync, rename, unlink, probe); body writes and range reads run in the reactor
    thread (page cache).
    """

    def __init__(self, name: str, root: str, reactor: Any) -> None:
        self.name = name
        self.root = os.path.abspath(root)
        self._root = os.fsencode(self.root)
        self._temp_root = os.path.join(self._root, TEMP_DIRECTORY.encode("ascii"))
        # Until ``start`` claims (and locks) one, a name nobody else uses.
        self._owner_directory = os.path.join(
            self._temp_root, f"{os.getpid()}-{uuid.uuid4().hex[:16]}".encode("ascii")
        )
        self._owner_lock: int | None = None
        self._uploads_directory = os.path.join(self._root, UPLOADS_DIRECTORY.encode("ascii"))
        self._reactor = reactor
        # directory_multipart builds on this module's pieces, hence the late import.
        from s3orchestrator.stores.directory_multipart import DirectoryUploads

        self._uploads = DirectoryUploads(
            name, reactor, self._root, self._temp_path, self._uploads_directory, self.target_path
        )

    def _in_thread(self, func: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), func, *args)

    def _temp_path(self) -> bytes:
        """A new temp file path in this process's owner directory."""
        return os.path.join(self._owner_directory, uuid.uuid4().hex.encode("ascii"))

    def path_for(self, location: str) -> bytes:
        """The absolute file path of ``location``; ValueError if it cannot be mapped."""
        path = self._root + b"/" + relative_path(location).encode("utf-8")
        if len(path) >= PATH_MAX:
            raise ValueError("location is too long for this filesystem")
        return path

    def target_path(self, location: str) -> bytes:
        """``path_for`` a location the daemon writes: never an imported one."""
        if location.startswith(IMPORTED_MARK):
            raise ValueError("imported locations are not written")
        return self.path_for(location)

    def start(self) -> Deferred[int]:
        """Create the root if needed, remove the temp files of dead processes (a crash
        left them), claim this process's own temp directory; fire with how many entries
        were removed. Live processes' temp files and multipart uploads are kept.
        """

        def prepared(result: tuple[bytes, int, int]) -> int:
            self._owner_directory, lock, removed = result
            self._release_lock()
            self._owner_lock = lock
            self._log_removed(removed)
            return removed

        d = self._in_thread(_prepare, self._root, self._temp_root, self._uploads_directory)
        d.addCallbacks(prepared, _unavailable)
        return d

    def _log_removed(self, count: int) -> None:
        if count:
            _log.info("Store {store}: removed {count} stale temp entries", store=self.name, count=count)

    def _release_lock(self) -> None:
        lock, self._owner_lock = self._owner_lock, None
        if lock is not None:
            os.close(lock)

    def stop(self) -> Deferred[None]:
        """Remove this process's temp directory if it is empty, and release it (what
        writes left there, any process's sweep removes)."""
        if self._owner_lock is not None:
            try:
                os.rmdir(self._owner_directory)
            except OSError:
                pass  # not empty (writes still there), or gone
        self._release_lock()
        return succeed(None)

    def location_for(self, bucket: str, key: str) -> str:
        """``<bucket>/<key>``: the path scheme (module docstring) maps every such location
        to its own file, whatever the key holds but NUL."""
        return f"{bucket}/{key}"

    def start_write(self, location: str, body: IBodyProducer, length: int) -> IObjectWrite:
        """Stream ``body`` into a temp file; ``publish`` renames it to ``location``.

        If the location cannot be mapped (ValueError) or no temp file can be created
        (StoreUnavailable), ``done`` errbacks at once and ``body`` is never started.
        A body that delivers fewer or more than ``length`` bytes fails ``done`` with
        S3Error("IncompleteBody").
        """
        temp = self._temp_path()
        try:
            if length < 0:
                raise ValueError("length must be >= 0")
            final = self.target_path(location)
        except ValueError:
            return DirectoryWrite.failed(self._reactor, body, Failure())
        write = DirectoryWrite(self._reactor, body, length, temp, final, self._root)
        write.start()
        return write

    def start_copy(self, source_location: str, target_location: str, length: int) -> IObjectWrite:
        """Copy the source file into a temp file in a thread (in-kernel where the
        filesystem can), check it has ``length`` bytes, fsync (``done``); ``publish``
        renames it to ``target_location`` as for a write, so a copy onto itself
        leaves the bytes intact. A missing source fails ``done`` with ObjectMissing,
        one of another size with StoreUnavailable, unmappable locations with ValueError.
        """
        temp = self._temp_path()
        try:
            if length < 0:
                raise ValueError("length must be >= 0")
            source = self.path_for(source_location)
            final = self.target_path(target_location)
        except ValueError:
            return DirectoryWrite.failed(self._reactor, None, Failure())
        write = DirectoryWrite(self._reactor, None, length, temp, final, self._root)
        write.start_copy(source, source_location)
        return write

    def open_read(self, location: str, byte_range: tuple[int, int] | None) -> Deferred[IObjectReader]:
        """Open the file now (so a later overwrite or delete cannot change what is read)."""
        try:
            path = self.path_for(location)
            if byte_range is not None and not 0 <= byte_range[0] <= byte_range[1]:
                raise ValueError(f"bad byte range {byte_range!r}")
        except ValueError:
            return fail()
        try:
            file = open(path, "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError):
            return fail(ObjectMissing(location))
        except OSError as error:
            return fail(StoreUnavailable(f"cannot open {location!r}: {error}"))
        try:
            size = os.fstat(file.fileno()).st_size
            if byte_range is None:
                first, length = 0, size
            else:
                first, last = byte_range
                if last >= size:
                    raise StoreUnavailable(f"{location!r} has {size} bytes, fewer than the range asks for")
                length = last - first + 1
            if first:
                file.seek(first)
        except OSError as error:
            file.close()
            return fail(StoreUnavailable(f"cannot read {location!r}: {error}"))
        except StoreUnavailable:
            file.close()
            return fail()
        return succeed(FileReader(file, length))

    def stat(self, location: str) -> Deferred[ObjectStat]:
        """The file's size and modification time (a file has no ETag)."""
        try:
            path = self.path_for(location)
        except ValueError:
            return fail()
        try:
            result = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return fail(ObjectMissing(location))
        except OSError as error:
            return fail(StoreUnavailable(f"cannot stat {location!r}: {error}"))
        if not stat.S_ISREG(result.st_mode):
            return fail(ObjectMissing(location))
        return succeed(ObjectStat(size=result.st_size, etag=None, last_modified=result.st_mtime))

    def delete(self, location: str) -> Deferred[None]:
        """Remove the file (missing is fine) and the directories that leaves empty."""
        try:
            path = self.path_for(location)
        except ValueError:
            return fail()
        if location.startswith(IMPORTED_MARK):
            # An imported file: remove the directories it leaves empty up to the root.
            bucket_directory = self._root
        else:
            bucket_directory = path[: path.index(b"/", len(self._root) + 1)]
        d = self._in_thread(_delete, path, bucket_directory)
        d.addErrback(_unavailable)
        return d

    def probe(self) -> Deferred[None]:
        """Write, fsync and remove a small file under the root; StoreUnavailable if that
        fails. Also removes the temp files of dead processes (writers killed mid-upload)."""
        d = self._in_thread(_probe, self._temp_root, self._owner_directory)
        d.addCallbacks(self._log_removed, _unavailable)
        return d

    # -- multipart uploads (see directory_multipart) --

    def create_upload(self, location: str) -> Deferred[str]:
        """Make the upload's directory under ``.uploads``; fire with its id (32 hex digits)."""
        return self._uploads.create(location)

    def start_part_write(
        self, location: str, upload_id: str, part_number: int, body: IBodyProducer, length: int
    ) -> IPartWrite:
        """Stream a part into a temp file; ``publish`` renames it onto the part's file."""
        return self._uploads.start_part_write(location, upload_id, part_number, body, length)

    def start_complete(self, location: str, upload_id: str, parts: Sequence[StoredPart]) -> IObjectWrite:
        """Join the parts into a temp file; ``publish`` renames it to ``location`` and drops the upload."""
        return self._uploads.start_complete(location, upload_id, parts)

    def abort_upload(self, location: str, upload_id: str) -> Deferred[None]:
        """Remove the upload's directory and parts; succeeds if it is gone already."""
        return self._uploads.abort(location, upload_id)
