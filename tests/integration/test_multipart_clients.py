"""Multipart uploads by real clients (aws cli v1 and v2, rclone, s3cmd), as the user guide
promises: "multipart uploads work transparently"."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.integration.conftest import AWS_CLIS, aws_cli, make_client, metadata_rows, rclone_runner, s3cmd_runner
from tests.integration.daemon import BUCKET, Daemon, StoreSpec
from tests.integration.test_upstream_stores import spec

MiB = 1024 * 1024


def multipart_etag(data: bytes, chunk: int) -> str:
    """S3's quoted ETag of ``data`` uploaded in ``chunk``-byte parts."""
    parts = [data[offset:offset + chunk] for offset in range(0, len(data), chunk)]
    digest = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def assert_multipart_object(daemon: Daemon, key: str, data: bytes, chunk: int) -> None:
    """The object was made by a multipart upload of ``chunk``-byte parts, and nothing of it is left."""
    head = make_client(daemon).head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == multipart_etag(data, chunk)
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM uploads") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM parts") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]


@pytest.fixture(params=["directory", "seaweedfs"])
def any_daemon(request, start_daemon) -> Daemon:
    """A daemon over one directory store, or over one SeaweedFS upstream."""
    if request.param == "directory":
        return start_daemon(stores=[StoreSpec("store", 0)])
    seaweedfs = request.getfixturevalue("seaweedfs")
    return start_daemon(stores=[spec(seaweedfs, "store", 0, seaweedfs.new_bucket())])


# -- aws cli -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cli", sorted(AWS_CLIS))
def test_aws_s3_cp_uses_multipart_above_the_default_threshold(daemon, tmp_path, cli):
    aws = aws_cli(cli, daemon, tmp_path)
    source = tmp_path / "twenty.bin"
    data = random_file(source, 20 * MiB)
    aws("s3", "cp", str(source), f"s3://{BUCKET}/big/twenty.bin")
    assert_multipart_object(daemon, "big/twenty.bin", data, 8 * MiB)  # 8 MB = 8 MiB for the aws cli
    target = tmp_path / "back.bin"
    aws("s3", "cp", f"s3://{BUCKET}/big/twenty.bin", str(target))
    assert target.read_bytes() == data


@pytest.mark.parametrize("cli", [
    "v1",
    # v2 asks GetObjectTagging first, to copy the tags along (there are none).
    "v2",
])
def test_aws_s3_cp_within_the_bucket_above_the_threshold_is_a_multipart_copy(daemon, tmp_path, cli):
    aws = aws_cli(cli, daemon, tmp_path)
    data = os.urandom(20 * MiB)
    make_client(daemon).put_object(Bucket=BUCKET, Key="old/location.bin", Body=data)
    # The guide's command; above the threshold the cli copies with UploadPartCopy and byte ranges.
    aws("s3", "cp", f"s3://{BUCKET}/old/location.bin", f"s3://{BUCKET}/new/location.bin")
    assert_multipart_object(daemon, "new/location.bin", data, 8 * MiB)
    assert make_client(daemon).get_object(Bucket=BUCKET, Key="new/location.bin")["Body"].read() == data


@pytest.mark.parametrize("cli", sorted(AWS_CLIS))
def test_aws_s3_cp_with_the_guides_threshold_and_chunk_size(daemon, tmp_path, cli):
    aws = aws_cli(cli, daemon, tmp_path)
    # The guide's commands (without --profile: the runner's temporary config is the default profile).
    aws("configure", "set", "s3.multipart_threshold", "64MB")
    aws("configure", "set", "s3.multipart_chunksize", "16MB")
    assert "multipart_chunksize = 16MB" in (tmp_path / f"home-{cli}" / "aws-config").read_text()
    source = tmp_path / "hundred.bin"
    data = random_file(source, 100 * MiB)
    aws("s3", "cp", str(source), f"s3://{BUCKET}/big/hundred.bin")
    assert_multipart_object(daemon, "big/hundred.bin", data, 16 * MiB)
    target = tmp_path / "back.bin"
    aws("s3", "cp", f"s3://{BUCKET}/big/hundred.bin", str(target))
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_aws_cli_v2_cp_over_a_seaweedfs_upstream(start_daemon, seaweedfs, tmp_path):
    daemon = start_daemon(stores=[spec(seaweedfs, "store", 0, seaweedfs.new_bucket())])
    aws = aws_cli("v2", daemon, tmp_path)
    source = tmp_path / "twenty.bin"
    data = random_file(source, 20 * MiB)
    aws("s3", "cp", str(source), f"s3://{BUCKET}/twenty.bin")
    assert_multipart_object(daemon, "twenty.bin", data, 8 * MiB)
    target = tmp_path / "back.bin"
    aws("s3", "cp", f"s3://{BUCKET}/twenty.bin", str(target))
    assert target.read_bytes() == data


# -- rclone ------------------------------------------------------------------------------------


def test_rclone_copy_multipart_check_and_copy_back(any_daemon, tmp_path):
    rclone = rclone_runner(any_daemon, tmp_path)
    local = tmp_path / "up"
    local.mkdir()
    data = random_file(local / "forty.bin", 40 * MiB)
    rclone("copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(local), f"orchestrator:{BUCKET}/rc/")
    assert_multipart_object(any_daemon, "rc/forty.bin", data, 5 * MiB)
    # rclone keeps the MD5 of multipart uploads in x-amz-meta-md5chksum: check compares it.
    head = make_client(any_daemon).head_object(Bucket=BUCKET, Key="rc/forty.bin")
    assert "md5chksum" in head["Metadata"]
    checked = rclone("check", str(local), f"orchestrator:{BUCKET}/rc/")
    assert "0 differences found" in checked
    rclone("copy", f"orchestrator:{BUCKET}/rc/forty.bin", str(tmp_path / "down"))
    assert (tmp_path / "down" / "forty.bin").read_bytes() == data


# -- s3cmd -------------------------------------------------------------------------------------


def test_s3cmd_put_multipart_and_get(daemon, tmp_path):
    s3cmd = s3cmd_runner(daemon, tmp_path)
    source = tmp_path / "thirty.bin"
    data = random_file(source, 30 * MiB)
    s3cmd("put", "--multipart-chunk-size-mb=5", str(source), f"s3://{BUCKET}/s3cmd/thirty.bin")
    assert_multipart_object(daemon, "s3cmd/thirty.bin", data, 5 * MiB)
    target = tmp_path / "got.bin"
    s3cmd("get", f"s3://{BUCKET}/s3cmd/thirty.bin", str(target))
    assert target.read_bytes() == data
    assert "s3cmd/thirty.bin" in s3cmd("ls", f"s3://{BUCKET}/s3cmd/")
