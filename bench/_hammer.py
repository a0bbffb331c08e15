"""Part 3 helper: another client that toggles a link through the daemon without pause.

``python -m bench._hammer SOCKET IFACE`` connects once and brings ``IFACE`` up and down
until it is killed; the bench stops and continues it (SIGSTOP/SIGCONT) to measure a
PING with and without it in rotating blocks (head-of-line blocking, issue 18).
"""

from __future__ import annotations

import sys

import hycan


def main(argv: list[str] | None = None) -> int:
    """Entry point: toggle until killed."""
    path, iface = argv if argv is not None else sys.argv[1:]
    with hycan.DaemonClient(path, timeout=30) as client:
        while True:
            client.up(iface)
            client.down(iface)


if __name__ == "__main__":
    sys.exit(main())
