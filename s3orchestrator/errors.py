"""S3 errors: a typed exception every layer raises and the web layer renders as XML."""

from __future__ import annotations

from typing import Mapping

# code -> (HTTP status, default message), as documented in the S3 API reference.
ERROR_CODES: Mapping[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "BadDigest": (400, "The Content-MD5 or checksum you specified did not match what we received."),
    "BucketAlreadyOwnedByYou": (
        409, "Your previous request to create the named bucket succeeded and you already own it."
    ),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "HTTPVersionNotSupported": (505, "The HTTP version specified is not supported."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header."),
    "InsufficientStorage": (507, "No storage backend has room for this object."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The AWS Access Key Id you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "InvalidPart": (400, "One or more of the specified parts could not be found."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "KeyTooLongError": (400, "Your key is too long."),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published schema."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingSecurityHeader": (400, "Your request is missing a required header."),
    "NoSuchBucket": (404, "The specified bucket does not exist."),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (404, "The specified multipart upload does not exist."),
    "NotImplemented": (501, "A header or operation you provided implies functionality that is not implemented."),
    "NotModified": (304, "Not Modified"),
    "PreconditionFailed": (412, "At least one of the preconditions you specified did not hold."),
    "RequestHeaderSectionTooLarge": (400, "Your request header section exceeds the maximum allowed size."),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the server's time is too large."),
    "RequestTimeout": (
        400, "Your socket connection to the server was not read from or written to within the timeout period."
    ),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the signature you provided."
        " Check your key and signing method.",
    ),
    "SlowDown": (503, "Please reduce your request rate."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was computed."),
}


class S3Error(Exception):
    """An S3 error response: a code from ERROR_CODES, a message and extra XML fields.

    ``extra`` holds additional elements of the XML error document (for example
    ``Key`` or ``ArgumentName``); ``headers`` holds response headers the error
    needs (``Content-Range`` for InvalidRange, ``Retry-After`` for 503s).
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        extra: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        status, default_message = ERROR_CODES[code]
        self.code = code
        self.status = status
        self.message = message or default_message
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        super().__init__(f"{code}: {self.message}")
