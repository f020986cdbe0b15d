"""What a reloaded configuration changes in a running daemon, and what needs a restart.

Applied at once: bucket credentials (added, removed, rotated keys), the routing
strategy, store quotas, zones, modes (``mode``) and monthly caps (``monthly_*``,
``billing_day``, ``cap_mode``), ``[movement]`` (from the mover's next run),
``[placement]`` and the buckets' ``replicas`` and
``write_quorum`` (writes that start from then on; the replicator's settings from its
next run, ``replication_interval`` restarting its timer), ``server.max_object_size``,
``server.timeout`` (new connections), ``server.shutdown_timeout``,
``server.header_timeout`` and ``server.min_upload_rate`` (requests whose head or body
starts from then on), health and multipart settings (expiry, completed_retention),
the reaper and cleanup intervals of ``[placement]``, ``[scrub]`` (from the scrubber's next copy),
``logging.level``. Kept until a restart: the listen addresses and ``server.backlog``
(the listening socket), ``server.workers``, ``server.instance_id``, the metadata
settings (database, busy_timeout, pool_size, unavailable_after, lease), ``jobs.lease``,
the other operators' settings
(logging.format, metrics, manhole, admin), any store added, removed or changed other
than in its quota, zone, mode or caps, and replicas above the number of running stores (the whole
running placement stays until a restart brings the stores that allow them).
"""

from __future__ import annotations

import attrs

from s3orchestrator.config import (
    NORMAL,
    BucketConfig,
    Config,
    ConfigError,
    ServerConfig,
    StoreCaps,
    StoreConfig,
    check_placement,
)


@attrs.frozen
class ReloadPlan:
    """The configuration to run with from now on, and what differs from the old one."""

    config: Config
    applied: tuple[str, ...]  # settings that changed and take effect now
    needs_restart: tuple[str, ...]  # settings that changed but keep their running value


def _without_live_settings(store: StoreConfig) -> StoreConfig:
    # Routing reads quotas, zones, modes and caps at each write; the rest of a store is built at start.
    return attrs.evolve(store, quota_bytes=0, zone=None, caps=StoreCaps(), mode=NORMAL)


def _stores(old: tuple[StoreConfig, ...], new: tuple[StoreConfig, ...]) -> tuple[tuple[StoreConfig, ...], bool]:
    """The running stores with the new quotas, zones, modes and caps of those otherwise unchanged, and
    whether any other store change (added, removed, changed, reordered) waits for a restart."""
    by_name = {store.name: store for store in new}
    kept = []
    for store in old:
        replacement = by_name.get(store.name)
        if replacement is not None and _without_live_settings(replacement) == _without_live_settings(store):
            kept.append(attrs.evolve(store, quota_bytes=replacement.quota_bytes, zone=replacement.zone,
                                     caps=replacement.caps, mode=replacement.mode))
        else:
            kept.append(store)
    others_changed = [store.name for store in old] != [store.name for store in new] or any(
        _without_live_settings(by_name[store.name]) != _without_live_settings(store)
        for store in old
        if store.name in by_name
    )
    return tuple(kept), others_changed


def _with_replicas_of(buckets: tuple[BucketConfig, ...], old: Config) -> tuple[BucketConfig, ...]:
    """``buckets`` with the replicas and write_quorum they run with in ``old`` (none for new ones)."""
    running = {bucket.name: bucket for bucket in old.buckets}
    kept = []
    for bucket in buckets:
        previous = running.get(bucket.name)
        kept.append(attrs.evolve(
            bucket,
            replicas=previous.replicas if previous is not None else None,
            write_quorum=previous.write_quorum if previous is not None else None,
        ))
    return tuple(kept)


def reload_plan(old: Config, new: Config) -> ReloadPlan:
    """Merge ``new`` into the running ``old`` configuration: what can change live does."""
    needs_restart = []
    applied = []
    if new.server.listen != old.server.listen:
        needs_restart.append("server.listen")
    if new.server.backlog != old.server.backlog:
        needs_restart.append("server.backlog")
    if new.server.workers != old.server.workers:
        needs_restart.append("server.workers")
    if new.server.worker_sockets != old.server.worker_sockets:
        needs_restart.append("server.worker_sockets")
    if new.server.instance_id != old.server.instance_id:
        needs_restart.append("server.instance_id")
    server = ServerConfig(
        listen=old.server.listen,
        max_object_size=new.server.max_object_size,
        timeout=new.server.timeout,
        shutdown_timeout=new.server.shutdown_timeout,
        backlog=old.server.backlog,
        header_timeout=new.server.header_timeout,
        min_upload_rate=new.server.min_upload_rate,
        upload_rate_window=new.server.upload_rate_window,
        workers=old.server.workers,
        worker_sockets=old.server.worker_sockets,
        instance_id=old.server.instance_id,
    )
    if server != old.server:
        applied.append("server")
    if new.metadata != old.metadata:
        needs_restart.append("metadata")
    if new.jobs != old.jobs:
        needs_restart.append("jobs.lease")
    ops = attrs.evolve(old.ops, log_level=new.ops.log_level)
    if attrs.evolve(new.ops, log_level=old.ops.log_level) != old.ops:
        needs_restart.append("logging.format/metrics/manhole/admin")
    stores, stores_changed = _stores(old.stores, new.stores)
    if stores_changed:
        needs_restart.append("stores (other than quota_bytes, zone, mode and monthly caps)")
    if [store.quota_bytes for store in stores] != [store.quota_bytes for store in old.stores]:
        applied.append("quotas")
    if [store.zone for store in stores] != [store.zone for store in old.stores]:
        applied.append("zones")
    if [store.caps for store in stores] != [store.caps for store in old.stores]:
        applied.append("monthly caps")
    if [store.mode for store in stores] != [store.mode for store in old.stores]:
        applied.append("store modes")
    placement, buckets = new.placement, new.buckets
    try:
        check_placement(attrs.evolve(new, stores=stores))
    except ConfigError:
        # More replicas than the running stores: the stores that would allow them come with a restart.
        needs_restart.append("placement and buckets' replicas (more than the running stores)")
        placement, buckets = old.placement, _with_replicas_of(new.buckets, old)
    if placement != old.placement:
        applied.append("placement")
    if buckets != old.buckets:
        applied.append("buckets")
    for name in ("routing_strategy", "health", "multipart", "placement_jobs", "movement", "scrub"):
        if getattr(new, name) != getattr(old, name):
            applied.append(name)
    if ops != old.ops:
        applied.append("logging.level")
    config = attrs.evolve(
        new, server=server, metadata=old.metadata, jobs=old.jobs, ops=ops, stores=stores, placement=placement,
        buckets=buckets,
    )
    return ReloadPlan(config, tuple(applied), tuple(needs_restart))
