"""Tests for the upstream S3 store's locations: readable where possible, escaped where needed, injective."""

from __future__ import annotations

import hashlib
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orchestrator.stores.s3_locations import MAX_LOCATION_BYTES, MAX_SEGMENT_BYTES, upstream_location

# Keys built mostly from the characters the escaping is about, so that collisions
# (if the scheme allowed any) are likely to be generated.
_tricky = st.sampled_from(
    ["/", ".", "..", "%", "%%", "#", "\\", "\x00", "\x01", "a", "é", " ", "%2E", "%25", "%5C", "%23", "%00", "%01"]
)
tricky_keys = st.lists(_tricky, min_size=1, max_size=12).map("".join)
# Short keys of escapes and what they escape: an encoding that is not decodable collides here.
escape_keys = st.lists(st.sampled_from(["\\", "%5C", "%", "#", "%23", "/", "a", "."]), min_size=1, max_size=6).map(
    "".join
)
long_keys = st.tuples(st.sampled_from(["a", "é", "%", "/", "\\", "."]), st.integers(1, 1024)).map(
    lambda pair: (pair[0] * pair[1]).encode("utf-8")[:1024].decode("utf-8", "ignore") or "x"
)
any_keys = st.one_of(tricky_keys, escape_keys, long_keys, st.text(min_size=1, max_size=300))


@pytest.mark.parametrize("key", [
    "plain.txt", "dir/sub/file", "with space", "plus+sign", "encoded%2Fslash", "percent%", "unicodé/日本語",
    "...", ".hidden/x.", "a%%b", "tilde~and*star'(x)!", "#hash", "ctl\x01char",
])
def test_ordinary_keys_keep_the_readable_layout(key: str) -> None:
    assert upstream_location("app", key) == f"app/{key}"


@pytest.mark.parametrize("key, location", [
    ("../x", "app/%%../x"),
    ("a/./b", "app/a/%%./b"),
    ("a//b", "app/a/%%/b"),
    ("a\\b", "app/%%a%5Cb"),
    ("x/a\\..\\b#", "app/x/%%a%5C..%5Cb%23"),
    ("..", "app/%%.."),
    (".", "app/%%."),
    ("docs/", "app/docs/%%"),
    ("/lead", "app/%%/lead"),
    ("%%x", "app/%%%25%25x"),
    ("nul\x00/y", "app/%%nul%00/y"),
])
def test_only_the_segments_that_need_it_are_escaped(key: str, location: str) -> None:
    assert upstream_location("app", key) == location


def test_a_segment_too_long_for_a_file_name_is_hashed() -> None:
    segment = "s" * (MAX_SEGMENT_BYTES + 1)
    digest = hashlib.sha256(segment.encode()).hexdigest()
    assert upstream_location("app", f"d/{segment}/f") == f"app/d/%%#{digest}/f"
    assert upstream_location("app", "s" * MAX_SEGMENT_BYTES) == "app/" + "s" * MAX_SEGMENT_BYTES


def test_a_key_too_long_for_the_upstream_is_hashed() -> None:
    key = "/".join(["d" * 204] * 5)  # 1024 bytes: a valid key, too long behind "app/"
    assert upstream_location("app", key) == "app/%%##" + hashlib.sha256(key.encode()).hexdigest()
    fitting = key[: MAX_LOCATION_BYTES - len("app/")]
    assert upstream_location("app", fitting) == "app/" + fitting


@given(st.lists(any_keys, min_size=2, max_size=40, unique=True))
def test_distinct_keys_never_share_a_location(keys: list[str]) -> None:
    locations = {upstream_location("app", key) for key in keys}
    assert len(locations) == len(keys)


@given(any_keys)
def test_every_location_decodes_back_to_its_key(key: str) -> None:
    # Decodable, hence injective: each location segment is the key's segment itself,
    # or %% and its percent-escaped form, or %%# and its hash (%%## and the key's hash
    # for a whole key too long).
    rest = upstream_location("app", key).removeprefix("app/")
    if rest.startswith("%%##"):
        assert rest == "%%##" + sha256(key)
        return
    stored_segments = rest.split("/")
    assert len(stored_segments) == len(key.split("/"))
    for original, stored in zip(key.split("/"), stored_segments, strict=True):
        if stored.startswith("%%#"):
            assert stored == "%%#" + sha256(original)
        elif stored.startswith("%%"):
            assert unquote(stored[2:]) == original
        else:
            assert stored == original


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@given(any_keys, any_keys)
def test_an_escaped_location_never_equals_another_keys_plain_location(key: str, other: str) -> None:
    # A key whose location is <bucket>/<key> (an ordinary key) owns that name: no other key maps there.
    if upstream_location("app", other) == f"app/{other}" and key != other:
        assert upstream_location("app", key) != f"app/{other}"


@given(any_keys)
def test_every_location_is_one_a_filesystem_backed_server_can_hold(key: str) -> None:
    location = upstream_location("app", key)
    assert len(location.encode("utf-8")) <= MAX_LOCATION_BYTES
    segments = location.split("/")
    assert segments[0] == "app"
    for segment in segments[1:]:
        assert segment not in ("", ".", "..")
        assert "\\" not in segment and "\x00" not in segment
        assert len(segment.encode("utf-8")) <= MAX_SEGMENT_BYTES
