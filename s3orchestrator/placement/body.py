"""What placement writes: a body whose last bytes wait until the whole of it is verified."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.web.iweb import IBodyProducer

from s3orchestrator.auth.payload import VerifiedPayload


class RequestBody(IBodyProducer):
    """A request body: an IBodyProducer whose last bytes wait for verification (an interface).

    ``verified`` fires once the client sent the whole body and it checked out;
    the store has then received all of it but a held-back tail, which
    ``release_tail`` lets through (web.body.UploadBody implements this).
    """

    length: int
    verified: Deferred[VerifiedPayload]

    def release_tail() -> None:
        """Let the held-back tail through to the store (once the body is verified)."""
