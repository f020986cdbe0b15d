"""Tests for the operator endpoints: /health, /health/ready, the admin API, and how they
are served (OpsRouter on the S3 listener, ops_site on their own listeners)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent

from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.availability import MetadataAvailability
from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable
from s3orchestrator.metadata.job_leases import JobLeases
from s3orchestrator.metadata.records import ObjectRecord, StoreUsage, UploadRecord
from s3orchestrator.metadata.store import MetadataStore, sqlite_metadata_store
from s3orchestrator.ops.admin import admin_endpoints, bearer_token
from s3orchestrator.ops.endpoints import MAX_ACTION_BODY, OpsEndpoint, OpsResponse, OpsRouter, ops_site
from s3orchestrator.ops.health import health_endpoint, ready_endpoint
from s3orchestrator.ops.report import status_table
from s3orchestrator.web.site import S3Request, S3Site
from tests.unit.fakes import Outcome, RecordingStringTransport

TOKEN = "s3cr3t-admin-token-0123456789"
WRONG_TOKEN = "s3cr3t-admin-token-0123456780"


def answer(endpoint: OpsEndpoint, headers: Mapping[str, str] | None = None) -> OpsResponse:
    """The endpoint's answer, when it needs no reactor turn (health, ready)."""
    return Outcome(ensureDeferred(endpoint(headers or {}))).result


def document(response: OpsResponse) -> Any:
    assert response.content_type == "application/json"
    return json.loads(response.body)


# -- /health ------------------------------------------------------------------------------------


def test_health_is_ok_with_every_store_up() -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=2)

    response = answer(health_endpoint(health))

    assert response.status == 200
    assert document(response) == {
        "status": "ok",
        "metadata": "ok",
        "stores": {"a": {"healthy": True, "last_error": None}, "b": {"healthy": True, "last_error": None}},
    }


def test_health_is_degraded_but_200_while_the_metadata_database_is_unavailable() -> None:
    health = StoreHealth(["a"], unhealthy_after=2)

    response = answer(health_endpoint(health, lambda: False))

    assert response.status == 200
    assert document(response) == {
        "status": "degraded", "metadata": "unavailable", "stores": {"a": {"healthy": True, "last_error": None}},
    }


def test_health_is_degraded_but_200_once_a_store_is_down() -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=2)
    health.record_failure("b", "b: connection refused")
    health.record_failure("b", "b: connection refused")

    response = answer(health_endpoint(health))

    assert response.status == 200
    assert document(response) == {
        "status": "degraded",
        "metadata": "ok",
        "stores": {
            "a": {"healthy": True, "last_error": None},
            "b": {"healthy": False, "last_error": "b: connection refused"},
        },
    }


def test_health_is_ok_while_failures_stay_below_the_threshold() -> None:
    health = StoreHealth(["a"], unhealthy_after=3)
    health.record_failure("a", "timeout")
    health.record_failure("a", "timeout")

    body = document(answer(health_endpoint(health)))

    assert body["status"] == "ok"
    assert body["stores"]["a"] == {"healthy": True, "last_error": "timeout"}


def test_health_is_ok_again_after_the_store_recovers() -> None:
    health = StoreHealth(["a"], unhealthy_after=1)
    endpoint = health_endpoint(health)
    health.record_failure("a", "refused")
    assert document(answer(endpoint))["status"] == "degraded"

    health.record_success("a")

    assert document(answer(endpoint)) == {
        "status": "ok", "metadata": "ok", "stores": {"a": {"healthy": True, "last_error": "refused"}},
    }


# -- /health/ready ------------------------------------------------------------------------------


def test_ready_is_503_until_ready_then_200_then_503_again() -> None:
    state = {"ready": False}
    endpoint = ready_endpoint(lambda: state["ready"])

    before = answer(endpoint)
    state["ready"] = True
    running = answer(endpoint)
    state["ready"] = False
    stopping = answer(endpoint)

    assert (before.status, document(before)) == (503, {"ready": False})
    assert (running.status, document(running)) == (200, {"ready": True})
    assert (stopping.status, document(stopping)) == (503, {"ready": False})


# -- the admin API ------------------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def metadata(tmp_path: Path) -> MetadataStore:
    store = sqlite_metadata_store(str(tmp_path / "metadata.sqlite"), reactor)
    await store.start()
    await store.sync_stores([("a", 1000), ("b", 0)])
    yield store
    await store.stop()


def pick(name: str):
    def choose(usage: Sequence[StoreUsage]) -> str:
        return name

    return choose


async def put_object(metadata: MetadataStore, key: str, size: int, store: str = "a") -> None:
    reservation = await metadata.reserve(size, pick(store))
    assert reservation is not None
    await metadata.commit_object(reservation.id, ObjectRecord(
        bucket="bkt", key=key, store=store, location=f"bkt/{key}", size=size,
        etag="0123456789abcdef0123456789abcdef", content_type="binary/octet-stream",
        last_modified_ms=1_700_000_000_000,
    ))


async def get(endpoints: Mapping[str, OpsEndpoint], path: str, headers: Mapping[str, str]) -> OpsResponse:
    return await endpoints[path](headers)


@pytest_twisted.ensureDeferred
async def test_admin_status_says_which_instance_runs_each_cluster_wide_job(metadata: MetadataStore) -> None:
    leases = JobLeases(metadata.database)
    await leases.take("reaper", "host-b:7", 2_000, 30_000)
    await leases.take("cleanup", "host-a:3", 1_000, 30_000)
    health = StoreHealth(["a", "b"], unhealthy_after=1)

    response = await get(admin_endpoints(TOKEN, metadata, health, job_leases=leases), "/status",
                         {"authorization": f"Bearer {TOKEN}"})

    snapshot = document(response)
    assert snapshot["jobs"] == [
        {"job": "cleanup", "holder": "host-a:3", "since_ms": 1_000, "expires_ms": 31_000},
        {"job": "reaper", "holder": "host-b:7", "since_ms": 2_000, "expires_ms": 32_000},
    ]
    assert "jobs: cleanup on host-a:3, reaper on host-b:7" in status_table(snapshot, 0.0)


@pytest_twisted.ensureDeferred
async def test_admin_status_answers_the_snapshot_with_the_right_token(metadata: MetadataStore) -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=1)
    health.record_failure("b", "b: connection refused")
    await put_object(metadata, "k1", 100)
    await put_object(metadata, "k2", 50)
    await put_object(metadata, "gone", 20)
    await metadata.delete_object("bkt", "gone")  # its bytes await the cleanup job
    await metadata.queue_replication("bkt", "k1", 1234)
    await metadata.reserve(30, pick("a"))  # an upload in flight
    await metadata.create_upload(UploadRecord(
        upload_id="u1", bucket="bkt", key="big", store="b", location="bkt/big", store_upload_id="s-u1",
        content_type="binary/octet-stream", initiated_ms=1_700_000_000_000,
    ))

    response = await get(admin_endpoints(TOKEN, metadata, health), "/status", {"authorization": f"Bearer {TOKEN}"})

    assert response.status == 200
    assert document(response) == {
        "status": "degraded",
        "uploads": 1,
        "cleanup_queue": 1,
        "cleanup_bytes": 20,
        "intents_pending": 0,
        "replication_queue": 1,
        "replication_oldest_ms": 1234,
        "objects_lost": 0,
        "stores": [
            {"name": "a", "healthy": True, "last_error": None, "quota_bytes": 1000, "used_bytes": 170,
             "reserved_bytes": 30, "objects": 2, "live_bytes": 150, "uploads": 0, "cleanup_queue": 1,
             "cleanup_bytes": 20},
            {"name": "b", "healthy": False, "last_error": "b: connection refused", "quota_bytes": 0,
             "used_bytes": 0, "reserved_bytes": 0, "objects": 0, "live_bytes": 0, "uploads": 1,
             "cleanup_queue": 0, "cleanup_bytes": 0},
        ],
    }


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "no bearer token"),
        ({"authorization": f"Bearer {WRONG_TOKEN}"}, "wrong token"),
        ({"authorization": f"Bearer {TOKEN}x"}, "wrong token"),
        ({"authorization": f"Basic {TOKEN}"}, "no bearer token"),
        ({"authorization": TOKEN}, "no bearer token"),
        ({"authorization": "Bearer "}, "no bearer token"),
    ],
    ids=["missing", "wrong", "longer", "basic-scheme", "no-scheme", "empty"],
)
@pytest_twisted.ensureDeferred
async def test_admin_status_refuses_a_missing_or_wrong_token_with_a_warning(
    metadata: MetadataStore, events: list[LogEvent], headers: dict[str, str], reason: str
) -> None:
    endpoints = admin_endpoints(TOKEN, metadata, StoreHealth(["a"], unhealthy_after=1))

    response = await get(endpoints, "/status", headers)

    assert (response.status, document(response)) == (401, {"error": "unauthorized"})
    [warning] = [event for event in events if "refused" in (event.get("log_format") or "")]
    assert warning["log_level"].name == "warn"
    assert formatEvent(warning) == f"Admin API request for /status refused: {reason}"


@pytest_twisted.ensureDeferred
async def test_admin_refusals_never_log_the_token_given_or_the_real_one(
    metadata: MetadataStore, events: list[LogEvent]
) -> None:
    endpoints = admin_endpoints(TOKEN, metadata, StoreHealth(["a"], unhealthy_after=1))

    await get(endpoints, "/status", {"authorization": f"Bearer {WRONG_TOKEN}"})
    await get(endpoints, "/status", {"authorization": f"Basic {WRONG_TOKEN}"})
    await get(endpoints, "/status", {"authorization": f"Bearer {TOKEN}"})

    logged = "\n".join(repr(event) + formatEvent(event) for event in events)
    assert "refused" in logged
    assert WRONG_TOKEN not in logged
    assert TOKEN not in logged


@pytest_twisted.ensureDeferred
async def test_admin_token_scheme_is_case_insensitive(metadata: MetadataStore) -> None:
    endpoints = admin_endpoints(TOKEN, metadata, StoreHealth(["a"], unhealthy_after=1))

    response = await get(endpoints, "/status", {"authorization": f"bearer  {TOKEN} "})

    assert response.status == 200


@pytest_twisted.ensureDeferred
async def test_admin_token_with_non_ascii_characters(metadata: MetadataStore) -> None:
    token = "tökén-ü"
    endpoints = admin_endpoints(token, metadata, StoreHealth(["a"], unhealthy_after=1))
    # Header values reach endpoints decoded as latin-1 from their wire bytes (UTF-8 here).
    on_the_wire = f"Bearer {token}".encode().decode("latin-1")

    right = await get(endpoints, "/status", {"authorization": on_the_wire})
    wrong = await get(endpoints, "/status", {"authorization": f"Bearer {token}"})

    assert (right.status, wrong.status) == (200, 401)


def test_admin_compares_tokens_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from s3orchestrator.ops import admin

    calls: list[tuple[bytes, bytes]] = []
    real_compare_digest = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real_compare_digest(a, b)

    monkeypatch.setattr(admin.hmac, "compare_digest", compare_digest)

    assert admin.token_matches(TOKEN, TOKEN)
    assert not admin.token_matches(WRONG_TOKEN, TOKEN)
    assert calls == [(TOKEN.encode(), TOKEN.encode()), (WRONG_TOKEN.encode(), TOKEN.encode())]


def test_admin_refuses_an_empty_token() -> None:
    with pytest.raises(ValueError):
        admin_endpoints("", None, StoreHealth([], unhealthy_after=1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value, token",
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER  abc  ", "abc"), ("Basic abc", None), ("", None),
     ("Bearer", None)],
)
def test_bearer_token_parsing(value: str, token: str | None) -> None:
    assert bearer_token({"authorization": value} if value else {}) == token


# -- OpsRouter on the S3 listener ---------------------------------------------------------------


class RecordingS3Handler:
    """Stands in for S3Handler: records requests and answers 200 "s3"."""

    def __init__(self) -> None:
        self.requests: list[S3Request] = []

    def handle(self, request: S3Request) -> None:
        self.requests.append(request)
        request.setResponseCode(200)
        request.setHeader(b"content-length", b"2")
        request.write(b"s3")
        request.finish()


class Listener:
    """An S3Site with OpsRouter in front of a recording S3 handler, over a StringTransport."""

    def __init__(self, endpoints: Mapping[str, OpsEndpoint]) -> None:
        self.s3 = RecordingS3Handler()
        self.site = S3Site(OpsRouter(self.s3, endpoints), timeout=60, reactor=Clock())  # type: ignore[arg-type]
        self.transport = RecordingStringTransport()
        self.channel = self.site.buildProtocol(None)
        self.channel.makeConnection(self.transport)

    def request(
        self, method: str, target: str, *headers: str, body: bytes = b""
    ) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """Send one request; return the status line, headers (lower-case names) and body."""
        lines = [f"{method} {target} HTTP/1.1", "Host: s3.example", *headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head, _, rest = self.transport.value().partition(b"\r\n\r\n")
        status, *header_lines = head.split(b"\r\n")
        fields = dict(line.split(b": ", 1) for line in header_lines)
        return status, {name.lower(): value for name, value in fields.items()}, rest


def router_endpoints() -> dict[str, OpsEndpoint]:
    health = StoreHealth(["a"], unhealthy_after=1)
    return {"/health": health_endpoint(health), "/health/ready": ready_endpoint(lambda: True)}


SIGNED = (
    "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request,"
    " SignedHeaders=host, Signature=00"
)


def test_unsigned_get_of_health_is_answered_by_the_endpoint() -> None:
    listener = Listener(router_endpoints())

    status, headers, body = listener.request("GET", "/health")

    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"cache-control"] == b"no-store"
    assert json.loads(body) == {
        "status": "ok", "metadata": "ok", "stores": {"a": {"healthy": True, "last_error": None}},
    }
    assert listener.s3.requests == []


def test_unsigned_get_of_health_ready_is_answered_by_the_endpoint() -> None:
    listener = Listener(router_endpoints())

    status, _, body = listener.request("GET", "/health/ready?probe=1")

    assert status == b"HTTP/1.1 200 OK"
    assert json.loads(body) == {"ready": True}
    assert listener.s3.requests == []


def test_head_of_health_has_headers_but_no_body() -> None:
    listener = Listener(router_endpoints())

    status, headers, body = listener.request("HEAD", "/health")

    assert status == b"HTTP/1.1 200 OK"
    assert int(headers[b"content-length"]) > 0
    assert body == b""
    assert listener.s3.requests == []


@pytest.mark.parametrize(
    "method, target, headers",
    [
        ("GET", "/health", [SIGNED]),  # ListObjects on a bucket named "health"
        ("GET", "/health/ready", [SIGNED]),  # GetObject of key "ready" in bucket "health"
        ("HEAD", "/health", [SIGNED]),  # HeadBucket
        ("GET", "/health?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00", []),  # presigned
        ("PUT", "/health", []),
        ("DELETE", "/health/ready", []),
        ("GET", "/health/", []),
        ("GET", "/healthz", []),
        ("GET", "/bkt/health", []),
    ],
    ids=["signed-get", "signed-key", "signed-head", "presigned", "put", "delete", "trailing-slash",
         "other-path", "key-named-health"],
)
def test_other_requests_go_to_the_s3_handler(method: str, target: str, headers: list[str]) -> None:
    listener = Listener(router_endpoints())

    status, _, body = listener.request(method, target, *headers)

    assert (status, body) == (b"HTTP/1.1 200 OK", b"" if method == "HEAD" else b"s3")
    [request] = listener.s3.requests
    assert (request.method, request.uri) == (method.encode(), target.encode())


def test_a_failing_endpoint_answers_500_without_details(events: list[LogEvent]) -> None:
    async def broken(headers: Mapping[str, str]) -> OpsResponse:
        raise RuntimeError("secret detail")

    listener = Listener({"/health": broken})

    status, _, body = listener.request("GET", "/health")

    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert b"secret detail" not in body
    assert any(event.get("log_failure") is not None for event in events)


# -- ops_site on its own listener ---------------------------------------------------------------


def site_client(endpoints: Mapping[str, OpsEndpoint]) -> StubTreq:
    return StubTreq(ops_site(endpoints).resource)


@pytest_twisted.ensureDeferred
async def test_ops_site_serves_an_endpoint_by_path() -> None:
    client = site_client(router_endpoints())

    response = await client.get("http://ops.example/health")

    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert json.loads(await response.content())["status"] == "ok"


@pytest_twisted.ensureDeferred
async def test_ops_site_head_has_no_body() -> None:
    client = site_client(router_endpoints())

    response = await client.head("http://ops.example/health")

    assert response.code == 200
    assert await response.content() == b""


@pytest.mark.parametrize("path", ["/", "/nope", "/status", "/metrics"])
@pytest_twisted.ensureDeferred
async def test_ops_site_answers_404_for_unknown_paths(path: str) -> None:
    client = site_client(router_endpoints())

    response = await client.get(f"http://ops.example{path}")

    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_ops_site_serves_the_admin_status_on_a_loopback_listener(metadata: MetadataStore) -> None:
    # A real listener: the status reads SQLite in a thread, so StubTreq's pump would not see the answer.
    site = ops_site(admin_endpoints(TOKEN, metadata, StoreHealth(["a", "b"], unhealthy_after=1)))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/status"
    try:
        refused = await treq.get(url, persistent=False)
        refused_body = await refused.content()
        allowed = await treq.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, persistent=False)
        allowed_body = await allowed.content()
    finally:
        await port.stopListening()

    assert (refused.code, json.loads(refused_body)) == (401, {"error": "unauthorized"})
    assert allowed.code == 200
    assert [store["name"] for store in json.loads(allowed_body)["stores"]] == ["a", "b"]


@pytest_twisted.ensureDeferred
async def test_ops_site_serves_a_nested_endpoint_by_its_own_path() -> None:
    client = site_client(router_endpoints())

    response = await client.get("http://ops.example/health/ready")

    assert json.loads(await response.content()) == {"ready": True}


@pytest_twisted.ensureDeferred
async def test_ops_site_answers_404_below_an_endpoint() -> None:
    client = site_client(router_endpoints())

    response = await client.get("http://ops.example/health/x")

    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_admin_status_is_503_with_the_store_health_while_the_metadata_is_unavailable(
    metadata: MetadataStore,
) -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=1)
    health.record_failure("b", "b: connection refused")
    availability = MetadataAvailability(Clock())
    availability.record_failure(MetadataUnavailable("disk I/O error"))
    metadata.database.close()  # any use of the database would fail now

    response = await get(admin_endpoints(TOKEN, metadata, health, availability), "/status",
                         {"authorization": f"Bearer {TOKEN}"})

    assert response.status == 503
    assert document(response) == {
        "error": "metadata database unavailable", "detail": "disk I/O error", "status": "degraded",
        "metadata": "unavailable",
        "stores": [{"name": "a", "healthy": True, "last_error": None},
                   {"name": "b", "healthy": False, "last_error": "b: connection refused"}],
    }


class FailingMetadata:
    """A metadata store whose reads fail with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def store_usage(self) -> Any:
        return fail(self.error)


@pytest.mark.parametrize(("error", "state"), [
    (MetadataUnavailable("database disk image is malformed"), "unavailable"),
    (MetadataBusy("database is locked"), "busy"),
])
@pytest_twisted.ensureDeferred
async def test_admin_status_is_503_when_the_metadata_fails_on_the_way(error: Exception, state: str) -> None:
    endpoints = admin_endpoints(TOKEN, FailingMetadata(error), StoreHealth(["a"], unhealthy_after=1),  # type: ignore[arg-type]
                                MetadataAvailability(Clock()))

    response = await get(endpoints, "/status", {"authorization": f"Bearer {TOKEN}"})

    assert response.status == 503
    assert (document(response)["error"], document(response)["metadata"]) == (f"metadata database {state}", state)
    assert document(response)["detail"] == str(error)


async def test_admin_usage_answers_the_traffic_report_with_the_right_token(metadata: MetadataStore) -> None:
    report = [{"name": "a", "egress_bytes": 5, "caps": {}, "reached": []}]
    endpoints = admin_endpoints(TOKEN, metadata, StoreHealth(["a"], unhealthy_after=1), usage=lambda: report)

    refused = await get(endpoints, "/usage", {"authorization": f"Bearer {WRONG_TOKEN}"})
    response = await get(endpoints, "/usage", {"authorization": f"Bearer {TOKEN}"})

    assert (refused.status, document(refused)) == (401, {"error": "unauthorized"})
    assert (response.status, document(response)) == (200, {"stores": report})


async def echo_action(headers: Mapping[str, str], body: bytes) -> OpsResponse:
    return OpsResponse(202, "application/octet-stream", body[::-1])


@pytest_twisted.ensureDeferred
async def test_ops_site_hands_a_post_s_body_to_its_action_and_refuses_other_methods() -> None:
    client = StubTreq(ops_site(router_endpoints(), {"/act": echo_action, "/health": echo_action}).resource)

    posted = await client.post("http://ops.example/act", data=b"abc")
    assert (posted.code, await posted.content()) == (202, b"cba")
    got = await client.get("http://ops.example/act")
    assert (got.code, got.headers.getRawHeaders(b"allow")) == (405, [b"POST"])
    health = await client.get("http://ops.example/health")  # the endpoint still answers GET
    assert health.code == 200
    too_big = await client.post("http://ops.example/act", data=b"x" * (MAX_ACTION_BODY + 1))
    assert too_big.code == 413
    not_an_action = await client.post("http://ops.example/health/ready", data=b"")
    assert (not_an_action.code, not_an_action.headers.getRawHeaders(b"allow")) == (405, [b"GET, HEAD"])
