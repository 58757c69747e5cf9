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
