"""What a source of an import hands over at a time."""

from __future__ import annotations

from typing import Sequence

import attrs

from s3orchestrator.metadata.imports import FoundObject


@attrs.frozen
class Batch:
    """Objects found (in key order), how many keys before ``last_key`` were left out,
    and the last key the batch settles (the next checkpoint)."""

    found: Sequence[FoundObject]
    skipped: int
    last_key: str
