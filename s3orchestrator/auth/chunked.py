"""aws-chunked bodies: an incremental decoder (verifying chunk signatures) and a signer.

Framing::

    <hex-size>[;chunk-signature=<64 hex>]\\r\\n<data>\\r\\n      repeated
    0[;chunk-signature=<64 hex>]\\r\\n                         final chunk
    [<name>:<value>\\r\\n ...]                                 trailers (x-amz-trailer)
    [x-amz-trailer-signature:<64 hex>\\r\\n]                   signed-trailer mode
    \\r\\n

Each chunk signature signs the previous one (the first signs the seed signature
of the Authorization header), so chunks cannot be reordered, dropped or replaced.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Callable, Mapping

from s3orchestrator.auth.sigv4 import (
    EMPTY_SHA256,
    AuthResult,
    PayloadMode,
    chunk_signature,
    chunk_string_to_sign,
    trailer_string_to_sign,
)
from s3orchestrator.errors import S3Error

MAX_LINE = 4096
MAX_TRAILER_BYTES = 16384
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

_SIZE_LINE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkSignatureChain:
    """The running chunk-signature chain of one request (both for verifying and signing)."""

    def __init__(self, signing_key: bytes, amz_date: str, scope: str, seed_signature: str) -> None:
        self._key = signing_key
        self._amz_date = amz_date
        self._scope = scope
        self.previous = seed_signature

    @classmethod
    def from_auth(cls, auth: AuthResult) -> ChunkSignatureChain:
        """The chain seeded by a verified request's Authorization signature."""
        return cls(auth.signing_key, auth.amz_date, auth.scope, auth.seed_signature)

    def next_signature(self, chunk_sha256_hex: str) -> str:
        """Signature of the next chunk (given its SHA-256); advances the chain."""
        sts = chunk_string_to_sign(self._amz_date, self._scope, self.previous, chunk_sha256_hex)
        self.previous = chunk_signature(self._key, sts)
        return self.previous

    def trailer_signature(self, trailer_text: bytes) -> str:
        """Signature of the trailing headers (``name:value\\n`` each, sorted by name)."""
        sts = trailer_string_to_sign(self._amz_date, self._scope, self.previous,
                                     hashlib.sha256(trailer_text).hexdigest())
        self.previous = chunk_signature(self._key, sts)
        return self.previous


def trailer_text(trailers: Mapping[str, str]) -> bytes:
    """The canonical trailer block the trailer signature covers."""
    return "".join(f"{n}:{trailers[n]}\n" for n in sorted(trailers)).encode("latin-1")


def _invalid(message: str) -> S3Error:
    return S3Error("InvalidRequest", message)


class AwsChunkedDecoder:
    """Strips aws-chunked framing from a body fed in arbitrary slices.

    Payload bytes reach ``on_data`` as soon as they arrive; a chunk's signature
    can only be checked after its last byte, so callers must not commit the
    data before :meth:`finish` returns.
    """

    def __init__(
        self,
        on_data: Callable[[bytes], None],
        *,
        mode: PayloadMode,
        decoded_length: int | None = None,
        chain: ChunkSignatureChain | None = None,
        max_line: int = MAX_LINE,
    ) -> None:
        if not mode.is_aws_chunked:
            raise ValueError(f"{mode} is not an aws-chunked mode")
        if mode.chunks_signed and chain is None:
            raise ValueError(f"{mode} needs a signature chain")
        self._on_data = on_data
        self._mode = mode
        self._chain = chain if mode.chunks_signed else None
        self._decoded_length = decoded_length
        self._max_line = max_line
        self._state = _SIZE_LINE
        self._line = bytearray()
        self._chunk_remaining = 0
        self._chunk_hash: hashlib._Hash | None = None
        self._chunk_sig: str | None = None
        self._crlf_index = 0
        self._declared = 0  # payload bytes announced by size lines so far
        self.size = 0  # payload bytes emitted so far
        self._trailers: dict[str, str] = {}
        self._trailer_bytes = 0
        self._trailer_signature_ok = False
        self._error: S3Error | None = None

    def feed(self, data: bytes) -> None:
        """Consume the next slice of the raw body."""
        if self._error is not None:
            raise self._error
        try:
            self._feed(data)
        except S3Error as e:
            self._error = e
            raise

    def _feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._chunk_remaining, end - pos)
                piece = data if take == end and pos == 0 else data[pos:pos + take]
                pos += take
                self._chunk_remaining -= take
                self.size += take
                if self._chunk_hash is not None:
                    self._chunk_hash.update(piece)
                self._on_data(piece)
                if not self._chunk_remaining:
                    self._state = _DATA_END
                    self._crlf_index = 0
            elif state == _DATA_END:
                if data[pos] != b"\r\n"[self._crlf_index]:
                    raise _invalid("aws-chunked chunk data is not followed by CRLF.")
                pos += 1
                self._crlf_index += 1
                if self._crlf_index == 2:
                    self._end_of_chunk()
            elif state == _DONE:
                # Tolerate stray line ends after the final CRLF; anything else is junk.
                if data[pos:].strip(b"\r\n"):
                    raise _invalid("Data after the end of the aws-chunked body.")
                return
            else:
                # Never scan further than a legal line could reach.
                newline = data.find(b"\n", pos, pos + self._max_line + 1 - len(self._line))
                stop = end if newline < 0 else newline
                if len(self._line) + stop - pos > self._max_line:
                    raise _invalid("aws-chunked framing line too long.")
                self._line += data[pos:stop]
                if newline < 0:
                    return
                pos = newline + 1
                line = bytes(self._line)
                self._line.clear()
                if line.endswith(b"\r"):
                    line = line[:-1]
                if state == _SIZE_LINE:
                    self._size_line(line)
                else:
                    self._trailer_line(line)

    def _size_line(self, line: bytes) -> None:
        text = line.decode("latin-1")
        size_text, _, extensions = text.partition(";")
        size_text = size_text.strip()
        if not size_text or not _HEX_DIGITS.issuperset(size_text):
            raise _invalid(f"Invalid aws-chunked chunk size {size_text[:20]!r}.")
        size = int(size_text, 16)
        self._chunk_sig = None
        for extension in extensions.split(";") if extensions else ():
            name, _, value = extension.partition("=")
            if name.strip() == "chunk-signature":
                self._chunk_sig = value.strip()
        if self._chain is not None and not self._chunk_sig:
            raise S3Error("SignatureDoesNotMatch", "An aws-chunked chunk has no chunk-signature.")
        self._declared += size
        if self._decoded_length is not None and self._declared > self._decoded_length:
            raise _invalid("The aws-chunked body is longer than x-amz-decoded-content-length.")
        if size == 0:
            if self._chain is not None:
                self._verify_chunk(EMPTY_SHA256)
            self._state = _TRAILER
        else:
            self._chunk_remaining = size
            self._chunk_hash = hashlib.sha256() if self._chain is not None else None
            self._state = _DATA

    def _end_of_chunk(self) -> None:
        if self._chunk_hash is not None:
            self._verify_chunk(self._chunk_hash.hexdigest())
            self._chunk_hash = None
        self._state = _SIZE_LINE

    def _verify_chunk(self, sha256_hex: str) -> None:
        assert self._chain is not None and self._chunk_sig is not None
        expected = self._chain.next_signature(sha256_hex)
        if not hmac.compare_digest(expected.encode(), self._chunk_sig.lower().encode()):
            raise S3Error("SignatureDoesNotMatch",
                          "The chunk signature we calculated does not match the signature you provided.")

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            if self._mode is PayloadMode.STREAMING_SIGNED_TRAILER and not self._trailer_signature_ok:
                raise S3Error("SignatureDoesNotMatch", "The trailer signature is missing.")
            self._state = _DONE
            return
        self._trailer_bytes += len(line)
        if self._trailer_bytes > MAX_TRAILER_BYTES:
            raise _invalid("The aws-chunked trailer is too large.")
        name, colon, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        if not colon or not name:
            raise _invalid("Malformed aws-chunked trailer line.")
        if not self._mode.has_trailer:
            raise _invalid("Trailing headers are only allowed with a *-TRAILER x-amz-content-sha256.")
        if self._trailer_signature_ok:
            raise _invalid("Trailing headers after x-amz-trailer-signature.")
        if name == "x-amz-trailer-signature":
            if self._chain is None:
                return  # unsigned-trailer mode: nothing to check it against
            expected = self._chain.trailer_signature(trailer_text(self._trailers))
            if not hmac.compare_digest(expected.encode(), value.lower().encode()):
                raise S3Error("SignatureDoesNotMatch", "The trailer signature we calculated does not"
                                                       " match the signature you provided.")
            self._trailer_signature_ok = True
            return
        if name in self._trailers:
            raise _invalid(f"Duplicate trailing header {name}.")
        self._trailers[name] = value

    def finish(self) -> dict[str, str]:
        """Check the body ended at a frame boundary; return the trailers (lower-case names)."""
        if self._error is not None:
            raise self._error
        # Lenient: some clients end the body right after the trailer lines
        # (or the final chunk) without the closing empty line.
        at_trailer_end = self._state == _TRAILER and not self._line
        if not (self._state == _DONE or at_trailer_end):
            raise S3Error("IncompleteBody", "The aws-chunked body ended in the middle of a chunk.")
        if (at_trailer_end and self._mode is PayloadMode.STREAMING_SIGNED_TRAILER
                and not self._trailer_signature_ok):
            raise S3Error("IncompleteBody", "The aws-chunked body ended before the trailer signature.")
        if self._decoded_length is not None and self.size < self._decoded_length:
            raise S3Error("IncompleteBody",
                          "The aws-chunked body is shorter than x-amz-decoded-content-length.")
        return dict(self._trailers)


class AwsChunkedSigner:
    """Frames a body as STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] chunks (for upstream uploads)."""

    def __init__(self, chain: ChunkSignatureChain) -> None:
        self._chain = chain

    def chunk(self, data: bytes) -> bytes:
        """One signed data chunk, framing included (``data`` must not be empty)."""
        if not data:
            raise ValueError("use final() for the empty last chunk")
        sig = self._chain.next_signature(hashlib.sha256(data).hexdigest())
        return b"%x;chunk-signature=%s\r\n%s\r\n" % (len(data), sig.encode("ascii"), data)

    def final(self, trailers: Mapping[str, str] | None = None) -> bytes:
        """The final empty chunk, then the signed trailers if any are given."""
        sig = self._chain.next_signature(EMPTY_SHA256)
        out = b"0;chunk-signature=%s\r\n" % sig.encode("ascii")
        if trailers is None:
            return out + b"\r\n"
        lowered = {name.lower(): value for name, value in trailers.items()}
        text = trailer_text(lowered)
        trailer_sig = self._chain.trailer_signature(text)
        return out + text.replace(b"\n", b"\r\n") + (
            b"x-amz-trailer-signature:%s\r\n\r\n" % trailer_sig.encode("ascii"))
