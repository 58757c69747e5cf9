"""Plots (matplotlib on Agg): PNGs of the requested size, drawn whatever the data looks like."""

import numpy as np
import pytest
from PIL import Image

from defect_gen.training.plots import errorbar_plot, histogram_plot, line_plot


def _png(path, size):
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == size
        pixels = np.asarray(img.convert("RGB"))
    return len(np.unique(pixels.reshape(-1, 3), axis=0))  # colours: text, lines, antialiasing


def test_line_plot_log_axis_with_gaps_zeros_and_none(tmp_path):
    path = tmp_path / "loss.png"
    line_plot(str(path), [1, 2, 3, 4], {"loss": [0.5, 0.2, 0.1, 0.05], "loss t in [0, 250)": [None, 0.0, float("nan"),
                                                                                             0.3]}, "training loss")
    assert _png(path, (800, 450)) > 20


@pytest.mark.parametrize("series", [{}, {"loss": []}, {"loss": [float("nan")]}, {"loss": [0.0, -1.0]}])
def test_plots_of_nothing_still_write_a_png(tmp_path, series):
    xs = [1] if series.get("loss") and len(series["loss"]) == 1 else [1, 2][:len(series.get("loss", []))]
    line_plot(str(tmp_path / "a.png"), xs, series, "empty")
    errorbar_plot(str(tmp_path / "b.png"), {k: (xs, v, v) for k, v in series.items()}, "empty")
    histogram_plot(str(tmp_path / "c.png"), {k: v for k, v in series.items()}, "empty", [0.0, 0.5, 1.0])
    for name in "abc":
        assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_errorbar_and_histogram(tmp_path):
    errorbar_plot(str(tmp_path / "ratio.png"), {"real + paint": ([0, 1, 2], [40.0, 42.5, 41.0], [1.0, 2.0, None]),
                                                "copy-paste": ([0, 1], [40.0, 39.0], [1.0, 0.5])},
                  "held-out mIoU (%)", x_label="synthetic pairs per real pair")
    assert _png(tmp_path / "ratio.png", (800, 450)) > 20
    bins = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    histogram_plot(str(tmp_path / "areas.png"), {"real": [0.001, 0.004, 0.3, 1.0], "paint": [0.02] * 5 + [2.0]},
                   "defect area", bins, x_label="defect area / image area")
    assert _png(tmp_path / "areas.png", (800, 300)) > 20


def test_plot_seeds_keeps_the_longest_series_and_the_asked_ratios(tmp_path):
    import importlib.util
    import json
    import subprocess
    import sys

    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("plot_seeds", f"{ROOT}/experiments/magnetic_tile/plot_seeds.py")
    plot_seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_seeds)

    def run(label, ratio, n, m):
        return {"label": label, "ratio": ratio, "num_synthetic": 0 if label == "real only" else 1,
                "per_seed": [{"mIoU": m}] * n}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"runs": [run("real only", 0.0, 3, 0.3), run("cp", 2.0, 3, 0.31), run("cp", 4.0, 3, 0.2)]}))
    b.write_text(json.dumps({"runs": [run("real only", 0.0, 5, 0.3), run("mix", 1.5, 5, 0.33)]}))
    series = plot_seeds.seed_series([str(a), str(b)], [1.5, 2.0], {"mix": "per class"})
    assert series == {"real only": [30.0] * 5, "+ cp x2": [31.0] * 3, "+ per class x1.5": [33.0] * 5}
    out = tmp_path / "seeds.png"
    done = subprocess.run([sys.executable, f"{ROOT}/experiments/magnetic_tile/plot_seeds.py", str(a), str(b),
                           "--ratio", "2", "--ratio", "1.5", "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert _png(out, (800, 450)) > 20  # line_plot's size; lines, legend and text drawn
