"""Which names in a store are the daemon's own, and which an import may take (pure).

A store holds the daemon's objects under one first segment per virtual bucket: the
bucket's name in an S3 store (``<bucket>/<key>``, see ``s3_locations``), its directory
``<bucket>.d`` in a directory store. An import takes the store's other names as they
are: the upstream key (S3) or the file's path under the root (directory), whose first
segment is the *area* it recorded. The two never meet: an import skips the areas of
the configured buckets (and a directory store's dot entries, its temp and upload
areas), and a bucket whose area holds imported objects cannot be configured
(``conflicts``, checked at start and at reload).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from s3orchestrator.config import Config, DirectoryStoreConfig, StoreConfig
from s3orchestrator.stores.directory import IMPORTED_MARK, relative_path
from s3orchestrator.stores.s3_locations import upstream_location

#: S3's limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: Why a name is left out without being counted as skipped: it is not the import's to take.
OWN_OBJECTS = "the daemon's own objects"
OWN_FILES = "the store's own files"


def own_area(store: StoreConfig, bucket: str) -> str:
    """The first segment of the store's names for the objects of ``bucket``."""
    if isinstance(store, DirectoryStoreConfig):
        return relative_path(f"{bucket}/x").partition("/")[0]
    return upstream_location(bucket, "x").partition("/")[0]


def own_areas(store: StoreConfig, buckets: Iterable[str]) -> frozenset[str]:
    """The areas of every bucket in ``buckets`` on ``store``."""
    return frozenset(own_area(store, bucket) for bucket in buckets)


def area_of(name: str) -> str:
    """The area of a store name (an upstream key, or a path under a directory store's root)."""
    return name.partition("/")[0]


def imported_location(store: StoreConfig, name: str) -> str:
    """The location recorded for the object the store holds under ``name``."""
    return IMPORTED_MARK + name if isinstance(store, DirectoryStoreConfig) else name


def skip_reason(store: StoreConfig, name: str, own: frozenset[str]) -> str | None:
    """Why the store's object ``name`` cannot become the key ``name`` (None: it can):
    a key S3 or the daemon refuses, or one of the daemon's own areas."""
    if "\x00" in name:
        return "a key cannot hold NUL"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "not UTF-8"
    if not name or size > MAX_KEY_BYTES:
        return f"a key holds 1 to {MAX_KEY_BYTES} bytes"
    area = area_of(name)
    if area in own:
        return OWN_OBJECTS
    if isinstance(store, DirectoryStoreConfig) and area.startswith("."):
        return OWN_FILES
    return None


def counted_skips(reasons: Iterable[str | None]) -> int:
    """How many of ``skip_reason``'s answers count as skipped keys (not the store's own)."""
    return sum(1 for reason in reasons if reason is not None and reason not in (OWN_OBJECTS, OWN_FILES))


def conflicts(config: Config, areas: Sequence[tuple[str, str, str]]) -> list[str]:
    """One line per configured bucket whose own area on a store holds imported objects
    (``areas``: (store, area, bucket the objects were imported into))."""
    stores = {store.name: store for store in config.stores}
    problems = []
    for store_name, area, imported_into in areas:
        store = stores.get(store_name)
        if store is None:
            continue
        for bucket in config.buckets:
            if own_area(store, bucket.name) == area:
                problems.append(
                    f"bucket {bucket.name!r} would keep its objects under {area!r} on store {store_name!r},"
                    f" where objects imported into bucket {imported_into!r} are"
                )
    return problems


class KnownAreas:
    """The areas imported objects were found in, as (store, area, bucket), as last read
    from the metadata (``import_areas``) or recorded by an import here: where reads look
    for imported objects when the metadata database is unavailable (degraded mode).
    ``stores()``: the configured stores, in configuration order."""

    def __init__(self, stores: Callable[[], Sequence[StoreConfig]]) -> None:
        self._stores = stores
        self._areas: frozenset[tuple[str, str, str]] = frozenset()

    def remember(self, areas: Iterable[tuple[str, str, str]], replace: bool = False) -> None:
        """Add ``areas`` to those known (``replace``: they are all there are)."""
        self._areas = frozenset(areas) if replace else self._areas | frozenset(areas)

    def places(self, bucket: str, key: str) -> list[tuple[str, str]]:
        """(store, location) of every place an import may have put object ``key`` of
        ``bucket``: its own name, on each store (in configuration order) where an area
        of that bucket is its first segment."""
        area = area_of(key)
        return [(store.name, imported_location(store, key)) for store in self._stores()
                if (store.name, area, bucket) in self._areas]
