"""The lab's outputs: a rich table with a one-line verdict per strategy, ``report.json`` and a
self-contained HTML report (inline SVG).

Latency is reported twice, on purpose: the **steady-state** latency of the events no fault disturbed,
and the **recovery** after each fault (the longest wait among the events it disturbed; see
``lab.recovery``). One figure over both would tell a newcomer that a relay takes seconds to publish,
when it takes milliseconds and seconds only to come back after a crash.

The HTML has no script and no network reference: it renders the same from a file, offline, in
any browser (the tests render it in headless Chromium).
"""

from __future__ import annotations

import html
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from outboxkit.lab.advice import duration, recommend
from outboxkit.lab.runner import LabRun, StrategyRun
from outboxkit.lab.verify import percentile
from outboxkit.stores.registry import database_for, database_named

COLUMNS = (
    ("strategy", "strategy"),
    ("committed", "committed"),
    ("lost", "lost"),
    ("invented", "phantom"),
    ("duplicates", "duplicates"),
    ("out of order", "order_violations"),
    ("steady p50", "steady_p50_ms"),
    ("steady p99", "steady_p99_ms"),
    ("worst wait after a fault", "recovery_max_ms"),
    ("request p50", "write_p50_ms"),
    ("ev/s", "throughput"),
)
_LATENCIES = ("steady_p50_ms", "steady_p99_ms", "recovery_max_ms", "write_p50_ms")
CAPTION = (
    "lost: committed, never on the bus; invented: on the bus, never committed; steady: commit to bus for"
    " the events no fault disturbed; worst wait after a fault: the longest an event waited because of one;"
    " request: the write as the service sees it"
)
_BAD = ("lost", "phantom", "order_violations")
_ANOMALIES = ("lost", "phantom", "duplicates", "order_violations")


def verdict(run: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """One line: what it loses, what it duplicates or invents, what it costs the writer, when to choose it."""

    def where(field: str) -> str:
        kinds = sorted({f["kind"] for f in run["per_fault"] if f[field]})
        return f" (at {', '.join(kinds)})" if kinds else ""

    lost = f"loses {run['lost']}{where('lost')}" if run["lost"] else "loses nothing"
    bad = [f"{run['phantom']} phantom{where('phantom')}"] if run["phantom"] else []
    if run["order_violations"]:
        bad.append(f"{run['order_violations']} out of order{where('order_violations')}")
    dups = f"{run['duplicates']} duplicates seen" if run["duplicates"] else "no duplicates seen"
    cheapest = min((r["write_p50_ms"] for r in runs if r["write_p50_ms"] is not None), default=None)
    cost = "writer cost unknown"
    if run["write_p50_ms"] is not None:
        cost = f"writer p50 {_cell(run['write_p50_ms'])} ms"
        if cheapest and run["write_p50_ms"] > cheapest * 1.2:
            cost += f" ({run['write_p50_ms'] / cheapest:.1f}x the cheapest)"
    slowest = max(
        (f for f in run["per_fault"] if f.get("recovery_ms") is not None), key=lambda f: f["recovery_ms"], default=None
    )
    back = []
    if slowest is not None and slowest["recovery_ms"] >= 1:
        back = [f"events waited up to {slowest['recovery_ms'] / 1000:.1f} s after a fault ({slowest['kind']})"]
    choose = f"; choose it {run['choose']}" if run.get("choose") else ""
    return f"{run['strategy']}: {'; '.join([lost, *bad, dups, cost, *back])}{choose}."


def cell(run: dict[str, Any], field: str) -> str:
    """A table cell as a newcomer reads it: latencies with their unit, and "before commit" for the
    events the broker stored before their COMMIT returned (early, not a fast 0 ms)."""
    value = run[field]
    if field in _LATENCIES:
        if field != "write_p50_ms" and run.get("stored_before_commit") and not value:
            return "before commit"
        return duration(value)
    return _cell(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return str(value)


def table(runs: list[StrategyRun], title: str = "outboxkit lab") -> Table:
    t = Table(title=title, caption=CAPTION)
    for label, _ in COLUMNS:
        t.add_column(label, justify="left" if label == "strategy" else "right", no_wrap=label == "strategy")
    for run in runs:
        d = run.as_dict()
        cells = []
        for _, field in COLUMNS:
            text = cell(d, field)
            if field in _BAD or field == "duplicates":
                style = "bold red" if d[field] and field in _BAD else "yellow" if d[field] else "green"
                text = f"[{style}]{text}[/]"
            cells.append(text)
        t.add_row(*cells)
    return t


def to_json(lab: LabRun) -> dict[str, Any]:
    o = lab.options
    return {
        "options": {
            "strategies": list(o.strategies),
            "faults": list(o.faults),
            "events": o.events,
            "seed": o.seed,
            "db": o.db.split("@")[-1],
            "rollback_ratio": o.rollback_ratio,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_1m_start": round(lab.load[0], 2),
            "load_1m_end": round(lab.load[1], 2),
        },
        "started_utc": datetime.fromtimestamp(lab.started_at, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": lab.elapsed,
        "parallel": o.parallel,
        "recommendation": recommendation(lab),
        "skipped": [{"strategy": n, "reason": why} for n, why in lab.skipped],
        "strategies": [r.as_dict() for r in lab.runs],
        "verdicts": verdicts([r.as_dict() for r in lab.runs]),
        "latencies_ms": {r.strategy: r.verdict.steady_ms for r in lab.runs},  # steady state only
    }


def recommendation(lab: LabRun) -> list[str]:
    """The run's advice for the common situations (``lab.advice``), from its own results."""
    return recommend([r.as_dict() for r in lab.runs], lab.skipped, database_kind(lab.options.db))


def database_kind(db: str) -> str:
    return (database_for(db) if "://" in db else database_named(db)).name


def skipped_lines(skipped: list[tuple[str, str]]) -> list[str]:
    return [f"{name}: skipped, {why}" for name, why in skipped]


def verdicts(runs: list[dict[str, Any]]) -> list[str]:
    return [verdict(r, runs) for r in runs]


def write_reports(lab: LabRun, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = to_json(lab)
    json_path = out / "report.json"
    json_path.write_text(json.dumps(data, indent=2))
    html_path = out / "report.html"
    html_path.write_text(render_html(data))
    return json_path, html_path


# -- HTML ----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.bad{background:#fdd;color:#900;font-weight:bold}.ok{color:#070}
.warn{background:#ffe9b3}h2{margin-top:28px}svg{background:#fafafa;border:1px solid #ddd}code{background:#f3f3f3}
"""
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def render_html(data: dict[str, Any]) -> str:
    runs: list[dict[str, Any]] = data["strategies"]
    o = data["options"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>outboxkit lab report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>outboxkit lab</h1>",
        f"<p>Command: <code>outboxkit lab run --events {o['events']} --seed {o['seed']} "
        f"--strategies {html.escape(','.join(o['strategies']))} "
        f"--faults {html.escape(','.join(o['faults']))}</code><br>"
        f"Database {html.escape(o['db'])}; {len(runs)} strategies in {data['elapsed_s']:.1f} s.</p>",
        "<h2>Recommendation</h2>",
        "<ul id='recommendation'>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in data.get("recommendation", []))
        + "</ul>",
        "<h2>Results</h2>",
        _results_table(runs),
        "<ul id='skipped'>"
        + "".join(
            f"<li>{html.escape(s['strategy'])}: skipped, {html.escape(s['reason'])}</li>"
            for s in data.get("skipped", [])
        )
        + "</ul>",
        f"<p>{html.escape(CAPTION)}.</p>",
        "<h2>Verdicts</h2>",
        "<ul id='verdicts'>"
        + "".join(f"<li>{html.escape(v)}</li>" for v in data.get("verdicts") or verdicts(runs))
        + "</ul>",
        "<h2>Anomalies per strategy</h2>",
        _bars(runs, _ANOMALIES, "anomalies", "count", skip_zero=True),
        "<h2>Steady-state commit-to-broker latency (ms, log scale)</h2>",
        "<p>Events no fault disturbed. How long each fault held deliveries up is in the fault table "
        "(recovery: the longest wait among the events it disturbed).</p>",
        _latency_chart(runs, data["latencies_ms"]),
        "<h2>Writer throughput (committed events per second of request time)</h2>",
        _bars(runs, ("throughput",), "throughput", "events/s"),
        "<h2>Faults</h2>",
        _faults_table(runs),
        "</body></html>",
    ]
    return "\n".join(parts)


def _results_table(runs: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in COLUMNS)
    rows = []
    for r in runs:
        cells = []
        for _, field in COLUMNS:
            cls = ""
            if field in _BAD:
                cls = "bad" if r[field] else "ok"
            elif field == "duplicates" and r[field]:
                cls = "warn"
            cells.append(f"<td class='{cls}'>{html.escape(cell(r, field))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table id='results'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _faults_table(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        for f in r["per_fault"]:
            bad = f["lost"]
            rows.append(
                f"<tr><td>{html.escape(r['strategy'])}</td><td>{html.escape(f['kind'])}</td><td>{f['tx']}</td>"
                f"<td>{html.escape(f['point'])}</td><td class='{'bad' if bad else 'ok'}'>{f['lost']}</td>"
                f"<td class='{'bad' if f['phantom'] else 'ok'}'>{f['phantom']}</td><td>{f['duplicates']}</td>"
                f"<td>{f['order_violations']}</td><td>{html.escape(_cell(f.get('recovery_ms')))}</td></tr>"
            )
        for kind in r["not_applicable"]:
            rows.append(f"<tr><td>{html.escape(r['strategy'])}</td><td>{html.escape(kind)}</td>" + "<td>n/a</td>" * 7)
    head = "<tr><th>strategy</th><th>fault</th><th>tx</th><th>point</th><th>lost</th><th>phantom</th><th>dups</th>"
    head += "<th>order</th><th>recovery ms</th></tr>"
    return f"<table id='faults'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _bars(
    runs: list[dict[str, Any]], fields: tuple[str, ...], chart_id: str, unit: str, *, skip_zero: bool = False
) -> str:
    """Grouped horizontal bars: one group per strategy, one bar per field. With ``skip_zero`` a zero
    gets no bar row at all (a column of "0" labels hides the few that matter), and a strategy with
    nothing to show says "none"."""
    width, label_w, bar_h = 900, 190, 14
    top = max([float(r[f] or 0) for r in runs for f in fields] + [1.0])
    shown = [[f for f in fields if not skip_zero or float(r[f] or 0)] for r in runs]
    heights = [bar_h * max(1, len(s)) + 10 for s in shown]
    height = sum(heights) + 40
    out = [
        f"<svg class='chart' id='chart-{chart_id}' width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
    ]
    y0 = 10
    for r, group, group_h in zip(runs, shown, heights, strict=True):
        out.append(f"<text x='4' y='{y0 + group_h / 2}' font-size='12'>{html.escape(r['strategy'])}</text>")
        if not group:
            out.append(f"<text x='{label_w}' y='{y0 + group_h / 2}' font-size='11' fill='#070'>none</text>")
        for row, f in enumerate(group):
            j = fields.index(f)
            value = float(r[f] or 0)
            w = (width - label_w - 80) * value / top
            y = y0 + row * bar_h
            out.append(
                f"<rect x='{label_w}' y='{y}' width='{w:.1f}' height='{bar_h - 2}' fill='{_COLORS[j]}'>"
                f"<title>{html.escape(f)}: {value:g}</title></rect>"
                f"<text x='{label_w + w + 4:.1f}' y='{y + bar_h - 4}' font-size='10'>{_cell(r[f])}</text>"
            )
        y0 += group_h
    for j, f in enumerate(fields):
        x = label_w + j * 150
        out.append(
            f"<rect x='{x}' y='{height - 18}' width='10' height='10' fill='{_COLORS[j]}'/>"
            f"<text x='{x + 14}' y='{height - 9}' font-size='11'>{html.escape(f)} ({unit})</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _label(left: float, right: float, y: float, width: int, text: str) -> str:
    """The label right of the whisker, or left of it when it would run off the chart."""
    if right + 4 + 7 * len(text) <= width:
        return f"<text x='{right + 4:.1f}' y='{y}' font-size='10'>{html.escape(text)}</text>"
    return f"<text x='{left - 4:.1f}' y='{y}' font-size='10' text-anchor='end'>{html.escape(text)}</text>"


def _latency_chart(runs: list[dict[str, Any]], latencies: dict[str, list[float]]) -> str:
    """Per strategy: a box from p25 to p75, whiskers to p1 and p99, a tick at p50, on a log axis."""
    import math

    width, label_w, row_h = 900, 190, 26
    height = row_h * len(runs) + 40
    lo, hi = math.log10(0.05), math.log10(max([max(v) for v in latencies.values() if v] + [10.0]) * 1.2)

    def x(ms: float) -> float:
        return label_w + (width - label_w - 20) * (math.log10(max(ms, 0.05)) - lo) / (hi - lo)

    out = [
        f"<svg class='chart' id='chart-latency' width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
    ]
    for i, r in enumerate(runs):
        y = 10 + i * row_h
        out.append(f"<text x='4' y='{y + 14}' font-size='12'>{html.escape(r['strategy'])}</text>")
        values = sorted(latencies.get(r["strategy"], []))
        if not values:
            out.append(f"<text x='{label_w}' y='{y + 14}' font-size='11'>no deliveries</text>")
            continue
        p = {q: percentile(values, q) or 0.0 for q in (1, 25, 50, 75, 99)}
        out.append(
            f"<line x1='{x(p[1]):.1f}' x2='{x(p[99]):.1f}' y1='{y + 10}' y2='{y + 10}' stroke='#555'/>"
            f"<rect x='{x(p[25]):.1f}' y='{y + 3}' width='{max(1.0, x(p[75]) - x(p[25])):.1f}' height='14' "
            f"fill='{_COLORS[i % len(_COLORS)]}' opacity='0.7'>"
            f"<title>p25 {p[25]:.2f} / p75 {p[75]:.2f} ms</title></rect>"
            f"<line x1='{x(p[50]):.1f}' x2='{x(p[50]):.1f}' y1='{y + 1}' y2='{y + 19}' stroke='#000' stroke-width='2'/>"
            + _label(x(p[1]), x(p[99]), y + 14, width, f"p50 {_cell(p[50])} / p99 {_cell(p[99])}")
        )
    for tick in (0.1, 1, 10, 100, 1000, 10000):
        if lo <= math.log10(tick) <= hi:
            out.append(
                f"<line x1='{x(tick):.1f}' x2='{x(tick):.1f}' y1='{height - 28}' y2='{height - 22}' stroke='#999'/>"
                f"<text x='{x(tick) - 8:.1f}' y='{height - 8}' font-size='10'>{tick:g}</text>"
            )
    out.append("</svg>")
    return "".join(out)
