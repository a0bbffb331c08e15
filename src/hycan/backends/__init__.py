"""Backends: the kernel-facing side of hycan behind one small interface.

``MemoryBackend`` (a simulated kernel, no privileges) is importable from here;
``NetlinkBackend`` lives in :mod:`hycan.backends.netlink` so that importing this package
never pulls in pyroute2.
"""

from hycan.backends.base import Backend, LinkStatus
from hycan.backends.memory import MemoryBackend

__all__ = ["Backend", "LinkStatus", "MemoryBackend"]
