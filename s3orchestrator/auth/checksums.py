"""S3 additional checksums (x-amz-checksum-*): CRC32, CRC32C, CRC64NVME, SHA1, SHA256.

Values travel base64-encoded, CRCs as their big-endian bytes. CRC32 comes from
zlib, SHA1/SHA256 from hashlib, CRC32C and CRC64NVME from the first native
package that ``auth.crc`` finds (pure Python only as a last resort, with a
warning at start).
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Mapping, Protocol

from twisted.logger import Logger

from s3orchestrator.auth.crc import INSTALL_HINTS, CrcFunction, CrcImplementation, find_crc

# algorithm -> digest size in bytes
ALGORITHMS: Mapping[str, int] = {
    "crc32": 4,
    "crc32c": 4,
    "crc64nvme": 8,
    "sha1": 20,
    "sha256": 32,
}

# Chosen once, at import: which code computes CRC32C and CRC64NVME in this process.
CRC_IMPLEMENTATIONS: Mapping[str, CrcImplementation] = {
    algorithm: find_crc(algorithm) for algorithm in ("crc32c", "crc64nvme")
}

CHECKSUM_HEADERS: Mapping[str, str] = {f"x-amz-checksum-{alg}": alg for alg in ALGORITHMS}


class Checksum(Protocol):
    """An incremental checksum."""

    def update(self, data: bytes | memoryview) -> None: ...

    def digest(self) -> bytes: ...

    def b64digest(self) -> str: ...


class _Crc:
    """A running CRC over a ``zlib.crc32``-shaped function."""

    def __init__(self, function: CrcFunction, width_bytes: int) -> None:
        self._function = function
        self._width = width_bytes
        self._crc = 0

    def update(self, data: bytes | memoryview) -> None:
        self._crc = self._function(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(self._width, "big")

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


def new_checksum(algorithm: str) -> Checksum:
    """A fresh checksum for ``algorithm`` (lower-case name as in x-amz-checksum-<alg>)."""
    if algorithm == "crc32":
        return _Crc(zlib.crc32, 4)
    if algorithm in CRC_IMPLEMENTATIONS:
        return _Crc(CRC_IMPLEMENTATIONS[algorithm].function, ALGORITHMS[algorithm])
    if algorithm in ("sha1", "sha256"):
        return _Hashlib(algorithm)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def warn_of_slow_checksums(log: Logger, implementations: Mapping[str, CrcImplementation] = CRC_IMPLEMENTATIONS) -> None:
    """Log a warning for each CRC that only a pure-Python implementation computes here."""
    for implementation in implementations.values():
        if not implementation.native:
            log.warn(
                "x-amz-checksum-{algorithm} is computed in {source} (about 10 MB/s of daemon CPU); "
                "install {hint}",
                algorithm=implementation.algorithm, source=implementation.source,
                hint=INSTALL_HINTS[implementation.algorithm],
            )
