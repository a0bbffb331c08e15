"""What README.md tells a newcomer to type, read from README.md itself, and what should happen.

- the install command: the first command of README's first fenced block, and the test
  command: its second;
- the "Use it" steps: each line of the first ``sh`` block under the "## Use it" heading;
- the setup a user does before using hycan from a program: each line of the ``sh`` blocks
  under the headings in ``SETUP_HEADINGS`` (``sudo`` lines are an admin's, run as root);
- the Python snippets: every ``python`` block, run with the system python3 unless its first
  line says ``# run with: COMMAND`` (e.g. a venv's python).

Expectations follow the README's documented exit statuses (0 success, 1 the daemon refused or the
operation failed, 2 usage error, 3 no daemon answered) on a kernel with or without vcan.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

FENCE = re.compile(r"^```(\w*)\s*$")
USE_IT = "use it"
SETUP_HEADINGS = ("use it from your program", "test can programs without sudo")
RUN_WITH = re.compile(r"^# run with: (.+)$")
# hycan's global options that take a value (`hycan --timeout 5 status vcan0`).
VALUE_OPTIONS = ("--socket", "--timeout")
# Commands that succeed without the vcan: STATUS reports "does not exist", LIST lists the rest.
NO_LINK_NEEDED = ("ping", "status", "list")
VCAN_MISSING_WORDS = ("not supported", "vcan", "module")
PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, the ``##`` heading above it, its text."""

    lang: str
    heading: str
    text: str


@dataclass(frozen=True)
class Expect:
    """An exit status and words (case-insensitive) the output must contain."""

    status: int
    words: tuple[str, ...] = ()
    json_object: bool = False
    output: str | None = None  # the whole output, stripped

    def describe(self) -> str:
        """E.g. ``exit 1, output names 'vcan'``."""
        text = f"exit {self.status}"
        if self.words:
            text += ", output names " + ", ".join(repr(w) for w in self.words)
        if self.json_object:
            text += ", output is one JSON object"
        if self.output is not None:
            text += f", output {self.output!r}"
        return text

    def failure(self, status: int, output: str) -> str | None:
        """Why (status, output) does not meet this expectation, or None if it does."""
        if status != self.status:
            return f"exit {status}, expected {self.status}"
        if self.output is not None and output.strip() != self.output:
            return f"output is not {self.output!r}"
        missing = [w for w in self.words if w.lower() not in output.lower()]
        if missing:
            return "output does not name " + ", ".join(repr(w) for w in missing)
        if self.json_object:
            try:
                parsed = json.loads(output)
            except ValueError:
                return "output is not one JSON object"
            if not isinstance(parsed, dict):
                return "output is JSON but not an object"
        return None


@dataclass(frozen=True)
class ShellStep:
    """One line of the "Use it" block: ``&&``-joined commands, run by the member's shell."""

    line: str
    commands: tuple[tuple[str, ...], ...]

    @classmethod
    def parse(cls, line: str) -> ShellStep:
        """Split a README line into its commands; only ``&&`` joins are understood."""
        words = shlex.split(line, comments=True)
        for word in words:
            if word in ("||", ";", "|", "&") or word.endswith(";"):
                raise ValueError(f"README step uses shell syntax the harness cannot judge: {line}")
        commands: list[tuple[str, ...]] = [()]
        for word in words:
            if word == "&&":
                commands.append(())
            else:
                commands[-1] += (word,)
        if not all(commands):
            raise ValueError(f"README step has an empty command: {line!r}")
        return cls(line.strip(), tuple(commands))

    def expect(self, vcan: bool) -> Expect:
        """The exit status `&&` gives: that of the first command expected to fail, else 0."""
        for argv in self.commands:
            status = hycan_status(argv, vcan)
            if status:
                creates = subcommand(argv) == "create"
                return Expect(status, VCAN_MISSING_WORDS if creates else ())
        single_json = len(self.commands) == 1 and "--json" in self.commands[0]
        return Expect(0, json_object=single_json and self.commands[0][0] == "hycan")


def subcommand(argv: tuple[str, ...]) -> str | None:
    """The hycan subcommand of ``hycan [options] SUBCOMMAND ...``, None for other programs."""
    if not argv or argv[0] != "hycan":
        return None
    words = iter(argv[1:])
    for word in words:
        if word in VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def hycan_status(argv: tuple[str, ...], vcan: bool) -> int:
    """Expected exit status of one command when the README's vcan0 can (not) be created.

    Without vcan, `create` fails (1) and so does every command that acts on the link that
    was never made; `ping` and `status` still succeed. Other programs are expected to succeed.
    """
    command = subcommand(argv)
    if command is None or vcan or command in NO_LINK_NEEDED:
        return 0
    return 1


@dataclass(frozen=True)
class SetupStep:
    """One setup line: an admin's (``sudo ...``, run as root) or the user's own."""

    line: str

    @property
    def as_root(self) -> bool:
        """True for an admin's line."""
        return self.line.startswith("sudo ")

    @property
    def command(self) -> str:
        """The line as its user types it (without ``sudo`` for root)."""
        return self.line.removeprefix("sudo ") if self.as_root else self.line


@dataclass(frozen=True)
class PythonSnippet:
    """A ``python`` block: run as a script, or with pytest if it defines tests."""

    number: int
    heading: str
    source: str

    @property
    def run_with(self) -> str | None:
        """The interpreter command its first line names (``# run with: ...``), if any."""
        match = RUN_WITH.match(self.source.split("\n", 1)[0])
        return match.group(1).strip() if match else None

    @property
    def is_test(self) -> bool:
        """True if the snippet is a pytest module (it defines ``test_*`` functions)."""
        return re.search(r"^def test_\w+\(", self.source, re.MULTILINE) is not None

    @property
    def filename(self) -> str:
        """A file name pytest collects for a test snippet, a plain one otherwise."""
        return f"test_readme_{self.number}.py" if self.is_test else f"readme_{self.number}.py"

    def command(self) -> str:
        """The shell command that runs the snippet's file (the system python3 by default)."""
        runner = self.run_with
        if runner is None:
            runner = f"{PYTHON} -m pytest" if self.is_test else PYTHON
        if self.is_test:
            runner += " -q -p no:cacheprovider"
        return f"{runner} {self.filename}"

    def expect(self, vcan: bool) -> Expect:
        """0; on a kernel without vcan a snippet using one must fail with hycan's NotSupported
        (a test: its vcan fixture errors, naming the missing module)."""
        if vcan or "vcan" not in self.source:
            return Expect(0)
        if self.is_test:
            return Expect(1, ("no vcan for this test", "vcan kernel module"))
        return Expect(1, ("NotSupported", "vcan"))


@dataclass(frozen=True)
class Readme:
    """The newcomer's commands from README.md."""

    install: str
    test_command: str
    shell_steps: tuple[ShellStep, ...]
    setup: tuple[SetupStep, ...]
    snippets: tuple[PythonSnippet, ...]

    @classmethod
    def parse(cls, text: str) -> Readme:
        """Read the install command, the "Use it" steps and the Python snippets."""
        blocks = fenced_blocks(text)
        if not blocks:
            raise ValueError("README.md has no fenced code block (the install command)")
        commands = command_lines(blocks[0].text)
        if len(commands) < 2:
            raise ValueError(
                "README.md's first fenced block needs two commands (install, then test)"
            )
        use_it = [b for b in blocks if b.heading.lower() == USE_IT and b.lang == "sh"]
        if not use_it:
            raise ValueError('README.md has no ```sh block under "## Use it"')
        steps = tuple(ShellStep.parse(line) for line in command_lines(use_it[0].text))
        setup = tuple(
            SetupStep(line.strip())
            for block in blocks
            if block.lang == "sh" and block.heading.lower() in SETUP_HEADINGS
            for line in command_lines(block.text)
        )
        python = [b for b in blocks if b.lang == "python"]
        snippets = tuple(PythonSnippet(n, b.heading, b.text) for n, b in enumerate(python, 1))
        return cls(commands[0], commands[1], steps, setup, snippets)


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block with the ``## `` heading it follows."""
    blocks: list[Block] = []
    heading, lang, body = "", None, list[str]()
    for line in text.splitlines():
        fence = FENCE.match(line)
        if lang is None:
            if line.startswith("## "):
                heading = line[3:].strip()
            elif fence:
                lang, body = fence.group(1), []
        elif fence and not fence.group(1):
            blocks.append(Block(lang, heading, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(line)
    return blocks


def command_lines(text: str) -> list[str]:
    """The non-blank lines of a shell block that are not only a comment, as written."""
    lines = text.splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
