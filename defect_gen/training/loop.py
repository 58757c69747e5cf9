"""The training loop: batch -> loss -> AdamW step -> EMA, with checkpoints and auto-resume.

A run lives in one folder (WORK_DIR): `config.yaml` (the resolved config), `checkpoint/`,
`metrics.jsonl`, `loss.png` and `samples/`. Running the same command again resumes from the
latest checkpoint with model, EMAs, optimizer, scaler, step and every RNG state (per rank)
restored, so the continuation draws the same batches, timesteps and noise that an
uninterrupted run would have: on CPU the weights come out bit-identical.

The step itself never waits for the device: statistics accumulate in a device tensor and
are read (one host sync) only when logging or before saving. A NaN/Inf loss is noticed
there, before anything is written, so the latest checkpoint is always a finite model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from defect_gen import distributed, fsutil, logs
from defect_gen.config import Config, from_dict, to_dict, to_yaml
from defect_gen.core import guidance
from defect_gen.core.diffusion import GaussianDiffusion, space_timesteps, window
from defect_gen.core.masks import image_to_uint8, mask_to_index, split_image_mask
from defect_gen.core.precision import resolve_autocast, time_forward_backward
from defect_gen.core.samplers import KnownRegion, known_region_sampler, sample_ddim
from defect_gen.core.unet import UNetModel, build_unet, num_channels
from defect_gen.data.dataset import DefectDataset
from defect_gen.data.image_io import save_pair_grid
from defect_gen.errors import CheckpointError, DefectGenError, short_repr
from defect_gen.models import checkpoint as ckpt_lib
from defect_gen.training.plots import line_plot
from defect_gen.training.tb import ScalarWriter

# Layout of the device-side statistics accumulator.
STATS = ("loss", "mse_rgb", "mse_mask", "grad_norm")
N_QUARTILES = 4


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, colon, index = name.partition(":")
    # torch.device accepts mps, xla, meta, ... whether or not they exist here, and the run would
    # fail later with a traceback: only CPU and CUDA are built for (fused AdamW, autocast, RNG).
    if kind not in ("cpu", "cuda") or (colon and (kind != "cuda" or not index.isdigit())):
        raise DefectGenError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N "
                             f"(mps and other backends are not supported)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DefectGenError(f"device {name!r} was asked for, but no CUDA GPU is available (use cpu or auto)")
    if colon and int(index) >= torch.cuda.device_count():
        raise DefectGenError(f"device {name!r} was asked for, but only {torch.cuda.device_count()} CUDA GPU(s) "
                             f"are visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device):
    """AdamW with the fused kernel where torch has one (CPU, CUDA): one pass over the
    parameters instead of a dozen per-tensor ops; on the 125 M-parameter large network at
    64 px on 2 CPU cores that is 63 ms instead of 217 ms per step."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused or None)


def ema_decay(rate: float, updates: int, warmup: bool = True) -> float:
    """The EMA decay for update number `updates` (1, 2, ...): `rate`, or with warm-up
    min(rate, (1 + n) / (10 + n)), the schedule of TensorFlow's ExponentialMovingAverage
    with num_updates and of latent diffusion's LitEma.

    Why: a plain EMA starts at the random initial weights and forgets them slowly. With
    rate 0.999, 1000 steps leave 0.999^1000 = 37 % of the initialisation in the average that
    sampling uses, which shrinks every prediction towards zero (grey, flat defects on the
    CPU-sized painting runs). With warm-up the average covers roughly the last tenth of a
    short run and settles at `rate` only once a run is long (n >= 9 / (1 - rate) - 10).
    """
    return min(rate, (1 + updates) / (10 + updates)) if warmup else rate


def checkpoint_step(path: str) -> int | None:
    """The step in a checkpoint's name (ckpt_<step>.pt), without loading it."""
    stem = os.path.basename(path)[len("ckpt_"):-len(".pt")]
    return int(stem) if os.path.basename(path).startswith("ckpt_") and stem.isdigit() else None


def finished_checkpoint(work_dir: str, max_steps: int) -> tuple[str, int] | None:
    """(latest checkpoint, its step) if a run in work_dir already reached max_steps, else None."""
    path = ckpt_lib.latest(work_dir) if os.path.isdir(work_dir) else None
    step = checkpoint_step(path) if path else None
    return (path, step) if step is not None and step >= max_steps else None


def _json_row(line: str) -> dict | None:
    """A metrics.jsonl row, or None for a line that is not one (cut short by a kill)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


# What a checkpoint needs to continue training (an exported EMA-only file has none of them).
TRAINING_STATE_KEYS = ("model", "ema", "optimizer", "rng", "step", "config")


def resume_differences(saved: dict | None, cfg: Config) -> list[str]:
    """What resuming a checkpoint trained with `saved` under `cfg` would change but must not,
    as 'key (old -> new)': the network, the objective and schedule, the timestep window, the classes.

    Weights trained for x0 continued on an eps loss, or on another window, silently learn
    something else; gradient checkpointing only trades memory for compute and may change.
    """
    try:
        old = from_dict(saved or {})  # fills fields added since that checkpoint with their defaults
    except DefectGenError as exc:
        return [f"its saved config does not load ({exc})"]
    pairs = [(f"model.{k}", v, getattr(cfg.model, k)) for k, v in dataclasses.asdict(old.model).items()
             if k != "use_checkpoint"]
    pairs += [(f"diffusion.{k}", getattr(old.diffusion, k), getattr(cfg.diffusion, k))
              for k in ("num_timesteps", "schedule", "predict", "mask_loss_weight", "clean_mask")]
    windows = [window(c.diffusion.num_timesteps, c.diffusion.t_min, c.diffusion.t_max) for c in (old, cfg)]
    pairs += [("diffusion.t_min/t_max window", list(windows[0]), list(windows[1])),
              ("data.classes", old.data.classes, cfg.data.classes)]
    return [f"{key} ({short_repr(a)} -> {short_repr(b)})" for key, a, b in pairs if a != b]


# Autocast dtypes by the name checkpoints record them under (None: fp32, no autocast).
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def refuse_changed_config(cfg: Config, work_dir: str, path: str | None = None, saved: dict | None = None) -> None:
    """Refuse to resume the run in `work_dir` under a changed config (see resume_differences).

    Called first before the data is read, with the config read from the latest checkpoint
    memory-mapped (no weights loaded): fewer classes would otherwise first show up as masks
    "outside the classes", and a long data load would come before the refusal.
    """
    if path is None:
        path = ckpt_lib.latest(work_dir)
        try:
            saved = path and torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("config")
        except Exception:  # unreadable: TrainLoop._resume loads it properly and says what is wrong
            return
    changed = resume_differences(saved, cfg) if path and isinstance(saved, dict) else []
    if changed:
        raise CheckpointError.with_params("cannot resume {path} with this config: {changed}; a run keeps its network, "
                                          "objective, schedule, timestep window and classes (use a new {work_dir})",
                                          path=path, changed="; ".join(changed))


def build_parts(cfg: Config, work_dir: str, progress: bool = True, data=None) -> tuple[UNetModel, GaussianDiffusion,
                                                                                      DefectDataset]:
    """What `defect-gen train` hands the loop, as guided-diffusion's image_train.py does: the
    network (seeded by train.seed, so every rank starts from the same weights), the diffusion,
    and the training pairs (`data`, if given, instead of cfg.data's: a stand-in needs `batch`,
    `write_selection` and `data`, as DefectDataset has). A config that cannot resume the run
    in `work_dir` is refused before the data is read (minutes, on a big set)."""
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_unet(cfg.model, cfg.num_defect)
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    refuse_changed_config(cfg, work_dir)
    if data is None:
        data = DefectDataset(cfg.data, cfg.model.image_size, progress=progress and distributed.info().is_main)
    return model, diffusion, data


class TrainLoop:
    """The training loop over a model, a diffusion and data it is handed (`build_parts` makes
    them from a config; `TrainLoop.from_config` does both)."""

    def __init__(self, cfg: Config, work_dir: str, device: torch.device, model: UNetModel,
                 diffusion: GaussianDiffusion, data: DefectDataset, progress: bool = True):
        self.cfg, self.work_dir, self.device = cfg, work_dir, device
        self.dist = distributed.info()
        self.progress = progress and self.dist.is_main
        tcfg = cfg.train
        self.model = model.to(device)
        if tcfg.channels_last and device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.emas = {rate: copy.deepcopy(self.model).requires_grad_(False).eval()
                     for rate in dict.fromkeys([tcfg.ema_rate, *tcfg.extra_ema_rates])}
        self.ddp = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
                    if self.dist.world_size > 1 else self.model)
        self.forward = torch.compile(self.ddp) if tcfg.compile else self.ddp
        self.opt = make_optimizer(self.model, tcfg.lr, tcfg.weight_decay, device)
        self.amp_dtype = self._resolve_precision()
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.diffusion = diffusion
        self.t_window = window(cfg.diffusion.num_timesteps, cfg.diffusion.t_min, cfg.diffusion.t_max)
        self.data = data
        if self.dist.is_main:  # which files were trained on, so the rest can be held out for testing
            os.makedirs(work_dir, exist_ok=True)
            self.data.write_selection(os.path.join(work_dir, "selected_files.json"))
        # Every rank draws the same global batch (batch_size per rank x world size) from the
        # same streams and trains on its own slice: N processes compute the update of one
        # process with an N-times larger batch, and the RNG state is the same on every rank.
        self.data_gen = torch.Generator().manual_seed(tcfg.seed)
        self.noise_gen = torch.Generator(device).manual_seed(tcfg.seed + 1)
        self.step = 0
        self.history: list[dict] = []
        self.tb: ScalarWriter | None = None  # optional TensorBoard copy of metrics.jsonl
        self._reset_stats()
        self._resume()

    @classmethod
    def from_config(cls, cfg: Config, work_dir: str, device: torch.device, progress: bool = True,
                    data=None) -> TrainLoop:
        """The loop `defect-gen train` runs for cfg: `build_parts`, then the loop over them."""
        return cls(cfg, work_dir, device, *build_parts(cfg, work_dir, progress, data), progress=progress)

    def _resolve_precision(self) -> torch.dtype | None:
        """train.precision as an autocast dtype; `auto` on a CPU with bf16 instructions times
        one forward + backward of this network at this batch size in both precisions. Every
        rank takes rank 0's choice, so DDP never mixes precisions."""
        tcfg, size = self.cfg.train, self.cfg.model.image_size
        x = torch.randn(tcfg.microbatch or tcfg.batch_size, num_channels(self.cfg.num_defect), size, size,
                        device=self.device)
        t = torch.full((len(x),), self.cfg.diffusion.num_timesteps // 2, device=self.device)
        dtype, why = resolve_autocast(tcfg.precision, self.device, time_forward_backward(self.model, x, t))
        code = torch.tensor([{None: 0, torch.bfloat16: 1, torch.float16: 2}[dtype]], device=self.device)
        dtype = [None, torch.bfloat16, torch.float16][int(distributed.broadcast_from_main(code))]
        if self.progress:
            tqdm.write(f"precision: {why}")
        return dtype

    # -- checkpoints -------------------------------------------------------------------

    def _rng_state(self) -> dict:
        state = {"data": self.data_gen.get_state(), "noise": self.noise_gen.get_state(),
                 "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict) -> None:
        self.data_gen.set_state(state["data"])
        self.noise_gen.set_state(state["noise"])
        torch.set_rng_state(state["torch"])
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _state(self) -> dict:
        """Everything needed to continue exactly (the RNG streams are the same on every rank)."""
        return {
            "config": to_dict(self.cfg), "step": self.step, "model": self.model.state_dict(),
            "ema": {str(rate): ema.state_dict() for rate, ema in self.emas.items()},
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": self._rng_state(),
            # The precision `auto` chose: a resumed run keeps it instead of timing afresh.
            "precision": DTYPE_NAMES[self.amp_dtype],
        }

    def _resume(self) -> None:
        path = ckpt_lib.latest(self.work_dir)
        if path is None:
            return
        state = ckpt_lib.load(path)
        lacking = [k for k in TRAINING_STATE_KEYS if k not in state]
        if lacking:
            raise CheckpointError.with_params(f"{{path}} cannot be resumed from: it lacks {', '.join(lacking)} (an "
                                              f"exported EMA-only file? those are for sampling); point "
                                              f"checkpoint/latest at a training checkpoint, or use a new {{work_dir}}",
                                              path=path)
        refuse_changed_config(self.cfg, self.work_dir, path, state.get("config"))
        self._keep_precision(state.get("precision"))
        self.model.load_state_dict(state["model"])
        for rate, ema in self.emas.items():
            # An EMA rate added since the checkpoint starts from the model's current weights.
            ema.load_state_dict(state["ema"].get(str(rate), state["model"]))
        self.opt.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self._set_rng_state(state["rng"])
        self.step = int(state["step"])
        self._load_history()
        if self.dist.is_main:  # not just a progress detail: say what was continued
            tqdm.write(f"resumed from {path} at step {self.step}")

    def _keep_precision(self, saved: str | None) -> None:
        """Under train.precision auto, continue in the precision the checkpoint was trained in:
        `auto` times the two on the machine, and a timing that comes out the other way on
        resume would switch precision mid-run (and the resumed run would no longer be the one
        an uninterrupted run computes). Checkpoints from before this was recorded say nothing."""
        if self.cfg.train.precision != "auto" or saved not in DTYPES or DTYPES[saved] == self.amp_dtype:
            return
        self.amp_dtype = DTYPES[saved]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if self.progress:
            tqdm.write(f"precision: {saved} (auto: as the checkpoint was trained)")

    def save(self) -> str | None:
        self._check_finite()
        path = None
        if self.dist.is_main:
            path = ckpt_lib.save_training(self.work_dir, self._state(), self.cfg.train.keep_last)
        distributed.barrier()
        return path

    # -- one step ------------------------------------------------------------------------

    def _lr(self) -> float:
        warm = self.cfg.train.warmup_steps
        return self.cfg.train.lr * min(1.0, (self.step + 1) / warm) if warm > 0 else self.cfg.train.lr

    def _reset_stats(self) -> None:
        self.stats = torch.zeros(len(STATS) + 2 * N_QUARTILES, device=self.device, dtype=torch.float64)
        self.stat_steps = 0
        self.first_bad = torch.full((), -1, device=self.device, dtype=torch.long)

    def train_step(self) -> None:
        """One optimizer step. Draws batch, timesteps and noise first, so micro-batching
        (gradient accumulation) computes the same update as one big batch."""
        tcfg = self.cfg.train
        b, world, rank = tcfg.batch_size, self.dist.world_size, self.dist.rank
        mine = slice(rank * b, (rank + 1) * b)
        x0 = self.data.batch(b * world, self.data_gen)[mine].to(self.device, non_blocking=True)
        if tcfg.channels_last and self.device.type == "cuda":
            x0 = x0.contiguous(memory_format=torch.channels_last)
        t = self.diffusion.sample_t(b * world, *self.t_window, self.device, generator=self.noise_gen)[mine]
        noise = torch.randn((b * world, *x0.shape[1:]), generator=self.noise_gen, device=self.device)[mine]
        y = self._class_condition(x0, b * world, mine)
        for group in self.opt.param_groups:
            group["lr"] = self._lr()
        self.opt.zero_grad(set_to_none=True)
        chunk = tcfg.microbatch or tcfg.batch_size
        per_sample = {k: [] for k in ("loss", "mse_rgb", "mse_mask")}
        for i in range(0, tcfg.batch_size, chunk):
            sl = slice(i, i + chunk)
            last = i + chunk >= tcfg.batch_size
            sync = contextlib.nullcontext() if last or self.ddp is self.model else self.ddp.no_sync()
            with sync, torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                losses = self.diffusion.training_losses(self.forward, x0[sl], t[sl], noise[sl],
                                                        None if y is None else y[sl])
            self.scaler.scale(losses["loss"].sum() / tcfg.batch_size).backward()
            for k in per_sample:
                per_sample[k].append(losses[k].detach())
        self.scaler.unscale_(self.opt)
        clip = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self._update_emas()
        self.step += 1
        self._accumulate({k: torch.cat(v) for k, v in per_sample.items()}, t, grad_norm)

    def _class_condition(self, x0: torch.Tensor, global_batch: int, mine: slice) -> torch.Tensor | None:
        """The classes in each pair of this rank's batch, a train.class_dropout share dropped
        (None for an unconditional model). The drop draw is for the whole global batch, from
        the data stream, so it is the same on every rank and resumes exactly; unconditional
        models draw nothing, and their batches stay what they were."""
        if not self.cfg.model.class_cond:
            return None
        drop = torch.rand(global_batch, generator=self.data_gen)[mine] < self.cfg.train.class_dropout
        return guidance.data_condition(x0, self.cfg.num_defect, drop.to(x0.device))

    def _accumulate(self, per_sample: dict, t: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Add this step's statistics to the device accumulator (no host sync)."""
        loss = per_sample["loss"].double()
        means = torch.stack([loss.mean(), per_sample["mse_rgb"].double().mean(),
                             per_sample["mse_mask"].double().mean(), grad_norm.double()])
        t_min, t_max = self.t_window
        q = ((t - t_min) * N_QUARTILES // (t_max - t_min)).clamp(max=N_QUARTILES - 1)
        sums = torch.zeros(N_QUARTILES, device=self.device, dtype=torch.float64).scatter_add_(0, q, loss)
        counts = torch.bincount(q, minlength=N_QUARTILES).double()
        self.stats += torch.cat([means, sums, counts])
        self.stat_steps += 1
        finite = torch.isfinite(means[0])
        self.first_bad = torch.where(finite | (self.first_bad >= 0), self.first_bad, self.step)

    @torch.no_grad()
    def _update_emas(self) -> None:
        params = list(self.model.parameters())
        for rate, ema in self.emas.items():  # self.step updates were made before this one
            decay = ema_decay(rate, self.step + 1, self.cfg.train.ema_warmup)
            torch._foreach_lerp_(list(ema.parameters()), params, 1.0 - decay)

    def _check_finite(self) -> None:
        bad = int(distributed.max_across_ranks(self.first_bad))
        if bad >= 0:
            raise DefectGenError(f"training loss became NaN or Inf at step {bad}: stopped before saving; "
                                 f"the last good checkpoint is {ckpt_lib.latest(self.work_dir)}")

    # -- logging -------------------------------------------------------------------------

    def _load_history(self) -> None:
        path = os.path.join(self.work_dir, "metrics.jsonl")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                lines = [line for line in f if line.strip()]
            rows = [r for r in map(_json_row, lines) if r is not None]  # a kill can cut the last line short
            self.history = [r for r in rows if r.get("step", 0) <= self.step]
            if len(self.history) < len(lines) and self.dist.is_main:
                # Steps logged after the checkpoint we resume from are trained again: drop their
                # old lines, or metrics.jsonl would hold those steps twice.
                fsutil.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.history))

    def _log(self, elapsed: float) -> dict:
        self._check_finite()
        stats = distributed.sum_across_ranks(self.stats).tolist()
        n = self.stat_steps * self.dist.world_size
        row = {"step": self.step, **{k: stats[i] / n for i, k in enumerate(STATS)}}
        sums, counts = stats[len(STATS):len(STATS) + N_QUARTILES], stats[len(STATS) + N_QUARTILES:]
        for i, (s, c) in enumerate(zip(sums, counts)):
            row[f"loss_q{i}"] = s / c if c else None
        row["lr"] = self._lr()
        row["images_per_s"] = self.stat_steps * self.cfg.train.batch_size * self.dist.world_size / max(elapsed, 1e-9)
        self._reset_stats()
        if self.dist.is_main:
            self.history.append(row)
            with open(os.path.join(self.work_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if self.tb is None:  # created on the first log, on the main rank only
                self.tb = ScalarWriter(self.work_dir, self.cfg.train.tensorboard)
            self.tb.write(row)
            self._plot()
        return row

    def _plot(self) -> None:
        t_min, t_max = self.t_window
        span = (t_max - t_min) / N_QUARTILES
        series = {"loss": [r["loss"] for r in self.history]}
        for i in range(N_QUARTILES):
            series[f"loss t in [{t_min + i * span:.0f}, {t_min + (i + 1) * span:.0f})"] = [
                r.get(f"loss_q{i}") if r.get(f"loss_q{i}") is not None else float("nan") for r in self.history]
        line_plot(os.path.join(self.work_dir, "loss.png"), [r["step"] for r in self.history], series,
                  title=f"training loss ({os.path.basename(os.path.normpath(self.work_dir))})")

    # -- preview grids -------------------------------------------------------------------

    @torch.no_grad()
    def preview(self, n: int = 8, steps: int = 50) -> str:
        """Grid of what the EMA model makes over its own timestep window [t_min, t_max).

        A model trained on the whole range samples from pure noise; one trained on a window
        that stops short of T (a small-RF model) starts from real pairs noised to t_max - 1,
        exactly the kind of input it will get from the large model. The sampler's output after
        the step at t_min is the model's x0 prediction there.
        """
        t_min, t_max = self.t_window
        T = self.cfg.diffusion.num_timesteps
        ts = [t for t in space_timesteps(T, steps) if t_min <= t < t_max] or [t_max - 1]
        gen = torch.Generator(self.device).manual_seed(self.cfg.train.seed)
        noise = torch.randn((n, *self.data.data.shape[1:]), generator=gen, device=self.device)
        if ts[0] == T - 1:
            x = noise
        else:
            real = self.data.data[:n].to(self.device)
            noise = noise[: len(real)]
            x = self.diffusion.q_sample(real, torch.full((len(real),), ts[0], device=self.device), noise)
        ema = self.emas[self.cfg.train.ema_rate]
        sampler = sample_ddim
        if self.diffusion.clean_mask:  # a mask-to-image model draws the training pairs' own masks
            real = self.data.data[:len(x)].to(self.device)
            x = x[:len(real)]
            keep = torch.zeros_like(real[:1])
            keep[:, 3:] = 1
            sampler = known_region_sampler("ddim", KnownRegion(real, keep, clean=keep))
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = sampler(self.diffusion.denoiser(ema), x, ts, self.diffusion, eta=0.0)
        image, mask = split_image_mask(out.float().cpu())
        path = os.path.join(self.work_dir, "samples", f"step_{self.step:08d}.png")
        save_pair_grid(path, list(image_to_uint8(image)), list(mask_to_index(mask).to(torch.uint8).numpy()))
        return path

    # -- the loop --------------------------------------------------------------------------

    def _write_config(self) -> None:
        if self.dist.is_main:
            os.makedirs(self.work_dir, exist_ok=True)
            fsutil.atomic_write_text(os.path.join(self.work_dir, "config.yaml"), to_yaml(self.cfg))

    def run(self) -> str | None:
        """Train to train.max_steps (from where a checkpoint left off); returns the latest checkpoint."""
        self._write_config()
        try:
            self._train()
        finally:  # an error or Ctrl-C too: the TensorBoard events logged so far reach the disk
            self._close_tensorboard()
        return ckpt_lib.latest(self.work_dir)

    def _close_tensorboard(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def _train(self) -> None:
        tcfg = self.cfg.train
        # A redrawn bar on a terminal; elsewhere (--no-progress, a log file) a plain line per log.
        live = self.progress and logs.live()
        bar = tqdm(total=tcfg.max_steps, initial=self.step, desc="train", disable=not live, unit="step")
        tick = start = time.perf_counter()
        first_step = self.step
        with bar:
            while self.step < tcfg.max_steps:
                self.train_step()
                bar.update(1)
                at_end = self.step == tcfg.max_steps
                if self.step % tcfg.log_every == 0 or at_end:
                    now = time.perf_counter()
                    row = self._log(now - tick)
                    tick = now
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.1f}")
                    if not live and self.dist.is_main:
                        eta = (tcfg.max_steps - self.step) * (now - start) / (self.step - first_step)
                        print(f"step {self.step}/{tcfg.max_steps}  loss {row['loss']:.4f}  "
                              f"{row['images_per_s']:.1f} images/s  ETA {logs.duration(eta)}", flush=True)
                if self.step % tcfg.save_every == 0 or at_end:
                    self.save()
                if tcfg.sample_every and self.dist.is_main and (self.step % tcfg.sample_every == 0 or at_end):
                    self.preview()
