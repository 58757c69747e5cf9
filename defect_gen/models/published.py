"""The published Defect-Gen implementation's files, in one place: recognise, read, convert.

That implementation (github EnVision-Research/Defect_Spectrum) saves
`{"model": sd, "ema": sd, "optimizer": sd}` (no format tag, no config) and builds its network
from a YAML whose `model.target` names a class to import. Here:

- `from_published_yaml`: that YAML -> our Config (only model.target, model.params and
  diffusion.params matter; nothing named in it is imported);
- `is_published` / `published_weights`: recognise such a checkpoint, pick the weights to sample with;
- `convert`: checkpoint + YAML -> our export folder (`defect_gen.models.export`), once, so that
  everything downstream reads one format.

`sample.load_model` still accepts the checkpoint + YAML directly (through this module).
"""

from __future__ import annotations

import os

import torch

from defect_gen import fsutil
from defect_gen.config import Config, from_dict, read_yaml
from defect_gen.errors import CheckpointError, ConfigError, short_repr
from defect_gen.models import checkpoint as ckpt_lib

# ---------------------------------------------------------------------------------------
# Its YAML

# Its model.target names a class to import; we only map the two names to our UNet's shapes.
PUBLISHED_TARGETS = {"models.unet.openaiunet.UNetModel": "large", "models.unet.unet_receptive.UNetModel": "small"}
PUBLISHED_DIFFUSIONS = ("diffusion.base_diffusion.ColdDiffusion", "diffusion.base_diffusion.GaussianDiffusion")
# model.params read as our fields of the same name
_PUBLISHED_SAME = ("image_size", "model_channels", "num_res_blocks", "channel_mult", "dropout",
                   "num_heads", "num_head_channels", "num_heads_upsample", "use_scale_shift_norm")
# model.params that change nothing at inference: the small net has no attention to place,
# use_fp16 is a dtype, use_checkpoint saves training memory.
_PUBLISHED_IGNORED = ("attention_resolutions", "use_fp16", "use_checkpoint")
# model.params our UNet supports only at the published default
_PUBLISHED_FIXED = {"conv_resample": True, "dims": 2, "num_classes": None, "resblock_updown": False,
                    "use_new_attention_order": False}


def _published_model(params: dict, variant: str, resolution) -> tuple[dict, int]:
    """The published model.params as our `model` section, and the channel count."""
    known = set(_PUBLISHED_SAME) | set(_PUBLISHED_IGNORED) | set(_PUBLISHED_FIXED) | {
        "in_channels", "out_channels", "attention_downsample"}
    for key, value in params.items():
        if key not in known:
            raise ConfigError(f"model.params.{key} is not a parameter of the published UNet; known: "
                              f"{', '.join(sorted(known))}")
        if key in _PUBLISHED_FIXED and value != _PUBLISHED_FIXED[key]:
            raise ConfigError(f"model.params.{key}: {short_repr(value)} is not supported, "
                              f"only {_PUBLISHED_FIXED[key]!r}")
    channels = params.get("in_channels", 3)
    if params.get("out_channels", channels) != channels or not isinstance(channels, int) or channels < 5:
        raise ConfigError(f"model.params.in_channels/out_channels: expected one equal count >= 5 (RGB, background, "
                          f"defect classes), got {short_repr(channels)} and {short_repr(params.get('out_channels'))}")
    size = params.get("image_size", resolution)
    if size is None or (resolution is not None and resolution != size):
        raise ConfigError(f"model.params.image_size {short_repr(size)} and data.params.resolution "
                          f"{short_repr(resolution)}: "
                          f"expected the sampling size, given once or equal")
    model = {key: params[key] for key in _PUBLISHED_SAME if key in params}
    # The published defaults where the YAML is silent (openaiunet: scale-shift norm on,
    # (1, 2, 3, 4) levels; unet_receptive: scale-shift norm off, (1, 2, 4, 8) levels).
    model.setdefault("use_scale_shift_norm", variant == "large")
    model.setdefault("channel_mult", [1, 2, 3, 4] if variant == "large" else [1, 2, 4, 8])
    model.setdefault("num_head_channels", -1)
    attention = params.get("attention_downsample", "4, 8") if variant == "large" else []
    if isinstance(attention, str):  # the published default is the string "4, 8"
        attention = [int(a) for a in attention.replace(",", " ").split()]
    if "attention_downsample" not in params:  # its default names rates a shallow net lacks: none placed there
        attention = [a for a in attention if a < 2 ** len(model["channel_mult"])]
    model.update(image_size=size, attention_downsample=attention, middle_block=variant == "large")
    return model, channels


def _published_diffusion(section) -> dict:
    """The published diffusion section as our `diffusion` section (x0 or eps, cosine only)."""
    section = section or {}
    target = section.get("target", PUBLISHED_DIFFUSIONS[0])
    if target not in PUBLISHED_DIFFUSIONS:
        raise ConfigError(f"diffusion.target {short_repr(target)}: expected one of {', '.join(PUBLISHED_DIFFUSIONS)}")
    params = dict(section.get("params") or {})
    predict = params.pop("parameterization", "x0")
    schedule = params.pop("schedule", "cosine")
    steps = params.pop("num_timestep", 1000)
    if predict not in ("x0", "eps"):
        raise ConfigError(f"diffusion.params.parameterization: expected x0 or eps, got {short_repr(predict)}")
    if schedule != "cosine" or params.get("cosine_s", 8e-3) != 8e-3:
        # Its "linear" is LDM's squared-sqrt schedule, not ours; refusing beats sampling with the wrong one.
        raise ConfigError(f"diffusion.params.schedule: only the published cosine schedule (cosine_s 0.008) "
                          f"is supported, got {short_repr(schedule)}")
    unknown = sorted(set(params) - {"cosine_s", "linear_start", "linear_end"})
    if unknown:
        raise ConfigError(f"diffusion.params.{unknown[0]} is not a parameter of the published diffusion")
    return {"num_timesteps": steps, "schedule": "cosine", "predict": predict}


def from_published_yaml(path: str) -> Config:
    """A Config for a checkpoint of the published implementation, read from its YAML.

    Only `model.target` (openaiunet = large RF, unet_receptive = small RF), `model.params`
    and `diffusion.params` matter; data, optimizer and train sections describe its training
    and are skipped. The classes get generic names defect1..K, K = in_channels - 4.
    """
    data = read_yaml(path)
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    target = model.get("target")
    if target not in PUBLISHED_TARGETS:
        raise ConfigError(f"{path}: model.target {short_repr(target)} is not a published Defect-Gen network; expected "
                          f"one of {', '.join(PUBLISHED_TARGETS)}")
    data_section = data.get("data") if isinstance(data.get("data"), dict) else {}
    resolution = (data_section.get("params") or {}).get("resolution")
    try:
        model_section, channels = _published_model(dict(model.get("params") or {}), PUBLISHED_TARGETS[target],
                                                   resolution)
        classes = [f"defect{i}" for i in range(1, channels - 3)]
        return from_dict({"model": model_section, "diffusion": _published_diffusion(data.get("diffusion")),
                          "data": {"classes": classes}})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def is_published_yaml(path: str) -> bool:
    """Whether a YAML is the published implementation's (its model section names a `target`)."""
    model = read_yaml(path).get("model")
    return isinstance(model, dict) and "target" in model


# ---------------------------------------------------------------------------------------
# Its checkpoints


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def is_published(ckpt: dict) -> bool:
    """{"model": sd, "ema": sd, "optimizer": sd} with no format tag; a bare state_dict
    (guided-diffusion names) is accepted as its raw weights too."""
    if "format" in ckpt:
        return False
    return _is_state_dict(ckpt.get("model")) or ("time_embed.0.weight" in ckpt and _is_state_dict(ckpt))


def published_weights(ckpt: dict, path: str, raw: bool = False) -> dict:
    """The state_dict to sample with: its EMA (the weights worth sampling with) unless `raw`."""
    if _is_state_dict(ckpt.get("model")):
        return ckpt["model"] if raw or not _is_state_dict(ckpt.get("ema")) else ckpt["ema"]
    if _is_state_dict(ckpt):
        return ckpt
    raise CheckpointError(f"checkpoint {path}: no weights found (keys: {', '.join(map(str, list(ckpt)[:6]))}); "
                          f"expected the published {{model, ema, optimizer}} dict")


def weights_and_config(ckpt: dict, path: str, config_path: str | None, raw: bool = False,
                       config_param: str = "large_config") -> tuple[dict, Config]:
    """(weights to sample with, config from its YAML) of a loaded published checkpoint;
    `config_param` is the argument that gives the YAML."""
    if not config_path:
        raise ConfigError.with_params(f"{{path}} is a published-implementation checkpoint, which holds no config: "
                                      f"pass its YAML with {{{config_param}}}", path=path)
    return ckpt_lib.strip_ddp_prefix(published_weights(ckpt, path, raw)), from_published_yaml(config_path)


# ---------------------------------------------------------------------------------------
# Conversion to our export format


def convert(path: str, config_path: str, out: str, force: bool = False) -> str:
    """Write the export folder `out` (`defect_gen.models.export`) for a published checkpoint + YAML.

    The weights are checked against the network the YAML describes before anything is
    written, so a converted folder always loads. Samples from the folder use the published
    sampler default (DDIM, eta 0), as the checkpoint itself does.
    """
    from defect_gen.core.unet import build_unet
    from defect_gen.models import export  # export needs nothing from here; importing late keeps the two apart

    export.refuse_existing(out, force)
    ckpt = ckpt_lib.load(path)
    if not is_published(ckpt):
        raise CheckpointError(f"{path} is not a published Defect-Gen checkpoint (expected {{model, ema, optimizer}} "
                              f"state_dicts and no format tag; for our checkpoints use `defect-gen export`)")
    weights, cfg = weights_and_config(ckpt, path, config_path, config_param="config")
    ckpt_lib.load_weights(build_unet(cfg.model, cfg.num_defect), weights, path)
    source = {"path": os.path.abspath(path), "sha256": fsutil.file_sha256(path), "format": export.SOURCE_PUBLISHED,
              "config": os.path.abspath(config_path), "config_sha256": fsutil.file_sha256(config_path)}
    weights_kind = "ema" if _is_state_dict(ckpt.get("ema")) else "model"
    return export.write_export(out, weights, cfg, step=None, ema_rate=None, source=source,
                               weights_kind=weights_kind, force=force)
