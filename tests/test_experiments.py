"""experiments/magnetic_tile/run.sh, its orchestration only: a stand-in `python` records
each defect-gen call and writes the files the next step reads, so the two lanes, their
order, the threads each gets, resuming and a failing lane are checked in a second, with no
model trained."""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "magnetic_tile", "run.sh")

# Stands in for `python -m defect_gen ...`; `python -c CODE` (the script's own arithmetic) runs for real.
FAKE = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
if args[0] == "-c":
    os.execv({python!r}, [{python!r}] + args)
cmd = args[2]
def opt(name):
    return args[args.index(name) + 1]
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps({{"cmd": cmd, "args": args, "threads": os.environ.get("OMP_NUM_THREADS")}}) + "\n")
if cmd == os.environ.get("FAIL_ON") and "--model" in args:
    sys.exit("stand-in failure")
if cmd == "train":
    os.makedirs(opt("--work_dir"), exist_ok=True)
    open(os.path.join(opt("--work_dir"), "selected_files.json"), "w").write("{{}}")
elif cmd == "paint":
    os.makedirs(opt("--sample_dir"), exist_ok=True)
    open(os.path.join(opt("--sample_dir"), "paint_settings.json"), "w").write("{{}}")
elif cmd == "evaluate":
    out = opt("--out")
    os.makedirs(os.path.join(out, "segmenters"), exist_ok=True)
    rest = args[args.index("--synthetic") + 1:]
    labels = [os.path.basename(d) for d in rest[:[x.startswith("--") for x in rest].index(True)]]
    open(os.path.join(out, "report.md"), "w").write("## Segmentation\n| " + " | ".join(labels) + " |\n![plot]\n")
    json.dump({{"classes": ["Blowhole", "Break", "Crack", "Uneven"]}}, open(os.path.join(out, "results.json"), "w"))
elif cmd == "mix":
    os.makedirs(opt("--out"))
    json.dump({{"takes": [{{"classes": ["Blowhole", "Break"]}}, {{"classes": ["Uneven"]}}]}},
              open(os.path.join(opt("--out"), "mix_settings.json"), "w"))
    print("per-class IoU (stand-in)")
'''


@pytest.fixture
def study(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    fake = tmp_path / "python"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "data" / "MT_Free").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update({"PY": str(fake), "DATA": str(tmp_path / "data"), "RUN_DIR": str(tmp_path / "run"),
                "THREADS": "2", "CALLS": str(tmp_path / "calls.jsonl")})

    def run(**extra):
        done = subprocess.run(["bash", SCRIPT], env={**env, **extra}, capture_output=True, text=True, timeout=120)
        lines = open(env["CALLS"]).read().splitlines() if os.path.exists(env["CALLS"]) else []
        return done, [json.loads(line) for line in lines]

    return run, tmp_path


def _folders(args):
    """The --synthetic folders of an evaluate call."""
    rest = args[args.index("--synthetic") + 1:]
    return rest[:next((i for i, x in enumerate(rest) if x.startswith("--")), len(rest))]


def _kind(call):
    a = call["args"]
    if call["cmd"] == "evaluate":
        where = os.path.basename(a[a.index("--out") + 1])
        return f"evaluate {where}: " + " ".join(os.path.basename(d) for d in _folders(a))
    if call["cmd"] == "paint":
        return "paint " + ("copy-paste" if "--copy-paste" in a else "painted")
    return call["cmd"]


def test_two_lanes_then_the_reports_with_every_thread(study):
    run, tmp = study
    done, calls = run()
    assert done.returncode == 0, done.stderr
    kinds = [_kind(c) for c in calls]
    # the copy-paste folder's cross-validation runs before the painted one's, which reuses it
    assert kinds.index("evaluate report_cv: cp_same_source_light") < \
        kinds.index("evaluate report_cv: paint_same_source_s1 cp_same_source_light")
    assert kinds.index("paint painted") < kinds.index("evaluate report_cv: paint_same_source_s1 cp_same_source_light")
    assert kinds.index("mix") < kinds.index("evaluate report_per_class: per_class")
    lanes, final = calls[:-3], calls[-3:]  # the reports come after both lanes have ended
    assert {c["threads"] for c in lanes} == {"1"}  # two lanes on 2 threads: one each
    assert [_kind(c) for c in final] == ["evaluate report_cv: paint_same_source_s1 cp_same_source_light",
                                         "evaluate report: cp_same_source_light",
                                         "evaluate report_per_class: per_class"]
    assert {c["threads"] for c in final} == {"2"}
    per_class = calls[kinds.index("evaluate report_per_class: per_class")]["args"]
    assert per_class[per_class.index("--ratios") + 1] == "1.5"  # 2 x 3 chosen classes of 4
    assert "per-class IoU (stand-in)" in done.stdout  # the choice is printed again at the end
    assert done.stdout.count("## Segmentation") == 3

    again, calls = run()  # finished folders and the mix are kept: no training, painting or choosing again
    assert again.returncode == 0, again.stderr
    assert {_kind(c) for c in calls[len(kinds):]} == {
        "train", "evaluate report_cv: cp_same_source_light", "evaluate report_cv: paint_same_source_s1 cp_same_source_light",
        "evaluate report: cp_same_source_light", "evaluate report_per_class: per_class"}


def test_a_failing_lane_stops_the_study_and_shows_its_log(study):
    run, tmp = study
    done, calls = run(FAIL_ON="paint")
    assert done.returncode != 0
    assert "the generator lane failed" in done.stderr and "stand-in failure" in done.stderr
    assert not any(_kind(c) == "mix" for c in calls)


def test_one_lane_runs_the_stages_in_order(study):
    run, _ = study
    done, calls = run(PARALLEL="0")
    assert done.returncode == 0, done.stderr
    assert [_kind(c) for c in calls] == [
        "train", "paint painted", "paint copy-paste",
        "evaluate report_cv: paint_same_source_s1 cp_same_source_light", "evaluate report: cp_same_source_light",
        "mix", "evaluate report_per_class: per_class"]
    assert {c["threads"] for c in calls} == {None}  # the user's own thread settings, untouched


def test_without_a_copy_paste_folder_the_painted_one_is_still_judged(study):
    run, _ = study
    done, calls = run(BACKGROUNDS="good", PLACES="random")
    assert done.returncode == 0, done.stderr
    kinds = {_kind(c) for c in calls}
    assert "evaluate report_cv: paint_s1" in kinds and "evaluate report_per_class: per_class" in kinds
    assert not any(k.startswith("evaluate report:") for k in kinds)  # nothing to compare there
    assert "no held-out report" in done.stdout


def test_copy_paste_folders_match_the_light_unless_told_not_to(study):
    run, tmp = study
    done, calls = run()
    assert done.returncode == 0, done.stderr
    pastes = [c["args"] for c in calls if _kind(c) == "paint copy-paste"]
    assert len(pastes) == 1 and "--match_light" in pastes[0]
    assert pastes[0][pastes[0].index("--sample_dir") + 1].endswith("cp_same_source_light")
    assert not any("--match_light" in c["args"] for c in calls if _kind(c) == "paint painted")
    os.remove(tmp / "calls.jsonl")
    done, calls = run(MATCH_LIGHT="0", RUN_DIR=str(tmp / "plain"))
    assert done.returncode == 0, done.stderr
    pastes = [c["args"] for c in calls if _kind(c) == "paint copy-paste"]
    assert len(pastes) == 1 and "--match_light" not in pastes[0]
    assert pastes[0][pastes[0].index("--sample_dir") + 1].endswith("cp_same_source")
    done, _ = run(MATCH_LIGHT="yes", RUN_DIR=str(tmp / "bad"))
    assert done.returncode == 2 and "MATCH_LIGHT must be 0 or 1, got 'yes'" in done.stderr
