"""The start-up banner: one log event saying where the daemon listens and what it serves.

``startup_banner`` turns the configuration, the stores' usage and the listeners' bound
addresses into a ``Banner`` of plain values; ``banner_text`` renders it as the lines the
text log shows and ``banner_fields`` as the structured fields of a JSON log line (pure
functions, testable without a reactor). Buckets are shown with their access key ids,
never their secrets; upstream endpoints without any user info.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import attrs
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

from s3orchestrator.config import Config, DirectoryStoreConfig
from s3orchestrator.metadata.engines.postgres import redacted_url
from s3orchestrator.metadata.records import StoreUsage
from s3orchestrator.ops.report import format_bytes

# The names ``startup_banner`` takes the operator listeners' addresses under.
METRICS = "metrics"
ADMIN = "admin"
MANHOLE = "manhole"


@attrs.frozen
class BannerBucket:
    """A virtual bucket and the access key ids that may use it."""

    name: str
    access_key_ids: tuple[str, ...]


@attrs.frozen
class BannerStore:
    """A store: its kind, where its bytes go, its zone, its quota and what the metadata says it holds."""

    name: str
    type: str  # "directory" or "s3"
    quota_bytes: int  # 0: unlimited
    used_bytes: int
    objects: int
    path: str | None = None  # a directory store's directory
    endpoint: str | None = None  # an s3 store's upstream endpoint and bucket
    bucket: str | None = None
    zone: str | None = None  # None: a zone of its own


@attrs.frozen
class Banner:
    """Everything the banner shows, as plain values; an operator endpoint that is off is None."""

    s3_endpoints: tuple[str, ...]
    buckets: tuple[BannerBucket, ...]
    stores: tuple[BannerStore, ...]
    metadata_sqlite: str | None
    metrics: tuple[str, ...]
    health: tuple[str, ...]
    admin_api: str | None
    manhole: str | None
    metadata_url: str | None = None  # PostgreSQL, without its password
    workers: int = 1  # processes serving S3 requests (server.workers)
    instance_id: str | None = None  # this process's, as in reservations, logs and metrics


def is_tls(endpoint: str) -> bool:
    """Whether a Twisted server endpoint string listens with TLS (``ssl:...``)."""
    return endpoint.split(":", 1)[0] == "ssl"


def address_url(address: IAddress, tls: bool) -> str:
    """Where a client reaches a bound address: ``http(s)://HOST:PORT``, or ``unix:PATH``."""
    if isinstance(address, UNIXAddress):
        name = address.name
        return "unix:" + (os.fsdecode(name) if name is not None else "?")
    if isinstance(address, (IPv4Address, IPv6Address)):
        host = f"[{address.host}]" if isinstance(address, IPv6Address) else address.host
        return f"{'https' if tls else 'http'}://{host}:{address.port}"
    return str(address)


def path_url(base: str, path: str) -> str:
    """``path`` on a listener: ``http://HOST:PORT/path``, or ``unix:PATH /path``."""
    return f"{base} {path}" if base.startswith("unix:") else base + path


def manhole_address(address: IAddress) -> str:
    """How to reach the manhole: ``telnet HOST PORT``, or ``unix:PATH``."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        return f"telnet {address.host} {address.port}"
    return address_url(address, tls=False)


def _without_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part (it could hold a secret)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def startup_banner(
    config: Config,
    usage: Sequence[StoreUsage],
    s3_addresses: Sequence[IAddress],
    ops_addresses: Mapping[str, IAddress],
    instance_id: str | None = None,
) -> Banner:
    """The banner of a daemon running ``config`` as instance ``instance_id``, whose S3
    listeners are bound at ``s3_addresses`` and operator listeners at ``ops_addresses``
    (by METRICS, ADMIN, MANHOLE; absent: off), with the stores' ``usage`` from the metadata."""
    tls = is_tls(config.server.listen)
    s3_endpoints = tuple(address_url(address, tls) for address in s3_addresses)
    ops_endpoints = s3_endpoints
    metrics_address = ops_addresses.get(METRICS)
    if metrics_address is not None and config.ops.metrics_listen is not None:
        ops_endpoints += (address_url(metrics_address, is_tls(config.ops.metrics_listen)),)
    admin_address = ops_addresses.get(ADMIN)
    admin_api = None
    if admin_address is not None and config.ops.admin is not None:
        admin_api = path_url(address_url(admin_address, is_tls(config.ops.admin.listen)), "/status")
    manhole_bound = ops_addresses.get(MANHOLE)
    by_name = {store.name: store for store in usage}
    stores: list[BannerStore] = []
    for store in config.stores:
        used = by_name.get(store.name)
        common: dict[str, Any] = dict(
            name=store.name,
            quota_bytes=store.quota_bytes,
            used_bytes=used.used_bytes if used is not None else 0,
            objects=used.object_count if used is not None else 0,
            zone=store.zone,
        )
        if isinstance(store, DirectoryStoreConfig):
            stores.append(BannerStore(type="directory", path=store.path, **common))
        else:
            stores.append(BannerStore(
                type="s3", endpoint=_without_userinfo(store.endpoint), bucket=store.bucket, **common
            ))
    return Banner(
        s3_endpoints=s3_endpoints,
        buckets=tuple(
            BannerBucket(bucket.name, tuple(credential.access_key_id for credential in bucket.credentials))
            for bucket in config.buckets
        ),
        stores=tuple(stores),
        metadata_sqlite=config.metadata.sqlite,
        metrics=tuple(path_url(base, "/metrics") for base in ops_endpoints),
        health=tuple(path_url(base, "/health") for base in ops_endpoints),
        admin_api=admin_api,
        manhole=manhole_address(manhole_bound) if manhole_bound is not None else None,
        metadata_url=redacted_url(config.metadata.url) if config.metadata.url is not None else None,
        workers=config.server.workers,
        instance_id=instance_id,
    )


def _store_line(store: BannerStore) -> str:
    where = f"directory {store.path}" if store.type == "directory" else f"s3 {store.endpoint} bucket {store.bucket}"
    if store.zone is not None:
        where += f", zone {store.zone}"
    if store.quota_bytes:
        used = (f"{format_bytes(store.used_bytes)} of {format_bytes(store.quota_bytes)}"
                f" ({100 * store.used_bytes / store.quota_bytes:.0f}%)")
    else:
        used = f"{format_bytes(store.used_bytes)} (no quota)"
    return f"{store.name}: {where}, used {used}, {store.objects} object{'s' if store.objects != 1 else ''}"


def banner_text(banner: Banner) -> str:
    """The banner as lines of text: a title line, then one labelled line per item."""
    rows: list[tuple[str, str]] = [("S3 endpoint", url) for url in banner.s3_endpoints]
    if banner.instance_id is not None:
        rows.append(("instance", banner.instance_id))
    for bucket in banner.buckets:
        keys = ", ".join(bucket.access_key_ids)
        rows.append(("bucket", f"{bucket.name}: access key{'s' if len(bucket.access_key_ids) != 1 else ''} {keys}"))
    rows += [("store", _store_line(store)) for store in banner.stores]
    rows.append(("metadata", f"SQLite {banner.metadata_sqlite}" if banner.metadata_url is None
                 else f"PostgreSQL {banner.metadata_url}"))
    rows += [("metrics", url) for url in banner.metrics]
    rows += [("health", f"{url}, {url}/ready") for url in banner.health]
    rows.append(("admin API", banner.admin_api or "off (no [admin] table)"))
    rows.append(("manhole", banner.manhole or "off (no [manhole] table)"))
    if banner.workers > 1:
        rows.append(("workers", f"{banner.workers} processes, supervised by this one"))
    width = max(len(label) for label, _ in rows)
    title = f"s3orchestrator listening on {', '.join(banner.s3_endpoints)}"
    # The text log indents every line after the first with a tab.
    return "\n".join([title, *(f"{label.ljust(width)}  {value}" for label, value in rows)])


def _as_lists(value: Any) -> Any:
    # attrs.asdict turns tuples into lists in some attrs versions and not in others.
    if isinstance(value, (tuple, list)):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    return value


def banner_fields(banner: Banner) -> dict[str, Any]:
    """The banner as the fields of one log event (lists and dicts of plain values)."""
    fields: dict[str, Any] = _as_lists(attrs.asdict(banner))
    return fields
