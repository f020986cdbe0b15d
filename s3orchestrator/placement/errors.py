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
    """Every copy of an object is missing or damaged: its bytes are gone (until its
    kept copy's store has them again, or it is overwritten or deleted, its reads fail)."""


class CapReached(Exception):
    """A store's monthly usage cap (hard mode) keeps the request from being served: the
    only copies of an object are on stores over a read cap, or every store that could
    take a new object is over a write cap. The message names the stores and caps."""
