"""Text log lines, and the observer the daemon installs: its format and level filter,
from the configuration, the command line and a reload."""

from __future__ import annotations

import calendar
import io
import json
import time
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, Logger, LogLevel, textFileLogObserver
from twisted.python import usage
from twisted.python.failure import Failure

from s3orchestrator.ops import logs
from s3orchestrator.ops.logs import TextLineObserver
from s3orchestrator.service import OrchestratorService
from s3orchestrator.tap import Options, makeService

# 2026-03-29T01:00:00Z: central Europe goes from +0100 to +0200.
DST_START = calendar.timegm((2026, 3, 29, 1, 0, 0))
CENTRAL_EUROPE = "CET-1CEST,M3.5.0,M10.5.0/3"


@pytest.fixture
def central_europe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is central European time (a DST change shows in the offset)."""
    monkeypatch.setenv("TZ", CENTRAL_EUROPE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def event(when: float | None, text: str = "request {n}", **fields) -> dict:
    logged = {"log_format": text, "log_namespace": "s3orchestrator.web.handler", "log_level": LogLevel.info,
              "n": 1, **fields}
    if when is not None:
        logged["log_time"] = when
    return logged


def failure_event(when: float) -> dict:
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        failure = Failure()
    return event(when, "Request failed", log_level=LogLevel.critical, log_failure=failure)


def written(observer_factory, events: list[dict]) -> str:
    stream = io.StringIO()
    observer = observer_factory(stream)
    for logged in events:
        observer(logged)
    return stream.getvalue()


# -- text lines ---------------------------------------------------------------------------------


def test_text_lines_are_twistds_own_byte_for_byte(central_europe) -> None:
    events = [
        event(DST_START - 1.75),
        event(DST_START - 1.25, "key {key!r} of {n} bytes", key="a\nb", n=5),
        failure_event(DST_START - 1.1),
        event(DST_START - 0.0000002),  # rounds to the next second, as datetime does
        event(DST_START + 0.5),  # another second, another UTC offset
        event(DST_START + 0.6, log_system="custom-system"),
        event(None),
        {"log_time": DST_START + 1, "log_namespace": "no.format", "log_level": LogLevel.info},
        event(DST_START - 3600 * 24),  # back to an earlier second
        # Formats the plain path leaves to Twisted's, and some it formats itself.
        event(DST_START, "called {f()}", f=lambda: "yes"),
        event(DST_START, "missing {nothing}"),
        event(DST_START, "broken {"),
        event(DST_START, "attribute {lvl.name} spec {n:>4} {n!r} {lines}", lvl=LogLevel.warn, lines="x\ny"),
        {"log_time": DST_START, "log_format": "no namespace", "log_level": None},
        {"log_time": DST_START, "log_format": b"bytes {n}", "n": 2, "log_level": LogLevel.info},
    ]

    ours = written(TextLineObserver, events)

    assert ours == written(textFileLogObserver, events)
    assert ours.startswith("2026-03-29T01:59:58+0100 [s3orchestrator.web.handler#info] request 1\n")
    assert "\n\tTraceback (most recent call last):\n" in ours
    prefixes = [line.split(" ")[0] for line in ours.splitlines() if not line.startswith("\t")]
    assert prefixes == ["2026-03-29T01:59:58+0100"] * 3 + ["2026-03-29T03:00:00+0200"] * 3 + [
        "-", "2026-03-28T02:00:00+0100"] + ["2026-03-29T03:00:00+0200"] * 6


def test_plain_events_skip_twisteds_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request log line (a plain format of plain fields) is formatted without Twisted's proxies."""
    expected = written(textFileLogObserver, [event(1795000000.0, "{a} {b!r}", a="x", b=2)])

    def refuse(*args, **kwargs):
        raise AssertionError("Twisted's formatter used for a plain event")

    monkeypatch.setattr(logs, "formatEventAsClassicLogText", refuse)
    assert written(TextLineObserver, [event(1795000000.0, "{a} {b!r}", a="x", b=2)]) == expected


def test_the_time_prefix_is_formatted_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    formatted: list[float | None] = []

    def counting_format_time(when: float | None) -> str:
        formatted.append(when)
        return f"T{when}"

    monkeypatch.setattr(logs, "formatTime", counting_format_time)
    base = 1795000000
    lines = written(TextLineObserver, [event(base + 0.1), event(base + 0.5), event(base + 0.9), event(base + 1.2),
                                       event(base + 1.3)]).splitlines()

    assert formatted == [base, base + 1]
    assert [line.split(" ")[0] for line in lines] == [f"T{base}"] * 3 + [f"T{base + 1}"] * 2


def test_every_text_line_is_flushed() -> None:
    class Recording(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.flushed: list[str] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue())

    stream = Recording()
    observer = TextLineObserver(stream)
    observer(event(1795000000.0))
    observer(event(1795000000.5))
    assert [text.count("\n") for text in stream.flushed] == [1, 2]


# -- the daemon's observer ----------------------------------------------------------------------


def write_config(path: Path, logging: str = "") -> Path:
    path.write_text(f"""
[server]
listen = "tcp:0:interface=127.0.0.1"
[metadata]
sqlite = "{path.parent / "metadata.sqlite"}"
[[buckets]]
name = "app1-files"
  [[buckets.credentials]]
  access_key_id = "AKID_APP1_WRITER"
  secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiTESTSECRET"
[[stores]]
name = "local-a"
type = "directory"
path = "{path.parent / "store"}"
quota_bytes = 0
{logging}
""")
    return path


def daemon_service(config: Path, *arguments: str, clock=None) -> OrchestratorService:
    """The service twistd runs for ``twistd s3orchestrator --config CONFIG ARGUMENTS``."""
    options = Options()
    options.parseOptions(["--config", str(config), *arguments])
    return makeService(options, reactor=clock or Clock())


def installed_observer(service: OrchestratorService) -> ILogObserver:
    """The observer twistd logs through once the service joined its application."""
    application = Application("s3orchestrator")
    service.setServiceParent(application)
    return application.getComponent(ILogObserver)


def log_each_level(observer: ILogObserver) -> None:
    log = Logger(namespace="s3orchestrator.stores.s3_exchange", observer=observer)
    log.debug("a debug line")
    log.info("an info line")
    log.warn("a warn line")
    log.error("an error line")


def logged_levels(output: str) -> list[str]:
    return [line.split("#", 1)[1].split("]", 1)[0] for line in output.splitlines()]


def test_the_daemon_logs_text_from_info_up_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_each_level(installed_observer(daemon_service(write_config(tmp_path / "config.toml"))))
    output = capsys.readouterr().out
    assert logged_levels(output) == ["info", "warn", "error"]
    assert "[s3orchestrator.stores.s3_exchange#info] an info line\n" in output


def test_log_level_debug_logs_debug_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "config.toml", '[logging]\nlevel = "debug"')
    log_each_level(installed_observer(daemon_service(config)))
    assert logged_levels(capsys.readouterr().out) == ["debug", "info", "warn", "error"]


def test_the_command_line_overrides_the_configured_level_and_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.toml", '[logging]\nlevel = "debug"\nformat = "text"')
    log_each_level(installed_observer(daemon_service(config, "--log-level", "warn", "--log-format", "json")))
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [record["level"] for record in records] == ["warn", "error"]


def test_an_unknown_log_level_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="--log-level must be one of debug, info, warn, error"):
        daemon_service(write_config(tmp_path / "config.toml"), "--log-level", "verbose")


async def lines_written() -> None:
    await deferLater(reactor, 0, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_reload_changes_the_level_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "config.toml")
    service = daemon_service(config, clock=reactor)
    observer = installed_observer(service)
    await service.metadata.start()
    try:
        write_config(config, '[logging]\nlevel = "debug"')
        assert await service.reload()
        log_each_level(observer)
        write_config(config, '[logging]\nlevel = "error"')
        assert await service.reload()
        log_each_level(observer)
    finally:
        service.metadata.database.close()
    await lines_written()  # the lines of the reactor thread are written in batches
    assert logged_levels(capsys.readouterr().out) == ["debug", "info", "warn", "error", "error"]


@pytest_twisted.ensureDeferred
async def test_a_reload_keeps_the_command_line_level_while_the_file_keeps_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.toml")
    service = daemon_service(config, "--log-level", "debug", clock=reactor)
    observer = installed_observer(service)
    await service.metadata.start()
    try:
        config.write_text(config.read_text().replace("quota_bytes = 0", "quota_bytes = 1024"))
        assert await service.reload()
        log_each_level(observer)
    finally:
        service.metadata.database.close()
    await lines_written()
    assert logged_levels(capsys.readouterr().out) == ["debug", "info", "warn", "error"]


# -- when the lines go: in batches ------------------------------------------------------------


class RunningClock(Clock):
    """A Clock that is a running reactor with shutdown triggers (for BatchedLines)."""

    running = True

    def __init__(self) -> None:
        super().__init__()
        self.after_shutdown: list = []

    def addSystemEventTrigger(self, phase: str, event: str, func, *args) -> None:  # noqa: N802
        assert (phase, event) == ("after", "shutdown")
        self.after_shutdown.append(func)


class CountingStream(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.fixture
def in_io_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "isInIOThread", lambda: True)


def test_the_lines_of_a_reactor_turn_are_written_together_after_it(in_io_thread: None) -> None:
    stream, clock = CountingStream(), RunningClock()
    lines = logs.BatchedLines(stream, clock)
    lines.write("one\n")
    lines.write("two\n")
    assert stream.getvalue() == "" and stream.flushes == 0
    clock.advance(0)  # the next turn
    assert stream.getvalue() == "one\ntwo\n" and stream.flushes == 1
    lines.write("three\n")
    clock.advance(0)
    assert stream.getvalue() == "one\ntwo\nthree\n" and stream.flushes == 2


def test_many_pending_lines_are_written_at_once(in_io_thread: None) -> None:
    stream = CountingStream()
    lines = logs.BatchedLines(stream, RunningClock())
    for number in range(logs.MAX_PENDING_LINES):
        lines.write(f"{number}\n")
    assert stream.getvalue().count("\n") == logs.MAX_PENDING_LINES and stream.flushes == 1


def test_pending_lines_are_written_at_shutdown_and_later_ones_at_once(in_io_thread: None) -> None:
    stream, clock = CountingStream(), RunningClock()
    lines = logs.BatchedLines(stream, clock)
    lines.write("last of the turn\n")
    for trigger in clock.after_shutdown:
        trigger()
    assert stream.getvalue() == "last of the turn\n"
    clock.running = False
    lines.write("after the reactor\n")
    assert stream.getvalue() == "last of the turn\nafter the reactor\n" and stream.flushes == 2


def test_lines_from_other_threads_are_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "isInIOThread", lambda: False)
    stream = CountingStream()
    logs.BatchedLines(stream, RunningClock()).write("from a thread\n")
    assert stream.getvalue() == "from a thread\n" and stream.flushes == 1


def test_a_real_reactor_gets_batched_lines_and_a_clock_flushed_lines() -> None:
    assert isinstance(logs.TextLineObserver(io.StringIO(), reactor)._lines, logs.BatchedLines)
    assert isinstance(logs.TextLineObserver(io.StringIO(), Clock())._lines, logs.FlushedLines)


# -- where the lines go: twistd's own -n / --logfile / --syslog -------------------------------


def info_event(text: str) -> dict:
    return {"log_format": text, "log_level": LogLevel.info, "log_namespace": "test", "log_time": time.time()}


@pytest.fixture
def sigusr1() -> Iterator[None]:
    import signal

    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGUSR1, previous)


def test_in_the_foreground_without_a_log_file_lines_go_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    logs.log_destination({"nodaemon": True, "logfile": None}, "text")(info_event("hello"))
    assert "[test#info] hello" in capsys.readouterr().out


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_log_file_gets_the_lines_in_the_chosen_format(tmp_path: Path, log_format: str, sigusr1: None) -> None:
    import signal

    path = tmp_path / "daemon.log"
    logs.log_destination({"nodaemon": True, "logfile": str(path)}, log_format)(info_event("into the file"))
    text = path.read_text()
    if log_format == "json":
        assert json.loads(text)["message"] == "into the file"
    else:
        assert "[test#info] into the file" in text
    assert signal.getsignal(signal.SIGUSR1) not in (None, signal.SIG_DFL)  # rotation, as twistd does


def test_a_daemon_without_a_log_file_writes_twistd_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sigusr1: None
) -> None:
    monkeypatch.chdir(tmp_path)
    logs.log_destination({"nodaemon": False, "logfile": None}, "text")(info_event("daemonized"))
    assert "daemonized" in (tmp_path / "twistd.log").read_text()


def test_a_daemon_cannot_log_to_stdout() -> None:
    with pytest.raises(SystemExit):
        logs.log_destination({"nodaemon": False, "logfile": "-"}, "text")


def test_syslog_gets_twistds_syslog_observer() -> None:
    from twisted.logger import LegacyLogObserverWrapper

    assert isinstance(logs.log_destination({"syslog": True, "prefix": "s3o"}, "text"), LegacyLogObserverWrapper)


@pytest_twisted.ensureDeferred
async def test_under_twistd_the_logfile_option_is_honoured(tmp_path: Path, sigusr1: None) -> None:
    from twisted.scripts.twistd import ServerOptions

    config = write_config(tmp_path / "config.toml")
    path = tmp_path / "daemon.log"
    server = ServerOptions()
    server.parseOptions(["--nodaemon", "--logfile", str(path), "s3orchestrator", "--config", str(config)])
    plugin_options = server.subOptions
    service = makeService(plugin_options, reactor)
    assert service.log_observer is not None
    service.log_observer(info_event("through twistd's options"))
    await lines_written()
    assert "through twistd's options" in path.read_text()
