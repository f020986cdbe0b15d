"""The ``s3orchestrator rebalance [--dry-run] [--moves]`` command, through the daemon's
admin API: ``GET /rebalance`` prints the plan, ``POST /rebalance`` has the daemon queue it
for the mover too. Standard library only."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable, TextIO

from s3orchestrator.ops.movement_cli import Fetch, MovementCommandError
from s3orchestrator.ops.rebalance_report import LISTED_MOVES, plan_table

REBALANCE_PATH = "/rebalance"
#: Seconds the command waits by default: planning reads the copies of up to a million objects.
TIMEOUT = 300.0


def add_command(commands: Any, admin_command: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``rebalance`` to the ``commands`` subparsers; ``admin_command`` adds the options
    of a command that asks the admin API."""
    rebalance = commands.add_parser(
        "rebalance",
        help="move copies from the fullest stores to the emptiest (routing_strategy spread) until every store's"
             " fill is within [movement] rebalance_tolerance of the mean: queue the moves for the mover",
    )
    admin_command(rebalance)
    rebalance.add_argument("--dry-run", action="store_true",
                           help="print the plan (copies, bytes, every store before and after) and move nothing")
    rebalance.add_argument("--moves", action="store_true", help=f"list the moves too (the first {LISTED_MOVES})")


def run(args: argparse.Namespace, fetch: Fetch, out: TextIO) -> None:
    """Print the plan of a rebalance; without ``--dry-run``, have the daemon queue it."""
    document = fetch(REBALANCE_PATH, "GET" if args.dry_run else "POST")
    if args.json:
        print(json.dumps(document, indent=2), file=out)
        return
    try:
        out.write(plan_table(document, list_moves=args.moves))
    except (KeyError, TypeError):
        raise MovementCommandError("the admin endpoint answered an unexpected document") from None
    if args.dry_run and document["moves"]:
        print("dry run: nothing queued; run without --dry-run to have the mover make these moves", file=out)
