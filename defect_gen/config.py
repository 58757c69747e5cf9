"""Configuration: nested dataclasses loaded strictly from YAML.

A config file has four sections (`model`, `diffusion`, `data`, `train`); every key is a field
below, with its type and default. Loading is strict on purpose: a misspelt key silently
falling back to its default would cost a user a multi-day training run, so unknown keys and
wrong types are errors naming the key and what is allowed. YAML is read with `safe_load`
and no value is ever imported or evaluated.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field

import yaml

from defect_gen.errors import ConfigError


@dataclass
class ModelConfig:
    """The UNet's shape. Its down-sampling depth (len(channel_mult)) sets the receptive field."""

    image_size: int = 64
    model_channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4, 4])
    num_res_blocks: int = 2
    # Down-sampling rates (1 = full resolution, 2 = half, ...) with a self-attention block.
    attention_downsample: list[int] = field(default_factory=lambda: [8, 16, 32])
    num_head_channels: int = 64  # channels per attention head; -1 uses num_heads instead
    num_heads: int = 4
    # The large-RF network has a middle block (ResBlock, attention, ResBlock); the small-RF
    # one has none and feeds its deepest feature straight to the first decoder block.
    middle_block: bool = True
    use_scale_shift_norm: bool = True
    dropout: float = 0.0
    use_checkpoint: bool = False  # gradient checkpointing: less memory, ~30 % more compute


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000
    schedule: str = "cosine"  # cosine | linear
    predict: str = "x0"  # what the network outputs: x0 (as published) | eps | v
    mask_loss_weight: float = 1.0  # weight of the mask channels' MSE relative to RGB
    # Train only on timesteps in [t_min, t_max): each model learns the steps it will serve.
    t_min: int = 0
    t_max: typing.Optional[int] = None  # None = num_timesteps


@dataclass
class DataConfig:
    root: str = ""
    layout: str = "paired"  # images/<stem>.<ext> + masks/<stem>.png class-index masks
    classes: list[str] = field(default_factory=list)  # defect class names, in mask-index order
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False


@dataclass
class TrainConfig:
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    max_steps: int = 10000
    ema_rate: float = 0.9999
    save_every: int = 1000
    keep_last: int = 3  # checkpoints kept in WORK_DIR/checkpoint
    log_every: int = 50
    # Every N steps (and at the end) WORK_DIR/samples/step_N.png shows the EMA model's
    # output over its timestep window (image | colour mask | overlay); 0 = never.
    sample_every: int = 0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def num_defect(self) -> int:
        return len(self.data.classes)


# ---------------------------------------------------------------------------------------
# Strict conversion from plain YAML data


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None)) + " or null"
    return tp.__name__


def _coerce(value, tp, key: str):
    """Check `value` against the annotation `tp`, converting only where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return _coerce(value, inner, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[tp](value)
    if not ok:
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def _build(cls, data, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or 'top level'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'; allowed: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, path)
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def _positive(key: str, value) -> None:
    if value <= 0:
        raise ConfigError(f"config key '{key}': must be > 0, got {value}")


def validate(cfg: Config) -> Config:
    """Check values a type cannot express; return cfg for chaining."""
    m, d, t = cfg.model, cfg.diffusion, cfg.train
    for key in ("image_size", "model_channels", "num_res_blocks"):
        _positive(f"model.{key}", getattr(m, key))
    if not m.channel_mult or any(c <= 0 for c in m.channel_mult):
        raise ConfigError(f"config key 'model.channel_mult': expected positive integers, got {m.channel_mult}")
    depth = 2 ** (len(m.channel_mult) - 1)
    if m.image_size % depth:
        raise ConfigError(
            f"config key 'model.image_size': {m.image_size} is not divisible by {depth}, "
            f"the total down-sampling of channel_mult {m.channel_mult}"
        )
    if m.num_head_channels == -1:
        _positive("model.num_heads", m.num_heads)
    else:
        _positive("model.num_head_channels", m.num_head_channels)
    if d.schedule not in ("cosine", "linear"):
        raise ConfigError(f"config key 'diffusion.schedule': expected cosine or linear, got {d.schedule!r}")
    if d.predict not in ("x0", "eps", "v"):
        raise ConfigError(f"config key 'diffusion.predict': expected x0, eps or v, got {d.predict!r}")
    _positive("diffusion.num_timesteps", d.num_timesteps)
    t_max = d.num_timesteps if d.t_max is None else d.t_max
    if not 0 <= d.t_min < t_max <= d.num_timesteps:
        raise ConfigError(
            f"config keys 'diffusion.t_min'/'diffusion.t_max': need 0 <= t_min < t_max <= "
            f"{d.num_timesteps}, got t_min={d.t_min}, t_max={d.t_max}"
        )
    for key in ("batch_size", "lr", "max_steps", "save_every", "keep_last", "log_every"):
        _positive(f"train.{key}", getattr(t, key))
    if not 0.0 <= t.ema_rate < 1.0:
        raise ConfigError(f"config key 'train.ema_rate': expected a value in [0, 1), got {t.ema_rate}")
    return cfg


def from_dict(data: dict) -> Config:
    return validate(_build(Config, data or {}, ""))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def parse_override(text: str) -> tuple[list[str], object]:
    """'section.key=value' -> (['section', 'key'], value); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides or []:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: '{part}' is not a section")
        node[path[-1]] = value
    return data


def read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {path}: not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def load_config(path: str, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply `--set` overrides, validate. Errors name the file or key."""
    data = apply_overrides(read_yaml(path), overrides or [])
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def resolve_num_defect(cfg: Config, num_defect: int | None, source: str = "--num_defect") -> Config:
    """Reconcile `--num_defect` with `data.classes`.

    With classes listed, a disagreeing number is an error that says both; with none listed,
    the classes get generic names so that channel counts and manifests still line up.
    """
    if num_defect is not None and num_defect < 1:
        raise ConfigError(f"{source} must be >= 1, got {num_defect}")
    if cfg.data.classes:
        if num_defect is not None and num_defect != len(cfg.data.classes):
            raise ConfigError(
                f"{source} {num_defect} disagrees with data.classes, which lists "
                f"{len(cfg.data.classes)} classes: {', '.join(cfg.data.classes)}"
            )
        return cfg
    if num_defect is None:
        raise ConfigError("the number of defect classes is unknown: pass --num_defect K or list data.classes")
    cfg.data.classes = [f"defect{i}" for i in range(1, num_defect + 1)]
    return cfg
