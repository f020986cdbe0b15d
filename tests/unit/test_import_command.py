"""``s3orchestrator import`` against a stand-in for the daemon's admin API."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from s3orchestrator.cli import main

TOKEN = "import-command-token"


def row(state: str, imported: int, **changes: Any) -> dict[str, Any]:
    return {"store": "sw", "bucket": "bkt", "prefix": "", "state": state, "owner": "host:1", "after_key": "k/9",
            "imported_objects": imported, "imported_bytes": 10 * imported, "present": 0, "kept": 1, "skipped": 2,
            "last_error": None, "running_here": state == "running", **changes}


class ImportsAPI(BaseHTTPRequestHandler):
    """POST /imports answers ``server.started``; each GET /imports the next of ``server.states``."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.posted.append(json.loads(self.rfile.read(length)))  # type: ignore[attr-defined]
        self._send(*self.server.started)  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        states = self.server.states  # type: ignore[attr-defined]
        state = states.pop(0) if len(states) > 1 else states[0]
        self._send(200, {"instance": self.server.instance, "imports": [state],  # type: ignore[attr-defined]
                         "stores": [{"name": "sw", "quota_bytes": 100, "used_bytes": 150}]})

    def _send(self, status: int, document: Any) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            status, document = 401, {"error": "unauthorized"}
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImportsAPI)
    server.posted = []  # type: ignore[attr-defined]
    server.instance = "host:1"  # type: ignore[attr-defined]
    server.started = (202, {"import": row("running", 0, after_key="")})  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def run(api: ThreadingHTTPServer, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["import", "--url", f"http://127.0.0.1:{api.server_port}", "--token", TOKEN, "--store", "sw",
                   "--bucket", "bkt", "--interval", "0.01", *extra], stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


def test_it_starts_the_import_and_prints_its_progress_until_done(api: ThreadingHTTPServer) -> None:
    api.states = [row("running", 3, prefix="k/"), row("running", 3, prefix="k/"),  # type: ignore[attr-defined]
                  row("done", 5, prefix="k/")]
    status, out, err = run(api, "--prefix", "k/")
    assert status == 0, err
    assert api.posted == [{"store": "sw", "bucket": "bkt", "prefix": "k/"}]  # type: ignore[attr-defined]
    assert out.splitlines() == [
        "import of sw/k/ into bucket bkt: started",
        "running: 3 objects (30 bytes) imported, 0 already imported, 1 kept (the bucket had the key), 2 skipped;"
        " at k/9",
        "done: 5 objects (50 bytes) imported, 0 already imported, 1 kept (the bucket had the key), 2 skipped; at k/9",
        "store sw: 150 bytes used, OVER its quota of 100 bytes by 50: new objects go to other stores",
    ]


def test_a_failed_import_exits_1_saying_how_to_resume_it(api: ThreadingHTTPServer) -> None:
    api.states = [row("failed", 1, last_error="store sw: HEAD answered 500")]  # type: ignore[attr-defined]
    status, _, err = run(api)
    assert status == 1
    assert "failed: store sw: HEAD answered 500 (run the command again to resume it)" in err


def test_an_import_the_daemon_no_longer_runs_exits_1(api: ThreadingHTTPServer) -> None:
    api.instance = "host:2"  # type: ignore[attr-defined]  # the daemon restarted
    api.states = [row("running", 1, running_here=False)]  # type: ignore[attr-defined]
    status, _, err = run(api)
    assert status == 1 and "no longer runs the import" in err


def test_an_import_another_instance_runs_is_refused(api: ThreadingHTTPServer) -> None:
    api.started = (409, {"error": "instance host:3 is running this import"})  # type: ignore[attr-defined]
    status, _, err = run(api)
    assert status == 1 and "the import cannot start: instance host:3 is running this import" in err
