"""Tests for the pure parts of multipart uploads: the CompleteMultipartUpload request and
the result documents, the multipart ETag, copy ranges, the checks of Complete, the
part ranges of GET ?partNumber, and the routing of the multipart calls."""

from __future__ import annotations

import hashlib
from typing import Any, Mapping
from urllib.parse import unquote_plus
from xml.etree import ElementTree

import pytest

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.records import ObjectRecord, PartRecord, UploadRecord
from s3orchestrator.s3.api import operation_name
from s3orchestrator.s3.call import S3Call
from s3orchestrator.s3.list_xml import Owner
from s3orchestrator.s3.multipart import (
    MAX_OBJECT_SIZE,
    MIN_PART_SIZE,
    _chosen_parts,
    multipart_etag,
    parse_copy_range,
)
from s3orchestrator.s3.multipart_xml import (
    RequestedPart,
    UploadListQuery,
    complete_result,
    copy_part_result,
    initiate_result,
    list_parts_result,
    list_uploads_result,
    parse_complete_request,
)
from s3orchestrator.s3.objects import parse_part_number, part_range
from s3orchestrator.s3.upload_listing import UploadPage
from tests.unit.fakes import auth_result

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MiB = 1024**2
GiB = 1024**3
MD5_A = hashlib.md5(b"a").hexdigest()
MD5_B = hashlib.md5(b"b").hexdigest()


def code_of(error: pytest.ExceptionInfo[S3Error]) -> str:
    return error.value.code


def complete_body(parts: str, namespace: bool = True) -> bytes:
    xmlns = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' if namespace else ""
    declaration = '<?xml version="1.0" encoding="UTF-8"?>'
    return f"{declaration}<CompleteMultipartUpload{xmlns}>{parts}</CompleteMultipartUpload>".encode()


def xml_part(number: str, etag: str | None, extra: str = "") -> str:
    etag_element = "" if etag is None else f"<ETag>{etag}</ETag>"
    return f"<Part>{etag_element}<PartNumber>{number}</PartNumber>{extra}</Part>"


# -- parse_complete_request --------------------------------------------------------------------


@pytest.mark.parametrize("namespace", [True, False])
def test_complete_request_lists_the_parts_in_the_order_given(namespace: bool) -> None:
    body = complete_body(xml_part("2", f'"{MD5_B}"') + xml_part("1", f'"{MD5_A}"'), namespace)
    assert parse_complete_request(body) == [RequestedPart(2, MD5_B, {}), RequestedPart(1, MD5_A, {})]


@pytest.mark.parametrize(
    "etag",
    [MD5_A, f'"{MD5_A}"', f"&quot;{MD5_A}&quot;", f'  "{MD5_A}"\n ', f"\n{MD5_A}\n"],
)
def test_complete_request_takes_quoted_and_unquoted_etags(etag: str) -> None:
    assert parse_complete_request(complete_body(xml_part("1", etag))) == [RequestedPart(1, MD5_A, {})]


def test_complete_request_part_number_may_be_surrounded_by_whitespace() -> None:
    assert parse_complete_request(complete_body(xml_part(" 7\n", MD5_A)))[0].number == 7


def test_complete_request_reads_checksums_by_lower_case_algorithm() -> None:
    checksums = (
        "<ChecksumCRC32>yZRlqg==</ChecksumCRC32><ChecksumSHA256> 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU= "
        "</ChecksumSHA256>"
    )
    (requested,) = parse_complete_request(complete_body(xml_part("1", MD5_A, checksums)))
    assert dict(requested.checksums) == {
        "crc32": "yZRlqg==", "sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    }


def test_complete_request_reads_every_checksum_element() -> None:
    checksums = "".join(
        f"<Checksum{name}>{name.lower()}-value</Checksum{name}>"
        for name in ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
    )
    (requested,) = parse_complete_request(complete_body(xml_part("1", MD5_A, checksums), namespace=False))
    assert dict(requested.checksums) == {
        name: f"{name}-value" for name in ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
    }


def test_complete_request_ignores_unknown_elements() -> None:
    body = complete_body(xml_part("1", MD5_A, "<Size>5</Size><ChecksumMD5>x</ChecksumMD5>") + "<Other/>")
    assert parse_complete_request(body) == [RequestedPart(1, MD5_A, {})]


@pytest.mark.parametrize(
    "body",
    [
        b'<Delete><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></Delete>',
        b'<CompleteMultipart><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></CompleteMultipart>',
        b'<x:Complete xmlns:x="http://s3.amazonaws.com/doc/2006-03-01/"><Part/></x:Complete>',
    ],
)
def test_complete_request_with_another_root_is_malformed(body: bytes) -> None:
    with pytest.raises(S3Error) as error:
        parse_complete_request(body)
    assert code_of(error) == "MalformedXML"


@pytest.mark.parametrize("parts", ["", "<Parts/>", "<part><PartNumber>1</PartNumber><ETag>x</ETag></part>"])
def test_complete_request_without_parts_is_malformed(parts: str) -> None:
    with pytest.raises(S3Error) as error:
        parse_complete_request(complete_body(parts))
    assert code_of(error) == "MalformedXML"
    assert error.value.message == "You must specify at least one part."


@pytest.mark.parametrize("number", ["", "one", "1.5", "-1", "+1", "0x1", "\u0663", "1 2", "1e3"])
def test_complete_request_with_a_non_numeric_part_number_is_malformed(number: str) -> None:
    with pytest.raises(S3Error) as error:
        parse_complete_request(complete_body(xml_part(number, MD5_A)))
    assert code_of(error) == "MalformedXML"


def test_complete_request_part_without_part_number_is_malformed() -> None:
    with pytest.raises(S3Error) as error:
        parse_complete_request(complete_body(f"<Part><ETag>{MD5_A}</ETag></Part>"))
    assert code_of(error) == "MalformedXML"


def test_complete_request_part_without_etag_is_malformed() -> None:
    body = complete_body(xml_part("1", MD5_A) + xml_part("2", None))
    with pytest.raises(S3Error) as error:
        parse_complete_request(body)
    assert code_of(error) == "MalformedXML"


@pytest.mark.parametrize("body", [b"", b"not xml", b"<CompleteMultipartUpload><Part>", b"\xff\xfe\x00"])
def test_complete_request_that_is_not_xml_is_malformed(body: bytes) -> None:
    with pytest.raises(S3Error) as error:
        parse_complete_request(body)
    assert code_of(error) == "MalformedXML"


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE CompleteMultipartUpload [<!ENTITY e "' + MD5_A.encode() + b'">]>'
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&e;</ETag></Part></CompleteMultipartUpload>",
        b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&lol2;</ETag></Part></CompleteMultipartUpload>",
        b'<!DOCTYPE c SYSTEM "file:///etc/passwd"><CompleteMultipartUpload><Part><PartNumber>1</PartNumber>'
        b"<ETag>x</ETag></Part></CompleteMultipartUpload>",
        b'<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]><CompleteMultipartUpload><Part>'
        b"<PartNumber>1</PartNumber><ETag>&x;</ETag></Part></CompleteMultipartUpload>",
    ],
    ids=["internal-entity", "entity-expansion", "external-dtd", "external-entity"],
)
def test_complete_request_with_a_document_type_declaration_is_refused(body: bytes) -> None:
    with pytest.raises(S3Error) as error:
        parse_complete_request(body)
    assert code_of(error) == "MalformedXML"


def test_complete_request_with_a_utf16_document_type_declaration_is_refused() -> None:
    body = (
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE c [<!ENTITY e "' + MD5_A + '">]>'
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&e;</ETag></Part></CompleteMultipartUpload>"
    ).encode("utf-16")
    with pytest.raises(S3Error) as error:
        parse_complete_request(body)
    assert code_of(error) == "MalformedXML"


# -- result documents ---------------------------------------------------------------------------

OWNER = Owner(id="bkt", display_name="bkt")
AWKWARD_KEY = "dir/ä & <b> \"q\" +%2F\r\nend"


def upload_record(key: str = AWKWARD_KEY, upload_id: str = "0190abcdef12ffff", **changes: Any) -> UploadRecord:
    values: dict[str, Any] = dict(
        upload_id=upload_id, bucket="bkt", key=key, store="a", location=f"bkt/{key}", store_upload_id="s",
        content_type="binary/octet-stream", initiated_ms=1_795_428_000_123,
    )
    values.update(changes)
    return UploadRecord(**values)


def part_record(number: int, size: int = 5 * MiB, etag: str = MD5_A, **changes: Any) -> PartRecord:
    values: dict[str, Any] = dict(
        upload_id="u", part_number=number, store="a", size=size, etag=etag, store_etag=f"s{number}",
        last_modified_ms=1_795_428_000_456,
    )
    values.update(changes)
    return PartRecord(**values)


def parse(document: bytes) -> ElementTree.Element:
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ElementTree.fromstring(document)


def find(root: ElementTree.Element, path: str) -> str | None:
    element = root.find(path.format(ns=NS))
    return None if element is None else (element.text or "")


def test_initiate_result_names_bucket_key_and_upload_id() -> None:
    key = "dir/ä & <b> \"q\" 'x' +%2F end"
    root = parse(initiate_result(upload_record(key)))
    assert root.tag == f"{NS}InitiateMultipartUploadResult"
    assert (find(root, "{ns}Bucket"), find(root, "{ns}Key"), find(root, "{ns}UploadId")) == (
        "bkt", key, "0190abcdef12ffff",
    )


# A carriage return must survive the client's parser (a literal one would come back as \n).
CONTROL_KEY = "a\rb\r\nc"


@pytest.mark.parametrize(
    "document",
    [
        lambda: initiate_result(upload_record(CONTROL_KEY)),
        lambda: complete_result("http://host/bkt/k", "bkt", CONTROL_KEY, MD5_A),
    ],
    ids=["initiate", "complete"],
)
def test_result_documents_carry_keys_with_control_characters_intact(document: Any) -> None:
    assert find(parse(document()), "{ns}Key") == CONTROL_KEY


def test_complete_result_carries_location_and_the_quoted_etag() -> None:
    root = parse(complete_result("http://host:8080/bkt/a%20b", "bkt", "a b", f"{MD5_A}-3"))
    assert root.tag == f"{NS}CompleteMultipartUploadResult"
    assert find(root, "{ns}Location") == "http://host:8080/bkt/a%20b"
    assert (find(root, "{ns}Bucket"), find(root, "{ns}Key")) == ("bkt", "a b")
    assert find(root, "{ns}ETag") == f'"{MD5_A}-3"'


def test_copy_part_result_carries_last_modified_and_the_quoted_etag() -> None:
    root = parse(copy_part_result(part_record(1)))
    assert root.tag == f"{NS}CopyPartResult"
    assert find(root, "{ns}LastModified") == "2026-11-23T10:00:00.456Z"
    assert find(root, "{ns}ETag") == f'"{MD5_A}"'


def test_list_parts_result_describes_the_upload_and_its_parts() -> None:
    parts = [part_record(2, size=5 * MiB), part_record(5, size=3, etag=MD5_B, checksums={"crc32": "yZRlqg=="})]
    root = parse(list_parts_result(upload_record(checksum_algorithm="CRC32"), parts, OWNER, 1, 2, True))
    assert root.tag == f"{NS}ListPartsResult"
    assert (find(root, "{ns}Bucket"), find(root, "{ns}Key"), find(root, "{ns}UploadId")) == (
        "bkt", AWKWARD_KEY, "0190abcdef12ffff",
    )
    assert (find(root, "{ns}Initiator/{ns}ID"), find(root, "{ns}Owner/{ns}DisplayName")) == ("bkt", "bkt")
    assert find(root, "{ns}StorageClass") == "STANDARD"
    assert (find(root, "{ns}PartNumberMarker"), find(root, "{ns}NextPartNumberMarker")) == ("1", "5")
    assert (find(root, "{ns}MaxParts"), find(root, "{ns}IsTruncated")) == ("2", "true")
    assert find(root, "{ns}ChecksumAlgorithm") == "CRC32"
    listed = [
        (find(p, "{ns}PartNumber"), find(p, "{ns}LastModified"), find(p, "{ns}ETag"), find(p, "{ns}Size"),
         find(p, "{ns}ChecksumCRC32"))
        for p in root.findall(f"{NS}Part")
    ]
    assert listed == [
        ("2", "2026-11-23T10:00:00.456Z", f'"{MD5_A}"', str(5 * MiB), None),
        ("5", "2026-11-23T10:00:00.456Z", f'"{MD5_B}"', "3", "yZRlqg=="),
    ]


def test_list_parts_result_of_no_parts_has_no_next_marker() -> None:
    root = parse(list_parts_result(upload_record(), [], OWNER, 0, 1000, False))
    assert find(root, "{ns}NextPartNumberMarker") is None
    assert find(root, "{ns}ChecksumAlgorithm") is None
    assert (find(root, "{ns}PartNumberMarker"), find(root, "{ns}IsTruncated")) == ("0", "false")
    assert root.findall(f"{NS}Part") == []


def test_list_parts_result_url_encodes_the_key_when_asked() -> None:
    root = parse(list_parts_result(upload_record(key="dir/a b+ä"), [], OWNER, 0, 1000, False, url_encoding=True))
    assert find(root, "{ns}Key") == "dir/a%20b%2B%C3%A4"
    assert find(root, "{ns}EncodingType") == "url"
    plain = parse(list_parts_result(upload_record(key="dir/a b+ä"), [], OWNER, 0, 1000, False))
    assert (find(plain, "{ns}Key"), find(plain, "{ns}EncodingType")) == ("dir/a b+ä", None)


def uploads_query(url_encoding: bool = False, **changes: Any) -> UploadListQuery:
    values: dict[str, Any] = dict(
        prefix="", delimiter="", key_marker="", upload_id_marker="", max_uploads=1000, url_encoding=url_encoding,
    )
    values.update(changes)
    return UploadListQuery(**values)


def test_list_uploads_result_lists_uploads_and_common_prefixes() -> None:
    page = UploadPage(
        uploads=(upload_record("a", "01"), upload_record("a", "02")), common_prefixes=("d/",),
        is_truncated=False, next_key_marker="d/", next_upload_id_marker=None,
    )
    root = parse(list_uploads_result("bkt", uploads_query(delimiter="/", max_uploads=3), page, OWNER))
    assert root.tag == f"{NS}ListMultipartUploadsResult"
    assert find(root, "{ns}Bucket") == "bkt"
    assert (find(root, "{ns}KeyMarker"), find(root, "{ns}UploadIdMarker")) == ("", "")
    assert (find(root, "{ns}Delimiter"), find(root, "{ns}Prefix"), find(root, "{ns}MaxUploads")) == ("/", "", "3")
    assert find(root, "{ns}IsTruncated") == "false"
    assert find(root, "{ns}NextKeyMarker") is None and find(root, "{ns}NextUploadIdMarker") is None
    assert find(root, "{ns}EncodingType") is None
    uploads = [
        (find(u, "{ns}Key"), find(u, "{ns}UploadId"), find(u, "{ns}Initiated"), find(u, "{ns}Owner/{ns}ID"),
         find(u, "{ns}Initiator/{ns}DisplayName"), find(u, "{ns}StorageClass"))
        for u in root.findall(f"{NS}Upload")
    ]
    assert uploads == [
        ("a", "01", "2026-11-23T10:00:00.123Z", "bkt", "bkt", "STANDARD"),
        ("a", "02", "2026-11-23T10:00:00.123Z", "bkt", "bkt", "STANDARD"),
    ]
    assert [find(p, "{ns}Prefix") for p in root.findall(f"{NS}CommonPrefixes")] == ["d/"]


def test_list_uploads_result_of_a_truncated_page_names_the_next_markers() -> None:
    page = UploadPage((upload_record("a", "01"),), (), True, "a", "01")
    root = parse(list_uploads_result("bkt", uploads_query(key_marker="0", upload_id_marker="9", max_uploads=1),
                                     page, OWNER))
    assert (find(root, "{ns}KeyMarker"), find(root, "{ns}UploadIdMarker")) == ("0", "9")
    assert (find(root, "{ns}NextKeyMarker"), find(root, "{ns}NextUploadIdMarker")) == ("a", "01")
    assert find(root, "{ns}IsTruncated") == "true"
    assert find(root, "{ns}Delimiter") is None


def test_list_uploads_result_ending_on_a_common_prefix_has_an_empty_next_upload_id_marker() -> None:
    page = UploadPage((), ("d/",), True, "d/", None)
    root = parse(list_uploads_result("bkt", uploads_query(delimiter="/", max_uploads=1), page, OWNER))
    assert (find(root, "{ns}NextKeyMarker"), find(root, "{ns}NextUploadIdMarker")) == ("d/", "")


def test_list_uploads_result_escapes_keys_for_xml() -> None:
    page = UploadPage((upload_record(AWKWARD_KEY, "01"),), (AWKWARD_KEY[:5],), True, AWKWARD_KEY, "01")
    root = parse(list_uploads_result("bkt", uploads_query(prefix="dir/ä &"), page, OWNER))
    assert find(root, "{ns}Upload/{ns}Key") == AWKWARD_KEY
    assert find(root, "{ns}NextKeyMarker") == AWKWARD_KEY
    assert find(root, "{ns}CommonPrefixes/{ns}Prefix") == AWKWARD_KEY[:5]
    assert find(root, "{ns}Prefix") == "dir/ä &"


def test_list_uploads_result_url_encodes_keys_prefixes_and_markers_when_asked() -> None:
    key, common = "dir/ä b+c&\x01", "dir/sub dir/"
    query = uploads_query(
        url_encoding=True, prefix="dir/ä", delimiter=" ", key_marker="dir/a b", upload_id_marker="0 1"
    )
    page = UploadPage((upload_record(key, "01"),), (common,), True, common, None)
    root = parse(list_uploads_result("bkt", query, page, OWNER))
    assert find(root, "{ns}EncodingType") == "url"
    encoded = {
        "Key": find(root, "{ns}Upload/{ns}Key"),
        "CommonPrefix": find(root, "{ns}CommonPrefixes/{ns}Prefix"),
        "Prefix": find(root, "{ns}Prefix"),
        "Delimiter": find(root, "{ns}Delimiter"),
        "KeyMarker": find(root, "{ns}KeyMarker"),
        "NextKeyMarker": find(root, "{ns}NextKeyMarker"),
    }
    assert encoded == {
        "Key": "dir/%C3%A4%20b%2Bc%26%01",
        "CommonPrefix": "dir/sub%20dir/",
        "Prefix": "dir/%C3%A4",
        "Delimiter": "%20",
        "KeyMarker": "dir/a%20b",
        "NextKeyMarker": "dir/sub%20dir/",
    }
    assert unquote_plus(encoded["Key"]) == key
    # Upload ids are not keys: never encoded.
    assert find(root, "{ns}UploadIdMarker") == "0 1"


def test_list_uploads_result_leaves_keys_alone_without_url_encoding() -> None:
    page = UploadPage((upload_record("a b+c", "01"),), (), False, "a b+c", "01")
    root = parse(list_uploads_result("bkt", uploads_query(), page, OWNER))
    assert find(root, "{ns}Upload/{ns}Key") == "a b+c"


# -- multipart_etag -----------------------------------------------------------------------------


def s3_multipart_etag(bodies: list[bytes]) -> str:
    """S3's algorithm: the MD5 of the concatenated binary MD5s of the parts, then -N."""
    return hashlib.md5(b"".join(hashlib.md5(body).digest() for body in bodies)).hexdigest() + f"-{len(bodies)}"


@pytest.mark.parametrize(
    "bodies", [[b""], [b"hello"], [b"a" * 1000, b"b" * 10, b""], [bytes([i]) * i for i in range(1, 20)]]
)
def test_multipart_etag_is_s3s(bodies: list[bytes]) -> None:
    parts = [part_record(i, size=len(body), etag=hashlib.md5(body).hexdigest()) for i, body in enumerate(bodies, 1)]
    assert multipart_etag(parts) == s3_multipart_etag(bodies)


def test_multipart_etag_known_value() -> None:
    # md5(md5("hello") || md5("world")), over the binary digests, then the part count.
    parts = [
        part_record(1, etag="5d41402abc4b2a76b9719d911017c592"),
        part_record(2, etag="7d793037a0760186574b0282f2f435e7"),
    ]
    assert multipart_etag(parts) == "065947336a2f2a95ba8899f3675c3be6-2"


# -- parse_copy_range ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, size, expected",
    [(None, 10, None), ("bytes=0-9", 10, (0, 9)), ("bytes=3-3", 10, (3, 3)), ("bytes=2-5", 6, (2, 5)),
     ("bytes=0-0", 1, (0, 0))],
)
def test_copy_range_within_the_object(value: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_copy_range(value, size) == expected


@pytest.mark.parametrize("value, size", [("bytes=0-10", 10), ("bytes=10-10", 10), ("bytes=0-0", 0)])
def test_copy_range_beyond_the_object_is_invalid_range(value: str, size: int) -> None:
    with pytest.raises(S3Error) as error:
        parse_copy_range(value, size)
    assert code_of(error) == "InvalidRange"
    assert error.value.extra == {"ActualObjectSize": str(size), "RangeRequested": value}


@pytest.mark.parametrize(
    "value",
    ["", "bytes=", "bytes=5-4", "bytes=-5", "bytes=5-", "bits=0-1", "0-1", "bytes=a-b", "bytes=0-1,3-4", "bytes=+1-2",
     "bytes=0x1-2"],
)
def test_malformed_copy_range_is_invalid_argument(value: str) -> None:
    with pytest.raises(S3Error) as error:
        parse_copy_range(value, 100)
    assert code_of(error) == "InvalidArgument"
    assert error.value.extra["ArgumentName"] == "x-amz-copy-source-range"


def test_copy_range_with_a_superscript_digit_is_invalid_argument() -> None:
    with pytest.raises(S3Error) as error:
        parse_copy_range("bytes=\u00b2-3", 10)
    assert code_of(error) == "InvalidArgument"


# -- the checks of Complete (_chosen_parts) -----------------------------------------------------


def requested(*numbers: int, etag: str = MD5_A, checksums: Mapping[str, str] | None = None) -> list[RequestedPart]:
    return [RequestedPart(number, etag, dict(checksums or {})) for number in numbers]


def stored(*sizes: int, checksums: Mapping[str, str] | None = None) -> dict[int, PartRecord]:
    return {
        number: part_record(number, size=size, checksums=dict(checksums or {}))
        for number, size in enumerate(sizes, 1)
    }


def chosen_error(wanted: list[RequestedPart], parts: Mapping[int, PartRecord]) -> S3Error:
    with pytest.raises(S3Error) as error:
        _chosen_parts(wanted, parts)
    return error.value


def test_chosen_parts_are_the_listed_ones_in_order() -> None:
    parts = stored(5 * MiB, 6 * MiB, 5 * MiB, 7)
    assert _chosen_parts(requested(1, 3, 4), parts) == [parts[1], parts[3], parts[4]]


@pytest.mark.parametrize("numbers", [(2, 1), (1, 1), (1, 3, 2), (1, 2, 2)])
def test_parts_not_in_ascending_order_are_invalid_part_order(numbers: tuple[int, ...]) -> None:
    assert chosen_error(requested(*numbers), stored(*[5 * MiB] * 3)).code == "InvalidPartOrder"


def test_an_unknown_part_is_invalid_part() -> None:
    error = chosen_error(requested(1, 4), stored(5 * MiB, 5 * MiB))
    assert error.code == "InvalidPart"
    assert error.extra == {"PartNumber": "4", "ETag": MD5_A}


def test_a_part_with_another_etag_is_invalid_part() -> None:
    error = chosen_error(requested(1, etag=MD5_B), stored(5 * MiB))
    assert error.code == "InvalidPart"
    assert error.extra == {"PartNumber": "1", "ETag": MD5_B}


def test_a_part_with_a_mismatching_checksum_is_invalid_part() -> None:
    parts = stored(10, checksums={"crc32": "yZRlqg=="})
    assert chosen_error(requested(1, checksums={"crc32": "AAAAAA=="}), parts).code == "InvalidPart"


def test_a_part_with_the_matching_checksum_is_chosen() -> None:
    parts = stored(10, checksums={"crc32": "yZRlqg=="})
    assert _chosen_parts(requested(1, checksums={"crc32": "yZRlqg=="}), parts) == [parts[1]]


def test_a_part_but_the_last_smaller_than_5_mib_is_entity_too_small() -> None:
    error = chosen_error(requested(1, 2, 3), stored(5 * MiB, 5 * MiB - 1, 5 * MiB))
    assert error.code == "EntityTooSmall"
    assert error.extra["PartNumber"] == "2"
    assert error.extra["ProposedSize"] == str(5 * MiB - 1)
    assert error.extra["MinSizeAllowed"] == str(MIN_PART_SIZE)


@pytest.mark.parametrize("last", [0, 1, 5 * MiB - 1])
def test_the_last_part_may_be_small(last: int) -> None:
    parts = stored(5 * MiB, last)
    assert _chosen_parts(requested(1, 2), parts) == [parts[1], parts[2]]


def test_a_single_small_part_is_fine() -> None:
    parts = stored(1)
    assert _chosen_parts(requested(1), parts) == [parts[1]]


def test_a_small_part_left_out_does_not_count() -> None:
    parts = stored(5 * MiB, 3, 5 * MiB)
    assert _chosen_parts(requested(1, 3), parts) == [parts[1], parts[3]]


def test_an_object_over_5_tib_is_entity_too_large() -> None:
    parts = stored(*[5 * GiB] * 1025)
    error = chosen_error(requested(*range(1, 1026)), parts)
    assert error.code == "EntityTooLarge"
    assert error.extra == {"ProposedSize": str(1025 * 5 * GiB), "MaxSizeAllowed": str(MAX_OBJECT_SIZE)}


def test_an_object_of_exactly_5_tib_is_fine() -> None:
    parts = stored(*[5 * GiB] * 1024)
    assert len(_chosen_parts(requested(*range(1, 1025)), parts)) == 1024
    assert MAX_OBJECT_SIZE == 1024 * 5 * GiB


# -- GET/HEAD ?partNumber=N ---------------------------------------------------------------------


@pytest.mark.parametrize("value, number", [("1", 1), ("42", 42), ("10000", 10000), ("007", 7)])
def test_part_number_parses(value: str, number: int) -> None:
    assert parse_part_number(value) == number


@pytest.mark.parametrize(
    "value", ["", "0", "10001", "-1", "+1", " 1", "1.0", "abc", "\u0663", "\u00b2", "99999999999999999999"]
)
def test_invalid_part_number_is_invalid_argument(value: str) -> None:
    with pytest.raises(S3Error) as error:
        parse_part_number(value)
    assert code_of(error) == "InvalidArgument"
    assert error.value.extra == {"ArgumentName": "partNumber", "ArgumentValue": value}


def object_record(size: int, part_sizes: tuple[int, ...] = ()) -> ObjectRecord:
    return ObjectRecord(bucket="bkt", key="k", store="a", location="bkt/k", size=size, etag=MD5_A,
                        content_type="binary/octet-stream", last_modified_ms=0, part_sizes=part_sizes)


MULTIPART = object_record(10 * MiB + 3, (5 * MiB, 5 * MiB, 3))


@pytest.mark.parametrize(
    "number, expected",
    [("1", (0, 5 * MiB - 1)), ("2", (5 * MiB, 10 * MiB - 1)), ("3", (10 * MiB, 10 * MiB + 2))],
)
def test_part_range_of_a_multipart_object_is_that_parts_bytes(number: str, expected: tuple[int, int]) -> None:
    assert part_range(MULTIPART, number, None) == expected


def test_part_beyond_the_last_is_invalid_part() -> None:
    with pytest.raises(S3Error) as error:
        part_range(MULTIPART, "4", None)
    assert code_of(error) == "InvalidPart" and error.value.status == 400
    assert error.value.extra == {"PartNumberRequested": "4", "ActualPartCount": "3"}


@pytest.mark.parametrize("size", [0, 10])
def test_part_one_of_a_simple_object_is_all_of_it(size: int) -> None:
    assert part_range(object_record(size), "1", None) is None


def test_part_two_of_a_simple_object_is_invalid_part() -> None:
    with pytest.raises(S3Error) as error:
        part_range(object_record(10), "2", None)
    assert code_of(error) == "InvalidPart"
    assert error.value.extra == {"PartNumberRequested": "2", "ActualPartCount": "1"}


def test_part_number_with_a_range_header_is_invalid_request() -> None:
    with pytest.raises(S3Error) as error:
        part_range(MULTIPART, "1", "bytes=0-1")
    assert code_of(error) == "InvalidRequest"


def test_part_range_with_an_invalid_part_number_is_invalid_argument() -> None:
    with pytest.raises(S3Error) as error:
        part_range(MULTIPART, "0", None)
    assert code_of(error) == "InvalidArgument"


def test_an_empty_last_part_is_not_served_as_the_whole_object() -> None:
    record = object_record(5 * MiB, (5 * MiB, 0))
    assert part_range(record, "2", None) is not None


# -- routing ------------------------------------------------------------------------------------


def call(
    method: str, query: Mapping[str, str], key: str | None = "k", headers: Mapping[str, str] | None = None
) -> S3Call:
    return S3Call("0123456789ABCDEF", method, "bkt", key, dict(query),
                  {name: [value] for name, value in (headers or {}).items()}, auth_result())


COPY_SOURCE = {"x-amz-copy-source": "/bkt/src"}


@pytest.mark.parametrize(
    "method, query, key, headers, expected",
    [
        ("POST", {"uploads": ""}, "k", {}, "CreateMultipartUpload"),
        ("POST", {"uploads": "", "x-id": "CreateMultipartUpload"}, "k", {}, "CreateMultipartUpload"),
        ("PUT", {"partNumber": "1", "uploadId": "u"}, "k", {}, "UploadPart"),
        ("PUT", {"partNumber": "1", "uploadId": "u", "x-id": "UploadPart"}, "k", {}, "UploadPart"),
        ("PUT", {"partNumber": "1", "uploadId": "u"}, "k", COPY_SOURCE, "UploadPartCopy"),
        ("POST", {"uploadId": "u"}, "k", {}, "CompleteMultipartUpload"),
        ("DELETE", {"uploadId": "u"}, "k", {}, "AbortMultipartUpload"),
        ("GET", {"uploadId": "u"}, "k", {}, "ListParts"),
        ("GET", {"uploadId": "u", "max-parts": "2", "part-number-marker": "1"}, "k", {}, "ListParts"),
        ("GET", {"uploads": ""}, None, {}, "ListMultipartUploads"),
        ("GET", {"uploads": "", "prefix": "a", "delimiter": "/", "key-marker": "b", "upload-id-marker": "c",
                 "max-uploads": "2", "encoding-type": "url"}, None, {}, "ListMultipartUploads"),
        ("GET", {"partNumber": "2"}, "k", {}, "GetObject"),
        ("HEAD", {"partNumber": "1"}, "k", {}, "HeadObject"),
        ("PUT", {}, "k", COPY_SOURCE, "CopyObject"),
    ],
)
def test_multipart_calls_are_routed_by_method_and_subresource(
    method: str, query: Mapping[str, str], key: str | None, headers: Mapping[str, str], expected: str
) -> None:
    assert operation_name(call(method, query, key, headers)) == expected
