"""aws-chunked framing of upstream upload bodies: which mode, the frames, their exact length.

An upload goes out in one of four payload modes (the ``x-amz-content-sha256`` sent)::

    payload_signing, send_checksums -> mode: body on the wire
    "unsigned",  false -> UNSIGNED-PAYLOAD: the body as is
    "streaming", false -> STREAMING-AWS4-HMAC-SHA256-PAYLOAD: signed chunks
    "unsigned",  true  -> STREAMING-UNSIGNED-PAYLOAD-TRAILER: plain chunks, CRC32 trailer
    "streaming", true  -> STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: signed chunks,
                          CRC32 trailer, x-amz-trailer-signature

The CRC32 is computed on the fly and only known after the last byte, hence a
trailer rather than a header. Bodies are cut into ``chunk_size`` chunks (the
last one shorter) and a CRC32 trailer has a fixed size, so the framed length
is known before the first byte: uploads keep a Content-Length where botocore
switches to ``Transfer-Encoding: chunked``, which not every S3-compatible
service accepts.
"""

from __future__ import annotations

from s3orchestrator.auth.checksums import ALGORITHMS, Checksum, new_checksum
from s3orchestrator.auth.chunked import AwsChunkedSigner
from s3orchestrator.auth.sigv4 import PayloadMode

__all__ = [
    "CHECKSUM_ALGORITHM",
    "CHECKSUM_TRAILER",
    "UploadFraming",
    "framing_headers",
    "framed_length",
    "upload_mode",
]

CHECKSUM_ALGORITHM = "crc32"
CHECKSUM_TRAILER = f"x-amz-checksum-{CHECKSUM_ALGORITHM}"
# What botocore sends with a trailing checksum (the PutObject ChecksumAlgorithm member).
_SDK_ALGORITHM = CHECKSUM_ALGORITHM.upper()

_SIGNATURE_EXTENSION = b";chunk-signature="
_TRAILER_SIGNATURE = b"x-amz-trailer-signature:"
_SIGNATURE_HEX_LENGTH = 64
_CRLF = 2


def upload_mode(payload_signing: str, send_checksums: bool) -> PayloadMode:
    """The payload mode of uploads for a store's ``payload_signing`` and ``send_checksums``."""
    if payload_signing == "streaming":
        return PayloadMode.STREAMING_SIGNED_TRAILER if send_checksums else PayloadMode.STREAMING_SIGNED
    if payload_signing == "unsigned":
        return PayloadMode.STREAMING_UNSIGNED_TRAILER if send_checksums else PayloadMode.UNSIGNED
    raise ValueError(f"unknown payload_signing {payload_signing!r}")


def framing_headers(mode: PayloadMode, length: int) -> dict[str, str]:
    """The headers (besides x-amz-content-sha256) announcing a ``length``-byte body in ``mode``.

    Nothing for UNSIGNED-PAYLOAD: services that reject checksum or aws-chunked
    headers (B2, GCS, OCI) keep working with the default settings.
    """
    if not mode.is_aws_chunked:
        return {}
    headers = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(length)}
    if mode.has_trailer:
        headers["x-amz-trailer"] = CHECKSUM_TRAILER
        headers["x-amz-sdk-checksum-algorithm"] = _SDK_ALGORITHM
    return headers


# -- the length formula (one per mode, shared by every chunk size) ---------------------------------


def _chunk_frame_length(mode: PayloadMode, size: int) -> int:
    """``<hex size>[;chunk-signature=<64 hex>]\\r\\n<data>\\r\\n``."""
    signature = len(_SIGNATURE_EXTENSION) + _SIGNATURE_HEX_LENGTH if mode.chunks_signed else 0
    return len(b"%x" % size) + signature + _CRLF + size + _CRLF


def _trailer_length(mode: PayloadMode) -> int:
    """The trailer lines (``<name>:<base64>\\r\\n`` [``x-amz-trailer-signature:<64 hex>\\r\\n``])."""
    if not mode.has_trailer:
        return 0
    base64_length = 4 * -(-ALGORITHMS[CHECKSUM_ALGORITHM] // 3)
    length = len(CHECKSUM_TRAILER) + 1 + base64_length + _CRLF
    if mode.chunks_signed:
        length += len(_TRAILER_SIGNATURE) + _SIGNATURE_HEX_LENGTH + _CRLF
    return length


def framed_length(mode: PayloadMode, length: int, chunk_size: int) -> int:
    """Bytes on the wire for a ``length``-byte body sent in ``mode`` (``chunk_size`` chunks)."""
    if not mode.is_aws_chunked:
        return length
    full, rest = divmod(length, chunk_size)
    chunks = full * _chunk_frame_length(mode, chunk_size) + (_chunk_frame_length(mode, rest) if rest else 0)
    # The final chunk "0[;chunk-signature=...]\r\n" has no data and no data CRLF;
    # the trailer lines (if any) and the closing CRLF follow it.
    final = _chunk_frame_length(mode, 0) - _CRLF
    return chunks + final + _trailer_length(mode) + _CRLF


# -- the frames ----------------------------------------------------------------------------------


class UploadFraming:
    """Frames one upload body, chunk by chunk, in an aws-chunked ``mode``.

    The signed modes need the request's ``signer``. Trailer modes keep a CRC32
    of the data framed so far and send it as the ``x-amz-checksum-crc32`` trailer.
    Every chunk but the last must be exactly ``chunk_size`` bytes for the
    output to be ``framed_length(mode, length, chunk_size)`` bytes long.
    """

    def __init__(self, mode: PayloadMode, chunk_size: int, signer: AwsChunkedSigner | None = None) -> None:
        if not mode.is_aws_chunked:
            raise ValueError(f"{mode} is not an aws-chunked mode")
        if mode.chunks_signed != (signer is not None):
            raise ValueError(f"{mode} needs a signer exactly when its chunks are signed")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.mode = mode
        self.chunk_size = chunk_size
        self._signer = signer
        self._checksum: Checksum | None = new_checksum(CHECKSUM_ALGORITHM) if mode.has_trailer else None

    def length(self, decoded_length: int) -> int:
        """The framed length of a ``decoded_length``-byte body."""
        return framed_length(self.mode, decoded_length, self.chunk_size)

    def chunk(self, data: bytes | memoryview) -> bytes:
        """One data chunk, framing included (``data`` must not be empty)."""
        if not data:
            raise ValueError("use final() for the empty last chunk")
        if self._checksum is not None:
            self._checksum.update(data)
        if self._signer is not None:
            return self._signer.chunk(data)  # type: ignore[arg-type]  # hashes and formats any buffer
        return b"%x\r\n%s\r\n" % (len(data), data)

    def final(self) -> bytes:
        """The final empty chunk, the trailer (if any) and the closing CRLF."""
        trailers = None if self._checksum is None else {CHECKSUM_TRAILER: self._checksum.b64digest()}
        if self._signer is not None:
            return self._signer.final(trailers)
        assert trailers is not None  # an unsigned aws-chunked mode always has a trailer
        return b"0\r\n%s:%s\r\n\r\n" % (CHECKSUM_TRAILER.encode("ascii"), trailers[CHECKSUM_TRAILER].encode("ascii"))
