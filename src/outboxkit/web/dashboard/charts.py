"""Inline SVG charts, rendered on the server: no JavaScript library, no CDN, no build step.

Pure functions of their data, so a test can check what a chart says without a browser. Text
placed in a chart goes through :func:`html.escape`; numbers are formatted here.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class LogAxis:
    """A logarithmic value axis over whole decades, one grid line per decade.

    Lag spans decades: a relay that keeps up delivers in milliseconds, one that fell behind in
    minutes. On a linear axis a 100 s worst case flattens a 100 ms mean onto the zero line and
    labels nothing between 0 and 25 s; here every decade in between has its line and label."""

    low: float  # a power of ten, at or below the smallest positive value
    high: float  # a power of ten above low, at or above the largest value

    @classmethod
    def over(cls, values: Sequence[float], *, empty: tuple[float, float] = (0.001, 1.0)) -> LogAxis:
        positive = [v for v in values if v > 0]
        if not positive:
            return cls(*empty)
        low = 10.0 ** math.floor(math.log10(min(positive)) + 1e-9)
        high = 10.0 ** math.ceil(math.log10(max(positive)) - 1e-9)
        return cls(low, high if high > low else low * 10)

    @property
    def decades(self) -> list[float]:
        count = round(math.log10(self.high / self.low))
        return [self.low * 10.0**i for i in range(count + 1)]

    def fraction(self, value: float) -> float:
        """0 at ``low`` (and for anything below it, zero included), 1 at ``high``."""
        if value <= self.low:
            return 0.0
        return min(1.0, math.log10(value / self.low) / math.log10(self.high / self.low))


def _linear_ticks(top: float, unit: str) -> list[tuple[float, str]]:
    return [(i / 4, fmt(top * i / 4, unit)) for i in range(5)]  # 0, 1/4 .. top


def _frame(chart_id: str, title: str, ticks: Sequence[tuple[float, str]], starts: Sequence[int]) -> list[str]:
    """The SVG's frame: one grid line and label per ``(fraction of the height, label)`` tick."""
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    out = [
        f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction, label in ticks:
        y = _TOP + inner_h - inner_h * fraction
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + inner_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
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
    out = _frame(chart_id, title, _linear_ticks(top, unit), starts)
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


def line_chart(
    chart_id: str,
    title: str,
    starts: Sequence[int],
    series: Sequence[Series],
    unit: str = "",
    *,
    log: bool = False,
) -> str:
    """One polyline per series; a gap (None) breaks the line instead of drawing a false zero.
    ``log``: a logarithmic axis over whole decades (:class:`LogAxis`), for values that span them."""
    present = [v for s in series for v in s.values if v is not None]
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    if log:
        axis = LogAxis.over(present)
        height = axis.fraction
        ticks = [(axis.fraction(d), fmt(d, unit)) for d in axis.decades]
    else:
        top = nice_max(max(present, default=0.0))

        def height(value: float) -> float:
            return value / top

        ticks = _linear_ticks(top, unit)
    out = _frame(chart_id, title, ticks, starts)
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
            run.append(f"{_LEFT + slot * (i + 0.5):.1f},{_TOP + inner_h - inner_h * height(value):.1f}")
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
