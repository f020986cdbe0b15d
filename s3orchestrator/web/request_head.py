"""Checking a request's head (request line, header lines) as it arrives, refusing what S3 refuses.

The checks run before Twisted's own parser sees a line, so every refusal is a
typed S3Error the channel answers with an S3 error document (Twisted would
answer a bare ``400 Bad Request``, or close the connection without a word),
and they behave the same under every Twisted version we support.
"""

from __future__ import annotations

import re

from s3orchestrator.errors import S3Error

# Request line plus header lines, CRLFs included (Twisted's own limit for a line and for the head).
MAX_HEAD_BYTES = 16384
MAX_HEADER_FIELDS = 500
# The first byte of a TLS record carrying a handshake (a ClientHello sent to the plain HTTP port).
TLS_HANDSHAKE = 0x16

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_NOT_IN_TARGET = bytes(range(0x21)) + b"\x7f"
_NOT_IN_VALUE = b"\x00\r\n"
_HTTP_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]\Z")
_NON_ASCII = re.compile(rb"[\x80-\xff]")


def _invalid(message: str) -> S3Error:
    return S3Error("InvalidRequest", message)


def too_large() -> S3Error:
    """The error for a request line or header section over MAX_HEAD_BYTES."""
    return S3Error("RequestHeaderSectionTooLarge", extra={"MaxSizeAllowed": str(MAX_HEAD_BYTES)})


def check_request_line(line: bytes) -> bytes:
    """The request target of ``line`` (``METHOD target HTTP/1.x``), or the S3Error for it.

    The target may hold raw (unencoded) UTF-8: some clients send keys that way,
    and the signature check knows how they signed them.
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        raise _invalid("The request line is malformed.")
    method, target, version = parts
    if not method or not _TOKEN.issuperset(method):
        raise _invalid("The request method is malformed.")
    if not target or len(target.translate(None, _NOT_IN_TARGET)) != len(target):
        raise _invalid("The request target is malformed.")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if _HTTP_VERSION.match(version):
            raise S3Error("HTTPVersionNotSupported")
        raise _invalid("The request line is malformed.")
    return target


def ascii_target(target: bytes) -> bytes:
    """``target`` with non-ASCII bytes percent-encoded (Twisted's parser refuses them)."""
    return _NON_ASCII.sub(lambda match: b"%%%02X" % match.group()[0], target)


class RequestHead:
    """The head of one request, line by line: ``line`` raises the S3Error for the first bad one."""

    def __init__(self) -> None:
        self.started = False  # a byte of this request has arrived
        self.method: bytes | None = None  # once the request line is in
        self.target: bytes | None = None  # the raw request target, once the request line is in
        self._size = 0
        self._fields = 0
        self._content_length: bytes | None = None
        self._chunked = False

    def first_bytes(self, data: bytes) -> None:
        """Check the first bytes of the request (a TLS handshake is not HTTP)."""
        self.started = True
        if data[0] == TLS_HANDSHAKE:
            raise _invalid("This port speaks plain HTTP, not TLS.")

    def line(self, line: bytes) -> bytes:
        """Check one line of the head; returns the line as Twisted's parser should see it."""
        self._size += len(line) + 2
        if self._size > MAX_HEAD_BYTES:
            raise too_large()
        if self.target is None:
            if not line:
                return line  # a stray CRLF before a request, which Twisted skips
            self.target = check_request_line(line)
            self.method, _, rest = line.partition(b" ")
            return self.method + b" " + ascii_target(self.target) + b" " + rest.rpartition(b" ")[2]
        if line:
            self._header(line)
        return line

    def _header(self, line: bytes) -> None:
        if len(line.translate(None, _NOT_IN_VALUE)) != len(line):
            raise _invalid("A header contains a NUL, CR or LF character.")
        if line[0] in b" \t":
            return  # the continuation of the previous header's value
        name, colon, value = line.partition(b":")
        if not colon:
            raise _invalid("A header line has no colon.")
        if not name or not _TOKEN.issuperset(name):
            raise _invalid("A header name is malformed.")
        self._fields += 1
        if self._fields > MAX_HEADER_FIELDS:
            raise _invalid(f"The request has more than {MAX_HEADER_FIELDS} headers.")
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"content-length":
            if not value.isdigit():
                raise _invalid("Content-Length must be a non-negative integer.")
            if self._content_length is not None:
                raise _invalid("The request has more than one Content-Length.")
            self._content_length = value
        elif name == b"transfer-encoding":
            if value.lower() != b"chunked" or self._chunked:
                raise _invalid("The only Transfer-Encoding supported is one 'chunked'.")
            self._chunked = True
        if self._chunked and self._content_length is not None:
            raise _invalid("A request cannot have both Content-Length and Transfer-Encoding.")
