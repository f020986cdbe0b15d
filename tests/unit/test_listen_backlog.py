"""Tests for with_backlog: the S3 listener's endpoint string gets server.backlog."""

from __future__ import annotations

import pytest
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.web.http import HTTPFactory

from s3orchestrator.service import with_backlog


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("tcp:9000:interface=127.0.0.1", "tcp:9000:interface=127.0.0.1:backlog=1024"),
        ("TCP6:9000:interface=\\:\\:1", "TCP6:9000:interface=\\:\\:1:backlog=1024"),
        ("ssl:9443:privateKey=k.pem:certKey=c.pem", "ssl:9443:privateKey=k.pem:certKey=c.pem:backlog=1024"),
        ("unix:/run/s3o.sock:mode=660", "unix:/run/s3o.sock:mode=660:backlog=1024"),
        ("tcp:9000:backlog=64", "tcp:9000:backlog=64"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_backlog_is_added_unless_set_or_meaningless(listen: str, expected: str) -> None:
    assert with_backlog(listen, 1024) == expected


def test_a_tcp_listener_listens_with_the_backlog() -> None:
    reactor = MemoryReactor()
    serverFromString(reactor, with_backlog("tcp:9000:interface=127.0.0.1", 1024)).listen(HTTPFactory())
    [(port, _, backlog, interface)] = reactor.tcpServers
    assert (port, backlog, interface) == (9000, 1024, "127.0.0.1")


def test_a_unix_listener_listens_with_the_backlog(tmp_path) -> None:
    reactor = MemoryReactor()
    serverFromString(reactor, with_backlog(f"unix:{tmp_path}/s.sock", 2048)).listen(HTTPFactory())
    [(_, _, backlog, _, _)] = reactor.unixServers
    assert backlog == 2048
