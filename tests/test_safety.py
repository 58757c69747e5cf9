"""Issue 12 (B): data safety, locks, hangs and logs. Each case ends in one line on stderr and
exit status 2 unless it is a success; docs/reliability.md lists the messages."""

import errno
import json
import os

import pytest
import torch
from conftest import train_tiny_models

from defect_gen import fsutil
from defect_gen.cli import main
from defect_gen.data.demo import make_demo_data
from defect_gen.models import checkpoint as ckpt_lib
from defect_gen.pipeline import pair_folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 1-step-trained large and small model at 16 px, T = 50 (quality is irrelevant here)."""
    return train_tiny_models(tmp_path_factory.mktemp("safety"), num_timesteps=50)


def _sample(models, out, *extra):
    return ["sample", "--large_recep", str(models / "large"), "--small_recep", str(models / "small"),
            "--step_inference", "20", "--sample_dir", str(out), "--num_samples", "4", "--batch_size", "2",
            "--steps", "4", "--keep-empty", "--no-progress", "--precision", "fp32", *extra]  # runs compared bit for bit


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def _one_line(code, err, needle):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("defect-gen ") and ": error: " in err[0], err
    assert needle in err[0], err


def _rows(out):
    with open(os.path.join(out, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


# -- item 12: --overwrite deletes only regular files inside SAMPLE_DIR ------------------------


def test_overwrite_never_deletes_outside_sample_dir(models, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sample(models, out)) == 0
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep me")
    (out / "images" / "link.png").symlink_to(victim)
    rows = _rows(out)
    rows[0]["files"]["image"] = "../victim.png"
    rows[1]["files"]["image"] = str(victim)
    rows[2]["files"]["image"] = "images/link.png"
    with open(out / "manifest.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    code, err, _ = _run(capsys, _sample(models, out, "--overwrite"))
    assert victim.read_bytes() == b"keep me"
    assert any("--overwrite left alone 3 path(s)" in line for line in err), err
    assert code == 0 and (out / "images" / "link.png").is_symlink()  # a link is not a regular file: kept


# -- item 13: class names are validated and every output path stays inside SAMPLE_DIR --------


@pytest.mark.parametrize("name", ["..", "a/b", "../../escape", "", ".hidden", "a\\b", "x\x00y"])
def test_class_names_that_are_not_folder_names_are_refused(name):
    from defect_gen.config import from_dict
    from defect_gen.errors import ConfigError

    with pytest.raises(ConfigError, match="data.classes"):
        from_dict({"data": {"classes": ["ok", name]}})


def test_checkpoint_with_escaping_class_names_is_refused(models, tmp_path, capsys):
    state = ckpt_lib.load(ckpt_lib.latest(str(models / "large")))
    state["config"]["data"]["classes"] = ["scratch", "stain", "../../../escape"]
    bad = str(tmp_path / "evil.pt")
    ckpt_lib.atomic_save(state, bad)
    code, err, _ = _run(capsys, ["sample", "--large_recep", bad, "--step_inference", "0", "--sample_dir",
                                 str(tmp_path / "deep" / "s"), "--num_samples", "1", "--steps", "2", "--layout",
                                 "mvtec", "--no-progress"])
    _one_line(code, err, f"{bad}: config key 'data.classes'")
    assert not (tmp_path / "escape").exists()


def test_write_pair_refuses_a_path_outside_sample_dir(tmp_path):
    import numpy as np

    from defect_gen.errors import DefectGenError

    index = np.ones((4, 4), np.uint8)
    with pytest.raises(DefectGenError, match="outside"):
        pair_folder.write_pair(str(tmp_path / "s"), "mvtec", "x", np.zeros((4, 4, 3), np.uint8), index, ["../../up"])
    assert not (tmp_path / "up").exists()


# -- training: lock, finished runs, interrupts, logs, unwritable outputs ----------------------


@pytest.fixture(scope="module")
def train_cfg(models):
    cfg = models / "train.yaml"
    cfg.write_text(
        "model: {image_size: 16, model_channels: 32, channel_mult: [1], num_res_blocks: 1,\n"
        "        attention_downsample: [], middle_block: false}\n"
        "diffusion: {num_timesteps: 50}\n"
        f"data: {{root: {models / 'data'}, classes: [scratch, stain, hole]}}\n"
        "train: {batch_size: 2, max_steps: 2, save_every: 2, log_every: 1, sample_every: 0}\n")
    return str(cfg)


def _train(cfg, work, *extra):
    return ["train", "--config", cfg, "--work_dir", str(work), "--no-progress", *extra]


def test_second_training_run_on_a_work_dir_is_refused(train_cfg, tmp_path, capsys):
    work = tmp_path / "run"
    with fsutil.lock_dir(str(work), "training run", "work_dir"):
        code, err, _ = _run(capsys, _train(train_cfg, work))
    _one_line(code, err, f"--work_dir {work} is in use by another defect-gen training run (pid {os.getpid()})")
    assert main(_train(train_cfg, work)) == 0  # released: the lock never outlives its holder


def test_second_sampling_run_on_a_sample_dir_is_refused(models, tmp_path, capsys):
    out = tmp_path / "s"
    with fsutil.lock_dir(str(out), "sampling run", "sample_dir"):
        code, err, _ = _run(capsys, _sample(models, out))
    _one_line(code, err, f"--sample_dir {out} is in use by another defect-gen sampling run")
    assert not (out / "manifest.jsonl").exists()


def test_no_progress_training_prints_a_line_per_log_and_rerun_says_finished(train_cfg, tmp_path, capsys,
                                                                            monkeypatch):
    work = tmp_path / "run"
    code, err, out = _run(capsys, _train(train_cfg, work))
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"], out
    assert all("loss " in line and "images/s" in line and "ETA" in line for line in lines)

    def no_data(*a, **k):
        raise AssertionError("the data was loaded again")

    monkeypatch.setattr("defect_gen.training.loop.DefectDataset", no_data)
    code, err, out = _run(capsys, _train(train_cfg, work))
    assert code == 0 and f"{work} has already finished" in out and "step 2 (train.max_steps 2)" in out, out


def test_progress_bar_is_plain_lines_when_stderr_is_not_a_terminal(train_cfg, tmp_path, capsys):
    code, err, out = _run(capsys, ["train", "--config", train_cfg, "--work_dir", str(tmp_path / "run")])
    assert code == 0 and "\r" not in "\n".join(err)
    assert [line.split()[1] for line in out.splitlines() if line.startswith("step ")] == ["1/2", "2/2"]
    code, err, out = _run(capsys, _sample_for(tmp_path / "run", tmp_path / "s"))
    assert code == 0 and "\r" not in "\n".join(err)
    assert err[-1].startswith("sampling: 2/2 pair (100%)"), err


def _sample_for(run, out):
    return ["sample", "--large_recep", str(run), "--step_inference", "0", "--sample_dir", str(out),
            "--num_samples", "2", "--steps", "2", "--keep-empty"]


def test_interrupt_names_the_checkpoint_to_resume_from_and_metrics_do_not_repeat(train_cfg, tmp_path, capsys,
                                                                                 monkeypatch):
    from defect_gen.training.loop import TrainLoop

    work = tmp_path / "run"
    real_step = TrainLoop.train_step

    def step_then_stop(self):
        real_step(self)
        if self.step == 3:
            raise KeyboardInterrupt  # Ctrl-C after step 3 was logged, before its save at step 4

    monkeypatch.setattr(TrainLoop, "train_step", step_then_stop)
    code, err, _ = _run(capsys, _train(train_cfg, work, "--set", "train.max_steps=6"))
    latest = ckpt_lib.latest(str(work))
    assert code == 130 and latest.endswith("ckpt_00000002.pt")
    assert err == [f"defect-gen train: interrupted at step 3; re-running the same command resumes from {latest} "
                   f"(step 2)"]
    monkeypatch.setattr(TrainLoop, "train_step", real_step)
    assert main(_train(train_cfg, work, "--set", "train.max_steps=6")) == 0
    steps = [json.loads(line)["step"] for line in open(work / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_exported_ema_file_as_latest_is_refused_on_resume(train_cfg, tmp_path, capsys):
    work = tmp_path / "run"
    assert main(_train(train_cfg, work)) == 0
    ckpt_dir = work / "checkpoint"
    # an EMA-only .pt as `defect-gen export` wrote them before exports became safetensors folders
    full = ckpt_lib.load(ckpt_lib.latest(str(work)))
    ckpt_lib.atomic_save({k: full[k] for k in ("format", "config", "step", "ema")}, str(ckpt_dir / "ckpt_00000009.pt"))
    (ckpt_dir / "latest").write_text("ckpt_00000009.pt\n")
    code, err, _ = _run(capsys, _train(train_cfg, work, "--set", "train.max_steps=20"))
    _one_line(code, err, "ckpt_00000009.pt cannot be resumed from: it lacks model, optimizer, rng")


def test_disk_full_inside_torch_save_is_one_line(train_cfg, tmp_path, capsys, monkeypatch):
    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(torch, "save", full)
    code, err, _ = _run(capsys, _train(train_cfg, tmp_path / "run"))
    _one_line(code, err, "could not write checkpoint")
    assert "the write failed (disk full?)" in err[0]


@pytest.mark.parametrize("how", ["file in the way", "read-only"])
def test_unwritable_work_dir_is_one_line(train_cfg, tmp_path, capsys, monkeypatch, how):
    work = tmp_path / "run"
    if how == "file in the way":
        work.write_text("not a folder")
        needle = f"cannot write {work} (--work_dir): File exists"
    else:
        real = os.makedirs

        def read_only(path, *a, **k):
            if str(path).startswith(str(tmp_path)):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real(path, *a, **k)

        monkeypatch.setattr(os, "makedirs", read_only)
        needle = f"cannot write {work} (--work_dir): Read-only file system; choose a writable folder"
    code, err, _ = _run(capsys, _train(train_cfg, work))
    _one_line(code, err, needle)


# -- item 15: --resume after a damaged or partly deleted run; item 18: runs that write nothing --


def test_resume_ignores_and_repairs_a_cut_short_last_manifest_line(models, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sample(models, out)) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines(keepends=True)
    (out / "manifest.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    code, err, _ = _run(capsys, _sample(models, out, "--resume"))
    assert code == 0 and any("was cut short" in line for line in err), err
    assert [r["name"] for r in _rows(out)] == [f"sample_{i:06d}" for i in range(4)]
    assert main(_sample(models, out, "--resume")) == 0  # and a later resume still reads it


@pytest.mark.parametrize("layout", ["paired", "defect_spectrum"])
def test_resume_remakes_a_deleted_pair_and_previews_all_pairs(models, tmp_path, capsys, layout):
    out, straight = tmp_path / "s", tmp_path / "straight"
    assert main(_sample(models, straight, "--layout", layout)) == 0
    assert main(_sample(models, out, "--num_samples", "2", "--layout", layout)) == 0
    # a resumed run making pairs 2 and 3, after pair 1 was deleted by hand
    settings = json.loads((out / "sample_settings.json").read_text())
    settings["num_samples"] = 4
    (out / "sample_settings.json").write_text(json.dumps(settings))
    deleted = _rows(out)[1]["files"]["image"]
    (out / deleted).unlink()
    code, err, stdout = _run(capsys, _sample(models, out, "--resume", "--layout", layout))
    assert code == 0, err
    assert "3 pairs in" in stdout and f"preview: {out / 'preview.png'}" in stdout
    assert [r["name"] for r in _rows(out)] == [f"sample_{i:06d}" for i in range(4)]
    for name in (deleted, "preview.png"):  # identical to an uninterrupted run
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name


def test_truncated_sample_settings_is_one_line_on_resume(models, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sample(models, out)) == 0
    text = (out / "sample_settings.json").read_text()
    (out / "sample_settings.json").write_text(text[: len(text) // 2])
    code, err, _ = _run(capsys, _sample(models, out, "--resume"))
    _one_line(code, err, f"--resume: {out / 'sample_settings.json'} is unreadable or cut short (JSONDecodeError)")


def test_manifest_row_without_a_name_is_one_line(models, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sample(models, out)) == 0
    rows = _rows(out)
    del rows[1]["name"]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err, _ = _run(capsys, _sample(models, out, "--resume"))
    _one_line(code, err, f"{out / 'manifest.jsonl'} line 2: expected a JSON object with a \"name\" string")


def test_sampling_run_that_writes_nothing_says_why(models, tmp_path, capsys):
    out = tmp_path / "s"
    argv = [a for a in _sample(models, out, "--min-defect-pixels", "100000", "--max-tries", "2") if a != "--keep-empty"]
    code, err, stdout = _run(capsys, argv)
    _one_line(code, err, f"no pair written to {out}: 8 candidates, all with empty masks (nothing left after "
                         f"--min-defect-pixels 100000); pass --keep-empty to keep them, or train the models longer")
    assert "preview" not in stdout and not (out / "preview.png").exists()


def test_disk_full_while_sampling_is_one_line(models, tmp_path, capsys, monkeypatch):
    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pair_folder, "write_png", full)
    code, err, _ = _run(capsys, _sample(models, tmp_path / "s"))
    _one_line(code, err, f"cannot write {tmp_path / 's' / 'images' / 'sample_000000.png'} (--sample_dir): No space "
                         f"left on device; free some space")


# -- item 16: bounded waits; item 17: configs and launch variables that used to be tracebacks --


def _yaml(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


BAD_CONFIGS = {
    "UTF-16": ("model: {image_size: 16}\n".encode("utf-16"), "not UTF-8 text (byte 0: b'\\xff'); save it as UTF-8"),
    "Latin-1": ("# café\nmodel: {image_size: 16}\n".encode("latin-1"), "not UTF-8 text (byte 5: b'\\xe9')"),
    "nested 5000 deep": (b"model: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply for a config"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_unreadable_config_text_is_one_line(tmp_path, capsys, case):
    data, needle = BAD_CONFIGS[case]
    cfg = _yaml(tmp_path, "c.yaml", data)
    code, err, _ = _run(capsys, ["info", "--config", cfg, "--num_defect", "1"])
    _one_line(code, err, f"config file {cfg}: {needle}")


def test_billion_laughs_value_is_named_briefly(tmp_path, capsys):
    levels = ["&l0 [x, x, x, x, x, x, x, x, x]"] + [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]"
                                                    for i in range(1, 9)]
    cfg = _yaml(tmp_path, "c.yaml", ("train:\n  lr: [" + ", ".join(levels) + "]\n").encode())
    code, err, _ = _run(capsys, ["info", "--config", cfg, "--num_defect", "1"])  # 9^9 items if repr()'d
    _one_line(code, err, "config key 'train.lr': expected float, got [['x', 'x'")
    assert len(err[0]) < 400


def test_https_data_root_is_refused(tmp_path, capsys, train_cfg):
    code, err, _ = _run(capsys, _train(train_cfg, tmp_path / "w", "--set", "data.root=https://example.com/data"))
    _one_line(code, err, "config key 'data.root': 'https://example.com/data' is not supported; expected a local "
                         "folder or a gs:// / az:// URL")


def test_unreachable_gs_root_ends_with_one_line(train_cfg):
    import subprocess
    import sys
    import time

    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "defect_gen", "data", "check", "--config", train_cfg, "--set",
                           "data.root=gs://defect-gen-no-such-bucket/x", "--no-progress"],
                          capture_output=True, text=True, timeout=240)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-2000:]
    # without network (CI sandboxes): the bounded retries; with it, GCS answers that there is no such folder
    assert err[0].startswith("defect-gen data: error: "), err
    assert "remote storage request failed after 3 tries: " in err[0] or "gs://defect-gen-no-such-bucket" in err[0], err
    assert time.time() - start < 200


def test_fifo_in_images_is_a_problem_not_a_hang(tmp_path, train_cfg):
    import subprocess
    import sys

    data = tmp_path / "data"
    make_demo_data(str(data), num_images=4, image_size=16, seed=0)
    (data / "images" / "demo_0001.png").unlink()
    os.mkfifo(data / "images" / "demo_0001.png")
    proc = subprocess.run([sys.executable, "-m", "defect_gen", "data", "check", "--config", train_cfg, "--set",
                           f"data.root={data}", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert (f"{data / 'images' / 'demo_0001.png'}: not a regular file (a FIFO, socket or device); expected an "
            f"image file") in proc.stdout + proc.stderr


def test_world_size_that_is_not_a_number_is_one_line(train_cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "abc")
    code, err, _ = _run(capsys, _train(train_cfg, tmp_path / "w"))
    _one_line(code, err, "environment variable WORLD_SIZE='abc': expected a non-negative integer")


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_missing_rank_ends_the_wait_with_one_line(train_cfg, tmp_path, capsys, monkeypatch):
    from defect_gen import distributed

    port = _free_port()
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(distributed, "RENDEZVOUS_TIMEOUT_S", 2)
    code, err, _ = _run(capsys, _train(train_cfg, tmp_path / "w"))
    _one_line(code, err, f"rank 0 of WORLD_SIZE=2 waited 2 s at 127.0.0.1:{port} for the other ranks, which did "
                         f"not all join")


def test_a_hand_launch_with_every_rank_trains(train_cfg, tmp_path):
    import subprocess
    import sys

    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "defect_gen", "train", "--config", train_cfg, "--work_dir",
                               str(tmp_path / "w"), "--no-progress", "--set", "train.max_steps=1"],
                              env={**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": str(rank),
                                   "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[0][1][-1500:] + results[1][1][-1500:]
    assert ckpt_lib.latest(str(tmp_path / "w")).endswith("ckpt_00000001.pt")


# -- item 17: outputs that cannot be written; item 22: results.json and --help ---------------


def _output_cases(tmp_path, models):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    return {  # argv, and how the message names the output
        "make-demo-data": (["make-demo-data", str(blocker / "demo")], f"make-demo-data DIR {blocker / 'demo'}"),
        "export --out": (["export", str(models / "large"), "--out", str(blocker / "m")],
                         f"--out {blocker / 'm'}"),
        "evaluate --out": (["evaluate", "--real", "configs/demo_small.yaml", "--synthetic", str(tmp_path),
                            "--out", str(blocker / "report")], f"--out {blocker / 'report'}"),
    }


@pytest.mark.parametrize("case", ["make-demo-data", "export --out", "evaluate --out"])
@pytest.mark.parametrize("how", ["file in the way", "read-only"])
def test_unwritable_outputs_are_one_line(models, tmp_path, capsys, monkeypatch, case, how):
    argv, named = _output_cases(tmp_path, models)[case]
    blocker = tmp_path / "blocker"
    if how == "read-only":
        blocker.unlink()
        blocker.mkdir()
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(blocker) else real(p, mode))
        needle = f"{blocker} is not writable (read-only or no permission); choose a writable folder"
    else:
        needle = f"{blocker} is a file, in the way of a folder"
    code, err, _ = _run(capsys, argv)
    _one_line(code, err, f"{named}: {needle}")


def test_disk_full_while_writing_demo_data_is_one_line(tmp_path, capsys, monkeypatch):
    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("defect_gen.data.demo.write_png", full)
    code, err, _ = _run(capsys, ["make-demo-data", str(tmp_path / "d"), "--num_images", "2", "--image_size", "16"])
    _one_line(code, err, f"cannot write {tmp_path / 'd' / 'images' / 'demo_0000.png'} (make-demo-data DIR): No space "
                         f"left on device; free some space")


def test_results_json_writes_nan_as_null(tmp_path, monkeypatch):
    from defect_gen.evaluation import report

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    numbers = {"IoU hole": float("nan"), "per_seed": [{"F1": float("inf")}]}
    monkeypatch.setattr(report, "_json_ready", lambda r: numbers)
    monkeypatch.setattr(report, "plot_ratio", stop)  # only results.json matters here
    with pytest.raises(Stop):
        report.write_report(None, str(tmp_path), "defect-gen evaluate ...")
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"IoU hole": None, "per_seed": [{"F1": None}]}


def test_help_lists_every_subcommand(capsys):
    from defect_gen.cli import COMMANDS

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    summary = text.split("Commands: ", 1)[1].split(";")[0]
    assert sorted(summary.split(", ")) == sorted(COMMANDS)


def test_data_bars_are_plain_lines_when_stderr_is_not_a_terminal(train_cfg, capsys):
    code, err, _ = _run(capsys, ["data", "check", "--config", train_cfg])
    assert code == 0 and "\r" not in "\n".join(err)
    assert any(line.startswith("checking data: 4/4 pair (100%)") for line in err), err


def test_interrupted_sampling_says_how_to_finish(models, tmp_path, capsys, monkeypatch):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pair_folder, "write_png", interrupt)
    code, err, _ = _run(capsys, _sample(models, tmp_path / "s"))
    assert code == 130 and err == ["defect-gen sample: interrupted; the pairs written so far are kept: add --resume "
                                   "to the same command to finish"]


def test_sigterm_during_sampling_says_how_to_finish(models, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "s"
    argv = [sys.executable, "-m", "defect_gen", *_sample(models, out, "--num_samples", "400", "--batch_size", "1")]
    proc = subprocess.Popen(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline, manifest = time.time() + 60, out / "manifest.jsonl"
    while time.time() < deadline and not (manifest.exists() and manifest.stat().st_size):  # a pair is written
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-1500:]
    assert err.strip().splitlines()[-1] == ("defect-gen sample: interrupted; the pairs written so far are kept: add "
                                            "--resume to the same command to finish")


@pytest.mark.parametrize("value, needle", [
    ("[" * 5000 + "]" * 5000, "value nested too deeply for a config"),
    ("[" + ", ".join(["1.5"] * 20000) + "]", "expected float, got [1.5, 1.5, 1.5, 1.5, 1.5, 1.5, ...]"),
], ids=["nested 5000 deep", "20000 items"])
def test_huge_set_values_are_named_briefly(tmp_path, capsys, train_cfg, value, needle):
    code, err, _ = _run(capsys, ["info", "--config", train_cfg, "--set", f"train.lr={value}"])
    _one_line(code, err, needle)
    assert len(err[0]) < 600


def test_metrics_line_cut_short_by_a_kill_does_not_stop_resuming(train_cfg, tmp_path):
    work = tmp_path / "run"
    assert main(_train(train_cfg, work)) == 0
    with open(work / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.1')  # killed mid-append (step 3 was never saved)
    assert main(_train(train_cfg, work, "--set", "train.max_steps=4")) == 0
    steps = [json.loads(line)["step"] for line in open(work / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]


def test_a_filesystem_without_locks_warns_and_runs(tmp_path, capsys, monkeypatch):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with fsutil.lock_dir(str(tmp_path / "d"), "sampling run", "sample_dir"):
        pass
    assert capsys.readouterr().err.strip() == (f"warning: cannot lock {tmp_path / 'd'} (No locks available); make "
                                               f"sure no other defect-gen run uses it")


def test_output_errors_name_the_parameter_and_each_command_its_flag(tmp_path):
    from defect_gen.cli import demo, export, sample, train
    from defect_gen.errors import DefectGenError

    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(DefectGenError) as err:
        fsutil.check_writable(str(blocker / "m"), "out")
    assert str(err.value) == (f"out {blocker / 'm'}: {blocker} is a file, in the way of a folder; remove it or "
                              f"choose another path")
    assert err.value.render(export.FLAGS) == f"--out {blocker / 'm'}: {blocker} is a file, in the way of a folder; " \
                                             f"remove it or choose another path"
    with pytest.raises(DefectGenError) as err:
        fsutil.make_output_dir(str(blocker), "out_dir")
    assert err.value.render(demo.FLAGS) == (f"cannot write {blocker} (make-demo-data DIR): File exists; a file is in "
                                            f"the way of a folder: remove it or choose another path")
    exc = fsutil.output_error(str(tmp_path / "s"), OSError(errno.ENOSPC, "No space left on device"), "sample_dir")
    assert str(exc) == f"cannot write {tmp_path / 's'} (sample_dir): No space left on device; free some space"
    assert exc.render(sample.FLAGS) == f"cannot write {tmp_path / 's'} (--sample_dir): No space left on device; " \
                                       f"free some space"
    # a path holding braces is shown as it is, never read as a parameter
    odd = tmp_path / "{out}"
    with fsutil.lock_dir(str(odd), "training run", "work_dir"), pytest.raises(DefectGenError) as err:
        with fsutil.lock_dir(str(odd), "training run", "work_dir"):
            pass
    assert err.value.render(train.FLAGS).startswith(f"--work_dir {odd} is in use by another defect-gen training run")


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_a_manifest_that_is_a_link_is_refused(models, tmp_path, capsys, flag):
    out, victim = tmp_path / "s", tmp_path / "victim.jsonl"
    assert main(_sample(models, out)) == 0
    victim.write_text((out / "manifest.jsonl").read_text() + '{"name": "cut')
    (out / "manifest.jsonl").unlink()
    (out / "manifest.jsonl").symlink_to(victim)
    before = victim.read_bytes()
    code, err, _ = _run(capsys, _sample(models, out, flag))
    _one_line(code, err, f"{out / 'manifest.jsonl'} is not a regular file (a link, a folder?)")
    assert victim.read_bytes() == before  # neither repaired (truncated) nor appended to


# torch's unpickler warns about the "pickle protocol" it reads out of random bytes: expected here.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_random_bytes_as_a_checkpoint_are_always_one_line(tmp_path):
    import random

    from defect_gen.errors import CheckpointError

    rng = random.Random(0)
    path = str(tmp_path / "garbage.pt")
    for size in [rng.randrange(1, 8192) for _ in range(300)]:  # random bytes failed with IndexError now and then
        with open(path, "wb") as f:
            f.write(rng.randbytes(size))
        with pytest.raises(CheckpointError, match="is truncated or corrupt"):
            ckpt_lib.load(path)


def test_an_environment_oserror_anywhere_is_one_line(train_cfg, tmp_path, capsys, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "run" / "selected_files.json"))

    monkeypatch.setattr("defect_gen.data.dataset.DefectDataset.write_selection", denied)
    code, err, _ = _run(capsys, _train(train_cfg, tmp_path / "run"))
    _one_line(code, err, f"cannot access {tmp_path / 'run' / 'selected_files.json'}: Permission denied; choose a "
                         f"writable folder")
