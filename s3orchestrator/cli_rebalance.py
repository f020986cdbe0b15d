"""``s3orchestrator rebalance [--dry-run]``: ask the daemon's admin API for a rebalance
plan (``GET /rebalance``) or to queue one for the mover (``POST /rebalance``) and print it."""

from __future__ import annotations

import argparse
import json
from typing import Mapping, TextIO

from s3orchestrator.cli import CommandError, admin_target, fetch_status
from s3orchestrator.ops.rebalance_report import plan_table

REBALANCE_PATH = "/rebalance"


def rebalance(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> None:
    """Print the plan of a rebalance; without ``--dry-run``, have the daemon queue it."""
    url, token = admin_target(args, environ)
    document = fetch_status(url, token, timeout=args.timeout, path=REBALANCE_PATH,
                            method="GET" if args.dry_run else "POST")
    if args.json:
        print(json.dumps(document, indent=2), file=out)
        return
    try:
        out.write(plan_table(document, list_moves=args.moves))
    except (KeyError, TypeError):
        raise CommandError(f"the admin endpoint at {url} answered an unexpected document") from None
    if args.dry_run and document["moves"]:
        print("dry run: nothing queued; run without --dry-run to have the mover make these moves", file=out)
