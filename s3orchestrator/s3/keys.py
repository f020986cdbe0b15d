"""Which object keys the S3 API accepts, beyond what the web layer checks (UTF-8, 1024 bytes)."""

from __future__ import annotations

from s3orchestrator.errors import S3Error


def check_key(key: str, argument: str = "key") -> None:
    """Refuse a key holding NUL with InvalidArgument, for every store.

    S3 itself stores such keys, but no listing could show one (XML 1.0 cannot
    carry NUL, not even as a character reference), PostgreSQL text cannot hold
    it, and filesystem-backed upstreams (SeaweedFS) refuse it: refusing it up
    front, before any store is involved, is the one answer that is the same
    everywhere. Every other key S3 accepts is accepted.
    """
    if "\x00" in key:
        raise S3Error("InvalidArgument", "Object keys cannot contain NUL characters.",
                      extra={"ArgumentName": argument})
