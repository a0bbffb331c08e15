"""The fresh-root harness's reading of README.md and its expectations (fast, no root)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from hycan import cli
from tests.conftest import InProcessDaemon
from tests.fresh.readme_steps import Expect, PythonSnippet, Readme, ShellStep

README = Readme.parse((Path(__file__).resolve().parents[2] / "README.md").read_text())

SAMPLE = """# x

## Two commands

```sh
# a comment line
sudo deploy/install.sh    # install
sudo scripts/run-tests.sh
```

## Use it

```sh
hycan create vcan0 && hycan up vcan0      # no sudo
hycan --timeout 5 status vcan0
```

```python
from hycan import Netlink
Netlink("vcan0")
```

## Use it from your program

```sh
python3 -m venv ~/v
~/v/bin/pip install hycan
```

```python
# run with: ~/v/bin/python
import hycan
```

## Test CAN programs without sudo

```sh
sudo apt install python3-pytest
```

```python
def test_echo(vcan):
    pass
```

```python
# run with: ~/v/bin/python -m pytest
def test_venv(vcan):
    pass
```
"""


def test_sample_readme_is_read_in_order() -> None:
    readme = Readme.parse(SAMPLE)
    assert readme.install == "sudo deploy/install.sh    # install"
    assert readme.test_command == "sudo scripts/run-tests.sh"
    assert [s.line for s in readme.shell_steps] == [
        "hycan create vcan0 && hycan up vcan0      # no sudo",
        "hycan --timeout 5 status vcan0",
    ]
    assert readme.shell_steps[0].commands == (
        ("hycan", "create", "vcan0"),
        ("hycan", "up", "vcan0"),
    )
    sync, venv, test, venv_test = readme.snippets
    assert (sync.number, sync.heading, sync.is_test) == (1, "Use it", False)
    assert sync.command() == "/usr/bin/python3 readme_1.py"
    assert venv.command() == "~/v/bin/python readme_2.py"
    heading = "Test CAN programs without sudo"
    assert (test.heading, test.is_test, test.filename) == (heading, True, "test_readme_3.py")
    assert test.command() == "/usr/bin/python3 -m pytest -q -p no:cacheprovider test_readme_3.py"
    assert venv_test.command() == "~/v/bin/python -m pytest -q -p no:cacheprovider test_readme_4.py"
    setup = [(step.as_root, step.command) for step in readme.setup]
    assert setup == [
        (False, "python3 -m venv ~/v"),
        (False, "~/v/bin/pip install hycan"),
        (True, "apt install python3-pytest"),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no code at all\n", "no fenced code block"),
        ("```sh\n# only a comment\n```\n", "needs two commands"),
        ("```sh\nsudo deploy/install.sh\n```\n", "needs two commands"),
        ("```sh\nsudo deploy/install.sh\nsudo t.sh\n```\n", 'no ```sh block under "## Use it"'),
    ],
)
def test_a_readme_without_what_the_harness_follows_is_an_error(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Readme.parse(text)


@pytest.mark.parametrize("line", ["hycan up a || true", "hycan up a; hycan down a", "id | cat"])
def test_shell_syntax_other_than_and_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="cannot judge"):
        ShellStep.parse(line)


def test_without_vcan_create_fails_with_the_module_message_and_stops_the_line() -> None:
    step = ShellStep.parse("hycan create vcan0 && hycan up vcan0")
    assert step.expect(vcan=False) == Expect(1, ("not supported", "vcan", "module"))
    assert step.expect(vcan=True) == Expect(0)


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("hycan --timeout 5 status vcan0", 0),  # "vcan0: does not exist"
        ("hycan --socket /run/x.sock ping", 0),
        ("hycan down vcan0 && hycan delete vcan0", 1),
        ("id", 0),
    ],
)
def test_without_vcan_only_commands_that_need_no_link_succeed(line: str, status: int) -> None:
    assert ShellStep.parse(line).expect(vcan=False).status == status


def test_json_status_must_print_one_object() -> None:
    expect = ShellStep.parse("hycan --json status vcan0").expect(vcan=True)
    assert expect.failure(0, '{"ok": true}\n') is None
    assert expect.failure(0, "[1]") == "output is JSON but not an object"
    assert expect.failure(0, "vcan0: does not exist") == "output is not one JSON object"


def test_expect_names_status_then_missing_words_then_exact_output() -> None:
    expect = Expect(1, ("NotSupported", "vcan"))
    assert expect.failure(0, "NotSupported vcan") == "exit 0, expected 1"
    assert expect.failure(1, "ModuleNotFoundError: No module named 'hycan'") == (
        "output does not name 'NotSupported', 'vcan'"
    )
    assert expect.failure(1, "hycan.errors.NotSupported: the VCAN module") is None
    assert Expect(0, output="0").failure(0, "12\n") == "output is not '0'"


def test_a_python_snippet_using_a_vcan_must_fail_with_not_supported_without_one() -> None:
    uses = PythonSnippet(1, "Use it", 'Netlink("vcan0")\n')
    assert uses.expect(vcan=False) == Expect(1, ("NotSupported", "vcan"))
    assert uses.expect(vcan=True) == Expect(0)
    assert PythonSnippet(2, "Use it", "import hycan\n").expect(vcan=False) == Expect(0)
    test = PythonSnippet(3, "Test", "def test_x(vcan):\n    pass\n")
    assert test.expect(vcan=False) == Expect(1, ("no vcan for this test", "vcan kernel module"))


def test_the_real_readme_gives_an_install_command_steps_and_snippets() -> None:
    assert "deploy/install.sh" in README.install
    assert any(c[:1] == ("hycan",) for step in README.shell_steps for c in step.commands)
    assert README.snippets and README.setup


def test_the_readme_names_the_wheel_of_this_version() -> None:
    import hycan

    wheel = f"/usr/local/share/hycan/wheels/hycan-{hycan.__version__}-py3-none-any.whl"
    assert any(wheel in step.line for step in README.setup)


def run_line(step: ShellStep, socket: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The line as `&&` runs it, with the real CLI against the in-process daemon."""
    status, output = 0, ""
    for argv in step.commands:
        assert argv[0] == "hycan", "README's Use-it steps are hycan commands"
        status = cli.main(["--socket", socket, *argv[1:]])
        captured = capsys.readouterr()
        output += captured.out + captured.err
        if status:
            break
    return status, output


@pytest.mark.parametrize("vcan", [True, False], ids=["vcan", "no-vcan"])
@pytest.mark.parametrize("step", README.shell_steps, ids=lambda s: s.line.split("#")[0].strip())
async def test_the_model_agrees_with_the_cli_on_each_readme_step(
    daemon: InProcessDaemon, capsys: pytest.CaptureFixture[str], step: ShellStep, vcan: bool
) -> None:
    daemon.backend.vcan_available = vcan
    if vcan:  # the steps before this one made vcan0 (up), as in the README's order
        for earlier in README.shell_steps[: README.shell_steps.index(step)]:
            await trio.to_thread.run_sync(run_line, earlier, daemon.path, capsys)
    status, output = await trio.to_thread.run_sync(run_line, step, daemon.path, capsys)
    assert step.expect(vcan).failure(status, output) is None, (status, output)
