"""The daemon as one MultiService: metadata store, object stores, jobs, the S3
listener and the operators' endpoints."""

from __future__ import annotations

import hashlib
from typing import Mapping

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.logger import Logger

from s3orchestrator.auth.sigv4 import Credential
from s3orchestrator.config import Config, DirectoryStoreConfig, StoreConfig
from s3orchestrator.jobs.health import HealthCheckJob, StoreHealth
from s3orchestrator.jobs.multipart_expiry import MultipartExpiryJob
from s3orchestrator.metadata.store import sqlite_metadata_store
from s3orchestrator.s3.api import S3Api
from s3orchestrator.s3.batch_delete import BatchDelete
from s3orchestrator.s3.buckets import BucketOperations
from s3orchestrator.s3.copy import CopyOperations
from s3orchestrator.s3.listing import ListingOperations
from s3orchestrator.s3.locks import KeyLocks
from s3orchestrator.s3.multipart import MultipartOperations
from s3orchestrator.s3.objects import ObjectOperations
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.s3 import S3Store
from s3orchestrator.ops.endpoints import OpsEndpoint, OpsRouter
from s3orchestrator.stores.interface import IObjectStore
from s3orchestrator.web.handler import S3Handler
from s3orchestrator.web.site import S3Site


def continuation_token_secret(config: Config) -> bytes:
    """The key that authenticates listing continuation tokens.

    Derived from the configured secrets, so tokens survive a restart and work on
    every instance sharing the config, and cannot be forged by clients.
    """
    secrets = sorted(c.secret_access_key for bucket in config.buckets for c in bucket.credentials)
    return hashlib.sha256(b"s3orchestrator continuation tokens\0" + "\0".join(secrets).encode()).digest()


def build_store(config: StoreConfig, reactor) -> IObjectStore:
    """The object store client for one configured store."""
    if isinstance(config, DirectoryStoreConfig):
        return DirectoryStore(config.name, config.path, reactor)
    return S3Store(config, reactor)


class OrchestratorService(MultiService):
    """Owns everything the daemon runs; the S3 listener starts once metadata is ready."""

    _log = Logger()

    def __init__(self, config: Config, reactor) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.metadata = sqlite_metadata_store(config.metadata.sqlite, reactor)
        self.stores: Mapping[str, IObjectStore] = {
            store.name: build_store(store, reactor) for store in config.stores
        }
        self.health = StoreHealth(list(self.stores), config.health.unhealthy_after, now=reactor.seconds)
        locks = KeyLocks()
        self.objects = ObjectOperations(
            metadata=self.metadata,
            stores=self.stores,
            routing_strategy=config.routing_strategy,
            max_object_size=config.server.max_object_size,
            clock=reactor,
            locks=locks,
            health=self.health,
        )
        self.multipart = MultipartOperations(
            self.objects, self.metadata, locks, reactor, expire_after=config.multipart.expire_after
        )
        api = S3Api(
            self.objects,
            BucketOperations(configured_at=reactor.seconds()),
            ListingOperations(self.metadata, token_secret=continuation_token_secret(config)),
            BatchDelete(self.objects),
            CopyOperations(self.objects, reactor),
            self.multipart,
        )
        self.s3_handler = S3Handler(api, self.find_credential, reactor)
        self.site = S3Site(OpsRouter(self.s3_handler, self.ops_endpoints()), timeout=config.server.timeout,
                           reactor=reactor)
        # The background jobs by name (the manhole's run_job), made at start.
        self.jobs: dict[str, HealthCheckJob | MultipartExpiryJob] = {}
        self.ready = False

    def find_credential(self, access_key_id: str) -> Credential | None:
        """The credential (and its bucket) of an access key, from the current config."""
        found = self.config.find_credential(access_key_id)
        if found is None:
            return None
        bucket, secret = found
        return Credential(access_key_id=access_key_id, secret_access_key=secret, bucket=bucket)

    def startService(self) -> None:
        super().startService()
        ensureDeferred(self._start()).addErrback(self._start_failed)

    async def _start(self) -> None:
        await self.metadata.start()
        await self.metadata.sync_stores([(store.name, store.quota_bytes) for store in self.config.stores])
        dropped = await self.metadata.clear_reservations()
        if dropped:
            self._log.info("Dropped {count} quota reservations left by a previous run", count=dropped)
        for store in self.stores.values():
            await store.start()
        health_checks = HealthCheckJob(lambda: self.stores, self.health, self.config.health.interval, self.reactor)
        health_checks.setName("health-checks")
        health_checks.setServiceParent(self)
        expiry = MultipartExpiryJob(
            self.multipart, self.metadata, self.config.multipart.expire_after,
            self.config.multipart.expiry_check_interval, self.reactor,
        )
        expiry.setName("multipart-expiry")
        expiry.setServiceParent(self)
        self.jobs = {"health_checks": health_checks, "multipart_expiry": expiry}
        self.start_ops_listeners()
        listener = strports.service(self.config.server.listen, self.site, reactor=self.reactor)
        listener.setName("s3-listener")
        listener.setServiceParent(self)
        self.ready = True
        self._log.info("s3orchestrator listening on {listen}", listen=self.config.server.listen)

    def ops_endpoints(self) -> dict[str, OpsEndpoint]:
        """The operator endpoints served on the S3 listener (for requests without an S3
        signature) and on ``[metrics] listen``, by path."""
        endpoints: dict[str, OpsEndpoint] = {}
        return endpoints

    def start_ops_listeners(self) -> None:
        """Start the listeners operators reach the daemon through besides S3 (each
        only when configured): metrics, admin API, manhole."""

    def _start_failed(self, failure) -> None:
        self._log.failure("s3orchestrator failed to start", failure)
        self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        self.ready = False
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        await maybeDeferred(super().stopService)
        for store in self.stores.values():
            await store.stop()
        await self.metadata.stop()
