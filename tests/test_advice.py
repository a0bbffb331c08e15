"""The vcan-missing advice names what to do on this distribution, or in a container."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hycan import _advice


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    _advice.module_missing.cache_clear()
    yield
    _advice.module_missing.cache_clear()


@pytest.mark.parametrize(
    ("release", "says", "never"),
    [
        ('ID=debian\nVERSION_ID="12"\n', "Debian's linux-image package ships it", "extra"),
        ("ID=ubuntu\nID_LIKE=debian\n", "linux-modules-extra-$(uname -r)", "Debian's"),
        ('ID=linuxmint\nID_LIKE="ubuntu debian"\n', "linux-modules-extra", "Debian's"),
        ("ID=raspbian\nID_LIKE=debian\n", "Debian's linux-image", "extra"),
        ("ID=fedora\n", "your kernel package provides it", "apt"),
        ("", "your kernel package provides it", "apt"),
    ],
)
def test_advice_per_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release: str, says: str, never: str
) -> None:
    path = tmp_path / "os-release"
    path.write_text(release)
    monkeypatch.setattr(_advice, "OS_RELEASE", str(path))
    monkeypatch.setattr(_advice, "in_container", lambda: False)
    message = _advice.module_missing()
    assert message.startswith("not supported: the vcan kernel module is not loaded")
    assert "`sudo modprobe vcan`" in message and says in message and never not in message


def test_in_a_container_the_host_must_load_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_advice, "in_container", lambda: True)
    assert "only the host can load it: on the host run" in _advice.module_missing()
