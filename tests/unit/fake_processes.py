"""A fake IReactorProcess on a Clock: records the processes spawned and the signals sent."""

from __future__ import annotations

from typing import Any, Mapping

import attrs
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure


@attrs.define
class FakeProcess:
    """One spawned process: how it was started, the signals it got; ``exit`` ends it."""

    protocol: ProcessProtocol
    executable: str
    args: list[str]
    env: Mapping[str, str]
    child_fds: Mapping[int, int | str]
    pid: int
    signals: list[str] = attrs.Factory(list)
    exited: bool = False
    ended: bool = False

    def signalProcess(self, name: str) -> None:
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def write_ready(self, data: bytes = b"ready\n", fd: int = 3) -> None:
        self.protocol.childDataReceived(fd, data)

    def exit(self, code: int = 0, signal: int | None = None) -> None:
        """The process ends: exited, then its end reported to the protocol."""
        self.exited = True
        self.ended = True
        reason = ProcessDone(0) if code == 0 and signal is None else ProcessTerminated(code, signal)
        self.protocol.processEnded(Failure(reason))


class FakeProcessReactor(Clock):
    """A Clock whose spawnProcess records a FakeProcess (pids from 1000 up)."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []

    def spawnProcess(self, protocol: ProcessProtocol, executable: str, args: Any, env: Any = None,
                     path: Any = None, uid: Any = None, gid: Any = None, usePTY: bool = False,
                     childFDs: Any = None) -> FakeProcess:
        process = FakeProcess(protocol, executable, list(args), dict(env or {}), dict(childFDs or {}),
                              1000 + len(self.processes))
        self.processes.append(process)
        protocol.makeConnection(process)  # type: ignore[arg-type]
        return process

    def running(self) -> list[FakeProcess]:
        """The processes that have not ended."""
        return [process for process in self.processes if not process.ended]
