"""The pytest plugin (``hycan.pytest_plugin``), run in inner pytest sessions via pytester.

Each inner session talks to a memory-backend daemon subprocess; inner tests append the vcan
names they got to ``names.txt`` so the outer test can check through the daemon that every
one was deleted.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from hycan import DaemonClient
from tests.conftest import DaemonProcess

pytest_plugins = ["pytester"]


def _plugin_args() -> tuple[str, ...]:
    # Once the `pytest11` entry point is installed pytest loads the plugin itself, and
    # `-p hycan.pytest_plugin` would register the same module a second time.
    installed = any(ep.value == "hycan.pytest_plugin" for ep in entry_points(group="pytest11"))
    return () if installed else ("-p", "hycan.pytest_plugin")


RECORD = """
from pathlib import Path

def record(name):
    with open(Path(__file__).with_name("names.txt"), "a") as f:
        f.write(name + "\\n")
"""


def run_inner(pytester: pytest.Pytester, *args: str, trio: bool = False) -> pytest.RunResult:
    """Run pytest in a subprocess with the plugin loaded (and pytest-trio if ``trio``)."""
    # Leaving out plugins the inner session does not need saves seconds per run.
    unneeded = () if trio else ("-p", "no:trio", "-p", "no:hypothesispytest")
    return pytester.runpytest_subprocess(
        *_plugin_args(),
        *unneeded,
        "-p",
        "no:cacheprovider",
        "-rs",
        "--strict-markers",
        *args,
        timeout=120,
    )


def recorded(pytester: pytest.Pytester) -> list[str]:
    path = pytester.path / "names.txt"
    return path.read_text().split() if path.exists() else []


def assert_all_gone(daemon: DaemonProcess, names: list[str]) -> None:
    with DaemonClient(daemon.path) as client:
        for name in names:
            assert not client.status(name).exists, f"{name} leaked"


@pytest.fixture
def inner_daemon(daemon_process: DaemonProcess, monkeypatch: pytest.MonkeyPatch) -> DaemonProcess:
    """The daemon the inner session finds through $HYCAN_DAEMON_SOCKET."""
    monkeypatch.setenv("HYCAN_DAEMON_SOCKET", daemon_process.path)
    return daemon_process


def test_vcan_is_fresh_up_unique_and_deleted(
    pytester: pytest.Pytester, inner_daemon: DaemonProcess
) -> None:
    pytester.makepyfile(
        RECORD
        + """
from hycan import DaemonClient

def check(vcan, hycan_client):
    assert isinstance(vcan, str) and vcan.startswith("hyc") and len(vcan.encode()) <= 15
    with DaemonClient() as client:  # an independent connection sees it too
        status = client.status(vcan)
    assert status.exists and status.kind == "vcan" and status.up
    assert status.lease is True and vcan in hycan_client.leases  # a killed run leaves none
    assert hycan_client.status(vcan).up
    record(vcan)

def test_one(vcan, hycan_client):
    check(vcan, hycan_client)

def test_two(vcan, hycan_client):
    check(vcan, hycan_client)
"""
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=2)
    names = recorded(pytester)
    assert len(names) == 2 and names[0] != names[1]
    assert_all_gone(inner_daemon, names)


def test_vcan_deleted_even_when_the_test_fails(
    pytester: pytest.Pytester, inner_daemon: DaemonProcess
) -> None:
    pytester.makepyfile(
        RECORD
        + """
from hycan import DaemonClient

def test_fails(vcan):
    record(vcan)
    assert False, "boom"

def test_errors(vcan):
    record(vcan)
    raise RuntimeError("crash")

def test_deletes_it_itself(vcan):
    record(vcan)
    with DaemonClient() as client:
        client.delete(vcan)  # teardown must not trip over the missing link
"""
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, failed=2)
    names = recorded(pytester)
    assert len(set(names)) == 3
    assert_all_gone(inner_daemon, names)


def test_vcan_factory_creates_many_and_deletes_all(
    pytester: pytest.Pytester, inner_daemon: DaemonProcess
) -> None:
    pytester.makepyfile(
        RECORD
        + """
def test_factory(vcan_factory, hycan_client):
    a, b, c = vcan_factory(3)
    [down] = vcan_factory(up=False)
    [classic] = vcan_factory(fd=False)
    [fd] = vcan_factory(fd=True)
    names = [a, b, c, down, classic, fd]
    assert len(set(names)) == 6 and list(vcan_factory.names) == names
    for name in names:
        record(name)
    for name in (a, b, c, classic, fd):
        assert hycan_client.status(name).up
    assert hycan_client.status(down).up is False
    assert hycan_client.status(classic).mtu == 16
    assert hycan_client.status(fd).mtu == 72
    assert hycan_client.status(a).mtu == 72  # the kernel's vcan default
    assert False, "cleanup must still happen"

def test_count_must_be_positive(vcan_factory):
    import pytest
    with pytest.raises(ValueError):
        vcan_factory(0)
"""
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, failed=1)
    names = recorded(pytester)
    assert len(names) == 6
    assert_all_gone(inner_daemon, names)


def test_marker_sets_classic_or_fd_mtu(
    pytester: pytest.Pytester, inner_daemon: DaemonProcess
) -> None:
    pytester.makepyfile(
        """
import pytest

@pytest.mark.hycan_vcan(fd=False)
def test_classic(vcan, hycan_client):
    assert hycan_client.status(vcan).mtu == 16
    assert hycan_client.status(vcan).up

@pytest.mark.hycan_vcan(fd=True)
def test_fd(vcan, hycan_client):
    assert hycan_client.status(vcan).mtu == 72

@pytest.mark.hycan_vcan(bitrate=500000)
def test_bad_marker(vcan):
    pass
"""
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*hycan_vcan takes only fd=*bitrate*"])


ASYNC_TESTS = (
    RECORD
    + """
import pytest
import trio
from hycan import AsyncDaemonClient

async def test_async(async_vcan):
    record(async_vcan)
    async with AsyncDaemonClient() as client:
        status = await client.status(async_vcan)
    assert status.exists and status.kind == "vcan" and status.up

@pytest.mark.hycan_vcan(fd=False)
async def test_async_classic(async_vcan):
    record(async_vcan)
    async with AsyncDaemonClient() as client:
        assert (await client.status(async_vcan)).mtu == 16

async def test_async_fails(async_vcan):
    record(async_vcan)
    raise RuntimeError("crash")

async def test_async_cancelled_nursery(async_vcan, nursery):
    record(async_vcan)
    async def die():
        raise KeyError("background task crashed")
    nursery.start_soon(die)
    await trio.sleep_forever()
"""
)


def test_async_vcan_in_trio_mode(pytester: pytest.Pytester, inner_daemon: DaemonProcess) -> None:
    pytester.makepyfile(ASYNC_TESTS)
    result = run_inner(pytester, "-o", "trio_mode=true", trio=True)
    result.assert_outcomes(passed=2, failed=2)
    names = recorded(pytester)
    assert len(set(names)) == 4
    assert_all_gone(inner_daemon, names)


def test_async_vcan_with_trio_marker(
    pytester: pytest.Pytester, inner_daemon: DaemonProcess
) -> None:
    pytester.makepyfile(
        RECORD
        + """
import pytest

@pytest.mark.trio
async def test_marked(async_vcan):
    record(async_vcan)
"""
    )
    result = run_inner(pytester, trio=True)  # no trio_mode: the marker alone is enough
    result.assert_outcomes(passed=1)
    assert_all_gone(inner_daemon, recorded(pytester))


NEEDS_VCAN = """
import pytest

def test_without_fixtures():
    pass  # the plugin must not need a daemon here

def test_sync(vcan):
    pass

def test_factory(vcan_factory):
    vcan_factory()

@pytest.mark.trio
async def test_async(async_vcan):
    pass
"""


@pytest.fixture
def no_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A socket path nobody serves, named through $HYCAN_DAEMON_SOCKET."""
    path = str(tmp_path / "nobody-here.sock")
    monkeypatch.setenv("HYCAN_DAEMON_SOCKET", path)
    return path


def test_no_daemon_is_a_clear_error_not_a_skip(pytester: pytest.Pytester, no_daemon: str) -> None:
    pytester.makepyfile(NEEDS_VCAN)
    result = run_inner(pytester, trio=True)
    # Sync fixtures error at setup; pytest-trio runs async fixtures inside the test call.
    result.assert_outcomes(passed=1, errors=2, failed=1)
    output = result.stdout.str()
    assert f"hycan: no vcan for this test: no hycan daemon answered on {no_daemon}" in output
    assert "--hycan-skip-unavailable" in output
    assert "skipped" not in output


def test_skip_unavailable_flag(pytester: pytest.Pytester, no_daemon: str) -> None:
    pytester.makepyfile(NEEDS_VCAN)
    result = run_inner(pytester, "--hycan-skip-unavailable", trio=True)
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines([f"SKIPPED*hycan: no vcan for this test: *{no_daemon}*"])


def test_skip_unavailable_ini(pytester: pytest.Pytester, no_daemon: str) -> None:
    pytester.makeini("[pytest]\nhycan_skip_unavailable = true\n")
    pytester.makepyfile(NEEDS_VCAN)
    run_inner(pytester, trio=True).assert_outcomes(passed=1, skipped=3)


def test_missing_vcan_module_is_unavailable_too(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daemon whose kernel lacks vcan (memory backend built with vcan_available=False).
    script = tmp_path / "novcan_daemon.py"
    script.write_text(
        "import sys\n"
        "from hycan.backends import memory\n"
        "from hycan.daemon import main\n"
        "orig = memory.MemoryBackend.__init__\n"
        "def init(self, *, vcan_available=True):\n"
        "    orig(self, vcan_available=False)\n"
        "memory.MemoryBackend.__init__ = init\n"
        "sys.exit(main.main())\n"
    )
    daemon = DaemonProcess(str(tmp_path / "novcan.sock"))
    daemon.argv = [sys.executable, str(script), "--socket", daemon.path, "--backend", "memory"]
    daemon.start()
    try:
        monkeypatch.setenv("HYCAN_DAEMON_SOCKET", daemon.path)
        pytester.makepyfile("def test_sync(vcan):\n    pass\n")
        result = run_inner(pytester)
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*hycan: no vcan for this test: *vcan*"])
        run_inner(pytester, "--hycan-skip-unavailable").assert_outcomes(skipped=1)
    finally:
        daemon.stop()


def test_hycan_socket_option_and_ini(
    pytester: pytest.Pytester, daemon_process: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYCAN_DAEMON_SOCKET", raising=False)
    pytester.makepyfile(
        f"""
def test_socket(vcan, hycan_client):
    assert hycan_client.socket_path == {daemon_process.path!r}
    assert hycan_client.status(vcan).up
"""
    )
    run_inner(pytester, "--hycan-socket", daemon_process.path).assert_outcomes(passed=1)
    link = pytester.path / "daemon.sock"
    link.symlink_to(daemon_process.path)
    pytester.makeini("[pytest]\nhycan_socket = daemon.sock\n")  # relative to the ini file
    pytester.makepyfile(
        """
def test_socket(vcan, hycan_client):
    assert hycan_client.socket_path.endswith("/daemon.sock")
    assert hycan_client.status(vcan).up
"""
    )
    run_inner(pytester).assert_outcomes(passed=1)


def test_plugin_import_is_light() -> None:
    code = (
        "import sys, hycan.pytest_plugin\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(roots & {'trio', 'pyroute2', 'prctl', 'can'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
