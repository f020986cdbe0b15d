"""Building S3's XML response documents."""

from __future__ import annotations

from xml.etree import ElementTree

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


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
