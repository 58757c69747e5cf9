"""Export folders: one model's sampling weights, ready to share, loadable without pickle.

    EXPORT/
      model.safetensors   the weights sampling uses (the train.ema_rate EMA), float tensors only
      config.yaml         the resolved config the network is built from
      export.json         format, step, EMA rate, source checkpoint path + sha256, weights sha256
      MODEL_CARD.md       what the model is, was trained on, and is not known to do (`model_card`)

`defect-gen export RUN` writes one from a training run (`export_run`); `defect-gen
convert-published` from a published checkpoint + YAML (`published.convert`).
`sample.load_model` accepts the folder (or its model.safetensors) wherever a checkpoint goes.

Why safetensors: a .pt file is a pickle, and even `torch.load(weights_only=True)` has to run
an unpickler over untrusted bytes; safetensors is a JSON header plus raw tensor data.

Writing is atomic: the files go into a hidden temporary folder beside EXPORT, which is
renamed into place at the end, so EXPORT is either absent, the old export, or complete. An
existing EXPORT is never replaced without `force`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import shutil

from defect_gen import fsutil
from defect_gen.config import Config, from_dict, read_yaml, to_yaml
from defect_gen.errors import CheckpointError, ConfigError, DefectGenError
from defect_gen.models import checkpoint as ckpt_lib

FORMAT = "defect-gen-export/1"
WEIGHTS, CONFIG, META, CARD = "model.safetensors", "config.yaml", "export.json", "MODEL_CARD.md"
REQUIRED = (WEIGHTS, CONFIG, META)  # the card is for people; loading does not need it
SOURCE_OURS, SOURCE_PUBLISHED = "defect-gen/1", "published"


@dataclasses.dataclass
class Export:
    weights: dict
    cfg: Config
    meta: dict
    path: str  # the model.safetensors file (named in errors, as a checkpoint path would be)

    @property
    def published(self) -> bool:
        return self.meta.get("source", {}).get("format") == SOURCE_PUBLISHED


# ---------------------------------------------------------------------------------------
# Reading


def folder_of(path: str) -> str | None:
    """The export folder `path` names (the folder, or its model.safetensors), or None if it names none.

    A folder counts as an export when it holds any export file, so one missing the others is
    reported as a broken export rather than as "no checkpoint in it".
    """
    if os.path.isfile(path) and path.endswith(".safetensors"):
        return os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and any(os.path.exists(os.path.join(path, n)) for n in (WEIGHTS, META)):
        return path
    return None


def _read_meta(folder: str) -> dict:
    path = os.path.join(folder, META)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:80]}); "
                              f"re-export the model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: format {found!r}, expected {FORMAT!r} (written by `defect-gen export`)")
    return meta


def _read_weights(path: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]}); "
                              f"re-export the model") from None


def load(path: str) -> Export:
    """Read an export folder (or its model.safetensors). No pickle is involved anywhere."""
    folder = folder_of(path)
    if folder is None:
        raise CheckpointError(f"{path} is not an export folder (expected {', '.join(REQUIRED)} in it)")
    for name in REQUIRED:
        if not os.path.isfile(os.path.join(folder, name)):
            raise CheckpointError(f"{os.path.join(folder, name)} is missing: an export folder holds "
                                  f"{', '.join(REQUIRED)} (write one with `defect-gen export`)")
    meta = _read_meta(folder)
    config_path = os.path.join(folder, CONFIG)
    try:
        cfg = from_dict(read_yaml(config_path))
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if config_path in message else f"{config_path}: {message}") from None
    weights_path = os.path.join(folder, WEIGHTS)
    return Export(_read_weights(weights_path), cfg, meta, weights_path)


# ---------------------------------------------------------------------------------------
# Writing


def refuse_existing(out: str, force: bool) -> None:
    """Refuse, before any work, to replace what is at `out` (an export only with `force`)."""
    if not os.path.lexists(out):
        return
    if not force:
        raise DefectGenError.with_params("{out} {path} already exists; pass {force} to replace it, or choose "
                                         "another {out} (nothing was written)", path=out)
    if not os.path.isdir(out) or folder_of(out) is None:
        # --force replaces an export, never an arbitrary file or folder someone pointed at by mistake
        raise DefectGenError.with_params("{out} {path} exists and is not an export folder; {force} only replaces "
                                         "exports (nothing was written)", path=out)


def _write_weights(path: str, weights: dict) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    # safetensors stores each tensor's own bytes: no views sharing storage, no gaps.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    try:
        save_file(tensors, path, metadata={"format": FORMAT})
    except SafetensorError as exc:  # its I/O errors (a full disk) are not OSErrors
        raise CheckpointError(f"could not write {path}: {str(exc).splitlines()[0][:160]}") from None
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_export(out: str, weights: dict, cfg: Config, step: int | None, ema_rate: str | None, source: dict,
                 weights_kind: str = "ema", force: bool = False, report: str | None = None,
                 notes: dict | None = None) -> str:
    """Write the export folder `out` atomically (temp folder + rename); return its path."""
    from defect_gen.models.model_card import model_card

    refuse_existing(out, force)
    out = os.path.normpath(out)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        _write_weights(os.path.join(tmp, WEIGHTS), weights)
        fsutil.atomic_write_text(os.path.join(tmp, CONFIG), to_yaml(cfg))
        meta = {"format": FORMAT, "step": step, "ema_rate": ema_rate, "weights": weights_kind, "source": source,
                "parameters": sum(v.numel() for v in weights.values()),
                "weights_sha256": fsutil.file_sha256(os.path.join(tmp, WEIGHTS)),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        fsutil.atomic_write_json(os.path.join(tmp, META), meta)
        card = model_card(cfg, meta, report=report, notes=notes or {})
        fsutil.atomic_write_text(os.path.join(tmp, CARD), card)
        _replace(tmp, out, force)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise fsutil.output_error(out, exc, "out") from None
        raise
    return out


def _replace(tmp: str, out: str, force: bool) -> None:
    """Rename the finished temp folder to `out`; with `force`, the old export goes only after."""
    old = None
    if force and os.path.isdir(out):
        old = f"{tmp}.old"
        os.replace(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)  # put the previous export back: never left with none
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsutil.fsync_dir(os.path.dirname(os.path.abspath(out)))


def _run_notes(checkpoint_path: str) -> dict:
    """What the run folder around a checkpoint says about training: the pairs it used."""
    run = os.path.dirname(os.path.dirname(os.path.abspath(checkpoint_path)))
    notes = {"run_dir": run}
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(run, "selected_files.json"), encoding="utf-8") as f:
            selection = json.load(f)
        notes["num_train_images"] = len(selection.get("selected") or [])
        counts: dict[str, int] = {}
        for row in selection.get("selected") or []:
            for name in row.get("classes") or []:
                counts[name] = counts.get(name, 0) + 1
        notes["class_counts"] = counts
    return notes


def export_run(src: str, out: str, rate: str | None = None, force: bool = False, report: str | None = None) -> str:
    """Export one EMA of a training checkpoint (a .pt file or run folder, its latest checkpoint).

    `rate` picks the EMA (default: the one sampling uses, train.ema_rate).
    """
    refuse_existing(out, force)
    path = ckpt_lib.resolve(src)
    ckpt = ckpt_lib.load(path)
    emas = ckpt.get("ema") or {}
    if ckpt.get("format") != ckpt_lib.FORMAT or "config" not in ckpt or not emas:
        raise CheckpointError(f"{path} is not a defect-gen training checkpoint with EMA weights (a published "
                              f"checkpoint? use `defect-gen convert-published`)")
    rate = str(rate) if rate is not None else ckpt_lib.sampling_rate(ckpt, path)
    if rate not in emas:
        raise CheckpointError(f"{path} has no EMA at rate {rate}; it has: {', '.join(emas)}")
    try:
        cfg = from_dict(ckpt["config"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if report is not None and not os.path.isfile(os.path.join(report, "results.json")):
        raise DefectGenError.with_params("{report} {path}: no results.json in it; expected a `defect-gen evaluate "
                                         "--out` folder", path=report)
    source = {"path": os.path.abspath(path), "sha256": fsutil.file_sha256(path), "format": SOURCE_OURS}
    return write_export(out, ckpt_lib.strip_ddp_prefix(emas[rate]), cfg, step=ckpt.get("step"), ema_rate=rate,
                        source=source, force=force, report=report, notes=_run_notes(path))
