"""AWS Signature Version 4 for S3: verify incoming requests and sign upstream ones.

Both directions share the canonicalisation functions below, so whatever the
verifier accepts the signer produces.  Strings that come from the wire (path,
query, header values) are expected latin-1 decoded, as Twisted hands them over;
they are turned back into the exact wire bytes before hashing, which is what
AWS signs over (a UTF-8 key sent unencoded, or a UTF-8 header value, then
hashes as the client sent it).

Only the ``Authorization`` header form is implemented; the request parameters
are gathered into :class:`SignatureParams` so that the presigned (query-string)
form can later produce the same object from ``X-Amz-*`` query parameters and
reuse :func:`_verify_signature` unchanged.
"""

from __future__ import annotations

import calendar
import datetime
import enum
import functools
import hashlib
import hmac
import re
import time
from email.utils import parsedate_to_datetime
from typing import Callable, Collection, Iterator, Mapping, Sequence
from urllib.parse import quote, unquote_to_bytes

import attrs

from s3orchestrator.errors import S3Error

Headers = Mapping[str, Sequence[str]]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW_SECONDS = 15 * 60
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AMZ_DATE_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
_SHA256_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_SPACES_RE = re.compile(r"[ \t]+")
_UNSUPPORTED_MECHANISM = (
    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
)
_BAD_CREDENTIAL = (
    'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)


class PayloadMode(enum.Enum):
    """How the body is protected, from the ``x-amz-content-sha256`` header."""

    UNSIGNED = "UNSIGNED-PAYLOAD"
    SIGNED = "SHA256-HEX"  # the header carries the hex digest itself
    STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"

    @property
    def is_aws_chunked(self) -> bool:
        """True if the body uses aws-chunked framing."""
        return self.value.startswith("STREAMING-")

    @property
    def chunks_signed(self) -> bool:
        """True if every aws-chunked chunk carries a chunk-signature."""
        return self in (PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER)

    @property
    def has_trailer(self) -> bool:
        """True if trailing headers may follow the final chunk."""
        return self.value.endswith("-TRAILER")


@attrs.frozen
class Credential:
    """One access key of a virtual bucket."""

    access_key_id: str
    secret_access_key: str = attrs.field(repr=False)
    bucket: str


@attrs.frozen
class AuthResult:
    """What a verified request proved: who signed it and how its body is protected."""

    credential: Credential
    payload_mode: PayloadMode
    payload_sha256: str | None  # lower-case hex, SIGNED mode only
    amz_date: str
    scope: str  # date/region/service/aws4_request
    signing_key: bytes = attrs.field(repr=False)
    seed_signature: str


@attrs.frozen
class SignatureParams:
    """The signature claims of a request, whichever form (header or query) carried them."""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        """The credential scope without the access key id."""
        return credential_scope(self.scope_date, self.region, self.service)


# -- canonicalisation ---------------------------------------------------------


def _wire_bytes(s: str) -> bytes:
    """The bytes a latin-1 decoded wire string came from (UTF-8 for real text)."""
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def uri_encode(s: str | bytes, *, encode_slash: bool) -> str:
    """Percent-encode per AWS: keep A-Za-z0-9-_.~ (and '/' unless told), UTF-8 %XX upper-case."""
    # urllib's always-safe set is exactly AWS's unreserved set (incl. '~' since 3.7).
    return quote(s, safe="" if encode_slash else "/")


def canonical_uri_candidates(raw_path: str) -> Iterator[str]:
    """Canonical URIs to try, best first: the wire path, then AWS's re-encoding of it.

    S3 signs the path exactly as sent (no normalisation, no double encoding), but
    clients disagree on what they leave unencoded on the wire (':', '@', '!', '$'
    ...), so a second candidate decodes the path and re-encodes it the AWS way
    (computed only if the first one did not match: a generator).
    """
    wire = raw_path or "/"
    first = _wire_bytes(wire).decode("latin-1")
    yield first
    normalised = uri_encode(unquote_to_bytes(_wire_bytes(wire)), encode_slash=False)
    if normalised != first:
        yield normalised


def canonical_query_string(raw_query: str, *, exclude: Collection[str] = ()) -> str:
    """Canonical query: decode each k=v, AWS-encode both, sort by (key, value).

    '+' is kept literally (it becomes %2B), as AWS SDKs encode a space as %20.
    ``exclude`` names (decoded) parameters left out, e.g. X-Amz-Signature for presigned URLs.
    """
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        raw_key = unquote_to_bytes(_wire_bytes(key))
        if exclude and raw_key.decode("utf-8", "replace") in exclude:
            continue
        pairs.append(
            (
                uri_encode(raw_key, encode_slash=True),
                uri_encode(unquote_to_bytes(_wire_bytes(value)), encode_slash=True),
            )
        )
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_header_value(values: Sequence[str]) -> str:
    """All values of one header, trimmed, inner runs of spaces collapsed, joined with ','."""
    # Only space and tab count as whitespace: str.split() would also eat latin-1
    # bytes such as 0xA0 that are part of a UTF-8 sequence on the wire.
    return ",".join(_SPACES_RE.sub(" ", v.strip(" \t")) for v in values)


def canonical_request(
    method: str,
    canonical_uri: str,
    canonical_query: str,
    headers: Headers,
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """The SigV4 canonical request text."""
    lines = [method, canonical_uri, canonical_query]
    for name in signed_headers:
        lines.append(f"{name}:{canonical_header_value(headers.get(name, ()))}")
    lines.append("")  # the canonical headers block ends with an empty line
    lines.append(";".join(signed_headers))
    lines.append(payload_hash)
    return "\n".join(lines)


def credential_scope(date_yyyymmdd: str, region: str, service: str = "s3") -> str:
    """``date/region/service/aws4_request``."""
    return f"{date_yyyymmdd}/{region}/{service}/aws4_request"


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    """The SigV4 string to sign for a canonical request."""
    digest = hashlib.sha256(_wire_bytes(canonical_request)).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, date_yyyymmdd: str, region: str, service: str = "s3") -> bytes:
    """Derive the SigV4 signing key for one day, region and service (remembered: the
    same few keys sign and verify every request of a day)."""
    k_date = _hmac(("AWS4" + secret).encode("utf-8"), date_yyyymmdd)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


def signature(key: bytes, string_to_sign: str) -> str:
    """Hex HMAC-SHA256 of a string to sign."""
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def chunk_string_to_sign(
    amz_date: str, scope: str, previous_signature: str, chunk_sha256_hex: str
) -> str:
    """String to sign for one aws-chunked chunk (STREAMING-AWS4-HMAC-SHA256-PAYLOAD)."""
    return (
        f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous_signature}\n"
        f"{EMPTY_SHA256}\n{chunk_sha256_hex}"
    )


def trailer_string_to_sign(
    amz_date: str, scope: str, previous_signature: str, trailer_sha256_hex: str
) -> str:
    """String to sign for the trailing headers of a signed-trailer aws-chunked body."""
    return (
        f"AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous_signature}\n"
        f"{trailer_sha256_hex}"
    )


def chunk_signature(key: bytes, string_to_sign: str) -> str:
    """Signature of a chunk or trailer string to sign (hex)."""
    return signature(key, string_to_sign)


def format_amz_date(timestamp: float) -> str:
    """POSIX time -> ``20261124T010203Z``."""
    return time.strftime(_AMZ_DATE_FORMAT, time.gmtime(timestamp))


@functools.lru_cache(maxsize=64)
def parse_amz_date(amz_date: str) -> float:
    """``20261124T010203Z`` -> POSIX time; ValueError if malformed (each request parses
    its date twice, and concurrent requests mostly carry the same second: cached)."""
    if not _AMZ_DATE_RE.match(amz_date):
        raise ValueError(amz_date)
    year, month, day = int(amz_date[0:4]), int(amz_date[4:6]), int(amz_date[6:8])
    hour, minute, second = int(amz_date[9:11]), int(amz_date[11:13]), int(amz_date[13:15])
    if second > 61:  # what strptime's %S accepts (leap seconds)
        raise ValueError(amz_date)
    datetime.datetime(year, month, day, hour, minute)  # ValueError for a day or hour out of range
    return float(calendar.timegm((year, month, day, hour, minute, second)))


# -- parsing the request ------------------------------------------------------


def single_header(headers: Headers, name: str) -> str | None:
    """The value of a header that must not be ambiguous (security and framing headers).

    Repeated identical values (a proxy duplicating a header) are harmless;
    conflicting ones are refused rather than guessed between.
    """
    values = headers.get(name)
    if not values:
        return None
    if len({value.strip() for value in values}) > 1:
        raise S3Error("InvalidArgument", f"Conflicting {name} headers are not allowed.",
                      extra={"ArgumentName": name})
    return values[0].strip()


def parse_authorization_header(value: str) -> SignatureParams:
    """Parse ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ALGORITHM:
        # AWS v2 ("AWS AKID:sig"), SigV4a ("AWS4-ECDSA-P256-SHA256") and anything else.
        raise S3Error("InvalidRequest", _UNSUPPORTED_MECHANISM)
    fields: dict[str, str] = {}
    # s3cmd sends no space after the commas; everyone else sends one.
    for part in rest.split(","):
        name, eq, field_value = part.strip().partition("=")
        if not eq or name in fields:
            raise S3Error("AuthorizationHeaderMalformed",
                          f"The authorization header is malformed; invalid component {part.strip()!r}.")
        fields[name] = field_value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise S3Error("AuthorizationHeaderMalformed",
                      f"The authorization header is malformed; missing {', '.join(missing)}.")
    parts = fields["Credential"].split("/")
    if len(parts) != 5 or not parts[0] or not re.match(r"^\d{8}$", parts[1]) or not parts[2]:
        raise S3Error("AuthorizationHeaderMalformed",
                      "The authorization header is malformed; " + _BAD_CREDENTIAL)
    access_key_id, scope_date, region, service, terminal = parts
    if service != "s3":
        raise S3Error("AuthorizationHeaderMalformed",
                      f'The authorization header is malformed; incorrect service "{service}".'
                      ' This endpoint belongs to "s3".')
    if terminal != "aws4_request":
        raise S3Error("AuthorizationHeaderMalformed",
                      f'The authorization header is malformed; incorrect terminal "{terminal}".'
                      ' This endpoint uses "aws4_request".')
    signed = tuple(h.strip().lower() for h in fields["SignedHeaders"].split(";"))
    return SignatureParams(access_key_id, scope_date, region, service, signed, fields["Signature"])


def _no_date() -> S3Error:
    return S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")


def request_amz_date(headers: Headers) -> str:
    """The request time as ``YYYYMMDDTHHMMSSZ`` from x-amz-date, else from Date."""
    amz_date = single_header(headers, "x-amz-date")
    if amz_date is not None:
        amz_date = amz_date.strip()
        try:
            parse_amz_date(amz_date)
        except ValueError:
            raise _no_date() from None
        return amz_date
    date = single_header(headers, "date")
    if date is None:
        raise _no_date()
    try:
        parsed = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        raise _no_date() from None
    return format_amz_date(calendar.timegm(parsed.utctimetuple()))


def parse_payload_hash(value: str | None) -> tuple[PayloadMode, str | None]:
    """Classify an ``x-amz-content-sha256`` value; returns the mode and the hex for SIGNED."""
    if value is None:
        raise S3Error("InvalidRequest",
                      "Missing required header for this request: x-amz-content-sha256")
    value = value.strip()
    if _SHA256_HEX_RE.match(value):
        return PayloadMode.SIGNED, value.lower()
    for mode in PayloadMode:
        if mode is not PayloadMode.SIGNED and value == mode.value:
            return mode, None
    if value.startswith("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"):
        raise S3Error("NotImplemented", "SigV4a (ECDSA) streaming payloads are not supported.")
    raise S3Error("InvalidArgument",
                  "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER,"
                  " STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
                  " or a valid sha256 value.",
                  extra={"ArgumentName": "x-amz-content-sha256", "ArgumentValue": value})


def check_clock_skew(amz_date: str, raw_request_time: str, now: float) -> None:
    """RequestTimeTooSkewed if the request time is more than 15 minutes off ``now``."""
    if abs(parse_amz_date(amz_date) - now) > MAX_SKEW_SECONDS:
        raise S3Error("RequestTimeTooSkewed", extra={
            "RequestTime": raw_request_time,
            "ServerTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "MaxAllowedSkewMilliseconds": str(MAX_SKEW_SECONDS * 1000),
        })


def _check_signed_headers(params: SignatureParams, headers: Headers) -> None:
    if "host" not in params.signed_headers:
        raise S3Error("AuthorizationHeaderMalformed",
                      "The authorization header is malformed; the host header must be signed.")
    # S3 requires every x-amz-* header to be signed, so a proxy cannot add one.
    unsigned = sorted(n for n in headers if n.startswith("x-amz-") and n not in params.signed_headers)
    if unsigned:
        raise S3Error("AccessDenied",
                      "There were headers present in the request which were not signed",
                      extra={"HeadersNotSigned": ", ".join(unsigned)})


# -- verification -------------------------------------------------------------


def _verify_signature(
    params: SignatureParams,
    credential: Credential,
    method: str,
    raw_path: str,
    canonical_query: str,
    headers: Headers,
    amz_date: str,
    payload_hash: str,
) -> bytes:
    """Check the signature against every canonical URI candidate; return the signing key."""
    key = signing_key(credential.secret_access_key, params.scope_date, params.region, params.service)
    first: tuple[str, str] | None = None
    for uri in canonical_uri_candidates(raw_path):
        creq = canonical_request(method, uri, canonical_query, headers, params.signed_headers,
                                 payload_hash)
        sts = string_to_sign(amz_date, params.scope, creq)
        if hmac.compare_digest(signature(key, sts).encode(), params.signature.lower().encode()):
            return key
        if first is None:
            first = (creq, sts)
    assert first is not None
    raise S3Error("SignatureDoesNotMatch", extra={
        "AWSAccessKeyId": params.access_key_id,
        "StringToSign": first[1],
        "SignatureProvided": params.signature,
        "CanonicalRequest": first[0],
    })


def verify_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Headers,
    lookup: Callable[[str], Credential | None],
    now: float,
) -> AuthResult:
    """Authenticate a header-signed SigV4 request or raise the S3Error AWS would answer.

    ``headers`` maps lower-case names to every raw value in wire order;
    ``raw_path``/``raw_query`` are the request target as sent, latin-1 decoded.
    """
    authorization = single_header(headers, "authorization")
    if authorization is None:
        raise S3Error("AccessDenied", "Anonymous access is not allowed")
    params = parse_authorization_header(authorization)
    amz_date = request_amz_date(headers)
    if params.scope_date != amz_date[:8]:
        raise S3Error("AuthorizationHeaderMalformed",
                      f'The authorization header is malformed; Invalid credential date'
                      f' "{params.scope_date}". Date is not the same as X-Amz-Date: "{amz_date[:8]}".')
    _check_signed_headers(params, headers)
    payload_hash = single_header(headers, "x-amz-content-sha256")
    mode, sha256_hex = parse_payload_hash(payload_hash)
    assert payload_hash is not None
    credential = lookup(params.access_key_id)
    if credential is None:
        raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": params.access_key_id})
    raw_time = single_header(headers, "x-amz-date") or single_header(headers, "date") or amz_date
    check_clock_skew(amz_date, raw_time, now)
    key = _verify_signature(params, credential, method, raw_path, canonical_query_string(raw_query),
                            headers, amz_date, payload_hash.strip())
    return AuthResult(
        credential=credential,
        payload_mode=mode,
        payload_sha256=sha256_hex,
        amz_date=amz_date,
        scope=params.scope,
        signing_key=key,
        seed_signature=params.signature.lower(),
    )


# -- signing (upstream requests) ----------------------------------------------


class SignedHeaders(dict[str, str]):
    """The headers signing adds (authorization, x-amz-date, x-amz-content-sha256),
    and the hex ``signature`` they carry: the seed of aws-chunked chunk signatures."""

    def __init__(self, headers: Mapping[str, str], signature: str) -> None:
        super().__init__(headers)
        self.signature = signature


def sign_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    *,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    amz_date: str,
    payload_hash: str = UNSIGNED_PAYLOAD,
    service: str = "s3",
) -> SignedHeaders:
    """Sign a request; returns the headers to add (authorization, x-amz-date,
    x-amz-content-sha256), with the signature itself as their ``signature``.

    ``raw_path`` and ``raw_query`` must be exactly what will go on the wire
    (already percent-encoded).  Every header given is signed; ``host`` is required.
    """
    all_headers = {name.lower(): [value] for name, value in headers.items()}
    if "host" not in all_headers:
        raise ValueError("sign_request needs the host header")
    all_headers["x-amz-date"] = [amz_date]
    all_headers["x-amz-content-sha256"] = [payload_hash]
    signed = sorted(all_headers)
    scope = credential_scope(amz_date[:8], region, service)
    creq = canonical_request(method, raw_path or "/", canonical_query_string(raw_query),
                             all_headers, signed, payload_hash)
    key = signing_key(secret_access_key, amz_date[:8], region, service)
    sig = signature(key, string_to_sign(amz_date, scope, creq))
    return SignedHeaders({
        "authorization": f"{ALGORITHM} Credential={access_key_id}/{scope},"
                         f" SignedHeaders={';'.join(signed)}, Signature={sig}",
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
    }, sig)
