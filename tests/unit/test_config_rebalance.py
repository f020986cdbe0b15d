"""Tests for the rebalance settings of s3orchestrator.config ([movement])."""

from __future__ import annotations

from typing import Any

import pytest

from s3orchestrator.config import ConfigError, MovementConfig, parse_config


def config(movement: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"listen": "tcp:9000:interface=127.0.0.1"},
        "metadata": {"sqlite": "var/metadata.sqlite"},
        "buckets": [{"name": "app1-files", "credentials": [{"access_key_id": "K", "secret_access_key": "s"}]}],
        "stores": [{"name": "a", "type": "directory", "path": "var/a", "quota_bytes": 1024}],
    }
    if movement is not None:
        data["movement"] = movement
    return data


def test_rebalance_defaults_to_a_five_percent_tolerance_and_no_periodic_run() -> None:
    assert parse_config(config(), {}).movement == MovementConfig(rebalance_tolerance=0.05, rebalance_interval=0.0)


def test_rebalance_settings_are_read() -> None:
    movement = parse_config(config({"rebalance_tolerance": 0, "rebalance_interval": 600}), {}).movement
    assert (movement.rebalance_tolerance, movement.rebalance_interval) == (0.0, 600.0)


@pytest.mark.parametrize(("movement", "message"), [
    ({"rebalance_tolerance": 1}, "movement.rebalance_tolerance: must be a fraction from 0 to below 1 (got 1)"),
    ({"rebalance_tolerance": -0.1}, "movement.rebalance_tolerance: must be a fraction from 0 to below 1 (got -0.1)"),
    ({"rebalance_tolerance": "5%"}, "movement.rebalance_tolerance: must be a fraction from 0 to below 1 (got '5%')"),
    ({"rebalance_tolerance": True}, "movement.rebalance_tolerance: must be a fraction from 0 to below 1 (got True)"),
    ({"rebalance_interval": -1}, "movement.rebalance_interval: must be a number of seconds, 0 for none (got -1)"),
    ({"rebalance_interval": float("inf")},
     "movement.rebalance_interval: must be a number of seconds, 0 for none (got inf)"),
    ({"rebalance_intervall": 1}, "movement.rebalance_intervall: unknown key"),
])
def test_invalid_rebalance_settings_name_the_key(movement: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(config(movement), {})
    assert str(raised.value).startswith(message)
