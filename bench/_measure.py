"""Pinning a measurement, interleaving its targets, and the raw client's timing loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from bench._client import RawClient
from bench._config import Config
from bench._system import Mode, pin_process, pin_self


@contextlib.contextmanager
def pinned(mode: Mode, pids: Sequence[int]) -> Iterator[None]:
    """Pin the servers (``taskset -a -p``) and this process for one mode; undo after."""
    if mode.server is not None:
        for pid in pids:
            pin_process(pid, mode.server)
    pin_self(mode.client)
    try:
        yield
    finally:
        pin_self(None)
        if mode.server is not None:
            for pid in pids:
                pin_process(pid, None)


def interleaved(
    cfg: Config, targets: dict[str, Callable[[int], list[int]]], count: int
) -> dict[str, list[int]]:
    """Warm every target up, then measure them in rotating blocks (same noise for all)."""
    for measure in targets.values():
        measure(cfg.warmup)
    samples: dict[str, list[int]] = {key: [] for key in targets}
    keys = list(targets)
    per_chunk = max(1, count // cfg.chunks)
    for chunk in range(cfg.chunks):
        shift = chunk % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key] += targets[key](per_chunk)
    return samples


def measurer(client: RawClient, frame: bytes) -> Callable[[int], list[int]]:
    """``count -> samples`` for one client and request frame."""
    return lambda count: client.measure(frame, count)
