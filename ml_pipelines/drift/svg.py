"""Small inline SVG charts for the drift report: no plotting library, no external resources.

Every chart is a self-contained ``<svg>`` element whose text is escaped, so the report page
opens offline in any browser.
"""

from __future__ import annotations

from html import escape

REFERENCE_COLOUR = "#4c72b0"
CURRENT_COLOUR = "#dd8452"
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def bar_chart(bins: list[dict[str, float | str]], *, title: str, width: int = 460) -> str:
    """Reference and current shares side by side for each bin or category."""
    height, left, bottom, top = 230, 46, 64, 28
    plot_width, plot_height = width - left - 10, height - bottom - top
    shares = [float(item[key]) for item in bins for key in ("reference", "current")]
    peak = max([*shares, 1e-9])
    slot = plot_width / max(len(bins), 1)
    bar = slot * 0.38
    parts = [_open(width, height, title, limit=44), _axes(left, top, plot_width, plot_height, peak)]
    for index, item in enumerate(bins):
        x = left + index * slot + slot * 0.1
        for offset, key, colour in (
            (0, "reference", REFERENCE_COLOUR),
            (bar, "current", CURRENT_COLOUR),
        ):
            value = float(item[key])
            bar_height = plot_height * value / peak
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{top + plot_height - bar_height:.1f}" '
                f'width="{bar:.1f}" height="{bar_height:.1f}" fill="{colour}">'
                f"<title>{escape(str(item['label']))} {key}: {value * 100:.1f}%</title></rect>"
            )
        label_x = left + index * slot + slot / 2
        parts.append(
            f'<text x="{label_x:.1f}" y="{top + plot_height + 12}" font-size="9" '
            f'text-anchor="end" transform="rotate(-35 {label_x:.1f} {top + plot_height + 12})">'
            f"{escape(_short(str(item['label'])))}</text>"
        )
    legend = [("reference", REFERENCE_COLOUR), ("current", CURRENT_COLOUR)]
    parts.append(_legend(width - 170, 14, legend))
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    series: dict[str, list[tuple[str, float]]], *, title: str, percent: bool, width: int = 940
) -> str:
    """One line per series across windows (prevalence or median per window)."""
    height, left, bottom, top = 260, 52, 56, 28
    plot_width, plot_height = width - left - 200, height - bottom - top
    windows = sorted({window for points in series.values() for window, _ in points})
    values = [value for points in series.values() for _, value in points] or [0.0]
    low, high = min(0.0, min(values)), max(values) or 1.0
    span = (high - low) or 1.0
    step = plot_width / max(len(windows) - 1, 1)
    position = {window: left + index * step for index, window in enumerate(windows)}
    parts = [_open(width, height, title)]
    parts.append(_axes(left, top, plot_width, plot_height, high, low=low, percent=percent))
    every = max(1, len(windows) // 12)
    for index, window in enumerate(windows):
        if index % every == 0:
            parts.append(
                f'<text x="{position[window]:.1f}" y="{top + plot_height + 14}" font-size="9" '
                f'text-anchor="middle">{escape(window)}</text>'
            )
    legend = []
    for index, (name, points) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        coordinates = " ".join(
            f"{position[window]:.1f},{top + plot_height - plot_height * (value - low) / span:.1f}"
            for window, value in points
        )
        parts.append(
            f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(name)}</title></polyline>"
        )
        legend.append((name, colour))
    parts.append(_legend(left + plot_width + 12, top, legend))
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, title: str, *, limit: int = 70) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f'<text x="8" y="16" font-size="12" font-weight="bold">'
        f"{escape(_short(title, limit))}</text>"
    )


def _axes(
    left: int,
    top: int,
    plot_width: float,
    plot_height: float,
    high: float,
    *,
    low: float = 0.0,
    percent: bool = True,
) -> str:
    parts = [
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_height}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top + plot_height}" x2="{left + plot_width}" '
        f'y2="{top + plot_height}" stroke="#333"/>',
    ]
    for tick in range(5):
        value = low + (high - low) * tick / 4
        y = top + plot_height - plot_height * tick / 4
        text = f"{value * 100:.0f}%" if percent else f"{value:.1f}"
        parts.append(
            f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="9" text-anchor="end">{text}</text>'
        )
    return "".join(parts)


def _legend(x: float, y: float, entries: list[tuple[str, str]]) -> str:
    parts = []
    for index, (name, colour) in enumerate(entries):
        row = y + index * 14
        parts.append(f'<rect x="{x}" y="{row}" width="10" height="10" fill="{colour}"/>')
        parts.append(
            f'<text x="{x + 14}" y="{row + 9}" font-size="10">{escape(_short(name, 28))}</text>'
        )
    return "".join(parts)


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
