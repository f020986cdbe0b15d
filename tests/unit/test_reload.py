"""What a reloaded configuration changes at once, and what waits for a restart."""

from __future__ import annotations

from typing import Any, Callable

from s3orchestrator.config import Config, PlacementPolicy, StoreCaps, parse_config
from s3orchestrator.reload import reload_plan
from tests.unit.test_config import minimal, s3_store


def config(edit: Callable[[dict[str, Any]], None] = lambda data: None) -> Config:
    data = minimal()
    data["stores"].append(s3_store())
    edit(data)
    return parse_config(data, {})


def test_nothing_changed() -> None:
    plan = reload_plan(config(), config())
    assert (plan.applied, plan.needs_restart) == ((), ())
    assert plan.config == config()


def test_rotated_credentials_apply_at_once() -> None:
    def rotate(data: dict[str, Any]) -> None:
        data["buckets"][0]["credentials"] = [{"access_key_id": "AKID_NEW", "secret_access_key": "new-secret"}]

    plan = reload_plan(config(), config(rotate))
    assert plan.applied == ("buckets",)
    assert plan.config.find_credential("AKID_NEW") == ("app1-files", "new-secret")
    assert plan.config.find_credential("AKID_APP1_WRITER") is None


def test_quotas_health_multipart_and_routing_apply_at_once() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["stores"][0]["quota_bytes"] = 4096
        data["stores"][1]["quota_bytes"] = 8192
        data["health"] = {"interval": 5, "unhealthy_after": 2}
        data["multipart"] = {"expire_after": 3600}
        data["routing_strategy"] = "spread"
        data["server"]["max_object_size"] = 1000

    plan = reload_plan(config(), config(edit))
    assert set(plan.applied) == {"quotas", "health", "multipart", "routing_strategy", "server"}
    assert plan.needs_restart == ()
    assert [store.quota_bytes for store in plan.config.stores] == [4096, 8192]
    assert (plan.config.health.interval, plan.config.multipart.expire_after) == (5.0, 3600.0)
    assert plan.config.server.max_object_size == 1000


def test_listen_metadata_and_operator_settings_wait_for_a_restart() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["listen"] = "tcp:9999:interface=127.0.0.1"
        data["metadata"]["sqlite"] = "elsewhere.sqlite"
        data["logging"] = {"format": "json"}

    old = config()
    plan = reload_plan(old, config(edit))
    assert plan.needs_restart == ("server.listen", "metadata", "logging.format/metrics/manhole/admin")
    assert plan.config.server.listen == old.server.listen
    assert plan.config.metadata == old.metadata
    assert plan.config.ops == old.ops


def test_the_job_lease_waits_for_a_restart() -> None:
    plan = reload_plan(config(), config(lambda data: data.update(jobs={"lease": 90})))
    assert (plan.applied, plan.needs_restart) == ((), ("jobs.lease",))
    assert plan.config.jobs.lease == 30.0


def test_the_log_level_applies_at_once() -> None:
    plan = reload_plan(config(), config(lambda data: data.update(logging={"level": "debug"})))
    assert (plan.applied, plan.needs_restart) == (("logging.level",), ())
    assert plan.config.ops.log_level == "debug"


def test_the_log_level_applies_while_the_log_format_waits() -> None:
    old = config()
    plan = reload_plan(old, config(lambda data: data.update(logging={"level": "warn", "format": "json"})))
    assert (plan.applied, plan.needs_restart) == (("logging.level",), ("logging.format/metrics/manhole/admin",))
    assert (plan.config.ops.log_level, plan.config.ops.log_format) == ("warn", old.ops.log_format)


def test_a_changed_store_endpoint_waits_but_other_quotas_apply() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["stores"][0]["quota_bytes"] = 4096
        data["stores"][1]["endpoint"] = "https://elsewhere.example.net"
        data["stores"][1]["quota_bytes"] = 8192

    old = config()
    plan = reload_plan(old, config(edit))
    assert plan.needs_restart == ("stores (other than quota_bytes, zone, mode and monthly caps)",)
    assert plan.applied == ("quotas",)
    local, upstream = plan.config.stores
    assert local.quota_bytes == 4096
    assert upstream == old.stores[1]  # endpoint and quota as running


def test_added_or_removed_stores_wait_for_a_restart() -> None:
    def add(data: dict[str, Any]) -> None:
        data["stores"].append({"name": "local-b", "type": "directory", "path": "b", "quota_bytes": 1})

    old = config()
    assert reload_plan(old, config(add)).config.stores == old.stores
    assert reload_plan(old, config(add)).needs_restart == (
        "stores (other than quota_bytes, zone, mode and monthly caps)",
    )
    removed = reload_plan(old, config(lambda data: data["stores"].pop()))
    assert removed.config.stores == old.stores
    assert removed.needs_restart == ("stores (other than quota_bytes, zone, mode and monthly caps)",)


def test_header_timeout_and_upload_rate_apply_at_once_the_backlog_waits_for_a_restart() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"].update(header_timeout=5, min_upload_rate=0, upload_rate_window=3, backlog=64)

    old = config()
    plan = reload_plan(old, config(edit))
    assert plan.applied == ("server",)
    assert plan.needs_restart == ("server.backlog",)
    server = plan.config.server
    assert (server.header_timeout, server.min_upload_rate, server.upload_rate_window, server.backlog) == (
        5.0, 0, 3.0, old.server.backlog)


def test_the_number_of_workers_waits_for_a_restart() -> None:
    old = config()
    plan = reload_plan(old, config(lambda data: data["server"].update(workers=3)))
    assert plan.needs_restart == ("server.workers",)
    assert plan.applied == ()
    assert plan.config.server.workers == 1


def test_the_workers_sockets_wait_for_a_restart() -> None:
    old = config()
    assert old.server.worker_sockets == "reuseport"
    plan = reload_plan(old, config(lambda data: data["server"].update(worker_sockets="shared")))
    assert plan.needs_restart == ("server.worker_sockets",)
    assert plan.config.server.worker_sockets == "reuseport"
def test_the_instance_id_and_the_lease_wait_for_a_restart() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["instance_id"] = "node-b"
        data["metadata"]["lease"] = 60

    old = config()
    plan = reload_plan(old, config(edit))
    assert plan.needs_restart == ("server.instance_id", "metadata")
    assert plan.applied == ()
    assert (plan.config.server.instance_id, plan.config.metadata.lease) == (None, 30.0)


def test_placement_and_bucket_replicas_apply_at_once() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["placement"] = {"replicas": 2, "write_quorum": 1, "read_order": "latency"}
        data["buckets"][0]["replicas"] = 1

    plan = reload_plan(config(), config(edit))
    assert set(plan.applied) == {"placement", "buckets"}
    assert plan.needs_restart == ()
    assert plan.config.placement == PlacementPolicy(replicas=2, write_quorum=1, read_order="latency")
    assert plan.config.placement_for("app1-files") == PlacementPolicy(1, 1, "latency")


def test_zones_apply_at_once() -> None:
    plan = reload_plan(config(), config(lambda data: data["stores"][1].update(zone="aws")))
    assert (plan.applied, plan.needs_restart) == (("zones",), ())
    assert dict(plan.config.store_zones()) == {"up-1": "aws"}


def test_store_modes_apply_at_once() -> None:
    plan = reload_plan(config(), config(lambda data: data["stores"][1].update(mode="drain")))
    assert (plan.applied, plan.needs_restart) == (("store modes",), ())
    assert plan.config.store_modes()["up-1"] == "drain"


def test_a_zone_changes_while_the_endpoint_waits() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["stores"][1].update(zone="aws", endpoint="https://elsewhere.example.net")

    old = config()
    plan = reload_plan(old, config(edit))
    assert (plan.applied, plan.needs_restart) == ((), ("stores (other than quota_bytes, zone, mode and monthly caps)",))
    assert plan.config.stores == old.stores


def test_replicas_above_the_running_stores_wait_for_the_restart_that_adds_them() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["stores"].append({"name": "local-b", "type": "directory", "path": "b", "quota_bytes": 0})
        data["placement"] = {"replicas": 3, "read_order": "config"}
        data["buckets"][0]["replicas"] = 3
        data["buckets"][0]["credentials"] = [{"access_key_id": "AKID_NEW", "secret_access_key": "new-secret"}]
        data["buckets"].append({"name": "new-bucket", "replicas": 3,
                                "credentials": [{"access_key_id": "AKID_B", "secret_access_key": "b"}]})

    old = config()
    plan = reload_plan(old, config(edit))
    assert plan.needs_restart == (
        "stores (other than quota_bytes, zone, mode and monthly caps)",
        "placement and buckets' replicas (more than the running stores)",
    )
    assert plan.applied == ("buckets",)  # the credentials and the new bucket, with the running placement
    assert plan.config.placement == old.placement
    assert plan.config.placement_for("app1-files") == PlacementPolicy(1, 1, "health")
    assert plan.config.placement_for("new-bucket") == PlacementPolicy(1, 1, "health")
    assert plan.config.find_credential("AKID_NEW") == ("app1-files", "new-secret")


def test_reaper_and_cleanup_settings_apply_at_once() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["placement"] = {"reaper_interval": 5, "cleanup_interval": 6}

    plan = reload_plan(config(), config(edit))
    assert plan.applied == ("placement_jobs",)
    assert plan.config.placement_jobs.cleanup_interval == 6.0


def test_monthly_caps_apply_at_once() -> None:
    plan = reload_plan(config(), config(lambda data: data["stores"][1].update(
        monthly_egress_bytes=1000, billing_day=5, cap_mode="soft",
    )))
    assert (plan.applied, plan.needs_restart) == (("monthly caps",), ())
    assert plan.config.store_caps()["up-1"] == StoreCaps(egress_bytes=1000, billing_day=5, mode="soft")
