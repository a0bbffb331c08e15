"""Order statistics for latency samples (nanoseconds in, microseconds out)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def time_each(call: Callable[[int], object], count: int) -> list[int]:
    """Run ``call(0)`` .. ``call(count - 1)``; each call's duration in nanoseconds."""
    clock = time.perf_counter_ns
    samples = [0] * count
    for i in range(count):
        start = clock()
        call(i)
        samples[i] = clock() - start
    return samples


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of already sorted values."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def median(values: Sequence[float]) -> float:
    """The median (mean of the middle two for an even count)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True, slots=True)
class Summary:
    """Latency summary of one sample set, in microseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def summarize_ns(samples_ns: Sequence[int]) -> Summary:
    """Summarize round-trip times given in nanoseconds."""
    ordered = sorted(samples_ns)
    if not ordered:
        raise ValueError("no samples")
    us = 1000.0
    return Summary(
        n=len(ordered),
        p50=percentile(ordered, 50) / us,
        p90=percentile(ordered, 90) / us,
        p99=percentile(ordered, 99) / us,
        mean=sum(ordered) / len(ordered) / us,
        min=ordered[0] / us,
        max=ordered[-1] / us,
    )
