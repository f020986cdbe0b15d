"""``s3orchestrator drain`` and ``movement`` (ops.movement_cli) against canned admin API answers."""

from __future__ import annotations

import io
from typing import Any

import pytest

from s3orchestrator.ops.movement_cli import MovementCommandError, drain, movement, progress_line


def document(mode: str = "drain", moved: int = 0, left: int = 4, cleanup: int = 0, paused: bool = False,
             drained: bool = False) -> dict[str, Any]:
    return {
        "paused": paused,
        "stores": [
            {"name": "a", "mode": mode, "objects": left, "live_bytes": left * 10, "cleanup_queue": cleanup,
             "drained": drained},
            {"name": "b", "mode": "normal", "objects": moved, "live_bytes": moved * 10, "cleanup_queue": 0,
             "drained": False},
        ],
        "moves": [] if mode != "drain" else [{
            "reason": "drain", "store": "a", "moved_objects": moved, "moved_bytes": moved * 10,
            "left_objects": left, "left_bytes": left * 10, "failing": 0, "started_ms": 0,
            "bytes_per_second": 20.0, "objects_per_second": 2.0, "eta_seconds": left / 2,
        }],
    }


class Admin:
    """Answers the requests in turn from ``answers`` (the last one repeated), noting them."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str]] = []

    def __call__(self, path: str, method: str) -> dict[str, Any]:
        self.requests.append((method, path))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_drain_refuses_a_store_not_in_mode_drain_saying_how_to_set_it() -> None:
    admin = Admin(document(mode="normal"))
    with pytest.raises(MovementCommandError, match=r'store a is in mode normal: set mode = "drain" in its'
                                                   r" \[\[stores\]\] table .* and reload the daemon"):
        drain(admin, "a", wait=False, out=io.StringIO())
    assert admin.requests == [("GET", "/movement")]


def test_drain_of_an_unknown_store_names_the_stores() -> None:
    with pytest.raises(MovementCommandError, match=r"no store is called 'z' \(stores: a, b\)"):
        drain(Admin(document()), "z", wait=False, out=io.StringIO())


def test_drain_starts_the_mover_and_shows_the_progress_once() -> None:
    admin = Admin(document(), document(moved=1, left=3))
    out = io.StringIO()
    drain(admin, "a", wait=False, out=out)
    assert admin.requests == [("GET", "/movement"), ("POST", "/movement/run")]
    assert out.getvalue() == (
        "[#######.......................]  25% 1/4 copies, 10 B/40 B, 20 B/s, 2.0 copies/s, ETA 1s\n"
    )


def test_drain_wait_follows_the_drain_until_the_store_is_empty() -> None:
    admin = Admin(document(), document(moved=2, left=2), document(moved=4, left=0, cleanup=1),
                  document(moved=4, left=0, drained=True))
    out = io.StringIO()
    naps: list[float] = []
    drain(admin, "a", wait=True, out=out, poll=0.5, sleep=naps.append)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[###############...............]  50% 2/4 copies")
    assert lines[1].endswith("ETA 0s, removing 1 old copies")
    assert lines[2] == "store a is drained: no copy left on it (4 copies, 40 B moved)"
    assert naps == [0.5, 0.5]


def test_drain_wait_stops_when_the_store_leaves_mode_drain() -> None:
    admin = Admin(document(), document(moved=1, left=3), document(mode="normal"))
    with pytest.raises(MovementCommandError, match="left mode drain"):
        drain(admin, "a", wait=True, out=io.StringIO(), sleep=lambda seconds: None)


def test_progress_says_when_movement_is_paused() -> None:
    assert progress_line(document(paused=True), "a").endswith("(movement PAUSED: s3orchestrator movement resume)")


def test_movement_pause_and_resume_post_and_show_the_state() -> None:
    admin = Admin(document(paused=True))
    out = io.StringIO()
    movement(admin, "pause", out)
    assert admin.requests == [("POST", "/movement/pause")]
    assert out.getvalue().splitlines()[:2] == ["movement paused", "movement: PAUSED (s3orchestrator movement resume)"]
    admin = Admin(document(mode="normal"))
    out = io.StringIO()
    movement(admin, "resume", out)
    assert admin.requests == [("POST", "/movement/resume")]
    assert out.getvalue() == (
        "movement resumed\nnothing to move: every store is in mode normal and no move is queued\n"
    )
