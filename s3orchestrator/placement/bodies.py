"""Bodies placement writes that are not a client's: another copy being read."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer, IReactorTime
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3orchestrator.stores.interface import IObjectReader


@implementer(IBodyProducer)
class ReaderBody:
    """An object being read from one store, as the body of a write to another."""

    def __init__(self, reader: IObjectReader, clock: IReactorTime) -> None:
        self.length = reader.length
        self._reader = reader
        self._clock = clock
        self._producer: Any = None
        self._pull = False
        self._paused = False
        self._scheduled = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return self._reader.stream_to(_Relay(consumer, self))

    def pauseProducing(self) -> None:
        self._paused = True
        if self._producer is not None and not self._pull:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._producer is not None:
            if self._pull:
                self._schedule()
            else:
                self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._reader.cancel()

    def registered(self, producer: Any, streaming: bool) -> None:
        self._producer, self._pull = producer, not streaming
        if self._pull:
            self._schedule()

    def written(self) -> None:
        # A pull producer (a file) is asked for its next chunk after each one, unless
        # the store we write to asked us to pause.
        if self._pull and not self._paused:
            self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._producer is not None:
            self._scheduled = True
            self._clock.callLater(0, self._next)

    def _next(self) -> None:
        self._scheduled = False
        if self._producer is not None and not self._paused:
            self._producer.resumeProducing()


@implementer(IConsumer)
class _Relay:
    """What the source reader writes into: the target's consumer, with flow control through ReaderBody."""

    def __init__(self, consumer: IConsumer, body: ReaderBody) -> None:
        self._consumer = consumer
        self._body = body

    def write(self, data: bytes) -> None:
        self._consumer.write(data)
        self._body.written()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._body.registered(producer, streaming)

    def unregisterProducer(self) -> None:
        self._body.registered(None, True)
