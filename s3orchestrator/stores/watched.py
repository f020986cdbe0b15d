"""Bytes on their way to or from a store passed on unchanged, each chunk shown to a callback
(traffic metering counts them, a part copy hashes them)."""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3orchestrator.stores.interface import IFileConsumer, file_sender


@implementer(IFileConsumer)
class WatchingConsumer:
    """Passes bytes on to ``consumer``, showing each chunk to ``seen`` first.

    With ``sent`` (told the number of bytes), file bytes may also go to the consumer
    unseen (``send_file``, see IFileConsumer); without, a reader writes them.
    """

    def __init__(
        self, consumer: IConsumer, seen: Callable[[bytes], None], sent: Callable[[int], None] | None = None
    ) -> None:
        self._consumer = consumer
        self._seen = seen
        self._sent = sent

    def write(self, data: bytes) -> None:
        self._seen(data)
        self._consumer.write(data)

    def send_file(self, fd: int, offset: int | None, count: int) -> int | None:
        send = file_sender(self._consumer) if self._sent is not None else None
        if send is None:
            return None
        done = send(fd, offset, count)
        if done and self._sent is not None:
            self._sent(done)
        return done

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._consumer.unregisterProducer()


@implementer(IBodyProducer)
class WatchedBody:
    """``body`` unchanged, each chunk shown to ``seen`` as its consumer takes it."""

    def __init__(self, body: IBodyProducer, seen: Callable[[bytes], None]) -> None:
        self._body = body
        self._seen = seen
        self.length = body.length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return self._body.startProducing(WatchingConsumer(consumer, self._seen))

    def pauseProducing(self) -> None:
        self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._body.resumeProducing()

    def stopProducing(self) -> None:
        self._body.stopProducing()
