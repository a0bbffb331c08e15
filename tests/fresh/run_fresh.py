#!/usr/bin/env python3
"""From a stock Debian 12 to a member's `hycan ping`, as README.md tells a newcomer (as root).

1. debootstrap a minbase Debian 12 root into the cache (git-ignored, in this checkout);
2. boot it sharing the host's network (apt and pip need it), clone the checkout into it, run
   README's install command as root; check the daemon did not start (it is socket-activated);
3. power off, boot again with --private-network: the daemon only ever runs in a network
   namespace of its own, never on the host's links;
4. as a new user in group hycan (a fresh login): `hycan ping`, README's "Use it" steps,
   `import hycan` and README's Python snippets with the system /usr/bin/python3;
5. power off and delete the root (also on failure, Ctrl-C, SIGTERM).

Prints every step's command, output, exit status and wall time, then a PASS/FAIL summary;
exits 0 only if every step passed (1 otherwise, 2 for bad usage or a missing host tool,
130 if interrupted). See README.md next to this file.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import container
from container import Machine, Result
from readme_steps import PYTHON, Expect, Readme

CHECKOUT = Path(__file__).resolve().parents[2]
CLONE = "/root/hycan"
MEMBER = "newcomer"
HOSTNAME = "hycan-fresh"
TAIL = 40  # output lines shown per step (all of them are in the step's log file)
TOOLS = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container", "git": "git"}


@dataclass
class Step:
    """One judged step of the run."""

    name: str
    command: str
    expect: str
    status: int | None  # None: not run
    seconds: float
    failure: str | None
    last_line: str = ""


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived."""


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


class Report:
    """Prints each step as it ends and the summary at the end; keeps every output in logs/."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.steps: list[Step] = []

    def step(self, name: str, command: str, expect: Expect, result: Result) -> bool:
        """Judge and print one step; True if it passed."""
        failure = expect.failure(result.status, result.output)
        log = self.logs / f"{len(self.steps) + 1:02d}-{re.sub(r'[^A-Za-z0-9]+', '-', name)}.log"
        log.write_text(f"$ {command}\n{result.output}")
        lines = result.output.rstrip("\n").splitlines()
        print(f"\n== {name}\n{command}", flush=True)
        if len(lines) > TAIL:
            print(f"  ... ({len(lines) - TAIL} earlier lines in {log})")
        for line in lines[-TAIL:]:
            print(f"  | {line}")
        verdict = "PASS" if failure is None else f"FAIL: {failure}"
        print(f"-> exit {result.status} in {result.seconds:.1f} s  [{verdict}]", flush=True)
        last = lines[-1].strip() if lines else ""
        self.steps.append(
            Step(name, command, expect.describe(), result.status, result.seconds, failure, last)
        )
        return failure is None

    def not_run(self, name: str, command: str, why: str) -> None:
        """Record a step that could not run because an earlier one failed."""
        print(f"\n== {name}\n{command}\n-> not run ({why})  [FAIL]", flush=True)
        self.steps.append(Step(name, command, "", None, 0.0, f"not run: {why}"))

    def summary(self, total: float) -> bool:
        """Print the table; True if every step passed."""
        print(f"\n{'=' * 30} fresh Debian 12: summary {'=' * 30}")
        for s in self.steps:
            status = "-" if s.status is None else str(s.status)
            verdict = "PASS" if s.failure is None else "FAIL"
            print(f"{verdict}  exit {status:>3}  {s.seconds:7.1f} s  {s.name}: {s.command}")
            if s.failure:
                print(f"{'':20}{s.failure}")
            if s.failure and s.last_line:
                print(f"{'':20}last output line: {s.last_line}")
        failed = sum(s.failure is not None for s in self.steps)
        ok = failed == 0 and bool(self.steps)
        verdict = "PASS" if ok else f"FAIL ({failed} of {len(self.steps)} steps failed)"
        print(f"{verdict}, {len(self.steps)} steps, {total:.0f} s wall time", flush=True)
        return ok


class FreshRun:
    """The run's steps, in order; each boot's failure stops what depends on it."""

    def __init__(self, args: argparse.Namespace, readme: Readme, report: Report) -> None:
        self.args, self.readme, self.report = args, readme, report
        self.cache: Path = args.cache
        self.root = self.cache / "root"
        self.env = container.host_env(self.cache)
        self.machine: Machine | None = None

    def host(self, name: str, argv: list[str], timeout: float) -> bool:
        """A judged step on the host side (expected exit 0)."""
        result = container.run_host(argv, env=self.env, timeout=timeout)
        return self.report.step(name, "host# " + shlex.join(argv), Expect(0), result)

    def inside(self, name: str, argv: list[str], expect: Expect) -> bool:
        """A judged step inside the running container, as root (not a login)."""
        assert self.machine is not None
        return self.report.step(name, "# " + shlex.join(argv), expect, self.machine.run(argv))

    def login(
        self, name: str, user: str, command: str, expect: Expect, timeout: float = 60
    ) -> bool:
        """A judged step: command in a fresh login shell of user (new groups apply)."""
        assert self.machine is not None
        result = self.machine.run(["runuser", "-l", user, "-c", command], timeout=timeout)
        prompt = "#" if user == "root" else "$"
        return self.report.step(name, f"{user}{prompt} {command}", expect, result)

    def boot(self, name: str, *, private_network: bool, extra: tuple[str, ...] = ()) -> bool:
        """Boot the root; judged as a step."""
        self.machine = Machine(self.root, f"hycan-fresh-{os.getpid()}", self.cache / "console.log")
        argv = self.machine.argv(private_network=private_network, extra=extra)
        command = "host# " + shlex.join(argv)
        result = self.machine.boot(private_network=private_network, timeout=180, extra=extra)
        return self.report.step(name, command, Expect(0), result)

    def poweroff(self) -> None:
        """Stop the current boot, if any (idempotent)."""
        if self.machine is not None:
            result = self.machine.poweroff()
            if result.output != "not running":
                print(f"\n(container powered off in {result.seconds:.1f} s)", flush=True)
            self.machine = None

    def prepare(self) -> bool:
        """debootstrap, CA certificates, the clone of the checkout."""
        container.remove_root(self.root)
        argv = container.debootstrap_argv(self.root, self.args.mirror)
        if not self.host("debootstrap", argv, 900):
            return False
        print(f"copied host CA certificates: {container.copy_host_cas(self.root) or 'none'}")
        container.name_host(self.root, HOSTNAME)
        dirty = subprocess.run(
            ["git", "-C", str(self.args.source), "status", "--porcelain"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if dirty:
            print(f"note: uncommitted changes in {self.args.source} are not in the clone")
        clone = ["git", "clone", "--quiet", str(self.args.source), f"{self.root}{CLONE}"]
        return self.host("clone the checkout", clone, 300)

    def install(self) -> bool:
        """Boot 1 (host network, for apt and pip): README's install command as root, then
        README's setup lines (an admin's apt, a member's venv), none of which start the
        daemon."""
        if not self.boot("boot 1 (host network: install only)", private_network=False):
            return False
        self.inside("trust the host's CAs", ["update-ca-certificates"], Expect(0))
        command = f"cd {CLONE} && {self.readme.install}"
        ok = self.login("README install command", "root", command, Expect(0), 1800)
        # Socket activation: nothing may have started the daemon in the host's namespace.
        never = ["systemctl", "show", "--value", "-p", "ExecMainStartTimestampMonotonic"]
        # The member exists before its setup (a venv from PyPI needs this boot's network).
        self.inside("add a member", ["useradd", "--create-home", MEMBER], Expect(0))
        for n, step in enumerate(self.readme.setup, 1):
            user = "root" if step.as_root else MEMBER
            self.login(f"README setup {n}", user, step.command, Expect(0), 900)
        self.inside(
            "daemon never ran in the host network",
            [*never, "hycan-daemon.service"],
            Expect(0, output="0"),
        )
        self.poweroff()
        return ok

    def member(self) -> None:
        """Boot 2 (private network): the member's steps."""
        if not self.boot("boot 2 (--private-network)", private_network=True):
            return
        assert self.machine is not None
        if not self.machine.private_network():
            raise RuntimeError("boot 2 shares the host's network namespace: not running members")
        vcan = self.args.vcan
        self.inside("join group hycan", ["usermod", "-aG", "hycan", MEMBER], Expect(0))
        self.login("member's groups", MEMBER, "id", Expect(0, ("(hycan)",)))
        self.login("hycan ping", MEMBER, "hycan ping", Expect(0))
        for n, step in enumerate(self.readme.shell_steps, 1):
            self.login(f"Use it, step {n}", MEMBER, step.line, step.expect(vcan))
        importing = f"{PYTHON} -c 'import hycan; print(hycan.__file__)'"
        self.login("import hycan", MEMBER, importing, Expect(0))
        for snippet in self.readme.snippets:
            write = ["runuser", "-u", MEMBER, "--", "sh", "-c", 'cat >"$1"', "sh"]
            path = f"/home/{MEMBER}/{snippet.filename}"
            written = self.machine.run([*write, path], stdin=snippet.source.encode())
            if written.status:
                raise RuntimeError(f"could not write {path}: {written.output}")
            name = f"Python snippet {snippet.number} ({snippet.heading})"
            self.login(name, MEMBER, snippet.command(), snippet.expect(vcan), 120)
        journal = ["journalctl", "--no-pager", "-o", "cat", "-u", "hycan-daemon.service"]
        print("\n== hycan-daemon's journal (shown, not judged)")
        print(self.machine.run(journal).output.rstrip() or "(empty)", flush=True)

    def tests(self) -> None:
        """Boot 3 (--run-tests): README's test command, as root, in the fresh root.

        The suite needs the network (apt, PyPI) and CAP_NET_ADMIN for its own throwaway
        network namespaces, so this boot shares the host's network with that capability:
        the same exposure as CI running the suite on the host itself (the suite never
        touches the links of the namespace it starts in). Its `fresh` session skips inside
        a container.
        """
        extra = ("--capability=CAP_NET_ADMIN",)
        if not self.boot(
            "boot 3 (host network, CAP_NET_ADMIN)", private_network=False, extra=extra
        ):
            return
        command = f"cd {CLONE} && {self.readme.test_command}"
        self.login("README test command", "root", command, Expect(0), 5400)
        self.poweroff()

    def run(self) -> None:
        """Every step; the caller cleans up."""
        if not self.prepare():
            self.report.not_run("install and member steps", self.readme.install, "no Debian root")
        elif not self.install():
            self.report.not_run("member steps", "hycan ping ...", "the install failed")
        else:
            self.member()
            if self.args.run_tests:
                self.poweroff()
                self.tests()

    def clean_up(self) -> None:
        """Power off, delete the root (unless --keep-root)."""
        self.poweroff()
        if self.args.keep_root:
            print(f"\n--keep-root: {self.root} kept (the next run deletes it)")
        else:
            container.remove_root(self.root)
            shutil.rmtree(self.env["TMPDIR"], ignore_errors=True)


def vcan_on_host() -> bool:
    """True if this kernel has vcan (loaded, or a module modprobe finds)."""
    if Path("/sys/module/vcan").exists():
        return True
    probe = ["modprobe", "--dry-run", "--quiet", "vcan"]
    try:
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=CHECKOUT,
        help="checkout to clone into the root and whose README.md is followed "
        "(default: this one; its committed HEAD is what is cloned)",
    )
    parser.add_argument(
        "--cache", type=Path, default=CHECKOUT / ".fresh-cache", help="where the root is built"
    )
    parser.add_argument("--mirror", default=container.debian_mirror(), help="Debian mirror")
    parser.add_argument(
        "--vcan",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether the kernel can make a vcan (default: auto, from the host)",
    )
    parser.add_argument("--keep-root", action="store_true", help="do not delete the root")
    parser.add_argument(
        "--run-tests",
        action="store_true",
        help="also run README's test command (the whole suite, ~10 min) in the fresh root",
    )
    args = parser.parse_args(argv)
    args.source, args.cache = args.source.resolve(), args.cache.resolve()
    args.vcan = vcan_on_host() if args.vcan == "auto" else args.vcan == "yes"
    return args


def lock(cache: Path) -> int | None:
    """A descriptor holding the cache's lock (one run per cache); None if another run has it."""
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def main(argv: list[str] | None = None) -> int:
    """Run everything; 0 if every step passed."""
    args = parse_args(argv)
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        print(f"run_fresh: needs root and: apt-get install {' '.join(missing)}", file=sys.stderr)
        return 2
    readme = Readme.parse((args.source / "README.md").read_text())
    lock_fd = lock(args.cache)
    if lock_fd is None:
        print(f"run_fresh: another run is using {args.cache}", file=sys.stderr)
        return 2
    logs = args.cache / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    (args.cache / "console.log").unlink(missing_ok=True)
    print(f"source {args.source}, mirror {args.mirror}, kernel with vcan: {args.vcan}")
    print(f"install command (README.md): {readme.install}")
    report, start, status = Report(logs), time.monotonic(), 1
    run = FreshRun(args, readme, report)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        run.run()
    except Interrupted as exc:
        print(f"\nrun_fresh: interrupted ({exc}): cleaning up", flush=True)
        report.not_run("the rest of the run", "-", f"interrupted by {exc}")
        status = 130
    except Exception as exc:  # a harness or host problem: still a FAIL with a summary
        traceback.print_exc()
        report.not_run("the rest of the run", "-", f"harness error: {exc!r}")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the clean-up has its own timeouts
        run.clean_up()
        os.close(lock_fd)
    ok = report.summary(time.monotonic() - start)
    print(f"logs: {logs}, console: {args.cache / 'console.log'}")
    return status if status == 130 else (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
