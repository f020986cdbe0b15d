"""``s3orchestrator import`` on the real daemon: a SeaweedFS bucket filled directly with boto3
and a directory store holding plain files become objects of a virtual bucket, read through
the daemon; a second run changes nothing; an interrupted run resumes from its checkpoint."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, wait_for
from tests.integration.daemon import BUCKET, REPO, Daemon, StoreSpec, free_port
from tests.integration.metadata_engines import write_locked
from tests.integration.upstreams import Upstream

MiB = 1024 * 1024
TOKEN = "import-admin-token-0123456789abcdef"
FAST_CLEANUP = "[placement]\ncleanup_interval = 0.2\n"


def admin_toml() -> str:
    return f'[admin]\nlisten = "tcp:{free_port()}:interface=127.0.0.1"\ntoken = "{TOKEN}"\n'


def s3_spec(upstream: Upstream, name: str, quota: int, bucket: str, endpoint: str | None = None) -> StoreSpec:
    return StoreSpec(name, quota, s3={
        "endpoint": endpoint or upstream.endpoint, "bucket": bucket, "region": upstream.region,
        "access_key_id": upstream.access_key, "secret_access_key": upstream.secret_key, "timeout": 5})


def run_import(daemon: Daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s3orchestrator.cli", "import", "--config", str(daemon.config), "--interval", "0.1",
         *args],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120,
    )


def used_bytes(daemon: Daemon, store: str) -> int:
    return int(metadata_rows(daemon, "SELECT used_bytes FROM stores WHERE name = ?", store)[0][0])


def usage_is_exact(daemon: Daemon) -> None:
    """Each store's used bytes are its live copies and the bytes queued for cleanup there."""
    used = dict(metadata_rows(daemon, "SELECT name, used_bytes FROM stores"))
    copies = dict(metadata_rows(daemon, "SELECT store, SUM(size) FROM copies WHERE state = 'live' GROUP BY store"))
    queued = dict(metadata_rows(daemon, "SELECT store, SUM(size) FROM cleanup GROUP BY store"))
    assert used == {name: copies.get(name, 0) + queued.get(name, 0) for name in used}


def upstream_keys(upstream: Upstream, bucket: str) -> set[str]:
    listed = upstream.boto.list_objects_v2(Bucket=bucket)
    return {item["Key"] for item in listed.get("Contents", ())}


def test_a_seaweedfs_bucket_filled_with_boto3_is_read_through_the_daemon(start_daemon, seaweedfs) -> None:
    up = seaweedfs.new_bucket()
    client = seaweedfs.boto
    bodies = {"photos/2024/a.jpg": b"\xff\xd8 jpeg bytes", "docs/readme.txt": b"read me\n", "top": b"top level",
              "odd key ü &+%": b"odd"}
    client.put_object(Bucket=up, Key="photos/2024/a.jpg", Body=bodies["photos/2024/a.jpg"], ContentType="image/jpeg",
                      Metadata={"camera": "x100"})
    client.put_object(Bucket=up, Key="docs/readme.txt", Body=bodies["docs/readme.txt"], ContentType="text/plain",
                      CacheControl="max-age=60")
    client.put_object(Bucket=up, Key="top", Body=bodies["top"])
    client.put_object(Bucket=up, Key="odd key ü &+%", Body=bodies["odd key ü &+%"])
    parts = [b"a" * (5 * MiB), b"b" * 100]
    upload = client.create_multipart_upload(Bucket=up, Key="big/multi", ContentType="application/x-big")["UploadId"]
    etags = [client.upload_part(Bucket=up, Key="big/multi", UploadId=upload, PartNumber=n, Body=data)["ETag"]
             for n, data in enumerate(parts, 1)]
    client.complete_multipart_upload(Bucket=up, Key="big/multi", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]})
    bodies["big/multi"] = b"".join(parts)
    client.put_object(Bucket=up, Key=f"{BUCKET}/own", Body=b"the daemon's area")  # never imported
    total = sum(len(body) for body in bodies.values())

    # New objects go to the directory store first; the SeaweedFS store's quota is far too small.
    daemon = start_daemon(stores=[StoreSpec("local", 10**9), s3_spec(seaweedfs, "sw", 1000, up)],
                          extra_toml=admin_toml() + FAST_CLEANUP)
    first = run_import(daemon, "--store", "sw", "--bucket", BUCKET)
    assert first.returncode == 0, first.stderr + daemon.log()[-3000:]
    assert f"done: 5 objects ({total} bytes) imported, 0 already imported" in first.stdout
    assert f"store sw: {total} bytes used, OVER its quota of 1000 bytes" in first.stdout

    s3 = make_client(daemon)
    assert {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]} == set(bodies)
    for key, body in bodies.items():
        got = s3.get_object(Bucket=BUCKET, Key=key)
        assert got["Body"].read() == body
        assert got["ETag"] == client.head_object(Bucket=up, Key=key)["ETag"]
    assert s3.head_object(Bucket=BUCKET, Key="big/multi")["ETag"].endswith('-2"')
    photo = s3.head_object(Bucket=BUCKET, Key="photos/2024/a.jpg")
    assert (photo["ContentType"], photo["Metadata"]) == ("image/jpeg", {"camera": "x100"})
    readme = s3.head_object(Bucket=BUCKET, Key="docs/readme.txt")
    assert (readme["ContentType"], readme["CacheControl"]) == ("text/plain", "max-age=60")
    assert used_bytes(daemon, "sw") == total
    usage_is_exact(daemon)

    # Again: everything is there already; nothing changes.
    second = run_import(daemon, "--store", "sw", "--bucket", BUCKET)
    assert second.returncode == 0, second.stderr
    assert "done: 0 objects (0 bytes) imported, 5 already imported" in second.stdout
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(5,)]
    assert used_bytes(daemon, "sw") == total

    # The daemon now manages the imported bytes: replaced or deleted, they leave the upstream.
    s3.put_object(Bucket=BUCKET, Key="docs/readme.txt", Body=b"new text")
    s3.delete_object(Bucket=BUCKET, Key="top")
    assert s3.get_object(Bucket=BUCKET, Key="docs/readme.txt")["Body"].read() == b"new text"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="top")
    assert wait_for(lambda: upstream_keys(seaweedfs, up) == {"photos/2024/a.jpg", "odd key ü &+%", "big/multi",
                                                               f"{BUCKET}/own"})
    assert wait_for(lambda: used_bytes(daemon, "sw") == total - len(bodies["top"]) - len(bodies["docs/readme.txt"]))
    usage_is_exact(daemon)

    # A bucket that would write where imported objects are cannot be configured: not by a reload...
    daemon.config.write_text(daemon.config.read_text() + '[[buckets]]\nname = "photos"\n'
                             '[[buckets.credentials]]\naccess_key_id = "AKPHOTOS"\nsecret_access_key = "secret"\n')
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "refused, keeping the running configuration: bucket 'photos' would keep its objects"
                            " under 'photos' on store 'sw'" in daemon.log())
    # ... nor at a start.
    daemon.stop()
    daemon.log_path.rename(daemon.directory / "first-run.log")  # start() waits for a line of the new run
    with pytest.raises(RuntimeError, match="bucket 'photos' would keep its objects under 'photos' on store 'sw'"):
        daemon.start()


def test_plain_files_of_a_directory_store_are_imported_and_replicated(start_daemon) -> None:
    replication = "[placement]\nreplicas = 2\nwrite_quorum = 1\nreplication_interval = 3600\n"
    daemon = start_daemon(extra_toml=admin_toml() + replication)
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="mine", Body=b"written through the daemon")
    root = daemon.directory / "stores" / "local-a"
    files = {"site/index.html": b"<html></html>", "site/css/a.css": b"p {}", "notes.txt": b"notes"}
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)

    result = run_import(daemon, "--store", "local-a", "--bucket", BUCKET)
    assert result.returncode == 0, result.stderr + daemon.log()[-3000:]
    assert "done: 3 objects (22 bytes) imported, 0 already imported, 0 kept" in result.stdout
    # The replicator (woken by the import) copies each imported object to the other store.
    for name, body in files.items():
        assert wait_for(lambda name=name: dict(metadata_rows(
            daemon, "SELECT store, location FROM copies WHERE bucket = ? AND key = ? AND state = 'live'",
            BUCKET, name)) == {"local-a": f"/{name}", "local-b": f"{BUCKET}/{name}"}), daemon.log()[-3000:]
        got = s3.get_object(Bucket=BUCKET, Key=name)
        assert got["Body"].read() == body and got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.head_object(Bucket=BUCKET, Key="site/index.html")["ContentType"] == "text/html"
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(4,)]  # "mine" was not imported again

    under_site = run_import(daemon, "--store", "local-a", "--bucket", BUCKET, "--prefix", "site/")
    assert "done: 0 objects (0 bytes) imported, 2 already imported" in under_site.stdout
    usage_is_exact(daemon)

    unknown_store = run_import(daemon, "--store", "nowhere", "--bucket", BUCKET)
    assert unknown_store.returncode == 1 and "no store 'nowhere' is configured" in unknown_store.stderr
    unknown_bucket = run_import(daemon, "--store", "local-a", "--bucket", "nobody")
    assert unknown_bucket.returncode == 1 and "no bucket 'nobody' is configured" in unknown_bucket.stderr


def test_imported_objects_are_read_from_where_they_were_found_while_the_metadata_is_unavailable(start_daemon) -> None:
    daemon = start_daemon(extra_toml=admin_toml(), health=(0.3, 3),
                          metadata_toml="busy_timeout = 0.2\nunavailable_after = 1.0")
    root = daemon.directory / "stores" / "local-b"  # the second store: not where a read looks first
    files = {"docs/guide.txt": b"a guide", "top.txt": b"top"}
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
    result = run_import(daemon, "--store", "local-b", "--bucket", BUCKET)
    assert result.returncode == 0, result.stderr + daemon.log()[-3000:]
    s3 = make_client(daemon)

    with write_locked(daemon.config):
        def unavailable() -> bool:
            try:
                s3.put_object(Bucket=BUCKET, Key="refused", Body=b"x")
            except ClientError as refused:
                return refused.response["Error"]["Code"] == "ServiceUnavailable"
            return False

        assert wait_for(unavailable, timeout=20)
        for name, body in files.items():
            got = s3.get_object(Bucket=BUCKET, Key=name)
            assert (got["Body"].read(), got["ContentLength"]) == (body, len(body))
        assert s3.head_object(Bucket=BUCKET, Key="docs/guide.txt")["ContentLength"] == len(files["docs/guide.txt"])
        with pytest.raises(ClientError) as missing:
            s3.get_object(Bucket=BUCKET, Key="docs/none.txt")
        assert missing.value.response["Error"]["Code"] == "NoSuchKey"


class StallingProxy:
    """TCP to ``port``, holding any HEAD request whose line holds ``stall`` until ``release``
    is set. Requests must have no body (GET, HEAD, DELETE)."""

    def __init__(self, port: int, stall: bytes) -> None:
        self.target = port
        self.stall = stall
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        try:
            while data := client.recv(65536):
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    if head.startswith(b"HEAD ") and self.stall in head.partition(b"\r\n")[0]:
                        self.stalled.set()
                        self.release.wait()
                    upstream.sendall(head + b"\r\n\r\n")
        except OSError:
            pass
        finally:
            upstream.close()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            target.close()

    def close(self) -> None:
        self.release.set()
        self.server.close()


def test_an_import_interrupted_by_a_killed_daemon_is_resumed_by_the_restarted_one(start_daemon, seaweedfs) -> None:
    up = seaweedfs.new_bucket()
    keys = [f"k/{number:03d}" for number in range(150)]
    client = seaweedfs.boto  # made once: making boto3 clients is not thread-safe
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=up, Key=key, Body=key.encode()), keys))
    proxy = StallingProxy(int(seaweedfs.endpoint.rsplit(":", 1)[1]), b"/k/120 ")
    try:
        daemon = start_daemon(
            stores=[s3_spec(seaweedfs, "sw", 0, up, endpoint=f"http://127.0.0.1:{proxy.port}")],
            extra_toml=admin_toml(), metadata_toml="lease = 2\nbusy_timeout = 1",
        )
        command = subprocess.Popen(
            [sys.executable, "-m", "s3orchestrator.cli", "import", "--config", str(daemon.config), "--store", "sw",
             "--bucket", BUCKET, "--interval", "0.1"],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        # The first page (k/000 to k/099) is committed; the second waits on the HEAD of k/120.
        assert proxy.stalled.wait(30)
        assert wait_for(lambda: metadata_rows(daemon, "SELECT after_key, imported_objects FROM imports")
                        == [("k/099", 100)]), metadata_rows(daemon, "SELECT * FROM imports")
        assert daemon.process is not None
        daemon.process.kill()
        daemon.process.wait()
        output, errors = command.communicate(timeout=30)
        assert command.returncode == 1 and "run the command again to resume it" in errors, output + errors
        proxy.release.set()

        # Once the killed instance's lease (2 s) has run out, the restarted daemon resumes the import itself.
        assert wait_for(lambda: metadata_rows(
            daemon, "SELECT COUNT(*) FROM instances i JOIN imports m ON i.id = m.owner WHERE i.expires_ms > ?",
            int(time.time() * 1000)) == [(0,)])
        daemon.log_path.rename(daemon.directory / "killed-run.log")  # start() waits for a line of the new run
        daemon.start()
        assert wait_for(lambda: metadata_rows(daemon, "SELECT state FROM imports") == [("done",)], timeout=30), (
            daemon.log()[-3000:])
        assert "Import of sw/ into bucket app1-files started after 'k/099'" in daemon.log()
        assert metadata_rows(daemon, "SELECT imported_objects, imported_bytes, present FROM imports") == [
            (150, 750, 0)]
        assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(150,)]
        assert used_bytes(daemon, "sw") == 750
        s3 = make_client(daemon)
        assert s3.get_object(Bucket=BUCKET, Key="k/120")["Body"].read() == b"k/120"
    finally:
        proxy.close()

