"""The telnet manhole without a network: the password-file checker, the login prompt and
shell over a StringTransport, and the helpers against fakes."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.conch.telnet import ITelnetProtocol
from twisted.cred.checkers import ANONYMOUS
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent

from s3orchestrator.config import ConfigError, ManholeConfig
from s3orchestrator.jobs.health import HealthCheckJob, StoreHealth
from s3orchestrator.jobs.multipart_expiry import MultipartExpiryJob
from s3orchestrator.metadata.records import (
    CleanupEntry,
    Instance,
    Intent,
    LostObject,
    QueuedReplication,
    QueueTotals,
    StoreUsage,
    UploadRecord,
)
from s3orchestrator.ops.manhole import (
    ManholeHelpers,
    ManholeRealm,
    PasswordFileChecker,
    PeerCredentials,
    check_manhole_config,
    manhole_factory,
)
from s3orchestrator.ops.passwords import hash_password
from tests.unit.fakes import Outcome, StringTransport

PASSWORD = "open sesame"
_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[A-Za-z=>])")


def run_now(function, *args) -> Deferred[Any]:
    """The checker's thread runner, run inline."""
    return maybeDeferred(function, *args)


def messages(events: list[LogEvent], level: str) -> list[str]:
    return [formatEvent(event) for event in events
            if event.get("log_level") is not None and event["log_level"].name == level]


@pytest.fixture
def passwords(tmp_path: Path) -> Path:
    path = tmp_path / "manhole.passwd"
    path.write_text(f"admin:{hash_password(PASSWORD, iterations=1000)}\n")
    return path


# -- the checker -----------------------------------------------------------------------------------


def login(checker: PasswordFileChecker, user: bytes, password: bytes) -> Outcome[bytes]:
    return Outcome(checker.requestAvatarId(PeerCredentials(user, password, "127.0.0.1:40000")))


def test_right_password_gives_the_user(passwords, events):
    outcome = login(PasswordFileChecker(str(passwords), run_now), b"admin", PASSWORD.encode())
    assert outcome.result == b"admin"
    assert messages(events, "info") == ["Manhole login: user admin from 127.0.0.1:40000"]


def test_wrong_password_is_refused_and_logged_without_the_password(passwords, events):
    outcome = login(PasswordFileChecker(str(passwords), run_now), b"admin", b"guess-123")
    assert outcome.failure.check(UnauthorizedLogin)
    assert messages(events, "warn") == [
        "Manhole login failed for user admin from 127.0.0.1:40000: wrong password"]
    assert not any("guess-123" in repr(event) for event in events)


def test_unknown_user_is_refused(passwords, events):
    outcome = login(PasswordFileChecker(str(passwords), run_now), b"root", PASSWORD.encode())
    assert outcome.failure.check(UnauthorizedLogin)
    assert messages(events, "warn") == ["Manhole login failed for user root from 127.0.0.1:40000: unknown user"]


def test_user_name_control_characters_are_escaped_in_the_log(passwords, events):
    login(PasswordFileChecker(str(passwords), run_now), b"evil\x1b[2J", b"x")
    assert messages(events, "warn") == [
        "Manhole login failed for user evil\\x1b[2J from 127.0.0.1:40000: unknown user"]


def test_a_long_user_name_is_cut_in_the_log(passwords, events):
    login(PasswordFileChecker(str(passwords), run_now), b"u" * 10_000, b"x")
    [warning] = messages(events, "warn")
    assert warning == f"Manhole login failed for user {'u' * 64} from 127.0.0.1:40000: unknown user"


def test_the_password_file_is_read_at_every_login(passwords):
    checker = PasswordFileChecker(str(passwords), run_now)
    passwords.write_text(f"admin:{hash_password('new one', iterations=1000)}\n")
    assert login(checker, b"admin", PASSWORD.encode()).failure.check(UnauthorizedLogin)
    assert login(checker, b"admin", b"new one").result == b"admin"


def test_a_password_file_broken_after_start_refuses_logins_and_says_why(passwords, events):
    passwords.write_text("admin:plaintext\n")
    outcome = login(PasswordFileChecker(str(passwords), run_now), b"admin", b"plaintext")
    assert outcome.failure.check(UnauthorizedLogin)
    [error] = messages(events, "error")
    assert error.startswith(f"Manhole login refused for user admin from 127.0.0.1:40000: {passwords}: line 1:")
    assert ":plaintext" not in error


def test_start_check_names_the_key_file_and_line(tmp_path):
    path = tmp_path / "p"
    path.write_text("# users\nadmin\n")
    with pytest.raises(ConfigError) as raised:
        check_manhole_config(ManholeConfig(listen="tcp:1:interface=127.0.0.1", password_file=str(path)))
    assert str(raised.value) == f"manhole.password_file: {path}: line 2: expected user:hash"


def test_start_check_refuses_a_missing_password_file(tmp_path):
    with pytest.raises(ConfigError, match="manhole.password_file: .*cannot read the password file"):
        check_manhole_config(ManholeConfig(listen="tcp:1:interface=127.0.0.1", password_file=str(tmp_path / "x")))


# -- fakes for the helpers -------------------------------------------------------------------------


def upload(upload_id: str, key: str, initiated_ms: int) -> UploadRecord:
    return UploadRecord(upload_id=upload_id, bucket="app1-files", key=key, store="local-a", location="",
                        store_upload_id="", content_type="binary/octet-stream", initiated_ms=initiated_ms)


class FakeMetadata:
    def __init__(self) -> None:
        self.usage = [StoreUsage("local-a", 1024**3, 1536, 0, 2), StoreUsage("remote-b", 0, 0, 0, 0)]
        self.uploads: list[UploadRecord] = []
        self.cleanups: list[CleanupEntry] = []
        self.intents: list[Intent] = []
        self.instances: list[Instance] = []
        self.queued: list[QueuedReplication] = []
        self.lost: list[LostObject] = []
        self.broken = False

    def store_usage(self) -> Deferred[list[StoreUsage]]:
        return fail(RuntimeError("database is locked")) if self.broken else succeed(self.usage)

    def upload_counts(self) -> Deferred[dict[str, int]]:
        counts: dict[str, int] = {}
        for item in self.uploads:
            counts[item.store] = counts.get(item.store, 0) + 1
        return succeed(counts)

    def cleanup_totals(self) -> Deferred[dict[str, tuple[int, int]]]:
        totals: dict[str, tuple[int, int]] = {}
        for entry in self.cleanups:
            count, size = totals.get(entry.store, (0, 0))
            totals[entry.store] = (count + 1, size + entry.size)
        return succeed(totals)

    def list_cleanups(self, limit: int) -> Deferred[list[CleanupEntry]]:
        return succeed(self.cleanups[:limit])

    def list_intents(self) -> Deferred[list[Intent]]:
        return succeed(list(self.intents))

    def list_instances(self) -> Deferred[list[Instance]]:
        return succeed(list(self.instances))

    def queue_totals(self) -> Deferred[QueueTotals]:
        oldest = min((entry.since_ms for entry in self.queued), default=None)
        return succeed(QueueTotals(len(self.queued), oldest, len(self.intents), len(self.lost)))

    def lost_objects(self, limit: int) -> Deferred[list[LostObject]]:
        return succeed(self.lost[:limit])

    def replication_queue(self, limit: int, after: object = None) -> Deferred[list[QueuedReplication]]:
        return succeed(self.queued[:limit])

    def uploads_initiated_before(self, before_ms: int, limit: int, after=None) -> Deferred[list[UploadRecord]]:
        found = sorted((u for u in self.uploads if u.initiated_ms < before_ms), key=lambda u: u.initiated_ms)
        return succeed(found[:limit])


class NoAborts:
    async def abort(self, item: UploadRecord) -> bool:
        return False


def target(at: float = 0) -> SimpleNamespace:
    """The service the manhole sees, its clock at ``at`` seconds."""
    clock = Clock()
    clock.advance(at)
    metadata = FakeMetadata()
    health = StoreHealth(["local-a", "remote-b"], unhealthy_after=1, now=clock.seconds)
    jobs = {
        "health_checks": HealthCheckJob({}, health, 15.0, clock),
        "multipart_expiry": MultipartExpiryJob(NoAborts(), metadata, 86400.0, 3600.0, clock),
    }
    return SimpleNamespace(config=SimpleNamespace(routing_strategy="pack"), metadata=metadata,
                           stores={"local-a": object(), "remote-b": object()}, health=health, jobs=jobs,
                           reactor=clock)


def helpers(service: SimpleNamespace) -> tuple[ManholeHelpers, list[str]]:
    shown: list[str] = []
    return ManholeHelpers(service, shown.append), shown


def test_status_prints_a_table_of_the_stores():
    service = target()
    service.health.record_failure("remote-b", "connection refused")
    helper, shown = helpers(service)
    helper.status()
    assert shown == ["""\
status: degraded, 2 stores, 0 multipart uploads in progress
STORE     HEALTH  USED          RESERVED  QUOTA      COPIES  LIVE     CLEANUP  UPLOADS
local-a   up      1.5 KiB (0%)  0 B       1.0 GiB    2       1.5 KiB  0        0
remote-b  DOWN    0 B           0 B       unlimited  0       0 B      0        0
remote-b is down: connection refused
"""]


def test_status_failure_is_printed_and_logged(events):
    service = target()
    service.metadata.broken = True
    helper, shown = helpers(service)
    helper.status()
    assert shown == ["status() failed: database is locked\n"]
    assert any(event.get("log_failure") is not None for event in events)


def test_uploads_lists_uploads_oldest_first_with_their_age():
    service = target(at=10_000)
    service.metadata.uploads = [upload("id-new", "b.bin", 9_990_000), upload("id-old", "a\x1b.bin", 6_000_000)]
    helper, shown = helpers(service)
    helper.uploads()
    assert shown == ["""\
BUCKET/KEY            UPLOAD ID  STORE    AGE
app1-files/a\\x1b.bin  id-old     local-a  1h 6m
app1-files/b.bin      id-new     local-a  10s
2 uploads (oldest first)
"""]


def test_uploads_says_when_there_are_more_than_the_limit():
    service = target()
    service.metadata.uploads = [upload(f"id-{i}", f"k{i}", i) for i in range(3)]
    helper, shown = helpers(service)
    helper.uploads(limit=2)
    assert "id-0" in shown[0] and "id-1" in shown[0] and "id-2" not in shown[0]
    assert shown[0].endswith("the oldest 2 uploads; more are in progress (uploads(limit=N) shows more)\n")


def test_uploads_with_none_in_progress():
    helper, shown = helpers(target())
    helper.uploads()
    assert shown == ["no multipart uploads in progress\n"]


def test_run_job_runs_the_expiry_job_and_says_what_it_did():
    service = target()
    helper, shown = helpers(service)
    helper.run_job("multipart_expiry")
    assert shown[0] == "running multipart_expiry...\n"
    assert re.fullmatch(r"multipart_expiry: done in \d+\.\d\d s; aborted 0 multipart uploads older than 1d 0h\n",
                        shown[1])
    assert service.jobs["multipart_expiry"].runs == 1


def test_run_job_runs_the_health_checks_and_shows_each_store():
    service = target()
    service.health.record_failure("remote-b", "timeout")
    helper, shown = helpers(service)
    helper.run_job("health_checks")
    assert shown[1].endswith("stores: local-a up, remote-b DOWN (timeout)\n")
    assert service.jobs["health_checks"].runs == 1


def test_run_job_with_an_unknown_name_lists_the_jobs():
    helper, shown = helpers(target())
    helper.run_job("vacuum")
    assert shown == ["no job named 'vacuum'; jobs: health_checks, multipart_expiry\n"]


# -- the whole session over a StringTransport ------------------------------------------------------


class Session:
    """The telnet server side of one connection, fed by hand (a client that does not
    answer option negotiation at all, like nc)."""

    def __init__(self, service: SimpleNamespace, passwords: Path) -> None:
        factory = manhole_factory(service, str(passwords), run_now)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> str:
        """Feed ``data``; what the server wrote in answer (escape sequences dropped)."""
        self.transport.clear()
        self.protocol.dataReceived(data)
        written = self.transport.value()
        written = re.sub(rb"\xff[\xfb-\xfe].", b"", written)  # WILL/WONT/DO/DONT
        written = re.sub(rb"\xff\xfa.*?\xff\xf0", b"", written, flags=re.S)  # subnegotiations
        return _ANSI.sub(b"", written).replace(b"\r", b"").decode()


def test_a_client_that_never_negotiates_still_logs_in(passwords):
    session = Session(target(), passwords)
    assert session.transport.value().endswith(b"Username: ")
    assert session.send(b"admin\r\n").endswith("Password: ")
    answer = session.send(PASSWORD.encode() + b"\r\n")
    assert "s3orchestrator manhole" in answer
    assert "run a background job now: health_checks, multipart_expiry" in answer
    assert answer.endswith(">>> ")


def test_output_of_a_helper_ready_at_once_is_followed_by_one_prompt(passwords):
    session = Session(target(), passwords)
    session.send(b"admin\r\n")
    session.send(PASSWORD.encode() + b"\r\n")
    answer = session.send(b"status()\r\n")
    output = answer.split("status()\n", 1)[1]
    assert output == """\
status: ok, 2 stores, 0 multipart uploads in progress
STORE     HEALTH  USED          RESERVED  QUOTA      COPIES  LIVE     CLEANUP  UPLOADS
local-a   up      1.5 KiB (0%)  0 B       1.0 GiB    2       1.5 KiB  0        0
remote-b  up      0 B           0 B       unlimited  0       0 B      0        0
>>> """


def test_output_ready_later_replaces_the_prompt_and_draws_a_new_one(passwords):
    service = target()
    pending: Deferred[list[StoreUsage]] = Deferred()
    service.metadata.store_usage = lambda: pending
    session = Session(service, passwords)
    session.send(b"admin\r\n")
    session.send(PASSWORD.encode() + b"\r\n")
    assert session.send(b"status()\r\n").endswith("status()\n>>> ")
    session.transport.clear()
    pending.callback(service.metadata.usage)
    raw = session.transport.value()
    assert raw.startswith(b"\x1b[2K")  # the waiting prompt is erased first
    assert _ANSI.sub(b"", raw).replace(b"\r", b"").decode().endswith(
        "remote-b  up      0 B           0 B       unlimited  0       0 B      0        0\n>>> ")


def test_three_failed_logins_close_the_connection(passwords):
    session = Session(target(), passwords)
    for _ in range(3):
        session.send(b"admin\r\n")
        answer = session.send(b"wrong\r\n")
    assert "Authentication failed; closing." in answer
    assert session.transport.disconnecting


def test_the_realm_gives_a_named_user_a_telnet_session() -> None:
    interface, protocol, logout = ManholeRealm(target()).requestAvatar(b"admin", None, ITelnetProtocol)
    assert interface is ITelnetProtocol and protocol is not None


def test_the_realm_has_no_anonymous_avatar() -> None:
    with pytest.raises(NotImplementedError, match="anonymous"):
        ManholeRealm(target()).requestAvatar(ANONYMOUS, None, ITelnetProtocol)


def test_cleanup_queue_lists_entries_with_their_tries_and_next_try():
    service = target(at=10_000)
    service.metadata.cleanups = [
        CleanupEntry(1, "remote-b", "bkt/gone", 2048, 9_000_000, 3, 10_040_000, "connection refused"),
    ]
    helper, shown = helpers(service)
    helper.cleanup_queue()
    assert shown == ["""\
STORE     LOCATION  SIZE     AGE      TRIES  NEXT TRY  LAST ERROR
remote-b  bkt/gone  2.0 KiB  16m 40s  3      in 40s    connection refused
1 location (oldest first)
"""]


def test_instances_lists_the_registered_instances_and_their_leases():
    service = target(at=1000)
    service.metadata.instances = [Instance("node-a", "h1", 42, 400_000, 1_020_000),
                                  Instance("node-b", "h2", 7, 100_000, 940_000)]
    helper, shown = helpers(service)
    helper.instances()
    assert shown == ["""\
INSTANCE  HOST  PID  UP      LEASE
node-a    h1    42   10m 0s  ends in 20s
node-b    h2    7    15m 0s  expired 1m 0s ago (dead)
"""]


def test_intents_lists_the_write_intents():
    service = target(at=100)
    service.metadata.intents = [Intent(7, "bkt", "k", "local-a", "bkt/k", 10, "host:42", 40_000)]
    helper, shown = helpers(service)
    helper.intents()
    assert shown == ["""\
BUCKET/KEY  STORE    LOCATION  SIZE  OWNER    AGE
bkt/k       local-a  bkt/k     10 B  host:42  1m 0s
"""]


def test_replication_queue_lists_objects_missing_copies_oldest_first():
    service = target(at=100)
    service.metadata.queued = [QueuedReplication("bkt", "a", 40_000), QueuedReplication("bkt", "b", 90_000)]
    helper, shown = helpers(service)
    helper.replication_queue(limit=1)
    assert shown == ["""\
BUCKET/KEY  WAITING
bkt/a       1m 0s
the oldest 1 objects; more are queued (replication_queue(limit=N) shows more)
"""]
    helper.replication_queue()
    assert shown[1].endswith("2 objects missing copies (oldest first)\n")


def test_status_shows_the_cleanup_queue_when_there_is_one():
    service = target()
    service.metadata.cleanups = [CleanupEntry(1, "remote-b", "bkt/gone", 2048, 0, 0, 0, None)]
    service.metadata.usage[1] = StoreUsage("remote-b", 0, 2048, 0, 0)  # queued bytes count as used
    helper, shown = helpers(service)
    helper.status()
    lines = shown[0].splitlines()
    assert lines[1] == "replication queue: 0 objects; cleanup queue: 1 location (2.0 KiB); 0 write intents"
    # remote-b's row: its used bytes are the queued ones, none live.
    assert lines[-1].split() == ["remote-b", "up", "2.0", "KiB", "0", "B", "unlimited", "0", "0", "B", "1",
                                 "(2.0", "KiB)", "0"]


def test_status_shows_the_replication_lag_and_lost_objects():
    service = target(at=1000)
    service.metadata.queued = [QueuedReplication("bkt", "a", 700_000), QueuedReplication("bkt", "b", 940_000)]
    service.metadata.lost = [LostObject("bkt", "gone", 100_000)]
    helper, shown = helpers(service)
    helper.status()
    lines = shown[0].splitlines()
    assert lines[1] == ("replication queue: 2 objects, oldest missing copy 5m 0s ago;"
                        " cleanup queue: 0 locations (0 B); 0 write intents")
    assert lines[2] == ("LOST: 1 object with no live copy left, unreadable until overwritten or deleted"
                        " (manhole: lost_objects())")


def test_lost_objects_lists_them_oldest_first():
    service = target(at=1000)
    service.metadata.lost = [LostObject("bkt", "gone\x1b", 100_000), LostObject("bkt", "later", 400_000)]
    helper, shown = helpers(service)
    helper.lost_objects(limit=1)
    helper.lost_objects()
    assert shown[0] == """\
BUCKET/KEY    LOST FOR
bkt/gone\\x1b  15m 0s
the oldest 1 lost objects; there are more (lost_objects(limit=N) shows more)
"""
    assert shown[1].endswith("2 objects with no live copy left (oldest first): overwrite or delete them\n")
    helper.lost_objects(limit=0)
    assert shown[2] == "lost_objects(limit): limit must be a positive integer\n"
