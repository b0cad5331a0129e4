"""Inline SVG charts, rendered on the server: no JavaScript library, no CDN, no build step.

Pure functions of their data, so a test can check what a chart says without a browser. Text
placed in a chart goes through :func:`html.escape`; numbers are formatted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from time import gmtime, strftime

WIDTH, HEIGHT = 640, 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 14, 28


@dataclass(frozen=True)
class Series:
    name: str
    css_class: str  # colour comes from the stylesheet: one palette, no inline styles
    values: Sequence[float | None]  # one per bucket; None = no data there


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^n at or above ``value`` (an axis that reads well)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** int(f"{value:e}".split("e")[1])
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * magnitude * (1 + 1e-9):
            return step * magnitude
    return 10.0 * magnitude


def fmt(value: float, unit: str = "") -> str:
    if unit == "s":
        if value == 0:
            return "0"
        if value < 1:
            return f"{value * 1000:.3g} ms"
        return f"{value:.3g} s" if value < 120 else f"{value / 60:.3g} min"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value == int(value) else f"{value:.3g}"


def _frame(chart_id: str, title: str, top: float, unit: str, starts: Sequence[int]) -> list[str]:
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    out = [
        f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):  # horizontal grid: 0, 1/4 .. top
        y = _TOP + inner_h - inner_h * i / 4
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + inner_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        label = fmt(top * i / 4, unit)
        out.append(f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    if starts:
        for index in sorted({0, len(starts) // 2, len(starts) - 1}):
            x = _LEFT + inner_w * (index + 0.5) / len(starts)
            label = strftime("%H:%M", gmtime(starts[index]))
            out.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{label}</text>')
    return out


def bar_chart(chart_id: str, title: str, starts: Sequence[int], values: Sequence[float], unit: str = "") -> str:
    """One bar per bucket (``starts`` are the buckets' epoch seconds, UTC on the axis)."""
    top = nice_max(max(values, default=0.0))
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    out = _frame(chart_id, title, top, unit, starts)
    slot = inner_w / max(len(values), 1)
    for i, value in enumerate(values):
        if value <= 0:
            continue
        h = inner_h * value / top
        x = _LEFT + slot * i + slot * 0.1
        when = strftime("%H:%M", gmtime(starts[i]))
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{_TOP + inner_h - h:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{h:.1f}"><title>{when} UTC: {escape(fmt(value, unit))}</title></rect>'
        )
    out.append("</svg>")
    return "\n".join(out)


def line_chart(chart_id: str, title: str, starts: Sequence[int], series: Sequence[Series], unit: str = "") -> str:
    """One polyline per series; a gap (None) breaks the line instead of drawing a false zero."""
    present = [v for s in series for v in s.values if v is not None]
    top = nice_max(max(present, default=0.0))
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    out = _frame(chart_id, title, top, unit, starts)
    slot = inner_w / max(len(starts), 1)
    for s in series:
        run: list[str] = []
        runs: list[list[str]] = []
        for i, value in enumerate(s.values):
            if value is None:
                if run:
                    runs.append(run)
                run = []
                continue
            run.append(f"{_LEFT + slot * (i + 0.5):.1f},{_TOP + inner_h - inner_h * value / top:.1f}")
        if run:
            runs.append(run)
        for points in runs:
            if len(points) == 1:
                x, y = points[0].split(",")
                out.append(f'<circle class="{s.css_class}" cx="{x}" cy="{y}" r="2.5"/>')
            else:
                out.append(f'<polyline class="{s.css_class}" fill="none" points="{" ".join(points)}"/>')
    legend_x = _LEFT + 8
    for s in series:
        out.append(f'<text class="legend {s.css_class}" x="{legend_x}" y="{_TOP + 10}">{escape(s.name)}</text>')
        legend_x += 12 + 7 * len(s.name)
    out.append("</svg>")
    return "\n".join(out)
