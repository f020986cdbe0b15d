"""The ``s3orchestrator drain STORE [--wait]`` and ``s3orchestrator movement
pause|resume|status`` commands, through the daemon's admin API (``/movement``).

``drain`` does not change a store's mode: the configuration file is where modes live (so
that a restart or a reload keeps them). It refuses a store whose mode is not ``drain``,
saying how to set it; for a draining store it asks the mover to run now and shows the
drain's progress, with ``--wait`` until the store is empty. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable, Mapping, TextIO

from s3orchestrator.ops.report import format_age, format_bytes, movement_lines, printable

MOVEMENT_PATH = "/movement"
BAR_WIDTH = 30

#: ``fetch(path, method)``: the admin API's JSON answer (``cli.fetch_status``).
Fetch = Callable[[str, str], dict[str, Any]]


class MovementCommandError(Exception):
    """The command cannot do what it was asked; str() is the one line to print."""


def _store(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    stores = {store["name"]: store for store in document.get("stores", ())}
    if name not in stores:
        known = ", ".join(printable(str(store)) for store in stores) or "none"
        raise MovementCommandError(f"no store is called {printable(name)!r} (stores: {known})")
    return stores[name]


def _drain(document: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((move for move in document.get("moves", ())
                 if move["reason"] == "drain" and move["store"] == name), None)


def progress_line(document: Mapping[str, Any], name: str) -> str:
    """One line on the drain of store ``name``: a bar of the bytes (or copies) moved, the
    copies and bytes moved of all, the rate and the time left."""
    store = _store(document, name)
    move = _drain(document, name)
    if store["drained"]:
        moved = f" ({move['moved_objects']} copies, {format_bytes(move['moved_bytes'])} moved)" if move else ""
        return f"store {printable(name)} is drained: no copy left on it{moved}"
    paused = " (movement PAUSED: s3orchestrator movement resume)" if document.get("paused") else ""
    if move is None:
        left = store["objects"]
        return f"drain of {printable(name)}: {left} copies left, not queued yet{paused}"
    done_bytes, all_bytes = move["moved_bytes"], move["moved_bytes"] + move["left_bytes"]
    done, total = (done_bytes, all_bytes) if all_bytes else (move["moved_objects"],
                                                            move["moved_objects"] + move["left_objects"])
    fraction = done / total if total else 1.0
    filled = int(fraction * BAR_WIDTH)
    eta = move.get("eta_seconds")
    line = (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * fraction:3.0f}%"
        f" {move['moved_objects']}/{move['moved_objects'] + move['left_objects']} copies,"
        f" {format_bytes(done_bytes)}/{format_bytes(all_bytes)},"
        f" {format_bytes(int(move['bytes_per_second']))}/s, {move['objects_per_second']:.1f} copies/s,"
        f" ETA {'unknown' if eta is None else format_age(eta)}"
    )
    if not move["left_objects"] and store["cleanup_queue"]:
        line += f", removing {store['cleanup_queue']} old copies"
    if move.get("failing"):
        line += f", {move['failing']} failing (retried)"
    return line + paused


def drain(fetch: Fetch, name: str, wait: bool, out: TextIO, poll: float = 1.0,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """``s3orchestrator drain STORE [--wait]``: refuse a store not in mode drain; else ask
    the mover to run now and print the drain's progress, with ``wait`` until the store
    is empty (a progress bar redrawn in place on a terminal, a line a change elsewhere)."""
    document = fetch(MOVEMENT_PATH, "GET")
    store = _store(document, name)
    if store["mode"] != "drain":
        raise MovementCommandError(
            f"store {printable(name)} is in mode {store['mode']}: set mode = \"drain\" in its [[stores]] table of"
            " the configuration file and reload the daemon (systemctl reload s3orchestrator, or SIGHUP), then run"
            " this again"
        )
    document = fetch(MOVEMENT_PATH + "/run", "POST")
    terminal = out.isatty()
    last = ""
    while True:
        _store(document, name)  # still configured
        line = progress_line(document, name)
        drained = _store(document, name)["drained"]
        if terminal and wait and not drained:
            out.write("\r\x1b[K" + line)
            out.flush()
        elif line != last:
            out.write(("\n" if terminal and last else "") + line + "\n")
            out.flush()
        last = line
        if drained or not wait:
            return
        if _store(document, name)["mode"] != "drain":
            raise MovementCommandError(f"store {printable(name)} left mode drain (a reload changed it): drain stopped")
        sleep(poll)
        document = fetch(MOVEMENT_PATH, "GET")


def movement(fetch: Fetch, action: str, out: TextIO) -> None:
    """``s3orchestrator movement pause|resume|status``: pause or resume every move
    (drains and rebalances, kept across restarts), or show them."""
    if action == "status":
        document = fetch(MOVEMENT_PATH, "GET")
    else:
        document = fetch(f"{MOVEMENT_PATH}/{action}", "POST")
        out.write(f"movement {'paused' if action == 'pause' else 'resumed'}\n")
    lines = movement_lines(document)
    if not lines:
        lines = ["nothing to move: every store is in mode normal and no move is queued"]
    elif not document.get("paused") and action != "pause":
        lines.insert(0, "movement: running")
    out.write("\n".join(lines) + "\n")


def add_commands(commands: Any, admin_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``drain`` and ``movement`` sub-commands (``admin_options`` adds --config, --url...)."""
    draining = commands.add_parser(
        "drain", help="show the drain of a store in mode drain (moving every copy off it); --wait: until empty",
    )
    draining.add_argument("store", metavar="STORE", help="the store's name")
    draining.add_argument("--wait", action="store_true", help="show a progress bar until the store is empty")
    draining.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                          help="with --wait, seconds between two looks (default: 1)")
    admin_options(draining)
    moving = commands.add_parser("movement", help="pause or resume moving copies (drains, rebalances), or show it")
    moving.add_argument("action", choices=("pause", "resume", "status"))
    admin_options(moving)


def run(args: argparse.Namespace, fetch: Fetch, out: TextIO) -> None:
    """Run ``drain`` or ``movement`` with the parsed ``args`` (``--json``: print the
    ``/movement`` document as received instead, after the action)."""
    if args.command == "drain":
        if args.poll <= 0:
            raise MovementCommandError("--poll: must be positive")
        if args.json and args.wait:
            raise MovementCommandError("--json shows the drain once: it does not go with --wait")
    if args.json:
        if args.command == "drain":
            _store(fetch(MOVEMENT_PATH, "GET"), args.store)
        posted = args.command == "movement" and args.action != "status"
        document = fetch(f"{MOVEMENT_PATH}/{args.action}" if posted else MOVEMENT_PATH, "POST" if posted else "GET")
        print(json.dumps(document, indent=2), file=out)
    elif args.command == "drain":
        drain(fetch, args.store, args.wait, out, poll=args.poll)
    else:
        movement(fetch, args.action, out)
