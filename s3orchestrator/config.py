"""Configuration: one TOML file -> frozen attrs records, validated, with errors naming the key.

String values may contain ``${VAR}``, replaced from the environment (for secrets).
Paths are kept exactly as written: relative ones are relative to the daemon's working
directory.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

import attrs

from s3orchestrator.routing import PACK, STRATEGIES

GiB = 1024**3
DEFAULT_MAX_OBJECT_SIZE = 5 * GiB
DEFAULT_SERVER_TIMEOUT = 300.0
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
DEFAULT_BACKLOG = 1024  # Twisted's default (50) overflows on a burst of connections
DEFAULT_HEADER_TIMEOUT = 20.0
DEFAULT_MIN_UPLOAD_RATE = 8192
DEFAULT_UPLOAD_RATE_WINDOW = 10.0
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warn", "error")  # twisted.logger LogLevel names
DEFAULT_METADATA_BUSY_TIMEOUT = 2.0
DEFAULT_METADATA_UNAVAILABLE_AFTER = 10.0
DEFAULT_METADATA_POOL_SIZE = 8
DEFAULT_HEALTH_INTERVAL = 15.0
DEFAULT_UNHEALTHY_AFTER = 3
DEFAULT_SLOW_PROBE = 2.0
DEFAULT_MULTIPART_EXPIRE_AFTER = 24 * 3600.0
DEFAULT_MULTIPART_EXPIRY_CHECK_INTERVAL = 3600.0
DEFAULT_MULTIPART_COMPLETED_RETENTION = 600.0
DEFAULT_REAPER_INTERVAL = 60.0
DEFAULT_CLEANUP_INTERVAL = 60.0
DEFAULT_METADATA_LEASE = 30.0
DEFAULT_JOB_LEASE = 30.0
DEFAULT_S3_REGION = "us-east-1"
DEFAULT_S3_TIMEOUT = 60.0
STORE_TYPES = ("directory", "s3")
# Which copy of an object reads try first: config order, healthy and least failing, lowest latency.
READ_ORDERS = ("config", "health", "latency")
DEFAULT_READ_ORDER = "health"
PAYLOAD_SIGNING_MODES = ("unsigned", "streaming")
CAP_MODES = ("hard", "soft")
# What a store takes: new copies and reads (normal), reads only (readonly), reads while
# the mover takes every copy off it (drain).
NORMAL, READONLY, DRAIN = "normal", "readonly", "drain"
STORE_MODES = (NORMAL, READONLY, DRAIN)
DEFAULT_MOVEMENT_INTERVAL = 30.0
DEFAULT_MOVEMENT_CONCURRENCY = 2
DEFAULT_REBALANCE_TOLERANCE = 0.05

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
# The access key id is the first '/'-separated field of the SigV4 credential scope,
# and the Authorization header is split on ',' and '='.
_ACCESS_KEY_ID = re.compile(r"[!-~]+", re.ASCII)
_ACCESS_KEY_ID_FORBIDDEN = frozenset("/,=")
_MISSING: Any = object()


#: ``server.worker_sockets``: a socket per worker bound with SO_REUSEPORT, or one shared socket.
REUSEPORT = "reuseport"
SHARED = "shared"
WORKER_SOCKETS = (REUSEPORT, SHARED)


class ConfigError(Exception):
    """The configuration cannot be used; str() is one line naming the offending key."""


@attrs.frozen
class ServerConfig:
    """The S3 listener."""

    listen: str  # a Twisted server endpoint string
    max_object_size: int = DEFAULT_MAX_OBJECT_SIZE
    timeout: float = DEFAULT_SERVER_TIMEOUT  # seconds a client connection may stay silent
    # Seconds in-flight requests may take to finish once a shutdown starts.
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    backlog: int = DEFAULT_BACKLOG  # listen queue, unless the listen string sets backlog=
    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # seconds to send a request line and headers
    min_upload_rate: int = DEFAULT_MIN_UPLOAD_RATE  # bytes/s a request body must average; 0: any
    # Seconds of each window that rate is judged over (the first window is the client's grace).
    upload_rate_window: float = DEFAULT_UPLOAD_RATE_WINDOW
    workers: int = 1  # processes serving S3 requests; above 1, twistd supervises them
    # With workers: a TCP listening socket per worker (REUSEPORT, Linux) or one they share.
    worker_sockets: str = REUSEPORT
    # This process's name in logs, metrics and the reservations it owns (None: host:pid);
    # unique among the processes sharing a metadata database.
    instance_id: str | None = None


@attrs.frozen
class MetadataConfig:
    """Where object metadata lives: a SQLite file or a PostgreSQL database (exactly one)."""

    sqlite: str | None = None  # path of the SQLite database file
    # Seconds a request may wait for the database another process holds locked (then 503 SlowDown).
    busy_timeout: float = DEFAULT_METADATA_BUSY_TIMEOUT
    url: str | None = None  # postgresql://user:password@host:port/database
    pool_size: int = DEFAULT_METADATA_POOL_SIZE  # PostgreSQL connections of this process
    # Seconds of nothing but busy failures after which the database counts as unavailable (degraded mode).
    unavailable_after: float = DEFAULT_METADATA_UNAVAILABLE_AFTER
    # Seconds an instance stays alive without a heartbeat (renewed every lease / 3); after
    # that its reservations and write intents are a dead instance's, released by the reaper.
    lease: float = DEFAULT_METADATA_LEASE


@attrs.frozen
class HealthConfig:
    """Store health checking."""

    interval: float = DEFAULT_HEALTH_INTERVAL  # seconds between checks
    unhealthy_after: int = DEFAULT_UNHEALTHY_AFTER  # consecutive failures
    slow_probe: float = DEFAULT_SLOW_PROBE  # seconds: a probe that answers slower is logged


@attrs.frozen
class MultipartConfig:
    """Multipart uploads: when abandoned ones are aborted, how long completed ones are remembered."""

    expire_after: float = DEFAULT_MULTIPART_EXPIRE_AFTER  # seconds after initiation
    expiry_check_interval: float = DEFAULT_MULTIPART_EXPIRY_CHECK_INTERVAL  # seconds between checks
    # seconds a completed upload is remembered, so that a retried Complete is answered again
    completed_retention: float = DEFAULT_MULTIPART_COMPLETED_RETENTION


@attrs.frozen
class ManholeConfig:
    """The telnet manhole: a Python shell inside the daemon, for operators."""

    listen: str  # a loopback TCP endpoint or a unix socket (mode 0600)
    password_file: str  # lines of user:hash (see ops.passwords)


@attrs.frozen
class AdminConfig:
    """The JSON admin endpoint the ``s3orchestrator status`` command reads."""

    listen: str  # a loopback TCP endpoint or a unix socket (mode 0600)
    token: str = attrs.field(repr=False)  # sent as "Authorization: Bearer TOKEN"


@attrs.frozen
class OpsConfig:
    """What operators reach the daemon through besides S3: logs, metrics, manhole, admin."""

    log_format: str = "text"  # or "json": one JSON object per line
    log_level: str = "info"  # the least severe level logged, one of LOG_LEVELS
    # Where /metrics and /health are also served (they always are on the S3 listener).
    metrics_listen: str | None = None
    manhole: ManholeConfig | None = None
    admin: AdminConfig | None = None


DEFAULT_REPLICATION_INTERVAL = 60.0
DEFAULT_REPLICATION_CONCURRENCY = 2


@attrs.frozen
class PlacementPolicy:
    """How the copies of a new object are placed: ``replicas`` copies on distinct stores,
    the client answered once ``write_quorum`` are durable; reads try copies in ``read_order``."""

    replicas: int = 1
    write_quorum: int = 1
    read_order: str = DEFAULT_READ_ORDER
    # The replicator (daemon-wide; a bucket's placement carries [placement]'s):
    # seconds between runs, bytes copied per second (0 = unlimited), copies made at once.
    replication_interval: float = DEFAULT_REPLICATION_INTERVAL
    replication_bytes_per_second: int = 0
    replication_concurrency: int = DEFAULT_REPLICATION_CONCURRENCY


@attrs.frozen
class PlacementJobsConfig:
    """The crash-safety and deletion jobs of [placement] (seconds): how often the reaper
    resolves dead instances' intents and reservations and the cleanup job empties the
    cleanup queue."""

    reaper_interval: float = DEFAULT_REAPER_INTERVAL
    cleanup_interval: float = DEFAULT_CLEANUP_INTERVAL


@attrs.frozen
class MovementConfig:
    """[movement]: moving copies between stores. The mover: seconds between its runs,
    copies moved at once, bytes moved per second (0 = unlimited). ``rebalance_tolerance``:
    how far (a fraction of its quota) a store's fill may be from the stores' mean before
    ``spread`` rebalancing moves copies; ``rebalance_interval``: seconds between the
    periodic rebalances (0: only ``s3orchestrator rebalance`` plans one)."""

    interval: float = DEFAULT_MOVEMENT_INTERVAL
    max_concurrent: int = DEFAULT_MOVEMENT_CONCURRENCY
    max_bytes_per_second: int = 0
    rebalance_tolerance: float = DEFAULT_REBALANCE_TOLERANCE
    rebalance_interval: float = 0.0


@attrs.frozen
class JobsConfig:
    """The election of the cluster-wide jobs: ``lease`` seconds that the instance running
    a job holds it for without renewing (it renews every third of that); when it dies,
    another instance takes over within one lease plus the job's interval."""

    lease: float = DEFAULT_JOB_LEASE


DEFAULT_SCRUB_INTERVAL = 24 * 3600.0
DEFAULT_SCRUB_OBJECTS_PER_SECOND = 10.0
DEFAULT_SCRUB_BYTES_PER_SECOND = 10 * 1024**2
DEFAULT_SCRUB_FULL_READ_INTERVAL = 30 * 24 * 3600.0
DEFAULT_SCRUB_MAX_FINDINGS = 100
DEFAULT_SCRUB_MAX_FINDINGS_FRACTION = 0.5


@attrs.frozen
class ScrubConfig:
    """The scrubber (off unless ``enabled``): a pass over every live copy (a stat or HEAD:
    size and ETag) begins ``interval`` seconds after the previous one began, one over the
    copies on directory stores reading every byte (MD5) ``full_read_interval`` seconds
    after the previous one; ``objects_per_second`` copies checked per second at most,
    ``bytes_per_second`` read per second at most by the full reads. A store on which a
    pass finds more than ``max_findings_per_store`` copies wrong (0: no limit), or more
    than ``max_findings_fraction`` of those it checked there (once it found a few; 1: no
    limit), is suspended: no more of its copies are let go (see jobs.scrub)."""

    enabled: bool = False
    interval: float = DEFAULT_SCRUB_INTERVAL
    objects_per_second: float = DEFAULT_SCRUB_OBJECTS_PER_SECOND
    bytes_per_second: int = DEFAULT_SCRUB_BYTES_PER_SECOND
    full_read_interval: float = DEFAULT_SCRUB_FULL_READ_INTERVAL
    max_findings_per_store: int = DEFAULT_SCRUB_MAX_FINDINGS
    max_findings_fraction: float = DEFAULT_SCRUB_MAX_FINDINGS_FRACTION


@attrs.frozen
class CredentialConfig:
    """One access key of a virtual bucket."""

    access_key_id: str
    secret_access_key: str = attrs.field(repr=False)


@attrs.frozen
class BucketConfig:
    """A virtual bucket and the credentials that may use it."""

    name: str
    # (A converter of tuple[X, ...] builds a plain tuple; unlike bare ``tuple``, mypy then knows what it holds.)
    credentials: tuple[CredentialConfig, ...] = attrs.field(converter=tuple[CredentialConfig, ...])
    # None: as [placement]; a bucket that sets replicas but not write_quorum has write_quorum = replicas.
    replicas: int | None = None
    write_quorum: int | None = None


@attrs.frozen
class StoreCaps:
    """A store's monthly usage caps (None: no cap), the day its billing month starts (UTC)
    and what reaching a cap does (``hard``: the store is avoided, reads it alone could
    serve answer 503 SlowDown; ``soft``: it is used last, with a warning)."""

    egress_bytes: int | None = None
    ingress_bytes: int | None = None
    requests: int | None = None
    class_a_requests: int | None = None
    class_b_requests: int | None = None
    billing_day: int = 1
    mode: str = "hard"

    def any(self) -> bool:
        """Whether any cap is set."""
        return any(value is not None for value in (
            self.egress_bytes, self.ingress_bytes, self.requests, self.class_a_requests, self.class_b_requests,
        ))


@attrs.frozen
class DirectoryStoreConfig:
    """A store keeping objects as files under a local directory."""

    name: str
    quota_bytes: int  # 0 = unlimited
    path: str
    zone: str | None = None  # stores of one zone fail together; None: a zone of its own
    caps: StoreCaps = StoreCaps()
    mode: str = NORMAL  # one of STORE_MODES: readonly and drain stores get no new copies


@attrs.frozen(kw_only=True)
class S3StoreConfig:
    """A store keeping objects in a bucket of an upstream S3 service (keyword-only)."""

    name: str
    quota_bytes: int  # 0 = unlimited
    endpoint: str  # http:// or https:// base URL
    region: str = DEFAULT_S3_REGION
    bucket: str
    access_key_id: str
    secret_access_key: str = attrs.field(repr=False)
    path_style: bool = True
    payload_signing: str = "unsigned"
    send_checksums: bool = False
    timeout: float = DEFAULT_S3_TIMEOUT  # seconds
    ca_file: str | None = None
    zone: str | None = None  # stores of one zone fail together; None: a zone of its own
    caps: StoreCaps = StoreCaps()
    mode: str = NORMAL  # one of STORE_MODES: readonly and drain stores get no new copies


StoreConfig = DirectoryStoreConfig | S3StoreConfig


def _index_credentials(config: Config) -> Mapping[str, tuple[str, str]]:
    return MappingProxyType(
        {
            credential.access_key_id: (bucket.name, credential.secret_access_key)
            for bucket in config.buckets
            for credential in bucket.credentials
        }
    )


@attrs.frozen
class Config:
    """The whole daemon configuration."""

    routing_strategy: str
    server: ServerConfig
    metadata: MetadataConfig
    health: HealthConfig
    buckets: tuple[BucketConfig, ...] = attrs.field(converter=tuple[BucketConfig, ...])
    stores: tuple[StoreConfig, ...] = attrs.field(converter=tuple[StoreConfig, ...])
    multipart: MultipartConfig = attrs.field(factory=MultipartConfig, kw_only=True)
    ops: OpsConfig = attrs.field(factory=OpsConfig, kw_only=True)
    _credentials: Mapping[str, tuple[str, str]] = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(_index_credentials, takes_self=True),
    )
    placement: PlacementPolicy = attrs.field(factory=PlacementPolicy, kw_only=True)
    placement_jobs: PlacementJobsConfig = attrs.field(factory=PlacementJobsConfig, kw_only=True)
    jobs: JobsConfig = attrs.field(factory=JobsConfig, kw_only=True)
    movement: MovementConfig = attrs.field(factory=MovementConfig, kw_only=True)
    # Read at every write (placement leaves readonly and drain stores out): made once.
    _modes: Mapping[str, str] = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(lambda config: MappingProxyType({store.name: store.mode for store in config.stores}),
                              takes_self=True),
    )
    scrub: ScrubConfig = attrs.field(factory=ScrubConfig, kw_only=True)
    # Read for every store call (traffic counting): made once.
    _caps: Mapping[str, StoreCaps] = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(lambda config: MappingProxyType({store.name: store.caps for store in config.stores}),
                              takes_self=True),
    )

    def find_credential(self, access_key_id: str) -> tuple[str, str] | None:
        """(bucket name, secret access key) for an access key id, or None if unknown."""
        return self._credentials.get(access_key_id)

    def has_bucket(self, name: str) -> bool:
        """Whether a bucket called ``name`` is configured."""
        return any(bucket.name == name for bucket in self.buckets)

    def placement_for(self, bucket: str) -> PlacementPolicy:
        """The placement of new objects in ``bucket``: [placement] with the bucket's
        overrides (a bucket that is not configured gets [placement] as it is)."""
        for configured in self.buckets:
            if configured.name == bucket:
                return bucket_placement(self.placement, configured)
        return self.placement

    def store_zones(self) -> Mapping[str, str]:
        """The zone of every store that has one, by store name (``routing.choose_stores``)."""
        return MappingProxyType({store.name: store.zone for store in self.stores if store.zone is not None})

    def store_modes(self) -> Mapping[str, str]:
        """Every store's mode (``STORE_MODES``), by store name (the same mapping at every call)."""
        return self._modes

    def store_caps(self) -> Mapping[str, StoreCaps]:
        """Every store's monthly caps, by store name (the same mapping at every call)."""
        return self._caps


def bucket_placement(placement: PlacementPolicy, bucket: BucketConfig) -> PlacementPolicy:
    """``placement`` with ``bucket``'s overrides applied."""
    if bucket.replicas is None:
        replicas, write_quorum = placement.replicas, placement.write_quorum
    else:
        replicas, write_quorum = bucket.replicas, bucket.replicas
    if bucket.write_quorum is not None:
        write_quorum = bucket.write_quorum
    return attrs.evolve(placement, replicas=replicas, write_quorum=write_quorum)


def check_placement(config: Config) -> None:
    """Raise ConfigError unless every bucket's placement fits the configured stores:
    ``write_quorum`` <= ``replicas`` <= number of stores."""
    stores = len(config.stores)
    placement = config.placement
    if placement.replicas > stores:
        raise ConfigError(
            f"placement.replicas: must be at most the number of stores ({stores}) (got {placement.replicas})"
        )
    if placement.write_quorum > placement.replicas:
        raise ConfigError(
            f"placement.write_quorum: must be at most placement.replicas ({placement.replicas})"
            f" (got {placement.write_quorum})"
        )
    for i, bucket in enumerate(config.buckets):
        policy = bucket_placement(placement, bucket)
        if bucket.replicas is not None and policy.replicas > stores:
            raise ConfigError(
                f"buckets[{i}].replicas: must be at most the number of stores ({stores}) (got {policy.replicas})"
            )
        if policy.write_quorum > policy.replicas:
            source = f"buckets[{i}].replicas" if bucket.replicas is not None else "placement.replicas"
            raise ConfigError(
                f"buckets[{i}].write_quorum: must be at most {source} ({policy.replicas})"
                f" (got {policy.write_quorum})"
            )


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the TOML configuration file at ``path``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read configuration file: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        # The message already says "(at line N, column M)".
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse_config(data, environ)


def parse_config(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Validate parsed TOML data and build the Config; ``environ`` defaults to os.environ."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    _check_keys(data, "", (
        "routing_strategy", "server", "metadata", "health", "multipart", "logging", "metrics", "manhole", "admin",
        "buckets", "stores", "placement", "jobs", "movement", "scrub",
    ))
    routing_strategy = _choice(data, "", "routing_strategy", env, sorted(STRATEGIES), default=PACK)
    placement = _parse_placement(_table(data, "", "placement", required=False), env)
    placement_jobs = _parse_placement_jobs(_table(data, "", "placement", required=False))
    server = _parse_server(_table(data, "", "server", required=True), env)
    metadata = _parse_metadata(_table(data, "", "metadata", required=True), env)
    health = _parse_health(_table(data, "", "health", required=False))
    multipart = _parse_multipart(_table(data, "", "multipart", required=False))
    jobs = _parse_jobs(_table(data, "", "jobs", required=False))
    movement = _parse_movement(_table(data, "", "movement", required=False))
    scrub = _parse_scrub(_table(data, "", "scrub", required=False))
    ops = _parse_ops(data, env)
    buckets = _parse_buckets(data, env)
    stores = _parse_stores(data, env)
    config = Config(
        routing_strategy=routing_strategy,
        server=server,
        metadata=metadata,
        health=health,
        buckets=buckets,
        stores=stores,
        multipart=multipart,
        ops=ops,
        placement=placement,
        placement_jobs=placement_jobs,
        jobs=jobs,
        movement=movement,
        scrub=scrub,
    )
    check_placement(config)
    return config


def _parse_placement(table: Mapping[str, Any], env: Mapping[str, str]) -> PlacementPolicy:
    _check_keys(table, "placement", (
        "replicas", "write_quorum", "read_order", "reaper_interval", "cleanup_interval",
        "replication_interval", "replication_bytes_per_second", "replication_concurrency",
    ))
    replicas = _integer(table, "placement", "replicas", minimum=1, default=1)
    return PlacementPolicy(
        replicas=replicas,
        write_quorum=_integer(table, "placement", "write_quorum", minimum=1, default=replicas),
        read_order=_choice(table, "placement", "read_order", env, READ_ORDERS, default=DEFAULT_READ_ORDER),
        replication_interval=_seconds(table, "placement", "replication_interval",
                                      default=DEFAULT_REPLICATION_INTERVAL),
        replication_bytes_per_second=_integer(table, "placement", "replication_bytes_per_second", minimum=0,
                                              default=0),
        replication_concurrency=_integer(table, "placement", "replication_concurrency", minimum=1,
                                         default=DEFAULT_REPLICATION_CONCURRENCY),
    )


def _parse_movement(table: Mapping[str, Any]) -> MovementConfig:
    _check_keys(table, "movement", (
        "interval", "max_concurrent", "max_bytes_per_second", "rebalance_tolerance", "rebalance_interval",
    ))
    tolerance = table.get("rebalance_tolerance", DEFAULT_REBALANCE_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ConfigError(f"movement.rebalance_tolerance: must be a fraction from 0 to below 1 (got {tolerance!r})")
    interval = table.get("rebalance_interval", 0.0)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval) \
            or interval < 0:
        raise ConfigError(
            f"movement.rebalance_interval: must be a number of seconds, 0 for none (got {interval!r})"
        )
    return MovementConfig(
        interval=_seconds(table, "movement", "interval", default=DEFAULT_MOVEMENT_INTERVAL),
        max_concurrent=_integer(table, "movement", "max_concurrent", minimum=1,
                                default=DEFAULT_MOVEMENT_CONCURRENCY),
        max_bytes_per_second=_integer(table, "movement", "max_bytes_per_second", minimum=0, default=0),
        rebalance_tolerance=float(tolerance),
        rebalance_interval=float(interval),
    )


def _parse_placement_jobs(table: Mapping[str, Any]) -> PlacementJobsConfig:
    return PlacementJobsConfig(
        reaper_interval=_seconds(table, "placement", "reaper_interval", default=DEFAULT_REAPER_INTERVAL),
        cleanup_interval=_seconds(table, "placement", "cleanup_interval", default=DEFAULT_CLEANUP_INTERVAL),
    )


def _parse_server(table: Mapping[str, Any], env: Mapping[str, str]) -> ServerConfig:
    _check_keys(table, "server", (
        "listen", "max_object_size", "timeout", "shutdown_timeout", "backlog", "header_timeout", "min_upload_rate",
        "upload_rate_window", "workers", "worker_sockets",
        "instance_id",
    ))
    return ServerConfig(
        listen=_string(table, "server", "listen", env),
        max_object_size=_integer(
            table, "server", "max_object_size", minimum=1, default=DEFAULT_MAX_OBJECT_SIZE
        ),
        timeout=_seconds(table, "server", "timeout", default=DEFAULT_SERVER_TIMEOUT),
        shutdown_timeout=_seconds(table, "server", "shutdown_timeout", default=DEFAULT_SHUTDOWN_TIMEOUT),
        backlog=_integer(table, "server", "backlog", minimum=1, default=DEFAULT_BACKLOG),
        header_timeout=_seconds(table, "server", "header_timeout", default=DEFAULT_HEADER_TIMEOUT),
        min_upload_rate=_integer(table, "server", "min_upload_rate", minimum=0, default=DEFAULT_MIN_UPLOAD_RATE),
        upload_rate_window=_seconds(table, "server", "upload_rate_window", default=DEFAULT_UPLOAD_RATE_WINDOW),
        workers=_integer(table, "server", "workers", minimum=1, default=1),
        worker_sockets=_choice(table, "server", "worker_sockets", env, WORKER_SOCKETS, default=REUSEPORT),
        instance_id=_instance_id(table, env),
    )


def _instance_id(table: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    value = _string(table, "server", "instance_id", env, default=None)
    if value is not None and (len(value) > 200 or not value.isprintable() or value != value.strip()):
        raise ConfigError(
            f"server.instance_id: must be printable, at most 200 characters, without surrounding"
            f" spaces (got {value!r})"
        )
    return value


def _parse_metadata(table: Mapping[str, Any], env: Mapping[str, str]) -> MetadataConfig:
    _check_keys(table, "metadata", ("sqlite", "url", "busy_timeout", "pool_size", "unavailable_after", "lease"))
    if ("sqlite" in table) == ("url" in table):
        raise ConfigError(
            "metadata.url: give either url (PostgreSQL) or sqlite (a file path), not both"
            if "url" in table
            else "metadata.sqlite: required key is missing (or metadata.url for PostgreSQL)"
        )
    url = _string(table, "metadata", "url", env, default=None, secret=True)
    if url is not None and urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ConfigError("metadata.url: must be a postgresql://user:password@host:port/database URL")
    busy_timeout = _seconds(table, "metadata", "busy_timeout", default=DEFAULT_METADATA_BUSY_TIMEOUT)
    lease = _seconds(table, "metadata", "lease", default=DEFAULT_METADATA_LEASE)
    if lease <= busy_timeout:
        # A heartbeat may wait busy_timeout for the database: it must still land in time.
        raise ConfigError(
            f"metadata.lease: must be longer than metadata.busy_timeout ({busy_timeout:g} s) (got {lease:g})"
        )
    return MetadataConfig(
        sqlite=_string(table, "metadata", "sqlite", env, default=None),
        url=url,
        lease=lease,
        busy_timeout=busy_timeout,
        pool_size=_integer(table, "metadata", "pool_size", minimum=1, default=DEFAULT_METADATA_POOL_SIZE),
        unavailable_after=_seconds(
            table, "metadata", "unavailable_after", default=DEFAULT_METADATA_UNAVAILABLE_AFTER
        ),
    )


def _parse_health(table: Mapping[str, Any]) -> HealthConfig:
    _check_keys(table, "health", ("interval", "unhealthy_after", "slow_probe"))
    return HealthConfig(
        interval=_seconds(table, "health", "interval", default=DEFAULT_HEALTH_INTERVAL),
        unhealthy_after=_integer(
            table, "health", "unhealthy_after", minimum=1, default=DEFAULT_UNHEALTHY_AFTER
        ),
        slow_probe=_seconds(table, "health", "slow_probe", default=DEFAULT_SLOW_PROBE),
    )


def _parse_multipart(table: Mapping[str, Any]) -> MultipartConfig:
    _check_keys(table, "multipart", ("expire_after", "expiry_check_interval", "completed_retention"))
    return MultipartConfig(
        expire_after=_seconds(table, "multipart", "expire_after", default=DEFAULT_MULTIPART_EXPIRE_AFTER),
        expiry_check_interval=_seconds(
            table, "multipart", "expiry_check_interval", default=DEFAULT_MULTIPART_EXPIRY_CHECK_INTERVAL
        ),
        completed_retention=_seconds(
            table, "multipart", "completed_retention", default=DEFAULT_MULTIPART_COMPLETED_RETENTION
        ),
    )


def _parse_jobs(table: Mapping[str, Any]) -> JobsConfig:
    _check_keys(table, "jobs", ("lease",))
    return JobsConfig(lease=_seconds(table, "jobs", "lease", default=DEFAULT_JOB_LEASE))


def _parse_scrub(table: Mapping[str, Any]) -> ScrubConfig:
    _check_keys(table, "scrub", ("enabled", "interval", "objects_per_second", "bytes_per_second",
                                 "full_read_interval", "max_findings_per_store", "max_findings_fraction"))
    rate = table.get("objects_per_second", DEFAULT_SCRUB_OBJECTS_PER_SECOND)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"{_name('scrub', 'objects_per_second')}: must be a positive number (got {rate!r})")
    fraction = table.get("max_findings_fraction", DEFAULT_SCRUB_MAX_FINDINGS_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"{_name('scrub', 'max_findings_fraction')}: must be a number above 0, at most 1"
                          f" (got {fraction!r})")
    return ScrubConfig(
        enabled=_boolean(table, "scrub", "enabled", default=False),
        interval=_seconds(table, "scrub", "interval", default=DEFAULT_SCRUB_INTERVAL),
        objects_per_second=float(rate),
        bytes_per_second=_integer(table, "scrub", "bytes_per_second", minimum=1,
                                  default=DEFAULT_SCRUB_BYTES_PER_SECOND),
        full_read_interval=_seconds(table, "scrub", "full_read_interval", default=DEFAULT_SCRUB_FULL_READ_INTERVAL),
        max_findings_per_store=_integer(table, "scrub", "max_findings_per_store", minimum=0,
                                        default=DEFAULT_SCRUB_MAX_FINDINGS),
        max_findings_fraction=float(fraction),
    )


def _parse_ops(data: Mapping[str, Any], env: Mapping[str, str]) -> OpsConfig:
    logging = _table(data, "", "logging", required=False)
    _check_keys(logging, "logging", ("format", "level"))
    metrics = _table(data, "", "metrics", required=False)
    _check_keys(metrics, "metrics", ("listen",))
    manhole = None
    if "manhole" in data:
        table = _table(data, "", "manhole", required=True)
        _check_keys(table, "manhole", ("listen", "password_file"))
        manhole = ManholeConfig(
            listen=_local_endpoint(table, "manhole", env),
            password_file=_string(table, "manhole", "password_file", env),
        )
    admin = None
    if "admin" in data:
        table = _table(data, "", "admin", required=True)
        _check_keys(table, "admin", ("listen", "token"))
        admin = AdminConfig(
            listen=_local_endpoint(table, "admin", env),
            token=_string(table, "admin", "token", env, secret=True),
        )
    return OpsConfig(
        log_format=_choice(logging, "logging", "format", env, LOG_FORMATS, default="text"),
        log_level=_choice(logging, "logging", "level", env, LOG_LEVELS, default="info"),
        metrics_listen=_string(metrics, "metrics", "listen", env, default=None),
        manhole=manhole,
        admin=admin,
    )


_LOOPBACK_INTERFACES = ("127.0.0.1", "::1", "localhost")


def _local_endpoint(table: Mapping[str, Any], path: str, env: Mapping[str, str]) -> str:
    """``listen``: a TCP endpoint bound to a loopback interface, or a unix socket that
    is made with mode 0600 (``:mode=600`` is added when absent; any other mode is refused)."""
    name = _name(path, "listen")
    value = _string(table, path, "listen", env)
    kind, _, rest = value.partition(":")
    # Endpoint strings escape ':' as '\:' (an IPv6 interface); options follow the port.
    fields = [field.replace("\\:", ":") for field in re.split(r"(?<!\\):", rest)]
    options = dict(field.partition("=")[::2] for field in fields[1:] if "=" in field)
    if kind in ("tcp", "tcp6"):
        if options.get("interface") not in _LOOPBACK_INTERFACES:
            raise ConfigError(
                f"{name}: must listen on loopback only: add interface=127.0.0.1 or interface=\\:\\:1"
                f" (got {value!r})"
            )
        return value
    if kind == "unix":
        mode = options.get("mode")
        if mode is None:
            return value + ":mode=600"
        if mode.lstrip("0o") != "600":
            raise ConfigError(f"{name}: a unix socket must have mode 600, readable by its owner only (got {value!r})")
        return value
    raise ConfigError(f"{name}: must be a loopback tcp: endpoint or a unix: socket (got {value!r})")


def _parse_buckets(data: Mapping[str, Any], env: Mapping[str, str]) -> tuple[BucketConfig, ...]:
    tables = _tables(data, "", "buckets")
    if not tables:
        raise ConfigError("buckets: at least one bucket is required ([[buckets]])")
    buckets = []
    bucket_paths: dict[str, str] = {}
    key_paths: dict[str, str] = {}
    for i, table in enumerate(tables):
        path = f"buckets[{i}]"
        _check_keys(table, path, ("name", "credentials", "replicas", "write_quorum"))
        name = _string(table, path, "name", env)
        if not _BUCKET_NAME.fullmatch(name):
            raise ConfigError(
                f"{path}.name: invalid bucket name {name!r} (3-63 characters: lowercase"
                " letters, digits, '-' and '.', starting and ending with a letter or digit)"
            )
        if name in bucket_paths:
            raise ConfigError(
                f"{path}.name: duplicate bucket name {name!r}"
                f" (already used by {bucket_paths[name]})"
            )
        bucket_paths[name] = path
        credential_tables = _tables(table, path, "credentials")
        if not credential_tables:
            raise ConfigError(
                f"{path}.credentials: at least one credential is required ([[buckets.credentials]])"
            )
        credentials = []
        for j, credential_table in enumerate(credential_tables):
            credential_path = f"{path}.credentials[{j}]"
            credential = _parse_credential(credential_table, credential_path, env)
            if credential.access_key_id in key_paths:
                raise ConfigError(
                    f"{credential_path}.access_key_id: duplicate access key id"
                    f" {credential.access_key_id!r}"
                    f" (already used by {key_paths[credential.access_key_id]})"
                )
            key_paths[credential.access_key_id] = credential_path
            credentials.append(credential)
        buckets.append(BucketConfig(
            name=name,
            credentials=tuple(credentials),
            replicas=_integer(table, path, "replicas", minimum=1, default=None),
            write_quorum=_integer(table, path, "write_quorum", minimum=1, default=None),
        ))
    return tuple(buckets)


def _parse_credential(
    table: Mapping[str, Any], path: str, env: Mapping[str, str]
) -> CredentialConfig:
    _check_keys(table, path, ("access_key_id", "secret_access_key"))
    return CredentialConfig(
        access_key_id=_access_key_id(table, path, env),
        secret_access_key=_string(table, path, "secret_access_key", env, secret=True),
    )


def _access_key_id(table: Mapping[str, Any], path: str, env: Mapping[str, str]) -> str:
    value = _string(table, path, "access_key_id", env)
    if not _ACCESS_KEY_ID.fullmatch(value) or _ACCESS_KEY_ID_FORBIDDEN & set(value):
        raise ConfigError(
            f"{path}.access_key_id: must be printable ASCII without spaces, '/', ',' or '='"
            f" (got {value!r})"
        )
    return value


_CAP_KEYS = (
    "monthly_egress_bytes",
    "monthly_ingress_bytes",
    "monthly_requests",
    "monthly_class_a_requests",
    "monthly_class_b_requests",
)
_COMMON_STORE_KEYS = ("name", "type", "quota_bytes", "zone", *_CAP_KEYS, "billing_day", "cap_mode", "mode")
_DIRECTORY_STORE_KEYS = _COMMON_STORE_KEYS + ("path",)
_S3_STORE_KEYS = _COMMON_STORE_KEYS + (
    "endpoint",
    "region",
    "bucket",
    "access_key_id",
    "secret_access_key",
    "path_style",
    "payload_signing",
    "send_checksums",
    "timeout",
    "ca_file",
)


def _parse_stores(data: Mapping[str, Any], env: Mapping[str, str]) -> tuple[StoreConfig, ...]:
    tables = _tables(data, "", "stores")
    if not tables:
        raise ConfigError("stores: at least one store is required ([[stores]])")
    stores: list[StoreConfig] = []
    store_paths: dict[str, str] = {}
    for i, table in enumerate(tables):
        path = f"stores[{i}]"
        store_type = _choice(table, path, "type", env, STORE_TYPES)
        allowed = _DIRECTORY_STORE_KEYS if store_type == "directory" else _S3_STORE_KEYS
        _check_keys(table, path, allowed)
        name = _string(table, path, "name", env)
        if name in store_paths:
            raise ConfigError(
                f"{path}.name: duplicate store name {name!r} (already used by {store_paths[name]})"
            )
        store_paths[name] = path
        if "quota_bytes" not in table:
            raise ConfigError(f"{path}.quota_bytes: required key is missing (0 means unlimited)")
        quota_bytes = _integer(table, path, "quota_bytes", minimum=0)
        zone = _string(table, path, "zone", env, default=None)
        if store_type == "directory":
            store: StoreConfig = DirectoryStoreConfig(
                name=name, quota_bytes=quota_bytes, path=_string(table, path, "path", env), zone=zone
            )
        else:
            store = _parse_s3_store(table, path, env, name, quota_bytes, zone)
        mode = _choice(table, path, "mode", env, STORE_MODES, default=NORMAL)
        stores.append(attrs.evolve(store, caps=_parse_caps(table, path, env), mode=mode))
    return tuple(stores)


def _parse_caps(table: Mapping[str, Any], path: str, env: Mapping[str, str]) -> StoreCaps:
    """A store's ``monthly_*`` caps (positive integers; absent: no cap), ``billing_day``
    (1..28, so that every month has it) and ``cap_mode``."""
    egress, ingress, requests, class_a, class_b = (
        _integer(table, path, key, minimum=1, default=None) for key in _CAP_KEYS
    )
    billing_day = _integer(table, path, "billing_day", minimum=1, default=1)
    if billing_day > 28:
        raise ConfigError(
            f"{_name(path, 'billing_day')}: must be a day of the month from 1 to 28 (got {billing_day!r})"
        )
    return StoreCaps(
        egress_bytes=egress, ingress_bytes=ingress, requests=requests, class_a_requests=class_a,
        class_b_requests=class_b, billing_day=billing_day,
        mode=_choice(table, path, "cap_mode", env, CAP_MODES, default="hard"),
    )


def _parse_s3_store(
    table: Mapping[str, Any], path: str, env: Mapping[str, str], name: str, quota_bytes: int, zone: str | None
) -> S3StoreConfig:
    endpoint = _string(table, path, "endpoint", env)
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{path}.endpoint: must be an http:// or https:// URL (got {endpoint!r})")
    return S3StoreConfig(
        name=name,
        quota_bytes=quota_bytes,
        endpoint=endpoint,
        region=_string(table, path, "region", env, default=DEFAULT_S3_REGION),
        bucket=_string(table, path, "bucket", env),
        access_key_id=_string(table, path, "access_key_id", env),
        secret_access_key=_string(table, path, "secret_access_key", env, secret=True),
        path_style=_boolean(table, path, "path_style", default=True),
        payload_signing=_choice(
            table, path, "payload_signing", env, PAYLOAD_SIGNING_MODES, default="unsigned"
        ),
        send_checksums=_boolean(table, path, "send_checksums", default=False),
        timeout=_seconds(table, path, "timeout", default=DEFAULT_S3_TIMEOUT),
        ca_file=_string(table, path, "ca_file", env, default=None),
        zone=zone,
    )


# -- value readers: each names the full key path in its error ------------------------------


def _name(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_keys(table: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if not unknown:
        return
    allowed_text = ", ".join(allowed)
    if len(unknown) == 1:
        raise ConfigError(f"{_name(path, unknown[0])}: unknown key (allowed here: {allowed_text})")
    raise ConfigError(
        f"{path or 'top level'}: unknown keys {', '.join(unknown)} (allowed here: {allowed_text})"
    )


def _missing(path: str, key: str) -> ConfigError:
    return ConfigError(f"{_name(path, key)}: required key is missing")


def _table(parent: Mapping[str, Any], path: str, key: str, *, required: bool) -> Mapping[str, Any]:
    name = _name(path, key)
    if key not in parent:
        if required:
            raise ConfigError(f"{name}: required table is missing ([{name}])")
        return {}
    value = parent[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a table (got {value!r})")
    return value


def _tables(parent: Mapping[str, Any], path: str, key: str) -> list[Mapping[str, Any]]:
    """An array of tables, empty when absent."""
    name = _name(path, key)
    value = parent.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{name}: must be an array of tables (got {value!r})")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConfigError(f"{name}[{i}]: must be a table (got {item!r})")
    return value


def _expand(value: str, name: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        variable = match.group(1)
        try:
            return env[variable]
        except KeyError:
            raise ConfigError(f"{name}: environment variable {variable} is not set") from None

    return _ENV_REFERENCE.sub(substitute, value)


def _string(
    table: Mapping[str, Any],
    path: str,
    key: str,
    env: Mapping[str, str],
    *,
    default: Any = _MISSING,
    secret: bool = False,
) -> Any:
    """A non-empty string with ${VAR} expanded; never echoes a secret in its errors."""
    name = _name(path, key)
    if key not in table:
        if default is _MISSING:
            raise _missing(path, key)
        return default
    value = table[key]
    if not isinstance(value, str):
        got = "" if secret else f" (got {value!r})"
        raise ConfigError(f"{name}: must be a non-empty string{got}")
    value = _expand(value, name, env)
    if not value.strip():
        got = "" if secret else f" (got {value!r})"
        raise ConfigError(f"{name}: must be a non-empty string{got}")
    return value


def _choice(
    table: Mapping[str, Any],
    path: str,
    key: str,
    env: Mapping[str, str],
    choices: tuple[str, ...] | list[str],
    *,
    default: Any = _MISSING,
) -> str:
    options = ", ".join(f'"{choice}"' for choice in choices)
    if key not in table and default is _MISSING:
        raise ConfigError(f"{_name(path, key)}: required key is missing (one of {options})")
    value = table.get(key, default)
    if isinstance(value, str):
        value = _expand(value, _name(path, key), env)
    if value not in choices:
        raise ConfigError(f"{_name(path, key)}: must be one of {options} (got {value!r})")
    return value


def _integer(
    table: Mapping[str, Any], path: str, key: str, *, minimum: int, default: Any = _MISSING
) -> int:
    if key not in table:
        if default is _MISSING:
            raise _missing(path, key)
        return default
    value = table[key]
    # bool is an int subclass: "quota_bytes = true" must not mean 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        if minimum == 0:
            wanted = "a non-negative integer"
        elif minimum == 1:
            wanted = "a positive integer"
        else:
            wanted = f"an integer >= {minimum}"
        raise ConfigError(f"{_name(path, key)}: must be {wanted} (got {value!r})")
    return value


def _seconds(table: Mapping[str, Any], path: str, key: str, *, default: float) -> float:
    value = table.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(
            f"{_name(path, key)}: must be a positive number of seconds (got {value!r})"
        )
    return float(value)


def _boolean(table: Mapping[str, Any], path: str, key: str, *, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{_name(path, key)}: must be true or false (got {value!r})")
    return value
