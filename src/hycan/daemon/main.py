"""``hycan-daemon``: command line, start-up order, signal handling.

Start-up order matters: bind the socket (or take it from systemd), open the backend, drop
privileges (before any thread exists: capabilities are per thread), and only then start
trio.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pwd
import signal
import sys
from collections.abc import Callable

import trio

from hycan import __version__
from hycan._caps import read_cap_state
from hycan._handler import Handler
from hycan._paths import MANUAL_SOCKET
from hycan.backends.base import Backend
from hycan.daemon import policyfile, systemd
from hycan.daemon.listener import BoundSocket, StartupError, bind_unix
from hycan.daemon.logfmt import LineFormatter
from hycan.daemon.policy import (
    DEFAULT_GROUP,
    DEFAULT_MAX_LINKS,
    AccessPolicy,
    Policy,
    Rules,
)
from hycan.daemon.privileges import PrivilegeError, drop_privileges, unlink_problem
from hycan.daemon.server import Limits, Server

log = logging.getLogger("hycan.daemon")
DEFAULT_POLICY = "/etc/hycan/policy.toml"


def uid_argument(text: str) -> int:
    """A uid for ``--allow-uid``: 0 .. 2**32 - 2 (the kernel's (uid_t)-1 means "none")."""
    try:
        uid = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a uid: {text!r}") from None
    if not 0 <= uid <= 0xFFFFFFFE:
        raise argparse.ArgumentTypeError(f"uid {uid} is outside 0..4294967294")
    return uid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``hycan-daemon`` arguments."""
    parser = argparse.ArgumentParser(
        prog="hycan-daemon",
        description="Serve vcan creation and link up/down to unprivileged local programs.",
    )
    parser.add_argument(
        "socket_path", nargs="?", help=f"socket to listen on (default {MANUAL_SOCKET})"
    )
    parser.add_argument("--socket", dest="socket_opt", metavar="PATH", help="same as SOCKET_PATH")
    parser.add_argument(
        "--backend",
        choices=("netlink", "memory"),
        default="netlink",
        help="netlink: the real kernel (default); memory: a simulated kernel for tests and demos",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log verbosity on stderr (default INFO: one audit line per request)",
    )
    parser.add_argument(
        "--group",
        default=DEFAULT_GROUP,
        help=f"members of this group may use the daemon; it also owns the socket "
        f"(default {DEFAULT_GROUP!r} when it exists; '' for none)",
    )
    parser.add_argument(
        "--allow-uid",
        type=uid_argument,
        action="append",
        default=[],
        metavar="UID",
        help="also admit this uid (repeatable; the socket stays 0660 and gets a POSIX ACL "
        "entry for it; access is still checked per connection from the kernel's peer "
        "credentials)",
    )
    parser.add_argument(
        "--allow-iface",
        action="append",
        default=[],
        metavar="GLOB",
        help="let every admitted peer bring up/down, set the MTU and CAN settings of and "
        "restart the links whose name matches GLOB (repeatable, e.g. 'can*'); shorthand "
        "for a policy rule, placed before the policy file's rules",
    )
    parser.add_argument(
        "--policy",
        metavar="FILE",
        help=f"the policy file (default {DEFAULT_POLICY} when it exists, else the built-in "
        "defaults; '' for the built-in defaults); SIGHUP reloads it",
    )
    parser.add_argument(
        "--check-policy",
        metavar="FILE",
        help="validate FILE, print its rules as the daemon understands them, and exit "
        "(status 0 if valid, 1 if not)",
    )
    parser.add_argument(
        "--admin-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="members of GROUP may change any link the policy covers, whoever owns it "
        "(repeatable; root always may)",
    )
    parser.add_argument(
        "--max-links-per-uid",
        type=int,
        default=DEFAULT_MAX_LINKS,
        metavar="N",
        help="links one uid may own at once (root is exempt; default "
        f"{DEFAULT_MAX_LINKS}; a policy file's max_links_per_uid wins)",
    )
    parser.add_argument(
        "--user",
        metavar="NAME",
        help="run as this user (primary group, no supplementary groups), keeping only "
        "CAP_NET_ADMIN",
    )
    defaults = Limits()
    parser.add_argument(
        "--max-clients",
        type=int,
        default=defaults.max_clients,
        metavar="N",
        help=f"concurrent clients; more are answered 'busy' and closed "
        f"(default {defaults.max_clients})",
    )
    parser.add_argument(
        "--max-clients-per-uid",
        type=int,
        default=defaults.max_clients_per_uid,
        metavar="N",
        help="concurrent connections of one uid (root is exempt); more are answered 'busy' "
        f"and closed (default {defaults.max_clients_per_uid})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        metavar="SECONDS",
        help="close connections that complete no request (or read no reply) this long, "
        f"partial frames or not (default {defaults.idle_timeout:g}; clients reconnect "
        "transparently)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="deadline for the kernel to answer one request (default 5)",
    )
    parser.add_argument(
        "--max-buffer",
        type=int,
        default=defaults.max_buffer,
        metavar="BYTES",
        help=f"bytes buffered per connection (default and minimum {defaults.max_buffer})",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=defaults.grace,
        metavar="SECONDS",
        help="at shutdown, time in-flight requests get to be answered "
        f"(default {defaults.grace:g})",
    )
    parser.add_argument("--version", action="version", version=f"hycan-daemon {__version__}")
    args = parser.parse_args(argv)
    if args.max_buffer < defaults.max_buffer:
        parser.error(f"--max-buffer must be at least {defaults.max_buffer} (one full frame)")
    limits = (args.max_clients, args.max_clients_per_uid, args.idle_timeout, args.request_timeout)
    if min(limits) <= 0 or args.grace < 0 or args.max_links_per_uid < 0:
        parser.error("limits must be positive")
    if args.socket_path and args.socket_opt and args.socket_path != args.socket_opt:
        parser.error("give the socket path once (positional or --socket)")
    args.socket = args.socket_opt or args.socket_path or MANUAL_SOCKET
    return args


def make_backend(kind: str, timeout: float) -> Backend:
    """Open the backend named on the command line."""
    if kind == "memory":
        from hycan.backends.memory import MemoryBackend

        return MemoryBackend()
    # pyroute2's tc module warns at import when /proc/net/psched is unreadable (systemd's
    # ProcSubset=pid): a part of pyroute2 the daemon never uses.
    logging.getLogger("pyroute2.netlink.rtnl.tcmsg.common").setLevel(logging.ERROR)
    from hycan.backends.netlink import NetlinkBackend

    return NetlinkBackend(timeout=timeout)


def obtain_socket(path: str, access: AccessPolicy, user: str | None) -> BoundSocket:
    """The socket systemd passed us, or a freshly bound one at ``path``.

    A bound socket is 0660, owned by the access group (when there is one) and, with
    ``--user``, by that user (so it can remove the socket when it exits); each
    ``--allow-uid`` gets a POSIX ACL entry rather than the socket being opened to all.
    """
    allowed = sorted(access.uids - {0, os.geteuid()})  # the --allow-uid uids
    inherited = systemd.listen_fds()
    if inherited:
        if len(inherited) > 1:
            raise StartupError(f"systemd passed {len(inherited)} sockets; hycan-daemon takes one")
        sock = inherited[0]
        if allowed:
            log.warning(
                "--allow-uid %s: systemd owns the socket, so the daemon cannot give it ACL "
                "entries; add `ExecStartPost=/usr/bin/setfacl -m u:UID:rw %s` to the socket "
                "unit, or those uids cannot connect (see docs/deployment.md)",
                ",".join(map(str, allowed)),
                sock.getsockname(),
            )
        return BoundSocket(sock, str(sock.getsockname()), None)
    owner = None
    if user:
        try:
            owner = pwd.getpwnam(user).pw_uid
        except KeyError:
            raise StartupError(f"--user {user}: no such user") from None
    gid = min(access.gids) if access.gids else None
    return bind_unix(path, mode=0o660, gid=gid, uid=owner, allow_uids=allowed)


def restrict_privileges(args: argparse.Namespace, bound: BoundSocket) -> None:
    """Keep only CAP_NET_ADMIN (must run before trio starts any thread), once sure that the
    restricted daemon can still remove the socket it bound when it exits."""
    if args.backend == "memory" and not args.user and not read_cap_state().permitted:
        return  # an unprivileged demo daemon has nothing to drop
    if bound.inode is not None:
        problem = unlink_problem(bound.path, args.user)
        if problem is not None:
            raise StartupError(
                f"refusing to serve: {problem}. Put the socket in a directory it may write "
                "(e.g. `install -d -o hycan -g hycan -m 0750 /run/hycan`, then --socket "
                "/run/hycan/hycan.sock), or let systemd own the socket (deploy/systemd)"
            )
    state, report = drop_privileges(args.user)
    log.info("privileges: %s (%s)", report, state.describe())


def load_rules(args: argparse.Namespace) -> Rules:
    """The rules the command line asks for: the policy file (``--policy``, else
    /etc/hycan/policy.toml when it exists) or the built-in defaults, with the flags that
    are shorthand for rules. Raises :class:`policyfile.PolicyFileError`."""
    path = args.policy
    if path is None and os.path.exists(DEFAULT_POLICY):
        path = DEFAULT_POLICY
    if path:
        return policyfile.load(
            path,
            allow_iface=args.allow_iface,
            admin_groups=args.admin_group,
            max_links_per_uid=args.max_links_per_uid,
        )
    admins = policyfile.admin_groups_of(args.admin_group)
    return Rules.defaults(args.allow_iface, admins=admins, max_links_per_uid=args.max_links_per_uid)


def reload_policy(handler: Handler, args: argparse.Namespace) -> None:
    """SIGHUP: read the policy again and swap it in at once (the next request of every
    connection is judged by it); a broken file keeps the old policy and says why."""
    try:
        rules = load_rules(args)
    except policyfile.PolicyFileError as exc:
        log.error("policy not reloaded, the old one stays in force: %s", exc)
        return
    handler.policy = Policy(rules, handler.policy.database)
    log.info("policy reloaded from %s: %d rules", rules.source, len(rules.rules))


async def run(
    server: Server, bound: BoundSocket, backend_name: str, reload: Callable[[], None]
) -> None:
    """Serve until SIGINT/SIGTERM (SIGHUP: ``reload``), then stop cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, bound.sock)
            print(
                f"hycan-daemon {__version__}: serving on {bound.path} (backend {backend_name}, "
                f"pid {os.getpid()})",
                flush=True,
            )
            systemd.notify("READY=1")
            async for signum in signals:
                if signum == signal.SIGHUP:
                    systemd.notify("RELOADING=1")
                    reload()
                    systemd.notify("READY=1")
                    continue
                log.info("received %s, shutting down", signal.Signals(signum).name)
                systemd.notify("STOPPING=1")
                server.shutdown()  # serve() returns once clients are done (bounded by grace)
                break


def configure_logging(level: str) -> None:
    """Every record on stderr as one line of the daemon's format (hycan.daemon.logfmt)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())  # one line of printable ASCII per record
    logging.basicConfig(level=level, handlers=[handler])
    logging.raiseExceptions = False  # a log that cannot be written must not cost more
    logging.captureWarnings(True)  # warnings too, as one line each
    # Skip LogRecord work our format never prints (logging HOWTO, "Optimization").
    logging.logThreads = False
    logging.logMultiprocessing = False


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hycan-daemon``."""
    args = parse_args(argv)
    configure_logging(args.log_level)
    try:
        return _serve(args)
    except Exception:  # a bug: one log line with its traceback, not a raw one on stderr
        log.exception("hycan-daemon stopped by an unexpected error")
        return 1
    finally:
        _flush_stderr()


def _flush_stderr() -> None:
    """Flush what logging left in stderr's buffer. If the log cannot take it (a full disk),
    drop it: Python would otherwise turn the daemon's exit status into 120 when its own
    final flush fails."""
    try:
        sys.stderr.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)
        with contextlib.suppress(OSError):
            sys.stderr.flush()


def _serve(args: argparse.Namespace) -> int:
    """Bind, restrict, serve until a signal; the exit status."""
    if args.check_policy is not None:
        return policyfile.check(
            args.check_policy,
            allow_iface=args.allow_iface,
            admin_groups=args.admin_group,
            max_links_per_uid=args.max_links_per_uid,
        )
    try:
        rules = load_rules(args)
    except policyfile.PolicyFileError as exc:
        print(f"hycan-daemon: refusing to serve: {exc}", file=sys.stderr)
        return 1
    log.info("policy: %s (%d rules)", rules.source, len(rules.rules))
    access = AccessPolicy.build(allow_uids=args.allow_uid, group=args.group or None)
    if args.group and not access.gids:
        log.warning("group %r does not exist: only root and listed uids are admitted", args.group)
    try:
        bound = obtain_socket(args.socket, access, args.user)
    except (StartupError, systemd.ListenFdError) as exc:
        print(f"hycan-daemon: {exc}", file=sys.stderr)
        return 1
    try:
        backend = make_backend(args.backend, args.request_timeout)
        restrict_privileges(args, bound)
        requests = Handler(backend, backend_name=args.backend, policy=Policy(rules))
        for name, problem in requests.release_orphans():
            if problem is None:
                log.info("deleted %s: leased by a hycan-daemon that is gone", name)
            else:
                log.warning(
                    "could not delete %s, leased by a hycan-daemon that is gone: %s", name, problem
                )
        limits = Limits(
            max_clients=args.max_clients,
            max_clients_per_uid=args.max_clients_per_uid,
            idle_timeout=args.idle_timeout,
            max_buffer=args.max_buffer,
            grace=args.grace,
        )
        server = Server(requests, access.authorize, limits)
        trio.run(run, server, bound, args.backend, lambda: reload_policy(requests, args))
        # Shut down already: a second SIGTERM must not turn exit 0 into death by signal.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except PrivilegeError as exc:
        print(f"hycan-daemon: refusing to serve: {exc}", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"hycan-daemon: {exc}", file=sys.stderr)
        return 1
    finally:
        bound.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
