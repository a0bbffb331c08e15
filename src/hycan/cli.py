"""``hycan``: the command-line client.

Exit status: 0 success, 1 the daemon refused or the operation failed, 2 usage error,
3 no daemon answered.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hycan._status import LinkStatus
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


def run(args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    """Perform the command; return (exit status, JSON object, human text)."""
    result: dict[str, Any] = {"command": args.command}
    if args.command != "ping":
        result["name"] = args.name
    try:
        with DaemonClient(args.socket, timeout=args.timeout) as client:
            if args.command == "ping":
                info = client.ping()
                result.update(ok=True, socket=client.socket_path, **info)
                text = (
                    f"hycan-daemon {info['version']} on {client.socket_path} "
                    f"(protocol {info['protocol']}, backend {info['backend']})"
                )
            elif args.command == "status":
                status = client.status(args.name)
                result.update(ok=True, **status.to_dict())
                text = describe(status)
            else:
                text = _call(client, args)
                result.update(ok=True, message=text)
    except (DaemonUnavailable, Timeout) as exc:
        result.update(ok=False, code=exc.code, error=type(exc).__name__, message=exc.message)
        return EXIT_UNAVAILABLE, result, f"hycan: {exc.message}"
    except HycanError as exc:
        code = int(exc.code) if exc.code is not None else None
        result.update(ok=False, code=code, error=type(exc).__name__, message=exc.message)
        return EXIT_FAILED, result, f"hycan: {exc.message}"
    return EXIT_OK, result, text


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hycan``."""
    args = build_parser().parse_args(argv)
    code, result, text = run(args)
    if args.json:
        print(json.dumps(result))
    elif code == EXIT_OK:
        print(text)
    else:
        print(text, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
