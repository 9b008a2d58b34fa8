"""The benchmark's results as Markdown, and their place in docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SCALE1_TARGETS = {"migrate_seconds": 60.0, "ratio": 2.0, "rss_mb": 200.0, "validate_seconds": 15.0}
SYNC_SHARE_GOAL = 0.10
WINDOW_GOALS = {1.0: 10.0, 10.0: 30.0}
STEP_FLOOR = 0.3


def _s(value: float) -> str:
    return f"{value:.1f} s"


def _spread(summary: dict[str, float]) -> str:
    if summary["runs"] == 1:
        return _s(summary["median"])
    return f"{_s(summary['median'])} ({summary['min']:.1f}–{summary['max']:.1f})"


def _verdict(ok: bool) -> str:
    return "✓ met" if ok else "✗ missed"


def _server_label(result: dict[str, Any]) -> str:
    m = result["machine"]
    settings = m["server_settings"]
    shown = ", ".join(f"{k} {v}" for k, v in settings.items())
    return f"PostgreSQL {m['postgresql']}, {result['server']['description']} ({shown})"


def _server_short(result: dict[str, Any]) -> str:
    settings = result["machine"]["server_settings"]
    return (f"PostgreSQL {result['machine']['postgresql'].split()[0]}, "
            f"{result['server']['description']}; wal_level {settings.get('wal_level', '?')}, "
            f"shared_buffers {settings.get('shared_buffers', '?')}, fsync "
            f"{settings.get('fsync', '?')}, jit {settings.get('jit', '?')}")


def _cpu_cell(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return "–"
    return (f"client {cpu['client_seconds']:.1f} s + server {cpu['server_seconds']:.1f} s "
            f"in {cpu['wall_seconds']:.1f} s: {cpu['utilisation']:.0%} of "
            f"{cpu['cores']:g} cores")


def _catch_up_rows(results: dict[str, dict[str, Any]], scale: float) -> list[str]:
    names = [n for n in results if results[n].get("catch_up")]
    if not names:
        return []
    window_goal = WINDOW_GOALS.get(scale)

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(results[n]["catch_up"]) for n in names) + " |"

    def share(c: dict[str, Any]) -> str:
        value = c["day_sync"]["seconds"] / c["full_seconds"]
        return f"{value:.1%} {'✓' if value <= SYNC_SHARE_GOAL else '✗'}"

    def window(c: dict[str, Any]) -> str:
        value = float(c["cutover"]["result"]["window_seconds"])
        if window_goal is None:
            return _s(value)
        return f"{_s(value)} {'✓' if value <= window_goal else '✗'}"

    def changed(c: dict[str, Any]) -> str:
        per_table = c["day_sync"]["result"].get("changes", {})
        totals = {t: sum(v.get(k, 0) for k in ("inserted", "updated", "deleted"))
                  for t, v in per_table.items()}
        listed = ", ".join(f"{t} {n:,}" for t, n in totals.items() if n)
        return f"{c['day_sync']['result'].get('changed_rows', 0):,} ({listed})"

    lines = ["Catch-up on a live copy of `edu` (bench/catchup.py): a full run, a day of changes "
             "(bench/day_of_changes.sql), a last delta (bench/last_delta.sql) while an "
             "application session keeps writing:", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
             row("full `migrate --all` of the live copy", lambda c: _s(c["full_seconds"])),
             row("first `sync`, nothing changed (builds the mirror's indexes)",
                 lambda c: _s(c["first_sync"]["seconds"])),
             row("legacy rows the day changed (sync's count)", changed),
             row("`sync` of the day", lambda c: _s(c["day_sync"]["seconds"])),
             row(f"sync / full (goal ≤ {SYNC_SHARE_GOAL:.0%})", share),
             row("`cutover --terminate-writers`, whole command",
                 lambda c: _s(c["cutover"]["seconds"])),
             row("cutover rounds before the freeze (rows, seconds)",
                 lambda c: ", ".join(f"{r['rows']:,} in {r['seconds']:.1f} s"
                                     for r in c["cutover"]["result"]["rounds"])),
             row("last delta (rows) and its sync, inside the window",
                 lambda c: f"{c['cutover']['result']['final_rows']:,} rows, "
                           f"{_s(c['cutover']['result']['final_sync_seconds'])}"),
             row("validate, inside the window",
                 lambda c: _s(c["cutover"]["result"]["validation_seconds"])),
             row("downtime window, freeze to validated result"
                 + (f" (goal ≤ {window_goal:g} s)" if window_goal else ""), window),
             row("CPU of the day's sync",
                 lambda c: f"client {c['day_sync']['client_cpu_seconds'] or 0:.1f} s + server "
                           f"{c['day_sync']['server_cpu_seconds'] or 0:.1f} s"),
             ""]
    if any(results[n]["catch_up"].get("fallback") for n in names):
        lines += _fallback_rows(results, names)
    return lines


def _fallback(c: dict[str, Any], *keys: str) -> Any:
    value: Any = c.get("fallback") or {}
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return value


def _fallback_rows(results: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(
            cell(results[n]["catch_up"]) if results[n]["catch_up"].get("fallback") else
            f"failed: {results[n]['catch_up'].get('fallback_error')}" for n in names) + " |"

    def applied(c: dict[str, Any]) -> str:
        per_action = _fallback(c, "result", "applied")
        return ", ".join(f"{action} {sum(tables.values()):,}"
                         for action, tables in per_action.items() if tables)

    return ["Fallback after the cutover (bench/day_on_edu_v2.sql: the applications' day on "
            "edu_v2, then `fallback --yes --terminate-writers` while an application session "
            "keeps re-entering a mark on edu_v2):", "",
            "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
            row("rows the applications wrote on edu_v2",
                lambda c: f"{sum(c['fallback_day'].values()):,}"),
            row("`fallback --yes --terminate-writers`, whole command",
                lambda c: _s(_fallback(c, "seconds"))),
            row("rounds before edu_v2's freeze (rows, seconds)",
                lambda c: ", ".join(f"{r['rows']:,} in {r['seconds']:.1f} s"
                                    for r in _fallback(c, "result", "rounds") or [])),
            row("last delta inside the window (rows)",
                lambda c: f"{_fallback(c, 'result', 'final_rows'):,}"),
            row("legacy rows written to edu", applied),
            row("accounts listed for a password reset on edu",
                lambda c: f"{len(_fallback(c, 'result', 'password_resets') or []):,}"),
            row("fallback window, edu_v2's freeze to edu written",
                lambda c: _s(_fallback(c, "result", "window_seconds"))),
            ""]


def _side_by_side(results: dict[str, dict[str, Any]], scale: float) -> list[str]:
    names = list(results)

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(results[n]) for n in names) + " |"

    def pgloader(r: dict[str, Any]) -> str:
        return _spread(r["pgloader"]) if r["pgloader"] else str(r["pgloader_note"])

    def faster(r: dict[str, Any]) -> str:
        if not r["pgloader"]:
            return "no pgloader result"
        ok = r["migrate"]["median"] < r["pgloader"]["median"]
        return f"{r['migrate']['median'] / r['pgloader']['median']:.2f}× pgloader " \
               f"{'✓' if ok else '✗'}"

    def ratio(r: dict[str, Any]) -> str:
        value = r["ratio_migrate_to_raw"]
        if scale != 1:
            return f"{value:.2f}"
        return f"{value:.2f} {'✓' if value <= SCALE1_TARGETS['ratio'] else '✗'}"

    return ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
            row("server (all settings below)", _server_short),
            row("load average (1 min) when the runs started",
                lambda r: f"{r['load_average']['min']:.1f}–{r['load_average']['max']:.1f}"),
            row("(a) raw copy-through, binary COPY through one client",
                lambda r: _spread(r["raw_copy"])),
            row("(b) `edu-migrate migrate --all` into a fresh edu_v2",
                lambda r: _spread(r["migrate"])),
            row("b/a" + (" (goal ≤ 2.0)" if scale == 1 else ""), ratio),
            row("(c) pgloader, same tables as they are", pgloader),
            row("b against c (goal: faster)", faster),
            row("peak RSS of (b)", lambda r: f"{r['migrate_peak_rss_mb']['max']:.0f} MB"),
            row("CPU of (b)", lambda r: _cpu_cell(r["cpu"]["migrate"])),
            row("CPU of (a)", lambda r: _cpu_cell(r["cpu"]["raw"])),
            row("CPU of (c)", lambda r: _cpu_cell(r["cpu"].get("pgloader"))),
            row("`edu-migrate validate`", lambda r: _spread(r["validate"])),
            row("validate passes", lambda r: "✓" if r["validate_passed"] else "✗ a check failed"),
            row("marks per second, end to end", lambda r: f"{r['marks_per_second']:,.0f}"),
            row("least work: (a) + the marks' tables written once, indexed, keys checked",
                _least_work_cell),
            ""]


def least_work_seconds(result: dict[str, Any]) -> float | None:
    """Raw copy-through plus bench/least_work.py's steps: the time under which `migrate --all`
    cannot go on that server, whatever its rules."""
    steps = result.get("least_work")
    if not steps:
        return None
    return float(result["raw_copy"]["median"]) + sum(float(s["seconds"]) for s in steps)


def _least_work_cell(result: dict[str, Any]) -> str:
    seconds = least_work_seconds(result)
    if seconds is None:
        return "not measured"
    cell = f"{_s(seconds)}"
    if result.get("pgloader"):
        room = float(result["pgloader"]["median"]) - seconds
        cell += f" (pgloader's time leaves {_s(room)} for every rule)" if room > 0 else \
            f" ({_s(-room)} above pgloader's time: faster than pgloader is out of reach)"
    return cell


def _least_work(result: dict[str, Any]) -> list[str]:
    steps = result.get("least_work")
    if not steps:
        return []
    tables = ("`grades` (whose rows carry the marks' crosswalk, schema V026) copied as it is "
              "into an empty table, its indexes built" if not any(
                  "crosswalk_grades" in str(s["step"]) for s in steps) else
              "`grades` and the marks' crosswalk copied as they are into empty tables, their "
              "indexes built")
    lines = [f"The least work (bench/least_work.py, on the last edu_v2): {tables}, the "
             "foreign keys of `grades` validated, one statement at a time, with no parsing, id "
             "derivation or join, with the phases' session settings. Added to raw "
             "copy-through, no engine producing this edu_v2 goes under it on "
             "this server:", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {s['step']} | {float(s['seconds']):.2f} |" for s in steps]
    lines += [f"| total, with raw copy-through | {_s(least_work_seconds(result) or 0)} |", ""]
    return lines


def _profile(result: dict[str, Any]) -> list[str]:
    phases = result["migrate_phases"]
    lines = ["Phases of (b), median seconds (`migration.phase_runs`; run order 1, 3, 2, 4, 5):",
             "", "| " + " | ".join(phases) + " |", "|" + "---|" * len(phases),
             "| " + " | ".join(f"{v:.1f}" for v in phases.values()) + " |", ""]
    profile: dict[str, dict[str, float]] = result.get("migrate_profile") or {}
    if profile:
        lines += [f"Step profile of (b) per phase, median seconds, steps of {STEP_FLOOR} s or "
                  "more (from the run log; a phase's rebuild total includes its rebuild lines):",
                  "", "| phase | step | seconds |", "|---|---|---|"]
        for section, steps in profile.items():
            heavy = sorted(((k, v) for k, v in steps.items() if v >= STEP_FLOOR),
                           key=lambda item: -item[1])
            lines += [f"| {section} | {name} | {seconds:.2f} |" for name, seconds in heavy]
        lines.append("")
    return lines


def _catch_up_profile(result: dict[str, Any]) -> list[str]:
    catch_up = result.get("catch_up")
    if not catch_up:
        return []
    parts = [("the day's `sync`", catch_up["day_sync"]["profile"].get("sync", {})),
             ("the cutover, inside the window",
              catch_up["cutover"]["profile"].get("inside the window", {}))]
    lines = ["Where the catch-up spends its time: the slowest steps of its run logs, seconds "
             "(a `sync: phase N derived again` line includes that phase's own steps; inside the "
             "window the changed rows are counted without per-table times):", "",
             "| command | step | seconds |", "|---|---|---|"]
    for label, steps in parts:
        slowest = sorted(((k, v) for k, v in steps.items() if v >= STEP_FLOOR),
                         key=lambda item: -item[1])[:10]
        lines += [f"| {label} | {name} | {seconds:.2f} |" for name, seconds in slowest]
    lines.append("")
    return lines


def _queries(result: dict[str, Any]) -> list[str]:
    if not result["everyday_queries"]:
        return []
    lines = ["Everyday LMS queries, median of 25 runs after 3 warm-ups (ms); each subject "
             "is the busiest of its kind:", "",
             "| query | edu | edu_v2 | edu_v2 plan uses an index | edu_v2 at least as fast |",
             "|---|---|---|---|---|"]
    for q in result["everyday_queries"]:
        old, new = q["edu"]["median_ms"], q["edu_v2"]["median_ms"]
        lines.append(f"| {q['query']} | {old:.2f} | {new:.2f} | "
                     f"{'yes' if q['edu_v2_uses_index'] else 'NO'} | "
                     f"{'yes' if new <= old else 'NO'} |")
    lines.append("")
    return lines


def _costs(result: dict[str, Any]) -> list[str]:
    costs = result.get("costs")
    if not costs:
        return []
    share = result.get("slow_path_share", 0)
    lines = [f"Per-mark costs on {costs[0]['rows']:,} of the staged marks (one in four by id; "
             f"bench/costs.py; one core, one timed SELECT each; {share:.1%} of the values "
             "miss the parsing fast path):", "", "| piece | stands for | seconds | µs per mark |",
             "|---|---|---|---|"]
    lines += [f"| {c['piece']} | {c['stands_for']} | {c['seconds']:.2f} | "
              f"{c['microseconds_per_row']:.3f} |" for c in costs]
    lines.append("")
    return lines


def _run_of(payload: dict[str, Any], scale: float) -> str:
    """Which run a block comes from, when that run measured more than one scale."""
    run = payload.get("run") or {}
    scales = [float(s) for s in run.get("scales") or []]
    if len(scales) < 2:
        return ""
    others = " and ".join(f"{s:g}" for s in scales if s != scale)
    return f"; one `make bench` run, started {run['started']}, with scale {others}"


def render_markdown(payload: dict[str, Any]) -> str:
    scale = float(payload["scale"])
    results: dict[str, dict[str, Any]] = payload["servers"]
    first = next(iter(results.values()))
    m = first["machine"]
    lines = [f"### Scale {scale:g}: {first['marks']:,} marks, {payload['runs']} "
             f"run{'' if payload['runs'] == 1 else 's'} of each contender per server "
             f"({payload['when']}{_run_of(payload, scale)})", "",
             f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB memory, {m['os']}, "
             f"Python {m['python']}. The machine is shared: compare ratios within one server's "
             "runs (its contenders alternate, so they meet the same load), not absolute times "
             "across days.", ""]
    for reason in payload.get("skipped_servers") or []:
        lines += [f"Server skipped: {reason}.", ""]
    lines += _side_by_side(results, scale)
    if scale == 1:
        lines += ["Goals at scale 1, per server:", "", "| goal | " + " | ".join(results) + " |",
                  "|---|" + "---|" * len(results)]
        for name, check in _goal_checks().items():
            lines.append(f"| {name} | " + " | ".join(check(r) for r in results.values()) + " |")
        lines.append("")
    lines += _catch_up_rows(results, scale)
    lines += [f"Catch-up on {name} failed: {r['catch_up_error']}\n" for name, r in results.items()
              if r.get("catch_up_error")]
    for name, result in results.items():
        lines += [f"#### {name}: {_server_label(result)}", ""]
        lines += _profile(result) + _catch_up_profile(result) + _costs(result) + \
            _least_work(result) + \
            _queries(result)
    return "\n".join(lines)


def _goal_checks() -> dict[str, Any]:
    def migrate(r: dict[str, Any]) -> str:
        value = r["migrate"]["median"]
        return f"{_s(value)} {_verdict(value <= SCALE1_TARGETS['migrate_seconds'])}"

    def ratio(r: dict[str, Any]) -> str:
        value = r["ratio_migrate_to_raw"]
        return f"{value:.2f} {_verdict(value <= SCALE1_TARGETS['ratio'])}"

    def pgloader(r: dict[str, Any]) -> str:
        if not r["pgloader"]:
            return "no pgloader result"
        ok = r["migrate"]["median"] < r["pgloader"]["median"]
        return f"{r['migrate']['median']:.1f} s vs {r['pgloader']['median']:.1f} s " \
               f"{_verdict(ok)}"

    def rss(r: dict[str, Any]) -> str:
        value = r["migrate_peak_rss_mb"]["max"]
        return f"{value:.0f} MB {_verdict(value <= SCALE1_TARGETS['rss_mb'])}"

    def validate(r: dict[str, Any]) -> str:
        value = r["validate"]["median"]
        return f"{_s(value)} {_verdict(value <= SCALE1_TARGETS['validate_seconds'])}"

    return {"b ≤ 60 s": migrate, "b/a ≤ 2.0": ratio, "b faster than c": pgloader,
            "peak RSS ≤ 200 MB": rss, "validate ≤ 15 s": validate}


def update_docs(path: Path, markdown: str, scale: float) -> None:
    """Replace the block of this scale between its markers (appended when absent)."""
    begin, end = f"<!-- bench:scale{scale:g}:begin -->", f"<!-- bench:scale{scale:g}:end -->"
    block = f"{begin}\n{markdown}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
