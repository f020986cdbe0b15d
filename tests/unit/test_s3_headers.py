"""Tests for the headers S3 keeps with objects: user metadata text and checksum algorithms."""

from __future__ import annotations

from email.header import decode_header

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.s3.headers import (
    check_checksum_algorithms,
    encode_metadata_value,
    object_headers,
    user_metadata,
)


def wire(text: str) -> str:
    """A header value as the web layer reads the UTF-8 bytes a client sent (latin-1)."""
    return text.encode("utf-8").decode("latin-1")


def decoded(value: str) -> str:
    return "".join(
        piece.decode(charset or "ascii") if isinstance(piece, bytes) else piece
        for piece, charset in decode_header(value)
    )


def test_utf8_metadata_bytes_are_stored_as_the_text_they_spell() -> None:
    assert user_metadata({"x-amz-meta-meta1": [wire("Hello Worldé")]}) == {"meta1": "Hello Worldé"}


def test_metadata_that_is_not_utf8_is_kept_byte_for_byte() -> None:
    assert user_metadata({"x-amz-meta-m": ["caf\xe9"]}) == {"m": "caf\xe9"}


@pytest.mark.parametrize(
    "sent", ["=?UTF-8?B?SGVsbG8gV29ybGTDqQ==?=", "=?UTF-8?Q?Hello_World=C3=A9?=", "=?utf-8?q?Hello_World=C3=A9?="]
)
def test_rfc2047_encoded_metadata_is_decoded_before_it_is_stored(sent: str) -> None:
    assert user_metadata({"x-amz-meta-m": [sent]}) == {"m": "Hello Worldé"}


def test_a_value_that_only_looks_encoded_is_kept() -> None:
    assert user_metadata({"x-amz-meta-m": ["=?not an encoded word?="]}) == {"m": "=?not an encoded word?="}


def test_metadata_size_counts_utf8_bytes() -> None:
    user_metadata({"x-amz-meta-k": [wire("é" * 1023)]})  # 1 + 2046 bytes: fits
    with pytest.raises(S3Error) as raised:
        user_metadata({"x-amz-meta-k": [wire("é" * 1024)]})
    assert raised.value.code == "MetadataTooLarge" and raised.value.extra["Size"] == "2049"


@pytest.mark.parametrize("value", ["mymeta", "", "a b_c=d?e", "tab\there"])
def test_printable_ascii_metadata_is_answered_as_is(value: str) -> None:
    assert encode_metadata_value(value) == value


def test_non_ascii_metadata_is_answered_q_encoded_as_s3_does() -> None:
    assert encode_metadata_value("Hello Worldé") == "=?UTF-8?Q?Hello_World=C3=A9?="
    assert encode_metadata_value("a_b=c?é") == "=?UTF-8?Q?a=5Fb=3Dc=3F=C3=A9?="


def test_metadata_with_control_characters_is_answered_b_encoded() -> None:
    assert encode_metadata_value("\x04mymeta") == "=?UTF-8?B?BG15bWV0YQ==?="


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40))
def test_answered_metadata_is_ascii_and_decodes_to_the_stored_text(value: str) -> None:
    encoded = encode_metadata_value(value)
    assert encoded.isascii() and "\r" not in encoded and "\n" not in encoded
    assert (encoded == value) or decoded(encoded) == value


def test_get_answers_non_ascii_metadata_rfc2047_encoded() -> None:
    record = ObjectRecord(
        bucket="b", key="k", store="s", location="b/k", size=0, etag="e", content_type="text/plain",
        last_modified_ms=0, user_metadata={"meta1": "Hello Worldé", "plain": "x"},
    )
    headers = dict(object_headers(record, {}))
    assert headers["x-amz-meta-meta1"] == "=?UTF-8?Q?Hello_World=C3=A9?="
    assert headers["x-amz-meta-plain"] == "x"


@pytest.mark.parametrize("name", ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"])
@pytest.mark.parametrize("value", ["crc32", "CRC32C", "crc64nvme", "SHA1", "sha256"])
def test_known_checksum_algorithms_pass(name: str, value: str) -> None:
    check_checksum_algorithms({name: [value]})


def test_the_checksum_algorithm_is_returned_upper_case() -> None:
    assert check_checksum_algorithms({"x-amz-checksum-algorithm": ["crc32c"]}) == "CRC32C"
    assert check_checksum_algorithms({}) is None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x-amz-sdk-checksum-algorithm", "Value for x-amz-sdk-checksum-algorithm header is invalid."),
        ("x-amz-checksum-algorithm", "Checksum algorithm provided is unsupported."),
    ],
)
@pytest.mark.parametrize("value", ["MD5", "CRC33", ""])
def test_unknown_checksum_algorithms_are_invalid_requests(name: str, message: str, value: str) -> None:
    with pytest.raises(S3Error) as raised:
        check_checksum_algorithms({name: [value]})
    assert raised.value.code == "InvalidRequest" and raised.value.status == 400
    assert raised.value.message.startswith(message)
