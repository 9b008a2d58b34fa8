"""The report's plots, drawn with matplotlib (Agg) as SVG text to inline in the page.

Text stays text (svg.fonttype 'none'), so the page's system font draws it and it can be searched
and copied; nothing is fetched when the page opens.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from edu_migrate.report.facts import MARK_BINS, MarkDistribution, PhaseTiming

OLD_COLOUR = "#c3ccd6"
NEW_COLOUR = "#1f6feb"
INK = "#24292f"
MUTED = "#57606a"
PHASE_COLOURS = {1: "#1f6feb", 2: "#8250df", 3: "#1a7f37", 4: "#bf8700", 5: "#cf222e"}

STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["system-ui", "Segoe UI", "Helvetica", "Arial", "DejaVu Sans"],
    "font.size": 10,
    "text.color": INK,
    "axes.edgecolor": "#d0d7de",
    "axes.labelcolor": MUTED,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
}


@contextmanager
def _figure(name: str, width: float, height: float,
            layout: str | None = "constrained") -> Iterator[tuple[Figure, list[str]]]:
    """A figure in the report's style; its SVG lands in the yielded list. Each figure gets its
    own hash salt, so ids inside several inlined SVGs never collide."""
    svg: list[str] = []
    style: Any = STYLE | {"svg.hashsalt": name}
    with plt.rc_context(style):
        figure = plt.figure(figsize=(width, height), layout=layout)
        try:
            yield figure, svg
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", transparent=True)
        finally:
            plt.close(figure)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    svg.append(re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"',
                      rf'<svg \1class="plot" role="img" aria-label="{name}"', text, count=1))


def _label(phase: PhaseTiming) -> str:
    return f"{phase.number} · {phase.title.lower()}"


def _compact(value: float, _: object) -> str:
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def phase_timings(phases: list[PhaseTiming]) -> str:
    """Seconds per phase, in run order."""
    done = [p for p in phases if p.seconds is not None]
    with _figure("Seconds per phase", 6.2, 0.55 * max(len(done), 1) + 0.9) as (figure, svg):
        axes = figure.subplots()
        labels = [_label(p) for p in done]
        seconds = [p.seconds or 0.0 for p in done]
        bars = axes.barh(labels, seconds, color=[PHASE_COLOURS.get(p.number, NEW_COLOUR)
                                                 for p in done], height=0.6)
        axes.bar_label(bars, labels=[f"{s:,.1f} s" for s in seconds], padding=4, color=INK)
        axes.invert_yaxis()
        axes.set_xlabel("seconds")
        axes.set_xlim(0, max(seconds or [1.0]) * 1.18)
        axes.set_title("Time per phase")
    return svg[0]


def rows_per_phase(phases: list[PhaseTiming]) -> str:
    """Rows written per phase on a log scale: 3 million marks beside a dozen terms."""
    done = [p for p in phases if p.rows]
    with _figure("Rows per phase", 6.2, 0.55 * max(len(done), 1) + 0.9) as (figure, svg):
        axes = figure.subplots()
        labels = [_label(p) for p in done]
        totals = [p.rows_written for p in done]
        bars = axes.barh(labels, totals, color=[PHASE_COLOURS.get(p.number, NEW_COLOUR)
                                                for p in done], height=0.6, log=True)
        axes.bar_label(bars, labels=[f"{n:,}" for n in totals], padding=4, color=INK)
        axes.invert_yaxis()
        axes.set_xlim(1, max(totals or [10]) * 30)
        axes.xaxis.set_major_formatter(FuncFormatter(_compact))
        axes.set_xlabel("rows written (log scale)")
        axes.set_title("Rows per phase")
    return svg[0]


def marks_distribution(marks: list[MarkDistribution]) -> str:
    """Per mark type, the legacy marks (grey, wide) against the migrated ones (blue, narrow),
    as a share of the type's maximum: equal distributions show blue bars centred in grey."""
    # A fixed layout: the constrained engine costs seconds on six panels.
    with _figure("Marks, old against new", 10.5, 5.6, layout=None) as (figure, svg):
        grid = figure.subplots(2, 3, sharex=True, gridspec_kw={
            "left": 0.055, "right": 0.975, "top": 0.93, "bottom": 0.09,
            "wspace": 0.2, "hspace": 0.32})
        width = 1 / MARK_BINS
        centres = [(i + 0.5) * width for i in range(MARK_BINS)]
        for axes, mark in zip(grid.flat, marks, strict=False):
            old_total = max(mark.old_marks, 1)
            new_total = max(mark.new_marks, 1)
            axes.bar(centres, [n / old_total for n in mark.old_bins], width=width * 0.92,
                     color=OLD_COLOUR, label="legacy edu")
            axes.bar(centres, [n / new_total for n in mark.new_bins], width=width * 0.42,
                     color=NEW_COLOUR, label="edu_v2")
            axes.set_title(f"{mark.assessment_type.replace('_', ' ')} · 0–{mark.max_score}")
            axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            axes.set_xlim(0, 1)
            axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            axes.set_title("✓ identical" if mark.same else "✗ differs", loc="right",
                           fontsize=9, fontweight="normal",
                           color="#1a7f37" if mark.same else "#cf222e")
        for axes in grid[1]:
            axes.set_xlabel("mark as a share of its maximum")
        grid[0][0].legend(loc="upper left", frameon=False, fontsize=8.5)
    return svg[0]
