"""ListMultipartUploads pages: uploads in (key, upload id) order, rolled up by delimiter.

The same rules as object listings (see ``listing``), with uploads as entries:
several uploads may share a key, so a position is a (key, upload id) pair. A page
holds the first ``max_uploads`` items (uploads and common prefixes) after the
markers: ``key-marker`` alone skips every upload of that key, ``key-marker``
with ``upload-id-marker`` only those of that key up to that upload.
"""

from __future__ import annotations

import attrs

from s3orchestrator.metadata.interface import UploadFetch, prefix_upper_bound
from s3orchestrator.metadata.records import UploadRecord
from s3orchestrator.s3.listing import FIRST_DELIMITED_BATCH, common_prefix

# Greater than any upload id (they are ASCII): "after every upload of the key".
AFTER_EVERY_UPLOAD = "\U0010ffff"


@attrs.frozen
class UploadPage:
    """One page of ListMultipartUploads and where the next one starts."""

    uploads: tuple[UploadRecord, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_key_marker: str | None
    next_upload_id_marker: str | None


def list_uploads_page(
    fetch: UploadFetch,
    prefix: str,
    delimiter: str,
    key_marker: str,
    upload_id_marker: str,
    max_uploads: int,
) -> UploadPage:
    """The first ``max_uploads`` items after the markers, read through ``fetch``.

    ``upload_id_marker`` counts only with a ``key_marker`` (as in S3). Uploads under
    a common prefix are never walked: the scan seeks past the prefix.
    """
    if max_uploads <= 0:
        return UploadPage((), (), False, None, None)
    wanted = max_uploads + 1  # one more item than the page tells whether it is truncated
    if key_marker:
        cursor = (key_marker, upload_id_marker or AFTER_EVERY_UPLOAD)
    else:
        cursor = ("", "")
    items: list[UploadRecord | str] = []
    finished = False
    # With a delimiter, the rows after a common prefix's first are wasted: start with a
    # small batch and adapt (as listing.list_page does).
    batch = min(wanted, FIRST_DELIMITED_BATCH) if delimiter else wanted
    while not finished and len(items) < wanted:
        limit = min(batch, wanted - len(items))
        rows = fetch(cursor[0], cursor[1], limit)
        finished = len(rows) < limit
        rolled_up_seen = False
        for row in rows:
            rolled_up = common_prefix(row.key, prefix, delimiter)
            if rolled_up is None:
                items.append(row)
                cursor = (row.key, row.upload_id)
            else:
                # A prefix at or before the key marker was on an earlier page.
                if rolled_up > key_marker:
                    items.append(rolled_up)
                bound = prefix_upper_bound(rolled_up)
                if bound is None:
                    finished = True
                else:
                    cursor = (bound, "")
                    finished = False
                rolled_up_seen = True
                break  # read on from past the common prefix
            if len(items) >= wanted:
                break
        batch = max(1, batch // 2) if rolled_up_seen else min(batch * 2, wanted)
    truncated = len(items) > max_uploads
    shown = items[:max_uploads]
    last = shown[-1] if shown else None
    return UploadPage(
        uploads=tuple(item for item in shown if isinstance(item, UploadRecord)),
        common_prefixes=tuple(item for item in shown if isinstance(item, str)),
        is_truncated=truncated,
        next_key_marker=None if last is None else (last if isinstance(last, str) else last.key),
        next_upload_id_marker=last.upload_id if isinstance(last, UploadRecord) else None,
    )
