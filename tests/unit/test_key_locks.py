"""Tests for KeyLocks: one holder per key at a time, in order; no lock outlives its users."""

from __future__ import annotations

from typing import Hashable

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred

from s3orchestrator.placement.locks import KeyLocks
from tests.unit.fakes import Outcome


class Holders:
    """Coroutines that hold a key until the test opens their gate; records enter/exit events."""

    def __init__(self, locks: KeyLocks) -> None:
        self.locks = locks
        self.events: list[tuple[str, str]] = []
        self.gates: dict[str, Deferred[None]] = {}
        self.deferreds: dict[str, Deferred[None]] = {}

    def start(self, name: str, key: Hashable, fail: bool = False) -> Outcome[None]:
        gate: Deferred[None] = Deferred()
        self.gates[name] = gate

        async def hold() -> None:
            async with self.locks.hold(key):
                self.events.append(("enter", name))
                await gate
                self.events.append(("exit", name))
                if fail:
                    raise ValueError(f"{name} failed while holding the lock")

        self.deferreds[name] = ensureDeferred(hold())
        return Outcome(self.deferreds[name])

    def release(self, name: str) -> None:
        self.gates[name].callback(None)


def test_holders_of_the_same_key_run_one_at_a_time_in_order() -> None:
    holders = Holders(KeyLocks())
    outcomes = [holders.start(name, "key") for name in ("a", "b", "c")]
    assert holders.events == [("enter", "a")]

    holders.release("a")
    assert holders.events == [("enter", "a"), ("exit", "a"), ("enter", "b")]

    holders.release("b")
    holders.release("c")
    assert holders.events == [
        ("enter", "a"), ("exit", "a"),
        ("enter", "b"), ("exit", "b"),
        ("enter", "c"), ("exit", "c"),
    ]
    assert all(outcome.succeeded for outcome in outcomes)


def test_different_keys_do_not_block_each_other() -> None:
    holders = Holders(KeyLocks())

    holders.start("a", ("bkt", "one"))
    holders.start("b", ("bkt", "two"))

    assert holders.events == [("enter", "a"), ("enter", "b")]


def test_table_holds_one_entry_per_key_in_use() -> None:
    locks = KeyLocks()
    holders = Holders(locks)

    holders.start("a", "one")
    holders.start("b", "one")
    holders.start("c", "two")

    assert len(locks) == 2


def test_table_is_empty_once_every_holder_finished() -> None:
    locks = KeyLocks()
    holders = Holders(locks)
    for name in ("a", "b"):
        holders.start(name, "key")
    holders.start("c", "other")

    for name in ("a", "b", "c"):
        holders.release(name)

    assert len(locks) == 0


def test_a_holder_that_raises_releases_the_lock_and_leaves_the_table_empty() -> None:
    locks = KeyLocks()
    holders = Holders(locks)
    failing = holders.start("a", "key", fail=True)
    waiting = holders.start("b", "key")

    holders.release("a")

    assert failing.failure.check(ValueError)
    assert holders.events[-1] == ("enter", "b")
    holders.release("b")
    assert waiting.succeeded
    assert len(locks) == 0


def test_a_waiter_cancelled_before_its_turn_never_enters_and_leaves_no_entry() -> None:
    locks = KeyLocks()
    holders = Holders(locks)
    holders.start("a", "key")
    waiter = holders.start("b", "key")

    # What a caller giving up on the operation does to the Deferred it holds.
    holders.deferreds["b"].cancel()
    holders.release("a")

    assert waiter.failure.check(CancelledError)
    assert ("enter", "b") not in holders.events
    assert len(locks) == 0
