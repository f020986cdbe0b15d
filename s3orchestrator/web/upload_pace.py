"""Reading a request body from the client, and giving up on a client that sends it too slowly.

An upload reserves its declared size in a store's quota before its first byte
arrives; a client that trickles a byte now and then would keep that reservation
forever. ``BodyReader`` stands between the body and the client's transport: it
forwards pause/resume, counts what the client sends while we are reading, and
calls ``too_slow`` once, over a window, the client sent less than the minimum
rate. Time the daemon itself keeps the client paused (store not ready yet, a
slow upstream) does not count against it.

The window is ``server.upload_rate_window`` seconds; the first window the client
reads in is its grace (connection set-up, TCP slow start): a rate is judged only
once the client has been read for longer than one window.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from s3orchestrator.config import DEFAULT_UPLOAD_RATE_WINDOW

# The rate is judged on each window in which we were reading for at least this share of the time.
MIN_READING_SHARE = 0.5


@implementer(IPushProducer)
class BodyReader:
    """The client's transport as the producer of one request body, with a minimum upload rate.

    Starts paused (the daemon reads nothing until the store is ready);
    ``min_rate`` 0 watches nothing; ``window``: seconds each judged window lasts.
    """

    def __init__(
        self,
        transport: IPushProducer,
        clock: IReactorTime,
        min_rate: int,
        too_slow: Callable[[], None],
        window: float = DEFAULT_UPLOAD_RATE_WINDOW,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._min_rate = min_rate
        self._too_slow = too_slow
        self._window = window
        self._reading_since: float | None = None
        self._window_reading = 0.0  # seconds we were reading in this window
        self._window_bytes = 0
        self._total_reading = 0.0
        self._check: IDelayedCall | None = None
        transport.pauseProducing()
        if min_rate > 0:
            self._check = clock.callLater(window, self._judge)

    # -- IPushProducer (called by the request body) --------------------------

    def pauseProducing(self) -> None:
        self._stop_reading()
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._reading_since is None:
            self._reading_since = self._clock.seconds()
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        self.done()
        self._transport.stopProducing()

    # -- called by the channel -----------------------------------------------

    def received(self, count: int) -> None:
        """The client sent ``count`` more body bytes."""
        self._window_bytes += count

    def done(self) -> None:
        """The body is complete or abandoned: stop watching."""
        if self._check is not None and self._check.active():
            self._check.cancel()
        self._check = None

    # -- internals -----------------------------------------------------------

    def _stop_reading(self) -> None:
        if self._reading_since is not None:
            self._window_reading += self._clock.seconds() - self._reading_since
            self._reading_since = None

    def _judge(self) -> None:
        now = self._clock.seconds()
        reading = self._window_reading
        if self._reading_since is not None:
            reading += now - self._reading_since
            self._reading_since = now
        received, self._window_bytes, self._window_reading = self._window_bytes, 0, 0.0
        self._total_reading += reading
        # The first window is the grace: judged once the client was read for longer than one.
        judged = self._total_reading > self._window and reading >= self._window * MIN_READING_SHARE
        if judged and received < self._min_rate * reading:
            self._check = None
            self._too_slow()
            return
        self._check = self._clock.callLater(self._window, self._judge)
