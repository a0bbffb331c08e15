"""Rows, the printed table, the JSON document and the optional plot."""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench._stats import Summary, median

SECTIONS = ("cheap_op", "throughput", "netlink", "startup", "clients")
TITLES = {
    "cheap_op": "1 cheap op",
    "throughput": "2 throughput",
    "netlink": "3 netlink",
    "startup": "4 start-up",
    "clients": "5 clients",
}

# The C++ HyCAN daemon on this kind of machine (issue 7): medians of 10 runs.
CPP_ANCHORS = {
    "failing_op_p50_us": 72.0,
    "failing_op_p99_us": 176.0,
    "veth_toggle_p50_us": 108.0,
    "veth_toggle_p99_us": 250.0,
    "throughput_16x500_ops_s": 21800.0,
    "echo_floor_p50_us": 11.0,
    "echo_throughput_ops_s": 77600.0,
}


@dataclass
class Row:
    """One line of the table: the median over runs of a per-run statistic."""

    section: str
    name: str
    mode: str  # pinned / split / unpinned, or "-" where pinning does not apply
    unit: str  # "us", "ms" or "ops/s"
    median: float
    p99: float | None = None
    ratio: float | None = None  # median over runs of (this / baseline), same run and mode
    baseline: str | None = None
    goal: str = ""
    goal_id: str | None = None
    met: bool | None = None
    note: str = ""
    per_run: list[float] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Results:
    """Everything one benchmark run produced."""

    meta: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    samples: dict[str, list[int]] = field(default_factory=dict)  # for the plot, not the JSON
    primary_mode: str = "pinned"

    def note(self, section: str, text: str) -> None:
        """Attach a remark to a section (printed under the table, stored in the JSON)."""
        self.notes.setdefault(section, []).append(text)

    def goals(self) -> list[dict[str, Any]]:
        """One entry per goal: judged on the primary mode, other modes listed beside it."""
        by_goal: dict[str, list[Row]] = {}
        for row in self.rows:
            if row.goal_id is not None:
                by_goal.setdefault(row.goal_id, []).append(row)
        summary = []
        for goal_id, rows in sorted(by_goal.items()):
            primary = next((row for row in rows if row.mode in (self.primary_mode, "-")), rows[0])
            summary.append(
                {
                    "goal": goal_id,
                    "text": primary.goal,
                    "row": primary.name,
                    "mode": primary.mode,
                    "ratio": primary.ratio,
                    "median": primary.median,
                    "unit": primary.unit,
                    "met": primary.met,
                    "by_mode": {row.mode: row.met for row in rows},
                }
            )
        return summary

    def to_json(self) -> dict[str, Any]:
        """The JSON document (every section present: rows, or the reason it was skipped)."""
        sections: dict[str, Any] = {}
        for section in SECTIONS:
            rows = [asdict(row) for row in self.rows if row.section == section]
            sections[section] = {
                "skipped": self.skipped.get(section),
                "notes": self.notes.get(section, []),
                "rows": rows,
            }
        return {
            "meta": self.meta,
            "primary_mode": self.primary_mode,
            "sections": sections,
            "goals": self.goals(),
            "cpp_anchors": CPP_ANCHORS,
        }


def latency_row(
    section: str,
    name: str,
    mode: str,
    runs: Sequence[Summary],
    *,
    baseline: tuple[str, Sequence[Summary]] | None = None,
    inverse: bool = False,
    goal: str = "",
    goal_id: str | None = None,
    unit: str = "us",
    note: str = "",
) -> Row:
    """A latency row: medians over runs of p50 and p99, ratio to ``baseline`` per run.

    ``inverse`` reports baseline/this instead (how many times faster the baseline is).
    """
    ratio = None
    baseline_name = None
    if baseline is not None:
        baseline_name, base_runs = baseline
        pairs = zip(runs, base_runs, strict=True)
        ratios = [b.p50 / s.p50 if inverse else s.p50 / b.p50 for s, b in pairs]
        ratio = median(ratios)
    scale = 1 / 1000 if unit == "ms" else 1.0
    return Row(
        section=section,
        name=name,
        mode=mode,
        unit=unit,
        median=median([s.p50 for s in runs]) * scale,
        p99=median([s.p99 for s in runs]) * scale,
        ratio=ratio,
        baseline=baseline_name,
        goal=goal,
        goal_id=goal_id,
        note=note,
        per_run=[s.p50 * scale for s in runs],
        summaries=[s.as_dict() for s in runs],
    )


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ops/s":
        return f"{value / 1000:.1f}k/s"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.1f} µs"


def format_table(results: Results) -> str:
    """The markdown table printed at the end (and pasted into docs/perf.md)."""
    header = ["part", "measurement", "mode", "median", "p99", "ratio", "vs", "goal", "met"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for section in SECTIONS:
        if section in results.skipped:
            lines.append(
                f"| {TITLES[section]} | skipped: {results.skipped[section]} | | | | | | | |"
            )
            continue
        for row in (r for r in results.rows if r.section == section):
            met = "-" if row.met is None else ("yes" if row.met else "**no**")
            name = f"{row.name} ({row.note})" if row.note else row.name
            cells = [
                TITLES[section],
                name,
                row.mode,
                _number(row.median, row.unit),
                _number(row.p99, row.unit),
                "-" if row.ratio is None else f"{row.ratio:.2f}x",
                row.baseline or "-",
                row.goal or "-",
                met,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_goals(results: Results) -> str:
    """One line per goal: met or not, on which mode, and the other modes."""
    lines = []
    for goal in results.goals():
        met = {True: "MET", False: "NOT MET", None: "n/a"}[goal["met"]]
        others = ", ".join(
            f"{mode}: {'yes' if ok else 'no'}"
            for mode, ok in goal["by_mode"].items()
            if mode != goal["mode"] and ok is not None
        )
        value = f"{goal['ratio']:.2f}x" if goal["ratio"] is not None else ""
        extra = f" (other modes: {others})" if others else ""
        lines.append(
            f"goal {goal['goal']}: {met} -- {goal['row']} [{goal['mode']}] {value} "
            f"vs {goal['text']}{extra}"
        )
    return "\n".join(lines)


def write_json(results: Results, path: str) -> None:
    """Write the JSON document."""
    with open(path, "w", encoding="utf-8") as out:
        json.dump(results.to_json(), out, indent=2)
        out.write("\n")


def plot(results: Results, path: str) -> str | None:
    """Latency distributions (ECDF) of parts 1 and 3 as a PNG; returns why not, or None."""
    try:  # optional: imported by name so that neither hycan nor mypy depends on it
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib to get the plot)"
    panels = [
        (section, {k: v for k, v in results.samples.items() if k.startswith(section + "/")})
        for section in ("cheap_op", "netlink")
    ]
    panels = [(section, data) for section, data in panels if data]
    if not panels:
        return "no latency samples to plot"
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
    for axis, (section, data) in zip(axes[0], panels, strict=True):
        for key, samples in sorted(data.items()):
            ordered = sorted(samples)
            xs = [value / 1000 for value in ordered]
            ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
            axis.step(xs, ys, where="post", label=key.split("/", 1)[1], linewidth=1.2)
        axis.set_xscale("log")
        axis.set_xlabel("round trip (µs, log scale)")
        axis.set_ylabel("fraction of requests ≤ x")
        axis.set_title(f"{TITLES[section]} latency, mode {results.primary_mode} (ECDF)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small", loc="lower right")
    figure.suptitle(
        f"hycan bench -- {results.meta.get('cpu_model', '?')}, "
        f"{results.meta.get('nproc', '?')} CPUs, kernel {results.meta.get('kernel', '?')}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
