"""Rebalancing over real stores: ``s3orchestrator rebalance --dry-run`` then for real, the
mover carrying the moves out, every object read back by a real client."""

from __future__ import annotations

import io
import random
import signal
import time
from fractions import Fraction

import attrs

from s3orchestrator.cli import main
from tests.integration.conftest import make_client, metadata_rows, store_files, wait_for
from tests.integration.daemon import BUCKET, Daemon, StoreSpec, free_port
from tests.integration.test_upstream_stores import spec

KiB = 1024
QUOTAS = {"local-a": 1024 * KiB, "local-b": 1024 * KiB, "sw": 2048 * KiB}
TOLERANCE = Fraction(5, 100)


@attrs.frozen
class Ran:
    returncode: int
    stdout: str
    stderr: str


def command(daemon: Daemon, *arguments: str) -> Ran:
    """``s3orchestrator ARGUMENTS --config`` the daemon's file (in this process: the
    command is plain blocking HTTP to the admin API, and an interpreter start per call
    would cost more than the rest)."""
    out, err = io.StringIO(), io.StringIO()
    code = main([*arguments, "--config", str(daemon.config)], stdout=out, stderr=err, environ={})
    return Ran(code, out.getvalue(), err.getvalue())


def rebalance(daemon: Daemon, *options: str) -> Ran:
    return command(daemon, "rebalance", *options)


def queued(daemon: Daemon) -> int:
    return int(metadata_rows(daemon, "SELECT COUNT(*) FROM movements")[0][0])


def live(daemon: Daemon) -> dict[str, tuple[int, int]]:
    """(copies, bytes) live on each store."""
    return {store: (int(count), int(size)) for store, count, size in metadata_rows(
        daemon, "SELECT store, COUNT(*), SUM(size) FROM copies WHERE state = 'live' GROUP BY store")}


def test_rebalance_dry_run_then_for_real_over_directory_stores_and_seaweedfs(start_daemon, seaweedfs) -> None:
    sw_bucket = seaweedfs.new_bucket()
    admin = f'[admin]\nlisten = "tcp:{free_port()}:interface=127.0.0.1"\ntoken = "rebalance-test-token"\n'
    daemon = start_daemon(
        stores=[StoreSpec("local-a", QUOTAS["local-a"]), StoreSpec("local-b", QUOTAS["local-b"]),
                spec(seaweedfs, "sw", QUOTAS["sw"], sw_bucket)],
        routing_strategy="pack",
        extra_toml=admin + "[movement]\ninterval = 0.3\nrebalance_tolerance = 0.05\n"
                           "[placement]\ncleanup_interval = 0.3\n",
    )
    s3 = make_client(daemon)
    generator = random.Random(15)
    bodies = {f"dir/{i:02d}": generator.randbytes(generator.randrange(4 * KiB, 12 * KiB)) for i in range(40)}
    for key, body in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    total = sum(map(len, bodies.values()))
    mean = Fraction(total, sum(QUOTAS.values()))
    assert live(daemon) == {"local-a": (40, total)}  # pack: all on the first store

    refused = rebalance(daemon, "--dry-run")
    assert refused.returncode == 1
    assert "routing_strategy is 'pack'" in refused.stderr

    daemon.config.write_text(daemon.config.read_text().replace('routing_strategy = "pack"',
                                                               'routing_strategy = "spread"'))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "Reloaded " in daemon.log()), daemon.log()[-3000:]

    # The dry run plans, and nothing moves.
    dry = rebalance(daemon, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    planned = int(lines[0].split()[0])
    assert lines[0].endswith(f"mean fill {100 * float(mean):.1f}%, tolerance 5.0%") and planned > 0, dry.stdout
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert rows["local-a"][5] == f"{100 * total / QUOTAS['local-a']:.1f}%"
    assert rows["local-a"][9] == str(planned)  # OUT column: copies
    assert lines[-1].startswith("dry run: nothing queued")
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM movements") == [(0,)]
    assert live(daemon) == {"local-a": (40, total)}
    assert store_files(daemon, "local-b") == []

    # For real, movement paused: queued, and kept across a restart while paused.
    assert command(daemon, "movement", "pause").returncode == 0
    real = rebalance(daemon)
    assert real.returncode == 0, real.stderr
    assert real.stdout.splitlines()[-1] == f"queued {planned} of {planned} moves for the mover"
    time.sleep(1.0)  # three mover intervals: nothing may move while paused
    assert queued(daemon) == planned and store_files(daemon, "local-b") == []
    daemon.stop()
    daemon.log_path.rename(daemon.directory / "daemon-before-restart.log")
    daemon.start()
    time.sleep(1.0)
    assert queued(daemon) == planned and store_files(daemon, "local-b") == []

    # Resumed, the mover makes the moves.
    started = time.monotonic()
    assert command(daemon, "movement", "resume").returncode == 0
    assert wait_for(lambda: queued(daemon) == 0, timeout=60), daemon.log()[-3000:]
    elapsed = time.monotonic() - started
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM cleanup") == [(0,)], timeout=30)

    copies = live(daemon)
    assert sum(count for count, _ in copies.values()) == 40
    assert copies["local-a"][0] == 40 - planned
    assert copies["local-b"][0] > 0 and copies["sw"][0] > 0
    for store, (_, size) in copies.items():
        assert abs(Fraction(size, QUOTAS[store]) - mean) <= TOLERANCE, (store, copies)
    # The old copies are gone from the stores, the new ones are there.
    assert len(store_files(daemon, "local-a")) == copies["local-a"][0]
    assert len(store_files(daemon, "local-b")) == copies["local-b"][0]
    assert seaweedfs.boto.list_objects_v2(Bucket=sw_bucket).get("KeyCount", 0) == copies["sw"][0]
    used = dict(metadata_rows(daemon, "SELECT name, used_bytes FROM stores"))
    assert used == {store: copies.get(store, (0, 0))[1] for store in QUOTAS}

    # A real client reads every object back, byte for byte, and lists them all.
    for key, body in bodies.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body, key
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="dir/")
    assert [item["Key"] for item in listed["Contents"]] == sorted(bodies)

    status = command(daemon, "status").stdout.splitlines()
    progress = [line for line in status if line.startswith("rebalance of local-a: ")]
    assert len(progress) == 1 and progress[0].startswith(f"rebalance of local-a: {planned} copies ("), status
    assert "moved, 0 (0 B) left" in progress[0]
    again = rebalance(daemon, "--dry-run")
    assert again.stdout.startswith(
        f"balanced: every store is within 5.0% of the mean fill {100 * float(mean):.1f}%; nothing to move")
    moved = sum(size for store, (_, size) in copies.items() if store != "local-a")
    print(f"\nrebalance: {planned} copies, {moved} bytes moved in {elapsed:.2f} s"
          f" ({moved / elapsed / KiB:.0f} KiB/s, {planned / elapsed:.1f} copies/s)")


def test_the_periodic_rebalance_runs_on_one_of_two_daemons_on_postgresql(
    postgres_database, start_daemon, seaweedfs, tmp_path,
) -> None:
    quotas = {"sw-a": 1024 * KiB, "sw-b": 1024 * KiB, "shared": 2048 * KiB}
    stores = [spec(seaweedfs, name, quotas[name], seaweedfs.new_bucket()) for name in ("sw-a", "sw-b")]
    settings = (f'[[stores]]\nname = "shared"\ntype = "directory"\npath = "{tmp_path / "shared"}"\n'
                f'quota_bytes = {quotas["shared"]}\n'
                "[movement]\ninterval = 0.3\nrebalance_interval = 0\n[placement]\ncleanup_interval = 0.3\n")
    daemons = [start_daemon(metadata_url=postgres_database.url_with_password, stores=stores, extra_toml=settings)
               for _ in range(2)]
    clients = [make_client(daemon) for daemon in daemons]
    generator = random.Random(14)
    bodies = {f"two/{i:02d}": generator.randbytes(generator.randrange(4 * KiB, 12 * KiB)) for i in range(40)}
    for i, (key, body) in enumerate(bodies.items()):
        clients[i % 2].put_object(Bucket=BUCKET, Key=key, Body=body)
    total = sum(map(len, bodies.values()))
    assert live(daemons[0]) == {"sw-a": (40, total)}

    # Spread, and a rebalance every half second: both daemons reload; one runs the job.
    for daemon in daemons:
        text = daemon.config.read_text().replace('routing_strategy = "pack"', 'routing_strategy = "spread"')
        daemon.config.write_text(text.replace("rebalance_interval = 0", "rebalance_interval = 0.5"))
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: all("Reloaded " in daemon.log() for daemon in daemons))
    mean = Fraction(total, sum(quotas.values()))

    def balanced() -> bool:
        copies = live(daemons[0])
        return queued(daemons[0]) == 0 and all(
            abs(Fraction(copies.get(store, (0, 0))[1], quota) - mean) <= TOLERANCE for store, quota in quotas.items())

    assert wait_for(balanced, timeout=60), (live(daemons[0]), daemons[0].log()[-2000:], daemons[1].log()[-2000:])
    # One daemon planned it, and no copy moved twice.
    assert len([daemon for daemon in daemons if "Rebalance: queued " in daemon.log()]) == 1
    copies = live(daemons[0])
    assert sum(count for count, _ in copies.values()) == 40
    assert metadata_rows(daemons[0], "SELECT moved_objects FROM movement_totals WHERE reason = 'rebalance'"
                                     " AND store = 'sw-a'") == [(40 - copies["sw-a"][0],)]
    for client in clients:
        for key, body in bodies.items():
            assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body, key
