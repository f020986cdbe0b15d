"""x-amz-checksum-* algorithms: check values, which CRC implementation is chosen, and
every installed implementation against the pure-Python reference."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable

import pytest
from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import Logger, LogLevel, formatEvent

from s3orchestrator.auth import crc
from s3orchestrator.auth.checksums import (
    CHECKSUM_HEADERS,
    CRC_IMPLEMENTATIONS,
    new_checksum,
    warn_of_slow_checksums,
)
from s3orchestrator.auth.crc import PURE_PYTHON, CrcImplementation, find_crc, installed_crcs

# The standard check values: the CRC of b"123456789".
CHECK_VALUES = {"crc32c": 0xE3069283, "crc64nvme": 0xAE8B14860A799888}
WIDTH = {"crc32c": 4, "crc64nvme": 8}


def crc_function(name: str) -> Callable[[bytes, int], int]:
    def function(data: bytes, previous: int = 0) -> int:
        raise AssertionError(f"{name} was not meant to run")

    return function


def module(name: str, **attributes: Any) -> ModuleType:
    fake = ModuleType(name)
    for attribute, value in attributes.items():
        setattr(fake, attribute, value)
    return fake


class FakeCrcmod(ModuleType):
    """crcmod's mkCrcFun, recording the CRC it was asked for."""

    def __init__(self) -> None:
        super().__init__("crcmod")
        self.made: list[tuple[int, dict[str, Any]]] = []
        self.function = crc_function("crcmod")

    def mkCrcFun(self, poly: int, **options: Any) -> Callable[[bytes, int], int]:  # noqa: N802 - crcmod's name
        self.made.append((poly, options))
        return self.function


def importer(modules: dict[str, ModuleType]) -> Callable[[str], ModuleType]:
    """An import_module that knows only ``modules``."""

    def import_module(name: str) -> ModuleType:
        if name not in modules:
            raise ImportError(f"No module named {name!r}")
        return modules[name]

    return import_module


AWSCRT = module("awscrt.checksums", crc32c=crc_function("awscrt crc32c"), crc64nvme=crc_function("awscrt crc64"))
OLD_AWSCRT = module("awscrt.checksums", crc32c=crc_function("awscrt 0.16 crc32c"))  # Debian 12: no crc64nvme
CRC32C = module("crc32c", crc32c=crc_function("crc32c"))


def test_checksum_headers_map_to_algorithms() -> None:
    assert CHECKSUM_HEADERS["x-amz-checksum-crc64nvme"] == "crc64nvme"
    assert set(CHECKSUM_HEADERS.values()) == {"crc32", "crc32c", "crc64nvme", "sha1", "sha256"}


@pytest.mark.parametrize("algorithm", sorted(CHECK_VALUES))
def test_check_value_over_two_updates(algorithm: str) -> None:
    c = new_checksum(algorithm)
    c.update(b"1234")
    c.update(b"56789")
    assert c.digest() == CHECK_VALUES[algorithm].to_bytes(WIDTH[algorithm], "big")


@pytest.mark.parametrize("algorithm", sorted(CHECK_VALUES))
def test_pure_python_check_value(algorithm: str) -> None:
    function = PURE_PYTHON[algorithm]
    assert function(b"56789", function(b"1234", 0)) == CHECK_VALUES[algorithm]


@pytest.mark.parametrize("algorithm", sorted(CHECK_VALUES))
def test_this_process_computes_crcs_natively(algorithm: str) -> None:
    # The venv (crc32c, awscrt) and the Debian package (python3-crc32c, python3-crcmod)
    # both depend on a native implementation of each.
    chosen = CRC_IMPLEMENTATIONS[algorithm]
    assert chosen.native
    assert chosen.source != "pure Python"
    assert chosen.function is not PURE_PYTHON[algorithm]


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError):
        new_checksum("md5")


def test_the_crc32c_package_is_preferred() -> None:
    chosen = find_crc("crc32c", importer({"crc32c": CRC32C, "awscrt.checksums": AWSCRT}))
    assert chosen == CrcImplementation("crc32c", "crc32c", CRC32C.crc32c, native=True)


def test_awscrt_computes_crc32c_without_the_crc32c_package() -> None:
    chosen = find_crc("crc32c", importer({"awscrt.checksums": OLD_AWSCRT}))
    assert (chosen.source, chosen.function, chosen.native) == ("awscrt", OLD_AWSCRT.crc32c, True)


def test_awscrt_is_preferred_for_crc64nvme() -> None:
    crcmod = FakeCrcmod()
    modules = {"awscrt.checksums": AWSCRT, "crcmod": crcmod, "crcmod._crcfunext": module("crcmod._crcfunext")}
    chosen = find_crc("crc64nvme", importer(modules))
    assert (chosen.source, chosen.function, chosen.native) == ("awscrt", AWSCRT.crc64nvme, True)
    assert crcmod.made == []


def test_crcmod_computes_crc64nvme_where_awscrt_has_none() -> None:
    crcmod = FakeCrcmod()
    modules = {"awscrt.checksums": OLD_AWSCRT, "crcmod": crcmod, "crcmod._crcfunext": module("crcmod._crcfunext")}
    chosen = find_crc("crc64nvme", importer(modules))
    assert (chosen.source, chosen.function, chosen.native) == ("crcmod", crcmod.function, True)
    assert crcmod.made == [(0x1AD93D23594C93659, {"initCrc": 0, "rev": True, "xorOut": (1 << 64) - 1})]


def test_crcmod_without_its_c_extension_is_not_used() -> None:
    chosen = find_crc("crc64nvme", importer({"awscrt.checksums": OLD_AWSCRT, "crcmod": FakeCrcmod()}))
    assert (chosen.source, chosen.function, chosen.native) == ("pure Python", PURE_PYTHON["crc64nvme"], False)


@pytest.mark.parametrize("algorithm", sorted(CHECK_VALUES))
def test_pure_python_is_the_last_resort(algorithm: str) -> None:
    chosen = find_crc(algorithm, importer({}))
    assert chosen == CrcImplementation(algorithm, "pure Python", PURE_PYTHON[algorithm], native=False)


def test_installed_crcs_lists_every_importable_implementation_best_first() -> None:
    modules = {"crc32c": CRC32C, "awscrt.checksums": AWSCRT}
    assert [found.source for found in installed_crcs("crc32c", importer(modules))] == [
        "crc32c", "awscrt", "pure Python"]


def native_implementations() -> list[CrcImplementation]:
    found = [each for algorithm in sorted(CHECK_VALUES) for each in installed_crcs(algorithm, importlib.import_module)]
    return [each for each in found if each.native]


def test_native_implementations_are_installed_for_the_comparison_below() -> None:
    assert {each.algorithm for each in native_implementations()} == set(CHECK_VALUES)


@given(parts=st.lists(st.binary(max_size=300), max_size=5), previous=st.integers(min_value=0, max_value=2**32 - 1))
def test_native_implementations_match_pure_python(parts: list[bytes], previous: int) -> None:
    # One test over all of them: pytest-twisted cannot run a parametrized @given test.
    for native in native_implementations():
        pure = PURE_PYTHON[native.algorithm]
        expected, actual = previous, previous
        for part in parts:
            expected, actual = pure(part, expected), native.function(part, actual)
        assert actual == expected, native


@given(st.lists(st.binary(max_size=200), max_size=5))
def test_checksums_match_botocore(parts: list[bytes]) -> None:
    ours = {alg: new_checksum(alg) for alg in ("crc32", "sha1", "sha256")}
    theirs = {"crc32": Crc32Checksum(), "sha1": Sha1Checksum(), "sha256": Sha256Checksum()}
    for part in parts:
        for c in (*ours.values(), *theirs.values()):
            c.update(part)
    for alg in ours:
        assert ours[alg].b64digest() == theirs[alg].b64digest()


def logged(implementations: dict[str, CrcImplementation]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    warn_of_slow_checksums(Logger(observer=events.append), implementations)
    return events


def test_a_pure_python_crc_is_warned_of_with_what_to_install() -> None:
    events = logged({
        "crc32c": CrcImplementation("crc32c", "crc32c", CRC32C.crc32c, native=True),
        "crc64nvme": find_crc("crc64nvme", importer({})),
    })
    assert [event["log_level"] for event in events] == [LogLevel.warn]
    text = formatEvent(events[0])
    assert text.startswith("x-amz-checksum-crc64nvme is computed in pure Python")
    assert "awscrt >= 0.23.4" in text and "python3-crcmod" in text


def test_native_crcs_are_not_warned_of() -> None:
    assert logged(dict(CRC_IMPLEMENTATIONS)) == []
    assert crc.INSTALL_HINTS.keys() == CHECK_VALUES.keys()
