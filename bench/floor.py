"""The CPU floor Twisted itself sets for s3orchestrator's small requests, measured on this machine.

Usage: python bench/floor.py [--count 2000] [--clients 8 32] [--repeat 3] [--quick]

Two parts, each with 8 and then 32 concurrent clients and 4 KiB objects:

- bare Twisted Web resource: a ``twisted.web.server.Site`` whose one leaf
  resource keeps objects in a dict (PUT stores the body and answers an ETag,
  GET returns it, HEAD its length), served by a process of its own, driven by
  the same boto3 client processes as bench/upstream_ratio.py. The figure is
  that server's CPU time per request: what parsing the request and writing the
  response cost in stock Twisted Web, with no signature check, no metadata and
  no upstream.
- bare Agent round trip: a process of its own making the same requests with
  ``twisted.web.client.Agent`` over a persistent ``HTTPConnectionPool`` (as many
  connections as clients) to that bare server. The figure is the Agent
  process's CPU time per request: what sending a request and parsing a response
  cost in stock Twisted, with no signing and no body checks.

CPU time comes from /proc (user + system), so the figures are fair on a busy
machine. The daemon's own CPU per request (bench/upstream_ratio.py) does both
jobs and more for each request: a PUT through it is one server request plus one
Agent request upstream, so its floor is the sum of the two figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from _common import cpu_seconds
from tests.integration.daemon import free_port
from upstream_ratio import SMALL_PHASES, SMALL_SIZE, Endpoint, SmallClients

BUCKET = "floor"
READY_TIMEOUT = 20.0


# --- the bare server (``--serve PORT``) ------------------------------------------------------


def serve(port: int) -> None:
    """Serve the bare resource on loopback ``port`` until killed."""
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    objects: dict[bytes, bytes] = {}

    class Objects(Resource):
        """Every path is an object: PUT stores the body, GET returns it, HEAD its headers."""

        isLeaf = True

        def render_PUT(self, request: Any) -> bytes:
            body = request.content.read()
            objects[request.path] = body
            request.setHeader(b"ETag", b'"%s"' % hashlib.md5(body).hexdigest().encode())
            return b""

        def render_GET(self, request: Any) -> bytes:
            body = objects.get(request.path)
            if body is None:
                request.setResponseCode(404)
                return b""
            request.setHeader(b"Content-Type", b"binary/octet-stream")
            return body

        def render_HEAD(self, request: Any) -> bytes:
            return self.render_GET(request)  # Twisted sends the headers, Content-Length included, no body

    site = Site(Objects())
    site.log = lambda request: None  # no access log: the daemon writes none per request either
    reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


# --- the bare Agent client (``--agent URL``) -------------------------------------------------


def agent(url: str, concurrency: int, count: int, repeats: int) -> None:
    """Run the phases with ``concurrency`` Agent loops; print one JSON line per phase: CPU s per request."""
    from twisted.internet import defer, reactor, task
    from twisted.web.client import Agent, HTTPConnectionPool, readBody
    from twisted.web.http_headers import Headers
    from twisted.web.iweb import IBodyProducer
    from zope.interface import implementer

    @implementer(IBodyProducer)
    class Bytes:
        """A fixed body."""

        def __init__(self, data: bytes) -> None:
            self.data = data
            self.length = len(data)

        def startProducing(self, consumer: Any) -> defer.Deferred[None]:
            consumer.write(self.data)
            return defer.succeed(None)

        def pauseProducing(self) -> None:
            pass

        def resumeProducing(self) -> None:
            pass

        def stopProducing(self) -> None:
            pass

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = concurrency
    client = Agent(reactor, pool=pool)
    body = os.urandom(SMALL_SIZE)

    async def one(method: bytes, key: str) -> None:
        response = await client.request(
            method, f"{url}/{BUCKET}/{key}".encode(), Headers({b"Content-Type": [b"binary/octet-stream"]}),
            Bytes(body) if method == b"PUT" else None,
        )
        data = await readBody(response)
        if response.code != 200 or (method == b"GET" and data != body):
            raise RuntimeError(f"{method.decode()} {key}: status {response.code}")

    async def phase(method: bytes, keys: Sequence[str]) -> None:
        async def loop(share: Sequence[str]) -> None:
            for key in share:
                await one(method, key)

        await defer.gatherResults([defer.ensureDeferred(loop(keys[i::concurrency])) for i in range(concurrency)],
                                  consumeErrors=True)

    async def main(_: Any) -> None:
        await phase(b"PUT", [f"warmup/{i}" for i in range(20 * concurrency)])
        for repeat in range(repeats):
            keys = [f"agent/c{concurrency}/r{repeat}/{i:05d}" for i in range(count)]
            for name in SMALL_PHASES:
                before, start = cpu_seconds(os.getpid()), time.monotonic()
                await phase(name.encode(), keys)
                used, seconds = cpu_seconds(os.getpid()) - before, time.monotonic() - start
                print(json.dumps({"phase": name, "ops": count, "cpu": used, "seconds": seconds}), flush=True)
        await pool.closeCachedConnections()

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))


# --- the driver ------------------------------------------------------------------------------


def start_server(port: int) -> subprocess.Popen[bytes]:
    """The bare server process, once it accepts connections."""
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + READY_TIMEOUT
    import socket
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the bare Twisted Web server did not start")


def web_floor(url: str, server_pid: int, concurrency: int, count: int, repeats: int) -> dict[str, list[float]]:
    """The bare server's CPU s per request, per phase, driven by boto3 clients (one figure per repeat)."""
    endpoint = Endpoint("F", url, "floor", "floor-secret", BUCKET, "when_required")
    clients = SmallClients([endpoint], concurrency)
    figures: dict[str, list[float]] = {}
    try:
        for repeat in range(repeats):
            keys = [f"web/c{concurrency}/r{repeat}/{i:05d}" for i in range(count)]
            for phase in SMALL_PHASES:
                before = cpu_seconds(server_pid)
                ops, _, _ = clients.run("F", phase, keys)
                figures.setdefault(phase, []).append((cpu_seconds(server_pid) - before) / ops)
    finally:
        clients.close()
    return figures


def agent_floor(url: str, server_pid: int, concurrency: int, count: int,
                repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(the Agent process's, the bare server's) CPU s per request, per phase, one figure per repeat."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--agent", url, "--clients", str(concurrency), "--count", str(count),
         "--repeat", str(repeats)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    agent_cpu: dict[str, list[float]] = {}
    server_cpu: dict[str, list[float]] = {}
    before = cpu_seconds(server_pid)
    for line in process.stdout:
        figure = json.loads(line)
        after = cpu_seconds(server_pid)  # the Agent prints right after each phase: close enough for the server
        agent_cpu.setdefault(figure["phase"], []).append(figure["cpu"] / figure["ops"])
        server_cpu.setdefault(figure["phase"], []).append((after - before) / figure["ops"])
        before = after
    if process.wait() != 0:
        raise RuntimeError("the Agent client failed")
    return agent_cpu, server_cpu


def report(results: dict[int, dict[str, dict[str, list[float]]]]) -> Iterator[str]:
    """One table per concurrency: medians over repeats, ms."""
    yield f"machine: {os.cpu_count()} CPU cores; CPU ms per request (user+sys from /proc), median over repeats"
    for concurrency, parts in results.items():
        yield ""
        yield f"{concurrency} concurrent clients"
        yield (f"{'':5}{'Twisted Web server':>20}{'Agent client':>14}{'sum':>7}"
               f"{'(server, Agent-driven)':>24}")
        for phase in SMALL_PHASES:
            web, agent_cpu, server = (statistics.median(parts[part][phase]) * 1e3
                                      for part in ("web", "agent", "server-under-agent"))
            yield f"{phase:5}{web:20.3f}{agent_cpu:14.3f}{web + agent_cpu:7.3f}{server:24.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="objects per phase and repeat (default 2000)")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32], help="concurrent clients (default 8 32)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 600 objects, 2 repeats")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.agent is not None:
        agent(args.agent, args.clients[0], args.count, args.repeat)
        return 0
    if args.quick:
        args.count, args.repeat = 600, 2
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port)
    results: dict[int, dict[str, dict[str, list[float]]]] = {}
    try:
        for concurrency in args.clients:
            web = web_floor(url, server.pid, concurrency, args.count, args.repeat)
            agent_cpu, server_cpu = agent_floor(url, server.pid, concurrency, args.count, args.repeat)
            results[concurrency] = {"web": web, "agent": agent_cpu, "server-under-agent": server_cpu}
            print(f"{concurrency} clients done", flush=True)
    finally:
        server.kill()
        server.wait()
    print()
    for line in report(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
