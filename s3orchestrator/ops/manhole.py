"""The telnet manhole: a Python shell inside the running daemon, for operators.

Built as ``twisted.conch.manhole_tap`` builds its telnet side (a ``TelnetTransport``
running ``AuthenticatingTelnetProtocol`` against a cred ``Portal``, whose realm hands
out a ``ColoredManhole`` behind an insults terminal), with these differences:

- users and salted hashes come from ``[manhole] password_file`` (see ``ops.passwords``),
  read again at every login, so a changed file needs no restart; the PBKDF2 check runs
  in a thread, not in the reactor;
- failed logins are logged as warnings (user name and peer, never the password) and a
  connection is closed after three of them;
- every session gets its own namespace: the service objects and the helpers
  ``status()``, ``uploads()``, ``cleanup_queue()``, ``intents()``, ``instances()``,
  ``replication_queue()``, ``lost_objects()`` and ``run_job(name)``,
  which print their results in the session when they are ready.

The listener is loopback TCP or a unix socket with mode 0600 (``config`` checks that).
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import time
from typing import Any, Callable, Mapping, Protocol, TypeVar

from twisted.conch import telnet
from twisted.conch.insults import insults
from twisted.conch.manhole import ColoredManhole
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import ServerFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.config import ConfigError, ManholeConfig
from s3orchestrator.jobs.health import HealthCheckJob, StoreHealth
from s3orchestrator.jobs.multipart_expiry import MultipartExpiryJob
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.ops.passwords import (
    DEFAULT_ITERATIONS,
    SCHEME,
    PasswordFileError,
    check_password_file,
    load_password_file,
    verify_password,
)
from s3orchestrator.ops.report import (
    cleanup_table,
    format_age,
    instances_table,
    intents_table,
    lost_table,
    printable,
    replication_table,
    status_table,
    uploads_table,
)
from s3orchestrator.ops.status import status_snapshot

_T = TypeVar("_T")
#: ``run_in_thread(f, *args)``: a Deferred of ``f(*args)`` computed off the reactor thread.
ThreadRunner = Callable[..., "Deferred[Any]"]

MAX_LOGIN_ATTEMPTS = 3
MAX_LOGGED_USER = 64  # bytes of a user name that reach the log
DEFAULT_UPLOADS_LIMIT = 50
# uploads() lists every upload initiated before this (ms since the epoch): all of them.
_FAR_FUTURE_MS = 2**62
# Verified for unknown users, so that a reply's timing does not tell which users exist.
_DUMMY_HASH = f"{SCHEME}${DEFAULT_ITERATIONS}$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43

_log = Logger()


class ManholeTarget(Protocol):
    """What the manhole shows of the daemon (``OrchestratorService`` provides it; read only)."""

    @property
    def config(self) -> Any: ...

    @property
    def metadata(self) -> IMetadataStore: ...

    @property
    def stores(self) -> Mapping[str, Any]: ...

    @property
    def health(self) -> StoreHealth: ...

    @property
    def jobs(self) -> Mapping[str, Any]: ...

    @property
    def reactor(self) -> Any: ...


# -- login -------------------------------------------------------------------------------


class PeerCredentials(UsernamePassword):
    """A telnet login: user name and password (bytes) and where it came from."""

    def __init__(self, username: bytes, password: bytes, peer: str) -> None:
        super().__init__(username, password)
        self.peer = peer

    def __repr__(self) -> str:
        return f"<PeerCredentials user={self.username!r} peer={self.peer}>"


def describe_peer(transport: Any) -> str:
    """Who is at the other end of ``transport``, for the log: ``127.0.0.1:51234``,
    ``[::1]:51234``, or for a unix socket the peer process (``unix:pid=123,uid=1000``
    where the system tells it)."""
    address = transport.getPeer()
    if isinstance(address, (IPv4Address, IPv6Address)):
        host = f"[{address.host}]" if ":" in address.host else address.host
        return f"{host}:{address.port}"
    if isinstance(address, UNIXAddress):
        handle = getattr(getattr(transport, "transport", transport), "getHandle", lambda: None)()
        peercred = getattr(socket, "SO_PEERCRED", None)
        if isinstance(handle, socket.socket) and peercred is not None:
            try:
                pid, uid, _ = struct.unpack("3i", handle.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))
            except OSError:
                return "unix"
            return f"unix:pid={pid},uid={uid}"
        return "unix"
    return str(address)


@implementer(ICredentialsChecker)
class PasswordFileChecker:
    """Checks user name and password against the password file, read at every login.

    Logs each outcome: a success as info, a failure as a warning naming the user and the
    peer (never the password), an unusable password file as an error (the login fails).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str, run_in_thread: ThreadRunner) -> None:
        self.path = path
        self._run_in_thread = run_in_thread

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        username: bytes = credentials.username
        peer = getattr(credentials, "peer", "an unknown peer")
        # Bounded: a client chooses what it sends as a user name.
        user = printable(username[:MAX_LOGGED_USER].decode("utf-8", "replace"))
        checked = self._run_in_thread(self._check, username, credentials.password)

        def outcome(reason: str | None) -> bytes | tuple[()]:
            if reason is None:
                _log.info("Manhole login: user {user} from {peer}", user=user, peer=peer)
                return username
            _log.warn("Manhole login failed for user {user} from {peer}: {reason}", user=user, peer=peer,
                      reason=reason)
            raise UnauthorizedLogin()

        def unusable(failure: Failure) -> Failure:
            if failure.check(PasswordFileError):
                _log.error("Manhole login refused for user {user} from {peer}: {error}", user=user, peer=peer,
                           error=failure.getErrorMessage())
                return Failure(UnauthorizedLogin())
            return failure

        return checked.addErrback(unusable).addCallback(outcome)

    def _check(self, username: bytes, password: bytes) -> str | None:
        """None when the password is right, else why not (runs in a thread)."""
        users = load_password_file(self.path)
        try:
            encoded = users.get(username.decode("utf-8"))
        except UnicodeDecodeError:
            encoded = None
        if encoded is None:
            verify_password(password, _DUMMY_HASH)
            return "unknown user"
        return None if verify_password(password, encoded) else "wrong password"


def _declined(failure: Failure, option: bytes) -> None:
    """Errback of a telnet option negotiation: a client may decline any option."""
    if failure.check(telnet.NegotiationError, ConnectionDone, ConnectionLost) is None:
        _log.failure("Manhole telnet negotiation of option {option!r} failed", failure, option=option)


class LoginProtocol(telnet.AuthenticatingTelnetProtocol):
    """Twisted's user/password prompt, with the peer in the credentials, a limit on
    failed attempts, and no hang with clients that do not negotiate echo."""

    failures = 0
    transport: telnet.ITelnetTransport

    def telnet_User(self, line: bytes) -> str:
        self.username = line.strip()
        # Asks the client to stop echoing; one that declines shows the password as typed.
        self.transport.will(telnet.ECHO).addErrback(_declined, telnet.ECHO)
        self.transport.write(b"Password: ")
        return "Password"

    def telnet_Password(self, line: bytes) -> str:
        username, password = self.username, line.rstrip(b"\r")
        del self.username
        peer = describe_peer(self.transport)

        def login(result: object) -> None:
            if isinstance(result, Failure) and not result.check(telnet.NegotiationError):
                return  # the connection is gone
            credentials = PeerCredentials(username, password, peer)
            self.portal.login(credentials, None, telnet.ITelnetProtocol).addCallbacks(self._cbLogin, self._ebLogin)

        # Twisted logs in only once the client agrees to echo again; a client that
        # never negotiated echo (nc, socat) would wait forever, so go on either way.
        self.transport.wont(telnet.ECHO).addBoth(login)
        return "Discard"

    def _ebLogin(self, failure: Failure) -> None:
        if not failure.check(UnauthorizedLogin):
            _log.failure("Manhole login failed", failure)
        self.failures += 1
        if self.failures >= MAX_LOGIN_ATTEMPTS:
            self.transport.write(b"\r\nAuthentication failed; closing.\r\n")
            self.transport.loseConnection()
            return
        self.transport.write(b"\r\nAuthentication failed\r\nUsername: ")
        self.state = "User"


# -- the shell ---------------------------------------------------------------------------


class TerminalBootstrap(telnet.TelnetBootstrapProtocol):
    """``TelnetBootstrapProtocol`` without a logged traceback for every telnet option
    a client declines (plain line-mode clients decline most of them)."""

    # Its negotiationMap is TelnetTransport's own; Twisted does not declare that class an ITransport.
    transport: telnet.TelnetTransport  # type: ignore[assignment]

    def connectionMade(self) -> None:
        self.transport.negotiationMap[telnet.NAWS] = self.telnet_NAWS
        self.transport.negotiationMap[telnet.LINEMODE] = self.telnet_LINEMODE
        for option in (telnet.LINEMODE, telnet.NAWS, telnet.SGA):
            self.transport.do(option).addErrback(_declined, option)
        self.transport.will(telnet.ECHO).addErrback(_declined, telnet.ECHO)
        self.protocol = self.protocolFactory(*self.protocolArgs, **self.protocolKwArgs)
        factory = getattr(self, "factory", None)
        if factory is not None:
            self.protocol.factory = factory
        self.protocol.makeConnection(self)


BANNER = """\
s3orchestrator manhole: Python inside the running daemon. Careful. Ctrl-D leaves.
  objects: service, config, stores, metadata, jobs
  helpers: status()             stores: health, usage, copies, queues, uploads
           uploads(limit=50)    multipart uploads in progress, oldest first
           cleanup_queue(limit=50)  bytes queued for removal: store, location, tries, next try
           intents()            write intents: writes in flight and dead writers' leftovers
           instances()          the processes sharing the metadata, with their leases
           replication_queue(limit=50)  objects missing copies, oldest first
           lost_objects(limit=50)  objects with no live copy left, oldest first
           run_job(name)        run a background job now: {jobs}
"""


class OperatorManhole(ColoredManhole):
    """A manhole session whose namespace holds the daemon's objects and helpers that
    print into this session when their results are ready."""

    def __init__(self, target: ManholeTarget, user: str) -> None:
        super().__init__()
        self._target = target
        self._user = user
        self._connected = False
        self._in_line = False

    def connectionMade(self) -> None:
        self.namespace = manhole_namespace(self._target, self.show)
        self._connected = True
        super().connectionMade()

    def connectionLost(self, reason: Failure) -> None:
        self._connected = False
        _log.info("Manhole session of user {user} ended", user=self._user)
        super().connectionLost(reason)

    def initializeScreen(self) -> None:
        self.terminal.reset()
        self.terminal.write(BANNER.format(jobs=", ".join(sorted(self._target.jobs)) or "none"))
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()

    def terminalSize(self, width: int, height: int) -> None:
        # RecvLine clears the screen on every size report (telnet sends one right after
        # login): that would wipe the banner and any output, so only remember the size.
        self.width, self.height = width, height

    def lineReceived(self, line: bytes) -> None:
        self._in_line = True
        try:
            super().lineReceived(line)
        finally:
            self._in_line = False

    def show(self, text: str) -> None:
        """Write ``text`` into the session: in place while a line runs, else above the
        prompt, which is drawn again below it (nothing once the session is closed)."""
        if self._connected:
            self.addOutput(text, isAsync=not self._in_line)


class ManholeHelpers:
    """``status()``, ``uploads()`` and ``run_job(name)`` for one session: each returns
    at once and ``show``s its result when it is ready."""

    def __init__(self, target: ManholeTarget, show: Callable[[str], None]) -> None:
        self._target = target
        self._show = show

    def status(self) -> None:
        """Per store: health, used/reserved/quota bytes, objects, uploads in progress."""
        snapshot = ensureDeferred(status_snapshot(self._target.metadata, self._target.health))
        self._report("status()", snapshot, lambda found: status_table(found, self._target.reactor.seconds()))

    def uploads(self, limit: int = DEFAULT_UPLOADS_LIMIT) -> None:
        """The multipart uploads in progress, oldest first (at most ``limit``)."""
        if not isinstance(limit, int) or limit < 1:
            self._show("uploads(limit): limit must be a positive integer\n")
            return
        found = self._target.metadata.uploads_initiated_before(_FAR_FUTURE_MS, limit + 1)

        def render(uploads: list[Any]) -> str:
            return uploads_table(uploads[:limit], self._target.reactor.seconds(), more=len(uploads) > limit)

        self._report("uploads()", found, render)

    def cleanup_queue(self, limit: int = DEFAULT_UPLOADS_LIMIT) -> None:
        """The cleanup queue, oldest first (at most ``limit``): bytes awaiting removal."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            self._show("cleanup_queue(limit): limit must be a positive integer\n")
            return
        found = self._target.metadata.list_cleanups(limit + 1)

        def render(entries: list[Any]) -> str:
            return cleanup_table(entries[:limit], self._target.reactor.seconds(), more=len(entries) > limit)

        self._report("cleanup_queue()", found, render)

    def intents(self) -> None:
        """The write intents: writes in flight, and those of dead writers not resolved yet."""

        def render(intents: list[Any]) -> str:
            return intents_table(intents, self._target.reactor.seconds())

        self._report("intents()", self._target.metadata.list_intents(), render)

    def instances(self) -> None:
        """The registered instances (this process and the others sharing the metadata)."""

        def render(instances: list[Any]) -> str:
            return instances_table(instances, self._target.reactor.seconds())

        self._report("instances()", self._target.metadata.list_instances(), render)

    def replication_queue(self, limit: int = DEFAULT_UPLOADS_LIMIT) -> None:
        """The objects waiting for the replicator to make their missing copies, oldest first."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            self._show("replication_queue(limit): limit must be a positive integer\n")
            return
        found = self._target.metadata.replication_queue(limit + 1)

        def render(queued: list[Any]) -> str:
            return replication_table(queued[:limit], self._target.reactor.seconds(), more=len(queued) > limit)

        self._report("replication_queue()", found, render)

    def lost_objects(self, limit: int = DEFAULT_UPLOADS_LIMIT) -> None:
        """The objects with no live copy left (unreadable until overwritten or deleted), oldest first."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            self._show("lost_objects(limit): limit must be a positive integer\n")
            return
        found = self._target.metadata.lost_objects(limit + 1)

        def render(lost: list[Any]) -> str:
            return lost_table(lost[:limit], self._target.reactor.seconds(), more=len(lost) > limit)

        self._report("lost_objects()", found, render)

    def run_job(self, name: str) -> None:
        """Run one background job now (``jobs`` lists them) and say what it did."""
        jobs = self._target.jobs
        job = jobs.get(name)
        if job is None:
            self._show(f"no job named {printable(repr(name))}; jobs: {', '.join(sorted(jobs)) or 'none'}\n")
            return
        self._show(f"running {name}...\n")
        started = time.monotonic()

        def render(result: object) -> str:
            return f"{name}: done in {time.monotonic() - started:.2f} s; {self._describe(job, result)}\n"

        self._report(f"run_job({name!r})", maybeDeferred(job.run_once), render)

    def _describe(self, job: Any, result: object) -> str:
        if isinstance(job, HealthCheckJob):
            states = [
                f"{printable(store)} up" if status.healthy
                else f"{printable(store)} DOWN ({printable(status.last_error or 'no error recorded')})"
                for store, status in self._target.health.snapshot().items()
            ]
            return "stores: " + (", ".join(states) or "none")
        if isinstance(job, MultipartExpiryJob):
            return (f"aborted {result} multipart upload{'s' if result != 1 else ''} older than"
                    f" {format_age(job.expire_after)}")
        return "result: " + printable(repr(result))

    def _report(self, what: str, result: Deferred[_T], render: Callable[[_T], str]) -> None:
        def failed(failure: Failure) -> None:
            _log.failure("Manhole {what} failed", failure, what=what)
            self._show(f"{what} failed: {printable(failure.getErrorMessage())}\n")

        result.addCallback(lambda value: self._show(render(value))).addErrback(failed)


def manhole_namespace(target: ManholeTarget, show: Callable[[str], None]) -> dict[str, Any]:
    """The names a manhole session starts with."""
    helpers = ManholeHelpers(target, show)
    return {
        "service": target,
        "config": target.config,
        "stores": target.stores,
        "metadata": target.metadata,
        "jobs": target.jobs,
        "status": helpers.status,
        "uploads": helpers.uploads,
        "cleanup_queue": helpers.cleanup_queue,
        "intents": helpers.intents,
        "instances": helpers.instances,
        "replication_queue": helpers.replication_queue,
        "lost_objects": helpers.lost_objects,
        "run_job": helpers.run_job,
    }


@implementer(IRealm)
class ManholeRealm:
    """Hands each logged-in telnet user a terminal running an ``OperatorManhole``."""

    def __init__(self, target: ManholeTarget) -> None:
        self._target = target

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        if telnet.ITelnetProtocol not in interfaces:
            raise NotImplementedError("the manhole only speaks telnet")
        if not isinstance(avatarId, bytes):
            raise NotImplementedError("the manhole has no anonymous logins")
        user = printable(avatarId.decode("utf-8", "replace"))
        protocol = TerminalBootstrap(insults.ServerProtocol, OperatorManhole, self._target, user)
        return telnet.ITelnetProtocol, protocol, lambda: None


def manhole_factory(target: ManholeTarget, password_file: str, run_in_thread: ThreadRunner) -> ServerFactory:
    """The telnet server factory: login against ``password_file``, then a manhole."""
    portal = Portal(ManholeRealm(target), [PasswordFileChecker(password_file, run_in_thread)])
    factory = ServerFactory()
    factory.protocol = lambda: telnet.TelnetTransport(LoginProtocol, portal)
    return factory


def check_manhole_config(config: ManholeConfig) -> int:
    """Refuse a password file that cannot be read, is malformed or has no users, with a
    ConfigError naming the key, file and line; return how many users it has."""
    try:
        users = check_password_file(config.password_file)
    except PasswordFileError as error:
        raise ConfigError(f"manhole.password_file: {error}") from None
    return len(users)


def manhole_listener(config: ManholeConfig, target: ManholeTarget, reactor: Any) -> ServerFactory:
    """The factory to listen with on ``config.listen``; ConfigError if the password file is unusable."""
    users = check_manhole_config(config)
    try:
        mode = os.stat(config.password_file).st_mode
    except OSError:
        mode = 0
    if stat.S_IMODE(mode) & 0o077:
        _log.warn("The manhole password file {path} can be read by other users (chmod 600 it)",
                  path=config.password_file)

    def run_in_thread(function: Callable[..., _T], *args: Any) -> Deferred[_T]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)

    factory = manhole_factory(target, config.password_file, run_in_thread)
    _log.info("Manhole (telnet) on {listen}, {users} user{s}", listen=config.listen, users=users,
              s="" if users == 1 else "s")
    return factory
