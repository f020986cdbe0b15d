"""How an upstream S3 service's failures become store exceptions, without leaking them.

Upstream error bodies, URLs and headers never reach callers or logs: an
exception message carries the store, the operation, the HTTP status and the
S3 error ``Code`` (parsed from at most MAX_ERROR_BODY bytes of UTF-8, with
anything that could expand entities refused), nothing else.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, ParseError, XMLParser

from twisted.internet import error as internet_error
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestGenerationFailed,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss

from s3orchestrator.stores.interface import ObjectMissing, StoreMisconfigured, StoreUnavailable

MAX_ERROR_BODY = 64 * 1024
_CODE_RE = re.compile(r"^[A-Za-z0-9.]{1,64}$")

# 4xx codes that mean "try again later", not "this store is set up wrong": throttling,
# and bytes damaged or cut short on the way (the same upload may well succeed again).
_TRANSIENT_CODES = frozenset({
    "RequestTimeout", "SlowDown", "ServiceUnavailable", "Throttling",
    "BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "IncompleteBody",
})

# Failures of the connection or the HTTP exchange itself.
_NETWORK_ERRORS = (
    internet_error.ConnectError,  # refused, unknown host, connect timeout, ...
    internet_error.TimeoutError,
    internet_error.ConnectionLost,
    internet_error.ConnectionDone,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    RequestNotSent,
    PotentialDataLoss,
    OSError,  # also DNSLookupError
)


def parse_upstream_xml(body: bytes) -> Element | None:
    """The root of a small upstream XML document (an error, a CopyObjectResult), or None
    if it is not safe and sane.

    Refuses documents larger than MAX_ERROR_BODY, anything but UTF-8, and
    anything with a markup declaration (``<!DOCTYPE``, ``<!ENTITY``, comments,
    CDATA): S3 never sends one, and refusing them rules out entity expansion
    attacks without defusedxml. The check runs on the decoded text: in bytes, a
    UTF-16 document hides its ``<!`` from it. NUL (never in XML) is refused too:
    expat takes ``<\0?\0`` for UTF-16 even in a str.
    """
    if not body or len(body) > MAX_ERROR_BODY:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "<!" in text or "\0" in text:
        return None
    parser = XMLParser()
    try:
        parser.feed(text)  # a str: expat ignores any encoding the declaration names
        return parser.close()
    except (ParseError, ValueError):
        return None


def local_name(element: Element) -> str:
    """An element's tag without its namespace."""
    return str(element.tag).rsplit("}", 1)[-1]


def parse_error_code(body: bytes) -> str | None:
    """The ``<Code>`` of an S3 error document, or None if there is no safe, sane one."""
    root = parse_upstream_xml(body)
    if root is None:
        return None
    for element in root.iter():
        if local_name(element) == "Code":
            code = (element.text or "").strip()
            return code if _CODE_RE.match(code) else None
    return None


def error_for_status(
    store: str, operation: str, status: int, code: str | None, location: str | None
) -> Exception:
    """The exception an unexpected upstream answer becomes.

    404 on a GET is ObjectMissing; 5xx, 429, throttling/timeout codes and
    digest/length mismatches (bytes damaged in transit) are StoreUnavailable;
    other 4xx (auth, missing bucket, ...) StoreMisconfigured: the client did
    nothing wrong, the store's configuration is off.
    """
    described = f"store {store}: {operation} answered HTTP {status}" + (f" {code}" if code else "")
    if status == 404 and operation == "GET" and code in (None, "NoSuchKey"):
        return ObjectMissing(location)
    if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
        return StoreUnavailable(described)
    return StoreMisconfigured(described)


def describe_failure(failure: Failure) -> str:
    """A short, secret-free description of a network failure (exception types and messages)."""
    value = failure.value
    reasons = getattr(value, "reasons", None)
    if isinstance(reasons, list) and reasons:
        inner = "; ".join(describe_failure(reason) for reason in reasons if isinstance(reason, Failure))
        return f"{type(value).__name__}({inner})"
    text = str(value)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


def is_network_failure(failure: Failure) -> bool:
    """True for failures of the connection or the HTTP exchange (never our own errors)."""
    if failure.check(RequestGenerationFailed):
        return False  # the body producer's failure, unwrapped by the caller
    if failure.check(*_NETWORK_ERRORS):
        return True
    # TLS handshake and certificate verification errors (pyOpenSSL).
    module = type(failure.value).__module__
    return module.startswith("OpenSSL") or module.startswith("service_identity")


def store_failure(store: str, operation: str, failure: Failure) -> Failure:
    """Map a failure of one upstream call to a store exception (or pass ours through)."""
    if failure.check(StoreUnavailable, StoreMisconfigured, ObjectMissing, CancelledError):
        return failure
    if isinstance(failure.value, RequestGenerationFailed):
        reasons = failure.value.reasons
        if reasons and isinstance(reasons[0], Failure):
            return store_failure(store, operation, reasons[0])
    if is_network_failure(failure):
        return Failure(StoreUnavailable(f"store {store}: {operation} failed: {describe_failure(failure)}"))
    return failure
