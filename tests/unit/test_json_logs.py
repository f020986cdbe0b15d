"""JSON log lines."""

from __future__ import annotations

import io
import json

from twisted.logger import LogLevel
from twisted.python.failure import Failure

from s3orchestrator.ops.logs import JsonLineObserver, json_event


def test_event_becomes_one_json_line_with_its_plain_fields() -> None:
    event = {
        "log_format": "{request_id} {operation} {status}",
        "log_level": LogLevel.info,
        "log_namespace": "s3orchestrator.web.handler.S3Handler",
        "log_time": 1795000000.25,
        "request_id": "0123456789ABCDEF",
        "operation": "PutObject",
        "status": 200,
        "duration_ms": 1.5,
        "store": None,
        "log_logger": object(),
        "an_object": object(),
    }
    line = json_event(event)
    assert "\n" not in line
    record = json.loads(line)
    assert record == {
        "time": "2026-11-18T11:06:40.250Z",
        "level": "info",
        "namespace": "s3orchestrator.web.handler.S3Handler",
        "message": "0123456789ABCDEF PutObject 200",
        "request_id": "0123456789ABCDEF",
        "operation": "PutObject",
        "status": 200,
        "duration_ms": 1.5,
        "store": None,
    }


def test_failure_carries_its_traceback() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        failure = Failure()
    record = json.loads(json_event({"log_format": "oops", "log_level": LogLevel.error, "log_failure": failure}))
    assert record["level"] == "error"
    assert "ValueError: broken" in record["failure"]


def test_observer_writes_lines() -> None:
    stream = io.StringIO()
    observer = JsonLineObserver(stream)
    observer({"log_format": "one", "log_time": 0.0})
    observer({"log_format": "two {x}", "x": "ü", "log_time": 0.0})
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["one", "two ü"]


def test_lists_and_dicts_of_plain_values_are_fields_and_others_are_left_out() -> None:
    record = json.loads(json_event({
        "log_format": "banner", "log_time": 0.0,
        "stores": [{"name": "a", "quota_bytes": 0, "path": None}],
        "urls": ["http://127.0.0.1:9000"],
        "objects_inside": [object()],
        "keyed_by_number": {1: "x"},
    }))
    assert record["stores"] == [{"name": "a", "quota_bytes": 0, "path": None}]
    assert record["urls"] == ["http://127.0.0.1:9000"]
    assert "objects_inside" not in record and "keyed_by_number" not in record
