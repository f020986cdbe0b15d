"""Store modes and drains on the real daemon: a store put in mode drain by a reload is
emptied by the mover while clients keep reading and writing, ``s3orchestrator drain
--wait`` follows it, and a drain killed mid-way finishes after a restart."""

from __future__ import annotations

import io
import os
import random
import signal
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from s3orchestrator.cli import main as cli_main
from tests.integration.conftest import make_client, metadata_rows, store_files, wait_for
from tests.integration.daemon import BUCKET, Daemon, StoreSpec, free_port

ADMIN_TOKEN = "admin-token-for-drain-tests-0123456789"
OBJECTS = 500


def drain_toml(admin_port: int, movement: str = "interval = 0.2\nmax_concurrent = 4") -> str:
    return (f'[admin]\nlisten = "tcp:{admin_port}:interface=127.0.0.1"\ntoken = "{ADMIN_TOKEN}"\n'
            f"[movement]\n{movement}\n[placement]\ncleanup_interval = 0.5\nreaper_interval = 0.5\n")


def cli(daemon: Daemon, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main([*args, "--config", str(daemon.config), "--env-file", "/nonexistent"], stdout=out, stderr=err,
                    environ={})
    return code, out.getvalue(), err.getvalue()


def set_mode(daemon: Daemon, store: str, mode: str) -> None:
    """Put ``store`` in ``mode`` in the daemon's config file and reload it (SIGHUP)."""
    text = daemon.config.read_text()
    reloads = daemon.log().count("Reloaded ")
    daemon.config.write_text(text.replace(f'name = "{store}"\n', f'name = "{store}"\nmode = "{mode}"\n', 1))
    assert daemon.process is not None
    os.kill(daemon.process.pid, signal.SIGHUP)
    assert wait_for(lambda: daemon.log().count("Reloaded ") > reloads), daemon.log()[-2000:]


def body(key: str, version: int) -> bytes:
    return f"{key}:{version}:".encode() + b"x" * (version % 7)


def live_on(daemon: Daemon, store: str) -> int:
    return metadata_rows(daemon, "SELECT COUNT(*) FROM copies WHERE store = ?", store)[0][0]


def assert_quotas_exact(daemon: Daemon, expected: dict[str, int]) -> None:
    """Every store's used bytes are its live copies' (the cleanup queue empty)."""
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM cleanup")[0][0] == 0, timeout=20)
    used = dict(metadata_rows(daemon, "SELECT name, used_bytes FROM stores"))
    live = dict(metadata_rows(daemon, "SELECT store, COALESCE(SUM(size), 0) FROM copies GROUP BY store"))
    assert used == {name: live.get(name, 0) for name in used}
    assert used == expected


def test_a_store_drains_while_clients_read_and_write(start_daemon) -> None:
    daemon = start_daemon(stores=(StoreSpec("local-a"), StoreSpec("local-b")), extra_toml=drain_toml(free_port()))
    s3 = make_client(daemon)
    versions: dict[str, int] = {f"k{index:03d}": 0 for index in range(OBJECTS)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=BUCKET, Key=key, Body=body(key, 0)), versions))
    assert live_on(daemon, "local-a") == OBJECTS

    code, _, err = cli(daemon, "drain", "local-a")
    assert code == 1 and 'store local-a is in mode normal: set mode = "drain"' in err

    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()
    keys = sorted(versions)

    # Clients pause between requests (stop.wait): on a shared 2-core machine, boto3's
    # CPU would otherwise starve the daemon, and the test take minutes.
    def writer(mine: list[str]) -> None:
        client = make_client(daemon)
        while not stop.wait(0.02):
            key = random.choice(mine)
            with lock:
                version = versions[key] + 1
            try:
                client.put_object(Bucket=BUCKET, Key=key, Body=body(key, version))
            except Exception as error:  # noqa: BLE001 (any failure is the test's finding)
                failures.append(f"PUT {key}: {error}")
                continue
            with lock:
                versions[key] = version

    def reader() -> None:
        client = make_client(daemon)
        while not stop.wait(0.02):
            key = random.choice(keys)
            with lock:
                least = versions[key]
            try:
                got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except Exception as error:  # noqa: BLE001
                failures.append(f"GET {key}: {error}")
                continue
            name, version, _ = got.decode().split(":")
            if name != key or int(version) < least or got != body(key, int(version)):
                failures.append(f"GET {key}: {got!r}, version {least} or later expected")

    threads = [threading.Thread(target=writer, args=(keys[i::2],)) for i in range(2)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        set_mode(daemon, "local-a", "drain")
        code, out, err = cli(daemon, "drain", "local-a", "--wait", "--poll", "0.2")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert code == 0, err
    assert out.splitlines()[-1].startswith("store local-a is drained: no copy left on it")
    assert failures == []

    # No lost write: every key reads as its last acknowledged version.
    with ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(lambda key: (key, s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()), versions))
    assert got == {key: body(key, version) for key, version in versions.items()}
    assert live_on(daemon, "local-a") == 0
    assert store_files(daemon, "local-a") == []
    assert_quotas_exact(daemon, {"local-a": 0, "local-b": sum(len(body(k, v)) for k, v in versions.items())})

    code, out, _ = cli(daemon, "status")
    assert code == 0 and "drain of local-a: done, the store is empty" in out
    with urllib.request.urlopen(daemon.endpoint + "/metrics") as response:
        metrics = response.read().decode()
    assert 's3orchestrator_movement_store_drained{store="local-a"} 1.0' in metrics
    assert 's3orchestrator_movement_left_objects{reason="drain",store="local-a"} 0.0' in metrics


def test_a_drain_killed_midway_resumes_after_a_restart(start_daemon) -> None:
    daemon = start_daemon(
        stores=(StoreSpec("local-a"), StoreSpec("local-b")),
        extra_toml=drain_toml(free_port(), "interval = 0.2\nmax_concurrent = 2\nmax_bytes_per_second = 2000")
        + "[jobs]\nlease = 2\n",
        metadata_toml="lease = 3",
    )
    s3 = make_client(daemon)
    keys = [f"k{index:03d}" for index in range(60)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode() * 20), keys))
    set_mode(daemon, "local-a", "drain")
    assert wait_for(lambda: 5 < live_on(daemon, "local-b") < 55, timeout=30), daemon.log()[-2000:]
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    left = live_on(daemon, "local-a")
    assert left > 0

    daemon.start()
    assert wait_for(lambda: live_on(daemon, "local-a") == 0, timeout=60), daemon.log()[-3000:]
    for key in keys:
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == key.encode() * 20
    assert wait_for(lambda: store_files(daemon, "local-a") == [], timeout=20)
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM intents")[0][0] == 0, timeout=20)
    assert_quotas_exact(daemon, {"local-a": 0, "local-b": 60 * 80})
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM movements")[0][0] == 0)
    # A move the kill cut short after its old copy went counts as nothing left to move.
    (moved,), = metadata_rows(daemon, "SELECT moved_objects FROM movement_totals WHERE store = 'local-a'")
    assert 60 - 2 <= moved <= 60


def test_movement_pause_holds_a_drain_until_resumed(start_daemon) -> None:
    daemon = start_daemon(stores=(StoreSpec("local-a"), StoreSpec("local-b")), extra_toml=drain_toml(free_port()))
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"abc")
    code, out, _ = cli(daemon, "movement", "pause")
    assert code == 0 and out.startswith("movement paused\nmovement: PAUSED")
    set_mode(daemon, "local-a", "drain")
    s3.put_object(Bucket=BUCKET, Key="new", Body=b"new")  # no new copy on a drain store
    assert [row[0] for row in metadata_rows(daemon, "SELECT store FROM copies WHERE key = 'new'")] == ["local-b"]
    code, out, _ = cli(daemon, "drain", "local-a")
    assert code == 0 and "PAUSED" in out
    assert live_on(daemon, "local-a") == 1
    code, out, _ = cli(daemon, "movement", "resume")
    assert code == 0 and out.startswith("movement resumed\n")
    done = "drain of local-a: done, the store is empty (1 copy (3 B) moved)"
    assert wait_for(lambda: done in cli(daemon, "movement", "status")[1]), cli(daemon, "movement", "status")
