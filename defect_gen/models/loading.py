"""Models from any accepted path: an export folder, one of our checkpoints (file or run folder,
config inside) or a published Defect-Gen checkpoint with its YAML -> `LoadedModel`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from defect_gen import fsutil
from defect_gen.config import Config, from_dict, load_config
from defect_gen.core.unet import build_unet
from defect_gen.errors import CheckpointError, ConfigError
from defect_gen.models import checkpoint as ckpt_lib
from defect_gen.models import export, published


@dataclass
class LoadedModel:
    model: torch.nn.Module
    cfg: Config
    path: str
    published: bool = False  # a checkpoint of the published implementation (sampled with its step)
    step: int | None = None  # the training step of the weights (None: the file does not say)
    _sha256: str | None = field(default=None, repr=False)

    def provenance(self) -> dict:
        """Which weights these are: {path, step, sha256}; the file is hashed once, on first use
        (None where the path is not a file, as for a model built in memory)."""
        if self._sha256 is None and os.path.isfile(self.path):
            self._sha256 = fsutil.file_sha256(self.path)
        return {"path": os.path.abspath(self.path) if os.path.isfile(self.path) else self.path, "step": self.step,
                "sha256": self._sha256}





# The fields that decide whether weights fit a network (dropout and checkpointing do not).
ARCHITECTURE = ("image_size", "model_channels", "channel_mult", "num_res_blocks", "attention_downsample",
                "middle_block", "use_scale_shift_norm", "class_cond")


def read_any_config(path: str) -> Config:
    """Our YAML config, or the published implementation's (recognised by its model.target)."""
    return published.from_published_yaml(path) if published.is_published_yaml(path) else load_config(path)


def _same_architecture(inside: Config, given: Config, path: str, config_path: str) -> None:
    pairs = [(f"model.{k}", getattr(inside.model, k), getattr(given.model, k)) for k in ARCHITECTURE]
    pairs.append(("number of defect classes", inside.num_defect, given.num_defect))
    for what, a, b in pairs:
        if a != b:
            raise ConfigError(f"{config_path}: {what} is {b}, but {path} was trained with {a}; our checkpoints "
                              f"carry their config, so the config flag can be left out")


def _checkpoint_config(ckpt: dict, path: str, config_path: str | None) -> Config:
    """The config inside one of our checkpoints (checked against `config_path` when one is given)."""
    if ckpt.get("format") == ckpt_lib.FORMAT and "config" in ckpt:
        try:  # the config inside is data like any other (class names become output folders)
            cfg = from_dict(ckpt["config"])
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if config_path:
            _same_architecture(cfg, read_any_config(config_path), path, config_path)
        return cfg
    keys = ", ".join(map(str, list(ckpt)[:6]))
    raise CheckpointError(f"{path} is neither a defect-gen checkpoint nor a published Defect-Gen one "
                          f"(top-level keys: {keys})")


def _load_export(path: str, raw_weights: bool, config_path: str | None) -> tuple[dict, Config, str, bool, int | None]:
    loaded = export.load(path)
    if raw_weights:
        raise ConfigError(f"{loaded.path} holds only the weights sampling uses (an export); the raw weights are in "
                          f"the training checkpoint it came from: {loaded.meta.get('source', {}).get('path')}")
    if config_path:
        _same_architecture(loaded.cfg, read_any_config(config_path), loaded.path, config_path)
    return loaded.weights, loaded.cfg, loaded.path, loaded.published, loaded.meta.get("step")


def _load_weights_and_config(path: str, raw_weights: bool, config_path: str | None,
                             config_param: str) -> tuple[dict, Config, str, bool, int | None]:
    """(weights, config, the file they came from, published?, training step) for any accepted kind of path."""
    if export.folder_of(path) is not None:
        return _load_export(path, raw_weights, config_path)
    path = ckpt_lib.resolve(path)
    ckpt = ckpt_lib.load(path)
    if published.is_published(ckpt):
        weights, cfg = published.weights_and_config(ckpt, path, config_path, raw_weights, config_param)
        return weights, cfg, path, True, ckpt.get("step")
    cfg = _checkpoint_config(ckpt, path, config_path)
    return ckpt_lib.strip_ddp_prefix(ckpt_lib.ema_weights(ckpt, path, raw_weights)), cfg, path, False, ckpt.get("step")


def load_model(path: str, device: torch.device, raw_weights: bool = False, config_path: str | None = None,
               config_param: str = "large_config") -> LoadedModel:
    """A model from an export folder (`defect-gen export`; or its model.safetensors), our
    checkpoint (a .pt file or run folder; config inside) or the published implementation's
    ({"model", "ema", "optimizer"} with its YAML as `config_path`).

    EMA weights unless `raw_weights`; keys and shapes must match exactly. `config_param` is the
    argument that gives `config_path` (large_config / small_config), for the error asking for it.
    """
    weights, cfg, path, is_published, step = _load_weights_and_config(path, raw_weights, config_path, config_param)
    model = build_unet(cfg.model, cfg.num_defect)
    ckpt_lib.load_weights(model, weights, path)
    return LoadedModel(model.to(device).eval(), cfg, path, is_published, step)
