"""The interface every object store (directory, S3 upstream) provides to the orchestration layer."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer
from zope.interface import Attribute, Interface


class StoreUnavailable(Exception):
    """The store could not be reached or failed (connection refused, timeout, 5xx, I/O error)."""


class StoreMisconfigured(Exception):
    """The store refused a request the client could not have caused (upstream 403, other 4xx)."""


class ObjectMissing(Exception):
    """The store has no object at a location the metadata says it holds."""


class IObjectWrite(Interface):
    """One object being written to a store; see IObjectStore.start_write."""

    done = Attribute(
        "Deferred firing with None once every byte of the body is durably stored"
        " (a synced temp file, an upstream that answered 200); errbacks on failure,"
        " leaving nothing behind."
    )

    staged = Attribute(
        "True if the bytes stay invisible at the location until ``publish`` (a"
        " directory store's temp file); False if ``done`` already made them what"
        " reads return (an upstream S3 PUT), so ``abort`` after ``done`` deletes them."
    )

    location_intact = Attribute(
        "Once ``done`` failed: True if the location certainly still holds what it held"
        " before (always, for a staged write; for an unstaged one, when the store refused"
        " the write or never received all of it), False when the write may have replaced"
        " it (an upstream that took the whole body and then went silent)."
    )

    def publish() -> Deferred[None]:
        """After ``done``: make the new bytes what reads of the location return.

        The orchestration commits the object's metadata between ``done`` and
        ``publish``, so a failed commit can ``abort`` and leave the previous
        object at the location untouched. (A store whose writes become visible
        by themselves, like an upstream S3 PUT, publishes as a no-op.)
        """

    def abort() -> None:
        """Stop the write and remove whatever was written but not published. Safe at any time."""


class IPartWrite(IObjectWrite):
    """One part of a multipart upload being written; see IObjectStore.start_part_write."""

    store_etag = Attribute(
        "Once ``done`` fired: the store's own tag for the part (unquoted), which"
        " ``start_complete`` must be given back (an upstream's part ETag)."
    )


@attrs.frozen
class StoredPart:
    """A part as the store's Complete needs it: its number, size and the store's tag."""

    number: int
    size: int
    store_etag: str


@attrs.frozen
class ObjectStat:
    """What a store says about an object without reading it: its size, its ETag if the
    store keeps one (unquoted; None for a file), and when it was last written (seconds)."""

    size: int
    etag: str | None
    last_modified: float


class IObjectReader(Interface):
    """An open object (or byte range of one), ready to stream to a consumer.

    A store reader may also have ``etag``: the ETag the store reports for the object it
    opened (an upstream's ETag header), or None; placement's FailoverReader compares it.
    """

    length = Attribute("Number of bytes stream_to will write.")

    def stream_to(consumer: IConsumer) -> Deferred[None]:
        """Write the bytes to ``consumer`` with backpressure (registering a producer on it).

        Fires when the last byte is written; errbacks if the store fails mid-stream.
        """

    def cancel() -> None:
        """Stop streaming and release the open file or connection."""


class IFileConsumer(IConsumer):
    """A consumer that can also take bytes straight from an open file or a pipe (the kernel
    copying them: sendfile, splice). Optional: a store reader asks with ``file_sender``."""

    def send_file(fd: int, offset: int | None, count: int) -> int | None:
        """Send up to ``count`` bytes of the file ``fd`` from ``offset``; return how many went.

        ``offset`` None: ``fd`` is a pipe holding at least ``count`` bytes, sent from its
        start. ``count`` 0 only asks whether the consumer takes bytes this way now (0) or
        not (None). 0: none now (the consumer paused its producer and resumes it when it
        can take more, or stops it); None: it cannot take bytes from this file now, write
        them instead. Raises OSError when reading the file fails.
        """


FileSender = Callable[[int, int | None, int], int | None]


def file_sender(consumer: IConsumer) -> FileSender | None:
    """``consumer``'s ``send_file`` if it has one (see IFileConsumer), else None."""
    send: FileSender | None = getattr(consumer, "send_file", None)
    return send


class IObjectStore(Interface):
    """A place object bytes live: a local directory or an upstream S3 bucket."""

    name = Attribute("The store's configured name (str).")

    def start() -> Deferred[Any]:
        """Prepare the store for use (create its root, clear leftovers of a previous run)."""

    def stop() -> Deferred[Any]:
        """Release what the store holds open (connections) at shutdown."""

    def location_for(bucket: str, key: str) -> str:
        """Where this store would keep object ``key`` of virtual bucket ``bucket``: the
        location its other methods take, recorded in metadata with the object (or upload).

        Distinct (bucket, key) pairs get distinct locations. An object keeps the
        location recorded for it, so a store may change this mapping only for
        objects written later.
        """

    def start_write(location: str, body: IBodyProducer, length: int) -> IObjectWrite:
        """Start storing ``length`` bytes produced by ``body`` at ``location``.

        The store calls ``body.startProducing(consumer)`` once it is ready to take bytes.
        Until ``IObjectWrite.publish`` succeeds, a previous object at ``location`` stays intact.
        """

    def start_copy(source_location: str, target_location: str, length: int) -> IObjectWrite:
        """Copy an object within this store without its bytes passing through the daemon.

        Same IObjectWrite contract as start_write (``done``, ``staged``, ``publish``,
        ``abort``): ``length`` is the size the source object is expected to have.
        Source and target may be the same location (a copy onto itself): the bytes
        then stay intact, whatever happens. A missing source fails ``done`` with
        ObjectMissing.
        """

    def open_read(location: str, byte_range: tuple[int, int] | None) -> Deferred[IObjectReader]:
        """Open the object at ``location``; ``byte_range`` is an inclusive (first, last) pair.

        Errbacks with ObjectMissing if there is no such object, StoreUnavailable on failure.
        """

    def stat(location: str) -> Deferred[ObjectStat]:
        """Describe the object at ``location`` without reading it (a stat, a HEAD).

        Errbacks with ObjectMissing if there is no such object, StoreUnavailable on failure.
        """

    def delete(location: str) -> Deferred[None]:
        """Remove the object at ``location``; succeeds if it does not exist."""

    def probe() -> Deferred[None]:
        """Check the store works (health check); errbacks with StoreUnavailable if not."""

    # -- multipart uploads --------------------------------------------------------------------

    def create_upload(location: str) -> Deferred[str]:
        """Start a multipart upload of the object at ``location``; fire with the
        store's id for it (an upstream UploadId), which the other calls take."""

    def start_part_write(
        location: str, upload_id: str, part_number: int, body: IBodyProducer, length: int
    ) -> IPartWrite:
        """Store part ``part_number`` (``length`` bytes produced by ``body``) of an upload.

        The IObjectWrite contract holds: a staged part (a directory store's temp
        file) replaces an earlier part with the same number only at ``publish``;
        an unstaged one (an upstream UploadPart) replaced it at ``done``. ``abort``
        never touches the object at ``location``.
        """

    def start_complete(location: str, upload_id: str, parts: Sequence[StoredPart]) -> IObjectWrite:
        """Join ``parts`` (in the order given, every one a part stored for the upload)
        into the object at ``location``, ending the upload.

        The IObjectWrite contract holds, so the previous object at ``location`` stays
        intact until ``publish`` (staged, a directory store: ``done`` once the joined
        file is synced, ``publish`` renames it and drops the parts) or until ``done``
        (an upstream CompleteMultipartUpload; ``abort`` afterwards deletes the object).
        A failure before that leaves the upload and its parts as they were, so it can
        be completed again. A part missing or of another size fails ``done`` with
        ObjectMissing.
        """

    def abort_upload(location: str, upload_id: str) -> Deferred[None]:
        """End the upload and remove its parts; succeeds if the upload no longer exists."""
