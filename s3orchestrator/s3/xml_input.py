"""Small XML request bodies (DeleteObjects, CompleteMultipartUpload): read whole, parse safely."""

from __future__ import annotations

from typing import Iterator
from xml.etree import ElementTree

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from s3orchestrator.errors import S3Error
from s3orchestrator.s3.call import RequestBody

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
    """Parse a client's XML document; DTDs (and so entity expansion) are refused outright."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise S3Error("MalformedXML", "Document type declarations are not allowed.")
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError:
        raise S3Error("MalformedXML")


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
