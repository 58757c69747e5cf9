"""First-run check of a GPU machine: what works, and how fast, in one table (scripts/gpu_check.sh).

    bash scripts/gpu_check.sh                      # one GPU, about 10 minutes, at 256 px
    bash scripts/gpu_check.sh --smoke --out DIR    # the same checks at 16 px on any device (CPU: ~1-2 min)

Every check runs `defect-gen` in its own process (scripts/gpu_check_probe.py), with a timeout,
so a check that fails, crashes or hangs prints its one-line reason and the next one runs:

    nccl                        an NCCL all-reduce under torchrun (CUDA only)
    data                        demo pairs at the checked size, in 5 class folders (K = 5)
    bench large / small         `defect-gen bench --precision bf16 --json`: the training step, sampling,
                                and the bf16 dense matmul peak measured in this run
    train large / small bf16    `torchrun --nproc_per_node 1 ... train`, channels_last
    resume small bf16           the same run again, further: the step and the loss carry on
    sample ddim 50 / dpmpp_2m 20  both trained models, `--batch_size auto`
    paint                       the small model paints a batch into the training photos
    train large / small fp16    fp16 autocast + GradScaler (CUDA only)
    train ... bf16 compile      with train.compile (CUDA only under --smoke: minutes on a CPU)

Figures come from the commands' own output and files: images/s from metrics.jsonl (its last
row, after warm-up and compiling), the share of the bf16 dense peak as 3 x the forward FLOPs
bench counted per image x images/s over the peak bench measured, seconds per pair from
`sample`'s summary line and from the painted pairs' write times, peak memory from the process
(CUDA: max allocated; CPU: max resident set). One process under torchrun is one rank: defect-gen
sets up no process group for it, so NCCL itself is exercised by the nccl check only.

The full run, sized to fit --budget (600 s) on one H100 (not yet timed on one): batch 8 at
256 px; 200 bf16 steps per model (1600 images each), 100 fp16 and 100 compiled steps (compiling
dominates those), 50 more on resuming; 64 pairs per sampler, 16 painted pairs of 50 steps. The
compiled runs come last, so a slow compiler can only cost themselves; a check the budget cuts
short fails with that reason. Results: DIR/gpu_check.json (written after every check) and the
table on stdout; every command's output in DIR/logs/. Exit status 1 if a check failed.
Standard library only: torch and defect_gen are imported by the processes it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "scripts", "gpu_check_probe.py")
PEAK_PREFIX = "gpu_check peak memory:"  # what gpu_check_probe.py prints
CLASSES = [f"defect{k}" for k in range(1, 6)]  # K = 5
# What this script writes in --out (and --overwrite removes; nothing else there is touched).
OWN_ENTRIES = ("gpu_check.json", "logs", "data", "configs", "runs", "samples", "paint")
SKIP_CUDA = "skipped: needs CUDA"


@dataclass(frozen=True)
class Sizes:
    image_size: int
    num_images: int  # demo pairs, spread over the 5 class folders
    batch: int
    bf16_steps: int
    other_steps: int  # fp16 and compiled runs
    resume_steps: int  # steps added by resuming
    log_every: int
    bench_batch: int
    bench_iters: int
    samples: int
    paint_samples: int  # at least 2: seconds per pair are timed between the first and the last
    paint_steps: int
    timeout_s: dict
    shrink: dict = field(default_factory=dict)  # role -> --set overrides that make the network tiny


FULL = Sizes(image_size=256, num_images=48, batch=8, bf16_steps=200, other_steps=100, resume_steps=50,
             log_every=25, bench_batch=8, bench_iters=5, samples=64, paint_samples=16, paint_steps=50,
             timeout_s={"data": 120, "config": 60, "nccl": 90, "bench": 180, "train": 180, "compile": 300,
                        "resume": 120, "sample": 150, "paint": 150})
TINY = {"model.model_channels": 32, "model.channel_mult": "[1,2]", "model.num_res_blocks": 1}
SMOKE = Sizes(image_size=16, num_images=10, batch=2, bf16_steps=4, other_steps=4, resume_steps=2, log_every=2,
              bench_batch=2, bench_iters=1, samples=4, paint_samples=3, paint_steps=5,
              timeout_s=dict.fromkeys(FULL.timeout_s, 240),
              shrink={"large": {**TINY, "model.attention_downsample": "[2]", "model.num_head_channels": 32},
                      "small": TINY})


class CheckFailed(Exception):
    """A check's one-line reason for failing."""


class CheckSkipped(Exception):
    """A check that does not apply here; the message starts with 'skipped:'."""


@dataclass
class Result:
    name: str
    status: str = "ok"  # ok | failed | skipped
    reason: str | None = None
    images_per_s: float | None = None
    share_of_peak: float | None = None  # of the bf16 dense matmul peak measured in this run
    s_per_pair: float | None = None
    peak_memory_mib: float | None = None
    note: str = ""
    seconds: float = 0.0

    @property
    def mark(self) -> str:
        return {"ok": "✓", "failed": "✗", "skipped": "-"}[self.status]


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def error_line(stdout: str, stderr: str) -> str:
    """The line that says why a command failed: defect-gen's `error:` line; else the last
    exception a traceback names (not torchrun's ChildFailedError about it); else the first line."""
    lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
    said = [ln for ln in lines if re.match(r"defect-gen [\w-]+: error:", ln)]
    raised = [ln for ln in lines
              if re.match(r"[\w.]*(Error|Exception|Interrupt)\b", ln) and "ChildFailedError" not in ln]
    return one_line((said or raised[-1:] or lines or ["no output"])[0])


class Runner:
    """Starts the commands of the checks: logs, timeouts, the overall budget."""

    def __init__(self, out: str, budget_s: float, python: str):
        self.out, self.python = out, python
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check_budget(self) -> None:
        if self.left() < 5:
            raise CheckFailed(f"not started: the {self.budget_s:g} s budget (--budget) is spent")

    def argv(self, args: list[str], how: str) -> list[str]:
        if how == "module":
            return [self.python, "-m", "defect_gen", *args]
        if how == "cli":  # defect-gen in a probe process, which adds its peak memory
            return [self.python, PROBE, "cli", *args]
        return [self.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", PROBE, *args]

    def run(self, log: str, args: list[str], timeout_s: float, how: str = "cli") -> str:
        """Run one command (how: module = python -m defect_gen ARGS; cli = the same in a probe
        process; torchrun = torchrun --nproc_per_node 1 gpu_check_probe.py ARGS); its stdout,
        or CheckFailed with the reason in one line."""
        self.check_budget()
        cut = self.left() < timeout_s
        timeout_s = min(timeout_s, self.left())
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        paths = [os.path.join(self.out, "logs", f"{log}.{s}") for s in ("stdout", "stderr")]
        argv = self.argv(args, how)
        with open(paths[0], "w", encoding="utf-8") as out, open(paths[1], "w", encoding="utf-8") as err:
            err.write("$ " + " ".join(argv) + "\n")
            err.flush()
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=self.env, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                stop(proc)
                why = f"the rest of the {self.budget_s:.0f} s --budget" if cut else "its time limit"
                raise CheckFailed(f"stopped after {timeout_s:.0f} s, {why} (log: {paths[1]})") from None
        stdout, stderr = (open(p, encoding="utf-8", errors="replace").read() for p in paths)
        if code != 0:
            raise CheckFailed(f"exit {code}: {error_line(stdout, stderr.split(chr(10), 1)[-1])}")
        return stdout


def stop(proc: subprocess.Popen) -> None:
    """End a timed-out command and the processes it started (its own session)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def peak_memory(stdout: str) -> float | None:
    m = re.search(re.escape(PEAK_PREFIX) + r" ([\d.]+) MiB", stdout)
    return float(m.group(1)) if m else None


def metrics(work_dir: str) -> list[dict]:
    """The rows of a run's metrics.jsonl (a row cut short by a kill is skipped)."""
    path = os.path.join(work_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise CheckFailed(f"{path} was not written")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    if not rows:
        raise CheckFailed(f"{path} holds no row")
    return rows


class Session:
    """What the checks share: sizes, the runner, resolved configs, bench figures, finished runs."""

    def __init__(self, args, sizes: Sizes, runner: Runner, env: dict):
        self.args, self.sizes, self.runner, self.env = args, sizes, runner, env
        self.out, self.smoke, self.cuda = args.out, args.smoke, bool(env.get("cuda_available"))
        self.data_dir = os.path.join(self.out, "data", "classes")
        self.configs: dict[str, str | CheckFailed] = {}
        self.bench: dict[str, dict] = {}
        self.runs: dict[str, str] = {}  # check name -> its run folder, for checks that build on it
        self.results: dict[str, Result] = {}

    def timeout(self, kind: str) -> float:
        return self.sizes.timeout_s[kind]

    def need_cuda(self, why: str = "") -> None:
        if not self.cuda:
            raise CheckSkipped(SKIP_CUDA + why)

    def need(self, name: str) -> str:
        """The run folder of an earlier check, or the reason this check cannot run."""
        if name in self.runs:
            return self.runs[name]
        earlier = self.results.get(name)
        what = {"failed": "failed", "skipped": "was skipped"}.get(earlier.status if earlier else "", "did not run")
        raise CheckFailed(f"needs {name}, which {what}")

    def config(self, role: str) -> str:
        """The role's config resolved once (train --dry-run) at the checked size, K = 5, on the
        demo class folders, into DIR/configs/ROLE.yaml; every later command reads that file."""
        if role not in self.configs:
            try:
                self.configs[role] = self._resolve(role)
            except CheckFailed as exc:
                self.configs[role] = exc
        got = self.configs[role]
        if isinstance(got, CheckFailed):
            raise CheckFailed(f"{role} config: {got}")
        return got

    def _resolve(self, role: str) -> str:
        source = self.args.large_config if role == "large" else self.args.small_config
        z = self.sizes
        sets = {"data.root": self.data_dir, "data.layout": "class_folders", "data.mask_threshold": 1,
                "data.classes": "[" + ",".join(CLASSES) + "]", "model.image_size": z.image_size,
                "train.batch_size": z.batch, "train.keep_last": 1, "train.sample_every": 0, **z.shrink.get(role, {})}
        args = ["train", "--config", source, "--work_dir", os.path.join(self.out, "runs", "unused"), "--dry-run",
                "--num_defect", str(len(CLASSES))]
        for key, value in sets.items():
            args += ["--set", f"{key}={value}"]
        text = self.runner.run(f"config_{role}", args, self.timeout("config"), how="module")
        path = os.path.join(self.out, "configs", f"{role}.yaml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def share(self, role: str, images_per_s: float) -> float | None:
        """Achieved FLOP/s of a training step (3 x forward) over the bf16 dense peak bench measured."""
        bench, peak = self.bench.get(role), self.peak_gflops()
        if bench is None or peak is None:
            return None
        return 3 * bench["fwd_gflops_per_image"] * images_per_s / peak

    def peak_gflops(self) -> float | None:
        peaks = [b["matmul_peak_gflops"] for b in self.bench.values() if b.get("precision") == "bf16"]
        return max(peaks) if peaks else None


# ---------------------------------------------------------------------------------------
# The checks: each fills in its Result or raises CheckFailed / CheckSkipped.


def check_nccl(s: Session, r: Result) -> None:
    s.need_cuda()
    out = s.runner.run(r.name, ["nccl"], s.timeout("nccl"), how="torchrun")
    r.note = one_line(out.strip().splitlines()[-1]) + "; torchrun --standalone --nproc_per_node 1"


def check_data(s: Session, r: Result) -> None:
    """Demo pairs at the checked size, spread over 5 class folders (binary masks, any defect
    pixel is the folder's class): K = 5 with the demo data's look."""
    z, demo = s.sizes, os.path.join(s.out, "data", "demo")
    s.runner.run(r.name, ["make-demo-data", demo, "--image_size", str(z.image_size), "--num_images",
                          str(z.num_images), "--seed", "0"], s.timeout("data"), how="module")
    names = sorted(n for n in os.listdir(os.path.join(demo, "images")) if n.endswith(".png"))
    for i, name in enumerate(names):
        folder = os.path.join(s.data_dir, CLASSES[i % len(CLASSES)])
        os.makedirs(folder, exist_ok=True)
        stem = name[:-len(".png")]
        shutil.copyfile(os.path.join(demo, "images", name), os.path.join(folder, f"{stem}.png"))
        shutil.copyfile(os.path.join(demo, "masks", name), os.path.join(folder, f"{stem}_mask.png"))
    s.runs[r.name] = s.data_dir
    r.note = f"{len(names)} demo pairs at {z.image_size} px in {len(CLASSES)} class folders"


def check_bench(s: Session, r: Result, role: str) -> None:
    z = s.sizes
    args = ["bench", "--config", s.config(role), "--batch_size", str(z.bench_batch), "--iters", str(z.bench_iters),
            "--precision", "bf16", "--json"]
    two_stage = role == "large" and not isinstance(s.configs.get("small", None), CheckFailed)
    if two_stage:
        args += ["--small_config", s.config("small")]
    out = s.runner.run(r.name, args, s.timeout("bench"), how="module")
    try:
        data = json.loads(out[out.index("{"):])
    except ValueError:
        raise CheckFailed(f"bench printed no JSON (log: {s.out}/logs/{r.name}.stdout)") from None
    s.bench[role] = data
    r.images_per_s, r.share_of_peak = data["train_images_per_s"], data["train_share_of_peak"]
    r.s_per_pair, r.peak_memory_mib = data["ddim50_s_per_pair"], data["peak_memory_mb"]
    r.note = (f"{data['precision']} step {data['train_ms']:.0f} ms at batch {data['batch_size']}; "
              f"{'two-stage' if two_stage else 'one-model'} DDIM 50 from step times; "
              f"matmul peak {rate(data['matmul_peak_gflops'])} ({data['precision']})")


def train_args(s: Session, role: str, work: str, precision: str, compile_: bool, steps: int) -> list[str]:
    sets = {"train.precision": precision, "train.compile": str(compile_).lower(), "train.channels_last": "true",
            "train.max_steps": steps, "train.log_every": s.sizes.log_every, "train.save_every": steps}
    args = ["train", "--config", s.config(role), "--work_dir", work, "--no-progress"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def check_train(s: Session, r: Result, role: str, precision: str, compile_: bool) -> None:
    if precision == "fp16":
        s.need_cuda()
    if compile_ and s.smoke:
        s.need_cuda(" in --smoke (compiling on a CPU takes minutes)")
    s.need("data")
    z = s.sizes
    steps = z.bf16_steps if precision == "bf16" and not compile_ else z.other_steps
    work = os.path.join(s.out, "runs", r.name)
    out = s.runner.run(r.name, ["cli", *train_args(s, role, work, precision, compile_, steps)],
                       s.timeout("compile" if compile_ else "train"), how="torchrun")
    rows = metrics(work)
    if rows[-1]["step"] != steps:
        raise CheckFailed(f"metrics.jsonl ends at step {rows[-1]['step']}, expected {steps}")
    r.images_per_s = rows[-1]["images_per_s"]  # the last stretch: after warm-up and compiling
    r.share_of_peak = s.share(role, r.images_per_s)
    r.peak_memory_mib = peak_memory(out)
    r.note = f"{steps} steps, batch {z.batch}; loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}"
    s.runs[r.name] = work


def check_resume(s: Session, r: Result) -> None:
    """Train the small bf16 run further: it must say it resumed at its last step, keep its
    metrics, and its loss must carry on (not jump back towards the untrained network's)."""
    work = s.need("train_small_bf16")
    before = metrics(work)
    start, loss0 = before[-1]["step"], before[-1]["loss"]
    target = start + s.sizes.resume_steps
    out = s.runner.run(r.name, ["cli", *train_args(s, "small", work, "bf16", False, target)], s.timeout("resume"),
                       how="torchrun")
    said = re.search(r"resumed from \S+ at step (\d+)", out)
    if not said or int(said.group(1)) != start:
        raise CheckFailed(f"expected 'resumed from ... at step {start}' in the output, got "
                          f"{said.group(0) if said else 'no such line'}")
    after = metrics(work)
    kept, new = [x for x in after if x["step"] <= start], [x for x in after if x["step"] > start]
    if kept != before:
        raise CheckFailed(f"metrics.jsonl's rows up to step {start} changed on resuming")
    if not new or new[-1]["step"] != target:
        raise CheckFailed(f"metrics.jsonl should go on to step {target}, ends at {after[-1]['step']}")
    loss1 = new[0]["loss"]
    if not loss1 <= 2 * loss0:
        raise CheckFailed(f"the loss jumped from {loss0:.4f} (step {start}) to {loss1:.4f} (step {new[0]['step']}) "
                          f"on resuming: more than 2x")
    r.images_per_s, r.peak_memory_mib = new[-1]["images_per_s"], peak_memory(out)
    r.share_of_peak = s.share("small", r.images_per_s)
    r.note = f"step {start} -> {target}; loss {loss0:.4f} at {start}, {loss1:.4f} at {new[0]['step']}"


def check_sample(s: Session, r: Result, sampler: str, steps: int) -> None:
    large, small = s.need("train_large_bf16"), s.need("train_small_bf16")
    folder = os.path.join(s.out, "samples", f"{sampler}_{steps}")
    out = s.runner.run(r.name, ["sample", "--large_recep", large, "--small_recep", small, "--step_inference", "200",
                                "--sample_dir", folder, "--num_samples", str(s.sizes.samples), "--batch_size", "auto",
                                "--steps", str(steps), "--sampler", sampler, "--keep-empty", "--no-progress"],
                       s.timeout("sample"))
    said = re.search(r"^(\d+) pairs in .* in ([\d.]+) s \(", out, re.M)
    if not said or int(said.group(1)) == 0:
        raise CheckFailed("sample printed no 'N pairs in DIR in S s' line")
    pairs, seconds = int(said.group(1)), float(said.group(2))
    r.s_per_pair, r.peak_memory_mib = seconds / pairs, peak_memory(out)
    r.note = f"{pairs} pairs, --batch_size auto, two-stage (switch at t = 200), {seconds:.1f} s"


def check_paint(s: Session, r: Result) -> None:
    """Paint a batch with the small model; seconds per pair from the pair files' write times
    (first to last: model loading and the first pair's warm-up left out), as `paint` prints
    whole seconds only."""
    small = s.need("train_small_bf16")
    z, folder = s.sizes, os.path.join(s.out, "paint")
    out = s.runner.run(r.name, ["paint", "--model", small, "--backgrounds", "training", "--sample_dir", folder,
                                "--num_samples", str(z.paint_samples), "--steps", str(z.paint_steps), "--no-progress"],
                       s.timeout("paint"))
    images = os.path.join(folder, "images")
    names = sorted(os.listdir(images)) if os.path.isdir(images) else []
    if len(names) != z.paint_samples:
        raise CheckFailed(f"{images} holds {len(names)} pairs, expected {z.paint_samples}")
    written = [os.stat(os.path.join(images, n)).st_mtime for n in names]
    r.s_per_pair = (max(written) - min(written)) / (len(written) - 1)
    r.peak_memory_mib = peak_memory(out)
    r.note = f"{len(names)} pairs painted into training photos, {z.paint_steps} DDIM steps"


def plan() -> list[tuple[str, object]]:
    """The checks in the order they run (the compiled runs last: compiling is the slowest part)."""
    checks = [("nccl", check_nccl), ("data", check_data),
              ("bench_large", partial(check_bench, role="large")), ("bench_small", partial(check_bench, role="small"))]
    checks += [(f"train_{role}_bf16", partial(check_train, role=role, precision="bf16", compile_=False))
               for role in ("large", "small")]
    checks += [("resume_small_bf16", check_resume),
               ("sample_ddim_50", partial(check_sample, sampler="ddim", steps=50)),
               ("sample_dpmpp_2m_20", partial(check_sample, sampler="dpmpp_2m", steps=20)),
               ("paint", check_paint)]
    checks += [(f"train_{role}_fp16", partial(check_train, role=role, precision="fp16", compile_=False))
               for role in ("large", "small")]
    checks += [(f"train_{role}_bf16_compile", partial(check_train, role=role, precision="bf16", compile_=True))
               for role in ("large", "small")]
    return checks


# ---------------------------------------------------------------------------------------
# Environment, output folder, table, JSON


def environment(python: str, env: dict) -> dict:
    """torch, CUDA and the device from a probe process; the driver from nvidia-smi."""
    info: dict = {"driver": None}
    try:
        done = subprocess.run([python, PROBE, "env"], capture_output=True, text=True, timeout=120, env=env)
        if done.returncode == 0:
            info.update(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
            info["error"] = error_line(done.stdout, done.stderr)
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        info["error"] = one_line(f"{type(exc).__name__}: {exc}")
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=60)
            if done.returncode == 0 and done.stdout.strip():
                info["driver"] = done.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return info


class UsageError(Exception):
    """Bad input: one line, exit status 2."""


def check_out(out: str, overwrite: bool) -> None:
    """--out must be new, empty, or hold an earlier result of this script (then --overwrite)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: is a file; expected a folder (new, empty, or an earlier gpu_check result)")
    if not os.path.isdir(out) or not os.listdir(out):
        return
    if not os.path.isfile(os.path.join(out, "gpu_check.json")):
        raise UsageError(f"--out {out}: not empty and holds no gpu_check.json; expected a new or empty folder")
    if not overwrite:
        raise UsageError(f"--out {out}: holds an earlier result ({os.path.join(out, 'gpu_check.json')}); "
                         f"pass --overwrite to replace it, or give another --out")


def clear_own(out: str) -> None:
    """Remove what an earlier run of this script wrote in out (OWN_ENTRIES), nothing else."""
    for name in OWN_ENTRIES:
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def header(s: Session) -> str:
    e = s.env
    device = (f"{e['device']} ({e['device_count']} GPU)" if e.get("cuda_available")
              else f"CPU: {e.get('cpu')} x{e.get('threads', '?')}")
    torch_line = f"torch {e.get('torch', '?')}"
    if e.get("cuda_available"):
        torch_line += f", CUDA {e.get('cuda')}, cuDNN {e.get('cudnn')}, NCCL {e.get('nccl')}"
    mode = f"{'--smoke' if s.smoke else 'full'} run, {s.sizes.image_size} px, K = {len(CLASSES)}"
    lines = [f"gpu_check ({mode}): {device} | driver {e.get('driver') or 'none (no nvidia-smi)'} | {torch_line}"]
    if e.get("error"):
        lines.append(f"environment probe failed: {e['error']}")
    peak = s.peak_gflops()
    lines.append(f"bf16 dense matmul peak measured in this run: "
                 f"{rate(peak) if peak else 'not measured (bench failed)'}")
    return "\n".join(lines)


def rate(gflops: float) -> str:
    return f"{gflops / 1e3:.1f} TFLOP/s" if gflops >= 1e3 else f"{gflops:.0f} GFLOP/s"


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def memory(mib: float | None) -> str:
    if mib is None:
        return "—"
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def table(s: Session, results: list[Result]) -> str:
    rows = [("check", "", "images/s", "% of bf16 peak", "s / pair", "peak memory", "seconds", "note")]
    for r in results:
        share = None if r.share_of_peak is None else 100 * r.share_of_peak
        rows.append((r.name, r.mark, fmt(r.images_per_s, ".1f"), fmt(share, ".1f", " %"), fmt(r.s_per_pair, ".3f"),
                     memory(r.peak_memory_mib), f"{r.seconds:.0f}", r.reason or r.note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + f" | {row[-1]} |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    return header(s) + "\n\n" + "\n".join(lines)


def write_json(s: Session, results: list[Result], finished: bool) -> str:
    path = os.path.join(s.out, "gpu_check.json")
    data = {"mode": "smoke" if s.smoke else "full", "finished": finished, "environment": s.env,
            "bf16_peak_gflops": s.peak_gflops(), "sizes": asdict(s.sizes),
            "checks": [dict(asdict(r), mark=r.mark) for r in results]}
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return path


def run_checks(s: Session) -> list[Result]:
    results: list[Result] = []
    checks = plan()
    for i, (name, fn) in enumerate(checks, 1):
        r = Result(name)
        start = time.monotonic()
        print(f"[{i}/{len(checks)}] {name} ...", flush=True)
        try:
            s.runner.check_budget()
            fn(s, r)
        except CheckSkipped as exc:
            r.status, r.reason = "skipped", str(exc)
        except CheckFailed as exc:
            r.status, r.reason = "failed", one_line(str(exc))
        except Exception as exc:  # this script's own fault: the check fails, the others still run
            r.status, r.reason = "failed", one_line(f"gpu_check.py: {type(exc).__name__}: {exc}")
        r.seconds = time.monotonic() - start
        s.results[name] = r
        results.append(r)
        print(f"[{i}/{len(checks)}] {name} {r.mark} {r.reason or ''}".rstrip(), flush=True)
        write_json(s, results, finished=False)
    write_json(s, results, finished=True)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="the same checks at 16 px on any device (CPU: fp16, NCCL "
                   "and compiling say 'skipped: needs CUDA')")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "gpu_check"), help="result folder (default: "
                   "runs/gpu_check in the repository): gpu_check.json, logs/, the runs")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in --out")
    p.add_argument("--budget", type=float, default=600, help="seconds for all checks together (default 600); "
                   "checks left when it is spent fail as not started")
    p.add_argument("--large_config", default=os.path.join(ROOT, "configs", "large.yaml"),
                   help="large-RF config (default configs/large.yaml); size, classes and data are set by the check")
    p.add_argument("--small_config", default=os.path.join(ROOT, "configs", "small.yaml"),
                   help="small-RF config (default configs/small.yaml)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(errors="replace")  # the marks (✓ ✗ —) on a terminal that cannot show them
    args = parse_args(argv)
    args.out = os.path.abspath(args.out)
    try:
        if args.budget <= 0:
            raise UsageError(f"--budget must be > 0 seconds, got {args.budget:g}")
        for flag, path in (("--large_config", args.large_config), ("--small_config", args.small_config)):
            if not os.path.isfile(path):
                raise UsageError(f"{flag} {path}: file not found")
        check_out(args.out, args.overwrite)
        runner = Runner(args.out, args.budget, sys.executable)
        env = environment(sys.executable, runner.env)
        if not args.smoke and env.get("error"):
            raise UsageError(f"the environment probe ({PROBE} env) failed: {env['error']}")
        if not args.smoke and not env.get("cuda_available"):
            raise UsageError("no CUDA device (torch.cuda.is_available() is false): the full check needs a GPU; "
                             "--smoke runs the same checks at 16 px on this machine")
    except UsageError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    clear_own(args.out)
    os.makedirs(args.out, exist_ok=True)
    session = Session(args, SMOKE if args.smoke else FULL, runner, env)
    results = run_checks(session)
    print()
    print(table(session, results))
    print(f"\nJSON: {os.path.join(args.out, 'gpu_check.json')}; logs: {os.path.join(args.out, 'logs')}")
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
