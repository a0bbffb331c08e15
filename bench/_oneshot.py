"""The C reference of the C++ HyCAN daemon's design (``oneshot_daemon.c``).

The issue's C++ anchors were measured on another machine; this reference is measured here,
in the same run: a single-threaded C server that takes one request per connection and
opens a netlink socket per operation, driven the way the C++ client drives its daemon
(connect, send, read the reply to EOF, close). Built with the system's C compiler at
benchmark time; never installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("oneshot_daemon.c")


def build(workdir: str) -> tuple[str | None, str | None]:
    """Compile the reference: (its path, None), or (None, why it cannot be built)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "needs a C compiler (cc) to build the C reference of the C++ design"
    binary = os.path.join(workdir, "oneshot_daemon")
    built = subprocess.run(
        [compiler, "-O2", "-o", binary, str(SOURCE)], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        return None, f"building the C reference failed: {built.stderr.strip()[-300:]}"
    return binary, None


def roundtrip(path: str, frame: bytes, timeout: float = 10.0) -> bytes:
    """One call the C++ way: a new connection, the frame, the reply read to EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(frame)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)
