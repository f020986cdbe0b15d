"""What placement raises besides the stores' own errors (StoreUnavailable, StoreMisconfigured)."""

from __future__ import annotations


class NoRoom(Exception):
    """No store that may take the bytes has room for them."""


class CopyUnreadable(Exception):
    """A copy the metadata describes is missing from its store or has another length."""


class LocationBusy(Exception):
    """A write's location stayed claimed by other writes or cleanups for longer than
    placement waits (``Placement.claim_wait``): the client may retry."""


class ObjectLost(CopyUnreadable):
    """Every copy of an object is missing or damaged: its bytes are gone (until it is
    overwritten or deleted, its reads fail)."""
