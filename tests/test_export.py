"""Export folders (`defect-gen export`, `convert-published`): safetensors + config + card, no pickle."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import train_tiny_models
from PIL import Image

from defect_gen import fsutil
from defect_gen.cli import main
from defect_gen.errors import CheckpointError, ConfigError, DefectGenError
from defect_gen.models import export
from defect_gen.models.loading import load_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return train_tiny_models(tmp_path_factory.mktemp("export_models"), num_timesteps=20)


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    for name in ("large", "small"):
        assert main(["export", str(models / name), "--out", str(out / name)]) == 0
    return out


def _one_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert all(n in err for n in needles), err
    return err


def _sample(tmp_path, large, small, name):
    out = tmp_path / name
    assert main(["sample", "--large_recep", str(large), "--small_recep", str(small), "--step_inference", "10",
                 "--sample_dir", str(out), "--num_samples", "2", "--steps", "4", "--seed", "3", "--keep-empty",
                 "--no-progress", "--precision", "fp32"]) == 0  # compared bit for bit: not `auto`'s timed choice
    return sorted((p.relative_to(out).as_posix(), np.asarray(Image.open(p)))
                  for p in out.rglob("*.png") if p.name != "preview.png")


def test_export_samples_exactly_as_the_run_folder_without_pickle(models, exported, tmp_path, monkeypatch):
    names = {f for name in ("large", "small") for f in os.listdir(exported / name)}
    assert names == {"model.safetensors", "config.yaml", "export.json", "MODEL_CARD.md"}
    from_runs = _sample(tmp_path, models / "large", models / "small", "runs")

    def no_pickle(*args, **kwargs):
        raise AssertionError("an export must load without torch.load")

    monkeypatch.setattr(torch, "load", no_pickle)
    # the folder, or the .safetensors file inside it
    from_exports = _sample(tmp_path, exported / "large", exported / "small" / "model.safetensors", "exports")
    assert [n for n, _ in from_runs] == [n for n, _ in from_exports] and len(from_runs) >= 4  # images, masks, ...
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(from_runs, from_exports))


def test_export_metadata_and_model_card(models, exported):
    meta = json.loads((exported / "small" / "export.json").read_text())
    source = meta["source"]
    assert meta["format"] == export.FORMAT and meta["step"] == 1 and meta["ema_rate"] == "0.9999"
    assert source["format"] == "defect-gen/1" and source["sha256"] == fsutil.file_sha256(source["path"])
    assert meta["weights_sha256"] == fsutil.file_sha256(str(exported / "small" / "model.safetensors"))
    card = (exported / "small" / "MODEL_CARD.md").read_text()
    for fact in ("small-receptive-field", "16 x 16 px", "1 = scratch, 2 = stain, 3 = hole", str(models / "data"),
                 "Steps trained: 1 of", "Training pairs: 4", "trained on t in [0, 20)", "sampler ddpm",
                 "Trained on 4 images", "Not evaluated"):
        assert fact in card, fact
    assert "Receptive field: global" in (exported / "large" / "MODEL_CARD.md").read_text()


def test_export_refuses_to_overwrite_without_force(models, exported, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["export", str(models / "small"), "--out", str(out)]) == 0
    before = (out / "export.json").read_text()
    _one_line(capsys, main(["export", str(models / "small"), "--out", str(out)]), f"--out {out} already exists",
              "--force")
    assert (out / "export.json").read_text() == before
    assert main(["export", str(models / "large"), "--out", str(out), "--force"]) == 0
    assert json.loads((out / "export.json").read_text())["source"]["path"].startswith(str(models / "large"))
    assert sorted(os.listdir(tmp_path)) == ["e"]  # no temp or old folder left beside it
    (tmp_path / "not_an_export").mkdir()
    _one_line(capsys, main(["export", str(models / "small"), "--out", str(tmp_path / "not_an_export"), "--force"]),
              "is not an export folder")
    # The library names its parameters; `export` and `convert-published` show their flags.
    from defect_gen.cli import export as export_cli

    with pytest.raises(DefectGenError) as err:
        export.refuse_existing(str(out), force=False)
    assert str(err.value) == (f"out {out} already exists; pass force to replace it, or choose another out (nothing "
                              f"was written)")
    assert err.value.render(export_cli.FLAGS) == (f"--out {out} already exists; pass --force to replace it, or choose "
                                                  f"another --out (nothing was written)")


def test_a_failed_export_leaves_nothing(models, tmp_path, monkeypatch):
    import defect_gen.models.model_card

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(defect_gen.models.model_card, "model_card", broken)
    with pytest.raises(DefectGenError, match="No space left on device"):
        export.export_run(str(models / "small"), str(tmp_path / "e"))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage", ["missing config", "missing weights", "wrong shapes", "corrupt weights",
                                    "bad json"])
def test_a_bad_export_is_one_line_naming_the_file(exported, tmp_path, damage, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(exported / "small", bad)
    if damage == "missing config":
        (bad / "config.yaml").unlink()
        needle, error = str(bad / "config.yaml") + " is missing", CheckpointError
    elif damage == "missing weights":
        (bad / "model.safetensors").unlink()
        needle, error = str(bad / "model.safetensors") + " is missing", CheckpointError
    elif damage == "wrong shapes":
        text = (bad / "config.yaml").read_text().replace("model_channels: 32", "model_channels: 64")
        (bad / "config.yaml").write_text(text)
        needle, error = f"{bad / 'model.safetensors'} does not fit its config", CheckpointError
    elif damage == "corrupt weights":
        (bad / "model.safetensors").write_bytes(b"\x00" * 40)
        needle, error = f"{bad / 'model.safetensors'}: not a readable safetensors file", CheckpointError
    else:
        (bad / "export.json").write_text("{not json")
        needle, error = f"{bad / 'export.json'}: not valid JSON", CheckpointError
    with pytest.raises(error) as err:
        load_model(str(bad), torch.device("cpu"))
    assert needle in str(err.value) and "\n" not in str(err.value)
    code = main(["sample", "--large_recep", str(bad), "--step_inference", "0", "--sample_dir", str(tmp_path / "s"),
                 "--num_samples", "1", "--steps", "2", "--no-progress"])
    _one_line(capsys, code, needle)


def test_raw_weights_of_an_export_is_refused(exported):
    with pytest.raises(ConfigError, match="holds only the weights sampling uses"):
        load_model(str(exported / "small"), torch.device("cpu"), raw_weights=True)


def test_convert_published_round_trip(tmp_path, capsys):
    from test_published import _published

    path, config, fixture = _published(tmp_path, "large")
    out = tmp_path / "converted"
    assert main(["convert-published", path, "--config", config, "--out", str(out)]) == 0
    loaded = load_model(str(out), torch.device("cpu"))
    direct = load_model(path, torch.device("cpu"), config_path=config)
    assert loaded.published and loaded.cfg == direct.cfg
    with torch.no_grad():
        assert (loaded.model(fixture["x"], fixture["t"]) - fixture["out"]).abs().max().item() <= 1e-5
    meta = json.loads((out / "export.json").read_text())
    assert meta["source"]["format"] == "published" and meta["step"] is None and meta["weights"] == "ema"
    card = (out / "MODEL_CARD.md").read_text()
    assert "large-receptive-field" in card and "Data: unknown" in card and "ddim with eta 0" in card
    _one_line(capsys, main(["convert-published", path, "--config", config, "--out", str(out)]), "already exists")
    bad_config = tmp_path / "bad.yml"
    bad_config.write_text(open(config).read().replace("in_channels: 6", "in_channels: 7")
                          .replace("out_channels: 6", "out_channels: 7"))
    _one_line(capsys, main(["convert-published", path, "--config", str(bad_config), "--out", str(tmp_path / "b")]),
              "input_blocks.0.0.weight has shape")
    assert not (tmp_path / "b").exists()


def test_convert_published_refuses_our_own_checkpoints(models, tmp_path, capsys):
    from defect_gen.models import checkpoint as ckpt_lib

    ours = ckpt_lib.latest(str(models / "small"))
    code = main(["convert-published", ours, "--config", "configs/small.yaml", "--out", str(tmp_path / "c")])
    _one_line(capsys, code, f"{ours} is not a published Defect-Gen checkpoint", "defect-gen export")
    assert not (tmp_path / "c").exists()


def test_model_card_quotes_an_evaluation_report(models, tmp_path, capsys):
    report = tmp_path / "report"
    report.mkdir()
    (report / "results.json").write_text(json.dumps({"runs": [
        {"label": "real only", "ratio": 0.0, "summary": {"mIoU": [0.412, 0.011]}},
        {"label": "samples", "ratio": 1.0, "summary": {"mIoU": [0.431, None]}}]}))
    assert main(["export", str(models / "small"), "--out", str(tmp_path / "e"), "--report", str(report)]) == 0
    card = (tmp_path / "e" / "MODEL_CARD.md").read_text()
    assert f"Evaluated in `{report}`" in card and "| real only | 0.0 | 41.2 ± 1.1 |" in card
    assert "| samples | 1.0 | 43.1 ± n/a |" in card and "Not evaluated" not in card
    code = main(["export", str(models / "small"), "--out", str(tmp_path / "f"), "--report", str(tmp_path)])
    _one_line(capsys, code, f"--report {tmp_path}: no results.json in it")
