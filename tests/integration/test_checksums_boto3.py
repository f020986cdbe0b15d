"""boto3 uploads with each ChecksumAlgorithm: the daemon verifies every x-amz-checksum-*, natively."""

from __future__ import annotations

import base64
import hashlib
import os

import botocore
import pytest
from boto3.s3.transfer import TransferConfig

from tests.integration.conftest import make_client
from tests.integration.daemon import BUCKET, Daemon

MiB = 1024 * 1024
ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
# Current botocore computes CRC32C and CRC64NVME with awscrt, installed as our dependency.
WRONG_VALUES = {"CRC32": b"\0" * 4, "CRC32C": b"\0" * 4, "CRC64NVME": b"\0" * 8, "SHA1": b"\0" * 20,
                "SHA256": b"\0" * 32}


@pytest.fixture
def daemon(module_daemon: Daemon) -> Daemon:
    """The module's daemon: each test uses keys of its own."""
    return module_daemon


def sent_headers(s3) -> dict[str, str]:
    """The headers of every PutObject the client sends from now on (the last one wins)."""
    sent: dict[str, str] = {}
    s3.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.update(
            (k.lower(), v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()))
    return sent


def test_the_daemon_computes_every_crc_natively(daemon):
    assert "computed in pure Python" not in daemon.log()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_put_object_with_each_checksum_algorithm(s3, algorithm):
    sent = sent_headers(s3)
    body = os.urandom(2 * MiB + 3)
    put = s3.put_object(Bucket=BUCKET, Key=f"checksummed-{algorithm}", Body=body, ChecksumAlgorithm=algorithm)
    assert f"x-amz-checksum-{algorithm.lower()}" in sent  # a header over plain HTTP, verified by the daemon
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.get_object(Bucket=BUCKET, Key=f"checksummed-{algorithm}")["Body"].read() == body


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_wrong_checksum_is_bad_digest_and_stores_nothing(s3, algorithm):
    wrong = base64.b64encode(WRONG_VALUES[algorithm]).decode()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3.put_object(Bucket=BUCKET, Key=f"wrong-{algorithm}", Body=os.urandom(MiB),
                      **{f"Checksum{algorithm}": wrong})
    assert info.value.response["Error"]["Code"] == "BadDigest"
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"wrong-{algorithm}")["KeyCount"] == 0


@pytest.mark.parametrize("algorithm", ("CRC32C", "CRC64NVME"))
def test_upload_file_in_parts_with_a_crc(daemon, tmp_path, algorithm):
    s3 = make_client(daemon)
    source = tmp_path / "object.bin"
    body = os.urandom(12 * MiB + 7)
    source.write_bytes(body)
    parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=1)
    s3.upload_file(str(source), BUCKET, f"parts-{algorithm}", ExtraArgs={"ChecksumAlgorithm": algorithm},
                   Config=parts)
    assert s3.get_object(Bucket=BUCKET, Key=f"parts-{algorithm}")["Body"].read() == body
