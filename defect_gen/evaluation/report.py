"""REPORT_DIR/report.md, results.json and the PNG plots of an evaluation.

- eval_miou_ratio.png: held-out mIoU (mean ± std over seeds) against the synthetic:real
  ratio, one line per synthetic folder, starting from the real-only model at ratio 0;
- eval_areas_<class>.png: per-class defect-area histograms, real against each folder;
- eval_nn_<folder>.png: the generated images closest to a training image, each beside it
  (the memorisation check made visible).
"""

from __future__ import annotations

import math
import os

import numpy as np

from defect_gen import fsutil
from defect_gen.core.masks import overlay
from defect_gen.data.image_io import write_png
from defect_gen.evaluation.data import class_counts
from defect_gen.evaluation.metrics import fmt
from defect_gen.evaluation.run import COPY_PASTE, Results
from defect_gen.training.plots import errorbar_plot, histogram_plot

AREA_BINS = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
STRIP_PAIRS = 6


def _file_name(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def seg_table(results: Results) -> list[str]:
    """Markdown table: one row per training set, mean ± std (percent) over seeds."""
    names = results.class_names
    cols = ["mIoU", *[f"IoU {n}" for n in names], "precision", "recall", "F1"]
    base = results.runs[0].summary["mIoU"][0]
    lines = ["| training set | synthetic | ΔmIoU | " + " | ".join(cols) + " |",
             "|" + "---|" * (len(cols) + 3)]
    for run in results.runs:
        s = run.summary
        delta = "" if run.num_synthetic == 0 else f"{(s['mIoU'][0] - base) * 100:+.1f}"
        what = "real only" if run.num_synthetic == 0 else f"real + {run.label} x{run.ratio:g}"
        lines.append(f"| {what} | {run.num_synthetic} | {delta} | " + " | ".join(fmt(s[c]) for c in cols) + " |")
    return lines


def quality_table(results: Results) -> list[str]:
    lines = ["| pairs | n | defect-free | NN-distance ratio (gen/held-out) | near-copies | diversity | "
             "mask consistency mIoU | consistency F1 | KID / FID |", "|---|---|---|---|---|---|---|---|---|"]
    for label in ("real train", "real held-out"):
        pairs = results.train if label == "real train" else results.heldout
        lines.append(f"| {label} | {len(pairs)} | {_empty_share(pairs.masks):.0%} | | | "
                     f"{results.quality[label]['diversity']:.4f} | | | |")
    for label, syn in results.synthetic.items():
        q = results.quality[label]
        mem, kf = q["memorisation"], q.get("kid_fid", "")
        kf = kf if isinstance(kf, str) else f"KID {kf['KID']:.4f} / FID {kf['FID']:.1f}"
        lines.append(f"| {label} | {len(syn)} | {_empty_share(syn.masks):.0%} | "
                     f"{mem['ratio']:.3f} ({mem['gen_median']:.4f} / "
                     f"{mem['held_median']:.4f}) | {mem['copies']:.0%} | {q['diversity']:.4f} | "
                     f"{fmt(q['consistency']['mIoU'])} | {fmt(q['consistency']['F1'])} | {kf} |")
    return lines


def _empty_share(masks) -> float:
    """Share of pairs whose mask holds no defect pixel."""
    return float((masks.flatten(1) == 0).all(1).float().mean()) if len(masks) else math.nan


def area_table(results: Results) -> list[str]:
    """Per class: share of images containing it and median area, real against each folder."""
    sets = list(results.quality)
    lines = ["| class | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for c, name in enumerate(results.class_names, start=1):
        cells = []
        for label in sets:
            a = results.quality[label]["areas"][c]
            n = _set_size(results, label)
            med = f"{np.median(a) * 100:.2f}%" if len(a) else "-"
            cells.append(f"{len(a)}/{n} imgs, median {med}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _set_size(results: Results, label: str) -> int:
    if label == "real train":
        return len(results.train)
    if label == "real held-out":
        return len(results.heldout)
    return len(results.synthetic[label])


def plot_ratio(results: Results, path: str) -> None:
    base = results.runs[0].summary["mIoU"]
    series = {}
    for label in results.synthetic:
        runs = [r for r in results.runs if r.label == label]
        xs = [0.0] + [r.ratio for r in runs]
        summaries = [base] + [r.summary["mIoU"] for r in runs]
        series[label] = (xs, [m * 100 for m, _ in summaries], [s * 100 for _, s in summaries])
    scored = f"{results.folds}-fold cross-validated" if results.folds else "held-out"
    errorbar_plot(path, series, f"{scored} mIoU (%) against synthetic:real ratio (0 = real only; mean ± std)",
                  x_label="synthetic pairs per real pair")


def plot_areas(results: Results, out_dir: str) -> list[str]:
    files = []
    for c, name in enumerate(results.class_names, start=1):
        file = f"eval_areas_{_file_name(name)}.png"
        samples = {label: list(q["areas"][c]) for label, q in results.quality.items()}
        histogram_plot(os.path.join(out_dir, file), samples, f"defect area of class {name} (share of images "
                       f"containing it, per area bin)", AREA_BINS, x_label="defect area / image area")
        files.append(file)
    return files


def nn_strip(results: Results, label: str, path: str, count: int = STRIP_PAIRS) -> None:
    """Rows: the `count` generated pairs nearest to a training image | that training pair (overlays)."""
    mem, syn = results.quality[label]["memorisation"], results.synthetic[label]
    order = np.argsort(mem["dist"].numpy())[:count]
    rows = []
    for i in order:
        j = int(mem["index"][i])
        gen = syn.images[i].permute(1, 2, 0).numpy()
        real = results.train.images[j].permute(1, 2, 0).numpy()
        gap = np.full((gen.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([gen, overlay(gen, syn.masks[i].numpy()), gap, real,
                                    overlay(real, results.train.masks[j].numpy())], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    factor = max(1, min(4, 128 // syn.images.shape[-1]))  # cells of about 128 px, easy to inspect
    write_png(path, np.repeat(np.repeat(grid, factor, 0), factor, 1))


def _json_ready(results: Results) -> dict:
    """Everything measured, as plain JSON (per-seed scores included, so others can recompute)."""
    quality = {}
    for label, q in results.quality.items():
        row = {"diversity": q["diversity"],
               "areas": {n: [float(v) for v in q["areas"][c]] for c, n in enumerate(results.class_names, 1)}}
        if "memorisation" in q:
            mem = q["memorisation"]
            row["memorisation"] = {k: mem[k] for k in ("ratio", "gen_median", "held_median", "copies")}
            row["consistency"] = {k: list(v) for k, v in q["consistency"].items()}
            row["kid_fid"] = q.get("kid_fid")
        quality[label] = row
    s = results.settings
    return {"real_config": results.real_config, "split": results.how, "classes": results.class_names,
            "settings": {"ratios": s.ratios, "seeds": s.seeds, "image_size": s.image_size, "folds": results.folds,
                         "max_heldout": s.max_heldout, "copy_paste_dir": s.copy_paste_dir, "negatives": s.negatives,
                         "segmenter": vars(s.seg)},
            "num_train": len(results.train), "num_heldout": len(results.heldout), "synthetic": results.folders,
            "runs": [{"label": r.label, "ratio": r.ratio, "num_synthetic": r.num_synthetic, "per_seed": r.per_seed,
                      "summary": {k: list(v) for k, v in r.summary.items()}} for r in results.runs],
            "skipped": results.skipped, "quality": quality, "seconds": results.seconds}


def _header(results: Results, command: str) -> list[str]:
    """The command, the data, the split and the segmenter settings."""
    s = results.settings
    if results.folds:
        scored = (f"- scores on the training pairs themselves, by {results.folds}-fold cross-validation (each pair "
                  f"predicted by segmenters that did not train on it; generated pairs made from a validation photo "
                  f"left out of that fold's training), mean ± std over seeds, in percent")
    else:
        scored = "- scores on the held-out real pairs, mean ± std over seeds, in percent"
    return ["# Evaluation report", "", f"Command: `{command}`", "",
            f"- real data: `{results.real_config}`; {results.how}",
            f"- {'validation' if results.folds else 'held-out'} images per class: "
            + ", ".join(f"{k} {v}" for k, v in class_counts(results.heldout, results.class_names).items()),
            *([f"- `{COPY_PASTE}`: the baseline, real training defects pasted onto the defect-free photos of "
               f"`{s.copy_paste_dir}` at random spots (flips, quarter turns, scale 0.75-1.25)"]
              if s.copy_paste_dir else []),
            f"- image size {s.image_size} px; segmenter `{s.seg.arch}` (width {s.seg.width}) trained from scratch, "
            f"{s.seg.steps} steps of batch {s.seg.batch_size}, lr {s.seg.lr:g}"
            + (f", the last {s.seg.real_finish:.0%} of them on the real pairs alone" if s.seg.real_finish else "")
            + (f", {s.seg.real_share:.0%} of each mixed batch real" if s.seg.real_share else "")
            + f"; seeds 0..{s.seeds - 1}; {results.seconds / 60:.1f} min",
            scored + "; mIoU over the defect classes; precision / recall / F1 of defect pixels (any class) "
            "against background"]


def _quality_section(results: Results, out_dir: str) -> list[str]:
    """Generation quality, defect areas and the nearest-training-image strips, with their plots."""
    area_files = plot_areas(results, out_dir)
    strips = {}
    for label in results.synthetic:
        strips[label] = f"eval_nn_{_file_name(label)}.png"
        nn_strip(results, label, os.path.join(out_dir, strips[label]))
    lines = ["## Generation quality", "", *quality_table(results),
             "", "- NN-distance ratio: median RMS distance (32 px, 0..1) from each generated image to its nearest "
             "training image over the same for held-out real images; near 1 = as novel as new photos, well "
             "below 1 = memorised. Near-copies: generated images closer than 95 % of held-out ones.",
             "- defect-free: share of pairs whose mask (at the evaluation size) holds no defect pixel.",
             "- diversity: mean pairwise RMS distance within the set.",
             "- mask consistency: the real-only segmenters' predictions on the generated images scored against "
             "the generated masks (mean ± std over seeds).", "", "## Defect areas", "", *area_table(results), ""]
    lines += [f"![{f}]({f})" for f in area_files] + ["", "## Nearest training images", "",
                                                     "Each row: generated image | its mask | nearest training "
                                                     "image | its mask (closest first).", ""]
    for label, file in strips.items():
        lines += [f"**{label}**", "", f"![{label}]({file})", ""]
    return lines


def write_report(results: Results, out_dir: str, command: str) -> str:
    """Write report.md, results.json and the plots into out_dir; return report.md's path.
    A cross-validated evaluation has no held-out photos to measure generation quality against:
    its report is the segmentation table and the ratio plot."""
    os.makedirs(out_dir, exist_ok=True)
    # NaN (a class absent from a split, an undefined precision) becomes null: JSON has no NaN.
    fsutil.atomic_write_json(os.path.join(out_dir, "results.json"), _json_ready(results))
    plot_ratio(results, os.path.join(out_dir, "eval_miou_ratio.png"))
    lines = [*_header(results, command), "", "## Segmentation: real only against real + synthetic", "",
             *seg_table(results), ""]
    lines += [f"- skipped: {line}" for line in results.skipped] + ([""] if results.skipped else [])
    lines += ["![mIoU against ratio](eval_miou_ratio.png)", ""]
    if not results.folds:
        lines += _quality_section(results, out_dir)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
