"""Line, error-bar and histogram plots as PNG files, drawn with matplotlib.

Figures are built with matplotlib's object API on an explicit Agg canvas: no display is
needed, and pyplot's global state (and whatever backend a user's session chose) is left
alone. matplotlib is imported inside the functions, so commands that draw nothing do not
pay for its import. Image grids are not plots: they stay in `defect_gen.data.image_io` (PIL).
"""

from __future__ import annotations

import numpy as np

DPI = 100  # `size` is in pixels: figure inches are size / DPI
MARGINS = (72, 30, 16, 48)  # left, top, right, bottom, in pixels


def _figure(size: tuple[int, int]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = size
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)  # Agg, explicitly: rendering never looks for a display
    # Fixed margins in pixels (room for tick labels, axis labels, the title) rather than
    # layout="constrained", which doubles the drawing time of a plot redrawn at every log.
    fig.subplots_adjust(left=MARGINS[0] / width, right=1 - MARGINS[2] / width, bottom=MARGINS[3] / height,
                        top=1 - MARGINS[1] / height)
    return fig, fig.add_subplot()


def _finish(fig, ax, path: str, title: str, x_label: str = "", y_label: str = "") -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.savefig(path, format="png")


def _floats(values) -> np.ndarray:
    """None (JSON's NaN) becomes NaN, which matplotlib leaves as a gap in a line."""
    return np.array([float("nan") if v is None else float(v) for v in values], dtype=float)


def line_plot(path: str, xs: list[float], series: dict[str, list[float]], title: str,
              log_y: bool = True, size: tuple[int, int] = (800, 450), x_label: str = "step",
              ticks_at_xs: bool = False) -> None:
    """Plot each named series against xs (log-scale y by default: losses span decades);
    `ticks_at_xs`: x ticks at the xs themselves (seeds, not a continuous axis)."""
    fig, ax = _figure(size)
    if ticks_at_xs:
        ax.set_xticks(list(xs))
    x = _floats(xs)
    drawn = False
    for name, ys in series.items():
        y = _floats(ys)
        if log_y:
            y[~(y > 0)] = np.nan  # a log axis cannot show zero or negative values
        if np.isfinite(y).any():
            ax.plot(x, y, label=name, linewidth=1.5, marker="." if len(x) < 30 else None)
            drawn = True
    if log_y and drawn:
        ax.set_yscale("log")
    _finish(fig, ax, path, title, x_label=x_label)


def errorbar_plot(path: str, series: dict[str, tuple[list[float], list[float], list[float]]], title: str,
                  x_label: str = "", size: tuple[int, int] = (800, 450)) -> None:
    """Each named series as (xs, means, stds): a line through the means with ±std bars (linear axes)."""
    fig, ax = _figure(size)
    ticks = set()
    for name, (xs, means, stds) in series.items():
        x, m, s = _floats(xs), _floats(means), _floats(stds)
        keep = np.isfinite(m)
        if not keep.any():
            continue
        s = np.where(np.isfinite(s) & (s > 0), s, 0.0)  # no bar where the spread is unknown
        ax.errorbar(x[keep], m[keep], yerr=s[keep], label=name[:40], marker="o", markersize=4, capsize=3)
        ticks.update(x[keep].tolist())
    if ticks and len(ticks) <= 12:  # label the measured x values themselves, not round numbers between them
        ax.set_xticks(sorted(ticks))
    _finish(fig, ax, path, title, x_label=x_label)


def histogram_plot(path: str, samples: dict[str, list[float]], title: str, bins: list[float],
                   x_label: str = "", size: tuple[int, int] = (800, 300)) -> None:
    """Overlaid step histograms of each named sample, normalised to shares (sets of any size compare).

    The bins are drawn equally wide, labelled with their edges: area bins grow geometrically,
    and on a linear axis the small ones, where most defects fall, would be slivers.
    """
    fig, ax = _figure(size)
    positions = np.arange(len(bins))
    for name, values in samples.items():
        values = _floats(values)
        counts, _ = np.histogram(values[np.isfinite(values)], bins=bins)  # last bin closed on the right
        shares = counts / max(1, len(values))
        ax.stairs(shares, positions, label=f"{name[:30]} ({len(values)})", linewidth=1.5)
    ax.set_xticks(positions, [f"{edge:.3g}" for edge in bins])
    ax.set_ylim(bottom=0)
    _finish(fig, ax, path, title, x_label=x_label, y_label="share of images")
