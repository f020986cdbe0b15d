"""The XML of multipart uploads: the CompleteMultipartUpload request, and the results."""

from __future__ import annotations

from typing import Mapping, Sequence

import attrs

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.records import PartRecord, UploadRecord
from s3orchestrator.s3 import list_xml, xml_output
from s3orchestrator.s3.headers import quoted_etag
from s3orchestrator.s3.list_xml import Owner
from s3orchestrator.s3.upload_listing import UploadPage
from s3orchestrator.s3.xml_input import child_text, children, local_name, parse_xml
from s3orchestrator.s3.xml_output import text

#: Checksum algorithms by their upper-case name, with the element naming their value.
CHECKSUM_ELEMENTS: Mapping[str, str] = {
    "CRC32": "ChecksumCRC32",
    "CRC32C": "ChecksumCRC32C",
    "CRC64NVME": "ChecksumCRC64NVME",
    "SHA1": "ChecksumSHA1",
    "SHA256": "ChecksumSHA256",
}


@attrs.frozen
class RequestedPart:
    """One <Part> of a CompleteMultipartUpload request."""

    number: int
    etag: str  # unquoted
    checksums: Mapping[str, str]  # lower-case algorithm -> base64 value, as given


def parse_complete_request(data: bytes) -> list[RequestedPart]:
    """The parts a CompleteMultipartUpload body lists, in the order given.

    MalformedXML for anything but a ``CompleteMultipartUpload`` document with at
    least one ``Part`` whose ``PartNumber`` is an integer and which has an ``ETag``.
    """
    root = parse_xml(data)
    if local_name(root) != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    parts = []
    for element in children(root, "Part"):
        number_text = (child_text(element, "PartNumber") or "").strip()
        etag = child_text(element, "ETag")
        if not (number_text.isascii() and number_text.isdigit()) or etag is None:
            raise S3Error("MalformedXML")
        checksums = {
            algorithm.lower(): value.strip()
            for algorithm, name in CHECKSUM_ELEMENTS.items()
            if (value := child_text(element, name)) is not None
        }
        parts.append(RequestedPart(int(number_text), etag.strip().strip('"'), checksums))
    if not parts:
        raise S3Error("MalformedXML", "You must specify at least one part.")
    return parts


def _document(root: str, elements: str) -> bytes:
    """A result document as text: keys need escapes ElementTree does not make (see list_xml)."""
    declaration = xml_output.XML_DECLARATION.decode()
    return f'{declaration}<{root} xmlns="{xml_output.S3_NAMESPACE}">{elements}</{root}>'.encode()


def initiate_result(upload: UploadRecord) -> bytes:
    """InitiateMultipartUploadResult."""
    return _document(
        "InitiateMultipartUploadResult",
        f"<Bucket>{text(upload.bucket)}</Bucket><Key>{text(upload.key)}</Key>"
        f"<UploadId>{text(upload.upload_id)}</UploadId>",
    )


def complete_result(location: str, bucket: str, key: str, etag: str) -> bytes:
    """CompleteMultipartUploadResult; ``location`` is the object's URL."""
    return _document(
        "CompleteMultipartUploadResult",
        f"<Location>{text(location)}</Location><Bucket>{text(bucket)}</Bucket><Key>{text(key)}</Key>"
        f"<ETag>{text(quoted_etag(etag))}</ETag>",
    )


def copy_part_result(part: PartRecord) -> bytes:
    """CopyPartResult of UploadPartCopy."""
    document = xml_output.root("CopyPartResult")
    xml_output.add(document, "LastModified", list_xml.last_modified(part.last_modified_ms))
    xml_output.add(document, "ETag", quoted_etag(part.etag))
    return xml_output.document(document)


def _owner_elements(name: str, owner: Owner) -> str:
    return f"<{name}><ID>{text(owner.id)}</ID><DisplayName>{text(owner.display_name)}</DisplayName></{name}>"


def _checksum_elements(checksums: Mapping[str, str]) -> str:
    return "".join(
        f"<{name}>{text(checksums[algorithm.lower()])}</{name}>"
        for algorithm, name in CHECKSUM_ELEMENTS.items()
        if algorithm.lower() in checksums
    )


def list_parts_result(
    upload: UploadRecord,
    parts: Sequence[PartRecord],
    owner: Owner,
    marker: int,
    max_parts: int,
    is_truncated: bool,
    url_encoding: bool = False,
) -> bytes:
    """ListPartsResult for one page of an upload's parts; the key URL-encoded if asked."""
    key = list_xml.url_encode(upload.key) if url_encoding else upload.key
    pieces = [
        xml_output.XML_DECLARATION.decode(),
        f'<ListPartsResult xmlns="{xml_output.S3_NAMESPACE}">',
        f"<Bucket>{text(upload.bucket)}</Bucket><Key>{text(key)}</Key>",
        f"<UploadId>{text(upload.upload_id)}</UploadId>",
        _owner_elements("Initiator", owner),
        _owner_elements("Owner", owner),
        "<StorageClass>STANDARD</StorageClass>",
        f"<PartNumberMarker>{marker}</PartNumberMarker>",
    ]
    if parts:
        pieces.append(f"<NextPartNumberMarker>{parts[-1].part_number}</NextPartNumberMarker>")
    pieces.append(f"<MaxParts>{max_parts}</MaxParts>")
    pieces.append(f"<IsTruncated>{'true' if is_truncated else 'false'}</IsTruncated>")
    if upload.checksum_algorithm:
        pieces.append(f"<ChecksumAlgorithm>{text(upload.checksum_algorithm)}</ChecksumAlgorithm>")
    if url_encoding:
        pieces.append("<EncodingType>url</EncodingType>")
    pieces.extend(
        f"<Part><PartNumber>{part.part_number}</PartNumber>"
        f"<LastModified>{list_xml.last_modified(part.last_modified_ms)}</LastModified>"
        f"<ETag>&quot;{text(part.etag)}&quot;</ETag><Size>{part.size}</Size>"
        f"{_checksum_elements(part.checksums)}</Part>"
        for part in parts
    )
    pieces.append("</ListPartsResult>")
    return "".join(pieces).encode("utf-8")


@attrs.frozen
class UploadListQuery:
    """The parameters of a ListMultipartUploads call."""

    prefix: str
    delimiter: str
    key_marker: str
    upload_id_marker: str
    max_uploads: int
    url_encoding: bool


def list_uploads_result(bucket: str, query: UploadListQuery, page: UploadPage, owner: Owner) -> bytes:
    """ListMultipartUploadsResult; keys, prefixes and markers URL-encoded if asked."""

    def key(value: str) -> str:
        return text(list_xml.url_encode(value) if query.url_encoding else value)

    pieces = [
        xml_output.XML_DECLARATION.decode(),
        f'<ListMultipartUploadsResult xmlns="{xml_output.S3_NAMESPACE}">',
        f"<Bucket>{text(bucket)}</Bucket>",
        f"<KeyMarker>{key(query.key_marker)}</KeyMarker>",
        f"<UploadIdMarker>{text(query.upload_id_marker)}</UploadIdMarker>",
    ]
    if page.is_truncated and page.next_key_marker is not None:
        pieces.append(f"<NextKeyMarker>{key(page.next_key_marker)}</NextKeyMarker>")
        pieces.append(f"<NextUploadIdMarker>{text(page.next_upload_id_marker or '')}</NextUploadIdMarker>")
    if query.delimiter:
        pieces.append(f"<Delimiter>{key(query.delimiter)}</Delimiter>")
    pieces.append(f"<Prefix>{key(query.prefix)}</Prefix>")
    pieces.append(f"<MaxUploads>{query.max_uploads}</MaxUploads>")
    pieces.append(f"<IsTruncated>{'true' if page.is_truncated else 'false'}</IsTruncated>")
    if query.url_encoding:
        pieces.append("<EncodingType>url</EncodingType>")
    pieces.extend(
        f"<Upload><Key>{key(upload.key)}</Key><UploadId>{text(upload.upload_id)}</UploadId>"
        f"{_owner_elements('Initiator', owner)}{_owner_elements('Owner', owner)}"
        f"<StorageClass>STANDARD</StorageClass>"
        f"<Initiated>{list_xml.last_modified(upload.initiated_ms)}</Initiated></Upload>"
        for upload in page.uploads
    )
    pieces.extend(f"<CommonPrefixes><Prefix>{key(prefix)}</Prefix></CommonPrefixes>" for prefix in page.common_prefixes)
    pieces.append("</ListMultipartUploadsResult>")
    return "".join(pieces).encode("utf-8")
