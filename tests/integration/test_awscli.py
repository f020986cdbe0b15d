"""The user guide's aws cli object commands, with the PyPI v1 cli and Debian's v2 cli."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.conftest import AWS_CLIS, aws_cli
from tests.integration.daemon import BUCKET, Daemon

MiB = 1024 * 1024


@pytest.fixture
def daemon(module_daemon: Daemon) -> Daemon:
    """The module's daemon: each test writes the keys it reads."""
    return module_daemon


@pytest.fixture(params=sorted(AWS_CLIS))
def aws(request, daemon, tmp_path):
    """Run ``aws --endpoint-url ... ARGS`` with each aws cli and return its stdout."""
    return aws_cli(request.param, daemon, tmp_path)


def test_cp_up_and_down_round_trips(aws, tmp_path):
    source = tmp_path / "myfile.txt"
    source.write_bytes(os.urandom(5 * MiB + 3))
    aws("s3", "cp", str(source), f"s3://{BUCKET}/path/to/myfile.txt")
    target = tmp_path / "back.txt"
    aws("s3", "cp", f"s3://{BUCKET}/path/to/myfile.txt", str(target))
    assert target.read_bytes() == source.read_bytes()


def test_rm_deletes(aws, tmp_path):
    source = tmp_path / "f"
    source.write_bytes(b"data")
    aws("s3", "cp", str(source), f"s3://{BUCKET}/f")
    aws("s3", "rm", f"s3://{BUCKET}/f")
    with pytest.raises(AssertionError, match="404|Not Found"):
        aws("s3api", "head-object", "--bucket", BUCKET, "--key", "f")


def test_s3api_put_get_head_object(aws, tmp_path):
    source = tmp_path / "data.json"
    source.write_bytes(b'{"key": "value"}')
    put = json.loads(aws(
        "s3api", "put-object", "--bucket", BUCKET, "--key", "path/to/data.json", "--body", str(source),
        "--content-type", "application/json", "--metadata", "team=storage",
    ))
    head = json.loads(aws("s3api", "head-object", "--bucket", BUCKET, "--key", "path/to/data.json"))
    assert head["ETag"] == put["ETag"]
    assert head["ContentType"] == "application/json"
    assert head["ContentLength"] == 16
    assert head["Metadata"] == {"team": "storage"}
    target = tmp_path / "out.json"
    got = json.loads(aws("s3api", "get-object", "--bucket", BUCKET, "--key", "path/to/data.json", str(target)))
    assert got["ETag"] == put["ETag"]
    assert target.read_bytes() == source.read_bytes()


def test_s3api_ranged_get(aws, tmp_path):
    source = tmp_path / "r"
    source.write_bytes(bytes(range(256)))
    aws("s3api", "put-object", "--bucket", BUCKET, "--key", "r", "--body", str(source))
    target = tmp_path / "part"
    got = json.loads(
        aws("s3api", "get-object", "--bucket", BUCKET, "--key", "r", "--range", "bytes=10-19", str(target))
    )
    assert got["ContentRange"] == "bytes 10-19/256"
    assert target.read_bytes() == bytes(range(10, 20))


def test_cp_64_mib_single_put_round_trips(aws, tmp_path):
    # Multipart is a separate capability; raise the threshold so cp sends one PutObject.
    home = next(tmp_path.glob("home-*"))
    (home / "aws-config").write_text("[default]\ns3 =\n  multipart_threshold = 128MB\n")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(64 * MiB))
    aws("s3", "cp", str(source), f"s3://{BUCKET}/big.bin")
    target = tmp_path / "big.out"
    aws("s3", "cp", f"s3://{BUCKET}/big.bin", str(target))
    assert target.read_bytes() == source.read_bytes()
