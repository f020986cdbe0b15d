"""Monthly usage caps on the real daemon: two directory stores holding every object, a
10 MiB egress cap on the first; GETs move to the second store once the cap is spent
(seen in the month metrics), ``s3orchestrator usage`` shows it, and the counts reach
the store_traffic table."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import make_client, metadata_rows, wait_for
from tests.integration.daemon import BUCKET, REPO, Daemon, StoreSpec, free_port

MiB = 1024 * 1024
ADMIN_TOKEN = "admin-token-for-caps-tests"


def egress(daemon: Daemon) -> dict[str, float]:
    """Each store's egress this month, from /metrics."""
    with urllib.request.urlopen(f"{daemon.endpoint}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    return {
        sample.labels["store"]: sample.value
        for family in text_string_to_metric_families(text) if family.name == "s3orchestrator_store_month_bytes"
        for sample in family.samples if sample.labels["direction"] == "egress"
    }


def usage(daemon: Daemon, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s3orchestrator.cli", "usage", "--config", str(daemon.config), *options], cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60,
    )


def test_reads_move_to_the_other_copy_once_the_egress_cap_is_spent(start_daemon) -> None:
    admin = f'[admin]\nlisten = "tcp:{free_port()}:interface=127.0.0.1"\ntoken = "{ADMIN_TOKEN}"\n'
    daemon = start_daemon(
        stores=(StoreSpec("local-a", settings={"monthly_egress_bytes": 10 * MiB}), StoreSpec("local-b")),
        extra_toml='\n[placement]\nreplicas = 2\nwrite_quorum = 2\nread_order = "config"\n' + admin,
    )
    s3 = make_client(daemon)
    body = os.urandom(4 * MiB)
    s3.put_object(Bucket=BUCKET, Key="obj", Body=body)

    served = []
    for _ in range(5):
        before = egress(daemon)
        data = s3.get_object(Bucket=BUCKET, Key="obj")["Body"].read()
        assert hashlib.md5(data).digest() == hashlib.md5(body).digest()
        after = egress(daemon)
        served.append([store for store in ("local-a", "local-b") if after.get(store, 0) > before.get(store, 0)])

    assert served == [["local-a"]] * 3 + [["local-b"]] * 2  # 12 MiB from local-a: past its 10 MiB
    assert egress(daemon) == {"local-a": 12 * MiB, "local-b": 8 * MiB}

    run = usage(daemon)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("local-a: ") and lines[0].endswith("(UTC), cap_mode hard")
    assert lines[2].split() == ["egress", "12.0", "MiB", "10.0", "MiB", "120%", "REACHED"]
    assert "local-b: " in run.stdout

    # Every few seconds the counts reach the database the daemons share.
    assert wait_for(lambda: metadata_rows(
        daemon, "SELECT store, egress_bytes FROM store_traffic ORDER BY store"
    ) == [("local-a", 12 * MiB), ("local-b", 8 * MiB)], timeout=30)

    # Stopped, the daemon synced its last counts: read offline from the database.
    daemon.stop()
    offline = usage(daemon, "--offline")
    assert offline.returncode == 0, offline.stderr
    # The same period and bytes (health probes went on adding class B requests meanwhile).
    assert offline.stdout.splitlines()[:4] == lines[:4]
