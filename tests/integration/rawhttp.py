"""Hand-made signed requests (botocore's signer) for tests that real clients would never send."""

from __future__ import annotations

import http.client
import socket
from urllib.parse import quote

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials

from tests.integration.daemon import ACCESS_KEY, SECRET_KEY, Daemon


def signed_headers(
    daemon: Daemon,
    method: str,
    key: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    unsigned_payload: bool = False,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    bucket: str = "app1-files",
    query: str = "",
) -> tuple[str, dict[str, str]]:
    """(path, headers) of a request signed by botocore.

    With ``unsigned_payload`` the payload is UNSIGNED-PAYLOAD (as rclone sends);
    otherwise botocore signs the SHA-256 of ``body``.
    """
    path = f"/{bucket}/{quote(key)}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=daemon.endpoint + path, data=body, headers=dict(headers or {}))
    if unsigned_payload:
        request.context["client_config"] = BotoConfig(s3={"payload_signing_enabled": False})
    S3SigV4Auth(Credentials(access_key, secret_key), "s3", "us-east-1").add_auth(request)
    return path, dict(request.headers.items())


def send(daemon: Daemon, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict, bytes]:
    """Send one request; (status, lower-case headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def open_upload(daemon: Daemon, path: str, headers: dict[str, str]) -> socket.socket:
    """A socket with a request's headers sent and its body not (yet)."""
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
    headers = {"Host": f"127.0.0.1:{daemon.port}", **headers}
    head = f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode("latin-1"))
    return sock


def response_status(sock: socket.socket) -> int:
    """The status of the response that comes on ``sock``."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a status line: {data!r}")
        data += chunk
    return int(data.split(b" ", 2)[1])
