"""Advice that depends on the system: where the vcan module comes from, here.

Read once from ``/etc/os-release`` and the usual container markers, so a message names what
to do on this machine: Debian ships vcan in its ``linux-image-*`` package (`modprobe vcan`
is enough), Ubuntu in ``linux-modules-extra-*``, and inside a container only the host can
load a kernel module.
"""

from __future__ import annotations

import functools
import os

OS_RELEASE = "/etc/os-release"
_CONTAINER_MARKERS = ("/run/systemd/container", "/.dockerenv", "/run/.containerenv")
_AT_BOOT = "add `vcan` to /etc/modules-load.d/hycan.conf to load it at every boot"


def _os_release() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open(OS_RELEASE, encoding="utf-8") as release:
            for line in release:
                key, sep, value = line.strip().partition("=")
                if sep:
                    fields[key] = value.strip().strip("\"'")
    except OSError:
        pass
    return fields


def _in_container() -> bool:
    return any(os.path.exists(marker) for marker in _CONTAINER_MARKERS)


@functools.cache
def vcan_missing() -> str:
    """What to tell a user whose kernel has no vcan module loaded, on this system."""
    base = "not supported: the vcan kernel module is not loaded"
    if _in_container():
        return (
            f"{base}, and inside a container only the host can load it: on the host run "
            f"`sudo modprobe vcan` ({_AT_BOOT} there)"
        )
    release = _os_release()
    family = {release.get("ID", ""), *release.get("ID_LIKE", "").split()}
    if "ubuntu" in family:
        return (
            f"{base}: run `sudo modprobe vcan`; if it is not found, install it with "
            f"`sudo apt install linux-modules-extra-$(uname -r)` ({_AT_BOOT})"
        )
    if "debian" in family:
        return (
            f"{base}: run `sudo modprobe vcan` (Debian's linux-image package ships it; {_AT_BOOT})"
        )
    return f"{base}: run `sudo modprobe vcan` (your kernel package provides it; {_AT_BOOT})"
