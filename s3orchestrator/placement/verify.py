"""Checking one copy of an object against its record, for the scrubber: its size and
ETag as the store describes them (a stat, a HEAD), or every byte read and its MD5.

What a full read can check: the ETag of an object written by one PUT is the MD5 of its
bytes; that of a multipart object is the MD5 of its parts' MD5s followed by "-N", and
the record keeps its part sizes (``part_sizes``), so the bytes are hashed part by part
to the same end. An ETag of neither form (or parts that do not add up) cannot be
checked: then only the length is (``FullRead.unverifiable``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.task import deferLater
from zope.interface import implementer

from s3orchestrator.metadata.scrub import ScrubCopy
from s3orchestrator.placement.reader import CopyMismatch, FailoverReader, etags_conflict
from s3orchestrator.stores.interface import IObjectReader, IObjectStore, ObjectMissing, ObjectStat

#: What a check found: no object at the copy's location...
MISSING = "missing"
#: ...or another object (length, ETag or MD5 not the record's).
DAMAGED = "damaged"

_MD5_HEX = re.compile(r"[0-9a-f]{32}")


@attrs.frozen
class Finding:
    """A copy found ``problem`` (MISSING or DAMAGED), ``detail`` saying how."""

    problem: str
    detail: str


def stat_finding(copy: ScrubCopy, stat: ObjectStat) -> Finding | None:
    """What the store's description of a copy shows wrong (None: nothing): another size,
    or an ETag of the same layout that differs (see ``etags_conflict``)."""
    if stat.size != copy.size:
        return Finding(DAMAGED, f"{stat.size} bytes where the object has {copy.size}")
    if stat.etag is not None and etags_conflict(copy.etag, stat.etag):
        return Finding(DAMAGED, f"ETag {stat.etag} where the object has {copy.etag}")
    return None


async def stat_copy(store: IObjectStore, copy: ScrubCopy) -> tuple[ObjectStat | None, Finding | None]:
    """The store's description of the copy (None when missing) and what it shows wrong.
    Store errors (StoreUnavailable, StoreMisconfigured) propagate."""
    try:
        stat = await store.stat(copy.location)
    except ObjectMissing:
        return None, Finding(MISSING, "no object at its location")
    return stat, stat_finding(copy, stat)


def md5_parts(etag: str, size: int, part_sizes: Sequence[int]) -> tuple[int, ...] | None:
    """The sizes of the spans whose MD5s make ``etag``: ``(size,)`` for a plain MD5, the
    part sizes for a multipart ETag of as many parts as recorded; None when the ETag
    cannot be computed from the bytes (another form, or parts that do not add up)."""
    digest, dash, count = etag.lower().partition("-")
    if not _MD5_HEX.fullmatch(digest):
        return None
    if not dash:
        return (size,)
    if not count.isdigit() or int(count) != len(part_sizes) or sum(part_sizes) != size or not part_sizes:
        return None
    return tuple(part_sizes)


def etag_of(digests: Sequence[bytes], multipart: bool) -> str:
    """The ETag of bytes whose spans have MD5s ``digests`` (one span: a plain MD5)."""
    if not multipart:
        return digests[0].hex()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


@implementer(IConsumer)
class _Hasher:
    """Takes a copy's bytes: MD5s each span of ``spans`` bytes, and pauses its producer so
    that no more than ``bytes_per_second`` go by on average (0: no limit)."""

    def __init__(self, spans: Sequence[int], clock: IReactorTime, bytes_per_second: int) -> None:
        self._spans = list(spans) or [0]
        self._index = 0
        self._left = self._spans[0]
        self._md5 = hashlib.md5()
        self._digests: list[bytes] = []
        self._clock = clock
        self._rate = bytes_per_second
        self._started = clock.seconds()
        self._producer: IPushProducer | None = None
        self._resume: IDelayedCall | None = None
        self.received = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None
        self.stop_waiting()

    def write(self, data: bytes) -> None:
        self.received += len(data)
        view = memoryview(data)
        while view:
            self._next_span()
            last = self._index == len(self._spans) - 1
            # Bytes past the last span (they cannot be: the reader checks the length) go to it.
            take = len(view) if last else min(len(view), self._left)
            self._md5.update(view[:take])
            self._left -= take
            view = view[take:]
        self._pace()

    def digests(self) -> list[bytes]:
        """The MD5 of every span, once every byte arrived."""
        self._next_span()  # an empty last part
        return [*self._digests, self._md5.digest()]

    def stop_waiting(self) -> None:
        resume, self._resume = self._resume, None
        if resume is not None and resume.active():
            resume.cancel()

    def _next_span(self) -> None:
        while self._left <= 0 and self._index < len(self._spans) - 1:
            self._digests.append(self._md5.digest())
            self._md5 = hashlib.md5()
            self._index += 1
            self._left = self._spans[self._index]

    def ahead(self) -> float:
        """Seconds the bytes received are ahead of the rate (0: not ahead)."""
        if not self._rate:
            return 0.0
        return max(0.0, self._started + self.received / self._rate - self._clock.seconds())

    def _pace(self) -> None:
        if self._producer is None or self._resume is not None:
            return
        delay = self.ahead()
        if delay > 0:
            self._producer.pauseProducing()
            self._resume = self._clock.callLater(delay, self._resumed)

    def _resumed(self) -> None:
        self._resume = None
        if self._producer is not None:
            self._producer.resumeProducing()


class FullRead:
    """Reads every byte of one copy from ``store`` at up to ``bytes_per_second`` (0: no
    limit) and checks them against the record: ``run()`` fires with what it found
    (None: nothing wrong); ``cancel()`` stops it (``run()`` then fails CancelledError).
    ``received``: bytes read; ``unverifiable``: the ETag could not be checked (only the
    length was, see the module docstring). Store errors propagate."""

    def __init__(self, store: IObjectStore, copy: ScrubCopy, clock: IReactorTime, bytes_per_second: int) -> None:
        self._store = store
        self._copy = copy
        self._clock = clock
        self._spans = md5_parts(copy.etag, copy.size, copy.part_sizes)
        self._hasher = _Hasher(self._spans or (copy.size,), clock, bytes_per_second)
        self._reader: FailoverReader | None = None
        self._pause: Deferred[None] | None = None
        self._cancelled = False
        self.unverifiable = self._spans is None

    @property
    def received(self) -> int:
        return self._hasher.received

    async def run(self) -> Finding | None:
        copy = self._copy

        def open_copy(store: str, location: str, wanted: tuple[int, int] | None) -> Deferred[IObjectReader]:
            return self._store.open_read(location, wanted)

        # One copy, no ETag compared at open (a directory store reports none): the bytes say.
        reader = self._reader = FailoverReader([(copy.store, copy.location)], copy.size, None, open_copy,
                                               lambda store, error: None, self._clock)
        if self._cancelled:
            raise CancelledError("the full read was cancelled")
        try:
            await reader.open()
        except CopyMismatch as error:
            return Finding(DAMAGED, str(error))
        except ObjectMissing:
            return Finding(MISSING, "no object at its location")
        try:
            await reader.stream_to(self._hasher)
        finally:
            self._hasher.stop_waiting()
        # The last bytes (a small file's only chunk) came at once: their time is still due.
        self._pause = deferLater(self._clock, self._hasher.ahead(), lambda: None)
        await self._pause
        if self._spans is None:
            return None
        actual = etag_of(self._hasher.digests(), multipart="-" in copy.etag)
        if actual != copy.etag.lower():
            return Finding(DAMAGED, f"its bytes have ETag {actual} where the object has {copy.etag}")
        return None

    def cancel(self) -> None:
        self._cancelled = True
        self._hasher.stop_waiting()
        if self._reader is not None:
            self._reader.cancel()
        if self._pause is not None:
            self._pause.cancel()
