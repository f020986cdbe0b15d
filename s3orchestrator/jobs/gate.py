"""Whether a background job that works on the metadata may run now (not in degraded mode)."""

from __future__ import annotations

from typing import Callable

from twisted.logger import Logger


class MetadataGate:
    """Opens while ``available()`` says the metadata database answers. The first run a
    job skips in an outage is logged (once per outage); ``skipped`` counts them all."""

    _log = Logger()

    def __init__(self, job: str, available: Callable[[], bool] = lambda: True) -> None:
        self._job = job
        self._available = available
        self._closed = False
        self.skipped = 0

    def open(self) -> bool:
        """Whether the job may run now."""
        if self._available():
            self._closed = False
            return True
        self.skipped += 1
        if not self._closed:
            self._closed = True
            self._log.warn("{job}: metadata database unavailable; runs skipped until it answers", job=self._job)
        return False
