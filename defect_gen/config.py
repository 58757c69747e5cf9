"""Configuration: nested dataclasses loaded strictly from YAML.

A config file has four sections (`model`, `diffusion`, `data`, `train`); every key is a field
below, with its type and default. Loading is strict on purpose: a misspelt key silently
falling back to its default would cost a user a multi-day training run, so unknown keys and
wrong types are errors naming the key and what is allowed. YAML is read with `safe_load`
and no value is ever imported or evaluated.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field

import yaml

from defect_gen.errors import ConfigError, short_repr


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
    num_heads_upsample: int = -1  # heads of the decoder's attention when num_head_channels is -1; -1 = num_heads
    # The large-RF network has a middle block (ResBlock, attention, ResBlock); the small-RF
    # one has none and feeds its deepest feature straight to the first decoder block.
    middle_block: bool = True
    use_scale_shift_norm: bool = True
    dropout: float = 0.0
    use_checkpoint: bool = False  # gradient checkpointing: less memory, ~30 % more compute
    # Class conditioning: the classes present in a pair (multi-hot) are embedded and added to
    # the timestep embedding, so `sample --classes` asks for them instead of rejecting the
    # rest. Trained with train.class_dropout, one model samples with and without a condition.
    # false (and configs or checkpoints without the key): the unconditional, published network.
    class_cond: bool = False


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000
    schedule: str = "cosine"  # cosine | linear
    predict: str = "x0"  # what the network outputs: x0 (as published) | eps | v
    mask_loss_weight: float = 1.0  # weight of the mask channels' MSE relative to RGB
    # true: the mask channels enter the network clean at every t (never noised) and only RGB is
    # learned, so the model draws an image *for a given mask* (`paint`, `sample --mask`) and
    # cannot ignore the mask; it cannot draw masks of its own. false: image and mask are
    # denoised together (Defect-Gen).
    clean_mask: bool = False
    # Train only on timesteps in [t_min, t_max): each model learns the steps it will serve.
    t_min: int = 0
    t_max: typing.Optional[int] = None  # None = num_timesteps


# The dataset layouts `defect_gen.data.layouts` reads (README "Data layouts" shows each).
DATA_LAYOUTS = ("paired", "mvtec", "defect_spectrum", "official", "class_folders")


@dataclass
class DataConfig:
    """Where the pairs are, how their masks encode classes, which few are used, how they are prepared."""

    root: str = ""  # a local folder or a gs:// / az:// URL
    layout: str = "paired"  # paired | mvtec | defect_spectrum | official | class_folders
    classes: list[str] = field(default_factory=list)  # defect class names, in mask-index order
    # mvtec / class_folders: class of each defect folder; unlisted folders must be named as a class.
    folder_classes: dict[str, str] = field(default_factory=dict)
    good_folders: list[str] = field(default_factory=lambda: ["good"])  # folders of defect-free images
    categories: list[str] = field(default_factory=list)  # defect_spectrum: ROOT/<category> to read; [] = all
    # Colour masks: class name -> [r, g, b]; black is background (or give "background" a colour).
    palette: dict[str, list[int]] = field(default_factory=dict)
    # auto: binary for mvtec / class_folders, class indices otherwise; binary elsewhere needs one class.
    mask_type: str = "auto"  # auto | index | binary
    mask_threshold: int = 128  # binary masks: pixels >= this are defect (masks are rarely exactly 0/255)
    # Few-shot selection: this many images per class (seeded, rarest class first); null = all.
    num_images_per_class: typing.Optional[int] = None
    good_share: float = 0.0  # share of the training set that is defect-free images, in [0, 1)
    selection_seed: int = 0
    selection_file: typing.Optional[str] = None  # reuse a run's selected_files.json instead of selecting
    skip_bad: bool = False  # skip (and list) bad files instead of refusing to train
    resize: str = "area"  # image resampling: area (box when shrinking, bicubic when enlarging) | bicubic
    load_size: typing.Optional[int] = None  # resize to this, then take random image_size crops
    # Native-resolution crops: keep each photo's own aspect ratio, scaled by this factor
    # (1.0 = as stored), and train on random image_size crops of it, so thin cracks and small
    # holes are not resized away. null = resize whole photos to load_size / image_size.
    native_scale: typing.Optional[float] = None
    # Share of training crops centred on a random defect pixel (the rest anywhere): defects
    # cover ~1 % of a magnetic tile, and uniform crops would mostly show clean surface.
    defect_crop_share: float = 0.0
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
    ema_rate: float = 0.9999  # the EMA that sampling uses
    extra_ema_rates: list[float] = field(default_factory=list)  # more EMAs kept in checkpoints
    # Decay min(rate, (1 + n) / (10 + n)) at update n, so that a short run's EMA is not mostly
    # its random initialisation (train_util.ema_decay); false = a plain EMA, as guided-diffusion.
    ema_warmup: bool = True
    # Split each batch into chunks of this size (gradient accumulation); 0 = the whole batch.
    # The result does not depend on it: the batch, timesteps and noise are drawn first.
    microbatch: int = 0
    # auto: bf16 autocast where it is faster (GPUs with bf16; CPUs with AMX-BF16 or AVX512-BF16,
    # confirmed by timing the network), else fp32 | fp32 | bf16 | fp16 (CUDA only). See precision.py.
    precision: str = "auto"
    channels_last: bool = True  # memory format on CUDA (faster convolutions); ignored on CPU
    compile: bool = False  # torch.compile the model (slow start, faster steps on GPU)
    save_every: int = 1000
    keep_last: int = 3  # checkpoints kept in WORK_DIR/checkpoint
    log_every: int = 50
    # Every N steps (and at the end) WORK_DIR/samples/step_N.png shows the EMA model's
    # output over its timestep window (image | colour mask | overlay); 0 = never.
    sample_every: int = 0
    # Also write metrics.jsonl's scalars to WORK_DIR/tb/ when the tensorboard package is installed.
    tensorboard: bool = True
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # model.class_cond: share of training pairs whose condition is dropped (shown as
    # "unconditional"), so the model also learns the unconditional prediction that
    # classifier-free guidance (`sample --guidance`) contrasts with. Ignored otherwise.
    class_dropout: float = 0.15


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
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        return f"mapping of {_type_name(key_tp)} to {_type_name(value_tp)}"
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
            raise ConfigError(f"config key '{key}': expected a {_type_name(tp)}, got {short_repr(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return _coerce_dict(value, tp, key)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[tp](value)
    if not ok:
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {short_repr(value)}")
    if tp is float and not math.isfinite(value):  # .nan passes every `<= 0` check and ruins a run later
        raise ConfigError(f"config key '{key}': expected a finite number, got {value}")
    return float(value) if tp is float else value


def _coerce_dict(value, tp, key: str) -> dict:
    """A mapping with string keys (YAML may read `1:` or `yes:` as other types: name the key)."""
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}': expected a {_type_name(tp)}, got {short_repr(value)}")
    _, value_tp = typing.get_args(tp)
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise ConfigError(f"config key '{key}': key {short_repr(k)} is not a string; quote it in the YAML")
        out[k] = _coerce(v, value_tp, f"{key}.{k}")
    return out


def _build(cls, data, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or 'top level'}': expected a mapping, got {short_repr(data)}")
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


def _choice(key: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"config key '{key}': expected one of {', '.join(allowed)}, got {short_repr(value)}")


def _validate_data_values(cfg: Config) -> None:
    """The data section's single values (layout, mask type, selection sizes, load size)."""
    d = cfg.data
    _choice("data.layout", d.layout, DATA_LAYOUTS)
    if "://" in d.root and not d.root.startswith(("gs://", "az://")):
        # blobfile lists only gs:// and az:// folders; a web server has no folder listing to read.
        raise ConfigError(f"config key 'data.root': {short_repr(d.root)} is not supported; expected a local "
                          f"folder or a gs:// / az:// URL (download https:// data first)")
    _choice("data.mask_type", d.mask_type, ("auto", "index", "binary"))
    _choice("data.resize", d.resize, ("area", "bicubic"))
    if not 1 <= d.mask_threshold <= 255:
        raise ConfigError(f"config key 'data.mask_threshold': expected 1..255, got {d.mask_threshold}")
    if d.num_images_per_class is not None:
        _positive("data.num_images_per_class", d.num_images_per_class)
    if not 0.0 <= d.good_share < 1.0:
        raise ConfigError(f"config key 'data.good_share': expected a value in [0, 1), got {d.good_share}")
    if d.native_scale is not None and not (0.0 < d.native_scale <= 4.0):
        raise ConfigError(f"config key 'data.native_scale': expected a scale in (0, 4] (1.0 = photos as stored), "
                          f"got {d.native_scale}")
    if d.native_scale is not None and d.load_size is not None:
        raise ConfigError("config keys 'data.native_scale' and 'data.load_size' exclude each other: "
                          "native crops keep each photo's own size")
    if not 0.0 <= d.defect_crop_share <= 1.0:
        raise ConfigError(f"config key 'data.defect_crop_share': expected a share in [0, 1], got {d.defect_crop_share}")
    if d.load_size is not None and d.load_size < cfg.model.image_size:
        raise ConfigError(f"config key 'data.load_size': must be >= model.image_size ({cfg.model.image_size}) "
                          f"to crop from, got {d.load_size}")


def _bad_class_name(name: str) -> bool:
    """Class names become folder names in the output layouts (mvtec, defect_spectrum): they
    must be one plain path component, not hidden (readers skip dot-names), printable."""
    return (not name or name.startswith(".") or any(c in name for c in "/\\") or len(name) > 100
            or not name.isprintable())


def _validate_data_classes(d: DataConfig) -> None:
    """Class names, and the folder mapping and palette that refer to them."""
    if len(set(d.classes)) != len(d.classes) or any(not c or c == "background" for c in d.classes):
        raise ConfigError(f"config key 'data.classes': expected distinct non-empty names other than "
                          f"'background', got {short_repr(d.classes)}")
    bad = next((c for c in d.classes if _bad_class_name(c)), None)
    if bad is not None:
        raise ConfigError(f"config key 'data.classes': {short_repr(bad)} cannot be a folder name; expected a name "
                          f"without '/' or '\\', not starting with '.', printable, at most 100 characters")
    known = set(d.classes)
    for folder, name in d.folder_classes.items():
        if name not in known:
            raise ConfigError(f"config key 'data.folder_classes.{folder}': {name!r} is not in data.classes "
                              f"{d.classes}")
    if not d.palette:
        return
    for name, rgb in d.palette.items():
        if name not in known | {"background"}:
            raise ConfigError(f"config key 'data.palette.{name}': not in data.classes {d.classes} (or 'background')")
        if len(rgb) != 3 or any(not 0 <= v <= 255 for v in rgb):
            raise ConfigError(f"config key 'data.palette.{name}': expected [r, g, b] with values 0..255, got {rgb}")
    missing = [c for c in d.classes if c not in d.palette]
    if missing:
        raise ConfigError(f"config key 'data.palette': no colour for class {missing[0]!r}; every class in "
                          f"data.classes needs one")
    colours = [tuple(d.palette.get("background", (0, 0, 0)))] + [tuple(d.palette[c]) for c in d.classes]
    if len(set(colours)) != len(colours):
        raise ConfigError(f"config key 'data.palette': two classes share a colour (black is the background "
                          f"unless 'background' is given): {d.palette}")


# Bigger images do not fit any GPU at diffusion-model widths (and `info` would try one forward).
MAX_IMAGE_SIZE = 4096


def _validate_model_shape(m: ModelConfig) -> None:
    """What the network's layers need of the config: image size, GroupNorm groups, attention heads.

    Each would otherwise surface as a traceback from deep inside the UNet, or (attention at a
    rate the network does not have) be silently ignored.
    """
    if m.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(f"config key 'model.image_size': at most {MAX_IMAGE_SIZE} px, got {m.image_size}")
    widths = sorted({mult * m.model_channels for mult in m.channel_mult})
    if any(w % 32 for w in widths):
        raise ConfigError(f"config key 'model.model_channels': {m.model_channels} x channel_mult {m.channel_mult} "
                          f"gives {widths} channels; GroupNorm splits each into 32 groups, so every one must be a "
                          f"multiple of 32")
    rates = [2**level for level in range(len(m.channel_mult))]
    stray = [a for a in m.attention_downsample if a not in rates]
    # The default list is meant for the default depth: a shallower net just has fewer of its
    # rates (and configs saved in checkpoints rely on that); a list someone wrote must fit.
    if stray and m.attention_downsample != ModelConfig().attention_downsample:
        raise ConfigError(f"config key 'model.attention_downsample': {stray} not among the down-sampling rates "
                          f"{rates} of channel_mult {m.channel_mult}; attention there would be silently left out")
    if m.num_heads_upsample != -1:
        _positive("model.num_heads_upsample", m.num_heads_upsample)
    decoder = {m.channel_mult[rates.index(a)] * m.model_channels for a in m.attention_downsample if a in rates}
    attended = decoder | ({m.channel_mult[-1] * m.model_channels} if m.middle_block else set())
    for key, split, widths in (("num_head_channels", m.num_head_channels, attended),
                               ("num_heads", m.num_heads, attended),
                               ("num_heads_upsample", m.num_heads_upsample, decoder)):
        if split <= 0 or (key != "num_head_channels" and m.num_head_channels != -1):
            continue  # -1 (or the other head setting) decides instead
        uneven = sorted(w for w in widths if w % split)
        if uneven:
            raise ConfigError(f"config key 'model.{key}': {split} does not divide the {uneven} channels of the "
                              f"attention blocks (model_channels x channel_mult at attention_downsample"
                              f"{' and the middle block' if m.middle_block else ''})")


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
    _validate_model_shape(m)
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
    for i, rate in enumerate([t.ema_rate, *t.extra_ema_rates]):
        key = "train.ema_rate" if i == 0 else f"train.extra_ema_rates[{i - 1}]"
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"config key '{key}': expected a value in [0, 1), got {rate}")
    if t.microbatch < 0 or (t.microbatch and t.batch_size % t.microbatch):
        raise ConfigError(f"config key 'train.microbatch': expected 0 or a divisor of train.batch_size "
                          f"({t.batch_size}), got {t.microbatch}")
    if not 0.0 <= t.class_dropout < 1.0:
        raise ConfigError(f"config key 'train.class_dropout': expected a share in [0, 1), got {t.class_dropout}")
    if t.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"config key 'train.precision': expected auto, fp32, bf16 or fp16, got {t.precision!r}")
    _validate_data_values(cfg)
    _validate_data_classes(cfg.data)
    return cfg


def from_dict(data: dict) -> Config:
    return validate(_build(Config, data or {}, ""))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


class StrictLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, stricter and closer to what people type.

    A key given twice in one mapping is an error (plain YAML keeps the last one silently: a
    second `train:` would replace the whole first section), and 5e-4 is a float (YAML 1.1
    reads it as a string unless written 5.0e-4).
    """

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` keys may be overridden on purpose
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"key {short_repr(key)} is given twice (lines {seen[key]} and {line}); "
                                  f"YAML would silently keep only the last one")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_override(text: str) -> tuple[list[str], object]:
    """'section.key=value' -> (['section', 'key'], value); the value is read as YAML. Errors name
    the `overrides` parameter of `load_config` (a command's flag for it)."""
    if "=" not in text:
        raise ConfigError.with_params("{overrides} {text}: expected section.key=value", text=short_repr(text))
    key, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError.with_params(f"{{overrides}} {{text}}: value is not valid YAML ({exc.__class__.__name__})",
                                      text=short_repr(text)) from None
    except ConfigError as exc:
        raise ConfigError.with_params("{overrides} {text}: {reason}", text=short_repr(text), reason=exc) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError.with_params("{overrides} {text}: value nested too deeply for a config",
                                      text=short_repr(text)) from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides or []:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError.with_params("{overrides} {text}: '{part}' is not a section", text=short_repr(text),
                                              part=part)
        node[path[-1]] = value
    return data


def read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=StrictLoader)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except UnicodeDecodeError as exc:  # UTF-16 (a BOM), Latin-1 accents, a binary file
        bad = exc.object[exc.start:exc.start + 1]
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.start}: {bad!r}); save it as UTF-8") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"config file {path}: nested too deeply for a config (thousands of levels of [ or {{); "
                          f"a config is at most a few levels deep") from None
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
    """Read a YAML config, apply `overrides` (`section.key=value`, a command's `--set`), validate.
    Errors name the file or key."""
    data = apply_overrides(read_yaml(path), overrides or [])
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def resolve_num_defect(cfg: Config, num_defect: int | None) -> Config:
    """Reconcile `num_defect` (a command's `--num_defect`) with `data.classes`.

    With classes listed, a disagreeing number is an error that says both; with none listed,
    the classes get generic names so that channel counts and manifests still line up.
    """
    if num_defect is not None and num_defect < 1:
        raise ConfigError.with_params(f"{{num_defect}} must be >= 1, got {num_defect}")
    if cfg.data.classes:
        if num_defect is not None and num_defect != len(cfg.data.classes):
            raise ConfigError.with_params(
                f"{{num_defect}} {num_defect} disagrees with data.classes, which lists "
                f"{len(cfg.data.classes)} classes: {{names}}", names=", ".join(cfg.data.classes)
            )
        return cfg
    if num_defect is None:
        raise ConfigError.with_params("the number of defect classes is unknown: pass {num_defect} K or list "
                                      "data.classes")
    cfg.data.classes = [f"defect{i}" for i in range(1, num_defect + 1)]
    return cfg

