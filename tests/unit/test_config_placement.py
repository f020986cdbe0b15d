"""Tests for the placement settings of s3orchestrator.config: [placement], the per-bucket
replicas / write_quorum overrides, store zones and their validation."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from s3orchestrator.config import (
    BucketConfig,
    ConfigError,
    CredentialConfig,
    PlacementJobsConfig,
    PlacementPolicy,
    bucket_placement,
    load_config,
    parse_config,
)


def store(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "directory", "path": f"var/stores/{name}", "quota_bytes": 0, **extra}


def bucket(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "credentials": [{"access_key_id": f"KEY-{name}", "secret_access_key": "s"}], **extra}


def data(
    placement: dict[str, Any] | None = None,
    buckets: list[dict[str, Any]] | None = None,
    stores: int = 3,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "server": {"listen": "tcp:9000:interface=127.0.0.1"},
        "metadata": {"sqlite": "var/metadata.sqlite"},
        "buckets": buckets if buckets is not None else [bucket("plain")],
        "stores": [store(f"s{i}") for i in range(stores)],
    }
    if placement is not None:
        document["placement"] = placement
    return document


def test_defaults_are_one_copy_read_in_health_order() -> None:
    config = parse_config(data(), {})
    assert config.placement == PlacementPolicy(replicas=1, write_quorum=1, read_order="health")
    assert config.placement_for("plain") == PlacementPolicy(1, 1, "health")


def test_write_quorum_defaults_to_replicas() -> None:
    config = parse_config(data({"replicas": 3}), {})
    assert config.placement == PlacementPolicy(replicas=3, write_quorum=3, read_order="health")


def test_placement_values_are_read() -> None:
    config = parse_config(data({"replicas": 2, "write_quorum": 1, "read_order": "latency"}), {})
    assert config.placement == PlacementPolicy(replicas=2, write_quorum=1, read_order="latency")


def test_buckets_override_replicas_and_write_quorum() -> None:
    buckets = [
        bucket("plain"),
        bucket("archive", replicas=3),
        bucket("scratch", replicas=1),
        bucket("fast", write_quorum=1),
        bucket("both", replicas=3, write_quorum=2),
    ]
    config = parse_config(data({"replicas": 2, "read_order": "config"}, buckets), {})
    assert config.placement_for("plain") == PlacementPolicy(2, 2, "config")
    # A bucket setting replicas alone gets write_quorum = its replicas, as [placement] does.
    assert config.placement_for("archive") == PlacementPolicy(3, 3, "config")
    assert config.placement_for("scratch") == PlacementPolicy(1, 1, "config")
    assert config.placement_for("fast") == PlacementPolicy(2, 1, "config")
    assert config.placement_for("both") == PlacementPolicy(3, 2, "config")


def test_a_bucket_without_replicas_inherits_an_explicit_write_quorum() -> None:
    config = parse_config(data({"replicas": 3, "write_quorum": 2}, [bucket("plain")]), {})
    assert config.placement_for("plain") == PlacementPolicy(3, 2, "health")


def test_an_unconfigured_bucket_gets_placement_as_it_is() -> None:
    config = parse_config(data({"replicas": 2}, [bucket("archive", replicas=3)]), {})
    assert config.placement_for("elsewhere") == config.placement


def test_bucket_placement_on_a_directly_built_bucket() -> None:
    archive = BucketConfig("archive", [CredentialConfig("K", "S")], replicas=4)
    assert bucket_placement(PlacementPolicy(2, 1, "config"), archive) == PlacementPolicy(4, 4, "config")


def test_store_zones() -> None:
    document = data()
    document["stores"] = [
        store("b2-eu", zone="backblaze"),
        {"name": "r2", "type": "s3", "quota_bytes": 0, "endpoint": "https://r2.example.net", "bucket": "b",
         "access_key_id": "K", "secret_access_key": "S", "zone": "${ZONE}"},
        store("local"),
    ]
    config = parse_config(document, {"ZONE": "cloudflare"})
    assert [s.zone for s in config.stores] == ["backblaze", "cloudflare", None]
    assert dict(config.store_zones()) == {"b2-eu": "backblaze", "r2": "cloudflare"}


def test_the_replicator_settings_are_read() -> None:
    config = parse_config(data({"replication_interval": 5, "replication_bytes_per_second": 1000,
                                "replication_concurrency": 4}), {})
    assert (config.placement.replication_interval, config.placement.replication_bytes_per_second,
            config.placement.replication_concurrency) == (5.0, 1000, 4)


def test_the_most_replicas_are_the_number_of_stores() -> None:
    config = parse_config(data({"replicas": 3}, [bucket("archive", replicas=3, write_quorum=3)]), {})
    assert config.placement_for("archive") == PlacementPolicy(3, 3, "health")


INVALID = [
    (data({"replica": 2}), "placement.replica: unknown key (allowed here: replicas, write_quorum, read_order,"
     " reaper_interval, cleanup_interval, replication_interval, replication_bytes_per_second,"
     " replication_concurrency)"),
    (data({"replication_interval": 0}),
     "placement.replication_interval: must be a positive number of seconds (got 0)"),
    (data({"replication_bytes_per_second": -1}),
     "placement.replication_bytes_per_second: must be a non-negative integer (got -1)"),
    (data({"replication_concurrency": 0}), "placement.replication_concurrency: must be a positive integer (got 0)"),
    ({**data(), "placement": 2}, "placement: must be a table (got 2)"),
    (data({"replicas": 0}), "placement.replicas: must be a positive integer (got 0)"),
    (data({"replicas": 1.5}), "placement.replicas: must be a positive integer (got 1.5)"),
    (data({"replicas": True}), "placement.replicas: must be a positive integer (got True)"),
    (data({"replicas": "2"}), "placement.replicas: must be a positive integer (got '2')"),
    (data({"replicas": 4}), "placement.replicas: must be at most the number of stores (3) (got 4)"),
    (data({"write_quorum": 0}), "placement.write_quorum: must be a positive integer (got 0)"),
    (data({"write_quorum": 2}), "placement.write_quorum: must be at most placement.replicas (1) (got 2)"),
    (data({"replicas": 2, "write_quorum": 3}),
     "placement.write_quorum: must be at most placement.replicas (2) (got 3)"),
    (data({"read_order": "random"}),
     "placement.read_order: must be one of \"config\", \"health\", \"latency\" (got 'random')"),
    (data(buckets=[bucket("plain"), bucket("archive", replicas=0)]),
     "buckets[1].replicas: must be a positive integer (got 0)"),
    (data(buckets=[bucket("plain"), bucket("archive", replicas=4)]),
     "buckets[1].replicas: must be at most the number of stores (3) (got 4)"),
    (data(buckets=[bucket("archive", write_quorum=-1)]),
     "buckets[0].write_quorum: must be a positive integer (got -1)"),
    (data({"replicas": 2}, [bucket("archive", write_quorum=3)]),
     "buckets[0].write_quorum: must be at most placement.replicas (2) (got 3)"),
    (data({"replicas": 3}, [bucket("archive", replicas=2, write_quorum=3)]),
     "buckets[0].write_quorum: must be at most buckets[0].replicas (2) (got 3)"),
    (data(buckets=[bucket("archive", replica=2)]),
     "buckets[0].replica: unknown key (allowed here: name, credentials, replicas, write_quorum)"),
    ({**data(), "stores": [store("a", zone="")]}, "stores[0].zone: must be a non-empty string (got '')"),
    ({**data(), "stores": [store("a", zone=1)]}, "stores[0].zone: must be a non-empty string (got 1)"),
]


@pytest.mark.parametrize(("document", "message"), INVALID, ids=[message.split(":")[0] for _, message in INVALID])
def test_invalid_placement_error_names_the_key(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(document, {})
    assert str(info.value) == message


EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "s3orchestrator.example.toml"
EXAMPLE_ENV = {name: "x" for name in (
    "APP1_SECRET", "APP1_READER_SECRET", "OCI_ACCESS_KEY_ID", "OCI_SECRET_ACCESS_KEY", "S3O_ADMIN_TOKEN")}


def test_example_file_documents_placement_and_zones() -> None:
    text = EXAMPLE.read_text()
    for key in ("[placement]", "replicas =", "write_quorum =", "read_order =", "zone"):
        assert key in text, key
    config = load_config(str(EXAMPLE), EXAMPLE_ENV)
    assert config.placement == PlacementPolicy(replicas=1, write_quorum=1, read_order="health")
    assert dict(config.store_zones()) == {"oci-1": "oci"}


def test_the_examples_commented_bucket_overrides_parse() -> None:
    text = EXAMPLE.read_text().replace("# replicas = 3\n", "replicas = 2\n").replace(
        "# write_quorum = 2\n", "write_quorum = 1\n"
    )
    config = parse_config(tomllib.loads(text), EXAMPLE_ENV)
    assert config.placement_for("app1-files") == PlacementPolicy(2, 1, "health")


def test_reaper_and_cleanup_settings_default_and_are_read() -> None:
    assert parse_config(data(), {}).placement_jobs == PlacementJobsConfig(60.0, 60.0)
    config = parse_config(data({"reaper_interval": 5, "cleanup_interval": 7.5}), {})
    assert config.placement_jobs == PlacementJobsConfig(reaper_interval=5.0, cleanup_interval=7.5)


@pytest.mark.parametrize("key", ["reaper_interval", "cleanup_interval"])
def test_reaper_and_cleanup_settings_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=f"placement.{key}: must be a positive number of seconds"):
        parse_config(data({key: 0}), {})
