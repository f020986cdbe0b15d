"""The daemon's log lines: twistd's text lines (``logging.format = "text"``), or
one JSON object per event for log shippers (``logging.format = "json"``).

Text lines are exactly those of twistd's own observer
(``2026-11-24T06:30:47+0000 [namespace#level] message``), with the time prefix
formatted once per second rather than once per event.

Each JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``namespace``, ``message``
(the event formatted as the text log shows it) and the event's own fields that
are plain values, or lists and string-keyed dicts of them (the request log line's
request_id, access_key_id, operation, bucket, key, status, bytes_out, duration_ms,
store...; the start-up banner's stores and endpoints); a failure adds its
traceback as ``failure``. Fields of Twisted's own (``log_*``) and values that
are not plain (objects) are left out.
"""

from __future__ import annotations

import atexit
import json
import math
import signal
import sys
import time
from typing import Any, Mapping, Protocol

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.logfile import LogFile
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

_PLAIN = (str, int, float, bool, type(None))
# Lines the reactor thread logs are written together at the end of its turn, or as soon as this many wait.
MAX_PENDING_LINES = 1000


class LineStream(Protocol):
    """Where log lines go: standard output, or twistd's rotating ``LogFile``."""

    def write(self, text: str) -> Any: ...

    def flush(self) -> Any: ...


class FlushedLines:
    """Writes each line to ``stream`` and flushes it at once."""

    def __init__(self, stream: LineStream) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


class BatchedLines:
    """Writes the lines the reactor thread logs in one turn of the reactor to ``stream``
    together, with one flush, at the start of the next turn (a write and a flush per
    line cost a system call per request, and the journal a wake-up); any other time
    (reactor not running), and from other threads, each line at once. What is pending
    is written when the reactor shuts down, or at exit if it never did: journald and
    log files get every line, a turn late at most. (Not on a timer: tests and
    operators read a line once what it reports is visible, e.g. through /health.)"""

    def __init__(self, stream: LineStream, reactor: Any) -> None:
        self._stream = stream
        self._reactor = reactor
        self._lines: list[str] = []
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)
        atexit.register(self.flush)

    def write(self, text: str) -> None:
        if self._reactor.running and isInIOThread():
            if not self._lines:
                self._reactor.callLater(0, self.flush)
            self._lines.append(text)
            if len(self._lines) >= MAX_PENDING_LINES:
                self.flush()
            return
        if self._lines and isInIOThread():
            self.flush()  # what this thread buffered comes first
        self._stream.write(text)
        self._stream.flush()

    def flush(self) -> None:
        """Write and flush the pending lines (in the reactor thread)."""
        if self._lines:
            lines, self._lines = self._lines, []
            self._stream.write("".join(lines))
            self._stream.flush()


def _lines_to(stream: LineStream, reactor: Any) -> FlushedLines | BatchedLines:
    """Batched under a real reactor, else each line flushed (no reactor, or a test's Clock)."""
    return BatchedLines(stream, reactor) if IReactorCore.providedBy(reactor) else FlushedLines(stream)


class LoggingService(MultiService):
    """The service twistd runs (the daemon, or the supervisor of its workers), which
    gives twistd's application the observer its log goes through."""

    #: Set by ``log_to`` (the twistd plugin): twistd logs through it instead of its own.
    log_observer: ILogObserver | None = None
    #: The level filter of ``log_observer`` (a reload changes its level).
    log_levels: LogLevelFilterPredicate | None = None

    def log_to(self, observer: ILogObserver, log_level: str) -> None:
        """Log the events at ``log_level`` or above to ``observer`` (from when the
        service joins twistd's application)."""
        self.log_levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(log_level))
        self.log_observer = FilteringLogObserver(observer, [self.log_levels])

    def setServiceParent(self, parent: Any) -> None:
        # twistd wraps the service in an application and starts logging after the
        # service joined it and before it starts, with the application's ILogObserver
        # if it has one: that is where our format and level filter get in (twistd's
        # own observer writes every event, debug included).
        set_component = getattr(parent, "setComponent", None)
        if self.log_observer is not None and set_component is not None:
            set_component(ILogObserver, self.log_observer)
        super().setServiceParent(parent)


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is JSON as it is: a plain value, or a list or str-keyed dict of them."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


def json_event(event: dict[str, Any]) -> str:
    """One event as a JSON object on one line."""
    timestamp = event.get("log_time", time.time())
    seconds = int(timestamp)
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((timestamp - seconds) * 1000):03d}Z",
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for name, value in event.items():
        if not name.startswith("log_") and name not in record and _is_plain(value):
            record[name] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False, default=str)


@implementer(ILogObserver)
class JsonLineObserver:
    """Writes each event to ``stream`` as a JSON line (flushed: journald reads it live;
    in batches with ``reactor``, see BatchedLines)."""

    def __init__(self, stream: LineStream, reactor: Any = None) -> None:
        self._lines = _lines_to(stream, reactor)

    def __call__(self, event: dict[str, Any]) -> None:
        self._lines.write(json_event(event) + "\n")


def _shown_second(when: float) -> int:
    """The second a timestamp shows as: datetime rounds it to the microsecond (half to
    even), so a time less than half a microsecond before a second shows that second."""
    second = math.floor(when)
    if round((when - second) * 1e6) == 1_000_000:
        second += 1
    return second


@implementer(ILogObserver)
class TextLineObserver:
    """Writes each event to ``stream`` as twistd's text observer does (flushed: journald
    reads it live; in batches with ``reactor``, see BatchedLines), formatting
    the time prefix at most once per second."""

    def __init__(self, stream: LineStream, reactor: Any = None) -> None:
        self._lines = _lines_to(stream, reactor)
        # (second, its text) in one tuple: events also come from other threads.
        self._time: tuple[int | None, str] = (None, "")

    def _format_time(self, when: float | None) -> str:
        # Twisted's formatTime costs a datetime, a time zone and a strftime per call.
        if when is None:
            return formatTime(None)
        second = _shown_second(when)
        cached_second, text = self._time
        if second != cached_second:
            text = formatTime(second)
            self._time = (second, text)
        return text

    def _plain_text(self, event: dict[str, Any]) -> str | None:
        """The line of a plain event (a text format calling nothing, no failure, no legacy
        system or flattened fields) formatted by ``str.format_map``, as Twisted would:
        Twisted's ``formatWithCall`` wraps every field in a proxy, several times the cost
        of the request log line itself. None for any other event, or one that does not format."""
        log_format = event.get("log_format")
        if (not isinstance(log_format, str) or "()" in log_format
                or "log_failure" in event or "log_system" in event or "log_flattened" in event):
            return None
        try:
            message = log_format.format_map(event)
        except Exception:
            return None  # Twisted's path describes the unformattable event
        level = event.get("log_level")
        system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
        return f"{self._format_time(event.get('log_time'))} [{system}] {message}".replace("\n", "\n\t") + "\n"

    def __call__(self, event: dict[str, Any]) -> None:
        text = self._plain_text(event)
        if text is None:
            text = formatEventAsClassicLogText(event, formatTime=self._format_time)
        if text:
            self._lines.write(text)


def line_observer(stream: LineStream, log_format: str, reactor: Any = None) -> ILogObserver:
    """The observer writing ``log_format`` ("text" or "json") lines to ``stream`` (flushed
    in batches under ``reactor`` if given, else after each line)."""
    return JsonLineObserver(stream, reactor) if log_format == "json" else TextLineObserver(stream, reactor)


def log_destination(twistd_options: Mapping[str, Any], log_format: str, reactor: Any = None) -> ILogObserver:
    """``log_format`` lines where twistd's own options send its log, as twistd decides:
    syslog with ``--syslog`` (its own line format), the ``--logfile`` file (``-`` is
    standard output), ``twistd.log`` for a daemon without one, else standard output.
    A log file rotates at 1 MB and on SIGUSR1, as twistd's does. With ``reactor``, the
    lines of one reactor turn are written together (see BatchedLines)."""
    if twistd_options.get("syslog"):
        from twisted.python.syslog import SyslogObserver

        # Twisted annotates the legacy observer (any callable taking an event dict) as an ILogObserver.
        syslog = SyslogObserver(twistd_options.get("prefix") or "twisted")
        return LegacyLogObserverWrapper(syslog.emit)  # type: ignore[arg-type]
    name = twistd_options.get("logfile") or ""
    daemon = not twistd_options.get("nodaemon")
    if name == "-" and daemon:
        sys.exit("Daemons cannot log to stdout, exiting!")
    if name == "-" or (not name and not daemon):
        return line_observer(sys.stdout, log_format, reactor)
    log_file = LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):  # None or SIG_DFL: nobody else wants it

        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            IReactorFromThreads(reactor).callFromThread(log_file.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return line_observer(log_file, log_format, reactor)
