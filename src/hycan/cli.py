"""``hycan``: the command-line client.

Exit status: 0 success, 1 the daemon (or the kernel) refused, the operation failed or the
reply was malformed, 2 usage error, 3 no daemon answered in time. ``hycan lease`` exits
with its command's status instead (128 + N when a signal N ended it, 127 when it cannot be
started).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from hycan._lease import lease_and_run
from hycan._status import LinkEntry, LinkStatus
from hycan._sync.client import DaemonClient
from hycan.errors import DaemonUnavailable, HycanError, Timeout

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
LINK_COMMANDS = ("create", "up", "down", "delete", "status")


def build_parser() -> argparse.ArgumentParser:
    """The ``hycan`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="hycan", description="Create vcan links and bring links up/down through hycan-daemon."
    )
    parser.add_argument("--socket", metavar="PATH", help="daemon socket (default: auto-detect)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for the daemon (default 2)"
    )
    parser.add_argument(
        "--daemon-uid",
        type=int,
        metavar="UID",
        help="also trust a daemon running as UID (root, you and the hycan user always are)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "create": "create a vcan (no-op if it exists)",
        "up": "bring a link up",
        "down": "bring a link down",
        "delete": "delete a vcan",
        "status": "show a link's kind, state and MTU",
    }
    for name in LINK_COMMANDS:
        commands.add_parser(name, help=helps[name]).add_argument("name", help="interface name")
    mtu = commands.add_parser("set-mtu", help="set the MTU (vcan: 16 classic CAN, 72 CAN FD)")
    mtu.add_argument("name", help="interface name")
    mtu.add_argument("mtu", type=int)
    timing = commands.add_parser(
        "set-bitrate", help="set CAN bit timing / CAN FD / restart-ms of a real CAN link"
    )
    timing.add_argument("name", help="interface name")
    timing.add_argument("bitrate", type=int, nargs="?", help="nominal bitrate in bit/s")
    timing.add_argument("--sample-point", type=float, help="e.g. 0.875")
    timing.add_argument("--dbitrate", type=int, help="CAN FD data bitrate in bit/s")
    timing.add_argument("--dsample-point", type=float, help="CAN FD data sample point")
    timing.add_argument("--fd", choices=("on", "off"), help="CAN FD mode")
    timing.add_argument("--restart-ms", type=int, help="auto-restart delay after bus-off")
    commands.add_parser("restart", help="restart a CAN controller in bus-off").add_argument(
        "name", help="interface name"
    )
    commands.add_parser("ping", help="check that the daemon answers; show its version")
    commands.add_parser(
        "list", help="the links you may act on: kind, state, owner, lease, what you may do"
    )
    lease = commands.add_parser(
        "lease",
        help="create vcans (up) for the time CMD runs, then delete them",
        description="Create the vcans (leased, up; CAN FD MTU unless --classic), run CMD "
        "with $HYCAN_VCANS naming them, and delete them when CMD exits. The daemon deletes "
        "them too if hycan itself is killed. Exit status: CMD's.",
    )
    lease.add_argument(
        "--vcan",
        action="append",
        default=[],
        metavar="NAME",
        help="a vcan to create (repeatable; default: one with a random name)",
    )
    lease.add_argument("--classic", action="store_true", help="MTU 16: classic CAN frames only")
    lease.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    return parser


def _call(client: DaemonClient, args: argparse.Namespace) -> str:
    if args.command == "set-mtu":
        return client.set_mtu(args.name, args.mtu)
    if args.command == "set-bitrate":
        return client.set_bitrate(
            args.name,
            args.bitrate,
            sample_point=args.sample_point,
            data_bitrate=args.dbitrate,
            data_sample_point=args.dsample_point,
            fd=None if args.fd is None else args.fd == "on",
            restart_ms=args.restart_ms,
        )
    message: str = getattr(client, args.command)(args.name)
    return message


def describe(status: LinkStatus) -> str:
    """One human line for a STATUS result."""
    if not status.exists:
        return f"{status.name}: does not exist"
    state = "up" if status.up else "down"
    return (
        f"{status.name}: kind {status.kind or '-'}, {state}, operstate {status.operstate}, "
        f"mtu {status.mtu}"
    )


def describe_entries(entries: list[LinkEntry]) -> str:
    """The table ``hycan list`` prints."""
    rows = [("NAME", "KIND", "STATE", "OWNER", "LEASE", "YOU MAY")]
    for e in entries:
        owner = "-" if e.owner is None else (e.owner_name or str(e.owner))
        state = "up" if e.up else "down"
        rows.append(
            (
                e.name,
                e.kind or "-",
                state,
                owner,
                "yes" if e.lease else "no",
                ",".join(e.may) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    )


def run(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    """Perform the command; return (exit status, JSON object, human text)."""
    result: dict[str, Any] = {"command": args.command}
    if args.command not in ("ping", "list"):
        result["name"] = args.name
    try:
        with DaemonClient(args.socket, timeout=args.timeout, daemon_uid=args.daemon_uid) as client:
            if args.command == "ping":
                info = client.ping()
                version, protocol, backend = info["version"], info["protocol"], info["backend"]
                result.update(
                    ok=True,
                    socket=client.socket_path,
                    protocol=protocol,
                    version=version,
                    backend=backend,
                )
                text = (
                    f"hycan-daemon {version} on {client.socket_path} "
                    f"(protocol {protocol}, backend {backend})"
                )
            elif args.command == "list":
                entries = client.list_links()
                result.update(ok=True, links=[e.to_dict() for e in entries])
                text = describe_entries(entries)
            elif args.command == "status":
                status = client.status(args.name)
                result.update(ok=True, **status.to_dict())
                text = describe(status)
            else:
                text = _call(client, args)
                result.update(ok=True, message=text)
    except HycanError as exc:
        result.update(ok=False, code=int(exc.code), error=type(exc).__name__, message=exc.message)
        unavailable = isinstance(exc, DaemonUnavailable | Timeout)
        return EXIT_UNAVAILABLE if unavailable else EXIT_FAILED, result, f"hycan: {exc.message}"
    return EXIT_OK, result, text


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hycan``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "lease":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("hycan lease needs a command: hycan lease [--vcan NAME]... -- CMD")
        client = DaemonClient(args.socket, timeout=args.timeout, daemon_uid=args.daemon_uid)
        return lease_and_run(client, args.vcan, cmd, classic=args.classic, stderr=sys.stderr)
    code, result, text = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        emit(text, sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def emit(text: str, stream: TextIO) -> None:
    """Print ``text``; what the stream cannot encode (e.g. a lone surrogate from JSON in a
    reply) is written as a backslash escape instead of failing."""
    encoding = stream.encoding or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream)


if __name__ == "__main__":
    sys.exit(main())
