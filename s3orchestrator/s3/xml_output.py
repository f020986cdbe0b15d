"""Building S3's XML response documents."""

from __future__ import annotations

import re
from xml.etree import ElementTree
from xml.sax.saxutils import escape

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_ENTITIES = {'"': "&quot;", "\r": "&#13;"}
# Characters XML 1.0 cannot hold even as references. S3 still writes them as
# references (clients that may meet such keys ask for encoding-type=url).
_UNREPRESENTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_NEEDS_ESCAPING = re.compile("[&<>\"\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def text(value: str) -> str:
    """``value`` escaped for element content."""
    if not _NEEDS_ESCAPING.search(value):
        return value
    escaped = escape(value, _ENTITIES)
    return _UNREPRESENTABLE.sub(lambda match: f"&#x{ord(match.group()):X};", escaped)


def root(tag: str) -> ElementTree.Element:
    """The root element of an S3 document, in S3's namespace."""
    return ElementTree.Element(tag, xmlns=S3_NAMESPACE)


def add(parent: ElementTree.Element, tag: str, text: str | None = None) -> ElementTree.Element:
    """Append a child element (with text, if given) and return it."""
    child = ElementTree.SubElement(parent, tag)
    if text is not None:
        child.text = text
    return child


def document(element: ElementTree.Element) -> bytes:
    """The serialised document, with its XML declaration."""
    return XML_DECLARATION + ElementTree.tostring(element, encoding="utf-8", xml_declaration=False)
