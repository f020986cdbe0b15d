"""The ``s3orchestrator`` admin command: check-config, hash-password, status, usage, migrate-metadata,
drain, movement (``ops.movement_cli``), rebalance (``ops.rebalance_cli``), import,
scrub (``scrub_command``).

Standard library only (argparse, getpass, http.client) but for the metadata database's
driver, with no reactor.
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import re
import socket
import sys
import time
import tomllib
from typing import Any, Mapping, Sequence, TextIO
from urllib.parse import urlsplit

from s3orchestrator.config import ConfigError, load_config
from s3orchestrator.metadata.offline import DatabaseProblem, check_spec, describe_spec, open_exclusive
from s3orchestrator.metadata.offline.probe import probe_metadata
from s3orchestrator.metadata.offline.transfer import DEFAULT_BATCH_SIZE, TransferReport, transfer
from s3orchestrator.ops import movement_cli, rebalance_cli
from s3orchestrator.ops.passwords import PasswordFileError, check_password_file, hash_password
from s3orchestrator.ops.report import printable, status_table, usage_table

DEFAULT_CONFIG = "/etc/s3orchestrator/s3orchestrator.toml"
DEFAULT_ENVIRONMENT_FILE = "/etc/default/s3orchestrator"  # the Debian package's EnvironmentFile
TOKEN_ENVIRONMENT_VARIABLE = "S3ORCHESTRATOR_ADMIN_TOKEN"
STATUS_PATH = "/status"
USAGE_PATH = "/usage"
DEFAULT_TIMEOUT = 10.0

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class CommandError(Exception):
    """A command cannot do its work; str() is the one line to print."""


class MetadataDown(CommandError):
    """The daemon answered that its metadata database is unavailable or busy (degraded
    mode): ``document`` is its answer (``ops.admin.metadata_down``)."""

    def __init__(self, message: str, document: dict[str, Any]) -> None:
        super().__init__(message)
        self.document = document


def metadata_down_message(url: str, document: Mapping[str, Any]) -> str:
    """One line saying what a daemon without its metadata database still does."""
    detail = f" ({document['detail']})" if document.get("detail") else ""
    stores = ", ".join(
        f"{store.get('name')} up" if store.get("healthy") else f"{store.get('name')} DOWN"
        for store in document.get("stores", ()) if isinstance(store, dict)
    )
    return (
        f"the daemon at {url} is in degraded mode: {document['error']}{detail}; GET and HEAD are"
        f" served from the stores, other requests get 503 until the database answers again;"
        f" stores: {stores or 'none'}"
    )


# -- check-config --------------------------------------------------------------------------


def check_config(path: str, environ: Mapping[str, str], out: TextIO, connect: bool = True) -> None:
    """Validate a configuration file as the daemon's start does (the manhole's password
    file included) and, if ``connect``, look at its metadata database (reachable, usable,
    its schema version); ConfigError names the offending key or the database's problem."""
    config = load_config(path, environ)
    if config.ops.manhole is not None:
        try:
            check_password_file(config.ops.manhole.password_file)
        except PasswordFileError as error:
            raise ConfigError(f"manhole.password_file: {error}") from None
    if connect:
        try:
            print(f"metadata: {probe_metadata(config.metadata, environ)}", file=out)
        except DatabaseProblem as problem:
            raise ConfigError(f"metadata: {problem}") from None
    print(f"{path}: OK", file=out)


# -- hash-password -------------------------------------------------------------------------


def read_password(stdin: TextIO) -> str:
    """The password: asked twice on a terminal, else the first line of stdin."""
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise CommandError("the two passwords differ")
        password = first
    else:
        password = stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise CommandError("the password is empty")
    return password


def check_user_name(user: str) -> None:
    """Refuse a user name the password file cannot hold."""
    if not user or ":" in user or user != user.strip() or user.startswith("#") or not user.isprintable():
        raise CommandError(f"--user: not a usable user name {user!r} (no ':', spaces around it, or leading '#')")


def password_line(password: str, user: str | None) -> str:
    """A hash, or ``user:hash`` ready for the password file."""
    encoded = hash_password(password)
    return encoded if user is None else f"{user}:{encoded}"


# -- status --------------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the admin API may listen on one)."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _endpoint_fields(endpoint: str) -> tuple[str, list[str], dict[str, str]]:
    """A Twisted endpoint string as (kind, positional fields, options); ``\\:`` is a colon."""
    kind, _, rest = endpoint.partition(":")
    fields = [field.replace("\\:", ":") for field in re.split(r"(?<!\\):", rest)]
    positional = [field for field in fields if "=" not in field]
    options = dict(field.partition("=")[::2] for field in fields if "=" in field)
    return kind, positional, options


def admin_url(listen: str) -> str:
    """Where the CLI reaches an ``[admin] listen`` endpoint: ``http://HOST:PORT`` for
    ``tcp:PORT:interface=HOST``, ``unix:PATH`` for a unix socket."""
    kind, positional, options = _endpoint_fields(listen)
    if kind in ("tcp", "tcp6"):
        port = options.get("port") or (positional[0] if positional else "")
        host = options.get("interface", "127.0.0.1")
        if not port.isdigit():
            raise CommandError(f"admin.listen: no port in {listen!r}")
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    if kind == "unix":
        path = options.get("address") or (positional[0] if positional else "")
        if not path:
            raise CommandError(f"admin.listen: no socket path in {listen!r}")
        return f"unix:{path}"
    raise CommandError(f"admin.listen: the CLI reaches tcp: and unix: endpoints only (got {listen!r})")


def _expand(value: Any, key: str, environ: Mapping[str, str]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CommandError(f"{key}: must be a non-empty string")

    def substitute(match: re.Match[str]) -> str:
        try:
            return environ[match.group(1)]
        except KeyError:
            raise CommandError(f"{key}: environment variable {match.group(1)} is not set") from None

    return _ENV_REFERENCE.sub(substitute, value)


def read_admin_settings(path: str, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """(listen, token) of a config file's ``[admin]`` table.

    Only that table is read: the rest of the file may name secrets (``${VAR}``) that
    the operator's shell does not have. The token is None when it cannot be expanded,
    so that one from the command line or the environment can still be used.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise CommandError(f"{path}: cannot read configuration file: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CommandError(f"{path}: invalid TOML: {e}") from None
    admin = data.get("admin")
    if not isinstance(admin, dict) or "listen" not in admin:
        raise CommandError(f"{path}: no [admin] table with a listen address: the admin endpoint is off")
    listen = _expand(admin["listen"], "admin.listen", environ)
    try:
        token = _expand(admin.get("token"), "admin.token", environ)
    except CommandError:
        token = None
    return listen, token


def _error_document(body: bytes) -> dict[str, Any] | None:
    """An error answer of the admin API: a JSON object with an ``error`` string, or None."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) and isinstance(answer.get("error"), str) else None


def admin_connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the admin endpoint at ``url`` (``http://HOST:PORT``, ``https://...``
    or ``unix:PATH``) and the path its requests' paths go under."""
    if url.startswith("unix:"):
        return UnixHTTPConnection(url.removeprefix("unix:"), timeout=timeout), ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(f"--url: expected http://HOST:PORT, https://HOST:PORT or unix:PATH (got {url!r})")
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        return connection_class(parts.hostname, parts.port, timeout=timeout), parts.path.rstrip("/")
    except ValueError as e:
        raise CommandError(f"--url: {e}") from None


def admin_exchange(
    url: str, token: str, method: str, path: str, timeout: float, document: Any = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    """Send ``method path`` (``document`` as a JSON body, if not None) to the admin endpoint
    at ``url``: its response and body; CommandError if unreachable or the token is refused."""
    connection, base = admin_connection(url, timeout)
    # UTF-8, as the daemon compares it (http.client would send latin-1 only).
    headers: dict[str, bytes | str] = {"Authorization": b"Bearer " + token.encode("utf-8"),
                                       "Accept": "application/json"}
    body = None
    if document is not None:
        body = json.dumps(document).encode("utf-8")
        headers["Content-Type"] = "application/json"
    try:
        try:
            connection.request(method, base + path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise CommandError(f"cannot reach the admin endpoint at {url}: {reason}") from None
    finally:
        connection.close()
    if response.status in (401, 403):
        raise CommandError(f"the admin endpoint at {url} refused the token ({response.status} {response.reason})")
    return response, answer


def fetch_status(url: str, token: str, timeout: float = DEFAULT_TIMEOUT, path: str = STATUS_PATH,
                 method: str = "GET") -> dict[str, Any]:
    """GET (or ``method``) ``path`` (/status, /usage, /movement...) from the admin endpoint
    at ``url`` (``http://HOST:PORT`` or ``unix:PATH``): a JSON document with a list of ``stores``."""
    response, body = admin_exchange(url, token, method, path, timeout)
    answer = _error_document(body) if response.status != 200 else None
    if response.status == 503 and answer is not None:
        raise MetadataDown(metadata_down_message(url, answer), answer)
    if response.status == 404 and path != STATUS_PATH:
        raise CommandError(f"the admin endpoint at {url} has no {path} (a daemon older than this command?)")
    if response.status == 409 and answer is not None:
        raise CommandError(answer["error"])  # the daemon refused: why
    if response.status != 200:
        raise CommandError(f"the admin endpoint at {url} answered {response.status} {response.reason}")
    try:
        document = json.loads(body)
    except ValueError:
        raise CommandError(f"the admin endpoint at {url} did not answer JSON") from None
    if not isinstance(document, dict) or (method == "GET" and not isinstance(document.get("stores"), list)):
        raise CommandError(f"the admin endpoint at {url} answered an unexpected document")
    return document


def offline_usage(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> None:
    """Print the stores' traffic this period read from the metadata database of ``--config``."""
    from s3orchestrator.ops.usage_offline import OfflineUsageError
    from s3orchestrator.ops.usage_offline import offline_usage as read_usage

    config = load_config(args.config, environ)
    try:
        document = {"stores": read_usage(config)}
    except OfflineUsageError as error:
        raise CommandError(str(error)) from None
    if args.json:
        print(json.dumps(document, indent=2), file=out)
    else:
        out.write(usage_table(document))


def admin_access(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, str]:
    """(URL, token) of the admin endpoint: ``--url`` and ``--token`` (or the environment),
    else from the ``[admin]`` table of ``--config``."""
    url: str | None = args.url
    token: str | None = args.token or environ.get(TOKEN_ENVIRONMENT_VARIABLE) or None
    if url is None or token is None:
        try:
            listen, config_token = read_admin_settings(args.config, environ)
        except CommandError as error:
            if url is not None:
                raise CommandError(
                    f"no admin token: pass --token or set {TOKEN_ENVIRONMENT_VARIABLE} ({error})"
                ) from None
            raise
        url = url or admin_url(listen)
        token = token or config_token
    if token is None:
        raise CommandError(
            f"no admin token: admin.token cannot be read here; pass --token or set {TOKEN_ENVIRONMENT_VARIABLE}"
        )
    return url, token


def status(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> None:
    """Print the daemon's status (``usage``: the stores' monthly traffic against their
    caps) read from its admin endpoint."""
    url, token = admin_access(args, environ)
    usage = args.command == "usage"
    try:
        snapshot = fetch_status(url, token, timeout=args.timeout, path=USAGE_PATH if usage else STATUS_PATH)
    except MetadataDown as down:
        if args.json:
            print(json.dumps(down.document, indent=2), file=out)
        raise
    if args.json:
        print(json.dumps(snapshot, indent=2), file=out)
    else:
        try:
            out.write(usage_table(snapshot) if usage else status_table(snapshot, time.time()))
        except (KeyError, TypeError):
            raise CommandError(f"the admin endpoint at {url} answered an unexpected document") from None


# -- migrate-metadata ----------------------------------------------------------------------


def print_report(report: TransferReport, out: TextIO) -> None:
    """The per-table comparison of a copy, then its verdict."""
    width = max([len("table"), *(len(table.name) for table in report.tables)])
    print(f"{'table':<{width}}  {'source rows':>12}  {'target rows':>12}  checksum", file=out)
    for table in report.tables:
        verdict = "ok" if table.matches else f"MISMATCH (target {table.target_checksum[:16]})"
        print(f"{table.name:<{width}}  {table.source_rows:>12}  {table.target_rows:>12}"
              f"  {table.source_checksum[:16]} {verdict}", file=out)
    for identity in report.identities:
        verdict = "ok" if identity.matches else "MISMATCH"
        print(f"{identity.table}.{identity.column}: new rows get values above {identity.target_mark}"
              f" (source's highest: {identity.source_mark}) {verdict}", file=out)
    if not report.schema_versions_match:
        print("schema_version: the migration histories differ MISMATCH", file=out)


def migrate_metadata(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> None:
    """Copy the metadata database ``--from`` into ``--to`` and verify the copy (daemons stopped)."""
    try:
        check_spec(args.source, "--from")
        check_spec(args.target, "--to")
    except DatabaseProblem as problem:
        raise CommandError(str(problem)) from None
    if args.source == args.target:
        raise CommandError("--from and --to name the same database")
    if args.batch_size < 1:
        raise CommandError("--batch-size: must be at least 1")
    print(f"copying {describe_spec(args.source)} into {describe_spec(args.target)}"
          " (every daemon using either must be stopped)", file=out)
    try:
        source = open_exclusive(args.source, environ)
        try:
            target = open_exclusive(args.target, environ, create=True)
            try:
                report = transfer(source, target, int(time.time() * 1000), replace=args.replace,
                                  batch_size=args.batch_size, progress=lambda line: print(line, file=out))
            finally:
                target.close()
        finally:
            source.close()
    except DatabaseProblem as problem:
        raise CommandError(str(problem)) from None
    print_report(report, out)
    if not report.verified:
        raise CommandError(f"the copy does not match the source; {describe_spec(args.target)} is unchanged")
    rows = sum(table.source_rows for table in report.tables)
    print(f"verified: schema version {report.schema_version}, {len(report.tables)} tables, {rows} rows;"
          f" {describe_spec(args.target)} committed", file=out)


# -- the service's environment file -------------------------------------------------------


def read_environment_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of a systemd EnvironmentFile (the package's
    /etc/default/s3orchestrator), so the CLI expands ``${VAR}`` as the service does;
    {} if the file is absent or unreadable (not root). Comments, blank lines and
    lines without ``=`` are skipped; one pair of surrounding quotes is removed."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    values = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


# -- main ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s3orchestrator", description="Administer an s3orchestrator daemon.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    env_file_help = (f"read ${{VAR}} values from this systemd EnvironmentFile too, when readable"
                     f" (default: {DEFAULT_ENVIRONMENT_FILE})")
    check = commands.add_parser(
        "check-config",
        help="validate a configuration file and connect to its metadata database (exit 0 if usable, 1 if not)",
    )
    check.add_argument("file", metavar="FILE", nargs="?", default=DEFAULT_CONFIG,
                       help=f"the configuration file (default: {DEFAULT_CONFIG})")
    check.add_argument("--offline", action="store_true", help="validate the file only: do not open the database")
    check.add_argument("--env-file", default=DEFAULT_ENVIRONMENT_FILE, metavar="FILE", help=env_file_help)

    hashing = commands.add_parser(
        "hash-password",
        help="hash a manhole password (asked twice on a terminal, else read from stdin)",
    )
    hashing.add_argument("--user", metavar="NAME", help="print NAME:hash, a line for the password file")

    for command, description in (
        ("status", "per-store health, usage, quota, copies, queues and uploads of a daemon"
                   " (exit 1 if it cannot tell, e.g. its metadata database is unavailable)"),
        ("usage", "per-store traffic this billing period (bytes, requests) against the monthly caps"),
    ):
        _admin_command(commands.add_parser(command, help=description), env_file_help)
    from s3orchestrator import scrub_command

    scrub = commands.add_parser("scrub", help=scrub_command.HELP)
    _admin_command(scrub, env_file_help)
    scrub_command.add_arguments(scrub)
    commands.choices["usage"].add_argument(
        "--offline", action="store_true",
        help="read the metadata database of --config instead of the daemon (counts not synced yet left out)",
    )
    movement_cli.add_commands(commands, lambda command: _admin_command(command, env_file_help))

    rebalance_cli.add_command(commands, lambda command: _admin_command(command, env_file_help,
                                                                       timeout=rebalance_cli.TIMEOUT))

    importing = commands.add_parser(
        "import",
        help="have the daemon record the objects a store already holds as objects of a virtual bucket"
             " (no bytes copied; resumable; exit 1 if it fails)",
    )
    _admin_command(importing, env_file_help)
    importing.add_argument("--store", required=True, metavar="NAME", help="the store holding the objects")
    importing.add_argument("--bucket", required=True, metavar="VBUCKET", help="the virtual bucket they join")
    importing.add_argument("--prefix", default="", metavar="P", help="import only the keys starting with P")
    importing.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                           help="how often the progress is shown (default: 1)")

    database_help = "sqlite:PATH or postgresql://USER@HOST:PORT/DATABASE (password: PGPASSWORD or ~/.pgpass)"
    migrate = commands.add_parser(
        "migrate-metadata",
        help="copy the metadata database into another (SQLite to PostgreSQL or back) and verify it;"
             " every daemon must be stopped",
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="DATABASE", help=database_help)
    migrate.add_argument("--to", dest="target", required=True, metavar="DATABASE", help=database_help)
    migrate.add_argument("--replace", action="store_true",
                         help="delete what the target holds first (else a target with rows is refused)")
    migrate.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="ROWS",
                         help=f"rows read and written at a time (default: {DEFAULT_BATCH_SIZE})")
    migrate.add_argument("--env-file", default=DEFAULT_ENVIRONMENT_FILE, metavar="FILE",
                         help=f"read PGPASSWORD from this systemd EnvironmentFile too, when readable"
                              f" (default: {DEFAULT_ENVIRONMENT_FILE})")
    return parser


def _admin_command(show: argparse.ArgumentParser, env_file_help: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """The options of a command that asks the daemon's admin API."""
    show.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                      help=f"read [admin] listen and token from FILE (default: {DEFAULT_CONFIG})")
    show.add_argument("--url", metavar="URL", help="the admin endpoint: http://HOST:PORT or unix:PATH")
    show.add_argument("--token", metavar="TOKEN",
                      help=f"the admin token (better: the {TOKEN_ENVIRONMENT_VARIABLE} environment variable)")
    show.add_argument("--env-file", default=DEFAULT_ENVIRONMENT_FILE, metavar="FILE", help=env_file_help)
    show.add_argument("--json", action="store_true", help="print the JSON document as received")
    show.add_argument("--timeout", type=float, default=timeout, metavar="SECONDS",
                      help=f"give up after this long (default: {timeout:g})")


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run one command; the exit status: 0 done, 1 failed (one line on stderr), 2 usage."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    if args.command in ("check-config", "status", "usage", "migrate-metadata", "drain", "movement", "rebalance",
                        "import", "scrub"):
        # The service's secrets, as its unit gives them; the caller's environment wins.
        environ = {**read_environment_file(args.env_file), **environ}
    try:
        if args.command == "check-config":
            check_config(args.file, environ, stdout, connect=not args.offline)
        elif args.command == "migrate-metadata":
            migrate_metadata(args, environ, stdout)
        elif args.command == "hash-password":
            if args.user is not None:
                check_user_name(args.user)
            print(password_line(read_password(stdin), args.user), file=stdout)
        elif args.command == "usage" and args.offline:
            offline_usage(args, environ, stdout)
        elif args.command in ("drain", "movement", "rebalance"):
            url, token = admin_access(args, environ)
            command = rebalance_cli if args.command == "rebalance" else movement_cli
            command.run(args, lambda path, method: fetch_status(url, token, args.timeout, path, method), stdout)
        elif args.command == "import":
            from s3orchestrator.import_command import run_import

            run_import(args, environ, stdout)
        elif args.command == "scrub":
            from s3orchestrator.scrub_command import scrub

            scrub(args, environ, stdout)
        else:
            status(args, environ, stdout)
    except ConfigError as error:
        print(f"{args.file}: {error}" if not str(error).startswith(args.file) else str(error), file=stderr)
        return 1
    except (CommandError, movement_cli.MovementCommandError) as error:
        print(f"s3orchestrator {args.command}: {printable(str(error))}", file=stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print(f"s3orchestrator {args.command}: interrupted", file=stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Through the package's module, not __main__: commands living in other modules raise its CommandError.
    from s3orchestrator import cli

    sys.exit(cli.main())
