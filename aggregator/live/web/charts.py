"""Bar charts as inline SVG, drawn on the server: no script, no library, nothing fetched.

Colours come from the page's stylesheet (classes ``s0``… ``s3``, ``bar``), so the charts follow
its light and dark themes; every bar has a ``<title>`` with its exact figures.
"""

from __future__ import annotations

from collections.abc import Sequence

from aggregator.live.web.render import e


def compact(n: float) -> str:
    """``1234567`` → ``1.2M``; ``12345`` → ``12k``."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            v = n / size
            return f"{v:.1f}{suffix}" if v < 10 else f"{v:.0f}{suffix}"
    return f"{n:.0f}"


def stacked_columns(
    labels: Sequence[str], series: Sequence[tuple[str, Sequence[int]]], *, title: str, height: int = 220
) -> str:
    """Vertical bars, one per label, each stacked from ``series`` (name, one value per label)."""
    n = len(labels)
    if n == 0:
        return '<p class="empty">No usage recorded yet.</p>'
    totals = [sum(values[i] for _, values in series) for i in range(n)]
    top = max(totals) or 1
    left, bottom, plot_h = 48, 36, height - 48
    step = max(6.0, min(48.0, 720 / n))
    width = int(left + step * n + 8)
    bar_w = max(2.0, step * 0.72)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}" '
        f'preserveAspectRatio="xMinYMin meet">'
    ]
    for frac in (0.0, 0.5, 1.0):
        y = 12 + plot_h * (1 - frac)
        out.append(f'<line class="grid" x1="{left}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{compact(top * frac)}</text>')
    every = max(1, n // 8)
    for i, label in enumerate(labels):
        x = left + step * i + (step - bar_w) / 2
        y = 12 + plot_h
        parts = []
        for k, (_name, values) in enumerate(series):
            h = plot_h * values[i] / top
            if h > 0:
                y -= h
                parts.append(f'<rect class="s{k}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}"/>')
        tip = f"{label}: {totals[i]:,} tokens — " + ", ".join(f"{name} {values[i]:,}" for name, values in series)
        out.append(f"<g><title>{e(tip)}</title>{''.join(parts)}</g>")
        if i % every == 0:
            out.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - bottom + 18}" text-anchor="middle">'
                f"{e(label[5:] if len(label) == 10 else label)}</text>"
            )
    out.append("</svg>")
    legend = "".join(f'<span class="key"><i class="s{k}"></i>{e(name)}</span>' for k, (name, _) in enumerate(series))
    return "".join(out) + f'<p class="legend">{legend}</p>'


def bars(labels: Sequence[str], values: Sequence[int], *, title: str, limit: int = 12) -> str:
    """Horizontal bars, largest first as given, the first ``limit`` of them (the rest summed)."""
    if not labels:
        return '<p class="empty">No usage recorded yet.</p>'
    pairs = list(zip(labels, values, strict=True))
    if len(pairs) > limit:
        rest = sum(v for _, v in pairs[limit - 1 :])
        pairs = [*pairs[: limit - 1], (f"{len(pairs) - limit + 1} others", rest)]
    top = max(v for _, v in pairs) or 1
    row, label_w, width = 22, 220, 640
    height = row * len(pairs) + 4
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">']
    for i, (label, v) in enumerate(pairs):
        y = i * row + 2
        w = (width - label_w - 64) * v / top
        short = label if len(label) <= 30 else "…" + label[-29:]
        out.append(
            f"<g><title>{e(label)}: {v:,} tokens</title>"
            f'<text class="axis" x="{label_w - 6}" y="{y + 15}" text-anchor="end">{e(short)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 6}"/>'
            f'<text class="axis" x="{label_w + w + 6:.1f}" y="{y + 15}">{compact(v)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)
