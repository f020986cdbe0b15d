"""JSON log lines: one object per event, for log shippers (``logging.format = "json"``).

Each line holds ``time`` (ISO 8601, UTC), ``level``, ``namespace``, ``message``
(the event formatted as the text log shows it) and the event's own fields that
are plain values (the request log line's request_id, access_key_id, operation,
bucket, key, status, bytes_out, duration_ms, store...); a failure adds its
traceback as ``failure``. Fields of Twisted's own (``log_*``) and values that
are not plain (objects) are left out.
"""

from __future__ import annotations

import json
import time
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

_PLAIN = (str, int, float, bool, type(None))


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
        if not name.startswith("log_") and name not in record and isinstance(value, _PLAIN):
            record[name] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False, default=str)


@implementer(ILogObserver)
class JsonLineObserver:
    """Writes each event to ``stream`` as a JSON line (flushed: journald reads it live)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        self._stream.write(json_event(event) + "\n")
        self._stream.flush()
