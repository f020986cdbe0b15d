"""``MeteredStore``: an object store whose calls are counted as traffic (the one counting point).

Every store call counts one request of its billing class (A: writes, copies, multipart
calls; B: reads, stats, health probes; other: deletes and aborts), made or not; the
bytes a reader delivers count as egress, those a write's body hands the store as ingress.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3orchestrator.metadata.traffic import Traffic
from s3orchestrator.stores.interface import (
    IObjectReader,
    IObjectStore,
    IObjectWrite,
    IPartWrite,
    ObjectStat,
    StoredPart,
)
from s3orchestrator.stores.watched import WatchedBody, WatchingConsumer


class TrafficCounter(Protocol):
    """What hears of the stores' traffic (``TrafficLedger``)."""

    def count(self, store: str, traffic: Traffic) -> None:
        """Add ``traffic`` (requests) to the store's."""

    def count_bytes(self, store: str, egress: int = 0, ingress: int = 0) -> None:
        """Add bytes read from or written to the store (for every chunk)."""

_CLASS_A = Traffic(requests_a=1)
_CLASS_B = Traffic(requests_b=1)
_OTHER = Traffic(requests_other=1)


@implementer(IObjectReader)
class _CountedReader:
    """A store reader whose bytes count as the store's egress as they are delivered."""

    def __init__(self, reader: IObjectReader, counted: Callable[[bytes], None], sent: Callable[[int], None]) -> None:
        self._reader = reader
        self._counted = counted
        self._sent = sent
        self.length = reader.length
        # Optional on store readers (see IObjectReader): the store's ETag of the object.
        self.etag = getattr(reader, "etag", None)

    def stream_to(self, consumer: IConsumer) -> Deferred[None]:
        return self._reader.stream_to(WatchingConsumer(consumer, self._counted, self._sent))

    def cancel(self) -> None:
        self._reader.cancel()


@implementer(IObjectStore)
class MeteredStore:
    """``store`` with its requests and bytes counted (by ``counter``) as its traffic."""

    def __init__(self, store: IObjectStore, counter: TrafficCounter) -> None:
        self._store = store
        self._counter = counter
        self.name = store.name

    def __getattr__(self, name: str) -> Any:
        # What IObjectStore does not name (a store type's own attributes) passes through, uncounted.
        if name == "_store":  # not set yet (an instance made without __init__): no recursion
            raise AttributeError(name)
        return getattr(self._store, name)

    def _request(self, traffic: Traffic) -> None:
        self._counter.count(self.name, traffic)

    def _ingress(self, data: bytes) -> None:
        self._counter.count_bytes(self.name, ingress=len(data))

    def _egress(self, data: bytes) -> None:
        self._counter.count_bytes(self.name, egress=len(data))

    def _egress_sent(self, count: int) -> None:
        self._counter.count_bytes(self.name, egress=count)

    def start(self) -> Deferred[Any]:
        return self._store.start()

    def stop(self) -> Deferred[Any]:
        return self._store.stop()

    def location_for(self, bucket: str, key: str) -> str:
        return self._store.location_for(bucket, key)

    def start_write(self, location: str, body: IBodyProducer, length: int) -> IObjectWrite:
        self._request(_CLASS_A)
        return self._store.start_write(location, WatchedBody(body, self._ingress), length)

    def start_copy(self, source_location: str, target_location: str, length: int) -> IObjectWrite:
        self._request(_CLASS_A)
        return self._store.start_copy(source_location, target_location, length)

    def open_read(self, location: str, byte_range: tuple[int, int] | None) -> Deferred[IObjectReader]:
        self._request(_CLASS_B)
        return self._store.open_read(location, byte_range).addCallback(_CountedReader, self._egress, self._egress_sent)

    def stat(self, location: str) -> Deferred[ObjectStat]:
        self._request(_CLASS_B)
        return self._store.stat(location)

    def delete(self, location: str) -> Deferred[None]:
        self._request(_OTHER)
        return self._store.delete(location)

    def probe(self) -> Deferred[None]:
        self._request(_CLASS_B)
        return self._store.probe()

    def create_upload(self, location: str) -> Deferred[str]:
        self._request(_CLASS_A)
        return self._store.create_upload(location)

    def start_part_write(
        self, location: str, upload_id: str, part_number: int, body: IBodyProducer, length: int
    ) -> IPartWrite:
        self._request(_CLASS_A)
        return self._store.start_part_write(location, upload_id, part_number, WatchedBody(body, self._ingress),
                                            length)

    def start_complete(self, location: str, upload_id: str, parts: Sequence[StoredPart]) -> IObjectWrite:
        self._request(_CLASS_A)
        return self._store.start_complete(location, upload_id, parts)

    def abort_upload(self, location: str, upload_id: str) -> Deferred[None]:
        self._request(_OTHER)
        return self._store.abort_upload(location, upload_id)
