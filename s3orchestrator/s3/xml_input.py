"""Small XML request bodies (DeleteObjects, CompleteMultipartUpload): read whole, parse safely."""

from __future__ import annotations

from typing import Iterator
from xml.etree import ElementTree

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from s3orchestrator.errors import S3Error
from s3orchestrator.placement.body import RequestBody

# A DeleteObjects body for 1000 keys of 1024 bytes stays well under this.
MAX_XML_BODY = 2 * 1024 * 1024


@implementer(IConsumer)
class _Collector:
    """Keeps what a small request body produces."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


async def read_small_body(body: RequestBody, limit: int = MAX_XML_BODY) -> bytes:
    """The whole (verified) body of a request that carries a small document."""
    if body.length > limit:
        raise S3Error("MalformedXML", f"The XML document is larger than {limit} bytes.")
    collector = _Collector()
    produced: Deferred[None] = body.startProducing(collector)
    await body.verified
    body.release_tail()
    await produced
    return b"".join(collector.chunks)


def parse_xml(data: bytes) -> ElementTree.Element:
    """Parse a client's XML document; DTDs (and so entity expansion) are refused outright.

    The document must be UTF-8, as S3 requires, and is checked and parsed as
    decoded text: in bytes, a UTF-16 document would hide its ``<!DOCTYPE`` from
    the check, and expat ignores the encoding a declaration names in a str.
    NUL (never in XML) is refused too: expat takes ``<\0?\0`` for UTF-16 even in a str.
    """
    try:
        document = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise S3Error("MalformedXML", "The XML document must be UTF-8.") from None
    if "<!DOCTYPE" in document or "<!ENTITY" in document:
        raise S3Error("MalformedXML", "Document type declarations are not allowed.")
    if "\0" in document:
        raise S3Error("MalformedXML")
    parser = ElementTree.XMLParser()
    try:
        parser.feed(document)
        return parser.close()
    except ElementTree.ParseError:
        raise S3Error("MalformedXML") from None


def local_name(element: ElementTree.Element) -> str:
    """An element's tag without its namespace (clients may or may not send S3's)."""
    return element.tag.rpartition("}")[2]


def children(element: ElementTree.Element, name: str) -> Iterator[ElementTree.Element]:
    """Direct children called ``name``, whatever their namespace."""
    return (child for child in element if local_name(child) == name)


def child_text(element: ElementTree.Element, name: str) -> str | None:
    """Text of the first direct child called ``name`` (None when absent)."""
    for child in children(element, name):
        return child.text or ""
    return None
