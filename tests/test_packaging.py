"""Package hygiene: a light client import, the generated sync client is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hycan._transport_common import fallback_wanted

ROOT = Path(__file__).resolve().parent.parent


def test_sync_api_imports_neither_trio_nor_pyroute2() -> None:
    code = (
        "import sys, hycan\n"
        "from hycan import Netlink, DaemonClient, HycanError\n"
        "import hycan.cli\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(roots & {'trio', 'pyroute2', 'prctl'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_trio_api_imports_trio_but_not_pyroute2() -> None:
    code = (
        "import sys, hycan\n"
        "hycan.AsyncNetlink\n"
        "print('trio' in sys.modules, 'pyroute2' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_generated_sync_client_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/unasync.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("explicit", "fallback", "env", "expected"),
    [
        (False, None, "", True),
        (True, None, "", False),  # naming a daemon means you want that daemon
        (False, False, "", False),
        (False, True, "1", False),  # HYCAN_NO_FALLBACK=1 wins
        (False, None, "0", True),
    ],
)
def test_fallback_rules(
    monkeypatch: pytest.MonkeyPatch, explicit: bool, fallback: bool | None, env: str, expected: bool
) -> None:
    monkeypatch.setenv("HYCAN_NO_FALLBACK", env)
    assert fallback_wanted(explicit, fallback) is expected


def test_no_fallback_without_cap_net_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    import hycan
    import hycan._caps

    monkeypatch.delenv("HYCAN_NO_FALLBACK")
    monkeypatch.setattr(hycan._caps, "has_cap_net_admin", lambda: False)
    monkeypatch.setattr("hycan._paths.SYSTEM_SOCKET", "/nonexistent/system.sock")
    monkeypatch.setattr("hycan._paths.MANUAL_SOCKET", "/nonexistent/manual.sock")
    with pytest.raises(hycan.DaemonUnavailable):
        hycan.Netlink("vcan0")
