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
_MODULES_LOAD = "/etc/modules-load.d/hycan.conf"


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


def in_container() -> bool:
    return any(os.path.exists(marker) for marker in _CONTAINER_MARKERS)


@functools.cache
def module_missing(module: str = "vcan") -> str:
    """What to tell a user whose kernel has the CAN ``module`` (vcan, vxcan, can-gw) not
    loaded, on this system."""
    base = f"not supported: the {module} kernel module is not loaded"
    at_boot = f"add `{module}` to {_MODULES_LOAD} to load it at every boot"
    load = f"`sudo modprobe {module}`"
    if in_container():
        return (
            f"{base}, and inside a container only the host can load it: on the host run "
            f"{load} ({at_boot} there)"
        )
    release = _os_release()
    family = {release.get("ID", ""), *release.get("ID_LIKE", "").split()}
    if "ubuntu" in family:
        return (
            f"{base}: run {load}; if it is not found, install it with "
            f"`sudo apt install linux-modules-extra-$(uname -r)` ({at_boot})"
        )
    if "debian" in family:
        return f"{base}: run {load} (Debian's linux-image package ships it; {at_boot})"
    return f"{base}: run {load} (your kernel package provides it; {at_boot})"
