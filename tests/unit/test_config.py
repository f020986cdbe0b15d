"""Tests for s3orchestrator.config: parsing, defaults, ${VAR} expansion and validation."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from s3orchestrator.config import (
    BucketConfig,
    Config,
    ConfigError,
    CredentialConfig,
    DirectoryStoreConfig,
    HealthConfig,
    MetadataConfig,
    S3StoreConfig,
    ServerConfig,
    StoreCaps,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiTESTSECRET"
UPSTREAM_SECRET = "upstream-secret-value-123"


def minimal() -> dict[str, Any]:
    """The smallest valid configuration, as tomllib would return it."""
    return {
        "server": {"listen": "tcp:9000:interface=127.0.0.1"},
        "metadata": {"sqlite": "var/metadata.sqlite"},
        "buckets": [
            {
                "name": "app1-files",
                "credentials": [{"access_key_id": "AKID_APP1_WRITER", "secret_access_key": SECRET}],
            }
        ],
        "stores": [
            {"name": "local-a", "type": "directory", "path": "var/stores/a", "quota_bytes": 1024}
        ],
    }


def s3_store(**overrides: Any) -> dict[str, Any]:
    store = {
        "name": "up-1",
        "type": "s3",
        "quota_bytes": 0,
        "endpoint": "https://s3.example.net",
        "bucket": "upstream-bucket",
        "access_key_id": "UPSTREAMKEY",
        "secret_access_key": UPSTREAM_SECRET,
    }
    store.update(overrides)
    return store


def edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = minimal()
    edit(data)
    return data


def test_minimal_config_parses_with_defaults() -> None:
    config = parse_config(minimal(), {})
    assert config == Config(
        routing_strategy="pack",
        server=ServerConfig(
            listen="tcp:9000:interface=127.0.0.1", max_object_size=5368709120, timeout=300.0
        ),
        metadata=MetadataConfig(sqlite="var/metadata.sqlite"),
        health=HealthConfig(interval=15.0, unhealthy_after=3),
        buckets=(
            BucketConfig(
                name="app1-files",
                credentials=(CredentialConfig("AKID_APP1_WRITER", SECRET),),
            ),
        ),
        stores=(DirectoryStoreConfig(name="local-a", quota_bytes=1024, path="var/stores/a"),),
    )


def test_explicit_values_override_defaults() -> None:
    data = minimal()
    data["routing_strategy"] = "spread"
    data["server"].update(max_object_size=1000, timeout=30, backlog=4096, header_timeout=5, min_upload_rate=0,
                          upload_rate_window=2.5, workers=4)
    data["health"] = {"interval": 2.5, "unhealthy_after": 5, "slow_probe": 0.5}
    config = parse_config(data, {})
    assert config.routing_strategy == "spread"
    assert config.server == ServerConfig(
        listen="tcp:9000:interface=127.0.0.1", max_object_size=1000, timeout=30.0, backlog=4096,
        header_timeout=5.0, min_upload_rate=0, upload_rate_window=2.5, workers=4,
    )
    assert config.health == HealthConfig(interval=2.5, unhealthy_after=5, slow_probe=0.5)


def test_s3_store_defaults() -> None:
    data = minimal()
    data["stores"].append(s3_store())
    store = parse_config(data, {}).stores[1]
    assert store == S3StoreConfig(
        name="up-1",
        quota_bytes=0,
        endpoint="https://s3.example.net",
        region="us-east-1",
        bucket="upstream-bucket",
        access_key_id="UPSTREAMKEY",
        secret_access_key=UPSTREAM_SECRET,
        path_style=True,
        payload_signing="unsigned",
        send_checksums=False,
        timeout=60.0,
        ca_file=None,
    )


def test_stores_have_no_monthly_caps_by_default() -> None:
    config = parse_config(minimal(), {})
    assert config.stores[0].caps == StoreCaps(billing_day=1, mode="hard")
    assert not config.stores[0].caps.any()


def test_monthly_caps_of_a_store() -> None:
    data = minimal()
    data["stores"].append(s3_store(
        monthly_egress_bytes=10 * 1024**3, monthly_ingress_bytes=5, monthly_requests=1000,
        monthly_class_a_requests=100, monthly_class_b_requests=900, billing_day=28, cap_mode="soft",
    ))
    config = parse_config(data, {})
    assert config.store_caps()["up-1"] == StoreCaps(
        egress_bytes=10 * 1024**3, ingress_bytes=5, requests=1000, class_a_requests=100, class_b_requests=900,
        billing_day=28, mode="soft",
    )
    assert config.store_caps()["local-a"] == StoreCaps()


def test_s3_store_all_keys() -> None:
    data = minimal()
    data["stores"].append(
        s3_store(
            endpoint="http://127.0.0.1:9100",
            region="eu-frankfurt-1",
            path_style=False,
            payload_signing="streaming",
            send_checksums=True,
            timeout=5,
            ca_file="etc/ca.pem",
        )
    )
    store = parse_config(data, {}).stores[1]
    assert isinstance(store, S3StoreConfig)
    assert (
        store.endpoint,
        store.region,
        store.path_style,
        store.payload_signing,
        store.send_checksums,
        store.timeout,
        store.ca_file,
    ) == ("http://127.0.0.1:9100", "eu-frankfurt-1", False, "streaming", True, 5.0, "etc/ca.pem")


def test_stores_keep_config_order() -> None:
    data = minimal()
    data["stores"].append(s3_store(name="b"))
    data["stores"].append({"name": "c", "type": "directory", "path": "c", "quota_bytes": 0})
    assert [store.name for store in parse_config(data, {}).stores] == ["local-a", "b", "c"]


def test_env_variables_expand_in_string_values() -> None:
    data = minimal()
    data["buckets"][0]["credentials"][0]["secret_access_key"] = "${APP1_SECRET}"
    data["metadata"]["sqlite"] = "${STATE}/meta-${NAME}.sqlite"
    data["stores"].append(s3_store(secret_access_key="${UP_SECRET}", endpoint="https://${HOST}"))
    config = parse_config(
        data, {"APP1_SECRET": "s3cr3t", "STATE": "/var/lib/x", "NAME": "a", "UP_SECRET": "u",
               "HOST": "s3.example.org"}
    )
    assert config.find_credential("AKID_APP1_WRITER") == ("app1-files", "s3cr3t")
    assert config.metadata.sqlite == "/var/lib/x/meta-a.sqlite"
    store = config.stores[1]
    assert isinstance(store, S3StoreConfig)
    assert (store.secret_access_key, store.endpoint) == ("u", "https://s3.example.org")


def test_dollar_without_braces_is_kept() -> None:
    data = minimal()
    data["buckets"][0]["credentials"][0]["secret_access_key"] = "a$b$ {c} $"
    config = parse_config(data, {})
    assert config.find_credential("AKID_APP1_WRITER") == ("app1-files", "a$b$ {c} $")


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3O_TEST_SECRET", "from-os-environ")
    data = minimal()
    data["buckets"][0]["credentials"][0]["secret_access_key"] = "${S3O_TEST_SECRET}"
    assert parse_config(data).find_credential("AKID_APP1_WRITER") == (
        "app1-files",
        "from-os-environ",
    )


def test_find_credential() -> None:
    data = minimal()
    data["buckets"][0]["credentials"].append({"access_key_id": "AKID2", "secret_access_key": "two"})
    data["buckets"].append(
        {"name": "other", "credentials": [{"access_key_id": "AKID3", "secret_access_key": "three"}]}
    )
    config = parse_config(data, {})
    assert config.find_credential("AKID_APP1_WRITER") == ("app1-files", SECRET)
    assert config.find_credential("AKID2") == ("app1-files", "two")
    assert config.find_credential("AKID3") == ("other", "three")
    assert config.find_credential("AKID_UNKNOWN") is None


def test_find_credential_on_directly_built_config() -> None:
    config = Config(
        routing_strategy="pack",
        server=ServerConfig(listen="tcp:0"),
        metadata=MetadataConfig(sqlite=":memory:"),
        health=HealthConfig(),
        buckets=[BucketConfig("b-1", [CredentialConfig("K", "S")])],
        stores=[DirectoryStoreConfig("d", 0, "d")],
    )
    assert config.find_credential("K") == ("b-1", "S")


def test_secrets_absent_from_repr() -> None:
    data = minimal()
    data["stores"].append(s3_store())
    config = parse_config(data, {})
    text = repr(config) + str(config)
    assert SECRET not in text
    assert UPSTREAM_SECRET not in text
    assert "AKID_APP1_WRITER" in text


def test_config_is_immutable() -> None:
    config = parse_config(minimal(), {})
    with pytest.raises(AttributeError):
        config.routing_strategy = "spread"  # type: ignore[misc]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting a dotted path (list indexes as numbers) to value."""

    def edit(data: dict[str, Any]) -> None:
        parts = path.split(".")
        target: Any = data
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = parts[-1]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return edit


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        parts = path.split(".")
        target: Any = data
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[parts[-1]]

    return edit


def _append_store(store: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["stores"].append(store)


def _append_bucket(bucket: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["buckets"].append(bucket)


INVALID = [
    # unknown keys
    (_set("routing_stratgy", "pack"), "routing_stratgy: unknown key (allowed here: "
     "routing_strategy, server, metadata, health, multipart, logging, metrics, manhole, admin, "
     "buckets, stores, placement, jobs, movement, scrub)"),
    (lambda d: d.update(foo=1, bar=2), "top level: unknown keys bar, foo"),
    (_set("server.listn", "tcp:1"), "server.listn: unknown key (allowed here: listen, "
     "max_object_size, timeout, shutdown_timeout, backlog, header_timeout, min_upload_rate, "
     "upload_rate_window, workers, worker_sockets, instance_id)"),
    (_set("server.backlog", 0), "server.backlog: must be a positive integer (got 0)"),
    (_set("server.workers", 0), "server.workers: must be a positive integer (got 0)"),
    (_set("server.worker_sockets", "own"), 'server.worker_sockets: must be one of "reuseport", "shared" (got \'own\')'),
    (lambda d: d.update(jobs={"lease": 0}), "jobs.lease: must be a positive number of seconds (got 0)"),
    (lambda d: d.update(jobs={"lease": "30"}), "jobs.lease: must be a positive number of seconds (got '30')"),
    (lambda d: d.update(jobs={"leas": 30}), "jobs.leas: unknown key (allowed here: lease)"),
    (_set("server.header_timeout", 0), "server.header_timeout: must be a positive number of seconds (got 0)"),
    (_set("server.min_upload_rate", -1), "server.min_upload_rate: must be a non-negative integer (got -1)"),
    (_set("server.min_upload_rate", 8.5), "server.min_upload_rate: must be a non-negative integer (got 8.5)"),
    (_set("server.upload_rate_window", 0), "server.upload_rate_window: must be a positive number of seconds (got 0)"),
    (_set("metadata.postgres", "x"), "metadata.postgres: unknown key"),
    (_set("health", {"intervall": 1}), "health.intervall: unknown key"),
    (_set("buckets.0.nmae", "x"), "buckets[0].nmae: unknown key"),
    (_set("buckets.0.credentials.0.secret", "x"), "buckets[0].credentials[0].secret: unknown key"),
    (_set("stores.0.quota_byte", 1), "stores[0].quota_byte: unknown key"),
    (_set("stores.0.endpoint", "http://x"), "stores[0].endpoint: unknown key (allowed here: "
     "name, type, quota_bytes, zone, monthly_egress_bytes, monthly_ingress_bytes, monthly_requests,"
     " monthly_class_a_requests, monthly_class_b_requests, billing_day, cap_mode, mode, path)"),
    # monthly caps
    (_set("stores.0.monthly_egress_bytes", 0), "stores[0].monthly_egress_bytes: must be a positive integer (got 0)"),
    (_set("stores.0.monthly_requests", "10"), "stores[0].monthly_requests: must be a positive integer (got '10')"),
    (_set("stores.0.monthly_class_b_requests", True),
     "stores[0].monthly_class_b_requests: must be a positive integer (got True)"),
    (_set("stores.0.billing_day", 29), "stores[0].billing_day: must be a day of the month from 1 to 28 (got 29)"),
    (_set("stores.0.billing_day", 0), "stores[0].billing_day: must be a positive integer (got 0)"),
    (_set("stores.0.cap_mode", "loose"), "stores[0].cap_mode: must be one of \"hard\", \"soft\" (got 'loose')"),
    (_append_store(s3_store(path="x")), "stores[1].path: unknown key"),
    # routing_strategy
    (_set("routing_strategy", "random"),
     "routing_strategy: must be one of \"pack\", \"spread\" (got 'random')"),
    (_set("routing_strategy", 1), "routing_strategy: must be one of \"pack\", \"spread\" (got 1)"),
    # server
    (_delete("server"), "server: required table is missing ([server])"),
    (_set("server", "tcp:9000"), "server: must be a table (got 'tcp:9000')"),
    (_delete("server.listen"), "server.listen: required key is missing"),
    (_set("server.listen", ""), "server.listen: must be a non-empty string (got '')"),
    (_set("server.listen", 9000), "server.listen: must be a non-empty string (got 9000)"),
    (_set("server.max_object_size", 0),
     "server.max_object_size: must be a positive integer (got 0)"),
    (_set("server.max_object_size", -1),
     "server.max_object_size: must be a positive integer (got -1)"),
    (_set("server.max_object_size", "5GiB"),
     "server.max_object_size: must be a positive integer (got '5GiB')"),
    (_set("server.max_object_size", 1.5),
     "server.max_object_size: must be a positive integer (got 1.5)"),
    (_set("server.max_object_size", True),
     "server.max_object_size: must be a positive integer (got True)"),
    (_set("server.timeout", 0), "server.timeout: must be a positive number of seconds (got 0)"),
    (_set("server.timeout", "300"),
     "server.timeout: must be a positive number of seconds (got '300')"),
    (_set("server.timeout", float("inf")),
     "server.timeout: must be a positive number of seconds (got inf)"),
    (_set("server.timeout", False),
     "server.timeout: must be a positive number of seconds (got False)"),
    # metadata
    (_delete("metadata"), "metadata: required table is missing ([metadata])"),
    (_delete("metadata.sqlite"), "metadata.sqlite: required key is missing (or metadata.url for PostgreSQL)"),
    (_set("metadata.url", "postgresql://s3o@db/meta"),
     "metadata.url: give either url (PostgreSQL) or sqlite (a file path), not both"),
    (_set("metadata.pool_size", 0), "metadata.pool_size: must be a positive integer (got 0)"),
    (_set("metadata.sqlite", 3), "metadata.sqlite: must be a non-empty string (got 3)"),
    (_set("metadata.busy_timeout", 0), "metadata.busy_timeout: must be a positive number of seconds (got 0)"),
    (_set("metadata.unavailable_after", -1),
     "metadata.unavailable_after: must be a positive number of seconds (got -1)"),
    (_set("metadata.busy_timeout", "2"),
     "metadata.busy_timeout: must be a positive number of seconds (got '2')"),
    # health
    (_set("health", {"interval": -1}),
     "health.interval: must be a positive number of seconds (got -1)"),
    (_set("health", {"unhealthy_after": 0}),
     "health.unhealthy_after: must be a positive integer (got 0)"),
    (_set("health", {"unhealthy_after": 2.0}),
     "health.unhealthy_after: must be a positive integer (got 2.0)"),
    (_set("health", {"slow_probe": 0}),
     "health.slow_probe: must be a positive number of seconds (got 0)"),
    # buckets
    (_delete("buckets"), "buckets: at least one bucket is required ([[buckets]])"),
    (_set("buckets", []), "buckets: at least one bucket is required ([[buckets]])"),
    (_set("buckets", {"name": "x"}), "buckets: must be an array of tables (got {'name': 'x'})"),
    (_set("buckets.0", "app1-files"), "buckets[0]: must be a table (got 'app1-files')"),
    (_delete("buckets.0.name"), "buckets[0].name: required key is missing"),
    (_set("buckets.0.name", "ab"), "buckets[0].name: invalid bucket name 'ab' (3-63 characters: "
     "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"),
    (_set("buckets.0.name", "a" * 64), "buckets[0].name: invalid bucket name"),
    (_set("buckets.0.name", "App1-files"), "buckets[0].name: invalid bucket name 'App1-files'"),
    (_set("buckets.0.name", "app1_files"), "buckets[0].name: invalid bucket name 'app1_files'"),
    (_set("buckets.0.name", "-app1"), "buckets[0].name: invalid bucket name '-app1'"),
    (_set("buckets.0.name", "app1."), "buckets[0].name: invalid bucket name 'app1.'"),
    (_set("buckets.0.name", "app1/x"), "buckets[0].name: invalid bucket name 'app1/x'"),
    (_append_bucket({"name": "app1-files",
                     "credentials": [{"access_key_id": "K2", "secret_access_key": "s"}]}),
     "buckets[1].name: duplicate bucket name 'app1-files' (already used by buckets[0])"),
    (_delete("buckets.0.credentials"),
     "buckets[0].credentials: at least one credential is required ([[buckets.credentials]])"),
    (_set("buckets.0.credentials", []),
     "buckets[0].credentials: at least one credential is required"),
    (_delete("buckets.0.credentials.0.access_key_id"),
     "buckets[0].credentials[0].access_key_id: required key is missing"),
    (_set("buckets.0.credentials.0.access_key_id", "AKID/1"),
     "buckets[0].credentials[0].access_key_id: must be printable ASCII without spaces, '/', ',' "
     "or '=' (got 'AKID/1')"),
    (_set("buckets.0.credentials.0.access_key_id", "AK ID"),
     "buckets[0].credentials[0].access_key_id: must be printable ASCII"),
    (_delete("buckets.0.credentials.0.secret_access_key"),
     "buckets[0].credentials[0].secret_access_key: required key is missing"),
    (_set("buckets.0.credentials.0.secret_access_key", ""),
     "buckets[0].credentials[0].secret_access_key: must be a non-empty string"),
    (_set("buckets.0.credentials.0.secret_access_key", "${APP1_SECRET}"),
     "buckets[0].credentials[0].secret_access_key: environment variable APP1_SECRET is not set"),
    (_append_bucket({"name": "app2-files", "credentials": [
        {"access_key_id": "K2", "secret_access_key": "s"},
        {"access_key_id": "AKID_APP1_WRITER", "secret_access_key": "t"}]}),
     "buckets[1].credentials[1].access_key_id: duplicate access key id 'AKID_APP1_WRITER' "
     "(already used by buckets[0].credentials[0])"),
    # stores
    (_delete("stores"), "stores: at least one store is required ([[stores]])"),
    (_set("stores", []), "stores: at least one store is required ([[stores]])"),
    (_set("stores.0", 1), "stores[0]: must be a table (got 1)"),
    (_delete("stores.0.type"),
     "stores[0].type: required key is missing (one of \"directory\", \"s3\")"),
    (_set("stores.0.type", "ftp"),
     "stores[0].type: must be one of \"directory\", \"s3\" (got 'ftp')"),
    (_delete("stores.0.name"), "stores[0].name: required key is missing"),
    (_set("stores.0.name", ""), "stores[0].name: must be a non-empty string (got '')"),
    (_set("stores.0.name", "  "), "stores[0].name: must be a non-empty string (got '  ')"),
    (_append_store({"name": "local-a", "type": "directory", "path": "b", "quota_bytes": 0}),
     "stores[1].name: duplicate store name 'local-a' (already used by stores[0])"),
    (_delete("stores.0.quota_bytes"),
     "stores[0].quota_bytes: required key is missing (0 means unlimited)"),
    (_set("stores.0.quota_bytes", -5),
     "stores[0].quota_bytes: must be a non-negative integer (got -5)"),
    (_set("stores.0.quota_bytes", True),
     "stores[0].quota_bytes: must be a non-negative integer (got True)"),
    (_set("stores.0.quota_bytes", "1GiB"),
     "stores[0].quota_bytes: must be a non-negative integer (got '1GiB')"),
    (_delete("stores.0.path"), "stores[0].path: required key is missing"),
    (_append_store(s3_store(quota_bytes=-5)),
     "stores[1].quota_bytes: must be a non-negative integer (got -5)"),
    (_append_store(s3_store(endpoint="s3.example.net")),
     "stores[1].endpoint: must be an http:// or https:// URL (got 's3.example.net')"),
    (_append_store(s3_store(endpoint="ftp://s3.example.net")),
     "stores[1].endpoint: must be an http:// or https:// URL (got 'ftp://s3.example.net')"),
    (_append_store(s3_store(endpoint="https://")),
     "stores[1].endpoint: must be an http:// or https:// URL (got 'https://')"),
    (_append_store({k: v for k, v in s3_store().items() if k != "endpoint"}),
     "stores[1].endpoint: required key is missing"),
    (_append_store({k: v for k, v in s3_store().items() if k != "bucket"}),
     "stores[1].bucket: required key is missing"),
    (_append_store({k: v for k, v in s3_store().items() if k != "access_key_id"}),
     "stores[1].access_key_id: required key is missing"),
    (_append_store({k: v for k, v in s3_store().items() if k != "secret_access_key"}),
     "stores[1].secret_access_key: required key is missing"),
    (_append_store(s3_store(secret_access_key="${UP_SECRET}")),
     "stores[1].secret_access_key: environment variable UP_SECRET is not set"),
    (_append_store(s3_store(region="")), "stores[1].region: must be a non-empty string (got '')"),
    (_append_store(s3_store(path_style="yes")),
     "stores[1].path_style: must be true or false (got 'yes')"),
    (_append_store(s3_store(send_checksums=1)),
     "stores[1].send_checksums: must be true or false (got 1)"),
    (_append_store(s3_store(payload_signing="signed")),
     "stores[1].payload_signing: must be one of \"unsigned\", \"streaming\" (got 'signed')"),
    (_append_store(s3_store(timeout=0)),
     "stores[1].timeout: must be a positive number of seconds (got 0)"),
    (_append_store(s3_store(ca_file="")), "stores[1].ca_file: must be a non-empty string (got '')"),
]


@pytest.mark.parametrize(
    ("edit", "message"), INVALID, ids=[message.split(":")[0] for _, message in INVALID]
)
def test_invalid_config_error_names_the_key(
    edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(edited(edit), {})
    text = str(info.value)
    assert text.startswith(message)
    assert "\n" not in text


@pytest.mark.parametrize(
    "edit",
    [
        _set("buckets.0.credentials.0.secret_access_key", 12345678),
        _append_store(s3_store(secret_access_key=12345678)),
    ],
)
def test_secret_type_errors_do_not_echo_the_value(edit: Callable[[dict[str, Any]], None]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(edited(edit), {})
    assert "12345678" not in str(info.value)
    assert "secret_access_key: must be a non-empty string" in str(info.value)


def test_unknown_key_reported_before_missing_key() -> None:
    data = minimal()
    data["stores"][0]["quota_byte"] = data["stores"][0].pop("quota_bytes")
    with pytest.raises(ConfigError, match=r"^stores\[0\]\.quota_byte: unknown key"):
        parse_config(data, {})


def test_parse_does_not_modify_its_input() -> None:
    data = minimal()
    before = copy.deepcopy(data)
    parse_config(data, {})
    assert data == before


def test_valid_bucket_names() -> None:
    for name in ["abc", "a.b-c", "0-9", "a" * 63, "my.bucket.1"]:
        data = minimal()
        data["buckets"][0]["name"] = name
        assert parse_config(data, {}).buckets[0].name == name


# -- files -------------------------------------------------------------------------------


EXAMPLE_ENV = {
    "APP1_SECRET": "example-secret",
    "APP1_READER_SECRET": "example-reader-secret",
    "OCI_ACCESS_KEY_ID": "example-oci-key",
    "OCI_SECRET_ACCESS_KEY": "example-oci-secret",
    "S3O_ADMIN_TOKEN": "example-admin-token",
}


def test_example_file_parses() -> None:
    config = load_config(str(REPO / "etc" / "s3orchestrator.example.toml"), EXAMPLE_ENV)
    assert config.find_credential("AKID_APP1_WRITER") == ("app1-files", "example-secret")
    assert {type(store) for store in config.stores} == {DirectoryStoreConfig, S3StoreConfig}
    assert "example-oci-secret" not in repr(config)


def test_example_file_needs_its_env_variables() -> None:
    with pytest.raises(ConfigError, match="environment variable [A-Z0-9_]+ is not set"):
        load_config(str(REPO / "etc" / "s3orchestrator.example.toml"), {})


def test_example_file_shows_every_key() -> None:
    """Every key the parser accepts appears in the example (set or commented out)."""
    text = (REPO / "etc" / "s3orchestrator.example.toml").read_text()
    keys = [
        "routing_strategy", "[server]", "listen", "max_object_size", "timeout", "[metadata]",
        "sqlite", "url", "pool_size", "[health]", "interval", "unhealthy_after", "slow_probe", "[[buckets]]", "name",
        "[[buckets.credentials]]", "access_key_id", "secret_access_key", "[[stores]]", "type",
        "path", "quota_bytes", "endpoint", "region", "bucket", "path_style", "payload_signing",
        "send_checksums", "ca_file", "shutdown_timeout", "[multipart]", "expire_after",
        "expiry_check_interval", "completed_retention", "[logging]", "format", "[metrics]", "[admin]", "token",
        "[manhole]", "password_file", "busy_timeout", "unavailable_after", "lease", "instance_id",
    ]
    for key in keys:
        assert key in text, key


def test_metadata_busy_timeout_defaults_to_two_seconds_and_can_be_set() -> None:
    assert parse_config(minimal(), {}).metadata.busy_timeout == 2.0
    data = edited(_set("metadata.busy_timeout", 0.5))
    assert parse_config(data, {}).metadata == MetadataConfig(sqlite="var/metadata.sqlite", busy_timeout=0.5)


def test_metadata_lease_defaults_to_thirty_seconds_and_can_be_set() -> None:
    assert parse_config(minimal(), {}).metadata.lease == 30.0
    assert parse_config(edited(_set("metadata.lease", 3)), {}).metadata.lease == 3.0


@pytest.mark.parametrize(("lease", "message"), [
    (0, "metadata.lease: must be a positive number of seconds (got 0)"),
    (2, "metadata.lease: must be longer than metadata.busy_timeout (2 s) (got 2)"),
])
def test_metadata_lease_must_outlast_the_busy_timeout(lease: float, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(edited(_set("metadata.lease", lease)), {})
    assert str(info.value) == message


def test_server_instance_id_is_optional_and_read() -> None:
    assert parse_config(minimal(), {}).server.instance_id is None
    assert parse_config(edited(_set("server.instance_id", "node-a")), {}).server.instance_id == "node-a"


@pytest.mark.parametrize("value", [" node-a", "node\na", "x" * 201, 7])
def test_server_instance_id_must_be_a_printable_name(value: Any) -> None:
    with pytest.raises(ConfigError, match="server.instance_id: must be"):
        parse_config(edited(_set("server.instance_id", value)), {})


def test_metadata_unavailable_after_defaults_to_ten_seconds_and_can_be_set() -> None:
    assert parse_config(minimal(), {}).metadata.unavailable_after == 10.0
    assert parse_config(edited(_set("metadata.unavailable_after", 2.5)), {}).metadata.unavailable_after == 2.5


def test_metadata_url_names_a_postgresql_database_with_a_pool() -> None:
    data = minimal()
    data["metadata"] = {"url": "postgresql://s3o:${PGPASSWORD}@db.internal:5432/s3o", "pool_size": 3}
    metadata = parse_config(data, {"PGPASSWORD": "pw"}).metadata
    assert metadata == MetadataConfig(url="postgresql://s3o:pw@db.internal:5432/s3o", pool_size=3)
    assert parse_config(edited(_set("metadata.busy_timeout", 1)), {}).metadata.pool_size == 8


def test_metadata_url_of_another_scheme_is_refused_without_echoing_it() -> None:
    data = minimal()
    data["metadata"] = {"url": "mysql://s3o:secret@db/s3o"}
    with pytest.raises(ConfigError) as error:
        parse_config(data, {})
    assert str(error.value) == "metadata.url: must be a postgresql://user:password@host:port/database URL"


def test_debian_file_parses_with_the_secrets_of_etc_default() -> None:
    env = {"S3O_ACCESS_KEY_ID": "S3OKEY", "S3O_SECRET_ACCESS_KEY": "secret", "S3O_ADMIN_TOKEN": "token"}
    config = load_config(str(REPO / "etc" / "s3orchestrator.toml"), env)
    assert config.find_credential("S3OKEY") == ("files", "secret")
    assert config.metadata.sqlite == "/var/lib/s3orchestrator/metadata.sqlite"
    assert [store.name for store in config.stores] == ["local"]
    assert config.ops.admin is not None and config.ops.admin.listen == "tcp:9001:interface=127.0.0.1"


def test_dev_file_parses() -> None:
    config = load_config(str(REPO / "etc" / "s3orchestrator.dev.toml"), {})
    assert config.routing_strategy == "pack"
    assert config.server.listen == "tcp:9000:interface=127.0.0.1"
    assert config.metadata.sqlite == "var/metadata.sqlite"
    assert config.find_credential("AKID_APP1_WRITER") == (
        "app1-files",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiDEVSECRET",
    )
    assert config.stores == (
        DirectoryStoreConfig(name="local-a", quota_bytes=1024**3, path="var/stores/a"),
        DirectoryStoreConfig(name="local-b", quota_bytes=2 * 1024**3, path="var/stores/b"),
    )


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value).startswith(f"{path}: cannot read configuration file")


def test_load_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('routing_strategy = "pack"\n[server\nlisten = "tcp:1"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    text = str(info.value)
    assert text.startswith(f"{path}: invalid TOML:")
    assert "line 2" in text
    assert "\n" not in text


def test_load_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'routing_strategy = "p\xe4ck"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path), {})


def test_load_uses_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    config = load_config(str(REPO / "etc" / "s3orchestrator.example.toml"))
    assert config.find_credential("AKID_APP1_READER") == ("app1-files", "example-reader-secret")
    assert os.environ["APP1_SECRET"] == "example-secret"


def test_multipart_expiry_defaults_to_a_day_checked_hourly() -> None:
    config = parse_config(edited(lambda data: None), {})
    assert (config.multipart.expire_after, config.multipart.expiry_check_interval) == (86400.0, 3600.0)


def test_job_leases_last_thirty_seconds_by_default_and_are_read() -> None:
    assert parse_config(edited(lambda data: None), {}).jobs.lease == 30.0
    assert parse_config(edited(lambda data: data.update(jobs={"lease": 90})), {}).jobs.lease == 90.0


def test_multipart_expiry_settings_are_read() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["multipart"] = {"expire_after": 7200, "expiry_check_interval": 60}

    config = parse_config(edited(edit), {})
    assert (config.multipart.expire_after, config.multipart.expiry_check_interval) == (7200.0, 60.0)


def test_completed_uploads_are_remembered_ten_minutes_by_default() -> None:
    assert parse_config(edited(lambda data: None), {}).multipart.completed_retention == 600.0


def test_completed_retention_is_read() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["multipart"] = {"completed_retention": 90}

    assert parse_config(edited(edit), {}).multipart.completed_retention == 90.0


@pytest.mark.parametrize("key", ["expire_after", "expiry_check_interval", "completed_retention"])
def test_multipart_expiry_settings_must_be_positive(key: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["multipart"] = {key: 0}

    with pytest.raises(ConfigError, match=f"^multipart.{key}: must be a positive number of seconds"):
        parse_config(edited(edit), {})


def test_ops_sections_default_to_off() -> None:
    ops = parse_config(edited(lambda data: None), {}).ops
    assert (ops.log_format, ops.metrics_listen, ops.manhole, ops.admin) == ("text", None, None, None)


def test_ops_sections_are_read() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["logging"] = {"format": "json"}
        data["metrics"] = {"listen": "tcp:9100:interface=127.0.0.1"}
        data["manhole"] = {"listen": "unix:/run/s3o/manhole.sock", "password_file": "/etc/s3o/manhole.passwd"}
        data["admin"] = {"listen": "tcp6:9001:interface=\\:\\:1", "token": "${ADMIN_TOKEN}"}

    config = parse_config(edited(edit), {"ADMIN_TOKEN": "t0ken"})
    assert config.ops.log_format == "json"
    assert config.ops.metrics_listen == "tcp:9100:interface=127.0.0.1"
    assert config.ops.manhole is not None and config.ops.admin is not None
    # A unix socket is created readable by its owner only.
    assert config.ops.manhole.listen == "unix:/run/s3o/manhole.sock:mode=600"
    assert (config.ops.admin.listen, config.ops.admin.token) == ("tcp6:9001:interface=\\:\\:1", "t0ken")
    assert "t0ken" not in repr(config)


@pytest.mark.parametrize("section", ["manhole", "admin"])
@pytest.mark.parametrize("listen, problem", [
    ("tcp:2222", "must listen on loopback only"),
    ("tcp:2222:interface=0.0.0.0", "must listen on loopback only"),
    ("unix:/run/x.sock:mode=666", "a unix socket must have mode 600"),
    ("ssl:2222:interface=127.0.0.1", "must be a loopback tcp: endpoint or a unix: socket"),
])
def test_operator_listeners_must_be_local(section: str, listen: str, problem: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        data[section] = {"listen": listen, "password_file": "p", "token": "t"}
        data[section].pop("token" if section == "manhole" else "password_file")

    with pytest.raises(ConfigError, match=f"^{section}.listen: {problem}"):
        parse_config(edited(edit), {})


def test_log_format_is_text_or_json() -> None:
    with pytest.raises(ConfigError, match="^logging.format: must be one of"):
        parse_config(edited(lambda data: data.update(logging={"format": "xml"})), {})


def test_log_level_defaults_to_info() -> None:
    assert parse_config(edited(lambda data: None), {}).ops.log_level == "info"


@pytest.mark.parametrize("level", ["debug", "info", "warn", "error"])
def test_log_level_is_read(level: str) -> None:
    config = parse_config(edited(lambda data: data.update(logging={"level": level})), {})
    assert config.ops.log_level == level


def test_an_unknown_log_level_is_refused() -> None:
    with pytest.raises(ConfigError, match='^logging.level: must be one of "debug", "info", "warn", "error"'):
        parse_config(edited(lambda data: data.update(logging={"level": "verbose"})), {})


def test_store_modes_and_movement_settings() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["stores"][0]["mode"] = "drain"
        data["movement"] = {"interval": 2, "max_concurrent": 4, "max_bytes_per_second": 1000}

    config = parse_config(edited(edit), {})
    assert config.stores[0].mode == "drain"
    assert config.store_modes()[config.stores[0].name] == "drain"
    assert (config.movement.interval, config.movement.max_concurrent, config.movement.max_bytes_per_second) == (
        2.0, 4, 1000)
    with pytest.raises(ConfigError, match=r'stores\[0\].mode: must be one of "normal", "readonly", "drain"'):
        parse_config(edited(lambda data: data["stores"][0].update(mode="gone")), {})
