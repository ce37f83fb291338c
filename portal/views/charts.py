"""Small labelled bar charts as inline SVG: no script, no CDN, readable without JavaScript."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, PAD = 300, 90, 18


@dataclass
class Chart:
    title: str
    svg: SafeString
    latest: str  # the newest value, formatted, or "not measured"


def bars(title: str, values: list[tuple[str, float | None]], unit: str) -> Chart:
    """`values` oldest first, as (label, value); a None value leaves a gap (not measured)."""
    measured = [v for _, v in values if v is not None]
    top = max(measured, default=0) or 1
    step = (WIDTH - PAD) / max(len(values), 1)
    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" class="chart">',
             f'<text x="0" y="10" class="axis">{_fmt(top, unit)}</text>',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH}" y2="{HEIGHT - PAD}" class="base"/>']
    for index, (label, value) in enumerate(values):
        if value is None:
            continue
        height = (HEIGHT - 2 * PAD) * value / top
        x = PAD + index * step
        parts.append(f'<rect x="{x:.1f}" y="{HEIGHT - PAD - height:.1f}" width="{max(step - 2, 1):.1f}" '
                     f'height="{height:.1f}"><title>{escape(label)}: {_fmt(value, unit)}</title></rect>')
    parts.append(f'<text x="{PAD}" y="{HEIGHT - 4}" class="axis">{len(values)} releases, oldest first</text></svg>')
    latest = values[-1][1] if values else None
    return Chart(title, mark_safe("".join(parts)), _fmt(latest, unit) if latest is not None else "not measured")  # noqa: S308 - numbers and escaped labels only


def _fmt(value: float, unit: str) -> str:
    if unit == "MB":
        return f"{value / 2**20:.0f} MB"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:.0f} {unit}"


def release_charts(releases: list) -> list[Chart]:
    """Deploy time, image size and cold start of the last releases (given newest first)."""
    ordered = list(reversed(releases))

    def label(d) -> str:
        return f"v{d.version} {d.commit_sha[:8]}"

    return [
        bars("Deploy time", [(label(d), d.duration.total_seconds() if d.duration else None) for d in ordered], "s"),
        bars("Image size", [(label(d), d.build.size_bytes if d.build else None) for d in ordered], "MB"),
        bars("Cold start (init)", [(label(d), d.init_ms) for d in ordered], "ms"),
    ]


CHART_W, CHART_H, LEFT, BOTTOM = 360, 120, 34, 20


def weight_chart(points: list, *, title: str, desc: str) -> SafeString:
    """The new version's share of the alias over time, as a step line from 0 to 100 %.
    `points` are (at, weight) oldest first (rollout_summary.weight_series); role="img" with a
    title and a description that says in words what the line shows."""
    start, end = points[0].at, points[-1].at
    span = max((end - start).total_seconds(), 1.0)
    width, height = CHART_W - LEFT - 6, CHART_H - BOTTOM - 8

    def xy(point) -> str:
        x = LEFT + width * (point.at - start).total_seconds() / span
        return f"{x:.1f},{8 + height * (1 - point.weight):.1f}"

    parts = [f'<svg viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" role="img" '
             f'aria-labelledby="weight-title weight-desc" class="chart weight-chart">',
             f'<title id="weight-title">{escape(title)}</title><desc id="weight-desc">{escape(desc)}</desc>']
    for share in (0, 0.5, 1):
        y = 8 + height * (1 - share)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{CHART_W - 6}" y2="{y:.1f}" class="base"/>'
                     f'<text x="0" y="{y + 4:.1f}" class="axis">{share:.0%}</text>')
    parts.append(f'<polyline fill="none" stroke="currentColor" stroke-width="2" '
                 f'points="{" ".join(xy(p) for p in points)}"/>')
    minutes = span / 60
    parts.append(f'<text x="{LEFT}" y="{CHART_H - 4}" class="axis">{start:%H:%M:%S} UTC, '
                 f'{minutes:.1f} min shown</text></svg>')
    return mark_safe("".join(parts))  # noqa: S308 - numbers and escaped text only
