"""What a reloaded configuration changes in a running daemon, and what needs a restart.

Applied at once: bucket credentials (added, removed, rotated keys), the routing
strategy, store quotas, ``server.max_object_size``, ``server.timeout`` (new
connections), ``server.shutdown_timeout``, ``server.header_timeout`` and
``server.min_upload_rate`` (requests whose head or body starts from then on),
health and multipart settings (expiry, completed_retention), ``logging.level``. Kept until a restart: the
listen addresses and ``server.backlog`` (the listening socket), the metadata
settings (database, busy_timeout), the other operators' settings (logging.format, metrics, manhole,
admin), and any store added, removed or changed other than in its quota.
"""

from __future__ import annotations

import attrs

from s3orchestrator.config import Config, ServerConfig, StoreConfig


@attrs.frozen
class ReloadPlan:
    """The configuration to run with from now on, and what differs from the old one."""

    config: Config
    applied: tuple[str, ...]  # settings that changed and take effect now
    needs_restart: tuple[str, ...]  # settings that changed but keep their running value


def _without_quota(store: StoreConfig) -> StoreConfig:
    return attrs.evolve(store, quota_bytes=0)


def _stores(old: tuple[StoreConfig, ...], new: tuple[StoreConfig, ...]) -> tuple[tuple[StoreConfig, ...], bool]:
    """The running stores with the new quotas of those otherwise unchanged, and whether
    any other store change (added, removed, changed, reordered) waits for a restart."""
    by_name = {store.name: store for store in new}
    kept = []
    for store in old:
        replacement = by_name.get(store.name)
        if replacement is not None and _without_quota(replacement) == _without_quota(store):
            kept.append(attrs.evolve(store, quota_bytes=replacement.quota_bytes))
        else:
            kept.append(store)
    others_changed = [store.name for store in old] != [store.name for store in new] or any(
        _without_quota(by_name[store.name]) != _without_quota(store) for store in old if store.name in by_name
    )
    return tuple(kept), others_changed


def reload_plan(old: Config, new: Config) -> ReloadPlan:
    """Merge ``new`` into the running ``old`` configuration: what can change live does."""
    needs_restart = []
    applied = []
    if new.server.listen != old.server.listen:
        needs_restart.append("server.listen")
    if new.server.backlog != old.server.backlog:
        needs_restart.append("server.backlog")
    server = ServerConfig(
        listen=old.server.listen,
        max_object_size=new.server.max_object_size,
        timeout=new.server.timeout,
        shutdown_timeout=new.server.shutdown_timeout,
        backlog=old.server.backlog,
        header_timeout=new.server.header_timeout,
        min_upload_rate=new.server.min_upload_rate,
    )
    if server != old.server:
        applied.append("server")
    if new.metadata != old.metadata:
        needs_restart.append("metadata")
    ops = attrs.evolve(old.ops, log_level=new.ops.log_level)
    if attrs.evolve(new.ops, log_level=old.ops.log_level) != old.ops:
        needs_restart.append("logging.format/metrics/manhole/admin")
    stores, stores_changed = _stores(old.stores, new.stores)
    if stores_changed:
        needs_restart.append("stores (other than quota_bytes)")
    if stores != old.stores:
        applied.append("quotas")
    for name in ("buckets", "routing_strategy", "health", "multipart"):
        if getattr(new, name) != getattr(old, name):
            applied.append(name)
    if ops != old.ops:
        applied.append("logging.level")
    config = attrs.evolve(
        new, server=server, metadata=old.metadata, ops=ops, stores=stores,
    )
    return ReloadPlan(config, tuple(applied), tuple(needs_restart))
