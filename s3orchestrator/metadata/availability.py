"""Whether the metadata database answers: the state behind degraded mode.

The database is *unavailable* when an interaction fails with MetadataUnavailable
(the engine says the database itself is gone: an unreadable or damaged SQLite file,
a PostgreSQL server down or unreachable), or when every interaction has failed with
MetadataBusy for ``unavailable_after`` seconds, with no success in between (a lock
held that long is an outage, not contention). One successful interaction (the health
job probes the database while it is unavailable) makes it available again. Each change
is logged once.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orchestrator.config import DEFAULT_METADATA_UNAVAILABLE_AFTER
from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable


class MetadataAvailability:
    """Follows the outcomes of metadata interactions (``record_success``, ``record_failure``)."""

    _log = Logger()

    def __init__(self, clock: IReactorTime, unavailable_after: float = DEFAULT_METADATA_UNAVAILABLE_AFTER) -> None:
        if unavailable_after < 0:
            raise ValueError("unavailable_after must be >= 0")
        self.unavailable_after = unavailable_after
        self.available = True
        self.last_error: str | None = None
        #: When the current unbroken run of busy failures began (None: not failing).
        self._failing_since: float | None = None
        #: When the database became unavailable (None: it is available).
        self.unavailable_since: float | None = None
        self._clock = clock

    def record_success(self) -> None:
        """An interaction worked: the database answers."""
        self._failing_since = None
        if self.available:
            return
        self.available = True
        self._log.info(
            "Metadata database answers again after {duration:.1f} s; degraded mode ends",
            duration=self._clock.seconds() - (self.unavailable_since or 0.0), metadata_available=True,
        )
        self.unavailable_since = None

    def record_failure(self, error: BaseException) -> None:
        """An interaction failed with ``error``; other errors than the database's own
        (MetadataUnavailable, MetadataBusy) say nothing about it."""
        if not isinstance(error, (MetadataUnavailable, MetadataBusy)):
            return
        now = self._clock.seconds()
        if self._failing_since is None:
            self._failing_since = now
        self.last_error = str(error)
        if not self.available:
            return
        if isinstance(error, MetadataBusy) and now - self._failing_since < self.unavailable_after:
            return
        self.available = False
        self.unavailable_since = now
        self._log.error(
            "Metadata database unavailable ({error}); degraded mode: GET and HEAD are answered"
            " from the stores, other requests get 503 until it answers again",
            error=self.last_error, metadata_available=False,
        )
