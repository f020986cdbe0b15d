"""The manhole's password hashes and password file."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from s3orchestrator.ops import passwords
from s3orchestrator.ops.passwords import (
    PasswordFileError,
    check_password_file,
    hash_password,
    load_password_file,
    parse_hash,
    verify_password,
)

FAST = 1000  # iterations for tests that do not check the default


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def test_hash_has_the_documented_format_and_default_strength():
    scheme, iterations, salt, digest = hash_password("s3cret").split("$")
    assert scheme == "pbkdf2_sha256"
    assert int(iterations) == 600_000
    assert len(base64.b64decode(salt + "==")) == 16
    assert len(base64.b64decode(digest + "=")) == 32


def test_hash_is_pbkdf2_hmac_sha256_of_the_utf8_password():
    encoded = hash_password("pässword", iterations=FAST)
    _, _, salt, digest = encoded.split("$")
    salt_bytes = base64.b64decode(salt + "==")
    expected = hashlib.pbkdf2_hmac("sha256", "pässword".encode(), salt_bytes, FAST)
    assert base64.b64decode(digest + "=") == expected


def test_verify_accepts_a_hash_made_elsewhere():
    # RFC 7914 section 11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1 (first 32 bytes).
    digest = bytes.fromhex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
    encoded = f"pbkdf2_sha256$1${b64(b'salt')}${b64(digest)}"
    assert verify_password("passwd", encoded)
    assert not verify_password("passwd2", encoded)


def test_same_password_hashes_differently_each_time():
    assert hash_password("same", iterations=FAST) != hash_password("same", iterations=FAST)


def test_verify_accepts_the_right_password_only():
    encoded = hash_password("right", iterations=FAST)
    assert verify_password("right", encoded)
    assert verify_password(b"right", encoded)
    assert not verify_password("wrong", encoded)
    assert not verify_password("", encoded)


def test_verify_compares_digests_in_constant_time(monkeypatch):
    calls = []
    real = passwords.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    verify_password("x", hash_password("y", iterations=FAST))
    assert len(calls) == 1


@pytest.mark.parametrize("encoded", [
    "",
    "hunter2",
    "md5$1$c2FsdA$AAAA",
    "pbkdf2_sha1$1000$c2FsdA$" + "A" * 43,
    "pbkdf2_sha256$abc$c2FsdA$" + "A" * 43,
    "pbkdf2_sha256$0$c2FsdA$" + "A" * 43,
    "pbkdf2_sha256$-5$c2FsdA$" + "A" * 43,
    "pbkdf2_sha256$1000000000$c2FsdA$" + "A" * 43,
    "pbkdf2_sha256$1000$$" + "A" * 43,
    "pbkdf2_sha256$1000$c2FsdA$AAAA",
    "pbkdf2_sha256$1000$not base64!$" + "A" * 43,
    "pbkdf2_sha256$1000$c2FsdA$" + "A" * 43 + "$extra",
])
def test_unknown_or_malformed_hashes_never_verify(encoded):
    assert parse_hash(encoded) is None
    assert verify_password("hunter2", encoded) is False


def test_hash_password_refuses_absurd_iteration_counts():
    with pytest.raises(ValueError):
        hash_password("x", iterations=0)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "manhole.passwd"
    path.write_text(text)
    return str(path)


def test_password_file_ignores_comments_and_blank_lines(tmp_path):
    alice, bob = hash_password("a", iterations=FAST), hash_password("b", iterations=FAST)
    path = write(tmp_path, f"# operators\n\nalice:{alice}\n   # indented comment\r\nbob:{bob}\r\n\n")
    assert load_password_file(path) == {"alice": alice, "bob": bob}


def test_plaintext_password_line_is_an_error_naming_the_line_not_its_text(tmp_path):
    path = write(tmp_path, f"# ok\nalice:{hash_password('a', iterations=FAST)}\nbob:hunter2\n")
    with pytest.raises(PasswordFileError) as raised:
        load_password_file(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: line 3: not a pbkdf2_sha256 hash")
    assert "hunter2" not in message


def test_line_without_separator_is_an_error_without_echo(tmp_path):
    path = write(tmp_path, "just-a-secret-password\n")
    with pytest.raises(PasswordFileError) as raised:
        load_password_file(path)
    assert str(raised.value) == f"{path}: line 1: expected user:hash"


def test_line_without_user_is_an_error(tmp_path):
    path = write(tmp_path, f":{hash_password('a', iterations=FAST)}\n")
    with pytest.raises(PasswordFileError, match="line 1: expected user:hash"):
        load_password_file(path)


def test_duplicate_user_is_an_error_naming_both_lines(tmp_path):
    encoded = hash_password("a", iterations=FAST)
    path = write(tmp_path, f"alice:{encoded}\n\nalice:{encoded}\n")
    with pytest.raises(PasswordFileError, match="line 3: user 'alice' is already defined on line 1"):
        load_password_file(path)


def test_unreadable_password_file_is_an_error(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(PasswordFileError, match="cannot read the password file: No such file or directory"):
        load_password_file(missing)


def test_non_utf8_password_file_names_the_line(tmp_path):
    path = tmp_path / "manhole.passwd"
    path.write_bytes(b"# fine\n\xff\xfe:x\n")
    with pytest.raises(PasswordFileError, match="line 2: not UTF-8 text"):
        load_password_file(str(path))


def test_a_file_without_users_cannot_start_a_manhole(tmp_path):
    path = write(tmp_path, "# nobody yet\n")
    assert load_password_file(path) == {}
    with pytest.raises(PasswordFileError, match="no users in the password file"):
        check_password_file(path)
