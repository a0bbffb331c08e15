"""Workers: subprocesses that print ``ready``, then answer one line per command."""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from bench._system import reap

WORKER_TIMEOUT = 120.0  # seconds any single worker answer may take before we give up


class Worker:
    """A subprocess speaking a line protocol: it prints ``ready``, then one line per command."""

    def __init__(self, argv: Sequence[str]) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,  # a file, not a pipe: a chatty worker never blocks
            text=True,
        )

    def _line(self, timeout: float) -> str:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        if not line:
            self.stop()
            self._stderr.seek(0)
            err = self._stderr.read().strip()[-500:]
            raise RuntimeError(f"worker {self.proc.args!r} gave no answer: {err}")
        return line

    def wait_ready(self, timeout: float = WORKER_TIMEOUT) -> None:
        """Block until the worker printed ``ready``."""
        line = self._line(timeout)
        if line.strip() != "ready":
            raise RuntimeError(f"worker said {line!r} instead of ready")

    def send(self, command: str) -> None:
        """Write one command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = WORKER_TIMEOUT) -> Any:
        """Read one JSON answer line."""
        return json.loads(self._line(timeout))

    def measurer(self, cpus: str) -> Callable[[int], list[int]]:
        """For an ``_nlworker``: run ``count`` toggles pinned to ``cpus`` ("-": unpinned)."""

        def measure(count: int) -> list[int]:
            self.send(f"{count + count % 2} {cpus}")
            samples: list[int] = self.answer()
            return samples

        return measure

    def stop(self, timeout: float = 10.0) -> None:
        """Close stdin (the worker's cue to exit); kill it if it does not."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        reap(self.proc, timeout)

    def close_log(self) -> None:
        """Release the stderr file (after ``stop``)."""
        self._stderr.close()


@contextlib.contextmanager
def workers(argvs: Sequence[Sequence[str]]) -> Iterator[list[Worker]]:
    """Start workers; every one is stopped on exit."""
    started: list[Worker] = []
    try:
        for argv in argvs:
            started.append(Worker(argv))
        yield started
    finally:
        for worker in started:
            worker.stop()
            worker.close_log()
