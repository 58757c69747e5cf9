"""scripts/gpu_check.sh: the first-run check of a GPU machine, tested through --smoke, which runs
every check at 16 px on whatever device there is (here a CPU: fp16, NCCL and compiling are
skipped), and through a check made to fail."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.sh")
CHECKS = ["nccl", "data", "bench_large", "bench_small", "train_large_bf16", "train_small_bf16", "resume_small_bf16",
          "sample_ddim_50", "sample_dpmpp_2m_20", "paint", "train_large_fp16", "train_small_fp16",
          "train_large_bf16_compile", "train_small_bf16_compile"]
CUDA_ONLY = {"nccl", "train_large_fp16", "train_small_fp16", "train_large_bf16_compile", "train_small_bf16_compile"}
# The figures each check must give where it runs.
FIGURES = {"bench": ("images_per_s", "share_of_peak", "s_per_pair", "peak_memory_mib"),
           "train": ("images_per_s", "share_of_peak", "peak_memory_mib"),
           "resume": ("images_per_s", "share_of_peak", "peak_memory_mib"),
           "sample": ("s_per_pair", "peak_memory_mib"), "paint": ("s_per_pair", "peak_memory_mib"),
           "nccl": (), "data": ()}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gpu_check(out, *flags, timeout=600):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = dict(os.environ, PYTHON=sys.executable)  # the script's python where the repository has no .venv
    return subprocess.run(["bash", SCRIPT, "--out", str(out), *flags], capture_output=True, text=True, env=env,
                          timeout=timeout)


def read_result(out) -> dict:
    with open(os.path.join(out, "gpu_check.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    done = gpu_check(out, "--smoke")
    return out, done, read_result(out)


def test_smoke_runs_every_check_and_prints_the_table(smoke):
    out, done, result = smoke
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert result["mode"] == "smoke" and result["finished"] is True
    assert [c["name"] for c in result["checks"]] == CHECKS
    cuda = torch.cuda.is_available()
    for check in result["checks"]:
        if check["name"] in CUDA_ONLY and not cuda:
            assert check["status"] == "skipped" and check["reason"].startswith("skipped: needs CUDA"), check
            continue
        assert check["status"] == "ok" and check["mark"] == "✓" and check["reason"] is None, check
        for figure in FIGURES[check["name"].split("_")[0]]:
            assert check[figure] is not None and check[figure] > 0, (check["name"], figure, check[figure])
    assert result["bf16_peak_gflops"] > 0
    # The table: the header with device and torch, a row per check, the figures.
    assert "gpu_check (--smoke run, 16 px, K = 5)" in done.stdout and f"torch {torch.__version__}" in done.stdout
    table = done.stdout[done.stdout.index("| check"):]
    for check in result["checks"]:
        row = next(line for line in table.splitlines() if line.startswith(f"| {check['name']} "))
        assert f" {check['mark']} " in row
    assert "skipped: needs CUDA" in table or cuda
    # What the checks ran on: the pairs, the resumed run, the samples.
    runs = os.path.join(out, "runs")
    assert sorted(os.listdir(os.path.join(out, "data", "classes"))) == [f"defect{k}" for k in range(1, 6)]
    with open(os.path.join(runs, "train_small_bf16", "metrics.jsonl"), encoding="utf-8") as f:
        assert [json.loads(line)["step"] for line in f] == [2, 4, 6]  # 4 steps, then 2 more on resuming
    for folder in ("samples/ddim_50", "samples/dpmpp_2m_20", "paint"):
        assert os.listdir(os.path.join(out, folder, "images")), folder


@needs_cuda
def test_smoke_on_cuda_runs_fp16_nccl_and_compile(smoke):
    _, _, result = smoke
    checks = {c["name"]: c for c in result["checks"]}
    for name in CUDA_ONLY:
        assert checks[name]["status"] == "ok", checks[name]
    assert result["environment"]["driver"]


def test_an_earlier_result_is_kept_without_overwrite(smoke):
    out, _, _ = smoke
    before = read_result(out)
    done = gpu_check(out, "--smoke")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--overwrite" in done.stderr and str(out) in done.stderr
    assert read_result(out) == before


def test_a_failing_check_says_why_in_one_line_and_the_rest_run(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  image_size: 64\n  no_such_key: 1\n")
    out = tmp_path / "out"
    done = gpu_check(out, "--smoke", "--large_config", str(bad))
    assert done.returncode == 1
    checks = {c["name"]: c for c in read_result(out)["checks"]}
    assert list(checks) == CHECKS
    failed = {n for n, c in checks.items() if c["status"] == "failed"}
    assert failed == {"bench_large", "train_large_bf16", "sample_ddim_50", "sample_dpmpp_2m_20"} | (
        {"train_large_fp16", "train_large_bf16_compile"} if torch.cuda.is_available() else set())
    for name in failed:
        reason = checks[name]["reason"]
        assert "\n" not in reason and checks[name]["mark"] == "✗"
        assert ("no_such_key" in reason) if name.startswith(("bench", "train")) else \
            reason == "needs train_large_bf16, which failed"
    for name in ("data", "bench_small", "train_small_bf16", "resume_small_bf16", "paint"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "| train_large_bf16 " in done.stdout and "no_such_key" in done.stdout


def test_overwrite_replaces_only_what_the_script_wrote(tmp_path):
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "old.stderr").write_text("an earlier run's log")
    (out / "gpu_check.json").write_text("{}")
    (out / "notes.txt").write_text("the user's own file")
    done = gpu_check(out, "--smoke", "--overwrite", "--budget", "1")  # every check runs out of time at once
    assert done.returncode == 1
    assert (out / "notes.txt").read_text() == "the user's own file" and not (out / "logs" / "old.stderr").exists()
    checks = read_result(out)["checks"]
    assert [c["name"] for c in checks] == CHECKS
    assert all(c["status"] == "skipped" or c["reason"].startswith("not started: the 1 s budget") for c in checks)


def test_the_reason_is_defect_gens_error_line_not_torchruns(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "scripts", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    stderr = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
              "defect-gen train: error: data.root /nope: folder not found\n"
              "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n=====\n")
    assert module.error_line("", stderr) == "defect-gen train: error: data.root /nope: folder not found"
    crash = "Traceback (most recent call last):\n  File \"x.py\"\ntorch.OutOfMemoryError: CUDA out of memory.\n" \
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
    assert module.error_line("", crash) == "torch.OutOfMemoryError: CUDA out of memory."
    assert module.error_line("", "") == "no output"
