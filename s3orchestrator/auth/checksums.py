"""S3 additional checksums (x-amz-checksum-*): CRC32, CRC32C, CRC64NVME, SHA1, SHA256.

Values travel base64-encoded, CRCs as their big-endian bytes.  CRC32C uses the
optional ``crc32c`` package when installed (hardware accelerated); CRC32C
without it and CRC64NVME use a table-driven pure-Python fallback, which is
correct but slow (tens of MB/s), fine for the occasional client that asks.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Callable, Mapping, Protocol

try:  # optional accelerator; the pure-Python table below is the fallback
    import crc32c as _crc32c_module
except ImportError:  # pragma: no cover - depends on the environment
    _crc32c_module = None

# algorithm -> digest size in bytes
ALGORITHMS: Mapping[str, int] = {
    "crc32": 4,
    "crc32c": 4,
    "crc64nvme": 8,
    "sha1": 20,
    "sha256": 32,
}

CHECKSUM_HEADERS: Mapping[str, str] = {f"x-amz-checksum-{alg}": alg for alg in ALGORITHMS}


class Checksum(Protocol):
    """An incremental checksum."""

    def update(self, data: bytes | memoryview) -> None: ...

    def digest(self) -> bytes: ...

    def b64digest(self) -> str: ...


def _reflected_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


# Reflected (LSB-first) polynomials.
_CRC32C_TABLE = _reflected_table(0x82F63B78)
# CRC-64/NVME: polynomial 0xAD93D23594C93659, bit-reversed here; init and xorout all ones.
_CRC64NVME_TABLE = _reflected_table(0x9A6C9329AC4BC9B5)


class _Crc32:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes | memoryview) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


class _TableCrc:
    """A reflected CRC with init = xorout = all ones, one table lookup per byte."""

    def __init__(self, table: tuple[int, ...], width_bytes: int) -> None:
        self._table = table
        self._width = width_bytes
        self._mask = (1 << (8 * width_bytes)) - 1
        self._crc = self._mask

    def update(self, data: bytes | memoryview) -> None:
        table = self._table
        crc = self._crc
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        self._crc = crc

    def digest(self) -> bytes:
        return (self._crc ^ self._mask).to_bytes(self._width, "big")

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


class _NativeCrc32c:
    def __init__(self, function: Callable[[bytes | memoryview, int], int]) -> None:
        self._function = function
        self._crc = 0

    def update(self, data: bytes | memoryview) -> None:
        self._crc = self._function(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


class _Hashlib:
    def __init__(self, name: str) -> None:
        self._hash = hashlib.new(name)

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


def native_crc32c_available() -> bool:
    """True if the accelerated ``crc32c`` package is importable."""
    return _crc32c_module is not None


def new_checksum(algorithm: str, *, prefer_native: bool = True) -> Checksum:
    """A fresh checksum for ``algorithm`` (lower-case name as in x-amz-checksum-<alg>).

    ``prefer_native=False`` forces the pure-Python CRC32C (for tests).
    """
    if algorithm == "crc32":
        return _Crc32()
    if algorithm == "crc32c":
        if prefer_native and _crc32c_module is not None:
            # crc32c >= 2 names it crc32c; 1.x called it crc32.
            function = getattr(_crc32c_module, "crc32c", None) or _crc32c_module.crc32
            return _NativeCrc32c(function)
        return _TableCrc(_CRC32C_TABLE, 4)
    if algorithm == "crc64nvme":
        return _TableCrc(_CRC64NVME_TABLE, 8)
    if algorithm in ("sha1", "sha256"):
        return _Hashlib(algorithm)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")
