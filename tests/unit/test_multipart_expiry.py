"""Tests for the multipart expiry job: which uploads a run aborts, the timer, failures,
batches, and a run over a real SQLite metadata store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent

from s3orchestrator.jobs.multipart_expiry import BATCH_SIZE, MultipartExpiryJob
from s3orchestrator.metadata.records import PartRecord, UploadRecord
from s3orchestrator.metadata.store import MetadataStore, sqlite_metadata_store
from s3orchestrator.stores.interface import StoreUnavailable
from tests.unit.fakes import Outcome

HOUR = 3600.0
DAY = 24 * HOUR
START = 1_000 * DAY  # the Clock's time when a test begins


def upload(upload_id: str, age: float, clock: Clock, store: str = "a", key: str | None = None) -> UploadRecord:
    """An upload initiated ``age`` seconds before the clock's current time."""
    key = upload_id if key is None else key
    return UploadRecord(
        upload_id=upload_id, bucket="bkt", key=key, store=store, location=f"bkt/{key}",
        store_upload_id=f"s-{upload_id}", content_type="binary/octet-stream",
        initiated_ms=int((clock.seconds() - age) * 1000),
    )


class FakeMetadata:
    """The metadata calls the job makes, over a dict of uploads.

    Queries answer on the clock's next turn (``clock.advance(0)``), as the real store
    answers from its database thread, never synchronously; ``synchronous`` makes them
    answer at once.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.uploads: dict[str, UploadRecord] = {}
        self.completed: dict[str, int] = {}  # completed upload id -> completed_ms
        self.queries = 0
        self.mode = "ok"  # "ok", "fail" (errback) or "hang" (a Deferred the test fires)
        self.synchronous = False
        self.pending: list[Deferred[list[UploadRecord]]] = []

    def forget_completed_uploads(self, before_ms: int) -> Deferred[int]:
        forgotten = [upload_id for upload_id, completed_ms in self.completed.items() if completed_ms < before_ms]
        for upload_id in forgotten:
            del self.completed[upload_id]
        return self._answer(succeed(len(forgotten)))

    def add(self, *uploads: UploadRecord) -> None:
        for item in uploads:
            self.uploads[item.upload_id] = item

    def uploads_initiated_before(
        self, before_ms: int, limit: int, after: tuple[int, str] | None = None
    ) -> Deferred[list[UploadRecord]]:
        self.queries += 1
        if self.mode == "fail":
            return self._answer(fail(RuntimeError("database is locked")))
        found = sorted(
            (u for u in self.uploads.values()
             if u.initiated_ms < before_ms and (after is None or (u.initiated_ms, u.upload_id) > after)),
            key=lambda u: (u.initiated_ms, u.upload_id),
        )[:limit]
        if self.mode == "hang":
            d: Deferred[list[UploadRecord]] = Deferred()
            d.addCallback(lambda _: found)
            self.pending.append(d)
            return d
        return self._answer(succeed(found))

    def _answer(self, answer: Deferred[Any]) -> Deferred[Any]:
        if self.synchronous:
            return answer
        later: Deferred[Any] = Deferred()
        self.clock.callLater(0, lambda: answer.chainDeferred(later))
        return later

    def delete_upload(self, upload_id: str) -> Deferred[UploadRecord | None]:
        return succeed(self.uploads.pop(upload_id, None))


def run(job: MultipartExpiryJob, clock: Clock) -> Outcome[int]:
    """One run, the clock turned until its queries are answered."""
    done = Outcome(job.run_once())
    clock.advance(0)
    return done


class FakeAborter:
    """MultipartOperations.abort as the job sees it: ends the upload in its store, then
    forgets it in the metadata. Uploads on a store in ``down`` fail with StoreUnavailable."""

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata
        self.calls: list[str] = []
        self.down: set[str] = set()
        self.bug = False

    async def abort(self, upload: UploadRecord) -> bool:
        self.calls.append(upload.upload_id)
        if self.bug:
            raise KeyError("not a store error")
        if upload.store in self.down:
            raise StoreUnavailable(f"{upload.store}: connection refused")
        return await self.metadata.delete_upload(upload.upload_id) is not None


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(START)
    return clock


@pytest.fixture
def metadata(clock: Clock) -> FakeMetadata:
    return FakeMetadata(clock)


@pytest.fixture
def aborter(metadata: FakeMetadata) -> FakeAborter:
    return FakeAborter(metadata)


@pytest.fixture
def job(aborter: FakeAborter, metadata: FakeMetadata, clock: Clock) -> Iterator[MultipartExpiryJob]:
    job = MultipartExpiryJob(aborter, metadata, expire_after=DAY, interval=HOUR, clock=clock)  # type: ignore[arg-type]
    yield job
    if job.running:
        job.stopService()


def logged(events: list[LogEvent], level: LogLevel = LogLevel.info) -> list[tuple[str, str]]:
    """(level, text) of the job's events at ``level`` or above."""
    return [
        (event["log_level"].name, formatEvent(event))
        for event in events
        if event.get("log_namespace", "").startswith("s3orchestrator.jobs.multipart_expiry")
        and event["log_level"] >= level
    ]


# -- one run ------------------------------------------------------------------------------------


def test_a_run_aborts_only_uploads_older_than_expire_after(job, metadata, aborter, clock) -> None:
    metadata.add(upload("young", 23 * HOUR, clock), upload("old", 25 * HOUR, clock))
    assert run(job, clock).result == 1
    assert aborter.calls == ["old"]
    assert set(metadata.uploads) == {"young"}
    assert (job.runs, job.expired, job.failures, job.errors) == (1, 1, 0, 0)


def test_a_run_forgets_uploads_completed_more_than_completed_retention_ago(job, metadata, clock) -> None:
    now_ms = int(clock.seconds() * 1000)
    metadata.completed = {"recent": now_ms - 599_000, "due": now_ms - 600_000, "old": now_ms - 601_000}
    run(job, clock)
    assert set(metadata.completed) == {"recent", "due"}
    assert job.forgotten == 1


def test_completed_retention_is_the_jobs_own(metadata, aborter, clock) -> None:
    job = MultipartExpiryJob(aborter, metadata, expire_after=DAY, interval=HOUR, clock=clock,  # type: ignore[arg-type]
                             completed_retention=60)
    now_ms = int(clock.seconds() * 1000)
    metadata.completed = {"recent": now_ms - 59_000, "old": now_ms - 61_000}
    run(job, clock)
    assert set(metadata.completed) == {"recent"}


def test_an_upload_exactly_expire_after_old_is_kept(job, metadata, aborter, clock) -> None:
    metadata.add(upload("due", DAY, clock))
    assert run(job, clock).result == 0
    assert aborter.calls == []
    clock.advance(0.001)
    assert run(job, clock).result == 1


def test_an_upload_already_gone_is_not_counted(job, metadata, clock) -> None:
    metadata.add(upload("old", 25 * HOUR, clock))

    class Gone(FakeAborter):
        async def abort(self, item: UploadRecord) -> bool:
            self.calls.append(item.upload_id)
            self.metadata.uploads.pop(item.upload_id)  # completed meanwhile by a client
            return False

    gone = Gone(metadata)
    expiry = MultipartExpiryJob(gone, metadata, expire_after=DAY, interval=HOUR, clock=clock)  # type: ignore[arg-type]
    assert run(expiry, clock).result == 0
    assert gone.calls == ["old"]
    assert (expiry.expired, expiry.failures) == (0, 0)


def test_more_than_a_batch_of_expired_uploads_are_all_aborted_in_one_run(job, metadata, aborter, clock) -> None:
    count = 2 * BATCH_SIZE + 37
    metadata.add(*(upload(f"u{i:04d}", DAY + i, clock) for i in range(1, count + 1)))
    metadata.add(upload("young", HOUR, clock))
    assert run(job, clock).result == count
    assert set(metadata.uploads) == {"young"}
    assert len(aborter.calls) == count and len(set(aborter.calls)) == count
    assert aborter.calls[0] == f"u{count:04d}"  # oldest first
    assert metadata.queries == 3
    assert (job.runs, job.expired) == (1, count)


def test_exactly_a_batch_of_expired_uploads_ends_with_an_empty_batch(job, metadata, aborter, clock) -> None:
    metadata.add(*(upload(f"u{i:04d}", DAY + i, clock) for i in range(1, BATCH_SIZE + 1)))
    assert run(job, clock).result == BATCH_SIZE
    assert metadata.uploads == {}
    assert metadata.queries == 2


def test_a_failing_abort_counts_a_failure_and_the_upload_stays(job, metadata, aborter, clock) -> None:
    metadata.add(upload("down", 26 * HOUR, clock, store="b"), upload("up", 25 * HOUR, clock, store="a"))
    aborter.down.add("b")
    assert run(job, clock).result == 1
    assert set(metadata.uploads) == {"down"}
    assert (job.runs, job.expired, job.failures, job.errors) == (1, 1, 1, 0)


def test_an_unexpected_abort_error_counts_a_failure(job, metadata, aborter, clock) -> None:
    metadata.add(upload("old", 25 * HOUR, clock))
    aborter.bug = True
    assert run(job, clock).result == 0
    assert (job.runs, job.expired, job.failures) == (1, 0, 1)
    assert set(metadata.uploads) == {"old"}


def test_a_store_that_keeps_failing_does_not_loop_the_run(job, metadata, aborter, clock) -> None:
    metadata.add(*(upload(f"u{i:04d}", DAY + i, clock, store="b") for i in range(1, 3 * BATCH_SIZE + 1)))
    aborter.down.add("b")
    done = run(job, clock)
    assert done.result == 0
    # Each upload tried once, paging past the failures: three full batches and an empty one.
    assert len(aborter.calls) == 3 * BATCH_SIZE
    assert metadata.queries == 4
    assert (job.runs, job.failures) == (1, 3 * BATCH_SIZE)
    assert len(metadata.uploads) == 3 * BATCH_SIZE  # all kept for the next run


def test_a_store_that_is_down_does_not_keep_uploads_of_other_stores_from_expiring(
    job, metadata, aborter, clock
) -> None:
    metadata.add(*(upload(f"down{i:04d}", 2 * DAY + i, clock, store="b") for i in range(BATCH_SIZE)))
    metadata.add(*(upload(f"up{i}", DAY + HOUR, clock, store="a") for i in range(5)))
    aborter.down.add("b")
    assert run(job, clock).result == 5
    assert not any(name.startswith("up") for name in metadata.uploads)


def test_each_expired_upload_is_tried_once_per_run(job, metadata, aborter, clock) -> None:
    metadata.add(*(upload(f"down{i}", 3 * DAY + i, clock, store="b") for i in range(10)))
    metadata.add(*(upload(f"up{i:04d}", DAY + i, clock, store="a") for i in range(1, 151)))
    aborter.down.add("b")
    assert run(job, clock).result == 150
    assert len(aborter.calls) == 160
    assert job.failures == 10


def test_a_failing_metadata_query_counts_an_error_and_fires_zero(job, metadata, clock) -> None:
    metadata.add(upload("old", 25 * HOUR, clock))
    metadata.mode = "fail"
    assert run(job, clock).result == 0
    assert (job.runs, job.expired, job.errors) == (1, 0, 1)


def test_a_run_already_going_is_not_doubled(job, metadata, aborter, clock) -> None:
    metadata.add(upload("old", 25 * HOUR, clock))
    metadata.mode = "hang"
    first, second = Outcome(job.run_once()), Outcome(job.run_once())
    assert first.pending and second.pending
    assert metadata.queries == 1
    metadata.pending[0].callback(None)
    clock.advance(0)  # the run's last query: forgetting old completions
    assert first.result == second.result == 1
    assert aborter.calls == ["old"]
    assert job.runs == 1


def test_a_run_answered_synchronously_fires_with_its_count(job, metadata, aborter, clock) -> None:
    metadata.synchronous = True
    metadata.add(upload("old", 25 * HOUR, clock))
    assert Outcome(job.run_once()).result == 1
    assert (job.runs, job.expired, job.errors) == (1, 1, 0)


@pytest.mark.parametrize("interval, expire_after", [(0, DAY), (-1, DAY), (HOUR, 0), (HOUR, -DAY)])
def test_non_positive_interval_or_expiry_is_refused(metadata, aborter, clock, interval, expire_after) -> None:
    with pytest.raises(ValueError):
        MultipartExpiryJob(aborter, metadata, expire_after=expire_after, interval=interval, clock=clock)  # type: ignore[arg-type]


# -- the timer ----------------------------------------------------------------------------------


def test_start_runs_at_once_then_every_interval(job, metadata, aborter, clock) -> None:
    metadata.add(upload("young", 23 * HOUR, clock), upload("old", 25 * HOUR, clock))
    job.startService()
    clock.advance(0)
    assert job.runs == 1 and aborter.calls == ["old"]
    clock.advance(HOUR - 1)
    assert job.runs == 1
    clock.advance(1)  # "young" is now exactly a day old: not yet expired
    assert job.runs == 2 and set(metadata.uploads) == {"young"}
    clock.advance(HOUR)
    assert job.runs == 3 and metadata.uploads == {}
    assert aborter.calls == ["old", "young"]
    assert job.expired == 2


def test_stop_ends_the_runs(job, metadata, clock) -> None:
    job.startService()
    clock.advance(0)
    job.stopService()
    clock.advance(10 * HOUR)
    assert job.runs == 1


def test_the_job_keeps_running_after_a_failed_abort(job, metadata, aborter, clock) -> None:
    metadata.add(upload("old", 25 * HOUR, clock, store="b"))
    aborter.down.add("b")
    job.startService()
    clock.advance(0)
    assert (job.runs, job.failures) == (1, 1)
    clock.advance(HOUR)
    assert (job.runs, job.failures) == (2, 2)
    aborter.down.clear()
    clock.advance(HOUR)
    assert (job.runs, job.failures, job.expired) == (3, 2, 1)
    assert metadata.uploads == {}
    assert job.running


def test_the_job_keeps_running_after_a_failed_run(job, metadata, aborter, clock) -> None:
    metadata.add(upload("old", 25 * HOUR, clock))
    metadata.mode = "fail"
    job.startService()
    clock.advance(0)
    clock.advance(HOUR)
    assert (job.runs, job.errors) == (2, 2)
    metadata.mode = "ok"
    clock.advance(HOUR)
    assert (job.runs, job.errors, job.expired) == (3, 2, 1)


def test_an_error_starting_a_run_is_counted_and_the_job_keeps_running(job, clock) -> None:
    calls: list[int] = []

    def broken() -> Deferred[int]:
        calls.append(1)
        raise RuntimeError("cannot start")

    job.run_once = broken  # type: ignore[method-assign]
    job.startService()
    clock.advance(0)
    clock.advance(HOUR)
    assert len(calls) == 2 and job.errors == 2
    assert job.running


# -- over a real SQLite metadata store ----------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[MetadataStore]:
    store = sqlite_metadata_store(str(tmp_path / "metadata.sqlite3"), reactor)
    yield store
    store.database.close()


@pytest_twisted.ensureDeferred
async def test_a_run_over_sqlite_aborts_the_expired_upload_and_releases_its_parts(sqlite_store, clock) -> None:
    await sqlite_store.start()
    await sqlite_store.sync_stores([("a", 1000)])
    young, old = upload("young", 23 * HOUR, clock), upload("old", 25 * HOUR, clock)
    for item in (young, old):
        await sqlite_store.create_upload(item)
        reservation = await sqlite_store.reserve(100, lambda usage: "a")
        await sqlite_store.commit_part(
            reservation.id,
            PartRecord(upload_id=item.upload_id, part_number=1, store="a", size=100, etag="0" * 32,
                       store_etag="e", last_modified_ms=0),
        )
    assert (await sqlite_store.store_usage())[0].reserved_bytes == 200
    aborter = FakeAborter(sqlite_store)
    expiry = MultipartExpiryJob(aborter, sqlite_store, expire_after=DAY, interval=HOUR, clock=clock)
    assert await expiry.run_once() == 1
    assert aborter.calls == ["old"]
    assert await sqlite_store.get_upload("old") is None
    assert await sqlite_store.get_upload("young") == young
    assert (await sqlite_store.store_usage())[0].reserved_bytes == 100


# -- what a run logs ----------------------------------------------------------------------------


def test_a_run_with_nothing_to_expire_logs_only_at_debug(job, metadata, clock, events) -> None:
    metadata.add(upload("young", HOUR, clock))
    assert run(job, clock).result == 0
    assert logged(events) == []
    assert logged(events, LogLevel.debug) == [
        ("debug", "Multipart expiry: 0 uploads older than 86400 s aborted, 0 failed")]


def test_a_run_that_aborted_an_upload_logs_it_at_info(job, metadata, clock, events) -> None:
    metadata.add(upload("old", 25 * HOUR, clock))
    assert run(job, clock).result == 1
    assert logged(events) == [
        ("info", "Expired multipart upload old of bkt/old on store a"),
        ("info", "Multipart expiry: 1 uploads older than 86400 s aborted, 0 failed"),
    ]


def test_a_run_that_failed_to_abort_logs_at_warn_and_info(job, metadata, aborter, clock, events) -> None:
    metadata.add(upload("stuck", 25 * HOUR, clock, store="b"))
    aborter.down.add("b")
    assert run(job, clock).result == 0
    assert logged(events) == [
        ("warn", "Could not expire multipart upload stuck of bkt/stuck on store b: b: connection refused"),
        ("info", "Multipart expiry: 0 uploads older than 86400 s aborted, 1 failed"),
    ]
