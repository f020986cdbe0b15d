"""Workers of one supervisor: the reaper leaves a live fellow worker's write intents alone."""

from __future__ import annotations

import os

from s3orchestrator.jobs.reaper import is_dead
from s3orchestrator.metadata.records import Intent
from s3orchestrator.workers.role import is_fellow_worker, parent_of


def intent(owner: str, expires_ms: int = 10_000) -> Intent:
    return Intent(1, "b", "k", "s", "b/k", 5, owner, created_ms=0, expires_ms=expires_ms)


def test_another_process_of_this_host_is_dead_unless_it_is_a_fellow_worker() -> None:
    assert is_dead(intent("host:7"), "host:8", now_ms=0)
    assert not is_dead(intent("host:7"), "host:8", now_ms=0, fellow=lambda owner: owner == "host:7")


def test_a_fellow_workers_intent_past_its_lease_is_dead() -> None:
    assert is_dead(intent("host:7", expires_ms=10), "host:8", now_ms=10, fellow=lambda owner: True)


def test_this_processes_own_and_other_hosts_live_intents_are_not_dead() -> None:
    assert not is_dead(intent("host:8"), "host:8", now_ms=0)
    assert not is_dead(intent("other:7"), "host:8", now_ms=0)


def test_a_fellow_worker_is_a_live_child_of_this_workers_parent() -> None:
    parents = {7: os.getppid(), 9: os.getppid() + 1}
    assert is_fellow_worker("host:7", parents.get)
    assert not is_fellow_worker("host:9", parents.get)  # a process of another daemon
    assert not is_fellow_worker("host:11", parents.get)  # gone
    assert not is_fellow_worker("host:x", parents.get)


def test_the_parent_of_a_live_process_is_read_from_proc() -> None:
    assert parent_of(os.getpid()) == os.getppid()
    assert parent_of(2**22 + 1) is None  # above the kernel's largest pid
