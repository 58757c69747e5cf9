"""Issue 12 (B): data safety, locks, hangs and logs. Each case ends in one line on stderr and
exit status 2 unless it is a success; docs/reliability.md lists the messages."""

import errno
import json
import os

import pytest
import torch

from defect_gen import checkpoint as ckpt_lib
from defect_gen import fsutil, writers
from defect_gen.cli import main
from defect_gen.datasets.demo import make_demo_data


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 1-step-trained large and small model at 16 px, T = 50 (quality is irrelevant here)."""
    from defect_gen.config import from_dict
    from defect_gen.train_util import TrainLoop

    root = tmp_path_factory.mktemp("safety")
    make_demo_data(str(root / "data"), num_images=4, image_size=16, seed=0)
    for name, shape in (("large", {"channel_mult": [1, 2], "attention_downsample": [2]}),
                        ("small", {"channel_mult": [1], "attention_downsample": [], "middle_block": False})):
        cfg = from_dict({"model": {"image_size": 16, "model_channels": 32, "num_res_blocks": 1,
                                   "num_head_channels": 32, **shape},
                         "diffusion": {"num_timesteps": 50},
                         "data": {"root": str(root / "data"), "classes": ["scratch", "stain", "hole"]},
                         "train": {"batch_size": 2, "max_steps": 1}})
        TrainLoop(cfg, str(root / name), torch.device("cpu"), progress=False).run()
    return root


def _sample(models, out, *extra):
    return ["sample", "--large_recep", str(models / "large"), "--small_recep", str(models / "small"),
            "--step_inference", "20", "--sample_dir", str(out), "--num_samples", "4", "--batch_size", "2",
            "--steps", "4", "--keep-empty", "--no-progress", *extra]


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
        writers.write_pair(str(tmp_path / "s"), "mvtec", "x", np.zeros((4, 4, 3), np.uint8), index, ["../../up"])
    assert not (tmp_path / "up").exists()
