import os

import pytest
import torch

from defect_gen.errors import CheckpointError
from defect_gen.models import checkpoint as ckpt


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "a.pt")
    ckpt.atomic_save({"v": torch.ones(2)}, path)

    def boom(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*No space left on device"):
        ckpt.atomic_save({"v": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt.load(path)["v"], torch.ones(2))
    assert os.listdir(tmp_path) == ["a.pt"]  # no temp file left behind


def test_training_checkpoints_latest_and_pruning(tmp_path):
    work = str(tmp_path)
    for step in (10, 20, 30, 40):
        ckpt.save_training(work, {"step": step, "model": {}}, keep_last=2)
    names = [os.path.basename(p) for p in ckpt.list_checkpoints(work)]
    assert names == ["ckpt_00000030.pt", "ckpt_00000040.pt"]
    assert ckpt.latest(work).endswith("ckpt_00000040.pt")
    assert ckpt.resolve(work) == ckpt.latest(work)
    assert ckpt.load(ckpt.latest(work))["format"] == ckpt.FORMAT


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt"):
        ckpt.load(str(tmp_path / "nope.pt"))
    good = tmp_path / "good.pt"
    torch.save({"w": torch.randn(100)}, good)
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="trunc.pt is truncated or corrupt"):
        ckpt.load(str(bad))
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        ckpt.resolve(str(tmp_path))


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "created_by_pickle"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil(str(target))}, path)
    with pytest.raises(CheckpointError, match="refused to load .*evil.pt"):
        ckpt.load(str(path))
    assert not target.exists()



def test_sampling_uses_the_configured_ema_rate_whatever_the_order():
    state = {"format": ckpt.FORMAT, "config": {"train": {"ema_rate": 0.999}}, "model": {"w": torch.zeros(1)},
             "ema": {"0.9": {"w": torch.ones(1)}, "0.999": {"w": torch.full((1,), 2.0)}}}
    assert ckpt.ema_weights(state, "x.pt")["w"].item() == 2.0
    assert ckpt.ema_weights(state, "x.pt", raw=True)["w"].item() == 0.0
    state["config"]["train"]["ema_rate"] = 0.5
    with pytest.raises(CheckpointError, match="x.pt has no EMA at train.ema_rate 0.5; it has: 0.9, 0.999"):
        ckpt.ema_weights(state, "x.pt")
