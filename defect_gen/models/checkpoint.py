"""Checkpoints: one file per save, written atomically, loaded without running code.

File format (a dict, `torch.save`d):

    {"format": "defect-gen/1", "config": {...resolved config...}, "step": N,
     "model": state_dict, "ema": {"<rate>": state_dict}, "optimizer": state_dict,
     "scaler": state_dict | None, "rng": {...}}

Files live in WORK_DIR/checkpoint/ as ckpt_<step>.pt beside a `latest` text file naming
the newest one. A save goes to a temporary file, is fsync'ed, then renamed over the final
name, and only then does `latest` move: a crash at any point leaves the previous latest
intact. Loading always uses `torch.load(weights_only=True)`, which refuses pickles that
would construct arbitrary objects or run code.
"""

from __future__ import annotations

import os
import pickle

import torch

from defect_gen import fsutil
from defect_gen.errors import CheckpointError

FORMAT = "defect-gen/1"
CKPT_DIR = "checkpoint"


def atomic_save(obj, path: str) -> None:
    """torch.save to path via temp file + fsync + rename; the old file survives any failure."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}") from None
        if isinstance(exc, RuntimeError) and "PytorchStreamWriter" in str(exc):
            # torch's zip writer reports a full disk (or a vanished folder) as a RuntimeError
            # from inline_container, not as an OSError.
            raise CheckpointError(f"could not write checkpoint {path}: the write failed (disk full?): "
                                  f"{str(exc).splitlines()[0][:120]}") from None
        raise
    fsutil.fsync_dir(directory)


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str, map_location="cpu") -> dict:
    """Load any checkpoint safely; errors name the file and say what is wrong."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc))
        if "Unsupported global" in detail:  # the pickle names a function or class to call
            raise CheckpointError(f"refused to load {path}: it names code to run rather than holding only "
                                  f"tensors and plain data ({detail[:160]})") from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (not a file torch.save wrote: "
                              f"{detail[:120]})") from None
    except MemoryError:
        raise  # not the file's fault
    # Garbage fed to torch's unpickler fails in whatever way it happens to (IndexError,
    # KeyError, struct.error, ...): for a file, any of them means it is not a checkpoint.
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, found {type(obj).__name__}")
    return obj


def _unpickler_detail(message: str) -> str:
    """The one informative line of torch's long weights_only error message."""
    marker = "WeightsUnpickler error:"
    tail = message[message.find(marker) + len(marker):] if marker in message else message
    return " ".join(tail.split())[:200].split(" Check the documentation")[0].split(" Please use")[0]


def ckpt_dir(work_dir: str) -> str:
    return os.path.join(work_dir, CKPT_DIR)


def save_training(work_dir: str, state: dict, keep_last: int) -> str:
    """Save a training checkpoint for state["step"], move `latest`, prune old ones."""
    directory = ckpt_dir(work_dir)
    name = f"ckpt_{state['step']:08d}.pt"
    path = os.path.join(directory, name)
    atomic_save({"format": FORMAT, **state}, path)
    _atomic_write_text(os.path.join(directory, "latest"), name + "\n")
    fsutil.fsync_dir(directory)
    for old in list_checkpoints(work_dir)[:-keep_last]:
        os.remove(old)
    _remove_stale_temps(directory)
    return path


def _remove_stale_temps(directory: str) -> None:
    """Delete temp files a killed save left behind (never a real checkpoint: those have no dot prefix)."""
    mine = f".tmp{os.getpid()}"
    for name in os.listdir(directory):
        if (name.startswith(".ckpt_") or name.startswith("latest.tmp")) and not name.endswith(mine):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


def list_checkpoints(work_dir: str) -> list[str]:
    directory = ckpt_dir(work_dir)
    if not os.path.isdir(directory):
        return []
    names = sorted(n for n in os.listdir(directory) if n.startswith("ckpt_") and n.endswith(".pt"))
    return [os.path.join(directory, n) for n in names]


def latest(work_dir: str) -> str | None:
    """The checkpoint to resume from: the `latest` pointer, else the newest ckpt_*.pt."""
    pointer = os.path.join(ckpt_dir(work_dir), "latest")
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as f:
            path = os.path.join(ckpt_dir(work_dir), f.read().strip())
        if os.path.isfile(path):
            return path
    found = list_checkpoints(work_dir)
    return found[-1] if found else None


def resolve(path: str) -> str:
    """Accept a checkpoint file or a work dir (then its latest checkpoint)."""
    if os.path.isdir(path):
        found = latest(path)
        if found is None:
            raise CheckpointError(f"no checkpoint in {ckpt_dir(path)} (train first, or pass a .pt file)")
        return found
    return path


def sampling_rate(ckpt: dict, path: str) -> str:
    """Key of the EMA that sampling uses: train.ema_rate of the checkpoint's own config."""
    train = ckpt["config"].get("train") if isinstance(ckpt.get("config"), dict) else None
    rate = train.get("ema_rate") if isinstance(train, dict) else None
    emas = ckpt.get("ema") or {}
    if rate is None:  # a hand-made or trimmed config: one EMA is unambiguous, several are not
        if len(emas) == 1:
            return next(iter(emas))
        raise CheckpointError(f"{path}: its config has no train.ema_rate to choose among its EMAs "
                              f"({', '.join(emas)}); pass --raw-weights, or `defect-gen export --rate R` one of them")
    rate = str(rate)
    if rate not in emas:
        raise CheckpointError(f"{path} has no EMA at train.ema_rate {rate}; it has: {', '.join(ckpt.get('ema') or [])}")
    return rate


def ema_weights(ckpt: dict, path: str, raw: bool = False) -> dict:
    """The weights to sample with from one of our checkpoints: the train.ema_rate EMA unless `raw`."""
    if raw or not ckpt.get("ema"):
        if "model" not in ckpt:
            raise CheckpointError(f"checkpoint {path} has no 'model' weights")
        return ckpt["model"]
    return ckpt["ema"][sampling_rate(ckpt, path)]


def strip_ddp_prefix(weights: dict) -> dict:
    """DistributedDataParallel's "module." prefix removed, so weights saved from a wrapped model load too."""
    if weights and all(k.startswith("module.") for k in weights):
        return {k[len("module."):]: v for k, v in weights.items()}
    return weights


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def load_weights(model: torch.nn.Module, weights: dict, path: str) -> None:
    """Strict load with one clear line on failure: missing keys, unexpected keys, wrong shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit its config: {len(missing)} missing keys "
                              f"({_names(missing) or 'none'}), {len(unexpected)} unexpected keys "
                              f"({_names(unexpected) or 'none'})")
    for key, tensor in own.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"checkpoint {path} does not fit its config: {key} has shape "
                                  f"{tuple(weights[key].shape)} in the file, {tuple(tensor.shape)} in the model "
                                  f"(check channel counts and --num_defect)")
    model.load_state_dict(weights, strict=True)
