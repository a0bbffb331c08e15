"""The C reference of the C++ HyCAN daemon's design (``oneshot_daemon.c``).

The issue's C++ anchors were measured on another machine; this reference is measured here,
in the same run: a single-threaded C server that takes one request per connection and
opens a netlink socket per operation, driven the way the C++ client drives its daemon
(connect, send, read one reply, close). Built with the system's C compiler at
benchmark time; never installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from bench._client import response_length

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
    """One call the C++ client's way: a new connection, the frame, the reply, close. Like
    the C++ client it reads one byte first and stops there on success (0x01: the C++
    daemon's whole success reply; hycan's 4-byte header starts with it); a failure is read
    to its end. Works against both daemons."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(frame)
        data = b""
        while data[:1] != b"\x01" and response_length(data) is None:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"{path} closed the connection mid-response")
            data += chunk
    return data
