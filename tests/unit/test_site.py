"""Tests for S3Channel / S3Request / S3Site over a StringTransport, with a fake handler and body."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable
from xml.etree import ElementTree

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web import http

from s3orchestrator.config import DEFAULT_HEADER_TIMEOUT
from s3orchestrator.errors import S3Error
from s3orchestrator.web.site import (
    HELD_BYTES,
    LINGER_SECONDS,
    SEND_BUFFER_BYTES,
    SOCKET_WRITE_BYTES,
    S3Channel,
    S3Request,
    S3Site,
    _TwistedChannel,
)
from tests.unit.fakes import RecordingStringTransport


class RecordingBody:
    """Stands in for UploadBody: records what the channel feeds it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.completed = 0
        self.lost: list[Failure] = []
        self.aborted: list[S3Error] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def bodyComplete(self) -> None:
        self.completed += 1

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)

    def abort(self, error: S3Error) -> None:
        self.aborted.append(error)


class RecordingHandler:
    """Records each request handed over, and the client's state at that moment."""

    def __init__(self, transport: RecordingStringTransport) -> None:
        self.transport = transport
        self.requests: list[S3Request] = []
        self.bodies: list[RecordingBody] = []
        self.producer_state_at_handle: list[str] = []
        self.body_complete_at_handle: list[bool] = []
        self.respond: Callable[[S3Request], None] | None = None
        # The real handler attaches an UploadBody only for operations that take one.
        self.attach_body = True

    def handle(self, request: S3Request) -> None:
        self.requests.append(request)
        self.producer_state_at_handle.append(self.transport.producerState)
        self.body_complete_at_handle.append(request.body_complete)
        if self.attach_body and not request.body_complete:
            body = RecordingBody()
            request.body = body  # type: ignore[assignment]
            self.bodies.append(body)
        if self.respond is not None:
            self.respond(request)


class Connection:
    """One S3Channel built by an S3Site on a Clock, connected to a RecordingStringTransport."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.transport = RecordingStringTransport()
        self.handler = RecordingHandler(self.transport)
        self.site = S3Site(self.handler, timeout=60, reactor=self.clock)  # type: ignore[arg-type]
        self.channel = self.site.buildProtocol(None)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def headers_out(self) -> list[bytes]:
        """The response header lines written so far (status line excluded)."""
        head = self.transport.value().split(b"\r\n\r\n", 1)[0]
        return head.split(b"\r\n")[1:]


def respond(status: int, headers: list[tuple[bytes, bytes]] = (), body: bytes = b"") -> Callable[[S3Request], None]:
    def answer(request: S3Request) -> None:
        request.setResponseCode(status)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    return answer


PUT_HEAD = b"PUT /bkt/key HTTP/1.1\r\nHost: s3.example\r\nContent-Length: 10\r\n"


@pytest.fixture
def conn() -> Connection:
    return Connection()


def test_site_builds_s3_channels_making_s3_requests(conn: Connection) -> None:
    assert isinstance(conn.channel, S3Channel)
    conn.send(b"GET /bkt/key HTTP/1.1\r\nHost: s3.example\r\n\r\n")
    assert isinstance(conn.handler.requests[0], S3Request)


def test_get_is_handed_over_only_once_complete(conn: Connection) -> None:
    conn.send(b"GET /bkt/a%2Fb?x-id=PutObject HTTP/1.1\r\nHost: s3.example\r\n")
    assert conn.handler.requests == []

    conn.send(b"\r\n")

    [request] = conn.handler.requests
    assert conn.handler.body_complete_at_handle == [True]
    assert request.method == b"GET"
    assert request.raw_path == b"/bkt/a%2Fb"
    assert request.raw_query == b"x-id=PutObject"
    assert request.body is None


def test_put_is_handed_over_at_header_time_with_the_transport_paused(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n")

    [request] = conn.handler.requests
    assert conn.handler.body_complete_at_handle == [False]
    assert conn.handler.producer_state_at_handle == ["paused"]
    assert conn.transport.producerState == "paused"
    assert request.method == b"PUT"
    assert request.raw_path == b"/bkt/key"


def test_expect_100_continue_is_not_answered_automatically(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"Expect: 100-continue\r\n\r\n")

    assert len(conn.handler.requests) == 1
    assert conn.transport.value() == b""


def test_send_100_continue_writes_the_interim_response(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"Expect: 100-continue\r\n\r\n")

    conn.channel.send100Continue()

    assert conn.transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_body_bytes_go_to_the_request_body_then_body_complete(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n")
    [body] = conn.handler.bodies

    conn.send(b"0123")
    conn.send(b"45678")
    assert body.completed == 0

    conn.send(b"9")

    assert b"".join(body.chunks) == b"0123456789"
    assert body.completed == 1
    assert conn.handler.requests[0].body_complete


def test_request_with_a_body_the_handler_does_not_take_is_handed_over_once(conn: Connection) -> None:
    conn.handler.attach_body = False

    conn.send(b"DELETE /bkt/key HTTP/1.1\r\nHost: s3.example\r\nContent-Length: 4\r\n\r\nabcd")

    assert len(conn.handler.requests) == 1


def test_client_leaving_mid_body_tells_the_body(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n0123")
    [body] = conn.handler.bodies

    conn.channel.connectionLost(Failure(ConnectionLost("peer reset")))

    assert len(body.lost) == 1
    assert body.completed == 0


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /bkt/key HTTP/1.1\r\nHost: s3.example\r\n\r\n", PUT_HEAD + b"\r\n"],
    ids=["get", "put-answered-early"],
)
def test_every_response_carries_x_amz_request_id(conn: Connection, request_bytes: bytes) -> None:
    conn.handler.respond = respond(200)

    conn.send(request_bytes)

    request_id = conn.handler.requests[0].request_id
    assert len(request_id) == 16
    lines = [line.lower() for line in conn.headers_out()]
    assert b"x-amz-request-id: " + request_id.lower().encode() in lines


def test_user_metadata_header_names_go_out_lower_case_others_keep_their_case(conn: Connection) -> None:
    conn.handler.respond = respond(200, [(b"x-amz-meta-Foo", b"Bar"), (b"Content-Type", b"text/plain")])

    conn.send(b"GET /bkt/key HTTP/1.1\r\nHost: s3.example\r\n\r\n")

    lines = conn.headers_out()
    assert conn.transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"x-amz-meta-foo: Bar" in lines
    assert b"Content-Type: text/plain" in lines
    assert not any(line.startswith(b"X-Amz-Meta") for line in lines)


def test_response_after_the_whole_body_keeps_the_connection_for_the_next_request(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n0123456789")
    respond(200)(conn.handler.requests[0])
    assert not conn.transport.write_closed
    assert not conn.transport.disconnecting
    assert conn.transport.producerState == "producing"

    conn.send(b"GET /bkt/key HTTP/1.1\r\nHost: s3.example\r\n\r\n")

    assert len(conn.handler.requests) == 2


def test_early_response_half_closes_the_connection(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n012")

    respond(507, body=b"<Error/>")(conn.handler.requests[0])

    assert conn.transport.value().startswith(b"HTTP/1.1 507 ")
    assert conn.transport.value().endswith(b"<Error/>")
    assert conn.transport.write_closed
    assert not conn.transport.aborted
    # Resumed, so the client's remaining bytes can be drained.
    assert conn.transport.producerState == "producing"


def test_bytes_after_an_early_response_are_discarded(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n012")
    [body] = conn.handler.bodies
    respond(507)(conn.handler.requests[0])
    written = conn.transport.value()

    conn.send(b"3456789")
    conn.send(b"GET /bkt/other HTTP/1.1\r\nHost: s3.example\r\n\r\n")

    assert body.chunks == [b"012"]
    assert body.completed == 0
    assert len(conn.handler.requests) == 1
    assert conn.transport.value() == written


def test_early_response_aborts_the_connection_after_the_linger_time(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n012")
    respond(507)(conn.handler.requests[0])

    conn.clock.advance(LINGER_SECONDS - 0.5)
    assert not conn.transport.aborted

    conn.clock.advance(0.5)
    assert conn.transport.aborted


def test_early_response_answered_during_dispatch_also_lingers(conn: Connection) -> None:
    # An auth failure is answered from inside handle(), before the channel enters raw mode.
    conn.handler.respond = respond(403)

    conn.send(PUT_HEAD + b"\r\n0123")

    assert conn.transport.value().startswith(b"HTTP/1.1 403 ")
    assert conn.handler.bodies[0].chunks == []
    assert conn.transport.write_closed
    conn.clock.advance(LINGER_SECONDS)
    assert conn.transport.aborted


def test_client_closing_while_lingering_cancels_the_abort(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n012")
    respond(507)(conn.handler.requests[0])

    conn.channel.connectionLost(Failure(ConnectionLost("peer closed")))

    assert conn.clock.getDelayedCalls() == []
    assert not conn.transport.aborted


def test_site_offers_only_http_1_1_over_alpn() -> None:
    site = S3Site(RecordingHandler(RecordingStringTransport()), timeout=60, reactor=Clock())  # type: ignore[arg-type]
    assert site.acceptableProtocols() == [b"http/1.1"]


@pytest.mark.parametrize("under_tls", [False, True])
def test_a_client_socket_buffers_and_writes_large_chunks(under_tls: bool) -> None:
    site = S3Site(RecordingHandler(RecordingStringTransport()), timeout=60, reactor=Clock())  # type: ignore[arg-type]
    channel = site.buildProtocol(None)
    transport = RecordingStringTransport()
    socket = SimpleNamespace(bufferSize=65536, SEND_LIMIT=131072)
    if under_tls:
        transport.transport = socket  # type: ignore[attr-defined]  # the TLS layer's own transport
    else:
        transport.bufferSize, transport.SEND_LIMIT = 65536, 131072  # type: ignore[attr-defined]
        socket = transport  # type: ignore[assignment]
    channel.makeConnection(transport)
    assert (socket.bufferSize, socket.SEND_LIMIT) == (SEND_BUFFER_BYTES, SOCKET_WRITE_BYTES)
    channel.connectionLost(Failure(ConnectionLost("done")))


# -- requests the channel refuses itself -------------------------------------


def error_response(conn: Connection) -> tuple[int, dict[bytes, bytes], ElementTree.Element]:
    """The status, headers (lower-case names) and XML error document the channel wrote."""
    head, _, body = conn.transport.value().partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines)}
    assert int(headers[b"content-length"]) == len(body)
    return int(status_line.split(b" ")[1]), headers, ElementTree.fromstring(body)


def assert_refused(conn: Connection, status: int, code: str) -> None:
    """The channel answered ``status``/``code`` as an S3 error document and is closing."""
    got_status, headers, document = error_response(conn)
    assert (got_status, document.findtext("Code")) == (status, code)
    request_id = document.findtext("RequestId")
    assert request_id and len(request_id) == 16
    assert headers[b"x-amz-request-id"] == request_id.encode()
    assert headers[b"content-type"] == b"application/xml"
    assert headers[b"connection"] == b"close"
    assert conn.transport.write_closed
    assert conn.handler.requests == []
    assert conn.channel.requests == []


MALFORMED_HEADS = {
    "content-length-letters": PUT_HEAD.replace(b"10", b"abc"),
    "content-length-negative": PUT_HEAD.replace(b"10", b"-10"),
    "two-content-lengths": PUT_HEAD + b"Content-Length: 11\r\n",
    "transfer-encoding-gzip": b"PUT /bkt/key HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n",
    "header-without-colon": b"GET /bkt/key HTTP/1.1\r\nHost: h\r\nNoColonHere\r\n",
    "nul-in-header": b"GET /bkt/key HTTP/1.1\r\nHost: h\r\nX-Amz-Meta-A: a\x00b\r\n",
    "too-many-headers": b"GET /bkt/key HTTP/1.1\r\n" + b"X-A: 1\r\n" * 501,
    "request-line-two-parts": b"GET /bkt/key\r\n",
}


@pytest.mark.parametrize("head", MALFORMED_HEADS.values(), ids=MALFORMED_HEADS.keys())
def test_a_malformed_head_gets_an_s3_invalid_request_and_the_connection_closes(conn: Connection, head: bytes) -> None:
    conn.send(head + b"\r\n")
    assert_refused(conn, 400, "InvalidRequest")


def test_an_unknown_http_version_gets_505(conn: Connection) -> None:
    conn.send(b"GET /bkt/key HTTP/3.0\r\nHost: h\r\n\r\n")
    assert_refused(conn, 505, "HTTPVersionNotSupported")


def test_a_tls_client_hello_on_the_plain_port_gets_an_s3_error_at_once(conn: Connection) -> None:
    conn.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)))
    assert_refused(conn, 400, "InvalidRequest")


def test_a_header_line_over_the_line_limit_is_request_header_section_too_large(conn: Connection) -> None:
    # One 20 KB header: Twisted's line limit would close the connection without a word.
    conn.send(b"PUT /bkt/key HTTP/1.1\r\nHost: h\r\nx-amz-meta-big: " + b"v" * 20000 + b"\r\n\r\n")
    assert_refused(conn, 400, "RequestHeaderSectionTooLarge")


def test_a_line_over_the_limit_still_unterminated_is_refused_too(conn: Connection) -> None:
    conn.send(b"PUT /bkt/key HTTP/1.1\r\nx-amz-meta-big: " + b"v" * 20000)
    assert_refused(conn, 400, "RequestHeaderSectionTooLarge")


def test_many_headers_over_the_head_limit_are_request_header_section_too_large(conn: Connection) -> None:
    metadata = b"".join(b"x-amz-meta-k%d: %s\r\n" % (n, b"v" * 1000) for n in range(20))
    conn.send(b"PUT /bkt/key HTTP/1.1\r\nHost: h\r\n" + metadata + b"\r\n")
    assert_refused(conn, 400, "RequestHeaderSectionTooLarge")


def test_the_error_document_names_the_resource_and_the_request_it_refused(conn: Connection) -> None:
    conn.send(b"PUT /bkt/key?partNumber=1 HTTP/1.1\r\nContent-Length: x\r\n")
    _, _, document = error_response(conn)
    assert document.findtext("Resource") == "/bkt/key"


def test_bytes_after_a_refusal_are_discarded_and_the_connection_is_aborted_later(conn: Connection) -> None:
    conn.send(b"GET /bkt/key HTTP/1.1\r\nNoColon\r\n")
    written = conn.transport.value()

    conn.send(b"\r\nGET /bkt/key HTTP/1.1\r\nHost: h\r\n\r\n")

    assert conn.transport.value() == written
    assert conn.handler.requests == []
    conn.clock.advance(LINGER_SECONDS)
    assert conn.transport.aborted


def test_a_raw_utf8_request_target_reaches_the_handler_unchanged(conn: Connection) -> None:
    target = "/bkt/d\u00e9j\u00e0 vu/\u65e5\u672c".replace(" ", "%20").encode()
    conn.send(b"GET " + target + b"?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    [request] = conn.handler.requests
    assert request.raw_path == target
    assert request.raw_query == b"x=1"


def test_a_raw_utf8_target_of_a_put_reaches_the_handler_unchanged(conn: Connection) -> None:
    conn.send("PUT /bkt/\u00e9 HTTP/1.1\r\nContent-Length: 1\r\n\r\n".encode())
    [request] = conn.handler.requests
    assert request.raw_path == "/bkt/\u00e9".encode()


def test_a_client_that_trickles_its_head_gets_request_timeout(conn: Connection) -> None:
    conn.send(b"PUT /bkt/key HTTP/1.1\r\n")
    for second in range(int(DEFAULT_HEADER_TIMEOUT) - 1):
        conn.clock.advance(1)
        conn.send(b"x-amz-meta-%d: 1\r\n" % second)
    assert conn.transport.value() == b""

    conn.clock.advance(1)

    assert_refused(conn, 400, "RequestTimeout")


def test_the_head_deadline_starts_with_each_request_not_with_the_connection(conn: Connection) -> None:
    conn.handler.respond = respond(200)
    conn.send(b"GET /bkt/a HTTP/1.1\r\nHost: h\r\n\r\n")
    # Idle between requests (the site's idle timeout governs that) ...
    conn.clock.advance(DEFAULT_HEADER_TIMEOUT * 2)
    # ... then a new head gets the whole header_timeout.
    conn.send(b"GET /bkt/b HTTP/1.1\r\n")
    conn.clock.advance(DEFAULT_HEADER_TIMEOUT - 1)
    conn.send(b"Host: h\r\n\r\n")
    assert len(conn.handler.requests) == 2
    conn.clock.advance(DEFAULT_HEADER_TIMEOUT)
    assert b"RequestTimeout" not in conn.transport.value()


def test_the_header_timeout_is_the_sites_setting() -> None:
    conn = Connection()
    conn.site.header_timeout = 3
    conn.send(b"GET /bkt/a HTTP/1.1\r\n")
    conn.clock.advance(3)
    assert_refused(conn, 400, "RequestTimeout")


def test_a_malformed_chunked_body_aborts_the_body_with_an_s3_error(conn: Connection) -> None:
    conn.send(b"PUT /bkt/key HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    [body] = conn.handler.bodies
    conn.transport.resumeProducing()

    conn.send(b"zz-not-hex\r\n")

    [error] = body.aborted
    assert error.code == "InvalidRequest"
    # The handler answers (with that error); then the connection closes.
    respond(400, body=b"<Error/>")(conn.handler.requests[0])
    assert conn.transport.write_closed


def test_a_too_slow_upload_aborts_its_body_with_request_timeout(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n")
    [request] = conn.handler.requests
    [body] = conn.handler.bodies
    assert request.reader is not None
    request.reader.resumeProducing()  # the store is ready

    for _ in range(40):
        conn.clock.advance(1)
        if not body.aborted:
            conn.send(b"x" if len(body.chunks) < 9 else b"")

    [error] = body.aborted
    assert error.code == "RequestTimeout"
    conn.send(b"late")
    assert b"late" not in b"".join(body.chunks)


def test_an_upload_kept_paused_by_the_daemon_is_not_too_slow(conn: Connection) -> None:
    conn.send(PUT_HEAD + b"\r\n")
    [body] = conn.handler.bodies
    # The store never becomes ready: the client is paused all along.
    conn.clock.advance(600)
    assert body.aborted == []


def test_the_request_target_adapter_sets_what_twisted_hands_the_request() -> None:
    # Breaks if Twisted stops keeping the request target in HTTPChannel._path.
    conn = Connection()
    conn.channel.lineReceived(b"GET /bkt/x HTTP/1.1")
    assert conn.channel._path == b"/bkt/x"  # type: ignore[attr-defined]
    _TwistedChannel.set_request_target(conn.channel, b"/bkt/\xc3\xa9")
    conn.channel.lineReceived(b"")
    [request] = conn.handler.requests
    assert request.raw_path == b"/bkt/\xc3\xa9"


def test_twisted_still_has_the_hook_for_requests_its_parser_refuses() -> None:
    # S3Channel overrides this private method; if Twisted renames it, bad requests
    # that get past RequestHead would get Twisted's bare 400 again.
    assert callable(getattr(http.HTTPChannel, "_respondToBadRequestAndDisconnect", None))


def test_a_refused_head_request_gets_the_status_without_a_body(conn: Connection) -> None:
    conn.send(b"HEAD /bkt/key HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n")
    head, _, body = conn.transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Length: 0" in head.split(b"\r\n")
    assert body == b""
    assert conn.transport.write_closed


def test_a_pipelined_request_is_checked_once_the_one_before_it_is_answered(conn: Connection) -> None:
    conn.send(b"GET /bkt/a HTTP/1.1\r\nHost: h\r\n\r\nGET /bkt/b HTTP/1.1\r\nNoColon\r\n\r\n")
    [first] = conn.handler.requests
    # No head deadline runs while the first is answered: only the idle timeout.
    assert [call.getTime() for call in conn.clock.getDelayedCalls()] == [60]

    respond(200)(first)

    answers = conn.transport.value().split(b"HTTP/1.1 ")
    assert answers[1].startswith(b"200 ")
    assert answers[2].startswith(b"400 ")
    assert b"<Code>InvalidRequest</Code>" in answers[2]
    assert len(conn.handler.requests) == 1


def test_pipelined_requests_are_handed_over_and_answered_one_after_the_other(conn: Connection) -> None:
    conn.send(b"GET /bkt/a HTTP/1.1\r\nHost: h\r\n\r\nGET /bkt/b HTTP/1.1\r\nHost: h\r\n\r\nGET /bkt/c HTTP/1.1\r\n")
    [first] = conn.handler.requests

    respond(200, body=b"a")(first)
    assert [request.raw_path for request in conn.handler.requests] == [b"/bkt/a", b"/bkt/b"]

    conn.send(b"Host: h\r\n\r\n")
    assert len(conn.handler.requests) == 2
    respond(200, body=b"b")(conn.handler.requests[1])

    assert [request.raw_path for request in conn.handler.requests] == [b"/bkt/a", b"/bkt/b", b"/bkt/c"]
    assert conn.transport.value().count(b"HTTP/1.1 200 OK") == 2


def test_pipelined_bytes_past_the_limit_pause_the_client_until_the_answer(conn: Connection) -> None:
    conn.send(b"GET /bkt/a HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.send(b"GET /bkt/b HTTP/1.1\r\n" + b"X-A: 1\r\n" * (HELD_BYTES // 8))
    assert conn.transport.producerState == "paused"

    respond(200)(conn.handler.requests[0])

    assert conn.transport.producerState == "producing"
