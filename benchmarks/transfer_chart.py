"""The chart of benchmarks/bench_transfer.py's output: C-index against labeled people at each small
site, one line per method (an SVG, no plotting library needed).

Usage::

    python benchmarks/transfer_chart.py benchmarks/results/bench_transfer.txt benchmarks/results/bench_transfer.svg
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4"]
PANEL_W, PANEL_H, MARGIN = 420, 300, 55


def parse(text: str) -> dict[str, dict[str, dict[int, float]]]:
    """site -> method -> labeled people -> mean C-index, from the printed tables."""
    found: dict[str, dict[str, dict[int, float]]] = {}
    site = size = None
    for line in text.splitlines():
        head = re.match(r"\s+site (\w), N=(\d+) labeled people", line)
        if head:
            site, size = head.group(1), int(head.group(2))
            continue
        row = re.match(r"\s{4}(\S.*?)\s+(0\.\d{4}) \(sd", line)
        if row and site is not None:
            found.setdefault(site, {}).setdefault(row.group(1), {})[size] = float(row.group(2))
    return found


def _panel(site: str, methods: dict[str, dict[int, float]], left: float, low: float, high: float) -> list[str]:
    sizes = sorted({n for series in methods.values() for n in series})
    top, width, height = 30, PANEL_W - MARGIN - 10, PANEL_H - 30 - MARGIN

    def x(n: int) -> float:
        return left + MARGIN + (sizes.index(n) / max(len(sizes) - 1, 1)) * width

    def y(c: float) -> float:
        return top + (high - c) / (high - low) * height

    parts = [f'<text x="{left + MARGIN}" y="18" font-weight="bold">site {site}</text>']
    parts.append(f'<rect x="{left + MARGIN}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>')
    for k in range(6):
        c = low + (high - low) * k / 5
        parts.append(f'<text x="{left + MARGIN - 6}" y="{y(c) + 4:.1f}" text-anchor="end">{c:.3f}</text>')
    for n in sizes:
        parts.append(f'<text x="{x(n):.1f}" y="{top + height + 16}" text-anchor="middle">{n}</text>')
    parts.append(
        f'<text x="{left + MARGIN + width / 2}" y="{top + height + 34}" text-anchor="middle">labeled people</text>'
    )
    for i, (name, series) in enumerate(methods.items()):
        points = " ".join(f"{x(n):.1f},{y(c):.1f}" for n, c in sorted(series.items()))
        dash = ' stroke-dasharray="5,4"' if name in ("oracle",) or name.startswith("headroom") else ""
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
    return parts


def chart(results: dict[str, dict[str, dict[int, float]]]) -> str:
    """The SVG: one panel per site, a shared legend below."""
    values = [c for methods in results.values() for series in methods.values() for c in series.values()]
    low, high = min(values) - 0.002, max(values) + 0.002
    methods = list(next(iter(results.values())))
    legend_h = 18 * len(methods) + 10
    width, height = PANEL_W * len(results), PANEL_H + legend_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for k, (site, site_methods) in enumerate(sorted(results.items())):
        parts += _panel(site, site_methods, k * PANEL_W, low, high)
    for i, name in enumerate(methods):
        y0 = PANEL_H + 12 + 18 * i
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<line x1="{MARGIN}" y1="{y0}" x2="{MARGIN + 24}" y2="{y0}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{MARGIN + 30}" y="{y0 + 4}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    results = parse(source.read_text())
    if not results:
        raise SystemExit(f"{source}: no result tables found")
    target.write_text(chart(results))
    print(f"wrote {target}: {', '.join(f'site {s} ({len(m)} methods)' for s, m in sorted(results.items()))}")


if __name__ == "__main__":
    main()
