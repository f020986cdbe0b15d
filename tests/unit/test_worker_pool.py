"""WorkerPool: spawning workers, restarting them with backoff, passing signals on, stopping."""

from __future__ import annotations

import attrs
import pytest
from twisted.internet.error import CannotListenError
from twisted.logger import Logger, LogLevel, formatEvent

from s3orchestrator.workers.pool import RESTART_DELAY_MAX, STABLE_AFTER, WorkerCommand, WorkerPool
from tests.unit.fake_processes import FakeProcessReactor


@attrs.define
class Events:
    """What the pool told its owner."""

    all_ready: int = 0
    failures: list[str] = attrs.Factory(list)
    exits: list[tuple[int, float]] = attrs.Factory(list)


def command(index: int) -> WorkerCommand:
    return WorkerCommand("/usr/bin/python3", ["python3", "-m", "worker", "--index", str(index)], {"A": "1"},
                         {4: 10 + index})


def make_pool(count: int = 2, stop_timeout: float = 40.0) -> tuple[WorkerPool, FakeProcessReactor, Events]:
    reactor = FakeProcessReactor()
    events = Events()

    def all_ready() -> None:
        events.all_ready += 1

    def exited(index: int, delay: float) -> None:
        events.exits.append((index, delay))

    pool = WorkerPool(reactor, count, command, stop_timeout, all_ready, events.failures.append, exited)
    return pool, reactor, events


def started(count: int = 2) -> tuple[WorkerPool, FakeProcessReactor, Events]:
    """A pool whose workers all said they serve."""
    pool, reactor, events = make_pool(count)
    pool.startService()
    for process in reactor.processes:
        process.write_ready()
    return pool, reactor, events


def test_start_spawns_every_worker_with_its_command_and_descriptors() -> None:
    pool, reactor, _ = make_pool(3)
    pool.startService()
    assert [process.args[-1] for process in reactor.processes] == ["1", "2", "3"]
    first = reactor.processes[0]
    assert first.executable == "/usr/bin/python3"
    assert first.env == {"A": "1"}
    # stdin: the lifeline pipe; stdout and stderr shared; 3: the ready pipe; then the sockets.
    assert first.child_fds == {0: "w", 1: 1, 2: 2, 3: "r", 4: 11}


def test_all_ready_is_told_once_when_every_worker_said_ready() -> None:
    pool, reactor, events = make_pool(2)
    pool.startService()
    first, second = reactor.processes
    first.write_ready(b"rea")
    first.write_ready(b"dy\n")
    assert events.all_ready == 0
    second.write_ready(b"ready\n", fd=1)  # not the ready pipe
    assert events.all_ready == 0
    second.write_ready()
    assert events.all_ready == 1
    assert [worker.ready for worker in pool.workers] == [True, True]


def test_a_worker_exiting_before_all_served_fails_the_start_without_restart() -> None:
    pool, reactor, events = make_pool(2)
    pool.startService()
    reactor.processes[0].write_ready()
    reactor.processes[1].exit(1)
    reactor.advance(RESTART_DELAY_MAX * 2)
    assert events.failures == ["worker 2 (pid 1001) exited before it served: exit status 1"]
    assert len(reactor.processes) == 2


def test_a_worker_that_exits_is_restarted_after_a_delay_doubling_while_it_keeps_exiting() -> None:
    pool, reactor, _ = started(2)
    delays = []
    for _ in range(8):
        reactor.processes[-1 if len(reactor.processes) > 2 else 1].exit(signal=9)
        spawned = len(reactor.processes)
        waited = 0.0
        while len(reactor.processes) == spawned:
            reactor.advance(0.5)
            waited += 0.5
        delays.append(waited)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert pool.workers[1].restarts == 8
    assert pool.workers[0].restarts == 0
    # The replacement runs the same worker's command.
    assert reactor.processes[-1].args[-1] == "2"


def test_a_worker_that_ran_a_while_is_restarted_after_the_first_delay_again() -> None:
    pool, reactor, _ = started(1)
    reactor.processes[0].exit(1)
    reactor.advance(1.0)
    reactor.processes[1].exit(1)
    reactor.advance(2.0)
    assert len(reactor.processes) == 3
    reactor.advance(STABLE_AFTER)
    reactor.processes[2].exit(1)
    reactor.advance(0.99)
    assert len(reactor.processes) == 3
    reactor.advance(0.01)
    assert len(reactor.processes) == 4


def test_a_restarted_worker_is_not_ready_until_it_says_so() -> None:
    pool, reactor, events = started(2)
    reactor.processes[0].exit(1)
    assert [worker.ready for worker in pool.workers] == [False, True]
    reactor.advance(1.0)
    assert pool.workers[0].ready is False
    reactor.processes[2].write_ready()
    assert pool.workers[0].ready is True
    assert events.all_ready == 1


def test_signals_go_to_the_running_workers_only() -> None:
    pool, reactor, _ = started(2)
    reactor.processes[0].exit(1)  # waiting for its restart
    pool.signal("TERM")
    assert [process.signals for process in reactor.processes] == [[], ["TERM"]]


def test_a_worker_that_exited_but_is_not_reaped_yet_is_skipped() -> None:
    pool, reactor, _ = started(2)
    reactor.processes[0].exited = True
    pool.signal("TERM")
    assert reactor.processes[1].signals == ["TERM"]


def test_a_reload_reaches_the_serving_workers_at_once_and_a_starting_one_once_it_serves() -> None:
    pool, reactor, _ = started(3)
    reactor.processes[0].exit(1)
    reactor.advance(1.0)  # worker 1 restarted, not serving yet
    reactor.processes[1].exit(1)  # worker 2 waiting for its restart
    pool.reload()
    first, second, third, restarted = reactor.processes
    assert (third.signals, restarted.signals) == (["HUP"], [])
    restarted.write_ready()
    assert restarted.signals == ["HUP"]
    reactor.advance(1.0)  # worker 2's new process read the file as it is now: no reload due
    reactor.processes[-1].write_ready()
    assert reactor.processes[-1].signals == []


def test_stop_terms_every_worker_and_fires_when_all_exited() -> None:
    pool, reactor, _ = started(2)
    stopped = pool.stopService()
    fired = []
    stopped.addCallback(fired.append)
    assert [process.signals for process in reactor.processes] == [["TERM"], ["TERM"]]
    reactor.processes[0].exit(0)
    assert fired == []
    reactor.processes[1].exit(0)
    assert fired == [None]
    reactor.advance(RESTART_DELAY_MAX * 2)
    assert len(reactor.processes) == 2
    # The kill timer was cancelled.
    assert reactor.getDelayedCalls() == []


def test_stop_cancels_a_pending_restart() -> None:
    pool, reactor, _ = started(2)
    reactor.processes[0].exit(1)
    stopped = pool.stopService()
    reactor.processes[1].exit(0)
    assert stopped.called
    reactor.advance(RESTART_DELAY_MAX * 2)
    assert len(reactor.processes) == 2


def test_stop_kills_the_workers_still_running_after_the_timeout() -> None:
    pool, reactor, _ = make_pool(2, stop_timeout=40.0)
    pool.startService()
    for process in reactor.processes:
        process.write_ready()
    stopped = pool.stopService()
    reactor.processes[0].exit(0)
    reactor.advance(39.0)
    assert reactor.processes[1].signals == ["TERM"]
    reactor.advance(1.0)
    assert reactor.processes[1].signals == ["TERM", "KILL"]
    assert not stopped.called
    reactor.processes[1].exit(signal=9)
    assert stopped.called


@pytest.mark.parametrize("count", [1, 3])
def test_stop_with_no_worker_running_fires_at_once(count: int) -> None:
    pool, reactor, _ = started(count)
    for process in reactor.processes:
        process.exit(1)
    assert pool.stopService().called


def test_a_restart_is_logged_with_the_worker_its_pid_how_it_ended_and_the_delay() -> None:
    pool, reactor, _ = started(2)
    logged: list[dict] = []
    pool._log = Logger(observer=logged.append)
    reactor.processes[1].exit(signal=9)
    assert [formatEvent(event) for event in logged] == [
        "Worker 2 (pid 1001) exited (killed by signal 9); restarting it in 1 s"
    ]
    assert logged[0]["log_level"] == LogLevel.warn


def test_a_worker_that_cannot_be_spawned_is_tried_again_later() -> None:
    pool, reactor, _ = started(2)
    spawn = reactor.spawnProcess
    failures = [OSError(24, "Too many open files")]

    def failing_once(*args, **kwargs):
        if failures:
            raise failures.pop()
        return spawn(*args, **kwargs)

    reactor.spawnProcess = failing_once  # type: ignore[method-assign]
    reactor.processes[0].exit(1)
    reactor.advance(1.0)  # the restart fails: tried again 2 s later
    assert len(reactor.processes) == 2
    assert pool.workers[0].process is None
    reactor.advance(2.0)
    assert len(reactor.processes) == 3
    assert reactor.processes[2].args[-1] == "1"


def test_the_owner_hears_of_each_exit_of_a_serving_worker_with_the_restart_delay() -> None:
    pool, reactor, events = started(2)
    reactor.processes[1].exit(signal=9)
    reactor.advance(1.0)
    reactor.processes[2].exit(1)
    assert events.exits == [(2, 1.0), (2, 2.0)]
    pool.stopService()
    reactor.processes[0].exit(0)
    assert events.exits == [(2, 1.0), (2, 2.0)]  # not while stopping


def test_a_worker_whose_socket_cannot_be_bound_again_is_tried_again_later() -> None:
    failures = [CannotListenError("127.0.0.1", 9000, OSError(98, "Address already in use"))]

    def binding(index: int) -> WorkerCommand:
        if index == 1 and failures:
            raise failures.pop()
        return command(index)

    pool, reactor, events = started(2)
    pool._command = binding
    reactor.processes[0].exit(1)
    reactor.advance(1.0)
    assert len(reactor.processes) == 2
    assert events.exits[-1] == (1, 2.0)
    reactor.advance(2.0)
    assert reactor.processes[2].args[-1] == "1"
