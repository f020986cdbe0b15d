"""``s3orchestrator scrub``: where the scrubber's passes stand and which stores it suspended,
read from the daemon's admin API; ``--now`` asks for a pass of each kind not under way to
begin at once and lifts the suspensions (POST /scrub)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Mapping, Sequence, TextIO

from s3orchestrator.cli import CommandError, admin_access, fetch_status
from s3orchestrator.ops.report import printable, scrub_line, suspended_line

HELP = ("where the scrubber's passes stand; --now: begin a pass of each kind not under way"
        " and lift the stores' suspensions")
SCRUB_PATH = "/scrub"
KINDS = ("stat", "checksum")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``scrub`` besides those of every admin command."""
    parser.add_argument("--now", action="store_true",
                        help="ask for a stat and a full-read pass to begin at once (those running go on) and"
                        " let copies of suspended stores go again (check those stores first)")


def scrub(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> None:
    """Print the passes (``--now``: after asking for new ones)."""
    url, token = admin_access(args, environ)
    if args.now:
        document = fetch_status(url, token, timeout=args.timeout, path=SCRUB_PATH, method="POST")
    else:
        document = fetch_status(url, token, timeout=args.timeout)
    if args.json:
        print(json.dumps(document if args.now else {key: document.get(key, []) for key in (
            "scrub", "scrub_suspended")}, indent=2), file=out)
        return
    try:
        if args.now:
            out.write(asked_text(document))
        else:
            out.write(passes_text(document.get("scrub", []), time.time(), document.get("scrub_suspended", [])))
    except (KeyError, TypeError):
        raise CommandError(f"the admin endpoint at {url} answered an unexpected document") from None


def passes_text(
    passes: list[Mapping[str, Any]], now: float, suspended: Sequence[Mapping[str, Any]] = ()
) -> str:
    """One line per kind of pass and per suspended store (the status command's)."""
    lines = [suspended_line(suspension, now) + "\n" for suspension in suspended]
    if not passes:
        return "scrub: no pass has begun yet\n" + "".join(lines)
    return "".join(scrub_line(scrub, now) + "\n" for scrub in passes) + "".join(lines)


def asked_text(document: Mapping[str, Any]) -> str:
    """What ``--now`` did, kind by kind; CommandError if the scrubber is off."""
    if not document["enabled"]:
        raise CommandError("the scrubber is off ([scrub] enabled = false): no pass asked for")
    within = f"{document['within_seconds']:g} s"
    by_kind = {scrub["kind"]: scrub for scrub in document["scrub"]}
    lines = []
    for kind in KINDS:
        current = by_kind.get(kind)
        if current is not None and current["running"]:
            position = current.get("position")
            at = f" (at {printable(str(position))})" if position else ""
            lines.append(f"scrub {kind} pass: already running{at}, goes on\n")
        else:
            lines.append(f"scrub {kind} pass: begins within {within}\n")
    for store in document.get("lifted", []):
        lines.append(f"scrub: store {printable(str(store))} no longer suspended: its copies found wrong are let go"
                     " again\n")
    return "".join(lines)
