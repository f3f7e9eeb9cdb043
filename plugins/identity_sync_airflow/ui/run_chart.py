"""Changes per run as an inline SVG bar chart: no script, no external asset, so the page keeps a
script-free Content-Security-Policy. Every text from the audit store goes through ``escape``."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

SERIES = (("users", "#2b6cb0"), ("groups", "#805ad5"), ("memberships", "#38a169"),
          ("failed", "#e53e3e"), ("pending", "#cbd5e0"))
BAR, GAP, HEIGHT, TOP, BOTTOM, LEFT = 26, 10, 120, 14, 28, 34


def changes_chart(runs: list[dict[str, Any]]) -> Markup:
    """Stacked bars of completed changes (users, groups, memberships), failed operations and
    operations never applied (a blocked or dry run's plan) per run, oldest on the left; ``runs`` as :func:`identity_sync.audit.views.recent_runs` returns
    them (newest first)."""
    ordered = list(reversed(runs))
    values = [[*(r["changes"][name] for name, _ in SERIES[:3]), r["failed"], r["pending"]]
              for r in ordered]
    peak = max([sum(v) for v in values] + [1])
    width = LEFT + len(ordered) * (BAR + GAP) + GAP
    parts = [f'<svg class="chart" role="img" aria-label="changes per run" width="{width}" '
             f'height="{TOP + HEIGHT + BOTTOM}" viewBox="0 0 {width} {TOP + HEIGHT + BOTTOM}" '
             'xmlns="http://www.w3.org/2000/svg">',
             f'<text x="2" y="{TOP + 4}" class="axis">{peak}</text>',
             f'<text x="2" y="{TOP + HEIGHT}" class="axis">0</text>',
             f'<line x1="{LEFT - 4}" y1="{TOP + HEIGHT}" x2="{width}" y2="{TOP + HEIGHT}" '
             'stroke="#a0aec0"/>']
    for i, (run, counts) in enumerate(zip(ordered, values, strict=True)):
        x = LEFT + GAP + i * (BAR + GAP)
        y = TOP + HEIGHT
        summary = ", ".join(f"{n} {name}" for (name, _), n in zip(SERIES, counts, strict=True))
        parts.append(f'<g class="bar" data-run-id="{escape(run["run_id"])}">'
                     f'<title>{escape(run["run_id"])} ({escape(run["status"])}): '
                     f'{escape(summary)}</title>')
        for (name, colour), n in zip(SERIES, counts, strict=True):
            if n:
                h = max(1.0, n / peak * HEIGHT)
                y -= h
                parts.append(f'<rect class="{name}" x="{x}" y="{y:.1f}" width="{BAR}" '
                             f'height="{h:.1f}" fill="{colour}"/>')
        parts.append(f'<rect x="{x}" y="{TOP}" width="{BAR}" height="{HEIGHT}" '
                     'fill="transparent"/></g>')
        started = run.get("started_at")
        label = started.strftime("%H:%M") if started else "?"
        parts.append(f'<text x="{x + BAR / 2}" y="{TOP + HEIGHT + 16}" class="axis" '
                     f'text-anchor="middle">{escape(label)}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span class="key"><i style="background:{colour}"></i>{name}</span>'
                     for name, colour in SERIES)
    return Markup("".join(parts) + f'<div class="legend">{legend}</div>')
