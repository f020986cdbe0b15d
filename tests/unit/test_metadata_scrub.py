"""The scrubber's passes and walk over the copies in the metadata database (both engines)."""

from __future__ import annotations

from typing import Callable

import attrs
import pytest_twisted

from s3orchestrator.metadata.records import NewCopy, ObjectRecord
from s3orchestrator.metadata.scrub import CHECKSUM, STAT, ScrubPasses, Suspension
from s3orchestrator.metadata.store import MetadataStore

ETAG = "0123456789abcdef0123456789abcdef"


def record(key: str, size: int = 40, part_sizes: tuple[int, ...] = ()) -> ObjectRecord:
    return ObjectRecord(bucket="bkt", key=key, store="a", location=f"a:{key}", size=size, etag=ETAG,
                        content_type="binary/octet-stream", last_modified_ms=1_700_000_000_000,
                        part_sizes=part_sizes)


async def with_objects(make_store: Callable[..., MetadataStore], *records: ObjectRecord) -> MetadataStore:
    """Each of ``records`` live on stores "a" and "b"."""
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 0), ("b", 0)])
    for each in records:
        first, second = await metadata.reserve_copies(each.size, lambda usage: ("a", "b"))
        await metadata.commit_copies(
            each, [NewCopy("a", f"a:{each.key}", first.id), NewCopy("b", f"b:{each.key}", second.id)], missing=False
        )
    return metadata


@pytest_twisted.ensureDeferred
async def test_the_walk_returns_live_copies_in_key_order_from_a_position(make_store) -> None:
    metadata = await with_objects(make_store, record("y"), record("x", 30, (20, 10)))
    passes = ScrubPasses(metadata.database)

    first = await passes.next_copies(None, 3)
    assert [(c.key, c.store, c.location) for c in first] == [("x", "a", "a:x"), ("x", "b", "b:x"), ("y", "a", "a:y")]
    assert (first[0].size, first[0].etag, first[0].part_sizes) == (30, ETAG, (20, 10))
    rest = await passes.next_copies(first[-1].position, 3)
    assert [(c.key, c.store) for c in rest] == [("y", "b")]
    assert await passes.next_copies(rest[-1].position, 3) == []


@pytest_twisted.ensureDeferred
async def test_a_pass_keeps_its_position_and_counts_until_it_finishes(make_store) -> None:
    metadata = await with_objects(make_store)
    passes = ScrubPasses(metadata.database)
    assert await passes.passes() == []

    begun = await passes.begin(STAT, 1000)
    assert (begun.running, begun.position, begun.checked, begun.finished_ms) == (True, None, 0, None)
    await passes.advance(STAT, ("bkt", "k", "a"), 5, 1)
    await passes.advance(STAT, ("bkt", "m", "b"), 2, 0)
    [current] = await passes.passes()
    assert (current.position, current.checked, current.found, current.running) == (("bkt", "m", "b"), 7, 1, True)

    await passes.finish(STAT, 2000)
    await passes.begin(CHECKSUM, 2500)
    checksum, stat = await passes.passes()
    assert (stat.kind, stat.running, stat.position, stat.finished_ms, stat.checked) == (STAT, False, None, 2000, 7)
    assert (checksum.kind, checksum.running) == (CHECKSUM, True)

    again = await passes.begin(STAT, 3000)
    assert (again.running, again.started_ms, again.finished_ms, again.checked, again.found) == (True, 3000, 2000, 0, 0)


@pytest_twisted.ensureDeferred
async def test_a_pass_begun_in_the_millisecond_the_last_one_finished_runs(make_store) -> None:
    metadata = await with_objects(make_store)
    passes = ScrubPasses(metadata.database)
    await passes.begin(STAT, 1000)
    await passes.finish(STAT, 2000)

    again = await passes.begin(STAT, 2000)  # scrub --now as the pass ends, on a coarse clock

    assert (again.running, again.started_ms, again.finished_ms) == (True, 2001, 2000)
    assert [current.running for current in await passes.passes()] == [True]


@pytest_twisted.ensureDeferred
async def test_a_copy_is_let_go_only_while_its_object_has_the_etag_checked(make_store) -> None:
    metadata = await with_objects(make_store, record("k"))
    _, copies = await metadata.get_object_copies("bkt", "k")  # type: ignore[misc]

    assert await metadata.mark_copy_missing("bkt", "k", copies[0], etag="f" * 32) is None
    assert len((await metadata.get_object_copies("bkt", "k"))[1]) == 2  # type: ignore[index]
    assert await metadata.mark_copy_missing("bkt", "k", copies[0], etag=ETAG) == 1


@pytest_twisted.ensureDeferred
async def test_a_suspension_stays_until_passes_are_asked_for(make_store) -> None:
    metadata = await with_objects(make_store)
    passes = ScrubPasses(metadata.database)
    await passes.suspend(Suspension("b", 1000, STAT, 11, 12))
    await passes.suspend(Suspension("b", 2000, CHECKSUM, 1, 1))  # the first record stays

    assert await passes.suspensions() == [Suspension("b", 1000, STAT, 11, 12)]
    await passes.request(3000)
    assert await passes.suspensions() == []


@pytest_twisted.ensureDeferred
async def test_a_sole_copy_found_missing_makes_its_object_lost_and_stays_live_until_found_again(make_store) -> None:
    metadata = await with_objects(make_store, record("k"))
    passes = ScrubPasses(metadata.database)
    _, copies = await metadata.get_object_copies("bkt", "k")  # type: ignore[misc]
    first, second = await passes.next_copies(None, 2)
    assert not await passes.record_lost(first, 5000)  # another live copy: not the only one

    assert await metadata.mark_copy_missing("bkt", "k", copies[1]) == 1
    assert not await passes.record_lost(attrs.evolve(first, etag="f" * 32), 5000)  # overwritten since
    assert await passes.record_lost(first, 5000)
    assert [(lost.key, lost.since_ms) for lost in await metadata.lost_objects(10)] == [("k", 5000)]
    [walked] = await passes.next_copies(None, 2)
    assert (walked.store, walked.lost) == ("a", True)  # still live, flagged lost
    assert [copy.store for copy in (await metadata.get_object_copies("bkt", "k"))[1]] == ["a"]  # type: ignore[index]
    cleanups = [(entry.store, entry.location) for entry in await metadata.list_cleanups(10)]
    assert ("a", "a:k") not in cleanups

    assert await passes.found_again(walked, 6000)
    assert await metadata.lost_objects(10) == []
    assert not await passes.found_again(walked, 7000)  # no longer lost
    assert (await passes.next_copies(None, 2))[0].lost is False
