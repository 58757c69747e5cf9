"""The `defect-gen` command and its subcommands (see build_parser; --help lists them all).

Only this module parses arguments. A `DefectGenError` (bad config, file, checkpoint, value)
becomes one line on stderr and exit status 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from defect_gen import fsutil
from defect_gen.errors import DefectGenError


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one model (large- or small-RF, as its config says)")
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--work_dir", required=True, help="run folder: config.yaml, checkpoint/, metrics.jsonl")
    p.add_argument("--num_defect", type=int, default=None, help="number of defect classes (checked against data.classes)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=500 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate image + mask pairs with the large and small models")
    p.add_argument("--large_recep", help="large-RF export folder, .pt checkpoint or run folder; ours or published")
    p.add_argument("--small_recep", help="small-RF export folder, .pt checkpoint or run folder; ours or published")
    p.add_argument("--large_recep_config", help="YAML for a published checkpoint (optional for ours, which carry one)")
    p.add_argument("--small_recep_config", help="YAML for a published checkpoint (optional for ours, which carry one)")
    p.add_argument("--step_inference", type=int, required=True,
                   help="switch step: large model for t >= S, small model for t < S (0 = large only, T = small only)")
    p.add_argument("--num_defect", type=int, default=None, help="number of defect classes (checked against the checkpoints)")
    p.add_argument("--sample_dir", required=True, help="output folder")
    p.add_argument("--num_samples", type=int, default=None,
                   help="pairs to write (default: one per --mask file, else one per --good image, else 16)")
    p.add_argument("--batch_size", default="auto", help="pairs per batch, or auto: sized to GPU memory (8 on CPU)")
    p.add_argument("--seed", type=int, default=0, help="pair i uses seed + i (retries: + num_samples each)")
    p.add_argument("--steps", type=int, default=None, help="respace to N steps (default: all T)")
    p.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp_2m"], default=None,
                   help="default: ddim (eta 0) for published checkpoints, as their ColdDiffusion step; else ddpm. "
                        "dpmpp_2m (DPM-Solver++(2M), deterministic) with --steps 20 is the fast choice")
    p.add_argument("--eta", type=float, default=None, help="DDIM noise (default 0 = deterministic); ddim only")
    p.add_argument("--allow-model-mismatch", action="store_true",
                   help="let a model serve timesteps outside its training window (diffusion.t_min/t_max), "
                        "or the two models swapped roles")
    g = p.add_argument_group("control")
    g.add_argument("--classes", default="", help="comma-separated classes (names or 1..K) every pair must contain: "
                   "class-conditional models are asked for them; candidates without them are rejected")
    g.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance weight for class-conditional models (default 1 = plain "
                        "conditional; 2-4 hold the asked-for classes more often, at twice the compute)")
    g.add_argument("--max-tries", type=int, default=20, help="candidates per pair before it is given up (--classes)")
    g.add_argument("--mask", dest="mask_dir", help="folder of class-index masks: generate an image for each")
    g.add_argument("--good", dest="good_dir", help="folder of defect-free images to paint defects into")
    g.add_argument("--place", choices=["as-is", "random"], default=None,
                   help="where masks go (default: random for --good without --mask, else as-is)")
    g.add_argument("--resample", type=int, default=1, help="RePaint: denoise each stretch this many times")
    g.add_argument("--jump", type=int, default=10, help="RePaint: steps jumped back up per resampling")
    g = p.add_argument_group("output")
    g.add_argument("--min-defect-pixels", type=int, default=0, help="drop defect regions smaller than this")
    g.add_argument("--keep-empty", action="store_true", help="also write pairs whose mask has no defect")
    g.add_argument("--layout", choices=["paired", "mvtec", "defect_spectrum"], default="paired",
                   help="folder structure of the pairs (reads back with the same data.layout)")
    g.add_argument("--resume", action="store_true",
                   help="finish a run that was stopped: write only the pairs its manifest lacks (same settings)")
    g.add_argument("--overwrite", action="store_true", help="replace the pairs a previous run wrote to --sample_dir")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 on CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="receptive field, parameters and GFLOPs of a model config")
    p.add_argument("--config", required=True)
    p.add_argument("--num_defect", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")


def _add_demo(sub) -> None:
    p = sub.add_parser("make-demo-data", help="write the built-in procedural demo dataset (paired layout)")
    p.add_argument("dir")
    p.add_argument("--num_images", type=int, default=48)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write an export folder for sharing and sampling: model.safetensors (the "
                                      "sampling EMA), config.yaml, export.json, MODEL_CARD.md")
    p.add_argument("src", help="training checkpoint (.pt) or run folder (its latest checkpoint)")
    p.add_argument("--out", required=True, help="export folder to create (replaced only with --force)")
    p.add_argument("--rate", default=None, help="which EMA (default: train.ema_rate, the one sampling uses)")
    p.add_argument("--report", default=None, help="a `defect-gen evaluate --out` folder whose results go into "
                                                  "the model card (without it the card says: not evaluated)")
    p.add_argument("--force", action="store_true", help="replace an existing export folder at --out")


def _add_convert(sub) -> None:
    p = sub.add_parser("convert-published", help="turn a published Defect-Gen checkpoint + its YAML into an export "
                                                 "folder (as `export` writes), once")
    p.add_argument("checkpoint", help="the published implementation's .pt ({model, ema, optimizer})")
    p.add_argument("--config", required=True, help="its YAML (model.target, model.params, diffusion)")
    p.add_argument("--out", required=True, help="export folder to create (replaced only with --force)")
    p.add_argument("--force", action="store_true", help="replace an existing export folder at --out")


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="dataset tools: `data check` validates a dataset before training")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    c = data_sub.add_parser("check", help="per-class counts, defect-pixel shares, image sizes and every problem")
    c.add_argument("--config", required=True, help="YAML config whose data section to check")
    c.add_argument("--num_defect", type=int, default=None, help="number of defect classes (checked against data.classes)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set data.root=DIR (repeatable)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="training-step and sampling speed against the measured matmul peak")
    p.add_argument("--config", required=True, help="the model to benchmark (training and sampling)")
    p.add_argument("--small_config", default=None, help="small-RF config for the two-stage sampling figures")
    p.add_argument("--num_defect", type=int, default=None)
    p.add_argument("--image_size", type=int, default=None, help="override model.image_size")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--iters", type=int, default=5, help="timed repetitions (the best counts)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models")
    p.add_argument("--channels_last", choices=["auto", "on", "off"], default="auto", help="auto: on for CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where it is faster (GPUs with bf16; CPUs with AMX/AVX512-BF16), else fp32")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="do generated pairs help a segmenter? real only vs real + synthetic, "
                                        "plus generation quality; writes REPORT_DIR/report.md")
    p.add_argument("--real", required=True, metavar="CFG", help="YAML config of the real data; its few-shot "
                   "selection (data.num_images_per_class, selection_seed / selection_file) is the training split, "
                   "the other defect images the held-out split")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of the real config, e.g. --set data.root=DIR (repeatable)")
    p.add_argument("--synthetic", nargs="+", action="extend", default=[], metavar="DIR",
                   help="`defect-gen sample` / `paint` folders (paired layout); each is evaluated")
    p.add_argument("--copy-paste", dest="copy_paste", metavar="GOOD_DIR", default=None,
                   help="add the copy-paste baseline: the training split's real defects pasted onto these "
                        "defect-free photos at random spots (what a generator has to beat)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for report.md, results.json, plots")
    p.add_argument("--ratios", default="0.5,1,2", help="synthetic pairs per real training pair, comma-separated")
    p.add_argument("--seeds", type=int, default=3, help="segmenters per training set (seeds 0..N-1)")
    p.add_argument("--steps", type=int, default=1000, help="segmenter training steps")
    p.add_argument("--batch_size", type=int, default=16, help="segmenter batch size")
    p.add_argument("--crop", type=int, default=64, help="segmenter training crops (px of the evaluation size; "
                   "0 or >= --image_size: whole images); half of them centred on a defect")
    p.add_argument("--lr", type=float, default=3e-3, help="segmenter peak learning rate (one-cycle)")
    p.add_argument("--width", type=int, default=16, help="UNet base channels")
    p.add_argument("--real_finish", type=float, default=0.0, metavar="SHARE",
                   help="share of the last segmenter steps trained on the real pairs alone (0: the mix to the end)")
    p.add_argument("--real_share", type=float, default=0.0, metavar="SHARE",
                   help="share of each segmenter batch drawn from the real pairs whatever the ratio "
                        "(0: uniform over real + synthetic, i.e. 1 / (1 + ratio))")
    p.add_argument("--image_size", type=int, default=128, help="evaluation size: real and synthetic pairs are "
                   "resized to it alike")
    p.add_argument("--negatives", type=int, default=0, metavar="N",
                   help="add N defect-free photos of the real config (data.good_folders; all-background masks) "
                        "to every training set, real only included, as a user with spare good photos would; "
                        "ratios still count defect pairs (default 0)")
    p.add_argument("--max_heldout", type=int, default=None,
                   help="at most this many held-out real pairs (seeded pick; default: all)")
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="no held-out photos needed: K-fold cross-validation over the training pairs themselves "
                        "(generated pairs made from a validation photo are left out of that fold); 0: held-out split")
    p.add_argument("--segmenter", choices=["unet", "deeplabv3"], default="unet",
                   help="unet: built-in small UNet; deeplabv3: torchvision's, from scratch (needs torchvision)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="segmenters trained at once, each in its own process with CPU threads / N threads "
                        "(measure it: experiments/evaluate_jobs/bench_jobs.py); the same runs and cache as one "
                        "at a time")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_filter(sub) -> None:
    p = sub.add_parser("filter", help="keep the generated pairs whose defect a segmenter trained on the real "
                                      "pairs finds where the mask says (the top share of each class)")
    p.add_argument("--real", required=True, metavar="CFG", help="YAML config of the real data; its training "
                   "split (the few-shot selection, or every pair) trains the segmenter")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of the real config, e.g. --set data.selection_file=RUN/selected_files.json")
    p.add_argument("--synthetic", nargs="+", action="extend", required=True, metavar="DIR",
                   help="`defect-gen paint` / `sample` folders; each one's kept pairs go to OUT/<its name>")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the filtered folders")
    p.add_argument("--keep", type=float, default=0.5, help="share of each class's pairs kept, best first")
    p.add_argument("--steps", type=int, default=2000, help="segmenter training steps")
    p.add_argument("--seed", type=int, default=0, help="segmenter seed")
    p.add_argument("--image_size", type=int, default=128, help="size the segmenter sees (as in evaluate)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_mix(sub) -> None:
    p = sub.add_parser("mix", help="combine generated pair folders class by class (e.g. painted blowholes, "
                                   "copy-pasted uneven surfaces) into one folder")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--take", dest="takes", action="append", metavar="DIR[:CLASS,...]",
                     help="a `sample` / `paint` folder (paired layout) and, after ':', the classes to take from it "
                          "(a pair is taken when all its classes are listed; no list: every pair); repeatable")
    how.add_argument("--choose", metavar="REPORT_DIR", help="take, for each class, the --synthetic folder that "
                     "scored best on it in this `evaluate` report (best: an `evaluate --folds` one), where it "
                     "beats real only")
    p.add_argument("--ratio", type=float, help="with --choose: the report's ratio to compare at (needed when it "
                   "has several)")
    p.add_argument("--out", required=True, metavar="DIR", help="the new folder (must not exist)")


def _add_paint(sub) -> None:
    p = sub.add_parser("paint", help="paint defects into defect-free photos at their own resolution "
                                     "(small-RF model on a window around each placed training mask)")
    p.add_argument("--model", help="small-RF checkpoint (.pt) or run folder trained on native crops "
                   "(configs/magnetic_tile_paint.yaml); left out with --copy-paste")
    p.add_argument("--config", help="config whose few-shot training split gives the defects "
                   "(default: the model's own training config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of that config, e.g. --set data.root=DIR (repeatable)")
    p.add_argument("--good", dest="good_dir", help="folder of defect-free photos (searched recursively); "
                   "needed only with --backgrounds good")
    p.add_argument("--backgrounds", choices=["good", "training", "same_class"], default="good",
                   help="good: paint into the --good photos; training: into the training split's own defect "
                        "photos, keeping their defects (a second defect per photo, no defect-free photos needed); "
                        "same_class: only into training photos of the pasted defect's class")
    p.add_argument("--sample_dir", required=True, help="output folder (paired layout, manifest, preview)")
    p.add_argument("--num_samples", type=int, default=80)
    p.add_argument("--seed", type=int, default=0, help="pair i uses seed + i")
    p.add_argument("--steps", type=int, default=50, help="respaced denoising steps")
    p.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp_2m"], default="ddim",
                   help="ddim (eta 0) by default; dpmpp_2m (DPM-Solver++(2M)) for --steps 20")
    p.add_argument("--eta", type=float, default=None, help="DDIM noise (default 0 = deterministic); ddim only")
    p.add_argument("--strength", type=float, default=1.0,
                   help="1: draw each defect from noise; below 1: redraw the pasted real defect from t = strength*T")
    p.add_argument("--scale", default="0.75,1.25", help="range of the random scale of a placed defect: MIN,MAX")
    p.add_argument("--margin", type=int, default=16, help="photo pixels around the defect in the denoised window")
    p.add_argument("--place", choices=["random", "source"], default="random",
                   help="random: anywhere, with quarter turns; source: where the defect was in its own photo "
                        "(relative, +-5 %%), for defects tied to a place such as breaks at a tile's edge")
    p.add_argument("--match_light", action="store_true",
                   help="scale each pasted defect's pixels by the surface light around its new place over that "
                        "around it in its own photo, so it keeps its own contrast to the surface")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="class-conditional models: classifier-free guidance towards each window's mask classes "
                        "(default 1 = plain conditional)")
    p.add_argument("--copy-paste", action="store_true", help="no model: paste the real defect pixels (the baseline)")
    p.add_argument("--overwrite", action="store_true", help="replace the pairs of an earlier run in --sample_dir")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="defect-gen")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_sample, _add_info, _add_demo, _add_export, _add_convert, _add_data, _add_bench,
                _add_evaluate, _add_filter, _add_mix, _add_paint):
        add(sub)
    # Built from the subcommands themselves, so the summary never falls behind them.
    parser.description = (f"Generate defect image + mask pairs with two diffusion models. Commands: "
                          f"{', '.join(sub.choices)}; `defect-gen COMMAND --help` for each.")
    return parser


# ---------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from defect_gen import distributed
    from defect_gen.config import load_config, resolve_num_defect, to_yaml
    from defect_gen.training.loop import TrainLoop, finished_checkpoint, resolve_device

    cfg = resolve_num_defect(load_config(args.config, args.overrides), args.num_defect)
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return 0
    device = resolve_device(cfg.train.device)
    dinfo = distributed.init(device.type)
    # A finished run is said to be finished before the data is loaded (minutes, on a big set).
    finished = finished_checkpoint(args.work_dir, cfg.train.max_steps)
    if finished:
        if dinfo.is_main:
            print(f"{args.work_dir} has already finished: {finished[0]} is at step {finished[1]} "
                  f"(train.max_steps {cfg.train.max_steps}); to train further raise it, e.g. --set "
                  f"train.max_steps={2 * cfg.train.max_steps}")
        distributed.cleanup()
        return 0
    if device.type == "cuda":
        import torch

        device = torch.device("cuda", dinfo.local_rank)
    # One run per WORK_DIR: two would write the same checkpoint names and metrics lines.
    lock = fsutil.lock_dir(args.work_dir, "training run", "--work_dir") if dinfo.is_main else contextlib.nullcontext()
    loop = None
    try:
        with lock, _sigterm_as_interrupt():
            loop = TrainLoop(cfg, args.work_dir, device, progress=not args.no_progress)
            path = loop.run()
    except KeyboardInterrupt:
        if dinfo.is_main:
            print(f"defect-gen train: {_interrupted(args.work_dir, loop)}", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()
    if dinfo.is_main:
        print(f"checkpoint: {path}")
    return 0


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler stopping the job, `kill`) ends a run like Ctrl-C: the message says
    how to pick it up again, and a checkpoint or PNG being written is cleaned up."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(work_dir: str, loop) -> str:
    from defect_gen.models import checkpoint as ckpt_lib
    from defect_gen.training.loop import checkpoint_step

    at = f" at step {loop.step}" if loop is not None else ""
    latest = ckpt_lib.latest(work_dir)
    if latest is None:
        return f"interrupted{at}; no checkpoint was saved yet, so re-running the same command starts from step 0"
    return (f"interrupted{at}; re-running the same command resumes from {latest} "
            f"(step {checkpoint_step(latest)})")


def cmd_sample(args) -> int:
    import torch

    from defect_gen import distributed
    from defect_gen.errors import ConfigError
    from defect_gen.models.loading import load_model
    from defect_gen.pipeline.sample_to_folder import SampleSettings, check_settings, generate
    from defect_gen.training.loop import resolve_device

    if args.batch_size != "auto" and not args.batch_size.isdigit():
        raise ConfigError(f"--batch_size must be a positive integer or auto, got {args.batch_size!r}")
    settings = SampleSettings(
        sample_dir=args.sample_dir, step_inference=args.step_inference, num_samples=args.num_samples,
        batch_size=None if args.batch_size == "auto" else int(args.batch_size), seed=args.seed, steps=args.steps,
        sampler=args.sampler, eta=args.eta, overwrite=args.overwrite, raw_weights=args.raw_weights,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()], max_tries=args.max_tries,
        mask_dir=args.mask_dir, good_dir=args.good_dir, place=args.place, resample=args.resample,
        jump_length=args.jump, min_defect_pixels=args.min_defect_pixels, keep_empty=args.keep_empty,
        layout=args.layout, precision=args.precision, resume=args.resume,
        allow_mismatch=args.allow_model_mismatch, guidance=args.guidance)
    check_settings(settings)
    device = resolve_device(args.device)
    dinfo = distributed.init(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dinfo.local_rank)
    large = small = None
    if args.large_recep:
        large = load_model(args.large_recep, device, args.raw_weights, args.large_recep_config, "--large_recep_config")
    if args.small_recep:
        small = load_model(args.small_recep, device, args.raw_weights, args.small_recep_config, "--small_recep_config")
    if large is None and small is None:
        raise ConfigError("give --large_recep and/or --small_recep")
    for m in (large, small):
        if m is not None and args.num_defect is not None and m.cfg.num_defect != args.num_defect:
            raise ConfigError(f"--num_defect {args.num_defect} disagrees with {m.path}, "
                              f"which was trained with {m.cfg.num_defect} defect classes")
    try:
        with _sigterm_as_interrupt():  # a stopped job says, like Ctrl-C, how to finish it
            summary = generate(large, small, settings, device, progress=not args.no_progress)
    finally:
        distributed.cleanup()
    if dinfo.world_size > 1:
        print(f"rank {dinfo.rank}: {len(summary.rows)} pairs")
    if summary.wanted and not summary.pairs:
        raise DefectGenError(_nothing_written(summary, settings))
    if dinfo.is_main:
        rate = summary.pairs / max(summary.seconds, 1e-9)
        shown = f"; preview: {summary.preview}" if summary.preview else ""
        print(f"{summary.pairs} pairs in {args.sample_dir} in {summary.seconds:.1f} s ({rate:.2f} pairs/s, "
              f"{summary.steps}){shown}")
        if summary.tries != summary.pairs or summary.failed:
            print(f"acceptance: {summary.pairs} of {summary.tries} candidates kept ({summary.acceptance:.1%})")
        if summary.failed:
            print(f"warning: {summary.failed} pair(s) had no accepted candidate in --max-tries {settings.max_tries}; "
                  f"their names are missing (raise --max-tries or relax --classes)", file=sys.stderr)
    return 0


def _nothing_written(summary, settings) -> str:
    """Why a sampling run that set out to make pairs wrote none, and what to change."""
    what = f"no pair written to {settings.sample_dir}: {summary.tries} candidates"
    if summary.empty == summary.tries:
        return (f"{what}, all with empty masks (nothing left after --min-defect-pixels "
                f"{settings.min_defect_pixels})" if settings.min_defect_pixels > 1 else f"{what}, all with empty "
                f"masks") + "; pass --keep-empty to keep them, or train the models longer"
    need = f"held every class of --classes {','.join(settings.classes)}" if settings.classes else "was accepted"
    return (f"{what} ({summary.empty} with empty masks), none {need} within --max-tries {settings.max_tries}; "
            f"raise --max-tries, relax --classes, or train the models longer")


def cmd_info(args) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from defect_gen.config import load_config, resolve_num_defect
    from defect_gen.core.unet import build_unet, num_channels, receptive_field

    cfg = resolve_num_defect(load_config(args.config, args.overrides), args.num_defect)
    size = cfg.model.image_size
    # On the meta device: shapes and FLOPs without weights or activations (a 256 px large
    # config in 5 s instead of 22 s and gigabytes, and any size fits).
    with torch.device("meta"):
        model = build_unet(cfg.model, cfg.num_defect).eval()
        x = torch.zeros(1, num_channels(cfg.num_defect), size, size)
        t = torch.zeros(1, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t)
    rf = receptive_field(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    scope = "global (attention)" if rf.is_global else f"{rf.pixels} px"
    print(f"config:           {args.config}")
    print(f"image size:       {size} px, {cfg.num_defect} defect classes, {num_channels(cfg.num_defect)} channels")
    print(f"receptive field:  {scope}; convolutions alone: {rf.conv_pixels} px "
          f"= {rf.conv_pixels / size:.2f} x image side")
    print(f"parameters:       {params / 1e6:.2f} M")
    print(f"forward GFLOPs:   {counter.get_total_flops() / 1e9:.2f} per image")
    return 0


def cmd_demo(args) -> int:
    from defect_gen.data.demo import make_demo_data

    fsutil.check_writable(args.dir, "make-demo-data DIR")
    try:
        summary = make_demo_data(args.dir, num_images=args.num_images, image_size=args.image_size,
                                 seed=args.seed, overwrite=args.overwrite)
    except OSError as exc:  # a full disk, a file in the way, a folder made read-only
        raise fsutil.output_error(args.dir, exc, "make-demo-data DIR") from None
    print(f"wrote {summary['num_images']} demo pairs to {args.dir}")
    return 0


def cmd_export(args) -> int:
    from defect_gen.models.export import export_run, refuse_existing

    fsutil.check_writable(args.out, "--out")
    refuse_existing(args.out, args.force)  # before the checkpoint is read: a refusal costs nothing
    print(f"wrote {export_run(args.src, args.out, args.rate, force=args.force, report=args.report)}")
    return 0


def cmd_convert(args) -> int:
    from defect_gen.models.export import refuse_existing
    from defect_gen.models.published import convert

    fsutil.check_writable(args.out, "--out")
    refuse_existing(args.out, args.force)
    print(f"wrote {convert(args.checkpoint, args.config, args.out, force=args.force)}")
    return 0


def cmd_data(args) -> int:
    """`data check`: print the report; exit 1 when it found problems (training would refuse)."""
    from defect_gen.config import load_config, resolve_num_defect
    from defect_gen.data.check import check_dataset, format_report
    from defect_gen.data.dataset import select_pairs

    cfg = resolve_num_defect(load_config(args.config, args.overrides), args.num_defect)
    # masks are also resized as training will, to name those that lose most of a class there
    size = cfg.data.load_size or cfg.model.image_size
    report = check_dataset(cfg.data, progress=not args.no_progress, size=size)
    for line in format_report(report):
        print(line)
    if report.pairs and not report.refusable:
        suffix = " (after leaving out the bad pairs, as data.skip_bad would)" if report.problems else ""
        print(f"training set: {select_pairs(report).how}{suffix}")
    return 1 if report.problems else 0


def cmd_bench(args) -> int:
    from defect_gen.config import load_config, resolve_num_defect
    from defect_gen.errors import ConfigError
    from defect_gen.training.bench import format_table, run_bench, to_json
    from defect_gen.training.loop import resolve_device

    extra = [f"model.image_size={args.image_size}"] if args.image_size else []
    cfg = resolve_num_defect(load_config(args.config, extra), args.num_defect)
    small = resolve_num_defect(load_config(args.small_config, extra), cfg.num_defect) if args.small_config else None
    if args.batch_size < 1 or args.iters < 1:
        raise ConfigError(f"--batch_size and --iters must be >= 1, got {args.batch_size} and {args.iters}")
    channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    result = run_bench(cfg, small, resolve_device(args.device), args.batch_size, args.iters, args.compile,
                       channels_last, precision=args.precision)
    print(to_json(result) if args.json else format_table(result))
    return 0


def cmd_evaluate(args) -> int:
    import shlex

    from defect_gen.config import load_config
    from defect_gen.errors import ConfigError
    from defect_gen.evaluation.crossval import crossvalidate
    from defect_gen.evaluation.report import write_report
    from defect_gen.evaluation.run import EvalSettings, evaluate, parse_ratios
    from defect_gen.evaluation.segmenter import SegSettings

    cfg = load_config(args.real, args.overrides)
    fsutil.check_writable(args.out, "--out")  # before minutes of training segmenters
    size = args.image_size
    for flag, value in (("--seeds", args.seeds), ("--steps", args.steps), ("--batch_size", args.batch_size),
                        ("--width", args.width), ("--max_heldout", args.max_heldout or 1), ("--image_size", size),
                        ("--jobs", args.jobs)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.negatives < 0:
        raise ConfigError(f"--negatives must be >= 0 (defect-free photos per training set), got {args.negatives}")
    if args.crop < 0:
        raise ConfigError(f"--crop must be >= 0 (0, or at least --image_size: whole images), got {args.crop}")
    if not 0.0 <= args.real_finish < 1.0:
        raise ConfigError(f"--real_finish must be in [0, 1) (a share of the steps), got {args.real_finish}")
    if not 0.0 <= args.real_share < 1.0:
        raise ConfigError(f"--real_share must be in [0, 1) (a share of each batch), got {args.real_share}")
    if not args.synthetic and not args.copy_paste:
        raise ConfigError("evaluate: nothing to compare with real only; give --synthetic DIR... and/or --copy-paste DIR")
    if args.folds < 0 or args.folds == 1:
        raise ConfigError(f"--folds must be 0 (held-out split) or at least 2, got {args.folds}")
    if args.folds and args.max_heldout:
        raise ConfigError("--max_heldout is for the held-out split; with --folds every training pair is validated")
    seg = SegSettings(arch=args.segmenter, steps=args.steps, batch_size=args.batch_size, lr=args.lr, width=args.width,
                      crop=args.crop, real_finish=args.real_finish, real_share=args.real_share)
    settings = EvalSettings(ratios=parse_ratios(args.ratios), seeds=args.seeds, image_size=size,
                            max_heldout=args.max_heldout, copy_paste_dir=args.copy_paste, seg=seg,
                            negatives=args.negatives, jobs=args.jobs, progress=not args.no_progress)
    if args.folds:
        results = crossvalidate(cfg, args.real, args.synthetic, args.out, settings, args.folds)
    else:
        results = evaluate(cfg, args.real, args.synthetic, args.out, settings)
    # The command as it would be typed (with every default spelt out), for the report.
    command = ["defect-gen", "evaluate", "--real", args.real, *[a for o in args.overrides for a in ("--set", o)],
               *(["--synthetic", *args.synthetic] if args.synthetic else []),
               *(["--copy-paste", args.copy_paste] if args.copy_paste else []),
               "--out", args.out, "--ratios", args.ratios, "--seeds", str(args.seeds), "--steps", str(args.steps),
               "--batch_size", str(args.batch_size), "--crop", str(args.crop), "--image_size", str(size),
               *(["--real_finish", f"{args.real_finish:g}"] if args.real_finish else []),
               *(["--real_share", f"{args.real_share:g}"] if args.real_share else []),
               *(["--max_heldout", str(args.max_heldout)] if args.max_heldout else []),
               *(["--negatives", str(args.negatives)] if args.negatives else []),
               *(["--folds", str(args.folds)] if args.folds else []), "--segmenter", args.segmenter,
               *(["--jobs", str(args.jobs)] if args.jobs > 1 else [])]
    command = " ".join(shlex.quote(a) for a in command)
    print(f"report: {write_report(results, args.out, command)}")
    return 0


def _scale_range(text: str) -> tuple[float, float]:
    from defect_gen.errors import ConfigError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--scale: expected MIN,MAX such as 0.75,1.25, got {text!r}") from None
    return lo, hi


def cmd_paint(args) -> int:
    from defect_gen.config import load_config
    from defect_gen.errors import ConfigError
    from defect_gen.models.loading import load_model
    from defect_gen.pipeline import painting
    from defect_gen.training.loop import resolve_device

    if args.copy_paste == bool(args.model):
        raise ConfigError("paint: give --model (a small-RF model) or --copy-paste (no model), exactly one")
    if args.copy_paste and args.guidance is not None:
        raise ConfigError("paint --copy-paste has no model to guide: drop --guidance")
    if args.copy_paste and not args.config:
        raise ConfigError("paint --copy-paste: --config is needed for the training split the defects come from")
    if (args.backgrounds == "good") != bool(args.good_dir):
        raise ConfigError("paint: give --good DIR (defect-free photos) or --backgrounds training/same_class, "
                          "exactly one")
    scale = _scale_range(args.scale)
    settings = painting.PaintSettings(args.sample_dir, args.num_samples, args.good_dir or "", args.seed, args.steps,
                                   args.sampler, args.eta, 0.0 if args.copy_paste else args.strength,
                                   scale[0], scale[1], args.margin, place=args.place, backgrounds=args.backgrounds,
                                   match_light=args.match_light, overwrite=args.overwrite, progress=not args.no_progress)
    if args.copy_paste:
        painter, cfg = painting.Painter(None, None, 0, 1, 0), load_config(args.config, args.overrides)
    else:
        loaded = load_model(args.model, resolve_device(args.device))
        painter = painting.painter_from_model(loaded, resolve_device(args.device), args.guidance)
        cfg = load_config(args.config, args.overrides) if args.config else loaded.cfg
        if cfg.data.classes != loaded.cfg.data.classes:
            raise ConfigError(f"--config {args.config}: classes {cfg.data.classes} differ from the model's "
                              f"{loaded.cfg.data.classes}")
    sources = painting.training_sources(cfg, progress=not args.no_progress)
    print(f"defects from {len(sources)} training pairs of {cfg.data.root}")
    painting.paint(painter, sources, list(cfg.data.classes), settings)
    return 0


def cmd_filter(args) -> int:
    from defect_gen.config import load_config
    from defect_gen.errors import ConfigError
    from defect_gen.evaluation.filtering import FilterSettings, filter_folders
    from defect_gen.evaluation.segmenter import SegSettings

    cfg = load_config(args.real, args.overrides)
    fsutil.check_writable(args.out, "--out")  # before minutes of training a segmenter
    for flag, value in (("--steps", args.steps), ("--image_size", args.image_size)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    settings = FilterSettings(keep=args.keep, image_size=args.image_size, seed=args.seed,
                              seg=SegSettings(steps=args.steps), progress=not args.no_progress)
    filter_folders(cfg, args.real, args.synthetic, args.out, settings)
    return 0


def cmd_mix(args) -> int:
    from defect_gen.errors import ConfigError
    from defect_gen.evaluation.mix import choose_takes, mix_folders, parse_take

    if args.ratio is not None and not args.choose:
        raise ConfigError("--ratio goes with --choose (which report ratio to compare at)")
    takes = choose_takes(args.choose, args.ratio) if args.choose else [parse_take(t) for t in args.takes]
    mix_folders(takes, args.out)
    return 0


COMMANDS = {"paint": cmd_paint, "train": cmd_train, "sample": cmd_sample, "info": cmd_info, "make-demo-data": cmd_demo,
            "export": cmd_export, "convert-published": cmd_convert, "bench": cmd_bench, "data": cmd_data,
            "evaluate": cmd_evaluate, "filter": cmd_filter, "mix": cmd_mix}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fsutil.bound_remote_access()
    try:
        return COMMANDS[args.command](args)
    except DefectGenError as exc:
        if args.debug:
            raise
        print(f"defect-gen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A full disk or a read-only folder met wherever a command writes: the machine's
        # doing, not a bug. Other OSErrors keep their traceback.
        if args.debug or exc.errno not in fsutil.ENVIRONMENT_ERRNOS:
            raise
        print(f"defect-gen {args.command}: error: {fsutil.output_error('a file', exc, verb='access')}",
              file=sys.stderr)
        return 2
    except Exception as exc:  # only the kinds named below are the user's; the rest are bugs
        line = fsutil.remote_error_line(exc)
        if args.debug or line is None:
            raise
        print(f"defect-gen {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # What survives the interruption, where there is something to pick up again.
        hint = {"sample": "; the pairs written so far are kept: add --resume to the same command to finish"}
        print(f"defect-gen {args.command}: interrupted{hint.get(args.command, '')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
