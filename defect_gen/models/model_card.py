"""MODEL_CARD.md of an export: what the model is, what it was trained on, how to sample, its limits.

Everything is read from the config, the export metadata and (when the export came from a run
folder) the run's selected_files.json; nothing is claimed that those do not say. A model is
"not evaluated" unless an evaluation report (`defect-gen evaluate --out DIR`) is given.
"""

from __future__ import annotations

import json
import os

from defect_gen.config import Config
from defect_gen.core.diffusion import window
from defect_gen.core.unet import receptive_field


def _role(cfg: Config) -> tuple[str, str]:
    """("large" | "small" | "whole-chain", how it fits into two-stage sampling)."""
    d = cfg.diffusion
    lo, hi = window(d.num_timesteps, d.t_min, d.t_max)
    rf = receptive_field(cfg.model)
    if hi < d.num_timesteps:
        return "small", (f"the small-RF stage: pass it as `--small_recep` with `--step_inference S`, S <= {hi} "
                         f"(it was trained on t < {hi} only)")
    if lo > 0:
        return "large", (f"the large-RF stage: pass it as `--large_recep` with `--step_inference S`, S >= {lo} "
                         f"(it was trained on t >= {lo} only)")
    kind = "large" if rf.is_global else "small"
    return kind, (f"either stage (trained on every timestep); its {'global' if rf.is_global else 'local'} "
                  f"receptive field suits `--{kind}_recep`")


def _architecture(cfg: Config, meta: dict) -> list[str]:
    m, d = cfg.model, cfg.diffusion
    rf = receptive_field(m)
    lo, hi = window(d.num_timesteps, d.t_min, d.t_max)
    field = ("global: attention lets every output pixel see the whole image" if rf.is_global else
             f"{rf.pixels} x {rf.pixels} px of the {m.image_size} px image ({rf.share:.0%} of its side): "
             f"no attention, each pixel sees only a patch")
    attention = ", ".join(f"1/{a}" for a in m.attention_downsample) or "none"
    params = meta.get("parameters")
    return [
        f"- Image size: {m.image_size} x {m.image_size} px; output: RGB + a one-hot mask of "
        f"{cfg.num_defect + 1} channels (background + {cfg.num_defect} classes)",
        f"- UNet: {m.model_channels} base channels, channel_mult {m.channel_mult}, {m.num_res_blocks} res "
        f"block{'s' * (m.num_res_blocks != 1)} per level, attention at {attention}, middle block "
        f"{'yes' if m.middle_block else 'no'}"
        + (f"; {params / 1e6:.2f} M parameters" if params else ""),
        f"- Receptive field: {field}",
        f"- Diffusion: {d.num_timesteps} steps, {d.schedule} schedule, predicts {d.predict}",
        f"- Timestep window: trained on t in [{lo}, {hi})" + (" (the whole chain)" if (lo, hi) == (0, d.num_timesteps)
                                                              else f" of 0..{d.num_timesteps - 1}"),
    ]


def _training(cfg: Config, meta: dict, notes: dict) -> list[str]:
    published = meta.get("source", {}).get("format") == "published"
    classes = ", ".join(f"{i} = {name}" for i, name in enumerate(cfg.data.classes, start=1))
    lines = [f"- Classes (mask value = name, 0 = background): {classes}"]
    if published:
        lines += ["- Data: unknown (a published Defect-Gen checkpoint; its YAML does not name the data used, and "
                  "the class names are generic)",
                  "- Steps trained: unknown (published checkpoints do not record it)"]
    else:
        d, t = cfg.data, cfg.train
        lines.append(f"- Data: root `{d.root}`, layout {d.layout}"
                     + (f", {d.num_images_per_class} images per class selected (seed {d.selection_seed})"
                        if d.num_images_per_class else ""))
        if "num_train_images" in notes:
            counts = ", ".join(f"{k} {v}" for k, v in notes["class_counts"].items())
            lines.append(f"- Training pairs: {notes['num_train_images']} (images holding each class: "
                         f"{counts or 'none'})")
        lines.append(f"- Steps trained: {meta.get('step')} of train.max_steps {t.max_steps}, batch size "
                     f"{t.batch_size}, lr {t.lr:g}; these weights are the EMA at rate {meta.get('ema_rate')}")
    return lines


def _sampling(cfg: Config, meta: dict) -> list[str]:
    published = meta.get("source", {}).get("format") == "published"
    _, how = _role(cfg)
    sampler = ("ddim with eta 0 (the published implementation's step)" if published else "ddpm")
    return [f"- Use it as {how}.",
            f"- Defaults: sampler {sampler}; every one of the {cfg.diffusion.num_timesteps} timesteps unless "
            f"`--steps N`; `--sampler` and `--eta` override.",
            "- Example: `defect-gen sample --large_recep LARGE_EXPORT --small_recep SMALL_EXPORT "
            f"--step_inference S --num_defect {cfg.num_defect} --sample_dir samples --num_samples 16`"]


def _percent(value) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "n/a"  # null: undefined in that run


def _evaluation(report: str | None) -> list[str]:
    if report is None:
        return ["- Not evaluated: no `defect-gen evaluate` report was given with this export. Whether its pairs help a "
                "segmenter on your data is unknown until `defect-gen evaluate` says so."]
    with open(os.path.join(report, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    lines = [f"- Evaluated in `{report}` (report.md there): held-out mIoU of a segmenter trained on",
             "", "| training set | synthetic:real | mIoU (%) mean ± std over seeds |", "| --- | --- | --- |"]
    for run in results.get("runs") or []:
        mean, std = (list(run.get("summary", {}).get("mIoU") or []) + [None, None])[:2]
        lines.append(f"| {run.get('label')} | {run.get('ratio')} | {_percent(mean)} ± {_percent(std)} |")
    return lines + [""]


def _limits(cfg: Config, meta: dict, notes: dict, report: str | None) -> list[str]:
    rf = receptive_field(cfg.model)
    n = notes.get("num_train_images")
    lines = []
    if n is not None:
        lines.append(f"- Trained on {n} image{'s' * (n != 1)}: expect it to reproduce their defect shapes, "
                     f"textures and placement, not to invent defect kinds it has not seen.")
    elif meta.get("source", {}).get("format") != "published":
        lines.append("- The number of training images is unknown (no selected_files.json beside the checkpoint).")
    if not rf.is_global:
        lines.append(f"- Local receptive field ({rf.pixels} px): alone it cannot lay out a whole image; it "
                     f"refines what a large-RF model started.")
    lines += [f"- Generates {cfg.model.image_size} px pairs of exactly these {cfg.num_defect} classes; other sizes or "
              f"classes need retraining.",
              *_evaluation(report)]
    return lines


def model_card(cfg: Config, meta: dict, report: str | None = None, notes: dict | None = None) -> str:
    """The markdown text of MODEL_CARD.md."""
    notes = notes or {}
    role, _ = _role(cfg)
    source = meta.get("source", {})
    origin = "a published Defect-Gen checkpoint" if source.get("format") == "published" else "a defect-gen run"
    sections = [
        [f"# Model card: {role}-receptive-field Defect-Gen model", "",
         f"Exported {meta.get('created', '')} from {origin}: `{source.get('path')}` (sha256 "
         f"`{source.get('sha256', '')[:16]}…`). Files: `model.safetensors` (weights, sha256 in `export.json`), "
         f"`config.yaml`, `export.json`."],
        ["## Model", "", *_architecture(cfg, meta)],
        ["## Training", "", *_training(cfg, meta, notes)],
        ["## Sampling", "", *_sampling(cfg, meta)],
        ["## Known limits", "", *_limits(cfg, meta, notes, report)],
    ]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"
