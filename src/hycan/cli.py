"""``hycan``: the command-line client.

Exit status: 0 success, 1 the daemon (or the kernel) refused, the operation failed or the
reply was malformed, 2 usage error, 3 no daemon answered in time. ``hycan lease`` and
``hycan run`` exit with their command's status instead (128 + N when a signal N ended it,
127 when it cannot be started).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from hycan._events import LinkEvent
from hycan._lease import lease_and_run, run_in_sandbox
from hycan._status import LinkEntry, LinkStatus, RouteEntry
from hycan._sync.client import DaemonClient
from hycan.errors import DaemonUnavailable, HycanError, InvalidArgument, Timeout

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
        sub = commands.add_parser(name, help=helps[name])
        sub.add_argument("name", help="interface name")
        if name in ("create", "delete", "status"):
            sub.add_argument(
                "--netns",
                metavar="PATH",
                help="in this network namespace (/proc/PID/ns/net, /run/netns/NAME)",
            )
        if name == "create":
            sub.add_argument("--up", action="store_true", help="bring it up at once")
    vxcan = commands.add_parser(
        "vxcan", help="create a vxcan pair: NAME in a namespace, its peer on the host"
    )
    vxcan.add_argument("name", help="the end's name (in --netns)")
    vxcan.add_argument("--peer", required=True, metavar="HOSTNAME", help="the host end's name")
    vxcan.add_argument("--netns", metavar="PATH", help="namespace of NAME (default: the host)")
    vxcan.add_argument(
        "--route-to", metavar="HOSTLINK", help="route the peer both ways to this host link"
    )
    route = commands.add_parser("route", help="CAN gateway routes between host links")
    route.add_argument("action", choices=("add", "del", "list"))
    route.add_argument("src", nargs="?", help="link frames come from")
    route.add_argument("dst", nargs="?", help="link frames go to")
    route.add_argument("--both", action="store_true", help="and back")
    route.add_argument("--can-id", type=lambda v: int(v, 0), help="only this CAN ID (0x123)")
    route.add_argument("--mask", type=lambda v: int(v, 0), help="CAN ID mask (with --can-id)")
    route.add_argument("--fd", action="store_true", help="CAN FD frames instead of classic")
    mtu = commands.add_parser("set-mtu", help="set the MTU (vcan: 16 classic CAN, 72 CAN FD)")
    mtu.add_argument("name", help="interface name")
    mtu.add_argument("mtu", type=int)
    _add_can_commands(commands)
    commands.add_parser("restart", help="restart a CAN controller in bus-off").add_argument(
        "name", help="interface name"
    )
    watch = commands.add_parser(
        "watch",
        help="print link events as they happen (added, removed, up, down, carrier, renamed, "
        "CAN state) until interrupted",
    )
    watch.add_argument("names", nargs="*", metavar="NAME", help="only these links")
    commands.add_parser(
        "doctor", help="check the daemon, your access, the kernel modules and user namespaces"
    )
    commands.add_parser("ping", help="check that the daemon answers; show its version")
    commands.add_parser(
        "list",
        help="the links you may act on (kind, state, owner, lease, what you may do), and "
        "your CAN gateway routes",
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
    sandbox = commands.add_parser(
        "run",
        help="run CMD in its own user + network namespace with its own CAN links",
        description="Run CMD as you, in a fresh user and network namespace holding the "
        "vcans and vxcan ends named (up, leased for CMD's life; each vxcan's host end "
        "routed both ways to HOSTLINK). Exit status: CMD's.",
    )
    sandbox.add_argument("--vcan", action="append", default=[], metavar="NAME")
    sandbox.add_argument(
        "--vxcan", action="append", default=[], metavar="NAME=HOSTLINK", type=_pair
    )
    sandbox.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    return parser


CAN_HELP = (
    "Change a real CAN controller's settings, as `ip link set NAME type can ...` does (the "
    "link must be down for timing and modes). Time each phase by a bitrate (with a sample "
    "point) or by --tq and the three segments. docs/can.md lists every option."
)
# option -> (CanSettings field, type, help)
CAN_OPTIONS: dict[str, tuple[str, Any, str]] = {
    "--bitrate": ("bitrate", int, "nominal bitrate in bit/s"),
    "--sample-point": ("sample_point", float, "e.g. 0.875"),
    "--tq": ("tq", int, "time quantum in ns (with the three segments)"),
    "--prop-seg": ("prop_seg", int, "propagation segment in tq"),
    "--phase-seg1": ("phase_seg1", int, "phase buffer segment 1 in tq"),
    "--phase-seg2": ("phase_seg2", int, "phase buffer segment 2 in tq"),
    "--sjw": ("sjw", int, "synchronisation jump width in tq"),
    "--dbitrate": ("data_bitrate", int, "CAN FD data bitrate in bit/s (with --fd on)"),
    "--dsample-point": ("data_sample_point", float, "CAN FD data sample point"),
    "--dtq": ("data_tq", int, "data phase time quantum in ns"),
    "--dprop-seg": ("data_prop_seg", int, "data phase propagation segment"),
    "--dphase-seg1": ("data_phase_seg1", int, "data phase buffer segment 1"),
    "--dphase-seg2": ("data_phase_seg2", int, "data phase buffer segment 2"),
    "--dsjw": ("data_sjw", int, "data phase synchronisation jump width"),
    "--fd": ("fd", bool, "CAN FD (needs both timings)"),
    "--fd-non-iso": ("fd_non_iso", bool, "Bosch CAN FD instead of ISO"),
    "--listen-only": ("listen_only", bool, "never transmit (not even ACK)"),
    "--loopback": ("loopback", bool, "controller loopback"),
    "--one-shot": ("one_shot", bool, "no retransmission"),
    "--berr-reporting": ("berr_reporting", bool, "report bus errors as error frames"),
    "--triple-sampling": ("triple_sampling", bool, "sample each bit three times"),
    "--presume-ack": ("presume_ack", bool, "ignore missing ACKs"),
    "--cc-len8-dlc": ("cc_len8_dlc", bool, "classic CAN DLCs 9..15"),
    "--tdc-mode": ("tdc_mode", str, "auto, manual or off (CAN FD)"),
    "--tdcv": ("tdcv", int, "TDC value (manual mode)"),
    "--tdco": ("tdco", int, "TDC offset"),
    "--tdcf": ("tdcf", int, "TDC filter window"),
    "--termination": ("termination", int, "termination in ohms (one the controller offers)"),
    "--restart-ms": ("restart_ms", int, "auto-restart delay after bus-off; 0: off"),
}


def _add_can_commands(commands: Any) -> None:
    """``set-can`` and its shorthand ``set-bitrate``."""
    for command, help_text in (
        ("set-can", "set a real CAN controller's bit timing, data phase, modes, TDC, termination"),
        ("set-bitrate", "shorthand for set-can with the bitrate first"),
    ):
        sub = commands.add_parser(command, help=help_text, description=CAN_HELP)
        sub.add_argument("name", help="interface name")
        if command == "set-bitrate":
            sub.add_argument("bitrate", type=int, nargs="?", help="nominal bitrate in bit/s")
        for flag, (key, kind, what) in CAN_OPTIONS.items():
            if not (command == "set-can" or key != "bitrate"):
                continue
            if kind is bool:
                sub.add_argument(flag, dest=key, choices=("on", "off"), help=what)
            else:
                sub.add_argument(flag, dest=key, type=kind, help=what)


def can_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The set-can / set-bitrate options given, as ``set_can()`` keywords."""
    given: dict[str, Any] = {}
    for key, kind, _ in CAN_OPTIONS.values():
        value = getattr(args, key, None)
        if value is not None:
            given[key] = value == "on" if kind is bool else value
    return given


def _pair(text: str) -> tuple[str, str]:
    name, sep, host = text.partition("=")
    if not sep or not name or not host:
        raise argparse.ArgumentTypeError(f"expected NAME=HOSTLINK, not {text!r}")
    return name, host


def _call(client: DaemonClient, args: argparse.Namespace) -> str:
    if args.command == "set-mtu":
        return client.set_mtu(args.name, args.mtu)
    if args.command in ("set-can", "set-bitrate"):
        return client.set_can(args.name, **can_settings(args))
    if args.command == "create":
        return client.create_vcan(args.name, netns=args.netns, up=args.up)
    if args.command == "delete":
        return client.delete(args.name, netns=args.netns)
    if args.command == "vxcan":
        made = client.create_vxcan(args.name, peer=args.peer, netns=args.netns)
        if args.route_to:
            made += "; " + client.add_route(args.peer, args.route_to, both=True)
        return made
    if args.command == "route":
        if args.src is None or args.dst is None:
            raise InvalidArgument(f"hycan route {args.action} needs SRC and DST")
        change = client.add_route if args.action == "add" else client.remove_route
        return change(
            args.src, args.dst, both=args.both, can_id=args.can_id, mask=args.mask, fd=args.fd
        )
    message: str = getattr(client, args.command)(args.name)
    return message


def describe_routes(routes: list[RouteEntry]) -> str:
    """The table ``hycan route list`` prints."""
    lines = ["SRC -> DST  FILTER  FRAMES  HANDLED  DROPPED"]
    for r in routes:
        match = "all" if r.can_id is None else f"{r.can_id:#x}/{r.mask or 0:#x}"
        kind = "fd" if r.fd else "classic"
        lines.append(f"{r.src} -> {r.dst}  {match}  {kind}  {r.handled}  {r.dropped}")
    return "\n".join(lines)


def describe(status: LinkStatus) -> str:
    """One human line for a STATUS result."""
    if not status.exists:
        return f"{status.name}: does not exist"
    state = "up" if status.up else "down"
    line = (
        f"{status.name}: kind {status.kind or '-'}, {state}, operstate {status.operstate}, "
        f"mtu {status.mtu}"
    )
    return line if status.can is None else line + "\n" + describe_can(status.can)


def describe_can(can: dict[str, Any]) -> str:
    """The CAN lines of ``hycan status`` (the ``can`` part of STATUS, docs/can.md)."""
    berr = can.get("berr_counter") or {}
    lines = [
        f"  state {can.get('state') or '-'} (berr-counter tx {berr.get('tx', '-')} "
        f"rx {berr.get('rx', '-')}), restart-ms {can.get('restart_ms')}",
        f"  bitrate {can.get('bitrate')} sample-point {can.get('sample_point') or '-'}",
    ]
    if can.get("fd"):
        lines.append(
            f"  data bitrate {can.get('data_bitrate')} sample-point {can.get('data_sample_point')}"
        )
    lines.append(f"  modes {','.join(can.get('modes') or []) or '-'}")
    if can.get("modes_supported") is not None:
        lines.append(f"  supported {','.join(can['modes_supported']) or '-'}")
    if can.get("terminations_supported"):
        values = ",".join(map(str, can["terminations_supported"]))
        lines.append(f"  termination {can.get('termination')} (offers {values})")
    if can.get("clock"):
        lines.append(f"  clock {can['clock']}")
    if can.get("stats"):
        lines.append("  " + " ".join(f"{key} {value}" for key, value in can["stats"].items()))
    return "\n".join(lines)


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
    if args.command not in ("ping", "list", "route"):
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
                routes = client.routes()
                result.update(
                    ok=True,
                    links=[e.to_dict() for e in entries],
                    routes=[r.to_dict() for r in routes],
                )
                text = describe_entries(entries)
                if routes:
                    text += "\n\n" + describe_routes(routes)
            elif args.command == "route" and args.action == "list":
                routes = client.routes()
                result.update(ok=True, routes=[r.to_dict() for r in routes])
                text = describe_routes(routes)
            elif args.command == "status":
                status = client.status(args.name, netns=args.netns)
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
    if args.command == "run":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("hycan run needs a command: hycan run [--vxcan NAME=HOSTLINK]... -- CMD")
        client = DaemonClient(args.socket, timeout=args.timeout, daemon_uid=args.daemon_uid)
        return run_in_sandbox(client, args.vcan, args.vxcan, cmd, stderr=sys.stderr)
    if args.command == "watch":
        return watch_links(args)
    if args.command == "doctor":
        from hycan._doctor import doctor  # its checks' imports only when asked

        code, result, text = doctor(args.socket, args.timeout, args.daemon_uid)
    else:
        code, result, text = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        report = code == EXIT_OK or args.command == "doctor"  # a report, whatever it says
        emit(text, sys.stdout if report else sys.stderr)
    return code


def describe_event(event: LinkEvent) -> str:
    """One human line for a link event."""
    what = {
        "added": f"added ({event.kind or 'device'})",
        "renamed": f"renamed from {event.old_name}",
        "carrier": f"carrier {'on' if event.carrier else 'off'}",
        "can_state": f"CAN state {event.old_state or '-'} -> {event.state}",
    }.get(event.event, event.event)
    if event.event == "lost":
        return f"({event.lost} events lost: this watcher did not read them in time)"
    return f"{event.name} {what}"


def watch_links(args: argparse.Namespace) -> int:
    """``hycan watch``: print events (``--json``: one object per line) until interrupted."""
    client = DaemonClient(args.socket, timeout=args.timeout, daemon_uid=args.daemon_uid)
    try:
        with client.watch(*args.names) as events:
            watched = ", ".join(args.names) or "every link"
            emit(f"hycan: watching {watched} (Ctrl-C to stop)", sys.stderr)
            sys.stderr.flush()
            for event in events:
                line = event.to_json() if args.json else describe_event(event)
                emit(line, sys.stdout)
                sys.stdout.flush()
    except HycanError as exc:
        emit(f"hycan: {exc.message}", sys.stderr)
        return EXIT_UNAVAILABLE if isinstance(exc, DaemonUnavailable | Timeout) else EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    emit("hycan: the daemon ended the watch (it stopped or restarted)", sys.stderr)
    return EXIT_UNAVAILABLE


def emit(text: str, stream: TextIO) -> None:
    """Print ``text``; what the stream cannot encode (e.g. a lone surrogate from JSON in a
    reply) is written as a backslash escape instead of failing."""
    encoding = stream.encoding or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream)


if __name__ == "__main__":
    sys.exit(main())
