"""Plain-text tables of the daemon's state for operators: the manhole's helpers and the
``s3orchestrator status`` command print these (pure functions, standard library only)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(size: int) -> str:
    """``1536`` -> ``1.5 KiB``; bytes below 1 KiB are exact."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    """A short age: ``8s``, ``12m 5s``, ``5h 2m``, ``3d 4h``."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def printable(text: str) -> str:
    """``text`` with control characters escaped: object keys come from clients, and an
    escape sequence in one must not reach the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart; one line per row."""
    lines = [list(header), *[list(row) for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _usage(used: int, quota: int) -> str:
    if quota == 0:
        return format_bytes(used)
    return f"{format_bytes(used)} ({100 * used / quota:.0f}%)"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _queues(snapshot: Mapping[str, Any], now: float) -> str | None:
    """The replication queue (length, lag), cleanup queue and write intents, if any is not empty."""
    replication, oldest_ms = snapshot.get("replication_queue", 0), snapshot.get("replication_oldest_ms")
    cleanup, intents = snapshot.get("cleanup_queue", 0), snapshot.get("intents_pending", 0)
    if not (replication or cleanup or intents):
        return None
    lag = f", oldest missing copy {format_age(now - oldest_ms / 1000)} ago" if replication and oldest_ms else ""
    return (
        f"replication queue: {_plural(replication, 'object')}{lag};"
        f" cleanup queue: {_plural(cleanup, 'location')} ({format_bytes(snapshot.get('cleanup_bytes', 0))});"
        f" {_plural(intents, 'write intent')}"
    )


def _cleanup_cell(store: Mapping[str, Any]) -> str:
    entries = store.get("cleanup_queue", 0)
    return f"{entries} ({format_bytes(store.get('cleanup_bytes', 0))})" if entries else "0"


def scrub_line(scrub: Mapping[str, Any], now: float) -> str:
    """One kind of scrub pass: running (for how long, how far, what it found) or idle, and
    when the last one ended."""
    kind = printable(str(scrub["kind"]))
    finished_ms = scrub.get("finished_ms")
    last = f"last finished {format_age(now - finished_ms / 1000)} ago" if finished_ms else "none finished yet"
    counts = f"{scrub['checked']} copies checked, {scrub['found']} missing or damaged"
    if scrub.get("running"):
        position = scrub.get("position")
        at = f" at {printable(str(position))}" if position else ""
        return (f"scrub {kind} pass: running for {format_age(now - scrub['started_ms'] / 1000)}{at},"
                f" {counts}; {last}")
    return f"scrub {kind} pass: idle, {last} ({counts})"


def suspended_line(suspension: Mapping[str, Any], now: float) -> str:
    """A store the scrubber suspended: since when, why, and how to resume."""
    return (f"scrub: store {printable(str(suspension['store']))} suspended"
            f" {format_age(now - suspension['since_ms'] / 1000)} ago ({suspension['found']} of"
            f" {suspension['checked']} copies checked found missing or damaged): no copy of it is"
            " let go; check the store, then run `s3orchestrator scrub --now`")


def status_table(snapshot: Mapping[str, Any], now: float) -> str:
    """The ``status_snapshot`` document as a table at time ``now`` (seconds since the epoch):
    one row per store (health, used/reserved/quota, live copies and their bytes, cleanup
    queue, uploads), the queues when any is not empty (with the replication lag), lost
    objects if any, the last error of every store that is down, and which instance runs
    each cluster-wide job when the document says; and movement (``movement_lines``)."""
    stores = snapshot.get("stores", [])
    uploads = snapshot.get("uploads", 0)
    lines = [
        f"status: {snapshot.get('status', '?')}, {_plural(len(stores), 'store')},"
        f" {_plural(uploads, 'multipart upload')} in progress"
    ]
    queues = _queues(snapshot, now)
    if queues is not None:
        lines.append(queues)
    lost = snapshot.get("objects_lost", 0)
    if lost:
        lines.append(f"LOST: {_plural(lost, 'object')} with no live copy left, unreadable until overwritten"
                     " or deleted (manhole: lost_objects())")
    rows = [
        (
            printable(str(store["name"])),
            "up" if store["healthy"] else "DOWN",
            _usage(store["used_bytes"], store["quota_bytes"]),
            format_bytes(store["reserved_bytes"]),
            format_bytes(store["quota_bytes"]) if store["quota_bytes"] else "unlimited",
            str(store["objects"]),
            format_bytes(store.get("live_bytes", store["used_bytes"])),
            _cleanup_cell(store),
            str(store["uploads"]),
        )
        for store in stores
    ]
    lines.append(table(("STORE", "HEALTH", "USED", "RESERVED", "QUOTA", "COPIES", "LIVE", "CLEANUP", "UPLOADS"),
                       rows))
    for store in stores:
        if not store["healthy"]:
            error = store.get("last_error") or "no error recorded"
            lines.append(f"{printable(str(store['name']))} is down: {printable(str(error))}")
    lines.extend(movement_lines(snapshot.get("movement")))
    for scrub in snapshot.get("scrub", []):
        lines.append(scrub_line(scrub, now))
    for suspension in snapshot.get("scrub_suspended", []):
        lines.append(suspended_line(suspension, now))
    jobs = snapshot.get("jobs")
    if jobs:
        lines.append("jobs: " + ", ".join(
            f"{printable(str(job['job']))} on {printable(str(job['holder']))}" for job in jobs
        ))
    return "\n".join(lines) + "\n"


def move_line(move: Mapping[str, Any], drained: bool = False) -> str:
    """One reason's moves off one store: moved, left, rate, ETA."""
    what = f"{move['reason']} of {printable(str(move['store']))}"
    count = move["moved_objects"]
    moved = f"{count} {'copy' if count == 1 else 'copies'} ({format_bytes(move['moved_bytes'])})"
    if drained:
        return f"{what}: done, the store is empty ({moved} moved)"
    line = (f"{what}: {moved} moved, {move['left_objects']} ({format_bytes(move['left_bytes'])}) left,"
            f" {move['objects_per_second']:.1f} copies/s, {format_bytes(int(move['bytes_per_second']))}/s")
    eta = move.get("eta_seconds")
    line += ", ETA unknown" if eta is None else f", ETA {format_age(eta)}"
    if move.get("failing"):
        line += f", {move['failing']} failing (retried)"
    return line


def movement_lines(document: Mapping[str, Any] | None) -> list[str]:
    """What ``s3orchestrator status`` says of movement: pause, stores not in mode
    normal, and the progress of every drain and rebalance (none when all is quiet)."""
    if not document:
        return []
    lines = ["movement: PAUSED (s3orchestrator movement resume)"] if document.get("paused") else []
    stores = {store["name"]: store for store in document.get("stores", ())}
    moving = {move["store"] for move in document.get("moves", ()) if move["reason"] == "drain"}
    for store in stores.values():
        if store["mode"] != "normal" and store["name"] not in moving:
            lines.append(f"store {printable(str(store['name']))}: mode {store['mode']}")
    for move in document.get("moves", ()):
        store = stores.get(move["store"], {})
        lines.append(move_line(move, drained=move["reason"] == "drain" and bool(store.get("drained"))))
    return lines


def _listing(header: Sequence[str], rows: Iterable[Sequence[str]], footer: str, cut_footer: str, more: bool) -> str:
    """A listing's table and its footer line: ``cut_footer`` if ``more`` (the listing
    was cut short), else ``footer``."""
    return table(header, rows) + "\n" + (cut_footer if more else footer) + "\n"


def _objects_since(entries: Sequence[Any], now: float) -> list[tuple[str, str]]:
    """Rows of bucket/key and how long ago ``since_ms`` was, one per entry."""
    return [(printable(f"{entry.bucket}/{entry.key}"), format_age(now - entry.since_ms / 1000)) for entry in entries]


def lost_table(lost: Sequence[Any], now: float, more: bool = False) -> str:
    """Objects with no live copy left (``LostObject``-like), oldest loss first; ``more``
    when the list was cut short."""
    if not lost:
        return "no object is lost\n"
    return _listing(
        ("BUCKET/KEY", "LOST FOR"), _objects_since(lost, now),
        f"{_plural(len(lost), 'object')} with no live copy left (oldest first): overwrite or delete them",
        f"the oldest {len(lost)} lost objects; there are more (lost_objects(limit=N) shows more)", more,
    )


def uploads_table(uploads: Sequence[Any], now: float, more: bool = False) -> str:
    """Multipart uploads in progress (``UploadRecord``-like: bucket, key, upload_id,
    store, initiated_ms), oldest first; ``more`` when the list was cut short."""
    if not uploads:
        return "no multipart uploads in progress\n"
    rows = [
        (
            printable(f"{upload.bucket}/{upload.key}"),
            printable(upload.upload_id),
            printable(upload.store),
            format_age(now - upload.initiated_ms / 1000),
        )
        for upload in uploads
    ]
    return _listing(
        ("BUCKET/KEY", "UPLOAD ID", "STORE", "AGE"), rows,
        f"{_plural(len(uploads), 'upload')} (oldest first)",
        f"the oldest {len(uploads)} uploads; more are in progress (uploads(limit=N) shows more)", more,
    )


def cleanup_table(entries: Sequence[Any], now: float, more: bool = False) -> str:
    """Cleanup queue entries (``CleanupEntry``-like), oldest first; ``more`` when cut short."""
    if not entries:
        return "the cleanup queue is empty\n"
    rows = [
        (
            printable(entry.store),
            printable(entry.location),
            format_bytes(entry.size),
            format_age(now - entry.created_ms / 1000),
            str(entry.attempts),
            "now" if entry.next_try_ms <= now * 1000 else "in " + format_age(entry.next_try_ms / 1000 - now),
            printable(entry.last_error or ""),
        )
        for entry in entries
    ]
    return _listing(
        ("STORE", "LOCATION", "SIZE", "AGE", "TRIES", "NEXT TRY", "LAST ERROR"), rows,
        f"{_plural(len(entries), 'location')} (oldest first)",
        f"the oldest {len(entries)} locations; more are queued (cleanup_queue(limit=N) shows more)", more,
    )


def replication_table(queued: Sequence[Any], now: float, more: bool = False) -> str:
    """Objects waiting for the replicator (``QueuedReplication``-like), oldest first;
    ``more`` when the list was cut short."""
    if not queued:
        return "the replication queue is empty\n"
    return _listing(
        ("BUCKET/KEY", "WAITING"), _objects_since(queued, now),
        f"{_plural(len(queued), 'object')} missing copies (oldest first)",
        f"the oldest {len(queued)} objects; more are queued (replication_queue(limit=N) shows more)", more,
    )


def instances_table(instances: Sequence[Any], now: float) -> str:
    """Registered instances (``Instance``-like), by id: how long ago each started and
    when its lease ends (or ended: the instance is dead)."""
    if not instances:
        return "no instances registered\n"
    rows = []
    for instance in instances:
        left = instance.expires_ms / 1000 - now
        lease = f"ends in {format_age(left)}" if left > 0 else f"expired {format_age(-left)} ago (dead)"
        rows.append((printable(instance.id), printable(instance.host), str(instance.pid),
                     format_age(now - instance.started_ms / 1000), lease))
    return table(("INSTANCE", "HOST", "PID", "UP", "LEASE"), rows) + "\n"


def intents_table(intents: Sequence[Any], now: float) -> str:
    """Write intents (``Intent``-like), oldest first."""
    if not intents:
        return "no write intents\n"
    rows = [
        (
            printable(f"{intent.bucket}/{intent.key}"),
            printable(intent.store),
            printable(intent.location),
            format_bytes(intent.size),
            printable(intent.owner),
            format_age(now - intent.created_ms / 1000),
        )
        for intent in intents
    ]
    return table(("BUCKET/KEY", "STORE", "LOCATION", "SIZE", "OWNER", "AGE"), rows) + "\n"


#: The counters ``usage_table`` shows: (label, counter in the document, cap, bytes?).
_TRAFFIC_ROWS = (
    ("egress", "egress_bytes", "egress_bytes", True),
    ("ingress", "ingress_bytes", "ingress_bytes", True),
    ("class A requests", "requests_a", "class_a_requests", False),
    ("class B requests", "requests_b", "class_b_requests", False),
    ("all requests", "requests", "requests", False),
)


def usage_table(document: Mapping[str, Any]) -> str:
    """The ``/usage`` document as a table: each store's traffic this billing period
    against every cap (``-``: none), and which caps it reached."""
    lines = []
    for store in document.get("stores", []):
        caps, reached = store["caps"], set(store["reached"])
        lines.append(
            f"{printable(str(store['name']))}: {store['period_start']} to {store['period_end']} (UTC),"
            f" cap_mode {store['cap_mode']}"
        )
        rows = []
        for label, counter, cap, in_bytes in _TRAFFIC_ROWS:
            used, limit = store[counter], caps.get(cap)
            show = format_bytes if in_bytes else str
            rows.append((
                "  " + label,
                show(used),
                "-" if limit is None else show(limit),
                "-" if limit is None else f"{100 * used / limit:.0f}%",
                "REACHED" if cap in reached else "",
            ))
        lines.append(table(("  TRAFFIC", "USED", "CAP", "USE", ""), rows))
    if not lines:
        return "no stores\n"
    return "\n".join(lines) + "\n"
