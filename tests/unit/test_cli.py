"""The ``s3orchestrator`` admin command, through ``main(argv)``."""

from __future__ import annotations

import importlib.metadata
import io
import json
import re
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from s3orchestrator import cli
from s3orchestrator.cli import CommandError, admin_url, main, read_environment_file
from s3orchestrator.ops.passwords import hash_password, load_password_file, verify_password

REPO = Path(__file__).resolve().parents[2]
TOKEN = "admin-token-123"

CONFIG = """\
[server]
listen = "tcp:9000:interface=127.0.0.1"
[metadata]
sqlite = "var/metadata.sqlite"
[[buckets]]
name = "app1-files"
  [[buckets.credentials]]
  access_key_id = "AKID_APP1_WRITER"
  secret_access_key = "${APP1_SECRET}"
[[stores]]
name = "local-a"
type = "directory"
path = "var/stores/a"
quota_bytes = 1073741824
"""

SNAPSHOT = {
    "status": "degraded",
    "stores": [
        {"name": "local-a", "healthy": True, "last_error": None, "quota_bytes": 1073741824,
         "used_bytes": 536870912, "reserved_bytes": 1024, "objects": 12, "uploads": 1},
        {"name": "remote-b", "healthy": False, "last_error": "connection refused", "quota_bytes": 0,
         "used_bytes": 0, "reserved_bytes": 0, "objects": 0, "uploads": 0},
    ],
    "uploads": 1,
}

METADATA_DOWN = {
    "error": "metadata database unavailable", "detail": "disk I/O error", "status": "degraded",
    "metadata": "unavailable",
    "stores": [{"name": "local-a", "healthy": True, "last_error": None},
               {"name": "remote-b", "healthy": False, "last_error": "connection refused"}],
}

USAGE = {
    "stores": [
        {"name": "local-a", "period_start": "2026-12-01", "period_end": "2027-01-01", "cap_mode": "hard",
         "egress_bytes": 11 * 1024**2, "ingress_bytes": 1536, "requests_a": 3, "requests_b": 40, "requests_other": 2,
         "requests": 45, "caps": {"egress_bytes": 10 * 1024**2, "class_b_requests": 200},
         "reached": ["egress_bytes"]},
    ],
}


class Run:
    """One ``main(argv)`` call: exit status and what it printed."""

    def __init__(self, *argv: str, stdin: io.StringIO | None = None, environ: dict[str, str] | None = None):
        out, err = io.StringIO(), io.StringIO()
        self.status = main(list(argv), stdin=stdin or io.StringIO(""), stdout=out, stderr=err,
                           environ={"APP1_SECRET": "s"} if environ is None else environ)
        self.out, self.err = out.getvalue(), err.getvalue()


def write_config(tmp_path: Path, extra: str = "", text: str = CONFIG) -> str:
    path = tmp_path / "s3orchestrator.toml"
    path.write_text(text + extra)
    return str(path)


# -- check-config ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """CONFIG's relative paths (its SQLite file) are under the test's directory."""
    monkeypatch.chdir(tmp_path)


NO_DATABASE_YET = "metadata: SQLite var/metadata.sqlite: no database file yet; it is created at start\n"


def test_check_config_good_file_exits_0(tmp_path):
    path = write_config(tmp_path)
    run = Run("check-config", path)
    assert (run.status, run.out, run.err) == (0, f"{NO_DATABASE_YET}{path}: OK\n", "")


def test_check_config_bad_file_exits_1_naming_the_key(tmp_path):
    path = write_config(tmp_path, text=CONFIG.replace("quota_bytes = 1073741824", "quota_bytes = -5"))
    run = Run("check-config", path)
    assert run.status == 1
    assert run.out == ""
    assert run.err == f"{path}: stores[0].quota_bytes: must be a non-negative integer (got -5)\n"


def test_check_config_names_an_unset_environment_variable(tmp_path):
    run = Run("check-config", write_config(tmp_path), environ={})
    assert run.status == 1
    assert "buckets[0].credentials[0].secret_access_key: environment variable APP1_SECRET is not set" in run.err


def test_check_config_missing_file_exits_1(tmp_path):
    path = str(tmp_path / "missing.toml")
    run = Run("check-config", path)
    assert run.status == 1
    assert run.err == f"{path}: cannot read configuration file: No such file or directory\n"


def test_check_config_refuses_a_non_loopback_manhole(tmp_path):
    path = write_config(tmp_path, '[manhole]\nlisten = "tcp:2222"\npassword_file = "p"\n')
    run = Run("check-config", path)
    assert run.status == 1
    assert "manhole.listen: must listen on loopback only" in run.err


REPLICATED = CONFIG.replace('name = "app1-files"\n', 'name = "app1-files"\nreplicas = 2\nwrite_quorum = 1\n').replace(
    'name = "local-a"\n', 'name = "local-a"\nzone = "here"\n'
) + '[[stores]]\nname = "local-b"\ntype = "directory"\npath = "var/stores/b"\nquota_bytes = 0\nzone = "there"\n'


def test_check_config_accepts_placement_replicas_and_zones(tmp_path):
    path = write_config(tmp_path, '[placement]\nreplicas = 2\nwrite_quorum = 2\nread_order = "latency"\n',
                        text=REPLICATED)
    run = Run("check-config", path)
    assert (run.status, run.out, run.err) == (0, f"{NO_DATABASE_YET}{path}: OK\n", "")


def test_check_config_refuses_more_replicas_than_stores(tmp_path):
    path = write_config(tmp_path, text=REPLICATED.replace("replicas = 2", "replicas = 3"))
    run = Run("check-config", path)
    assert run.status == 1
    assert run.err == f"{path}: buckets[0].replicas: must be at most the number of stores (2) (got 3)\n"


def manhole_table(passwords: Path) -> str:
    return f'[manhole]\nlisten = "tcp:2222:interface=127.0.0.1"\npassword_file = "{passwords}"\n'


def test_check_config_checks_the_manhole_password_file(tmp_path):
    passwords = tmp_path / "manhole.passwd"
    passwords.write_text("admin:hunter2\n")
    path = write_config(tmp_path, manhole_table(passwords))
    run = Run("check-config", path)
    assert run.status == 1
    assert f"manhole.password_file: {passwords}: line 1: not a pbkdf2_sha256 hash" in run.err
    assert "hunter2" not in run.err


def test_check_config_accepts_a_good_manhole_password_file(tmp_path):
    passwords = tmp_path / "manhole.passwd"
    passwords.write_text(f"admin:{hash_password('pw', iterations=1000)}\n")
    path = write_config(tmp_path, manhole_table(passwords))
    assert Run("check-config", path).status == 0


# -- hash-password ---------------------------------------------------------------------------------


def test_hash_password_reads_one_line_from_stdin():
    run = Run("hash-password", stdin=io.StringIO("s3cret pass\nignored\n"))
    assert run.status == 0
    encoded = run.out.strip()
    assert encoded.startswith("pbkdf2_sha256$600000$")
    assert verify_password("s3cret pass", encoded)


def test_hash_password_with_user_prints_a_password_file_line(tmp_path):
    run = Run("hash-password", "--user", "admin", stdin=io.StringIO("pw\r\n"))
    assert run.status == 0
    passwords = tmp_path / "manhole.passwd"
    passwords.write_text(run.out)
    users = load_password_file(str(passwords))
    assert list(users) == ["admin"] and verify_password("pw", users["admin"])


def test_hash_password_refuses_an_empty_password():
    run = Run("hash-password", stdin=io.StringIO("\n"))
    assert (run.status, run.out) == (1, "")
    assert run.err == "s3orchestrator hash-password: the password is empty\n"


def test_hash_password_refuses_a_user_name_with_a_colon():
    run = Run("hash-password", "--user", "ad:min", stdin=io.StringIO("pw\n"))
    assert run.status == 1
    assert "--user: not a usable user name 'ad:min'" in run.err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_hash_password_on_a_terminal_asks_twice(monkeypatch):
    answers = iter(["typed", "typed"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: next(answers))
    run = Run("hash-password", stdin=FakeTerminal())
    assert run.status == 0 and verify_password("typed", run.out.strip())


def test_hash_password_on_a_terminal_refuses_differing_passwords(monkeypatch):
    answers = iter(["one", "two"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: next(answers))
    run = Run("hash-password", stdin=FakeTerminal())
    assert (run.status, run.out) == (1, "")
    assert run.err == "s3orchestrator hash-password: the two passwords differ\n"


# -- status ----------------------------------------------------------------------------------------


class AdminHandler(BaseHTTPRequestHandler):
    """A stand-in for the daemon's admin API: GET /status with the bearer token."""

    seen: list[dict[str, Any]]

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"error": "unauthorized"})
        elif self.path == "/status" and getattr(self.server, "metadata_down", False):
            self._send(503, METADATA_DOWN)
        elif self.path == "/status":
            self._send(200, SNAPSHOT)
        elif self.path == "/usage" and not getattr(self.server, "old_daemon", False):
            self._send(200, USAGE)
        else:
            self._send(404, {"error": "not found"})

    def _send(self, status: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(server: socketserver.BaseServer) -> Iterator[socketserver.BaseServer]:
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def admin_api() -> Iterator[ThreadingHTTPServer]:
    yield from serve(ThreadingHTTPServer(("127.0.0.1", 0), AdminHandler))


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port)


@pytest.fixture
def unix_admin_api(tmp_path) -> Iterator[UnixHTTPServer]:
    yield from serve(UnixHTTPServer(str(tmp_path / "admin.sock"), AdminHandler))


def admin_config(tmp_path: Path, listen: str, token: str = TOKEN) -> str:
    return write_config(tmp_path, f'[admin]\nlisten = "{listen}"\ntoken = "{token}"\n')


def test_status_reads_listen_and_token_from_the_config(tmp_path, admin_api):
    port = admin_api.server_address[1]
    run = Run("status", "--config", admin_config(tmp_path, f"tcp:{port}:interface=127.0.0.1"))
    assert run.status == 0, run.err
    assert admin_api.seen == [{"path": "/status", "authorization": f"Bearer {TOKEN}"}]
    lines = run.out.splitlines()
    assert lines[0] == "status: degraded, 2 stores, 1 multipart upload in progress"
    assert lines[1].split() == ["STORE", "HEALTH", "USED", "RESERVED", "QUOTA", "COPIES", "LIVE", "CLEANUP",
                                "UPLOADS"]
    assert lines[2].split() == ["local-a", "up", "512.0", "MiB", "(50%)", "1.0", "KiB", "1.0", "GiB", "12",
                                "512.0", "MiB", "0", "1"]
    assert lines[3].split() == ["remote-b", "DOWN", "0", "B", "0", "B", "unlimited", "0", "0", "B", "0", "0"]
    assert lines[4] == "remote-b is down: connection refused"


def test_status_does_not_need_the_other_secrets_of_the_config(tmp_path, admin_api):
    port = admin_api.server_address[1]
    run = Run("status", "--config", admin_config(tmp_path, f"tcp:{port}:interface=127.0.0.1"), environ={})
    assert run.status == 0, run.err


def test_status_json_prints_the_document(tmp_path, admin_api):
    port = admin_api.server_address[1]
    run = Run("status", "--json", "--config", admin_config(tmp_path, f"tcp:{port}:interface=127.0.0.1"))
    assert run.status == 0
    assert json.loads(run.out) == SNAPSHOT


def test_status_token_from_the_environment_wins_over_the_config(tmp_path, admin_api):
    port = admin_api.server_address[1]
    config = admin_config(tmp_path, f"tcp:{port}:interface=127.0.0.1", token="stale")
    run = Run("status", "--config", config, environ={"S3ORCHESTRATOR_ADMIN_TOKEN": TOKEN})
    assert run.status == 0, run.err


def test_status_with_url_and_token_needs_no_config(admin_api):
    port = admin_api.server_address[1]
    run = Run("status", "--config", "/nonexistent.toml", "--url", f"http://127.0.0.1:{port}", "--token", TOKEN)
    assert run.status == 0, run.err


def test_status_refused_token_exits_1(admin_api):
    port = admin_api.server_address[1]
    run = Run("status", "--url", f"http://127.0.0.1:{port}", "--token", "wrong")
    assert (run.status, run.out) == (1, "")
    assert run.err == (f"s3orchestrator status: the admin endpoint at http://127.0.0.1:{port} refused the token"
                       " (401 Unauthorized)\n")


def test_status_unreachable_endpoint_exits_1():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens: bound, never listening
        run = Run("status", "--url", f"http://127.0.0.1:{port}", "--token", TOKEN)
    assert run.status == 1
    assert run.err.startswith(f"s3orchestrator status: cannot reach the admin endpoint at http://127.0.0.1:{port}:")
    assert "refused" in run.err.lower()


def test_status_over_a_unix_socket(tmp_path, unix_admin_api):
    path = unix_admin_api.server_address
    run = Run("status", "--config", admin_config(tmp_path, f"unix:{path}:mode=600"))
    assert run.status == 0, run.err
    assert "local-a" in run.out


def test_usage_prints_each_store_against_every_cap(tmp_path, admin_api):
    port = admin_api.server_address[1]
    run = Run("usage", "--config", admin_config(tmp_path, f"tcp:{port}:interface=127.0.0.1"))
    assert run.status == 0, run.err
    assert admin_api.seen == [{"path": "/usage", "authorization": f"Bearer {TOKEN}"}]
    lines = run.out.splitlines()
    assert lines[0] == "local-a: 2026-12-01 to 2027-01-01 (UTC), cap_mode hard"
    assert [line.split() for line in lines[1:]] == [
        ["TRAFFIC", "USED", "CAP", "USE"],
        ["egress", "11.0", "MiB", "10.0", "MiB", "110%", "REACHED"],
        ["ingress", "1.5", "KiB", "-", "-"],
        ["class", "A", "requests", "3", "-", "-"],
        ["class", "B", "requests", "40", "200", "20%"],
        ["all", "requests", "45", "-", "-"],
    ]


def test_usage_json_prints_the_document(tmp_path, admin_api):
    port = admin_api.server_address[1]
    run = Run("usage", "--json", "--url", f"http://127.0.0.1:{port}", "--token", TOKEN)
    assert run.status == 0, run.err
    assert json.loads(run.out) == USAGE


def test_usage_from_a_daemon_without_it_says_so(admin_api):
    admin_api.old_daemon = True
    port = admin_api.server_address[1]
    run = Run("usage", "--url", f"http://127.0.0.1:{port}", "--token", TOKEN)
    assert (run.status, run.out) == (1, "")
    assert run.err == (f"s3orchestrator usage: the admin endpoint at http://127.0.0.1:{port} has no /usage"
                       " (a daemon older than this command?)\n")


def test_usage_offline_without_a_metadata_database_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's sqlite path is relative
    run = Run("usage", "--offline", "--config", write_config(tmp_path), environ={"APP1_SECRET": "s"})
    assert (run.status, run.out) == (1, "")
    assert run.err == ("s3orchestrator usage: no metadata database at var/metadata.sqlite (metadata.sqlite):"
                       " has the daemon ever run?\n")
    assert not (tmp_path / "var").exists()


def test_status_without_an_admin_table_says_so(tmp_path):
    path = write_config(tmp_path)
    run = Run("status", "--config", path)
    assert run.status == 1
    assert run.err == (f"s3orchestrator status: {path}: no [admin] table with a listen address:"
                       " the admin endpoint is off\n")


def test_status_without_any_token_says_where_to_put_one(tmp_path):
    path = write_config(tmp_path, '[admin]\nlisten = "tcp:1:interface=127.0.0.1"\ntoken = "${ADMIN_TOKEN}"\n')
    run = Run("status", "--config", path, environ={})
    assert run.status == 1
    assert "pass --token or set S3ORCHESTRATOR_ADMIN_TOKEN" in run.err


@pytest.mark.parametrize("listen, url", [
    ("tcp:9001:interface=127.0.0.1", "http://127.0.0.1:9001"),
    ("tcp:port=9001:interface=localhost", "http://localhost:9001"),
    ("tcp6:9001:interface=\\:\\:1", "http://[::1]:9001"),
    ("unix:/run/s3o/admin.sock:mode=600", "unix:/run/s3o/admin.sock"),
    ("unix:address=/run/s3o/admin.sock:mode=600:lockfile=0", "unix:/run/s3o/admin.sock"),
])
def test_admin_url_maps_endpoint_strings(listen, url):
    assert admin_url(listen) == url


def test_admin_url_refuses_what_it_cannot_reach():
    with pytest.raises(CommandError, match="tcp: and unix: endpoints only"):
        admin_url("ssl:9001:interface=127.0.0.1")


# -- packaging -------------------------------------------------------------------------------------


def test_setup_declares_the_console_script():
    setup = (REPO / "setup.py").read_text()
    assert re.search(r'"console_scripts":\s*\[\s*"s3orchestrator = s3orchestrator\.cli:main"', setup)


def test_installed_console_script_points_at_main():
    try:
        scripts = importlib.metadata.entry_points(group="console_scripts")
    except Exception:  # pragma: no cover - very old importlib.metadata
        pytest.skip("no entry point metadata")
    found = [entry for entry in scripts if entry.name == "s3orchestrator"]
    if not found:
        pytest.skip("the project is not installed here (make test installs it)")
    assert found[0].value == "s3orchestrator.cli:main"
    assert found[0].load() is main


def test_environment_file_supplies_the_service_secrets(tmp_path) -> None:
    env_file = tmp_path / "s3orchestrator.default"
    env_file.write_text('# made at install\nS3O_ACCESS_KEY_ID=S3OKEY\nS3O_SECRET_ACCESS_KEY="quoted secret"\n'
                        "S3O_ADMIN_TOKEN='token'\n\nnot a pair\n")
    assert read_environment_file(str(env_file)) == {
        "S3O_ACCESS_KEY_ID": "S3OKEY", "S3O_SECRET_ACCESS_KEY": "quoted secret", "S3O_ADMIN_TOKEN": "token",
    }
    assert read_environment_file(str(tmp_path / "missing")) == {}
    out, err = io.StringIO(), io.StringIO()
    debian_config = str(Path(__file__).resolve().parents[2] / "etc" / "s3orchestrator.toml")
    code = main(["check-config", debian_config, "--offline", "--env-file", str(env_file)],
                stdout=out, stderr=err, environ={})
    assert (code, err.getvalue()) == (0, "")
    # Without the file, ${S3O_...} cannot be expanded.
    code = main(["check-config", debian_config, "--offline", "--env-file", str(tmp_path / "missing")],
                stdout=io.StringIO(), stderr=err, environ={})
    assert code == 1 and "is not set" in err.getvalue()


@pytest.mark.parametrize("as_json", [False, True])
def test_status_of_a_daemon_without_its_metadata_database_says_so_and_fails(tmp_path, admin_api, as_json):
    admin_api.metadata_down = True
    port = admin_api.server_address[1]
    run = Run("status", *(["--json"] if as_json else []), "--config",
              admin_config(tmp_path, f"tcp:{port}:interface=127.0.0.1"))
    assert run.status == 1
    assert run.err == (
        f"s3orchestrator status: the daemon at http://127.0.0.1:{port} is in degraded mode: metadata database"
        " unavailable (disk I/O error); GET and HEAD are served from the stores, other requests get 503 until"
        " the database answers again; stores: local-a up, remote-b DOWN\n"
    )
    assert (json.loads(run.out) if as_json else run.out) == (METADATA_DOWN if as_json else "")
