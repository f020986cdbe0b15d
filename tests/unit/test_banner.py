"""Tests for s3orchestrator.ops.banner: the start-up banner built from plain data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import LogLevel

from s3orchestrator.config import load_config, parse_config
from s3orchestrator.metadata.records import StoreUsage
from s3orchestrator.ops.banner import (
    ADMIN,
    MANHOLE,
    METRICS,
    address_url,
    banner_fields,
    banner_text,
    startup_banner,
)
from s3orchestrator.ops.logs import json_event

REPO = Path(__file__).resolve().parents[2]
BUCKET_SECRET = "bucket-secret-never-shown"
UPSTREAM_SECRET = "upstream-secret-never-shown"
ADMIN_TOKEN = "admin-token-never-shown"
GiB = 1024**3


def tcp(port: int, host: str = "127.0.0.1") -> IPv4Address:
    return IPv4Address("TCP", host, port)


def config_data(**tables: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"listen": "tcp:9000:interface=127.0.0.1"},
        "metadata": {"sqlite": "/var/lib/s3o/metadata.sqlite"},
        "buckets": [
            {"name": "files", "credentials": [
                {"access_key_id": "AKID_ONE", "secret_access_key": BUCKET_SECRET},
                {"access_key_id": "AKID_TWO", "secret_access_key": BUCKET_SECRET + "2"},
            ]},
        ],
        "stores": [
            {"name": "local", "type": "directory", "path": "/srv/objects", "quota_bytes": 0},
            {"name": "oci", "type": "s3", "quota_bytes": 10 * GiB,
             "endpoint": "https://user:pass@objects.example.net:8443", "bucket": "data",
             "access_key_id": "UPSTREAMKEY", "secret_access_key": UPSTREAM_SECRET},
        ],
    }
    data.update(tables)
    return data


def test_the_dev_config_banner_says_where_to_point_a_client() -> None:
    config = load_config(str(REPO / "etc" / "s3orchestrator.dev.toml"))
    usage = [StoreUsage("local-a", GiB, GiB // 4, 0, 3), StoreUsage("local-b", 2 * GiB, 0, 0, 0)]
    text = banner_text(startup_banner(config, usage, [tcp(9000)], {}))
    assert text == (
        "s3orchestrator listening on http://127.0.0.1:9000\n"
        "S3 endpoint  http://127.0.0.1:9000\n"
        "bucket       app1-files: access key AKID_APP1_WRITER\n"
        "store        local-a: directory var/stores/a, used 256.0 MiB of 1.0 GiB (25%), 3 objects\n"
        "store        local-b: directory var/stores/b, used 0 B of 2.0 GiB (0%), 0 objects\n"
        "metadata     SQLite var/metadata.sqlite\n"
        "metrics      http://127.0.0.1:9000/metrics\n"
        "health       http://127.0.0.1:9000/health, http://127.0.0.1:9000/health/ready\n"
        "admin API    off (no [admin] table)\n"
        "manhole      off (no [manhole] table)"
    )


def test_the_url_comes_from_the_bound_address_not_the_config() -> None:
    config = parse_config(config_data(server={"listen": "tcp:0:interface=127.0.0.1"}), {})
    banner = startup_banner(config, [], [tcp(43210)], {})
    assert banner.s3_endpoints == ("http://127.0.0.1:43210",)
    assert banner_text(banner).splitlines()[0] == "s3orchestrator listening on http://127.0.0.1:43210"


def test_a_tls_listener_is_https() -> None:
    config = parse_config(config_data(server={"listen": "ssl:9443:privateKey=k.pem:certKey=c.pem"}), {})
    assert startup_banner(config, [], [tcp(9443, "0.0.0.0")], {}).s3_endpoints == ("https://0.0.0.0:9443",)


def test_addresses_become_urls() -> None:
    assert address_url(tcp(80, "10.0.0.1"), tls=False) == "http://10.0.0.1:80"
    assert address_url(IPv6Address("TCP", "::1", 9000), tls=True) == "https://[::1]:9000"
    assert address_url(UNIXAddress(b"/run/s3o/s3.sock"), tls=False) == "unix:/run/s3o/s3.sock"


def test_stores_show_type_location_quota_and_usage() -> None:
    config = parse_config(config_data(), {})
    usage = [StoreUsage("local", 0, 1536, 0, 1), StoreUsage("oci", 10 * GiB, 5 * GiB, 7, 2)]
    lines = banner_text(startup_banner(config, usage, [tcp(9000)], {})).splitlines()
    assert "store        local: directory /srv/objects, used 1.5 KiB (no quota), 1 object" in lines
    assert ("store        oci: s3 https://objects.example.net:8443 bucket data, used 5.0 GiB of 10.0 GiB (50%),"
            " 2 objects") in lines
    assert "bucket       files: access keys AKID_ONE, AKID_TWO" in lines


def test_stores_show_their_zone_when_they_have_one() -> None:
    data = config_data()
    data["stores"][0]["zone"] = "rack-1"
    data["stores"][1]["zone"] = "oracle"
    banner = startup_banner(parse_config(data, {}), [], [tcp(9000)], {})
    lines = banner_text(banner).splitlines()
    assert "store        local: directory /srv/objects, zone rack-1, used 0 B (no quota), 0 objects" in lines
    assert ("store        oci: s3 https://objects.example.net:8443 bucket data, zone oracle, used 0 B of 10.0 GiB"
            " (0%), 0 objects") in lines
    assert [store["zone"] for store in banner_fields(banner)["stores"]] == ["rack-1", "oracle"]


def test_operator_listeners_show_where_they_are() -> None:
    config = parse_config(config_data(
        metrics={"listen": "tcp:9102:interface=127.0.0.1"},
        admin={"listen": "unix:/run/s3o/admin.sock", "token": ADMIN_TOKEN},
        manhole={"listen": "tcp:2222:interface=127.0.0.1", "password_file": "/etc/s3o/manhole.passwd"},
    ), {})
    bound = {METRICS: tcp(9102), ADMIN: UNIXAddress(b"/run/s3o/admin.sock"), MANHOLE: tcp(2222)}
    lines = banner_text(startup_banner(config, [], [tcp(9000)], bound)).splitlines()
    assert lines[-6:] == [
        "metrics      http://127.0.0.1:9000/metrics",
        "metrics      http://127.0.0.1:9102/metrics",
        "health       http://127.0.0.1:9000/health, http://127.0.0.1:9000/health/ready",
        "health       http://127.0.0.1:9102/health, http://127.0.0.1:9102/health/ready",
        "admin API    unix:/run/s3o/admin.sock /status",
        "manhole      telnet 127.0.0.1 2222",
    ]


def test_no_secret_reaches_the_text_or_the_fields() -> None:
    config = parse_config(config_data(
        admin={"listen": "tcp:9001:interface=127.0.0.1", "token": ADMIN_TOKEN},
    ), {})
    banner = startup_banner(config, [], [tcp(9000)], {ADMIN: tcp(9001)})
    shown = banner_text(banner) + json.dumps(banner_fields(banner))
    for secret in (BUCKET_SECRET, UPSTREAM_SECRET, ADMIN_TOKEN, "user:pass", "UPSTREAMKEY"):
        assert secret not in shown


def test_the_json_log_line_is_one_object_with_structured_fields() -> None:
    config = parse_config(config_data(), {})
    banner = startup_banner(config, [StoreUsage("local", 0, 10, 0, 1)], [tcp(9000)], {})
    record = json.loads(json_event({
        "log_format": banner_text(banner), "log_level": LogLevel.info, "log_time": 0.0, **banner_fields(banner),
    }))
    assert record["message"].startswith("s3orchestrator listening on http://127.0.0.1:9000\n")
    assert record["s3_endpoints"] == ["http://127.0.0.1:9000"]
    assert record["buckets"] == [{"name": "files", "access_key_ids": ["AKID_ONE", "AKID_TWO"]}]
    assert record["stores"][0] == {
        "name": "local", "type": "directory", "quota_bytes": 0, "used_bytes": 10, "objects": 1,
        "path": "/srv/objects", "endpoint": None, "bucket": None, "zone": None,
    }
    assert record["stores"][1]["endpoint"] == "https://objects.example.net:8443"
    assert record["metadata_sqlite"] == "/var/lib/s3o/metadata.sqlite"
    assert (record["admin_api"], record["manhole"]) == (None, None)


def test_a_postgresql_metadata_database_is_shown_without_its_password() -> None:
    config = parse_config(config_data(metadata={"url": "postgresql://s3o:${PGPASSWORD}@db.internal:5432/s3o"}),
                          {"PGPASSWORD": "hunter2"})
    banner = startup_banner(config, [], [tcp(9000)], {})
    assert "metadata     PostgreSQL postgresql://s3o@db.internal:5432/s3o" in banner_text(banner).splitlines()
    assert "hunter2" not in banner_text(banner) and "hunter2" not in repr(banner)
    assert banner.metadata_url == "postgresql://s3o@db.internal:5432/s3o" and banner.metadata_sqlite is None


def test_the_banner_names_the_instance() -> None:
    config = parse_config(config_data(), {})
    banner = startup_banner(config, [], [tcp(9000)], {}, instance_id="node-a")
    assert "instance     node-a" in banner_text(banner).splitlines()
    assert banner_fields(banner)["instance_id"] == "node-a"
