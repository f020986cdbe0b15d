"""Tests for how S3Handler answers a signed request naming a bucket its key does not own."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
from twisted.internet.task import Clock

from s3orchestrator.auth.sigv4 import Credential, format_amz_date, sign_request
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.web.handler import S3Handler
from s3orchestrator.web.site import S3Site
from tests.unit.fakes import RecordingStringTransport

NOW = 1_767_225_600.0
HOST = "s3.test"
KEYS = {"AKIDMINE": Credential("AKIDMINE", "mine-secret", "mine")}
CONFIGURED = {"mine", "theirs"}


class AnsweringApi:
    """An S3Api that answers every operation it is handed with 200."""

    def needs_body(self, operation: str) -> bool:
        return False

    async def dispatch(self, operation: str, call: S3Call) -> S3Response:
        return S3Response(200)


def answer(method: str, path: str, secret: str = "mine-secret") -> tuple[int, ElementTree.Element | None]:
    """Status and error document of a request signed by AKIDMINE (with ``secret``)."""
    clock = Clock()
    clock.advance(NOW)
    handler = S3Handler(
        AnsweringApi(), KEYS.get, clock, bucket_exists=CONFIGURED.__contains__  # type: ignore[arg-type]
    )
    channel = S3Site(handler, timeout=60, reactor=clock).buildProtocol(None)
    transport = RecordingStringTransport()
    channel.makeConnection(transport)
    signed = sign_request(method, path, "", {"host": HOST}, access_key_id="AKIDMINE", secret_access_key=secret,
                          region="us-east-1", amz_date=format_amz_date(NOW))
    lines = [f"{method} {path} HTTP/1.1", f"host: {HOST}", "content-length: 0"]
    lines += [f"{name}: {value}" for name, value in signed.items()]
    channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), ElementTree.fromstring(body) if body else None


def code(document: ElementTree.Element | None) -> str | None:
    return None if document is None else document.findtext("Code")


@pytest.mark.parametrize(("method", "path"), [("GET", "/nowhere/key"), ("PUT", "/nowhere/key"), ("GET", "/nowhere")])
def test_a_bucket_configured_for_no_key_does_not_exist(method: str, path: str) -> None:
    status, document = answer(method, path)
    assert (status, code(document)) == (404, "NoSuchBucket")
    assert document is not None and document.findtext("BucketName") == "nowhere"


def test_another_keys_bucket_is_access_denied() -> None:
    status, document = answer("GET", "/theirs/key")
    assert (status, code(document)) == (403, "AccessDenied")


def test_a_bad_signature_is_refused_before_the_bucket_is_looked_up() -> None:
    # No oracle: without a valid signature nobody learns which buckets exist.
    for path in ("/nowhere/key", "/theirs/key", "/mine/key"):
        status, document = answer("GET", path, secret="wrong")
        assert (status, code(document)) == (403, "SignatureDoesNotMatch")


def test_creating_a_bucket_that_does_not_exist_is_access_denied() -> None:
    status, document = answer("PUT", "/nowhere")
    assert (status, code(document)) == (403, "AccessDenied")


def test_the_keys_own_bucket_is_served() -> None:
    assert answer("GET", "/mine/key")[0] == 200
