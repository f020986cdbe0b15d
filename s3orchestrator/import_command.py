"""``s3orchestrator import``: have the daemon import the objects a store already holds
into a virtual bucket, and follow its progress until it ends.

The import runs in the daemon (through its admin API: ``POST /imports``, then
``GET /imports`` every ``--interval`` seconds), which lists the store, records the
objects and replicates them; this command only starts it and reports. Interrupting
the command leaves the import running; running it again follows (or resumes) it.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Mapping, TextIO

from s3orchestrator.cli import (
    TOKEN_ENVIRONMENT_VARIABLE,
    CommandError,
    admin_exchange,
    admin_url,
    read_admin_settings,
)
from s3orchestrator.ops.report import printable

IMPORTS_PATH = "/imports"
DEFAULT_INTERVAL = 1.0


def admin_call(
    url: str, token: str, method: str, path: str, document: Mapping[str, Any] | None, timeout: float,
) -> tuple[int, dict[str, Any]]:
    """Send ``method path`` (with ``document`` as JSON) to the admin endpoint at ``url``;
    (status, the JSON object answered)."""
    response, answer = admin_exchange(url, token, method, path, timeout, document)
    if response.status in (404, 405) and not answer.startswith(b"{"):
        raise CommandError(f"the admin endpoint at {url} has no {path} (a daemon older than this command?)")
    try:
        parsed = json.loads(answer)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise CommandError(f"the admin endpoint at {url} answered {response.status} {response.reason}, not JSON")
    return response.status, parsed


def admin_target(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, str]:
    """(url, token) of the admin endpoint: --url and --token, else ``[admin]`` of --config."""
    url: str | None = args.url
    token: str | None = args.token or environ.get(TOKEN_ENVIRONMENT_VARIABLE) or None
    if url is None or token is None:
        listen, config_token = read_admin_settings(args.config, environ)
        url = url or admin_url(listen)
        token = token or config_token
    if token is None:
        raise CommandError(
            f"no admin token: admin.token cannot be read here; pass --token or set {TOKEN_ENVIRONMENT_VARIABLE}"
        )
    return url, token


def progress_line(record: Mapping[str, Any]) -> str:
    """One line of an import's progress."""
    line = (
        f"{record['state']}: {record['imported_objects']} objects ({record['imported_bytes']} bytes) imported,"
        f" {record['present']} already imported, {record['kept']} kept (the bucket had the key),"
        f" {record['skipped']} skipped"
    )
    if record.get("after_key"):
        line += f"; at {printable(record['after_key'])}"
    if record.get("last_error"):
        line += f"; error: {printable(record['last_error'])}"
    return line


def quota_lines(document: Mapping[str, Any], store: str) -> list[str]:
    """What the store's quota says after the import (over quota: by how much)."""
    lines = []
    for usage in document.get("stores", ()):
        if usage.get("name") != store:
            continue
        used, quota = usage["used_bytes"], usage["quota_bytes"]
        if quota and used > quota:
            lines.append(f"store {store}: {used} bytes used, OVER its quota of {quota} bytes by {used - quota}:"
                         " new objects go to other stores")
        else:
            lines.append(f"store {store}: {used} bytes used of {quota or 'unlimited'}"
                         f"{' bytes' if quota else ''}")
    return lines


def run_import(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> None:
    """Start the import and print its progress until it is done; CommandError if it fails."""
    url, token = admin_target(args, environ)
    request = {"store": args.store, "bucket": args.bucket, "prefix": args.prefix}
    status, answer = admin_call(url, token, "POST", IMPORTS_PATH, request, args.timeout)
    if status != 202:
        raise CommandError(f"the import cannot start: {answer.get('error', status)}")
    name = f"import of {args.store}/{args.prefix} into bucket {args.bucket}"
    print(f"{name}: started after {printable(answer['import']['after_key'])!r}"
          if answer["import"]["after_key"] else f"{name}: started", file=out)
    owner = answer["import"]["owner"]
    last = ""
    while True:
        try:
            status, document = admin_call(url, token, "GET", IMPORTS_PATH, None, args.timeout)
        except CommandError as error:
            raise CommandError(f"{error} (run the command again to resume it)") from None
        if status != 200:
            raise CommandError(f"the admin endpoint at {url} answered {status}: {document.get('error')}")
        record = next((record for record in document.get("imports", ())
                       if (record["store"], record["bucket"], record["prefix"]) ==
                       (args.store, args.bucket, args.prefix)), None)
        if record is None:
            raise CommandError(f"the daemon does not know the {name}")
        line = progress_line(record)
        if line != last:
            print(json.dumps(record) if args.json else line, file=out, flush=True)
            last = line
        if record["state"] != "running":
            break
        instance = document.get("instance")
        # Run by the instance that started it or by the one answering, yet not running here: stopped.
        if record["owner"] in (instance, owner) and not record.get("running_here"):
            raise CommandError(f"the daemon at {url} no longer runs the {name} (it restarted?):"
                               " run the command again to resume it")
        time.sleep(args.interval)
    for line in quota_lines(document, args.store):
        print(line, file=out)
    if record["state"] == "failed":
        raise CommandError(f"the {name} failed: {record['last_error']} (run the command again to resume it)")
