"""Rendering S3Error as S3's XML error document."""

from __future__ import annotations

from s3orchestrator.errors import S3Error
from s3orchestrator.s3.xml_output import text

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def error_document(error: S3Error, resource: str, request_id: str) -> bytes:
    """``<Error><Code/><Message/>...<Resource/><RequestId/></Error>`` for ``error``."""
    fields = [("Code", error.code), ("Message", error.message)]
    fields.extend(error.extra.items())
    fields.extend([("Resource", resource), ("RequestId", request_id)])
    body = "".join(f"<{name}>{text(value)}</{name}>" for name, value in fields)
    return f"{XML_DECLARATION}<Error>{body}</Error>".encode()
