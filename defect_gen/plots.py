"""Small line plots drawn with PIL, so that no plotting library is needed."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def line_plot(path: str, xs: list[float], series: dict[str, list[float]], title: str,
              log_y: bool = True, size: tuple[int, int] = (800, 450)) -> None:
    """Plot each named series against xs (log-scale y by default: losses span decades)."""
    w, h = size
    left, right, top, bottom = 70, 20, 40, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 12), title, fill="black")
    tf = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    values = [tf(v) for ys in series.values() for v in ys if math.isfinite(v) and (v > 0 or not log_y)]
    if len(xs) < 2 or not values:
        img.save(path)
        return
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(values), max(values)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 1, y1 + 1

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (w - left - right),
                h - bottom - (tf(y) - y0) / (y1 - y0) * (h - top - bottom))

    draw.rectangle([left, top, w - right, h - bottom], outline=(120, 120, 120))
    for i in range(5):  # y ticks
        v = y0 + (y1 - y0) * i / 4
        y = h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((4, y - 6), f"{10 ** v if log_y else v:.3g}", fill="black")
    for i in range(5):  # x ticks
        v = x0 + (x1 - x0) * i / 4
        x = left + (v - x0) / (x1 - x0) * (w - left - right)
        draw.line([x, h - bottom, x, h - bottom + 4], fill="black")
        draw.text((x - 10, h - bottom + 8), f"{v:.0f}", fill="black")
    for k, (name, ys) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        pts = [px(x, y) for x, y in zip(xs, ys) if math.isfinite(y) and (y > 0 or not log_y)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        draw.text((w - right - 150, top + 8 + 14 * k), name, fill=color)
    img.save(path)


def _frame(title: str, size: tuple[int, int]):
    """A white canvas with a title; returns (image, draw, plot box left, top, right, bottom)."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((70, 12), title, fill="black")
    return img, draw, 70, 40, w - 170, h - 50  # the right margin holds the legend


def _ticks(draw, box, x_range, y_range, x_values=None) -> None:
    """Axis box, 5 y ticks and x ticks (at `x_values` when given), labelled with 3 significant digits."""
    left, top, right, bottom = box
    draw.rectangle([left, top, right, bottom], outline=(120, 120, 120))
    (x0, x1), (y0, y1) = x_range, y_range
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        y = bottom - (v - y0) / (y1 - y0) * (bottom - top)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((4, y - 6), f"{v:.3g}", fill="black")
    for v in x_values if x_values is not None else [x0 + (x1 - x0) * i / 4 for i in range(5)]:
        x = left + (v - x0) / (x1 - x0) * (right - left)
        draw.line([x, bottom, x, bottom + 4], fill="black")
        draw.text((x - 10, bottom + 8), f"{v:.3g}", fill="black")


def errorbar_plot(path: str, series: dict[str, tuple[list[float], list[float], list[float]]], title: str,
                  x_label: str = "", size: tuple[int, int] = (800, 450)) -> None:
    """Each named series as (xs, means, stds): a line through the means with ±std bars (linear axes)."""
    img, draw, left, top, right, bottom = _frame(title, size)
    pts = [(x, m, s) for xs, ms, ss in series.values() for x, m, s in zip(xs, ms, ss) if math.isfinite(m)]
    if not pts:
        img.save(path)
        return
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0 = min(p[1] - (p[2] if math.isfinite(p[2]) else 0) for p in pts)
    y1 = max(p[1] + (p[2] if math.isfinite(p[2]) else 0) for p in pts)
    x0, x1 = (x0 - 0.5, x1 + 0.5) if x1 - x0 < 1e-12 else (x0, x1)
    pad = (y1 - y0) * 0.1 if y1 - y0 > 1e-9 else 1.0  # a flat line gets a unit band around it
    y0, y1 = y0 - pad, y1 + pad
    box = (left, top, right, bottom)
    _ticks(draw, box, (x0, x1), (y0, y1), sorted({p[0] for p in pts}))
    draw.text(((left + right) // 2 - 40, bottom + 26), x_label, fill="black")

    def px(x, y):
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for k, (name, (xs, ms, ss)) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        line = [(x, m, s) for x, m, s in zip(xs, ms, ss) if math.isfinite(m)]
        if len(line) > 1:
            draw.line([px(x, m) for x, m, _ in line], fill=color, width=2)
        for x, m, s in line:
            cx, cy = px(x, m)
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=color)
            if math.isfinite(s) and s > 0:
                draw.line([px(x, m - s), px(x, m + s)], fill=color, width=1)
        draw.text((right + 10, top + 8 + 14 * k), name[:24], fill=color)
    img.save(path)


def histogram_plot(path: str, samples: dict[str, list[float]], title: str, bins: list[float],
                   x_label: str = "", size: tuple[int, int] = (800, 300)) -> None:
    """Overlaid step histograms of each named sample, normalised to shares (sets of any size compare)."""
    img, draw, left, top, right, bottom = _frame(title, size)
    shares = {}
    for name, values in samples.items():
        counts = [0] * (len(bins) - 1)
        for v in values:
            for i in range(len(bins) - 1):  # last bin closed on the right
                if bins[i] <= v < bins[i + 1] or (i == len(bins) - 2 and v == bins[-1]):
                    counts[i] += 1
                    break
        shares[name] = [c / max(1, len(values)) for c in counts]
    y1 = max([max(s) for s in shares.values() if s] + [1e-3]) * 1.1
    _ticks(draw, (left, top, right, bottom), (0, len(bins) - 1), (0, y1), list(range(len(bins))))
    # x ticks show bin indices; relabel them with the bin edges below the axis
    draw.rectangle([left - 30, bottom + 6, right + 30, bottom + 20], fill="white")
    for i, edge in enumerate(bins):
        x = left + i / (len(bins) - 1) * (right - left)
        draw.text((x - 10, bottom + 8), f"{edge:.3g}", fill="black")
    draw.text(((left + right) // 2 - 40, bottom + 26), x_label, fill="black")
    for k, (name, ys) in enumerate(shares.items()):
        color = COLORS[k % len(COLORS)]
        pts = []
        for i, y in enumerate(ys):
            xa = left + i / (len(bins) - 1) * (right - left)
            xb = left + (i + 1) / (len(bins) - 1) * (right - left)
            yy = bottom - y / y1 * (bottom - top)
            pts += [(xa, yy), (xb, yy)]
        if pts:
            draw.line(pts, fill=color, width=2)
        draw.text((right + 10, top + 8 + 14 * k), f"{name[:18]} ({len(samples[name])})", fill=color)
    img.save(path)
