"""A worker process's own parts: where it logs, how its events are marked."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.logger import LogLevel, formatEventAsClassicLogText

from s3orchestrator.ops.logs import json_event
from s3orchestrator.workers.worker import WorkerLogObserver, worker_log_options


@pytest.mark.parametrize(("options", "expected"), [
    ({"nodaemon": True}, []),
    ({"nodaemon": True, "logfile": "-"}, []),
    ({"nodaemon": False}, ["--logfile", "twistd.log.worker3"]),
    ({"logfile": "/var/log/s3o.log"}, ["--logfile", "/var/log/s3o.log.worker3"]),
    ({"syslog": True, "prefix": "s3o"}, ["--syslog", "--prefix", "s3o"]),
    ({"syslog": True}, ["--syslog", "--prefix", "twisted"]),
])
def test_a_worker_logs_where_the_supervisor_does(options: dict[str, Any], expected: list[str]) -> None:
    assert worker_log_options(options, 3) == expected


def event() -> dict[str, Any]:
    return {"log_format": "Stored {key}", "key": "a.txt", "log_level": LogLevel.info, "log_namespace": "s3o.web",
            "log_time": 0.0}


def test_a_text_line_names_the_worker_before_the_namespace() -> None:
    seen: list[dict[str, Any]] = []
    WorkerLogObserver(seen.append, 2)(event())
    text = formatEventAsClassicLogText(seen[0], formatTime=lambda when: "T")
    assert text == "T [worker2 s3o.web#info] Stored a.txt\n"


def test_a_json_line_has_the_worker_field() -> None:
    seen: list[dict[str, Any]] = []
    WorkerLogObserver(seen.append, 2)(event())
    assert '"worker": 2' in json_event(seen[0])
