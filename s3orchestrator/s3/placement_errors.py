"""Placement's and the stores' failures as S3 errors: the one place they are mapped."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from s3orchestrator.errors import S3Error
from s3orchestrator.placement.errors import CapReached, CopyUnreadable, LocationBusy, NoRoom, ObjectLost
from s3orchestrator.stores.interface import StoreMisconfigured, StoreUnavailable

#: What a client reading an object whose every copy is gone is told (with a 500).
LOST_MESSAGE = ("The object's data is missing or damaged on every store that held it;"
                " it cannot be read until it is overwritten or deleted.")


@contextmanager
def placement_errors() -> Iterator[None]:
    """Raise the S3 error for a placement or store failure (placement logged it already)."""
    try:
        yield
    except StoreUnavailable as error:
        raise S3Error("ServiceUnavailable", headers={"Retry-After": "1"}) from error
    except LocationBusy as error:
        raise S3Error("SlowDown", headers={"Retry-After": "1"}) from error
    except CapReached as error:
        # A monthly cap: the message says which store and cap (no secret in it).
        raise S3Error("SlowDown", message=f"{error}; try again in the next billing period") from error
    except NoRoom as error:
        raise S3Error("InsufficientStorage") from error
    except ObjectLost as error:
        raise S3Error("InternalError", LOST_MESSAGE) from error
    except (StoreMisconfigured, CopyUnreadable) as error:
        # The client did nothing wrong: the store's configuration or its bytes are off.
        raise S3Error("InternalError") from error
