"""The manhole's password file: ``user:hash`` lines, hashes made with PBKDF2-HMAC-SHA256.

A hash reads ``pbkdf2_sha256$<iterations>$<salt>$<digest>`` (salt and digest in
base64 without padding), as ``s3orchestrator hash-password`` prints it. Plaintext
passwords are refused, and no error ever repeats a line of the file: it may hold one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Mapping

SCHEME = "pbkdf2_sha256"
#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
DEFAULT_ITERATIONS = 600_000
#: Beyond this a single login would tie up a thread for minutes: a typo, not a hash.
MAX_ITERATIONS = 100_000_000
SALT_BYTES = 16
_DIGEST_BYTES = hashlib.sha256().digest_size


class PasswordFileError(Exception):
    """The password file cannot be used; str() names the file and line, never its contents."""


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    # validate=True: anything outside the base64 alphabet is an error, not skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _encode_password(password: str | bytes) -> bytes:
    return password if isinstance(password, bytes) else password.encode("utf-8")


def hash_password(password: str | bytes, iterations: int = DEFAULT_ITERATIONS) -> str:
    """A salted PBKDF2-HMAC-SHA256 hash of ``password``, in the password file's format."""
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be between 1 and {MAX_ITERATIONS}")
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", _encode_password(password), salt, iterations)
    return f"{SCHEME}${iterations}${_b64encode(salt)}${_b64encode(digest)}"


def parse_hash(encoded: str) -> tuple[int, bytes, bytes] | None:
    """(iterations, salt, digest) of a hash in our format, or None if it is not one."""
    fields = encoded.split("$")
    if len(fields) != 4 or fields[0] != SCHEME:
        return None
    iterations_text, salt_text, digest_text = fields[1:]
    if not iterations_text.isascii() or not iterations_text.isdigit():
        return None
    iterations = int(iterations_text)
    if not 1 <= iterations <= MAX_ITERATIONS:
        return None
    try:
        salt = _b64decode(salt_text)
        digest = _b64decode(digest_text)
    except (binascii.Error, ValueError):
        return None
    if not salt or len(digest) != _DIGEST_BYTES:
        return None
    return iterations, salt, digest


def verify_password(password: str | bytes, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (False for anything not in our format)."""
    parsed = parse_hash(encoded)
    if parsed is None:
        return False
    iterations, salt, expected = parsed
    actual = hashlib.pbkdf2_hmac("sha256", _encode_password(password), salt, iterations)
    return hmac.compare_digest(actual, expected)


def load_password_file(path: str) -> dict[str, str]:
    """The users of a password file: ``{user: hash}``.

    Lines are ``user:hash``; blank lines and lines starting with ``#`` are ignored.
    A line without a valid hash (a plaintext password, say) or a duplicate user is a
    PasswordFileError naming the line number.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise PasswordFileError(f"{path}: cannot read the password file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_line = raw[: e.start].count(b"\n") + 1
        raise PasswordFileError(f"{path}: line {bad_line}: not UTF-8 text") from None
    users: dict[str, str] = {}
    lines_of: dict[str, int] = {}
    # split("\n"), not splitlines(): line numbers must match what an editor shows.
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        user, separator, encoded = stripped.partition(":")
        user, encoded = user.strip(), encoded.strip()
        if not separator or not user:
            raise PasswordFileError(f"{path}: line {number}: expected user:hash")
        if parse_hash(encoded) is None:
            raise PasswordFileError(
                f"{path}: line {number}: not a {SCHEME} hash (plaintext passwords are refused;"
                " make a line with: s3orchestrator hash-password --user NAME)"
            )
        if user in users:
            raise PasswordFileError(
                f"{path}: line {number}: user {user!r} is already defined on line {lines_of[user]}"
            )
        users[user] = encoded
        lines_of[user] = number
    return users


def check_password_file(path: str) -> Mapping[str, str]:
    """``load_password_file``, also refusing a file without users (nobody could log in)."""
    users = load_password_file(path)
    if not users:
        raise PasswordFileError(
            f"{path}: no users in the password file (add one with: s3orchestrator hash-password --user NAME)"
        )
    return users
