"""Tests that need a real vcan-capable kernel: they run inside the qemu VM (`nox -s vm`).

Outside the VM (no `HYCAN_IN_VM=1`) collecting them is an error, not a silent skip: the
`tests` session ignores this folder and the `vm` session runs it in the guest.
"""

from __future__ import annotations

import os

import pytest

IN_VM = os.environ.get("HYCAN_IN_VM") == "1"
VCAN_AVAILABLE = os.environ.get("HYCAN_VM_VCAN", "1") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not IN_VM:
        raise pytest.UsageError("tests/vm runs inside the VM: use `nox -s vm`")
    # One boot has the vcan module, the other blacklists it; each runs its own tests.
    wanted = "vcan" if VCAN_AVAILABLE else "no_vcan"
    keep = [item for item in items if item.get_closest_marker(wanted)]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep
