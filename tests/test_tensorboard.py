"""Optional TensorBoard scalars: the same numbers as metrics.jsonl, only when tensorboard imports."""

import json
import os
import sys
import types

import pytest
import torch
from test_train import data_dir, tiny_cfg  # noqa: F401  (data_dir is a fixture)

from defect_gen.training.loop import TrainLoop


class FakeWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is not a test dependency)."""

    made: list = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):  # SummaryWriter.close flushes the pending events, then closes the file
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch):
    FakeWriter.made = []
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    return FakeWriter.made


def test_scalars_match_metrics_jsonl(data_dir, tmp_path, fake_tensorboard):  # noqa: F811
    work = str(tmp_path / "run")
    TrainLoop.from_config(tiny_cfg(data_dir, max_steps=4, log_every=2), work, torch.device("cpu"), progress=False).run()
    [writer] = fake_tensorboard
    assert writer.log_dir == os.path.join(work, "tb")
    rows = [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]
    expected = [(k, v, r["step"]) for r in rows for k, v in r.items() if k != "step" and v is not None]
    assert writer.scalars == expected and {"loss", "lr", "grad_norm"} <= {t for t, _, _ in writer.scalars}
    assert writer.closed


def test_writer_is_closed_when_training_fails(data_dir, tmp_path, fake_tensorboard):  # noqa: F811
    loop = TrainLoop.from_config(tiny_cfg(data_dir, max_steps=6, log_every=1), str(tmp_path / "run"), torch.device("cpu"),
                     progress=False)
    train_step = loop.train_step

    def failing_step():
        if loop.step == 3:
            raise RuntimeError("out of memory")
        train_step()

    loop.train_step = failing_step
    with pytest.raises(RuntimeError, match="out of memory"):
        loop.run()
    [writer] = fake_tensorboard
    assert writer.closed and [s for _, _, s in writer.scalars][-1] == 3 and loop.tb is None


def test_switched_off_or_not_installed_writes_nothing(data_dir, tmp_path, fake_tensorboard, monkeypatch):  # noqa: F811
    TrainLoop.from_config(tiny_cfg(data_dir, max_steps=2, log_every=2, tensorboard=False), str(tmp_path / "off"),
              torch.device("cpu"), progress=False).run()
    assert fake_tensorboard == []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` raises ImportError
    TrainLoop.from_config(tiny_cfg(data_dir, max_steps=2, log_every=2), str(tmp_path / "absent"), torch.device("cpu"),
              progress=False).run()
    assert fake_tensorboard == [] and not os.path.exists(tmp_path / "absent" / "tb")
