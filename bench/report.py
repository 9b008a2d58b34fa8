"""The benchmark's results as Markdown, and their place in docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SCALE1_TARGETS = {"migrate_seconds": 60.0, "ratio": 2.0, "rss_mb": 200.0, "validate_seconds": 15.0}


def _s(value: float) -> str:
    return f"{value:.1f} s"


def _spread(summary: dict[str, float]) -> str:
    return f"{_s(summary['median'])} ({summary['min']:.1f}–{summary['max']:.1f})"


def _verdict(ok: bool) -> str:
    return "✓ met" if ok else "✗ missed"


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    scale = result["scale"]
    migrate, raw = result["migrate"], result["raw_copy"]
    rss = result["migrate_peak_rss_mb"]
    pgloader = result["pgloader"]
    lines = [
        f"### Scale {scale:g}: {result['marks']:,} marks, {raw['runs']} "
        f"run{'' if raw['runs'] == 1 else 's'} each "
        f"({result['when']})",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB memory, "
        f"PostgreSQL {m['postgresql']} (the embedded server), Python {m['python']}. "
        f"Load average (1 min) when the runs started: {result['load_average']['min']:.1f}–"
        f"{result['load_average']['max']:.1f} (the machine is shared: compare ratios across "
        "runs, not absolute times across days).",
        "",
        "| contender | median (min–max) | peak RSS | vs raw |",
        "|---|---|---|---|",
        f"| (a) raw copy-through, binary COPY through one client | {_spread(raw)} | – | 1.00 |",
        f"| (b) `edu-migrate migrate --all` into a fresh edu_v2 | {_spread(migrate)} | "
        f"{rss['max']:.0f} MB | {result['ratio_migrate_to_raw']:.2f} |",
    ]
    if pgloader:
        lines.append(f"| (c) pgloader, same tables as they are | {_spread(pgloader)} | "
                     f"{result['pgloader_peak_rss_mb']['max']:.0f} MB | "
                     f"{pgloader['median'] / raw['median']:.2f} |")
    else:
        lines.append(f"| (c) pgloader | {result['pgloader_note']} | – | – |")
    lines += [
        f"| `edu-migrate validate` | {_spread(result['validate'])} | – | – |",
        "",
        f"Marks per second, end to end: {result['marks_per_second']:,.0f}.",
        "",
    ]
    if scale == 1:
        checks = [
            ("b ≤ 60 s", migrate["median"] <= SCALE1_TARGETS["migrate_seconds"],
             _s(migrate["median"])),
            ("b/a ≤ 2.0", result["ratio_migrate_to_raw"] <= SCALE1_TARGETS["ratio"],
             f"{result['ratio_migrate_to_raw']:.2f}"),
            ("b faster than c", bool(pgloader) and migrate["median"] < pgloader["median"],
             f"{migrate['median']:.1f} s vs {pgloader['median']:.1f} s" if pgloader
             else "pgloader not run"),
            ("peak RSS ≤ 200 MB", rss["max"] <= SCALE1_TARGETS["rss_mb"], f"{rss['max']:.0f} MB"),
            ("validate ≤ 15 s", result["validate"]["median"] <= SCALE1_TARGETS["validate_seconds"],
             _s(result["validate"]["median"])),
            ("validate passes", result["validate_passed"], "every check ✓"
             if result["validate_passed"] else "a check failed"),
        ]
        lines += ["| target | measured | |", "|---|---|---|"]
        lines += [f"| {name} | {measured} | {_verdict(ok)} |" for name, ok, measured in checks]
        lines.append("")
    lines += ["Phases of (b), median seconds (`migration.phase_runs`; run order 1, 3, 2, 4, 5):",
              "", "| " + " | ".join(result["migrate_phases"]) + " |",
              "|" + "---|" * len(result["migrate_phases"]),
              "| " + " | ".join(f"{v:.1f}" for v in result["migrate_phases"].values()) + " |", ""]
    heavy = {k: v for k, v in result["migrate_steps"].items() if v >= 0.3}
    if heavy:
        lines += ["Steps of (b) taking 0.3 s or more, median seconds (from the run log):", "",
                  "| step | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.2f} |" for name, seconds in
                  sorted(heavy.items(), key=lambda item: -item[1])]
        lines.append("")
    if result["everyday_queries"]:
        lines += ["Everyday LMS queries, median of 25 runs after 3 warm-ups (ms); each subject "
                  "is the busiest of its kind:", "",
                  "| query | edu | edu_v2 | edu_v2 plan uses an index | edu_v2 at least as fast |",
                  "|---|---|---|---|---|"]
        for q in result["everyday_queries"]:
            old, new = q["edu"]["median_ms"], q["edu_v2"]["median_ms"]
            lines.append(f"| {q['query']} | {old:.2f} | {new:.2f} | "
                         f"{'yes' if q['edu_v2_uses_index'] else 'NO'} | "
                         f"{'yes' if new <= old else 'NO'} |")
        lines.append("")
    return "\n".join(lines)


def update_docs(path: Path, markdown: str, scale: float) -> None:
    """Replace the block of this scale between its markers (appended when absent)."""
    begin, end = f"<!-- bench:scale{scale:g}:begin -->", f"<!-- bench:scale{scale:g}:end -->"
    block = f"{begin}\n{markdown}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
