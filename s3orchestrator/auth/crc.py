"""CRC32C and CRC64NVME functions: the first native implementation installed, pure Python last.

Every function has the shape of ``zlib.crc32``: ``function(data, previous) -> crc``,
``previous`` being the CRC of the bytes before ``data`` (0 before the first byte).
The native ones run at memory speed (awscrt, crc32c: GB/s with CPU instructions)
or at least in C (crcmod: table-driven, a few hundred MB/s); the pure-Python
table fallback does about 10 MB/s, so a client asking for it costs the daemon
minutes of CPU per GiB. The daemon warns at start when it has to use one.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable, Iterator, Mapping

import attrs

__all__ = ["CrcFunction", "CrcImplementation", "INSTALL_HINTS", "PURE_PYTHON", "find_crc", "installed_crcs"]

CrcFunction = Callable[[bytes | memoryview, int], int]
ImportModule = Callable[[str], ModuleType]

_MASK64 = (1 << 64) - 1
# CRC-64/NVME: polynomial 0xAD93D23594C93659 (with its x^64 term for crcmod), reflected,
# init and xorout all ones (crcmod's initCrc is init ^ xorout).
_CRC64NVME_POLY = 0x1AD93D23594C93659


@attrs.frozen
class CrcImplementation:
    """Which code computes one CRC algorithm."""

    algorithm: str
    source: str  # the package ("crc32c", "awscrt", "crcmod") or "pure Python"
    function: CrcFunction
    native: bool


def _crc32c_package(import_module: ImportModule) -> CrcFunction:
    function: CrcFunction = import_module("crc32c").crc32c  # crc32c >= 2 (1.x named it crc32)
    return function


def _awscrt_crc32c(import_module: ImportModule) -> CrcFunction:
    function: CrcFunction = import_module("awscrt.checksums").crc32c
    return function


def _awscrt_crc64nvme(import_module: ImportModule) -> CrcFunction:
    # awscrt >= 0.23.4, what botocore uses; Debian 12's 0.16 has no crc64nvme (AttributeError).
    function: CrcFunction = import_module("awscrt.checksums").crc64nvme
    return function


def _crcmod_crc64nvme(import_module: ImportModule) -> CrcFunction:
    # Without its C extension crcmod silently computes in pure Python, slower than ours.
    import_module("crcmod._crcfunext")
    function: CrcFunction = import_module("crcmod").mkCrcFun(_CRC64NVME_POLY, initCrc=0, rev=True, xorOut=_MASK64)
    return function


_NATIVE: Mapping[str, tuple[tuple[str, Callable[[ImportModule], CrcFunction]], ...]] = {
    "crc32c": (("crc32c", _crc32c_package), ("awscrt", _awscrt_crc32c)),
    "crc64nvme": (("awscrt", _awscrt_crc64nvme), ("crcmod", _crcmod_crc64nvme)),
}

INSTALL_HINTS: Mapping[str, str] = {
    "crc32c": "the crc32c package (pip install crc32c; Debian: python3-crc32c)",
    "crc64nvme": "awscrt >= 0.23.4 (pip install awscrt) or crcmod with its C extension (Debian: python3-crcmod)",
}


def _reflected_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def _table_crc(reflected_poly: int, width_bits: int) -> CrcFunction:
    """A reflected CRC with init = xorout = all ones, one table lookup per byte."""
    table = _reflected_table(reflected_poly)
    mask = (1 << width_bits) - 1

    def crc(data: bytes | memoryview, previous: int = 0) -> int:
        value = previous ^ mask
        for byte in data:
            value = table[(value ^ byte) & 0xFF] ^ (value >> 8)
        return value ^ mask

    return crc


# Reflected (LSB-first) polynomials: CRC-32C 0x1EDC6F41, CRC-64/NVME 0xAD93D23594C93659.
PURE_PYTHON: Mapping[str, CrcFunction] = {
    "crc32c": _table_crc(0x82F63B78, 32),
    "crc64nvme": _table_crc(0x9A6C9329AC4BC9B5, 64),
}


def installed_crcs(
    algorithm: str, import_module: ImportModule = importlib.import_module
) -> Iterator[CrcImplementation]:
    """Every implementation of ``algorithm`` that imports here, best first, pure Python last."""
    for source, load in _NATIVE[algorithm]:
        try:
            function = load(import_module)
        except (ImportError, AttributeError):
            continue
        yield CrcImplementation(algorithm=algorithm, source=source, function=function, native=True)
    yield CrcImplementation(algorithm=algorithm, source="pure Python", function=PURE_PYTHON[algorithm], native=False)


def find_crc(algorithm: str, import_module: ImportModule = importlib.import_module) -> CrcImplementation:
    """The best implementation of ``algorithm`` installed here (importing no more than it needs)."""
    return next(installed_crcs(algorithm, import_module))
