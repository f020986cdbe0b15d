"""Whole-body verification: framing, length, SHA-256, Content-MD5 and x-amz-checksum-*.

Given ``threads`` (the reactor), a large body's digests are computed in a worker
thread (see auth.digests): ``finish`` then waits for ``digested``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Callable

import attrs
from twisted.internet.defer import Deferred

from s3orchestrator.auth.checksums import ALGORITHMS, CHECKSUM_HEADERS, Checksum, new_checksum
from s3orchestrator.auth.chunked import AwsChunkedDecoder, ChunkSignatureChain
from s3orchestrator.auth.digests import THREAD_MIN_BYTES, InlineDigests, ThreadedDigests, ThreadRunner, Updatable
from s3orchestrator.auth.sigv4 import AuthResult, Headers, PayloadMode, single_header
from s3orchestrator.errors import S3Error


@attrs.frozen
class VerifiedPayload:
    """A body that arrived whole and matched every digest the client sent."""

    size: int
    md5_hex: str
    checksums: dict[str, str]  # algorithm -> base64 value, only those the client sent


def _length(headers: Headers, name: str) -> int | None:
    value = single_header(headers, name)
    if value is None:
        return None
    if not value.isdigit() or not value.isascii():
        raise S3Error("MissingContentLength", f"Invalid {name} header.")
    return int(value)


def _b64_digest(value: str, size: int) -> bytes | None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


class PayloadVerifier:
    """Decodes (aws-chunked) and verifies a request body as it streams."""

    def __init__(
        self, auth: AuthResult, headers: Headers, on_data: Callable[[bytes], None], threads: ThreadRunner | None = None
    ) -> None:
        self._mode = auth.payload_mode
        self._expected_sha256 = auth.payload_sha256
        self._on_data = on_data
        self.decoded_length: int = self._decoded_length(headers)

        self._md5 = hashlib.md5(usedforsecurity=False)  # an ETag, not a security check
        self._sha256 = hashlib.sha256() if self._mode is PayloadMode.SIGNED else None
        self._content_md5: bytes | None = None
        content_md5 = single_header(headers, "content-md5")
        if content_md5 is not None:
            self._content_md5 = _b64_digest(content_md5, 16)
            if self._content_md5 is None:
                raise S3Error("InvalidDigest")

        # Checksums the client sent as headers (value known now) or declared as trailers.
        self._header_checksums: dict[str, str] = {}
        for header, algorithm in CHECKSUM_HEADERS.items():
            value = single_header(headers, header)
            if value is not None:
                if _b64_digest(value, ALGORITHMS[algorithm]) is None:
                    raise S3Error("InvalidRequest", f"Value for {header} header is invalid.")
                self._header_checksums[algorithm] = value
        self._trailer_checksums = self._declared_trailers(headers)
        if len(self._header_checksums) + len(self._trailer_checksums) > 1:
            raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. "
                                            "Multiple checksum Types are not allowed.")
        self._checksums: dict[str, Checksum] = {
            alg: new_checksum(alg) for alg in [*self._header_checksums, *self._trailer_checksums]}
        # Every digest of the decoded body (a SIGNED payload is not aws-chunked: decoded is raw).
        digests: list[Updatable] = [self._md5, *self._checksums.values()]
        if self._sha256 is not None:
            digests.append(self._sha256)
        self._on_backlog: Callable[[bool], None] = lambda backlogged: None
        self._digests: InlineDigests | ThreadedDigests = (
            ThreadedDigests(digests, threads, lambda backlogged: self._on_backlog(backlogged))
            if threads is not None and self.decoded_length >= THREAD_MIN_BYTES else InlineDigests(digests)
        )

        self._size = 0
        self._decoder: AwsChunkedDecoder | None = None
        if self._mode.is_aws_chunked:
            chain = ChunkSignatureChain.from_auth(auth) if self._mode.chunks_signed else None
            self._decoder = AwsChunkedDecoder(self._decoded, mode=self._mode,
                                              decoded_length=self.decoded_length, chain=chain)

    def _decoded_length(self, headers: Headers) -> int:
        if self._mode.is_aws_chunked:
            # Content-Length (if any) counts the framing; boto3 sends none at all
            # and uses Transfer-Encoding: chunked around the aws-chunked body.
            decoded = _length(headers, "x-amz-decoded-content-length")
            if decoded is None:
                raise S3Error("MissingContentLength",
                              "aws-chunked bodies need an x-amz-decoded-content-length header.")
            return decoded
        length = _length(headers, "content-length")
        if length is None:
            if headers.get("transfer-encoding"):
                raise S3Error("MissingContentLength")
            return 0  # HTTP/1.1: no Content-Length and no Transfer-Encoding means no body
        return length

    def _declared_trailers(self, headers: Headers) -> dict[str, str]:
        """x-amz-trailer: algorithm -> trailer name, validated."""
        values = headers.get("x-amz-trailer") or ()
        names = [n.strip().lower() for v in values for n in v.split(",") if n.strip()]
        if names and not self._mode.has_trailer:
            raise S3Error("InvalidArgument",
                          "x-amz-trailer needs a STREAMING-*-TRAILER x-amz-content-sha256.",
                          extra={"ArgumentName": "x-amz-trailer"})
        declared = {}
        for name in names:
            algorithm = CHECKSUM_HEADERS.get(name)
            if algorithm is None:
                raise S3Error("InvalidArgument", f"Unsupported trailing header {name}.",
                              extra={"ArgumentName": "x-amz-trailer", "ArgumentValue": name})
            declared[algorithm] = name
        if len(declared) > 1 or len(names) > 1:
            raise S3Error("InvalidArgument", "Expecting a single x-amz-checksum- trailer.",
                          extra={"ArgumentName": "x-amz-trailer"})
        return declared

    def _decoded(self, data: bytes) -> None:
        self._size += len(data)
        self._digests.update(data)
        self._on_data(data)

    def watch_backlog(self, listener: Callable[[bool], None]) -> None:
        """Have ``listener`` told when the client should pause (True) and may resume (False)
        because the digests, hashed in a worker thread, fell behind."""
        self._on_backlog = listener

    def digested(self) -> Deferred[None]:
        """Fires once every byte fed is hashed (at once unless a worker thread hashes them);
        ``finish`` may be called then."""
        return self._digests.done()

    def feed(self, data: bytes) -> None:
        """Consume the next slice of the raw request body."""
        if self._decoder is not None:
            self._decoder.feed(data)
            return
        if self._size + len(data) > self.decoded_length:
            raise S3Error("InvalidRequest", "The body is longer than Content-Length.")
        self._decoded(data)

    def finish(self) -> VerifiedPayload:
        """Check the complete body (once ``digested`` fired); raise the S3 error for the first mismatch found."""
        trailers = self._decoder.finish() if self._decoder is not None else {}
        if self._size != self.decoded_length:
            raise S3Error("IncompleteBody")
        if self._sha256 is not None:
            computed = self._sha256.hexdigest()
            if computed != self._expected_sha256:
                raise S3Error("XAmzContentSHA256Mismatch", extra={
                    "ClientComputedContentSHA256": self._expected_sha256 or "",
                    "S3ComputedContentSHA256": computed,
                })
        md5 = self._md5.digest()
        if self._content_md5 is not None and not hmac.compare_digest(md5, self._content_md5):
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
        undeclared = set(trailers) - set(self._trailer_checksums.values())
        if undeclared:
            raise S3Error("InvalidRequest",
                          f"Trailing header {sorted(undeclared)[0]} was not declared in x-amz-trailer.")
        expected = dict(self._header_checksums)
        for algorithm, name in self._trailer_checksums.items():
            if name not in trailers:
                raise S3Error("InvalidRequest", f"The declared trailing header {name} is missing.")
            expected[algorithm] = trailers[name]
        for algorithm, value in expected.items():
            if self._checksums[algorithm].b64digest() != value:
                raise S3Error("BadDigest",
                              f"The {algorithm.upper()} you specified did not match the calculated checksum.")
        return VerifiedPayload(size=self._size, md5_hex=md5.hex(), checksums=expected)
