"""This process as an instance in the metadata: its id, its lease, the heartbeat renewing it."""

from __future__ import annotations

import os
import socket

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import Instance


def default_instance_id() -> str:
    """This process's instance id when none is configured: ``host:pid``, unique among
    the processes running at one time (several worker processes on one host too)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class InstanceLease(TimerService):
    """Keeps this process alive as instance ``instance_id`` in the metadata for ``lease``
    seconds at a time: ``register`` (awaited at start, before serving), renewed every
    ``lease / 3`` seconds on ``clock`` while the service runs (a failed renewal is
    counted in ``failures``, never fatal: the next one tries again; the first of a
    run of failures is logged as a warning, the others at debug), and
    ``deregister`` at a clean stop. Once the lease has expired the instance is dead:
    the reaper releases its reservations and resolves its write intents.
    Counters: ``renewals``, ``failures``, ``lapses`` (the lease had expired)."""

    _log = Logger()
    clock: IReactorTime  # TimerService's, optional there; always given here

    def __init__(
        self, metadata: IMetadataStore, instance_id: str, lease: float, clock: IReactorTime,
        host: str | None = None, pid: int | None = None,
    ) -> None:
        if not lease > 0:
            raise ValueError("lease must be positive")
        TimerService.__init__(self, lease / 3, self.beat)
        self.clock = clock
        self._metadata = metadata
        self.instance_id = instance_id
        self.lease = lease
        self._host = host if host is not None else socket.gethostname()
        self._pid = pid if pid is not None else os.getpid()
        #: This process's registration (None until ``register`` succeeded).
        self.instance: Instance | None = None
        self.renewals = 0
        self.failures = 0
        self.lapses = 0
        self._failing = False

    def _expires_ms(self) -> int:
        return int((self.clock.seconds() + self.lease) * 1000)

    async def register(self) -> Instance:
        """Register this process (InstanceIdInUse if a live process of another host or
        pid holds the id)."""
        instance = Instance(
            id=self.instance_id, host=self._host, pid=self._pid,
            started_ms=int(self.clock.seconds() * 1000), expires_ms=self._expires_ms(),
        )
        await self._metadata.register_instance(instance)
        self.instance = instance
        return instance

    def beat(self) -> Deferred[None]:
        """Renew the lease now; never fails (a failure is logged)."""
        if self.instance is None:
            return succeed(None)
        renewal = self._metadata.renew_instance(self.instance, self._expires_ms())
        return renewal.addCallbacks(self._renewed, self._failed)

    def _renewed(self, outcome: str) -> None:
        if self._failing and outcome != "taken":
            self._failing = False
            self._log.info("Instance {instance_id}: heartbeat renewed the lease again", instance_id=self.instance_id)
        if outcome == "renewed":
            self.renewals += 1
        elif outcome == "lapsed":
            self.renewals += 1
            self.lapses += 1
            self._log.warn(
                "Instance {instance_id}: its lease had expired (no heartbeat for {lease:g} s); renewed, but the"
                " reaper may have released the reservations of its writes in flight, which then fail",
                instance_id=self.instance_id, lease=self.lease,
            )
        else:
            self.failures += 1
            self._log.error(
                "Instance {instance_id}: another process registered under this instance id; give each"
                " process its own server.instance_id", instance_id=self.instance_id,
            )

    def _failed(self, failure: Failure) -> None:
        self.failures += 1
        self._log.emit(
            LogLevel.debug if self._failing else LogLevel.warn,
            "Instance {instance_id}: heartbeat failed, trying again every {interval:g} s: {error}",
            instance_id=self.instance_id, interval=self.step, error=str(failure.value),
        )
        self._failing = True

    async def deregister(self) -> None:
        """Forget this process's registration (a clean stop); a failure is logged (the
        lease then expires by itself)."""
        instance, self.instance = self.instance, None
        if instance is None:
            return
        try:
            await self._metadata.deregister_instance(instance)
        except Exception as error:
            self._log.warn(
                "Instance {instance_id}: could not deregister ({error}); its lease expires in {lease:g} s",
                instance_id=self.instance_id, error=str(error), lease=self.lease,
            )
