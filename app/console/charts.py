"""Charts drawn on the server as inline SVG: no script, no CDN, nothing for a strict CSP to
block, readable on a phone (the SVG scales to its box)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

PALETTE = ("#0f766e", "#d9480f", "#1c7ed6", "#ae3ec9", "#f59f00", "#2b8a3e", "#e64980",
           "#5c7cfa", "#868e96", "#12b886")
_W, _H = 640, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 10, 12, 34


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    step = 10 ** (len(str(int(v))) - 1)
    return float((int(v / step) + 1) * step)


def _legend(names: Sequence[str]) -> str:
    items = "".join(f'<span class="key"><i class="c{i % len(PALETTE)}"></i>{escape(n)}</span>'
                    for i, n in enumerate(names))
    return f'<div class="legend">{items}</div>' if len(names) > 1 else ""


def bar_chart(labels: Sequence[str], series: Mapping[str, Sequence[float]], *,
              title: str, stacked: bool = False) -> Markup:
    """Return an SVG bar chart (grouped, or stacked) with a legend, as safe markup."""
    names = list(series)
    n = max(1, len(labels))
    totals = [sum(series[s][i] for s in names) for i in range(len(labels))] if stacked \
        else [max((series[s][i] for s in names), default=0) for i in range(len(labels))]
    top = _nice_max(max(totals, default=0))
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    slot = plot_w / n
    parts = [f'<svg viewBox="0 0 {_W} {_H}" width="100%" role="img" '
             f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">']
    for k in range(5):
        y = _TOP + plot_h * k / 4
        val = top * (4 - k) / 4
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e5e7eb"/><text x="{_LEFT - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end" fill="#6b7280">{val:g}</text>')
    every = max(1, n // 10)
    for i, label in enumerate(labels):
        x0 = _LEFT + slot * i
        base = float(_TOP + plot_h)
        if stacked:
            for j, s in enumerate(names):
                h = plot_h * series[s][i] / top
                base -= h
                parts.append(f'<rect x="{x0 + slot * 0.15:.1f}" y="{base:.1f}" '
                             f'width="{slot * 0.7:.1f}" height="{h:.1f}" '
                             f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(label)} '
                             f'{escape(s)}: {series[s][i]:g}</title></rect>')
        else:
            w = slot * 0.8 / max(1, len(names))
            for j, s in enumerate(names):
                h = plot_h * series[s][i] / top
                parts.append(f'<rect x="{x0 + slot * 0.1 + w * j:.1f}" y="{base - h:.1f}" '
                             f'width="{w:.1f}" height="{h:.1f}" '
                             f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(label)} '
                             f'{escape(s)}: {series[s][i]:g}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x0 + slot / 2:.1f}" y="{_H - _BOTTOM + 16}" '
                         f'text-anchor="middle" fill="#374151">{escape(label[5:] or label)}</text>')
    parts.append("</svg>")
    return Markup(f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
                  f'{"".join(parts)}{_legend(names)}</figure>')
