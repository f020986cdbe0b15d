"""``/rebalance`` on the admin API and ``s3orchestrator rebalance [--dry-run]`` against it:
a real loopback listener, a real metadata store, the CLI in a thread."""

from __future__ import annotations

import io
import json
from typing import Any, AsyncIterator, Callable

import attrs
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from s3orchestrator.cli import main
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.jobs.rebalance import Rebalancer
from s3orchestrator.metadata.placements import ObjectPlacements
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.ops.admin import admin_actions, admin_endpoints
from s3orchestrator.ops.endpoints import ops_site
from s3orchestrator.ops.movement import MovementControl
from s3orchestrator.ops.rebalance_report import plan_table
from tests.unit.test_rebalancer import STORES, config, put

TOKEN = "rebalance-admin-token-0123456789"
Rows = Callable[..., list[tuple[Any, ...]]]


@attrs.define
class Admin:
    url: str
    rebalancer: Rebalancer
    current: Any

    async def cli(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await deferToThread(
            main, ["rebalance", "--url", self.url, "--token", TOKEN, "--env-file", "/nonexistent", *args],
            stdout=out, stderr=err, environ={},
        )
        return code, out.getvalue(), err.getvalue()


@pytest_twisted.async_yield_fixture
async def admin(make_store: Callable[..., MetadataStore]) -> AsyncIterator[Admin]:
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([(name, 1000) for name in STORES])
    for i in range(8):
        await put(metadata, f"k{i}", 50, "a")
    state = Admin("", None, config())  # type: ignore[arg-type]
    state.rebalancer = Rebalancer(metadata, ObjectPlacements(metadata.database), lambda: state.current,
                                  StoreHealth(list(STORES), unhealthy_after=1), frozenset, reactor)
    movement = MovementControl(metadata, lambda: state.current.store_modes(), reactor)
    site = ops_site(
        admin_endpoints(TOKEN, metadata, StoreHealth(list(STORES), unhealthy_after=1), rebalancer=state.rebalancer),
        admin_actions(TOKEN, StoreHealth(list(STORES), unhealthy_after=1), movement, state.rebalancer),
    )
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    state.url = f"http://127.0.0.1:{port.getHost().port}"
    yield state
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_dry_run_prints_the_plan_and_queues_nothing(admin: Admin, db_rows: Rows) -> None:
    code, out, err = await admin.cli("--dry-run")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    # a: 400 of 1000; mean 0.1333: a must come down to 0.1833 at most (4 copies of 50 bytes out).
    assert lines[0] == "5 copies to move (250 B); mean fill 13.3%, tolerance 5.0%"
    assert lines[1].split() == ["STORE", "QUOTA", "USED", "BEFORE", "FILL", "USED", "AFTER", "FILL", "OUT", "IN",
                                "LEFT", "OUT"]
    assert lines[2].split() == ["a", "1000", "B", "400", "B", "40.0%", "150", "B", "15.0%", "5", "(250", "B)", "0"]
    assert lines[3].split()[:3] == ["b", "1000", "B"]
    assert lines[-1] == "dry run: nothing queued; run without --dry-run to have the mover make these moves"
    assert db_rows("SELECT COUNT(*) FROM movements") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_a_rebalance_queues_the_moves_it_prints(admin: Admin, db_rows: Rows) -> None:
    code, out, err = await admin.cli("--moves")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "queued 5 of 5 moves for the mover"
    rows = db_rows("SELECT key, from_store, to_store, reason, size FROM movements ORDER BY key")
    assert [row[0] for row in rows] == ["k0", "k1", "k2", "k3", "k4"]
    assert {(row[1], row[3], row[4]) for row in rows} == {("a", "rebalance", 50)}
    assert {row[2] for row in rows} == {"b", "c"}
    for key, _, to_store, _, _ in rows:
        assert any(line.split()[:4] == ["bkt", key, "a", to_store] for line in out.splitlines())
    # Queued moves count as done: nothing more to plan.
    code, out, _ = await admin.cli("--dry-run")
    assert out.splitlines()[0].startswith("balanced: every store is within 5.0% of the mean fill 13.3%")


@pytest_twisted.ensureDeferred
async def test_json_prints_the_document(admin: Admin) -> None:
    code, out, _ = await admin.cli("--dry-run", "--json")
    document = json.loads(out)
    assert code == 0
    assert (document["moves"], document["bytes"], document["balanced"]) == (5, 250, True)
    assert "queued" not in document
    assert plan_table(document).startswith("5 copies to move")


@pytest_twisted.ensureDeferred
async def test_pack_is_refused_with_the_reason(admin: Admin, db_rows: Rows) -> None:
    admin.current = config("pack")
    code, out, err = await admin.cli()
    assert code == 1
    assert err == ("s3orchestrator rebalance: routing_strategy is 'pack': rebalancing moves copies as 'spread'"
                   " places them\n")
    assert db_rows("SELECT COUNT(*) FROM movements") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_the_endpoint_wants_the_token_and_get_or_post(admin: Admin, db_rows: Rows) -> None:
    url = f"{admin.url}/rebalance"
    refused = await treq.post(url, persistent=False)
    assert (refused.code, json.loads(await refused.content())) == (401, {"error": "unauthorized"})
    wrong = await treq.put(url, headers={"Authorization": f"Bearer {TOKEN}"}, persistent=False)
    await wrong.content()
    assert wrong.code == 405
    assert wrong.headers.getRawHeaders("allow") == ["GET, HEAD, POST"]
    status = await treq.post(f"{admin.url}/status", headers={"Authorization": f"Bearer {TOKEN}"},
                             persistent=False)
    await status.content()
    assert (status.code, status.headers.getRawHeaders("allow")) == (405, ["GET, HEAD"])
    assert db_rows("SELECT COUNT(*) FROM movements") == [(0,)]
