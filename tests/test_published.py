"""Checkpoints of the published implementation: {"model", "ema", "optimizer"} plus its YAML.

The checkpoints are built in tmp_path from the fixtures in ../shared/reference/official-defect-gen
(weights, the YAML's model.params, and that implementation's output for a fixed input).
"""

import json

import pytest
import torch
import yaml
from conftest import reference_file

from defect_gen.cli import main
from defect_gen.errors import CheckpointError, ConfigError
from defect_gen.models.loading import load_model
from defect_gen.models.published import PUBLISHED_TARGETS, from_published_yaml

TARGET = {"large": "models.unet.openaiunet.UNetModel", "small": "models.unet.unet_receptive.UNetModel"}


def _published(tmp_path, variant: str, **changes) -> tuple[str, str, dict]:
    """(checkpoint path, YAML path, fixture) laid out as the published code writes them."""
    fixture = torch.load(reference_file(f"unet_{variant}.pt"), weights_only=True)
    sd = fixture["state_dict"]
    ckpt = {"model": {k: torch.zeros_like(v) for k, v in sd.items()}, "ema": sd, "optimizer": {"state": {}}}
    ckpt.update(changes)
    path, config = tmp_path / f"{variant}.pt", tmp_path / f"{variant}_recep.yml"
    torch.save(ckpt, path)
    config.write_text(yaml.safe_dump({
        "diffusion": {"target": "diffusion.base_diffusion.ColdDiffusion",
                      "params": {"parameterization": "x0", "schedule": "cosine", "num_timestep": 1000}},
        "model": {"target": TARGET[variant], "params": fixture["config"], "ckpt": None},
        "data": {"bs_per_gpu": 2, "num_workers": 1, "params": {"dir": "/some/path", "resolution": 32,
                                                                "num_image_train": 5}},
        "optimizer": {"params": {"lr": 0.0001, "weight_decay": 0.002}},
        "train": {"iterations": 160000, "log_image_interval": 10000, "save_ckpt_interval": 10000},
    }))
    return str(path), str(config), fixture


@pytest.mark.parametrize("variant", ["large", "small"])
def test_published_checkpoint_loads_with_its_yaml_and_computes_the_same(tmp_path, variant):
    path, config, fixture = _published(tmp_path, variant)
    loaded = load_model(path, torch.device("cpu"), config_path=config)
    assert loaded.cfg.num_defect == fixture["config"]["in_channels"] - 4
    assert loaded.cfg.model.middle_block == (variant == "large")
    with torch.no_grad():
        out = loaded.model(fixture["x"], fixture["t"])
    assert (out - fixture["out"]).abs().max().item() <= 1e-5  # the EMA weights, by default
    raw = load_model(path, torch.device("cpu"), raw_weights=True, config_path=config)
    assert all(not v.any() for v in raw.model.state_dict().values() if v.is_floating_point())


def test_ddp_prefixed_weights_load_too(tmp_path):
    fixture = torch.load(reference_file("unet_small.pt"), weights_only=True)
    prefixed = {f"module.{k}": v for k, v in fixture["state_dict"].items()}
    path, config, _ = _published(tmp_path, "small", ema=prefixed)
    with torch.no_grad():
        out = load_model(path, torch.device("cpu"), config_path=config).model(fixture["x"], fixture["t"])
    assert (out - fixture["out"]).abs().max().item() <= 1e-5


def test_key_and_shape_mismatches_are_clear_errors(tmp_path):
    fixture = torch.load(reference_file("unet_small.pt"), weights_only=True)
    sd = dict(fixture["state_dict"])
    sd.pop("out.2.bias")
    sd["extra.weight"] = torch.zeros(1)
    path, config, _ = _published(tmp_path, "small", ema=sd)
    with pytest.raises(CheckpointError, match=r"1 missing keys \(out\.2\.bias\), 1 unexpected keys \(extra\.weight\)"):
        load_model(path, torch.device("cpu"), config_path=config)
    path, config, _ = _published(tmp_path, "small")
    text = open(config).read().replace("in_channels: 6", "in_channels: 7").replace("out_channels: 6", "out_channels: 7")
    open(config, "w").write(text)
    with pytest.raises(CheckpointError, match=r"input_blocks\.0\.0\.weight has shape .* in the file"):
        load_model(path, torch.device("cpu"), config_path=config)


def test_published_yaml_errors_name_the_file_and_what_is_expected(tmp_path):
    path, config, _ = _published(tmp_path, "large")
    with pytest.raises(ConfigError, match="holds no config: pass its YAML with large_config") as info:
        load_model(path, torch.device("cpu"))
    assert info.value.render({"large_config": "--large_recep_config"}).endswith("with --large_recep_config")
    text = open(config).read()
    open(config, "w").write(text.replace(TARGET["large"], "models.unet.ldmunet.UNetModel"))
    with pytest.raises(ConfigError) as err:
        from_published_yaml(config)
    assert "ldmunet" in str(err.value) and all(t in str(err.value) for t in PUBLISHED_TARGETS)
    open(config, "w").write(text.replace("schedule: cosine", "schedule: linear"))
    with pytest.raises(ConfigError, match="only the published cosine schedule"):
        from_published_yaml(config)
    open(config, "w").write(text.replace("num_res_blocks: 1", "num_res_blocks: 1\n    resblock_updown: true"))
    with pytest.raises(ConfigError, match="resblock_updown: True is not supported"):
        from_published_yaml(config)


def test_sample_cli_with_published_checkpoints(tmp_path):
    large, large_config, _ = _published(tmp_path, "large")
    small, small_config, _ = _published(tmp_path, "small")
    out = tmp_path / "samples"
    assert main(["sample", "--large_recep", large, "--large_recep_config", large_config, "--small_recep", small,
                 "--small_recep_config", small_config, "--step_inference", "400", "--num_defect", "2",
                 "--sample_dir", str(out), "--num_samples", "2", "--steps", "3", "--keep-empty",
                 "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["sample_000000", "sample_000001"]
    assert all(set(r["classes"]) <= {"defect1", "defect2"} for r in rows)


def test_published_checkpoints_sample_with_their_cold_diffusion_step_by_default(tmp_path):
    # Issue 12 item 4: the published sampler is DDIM at eta 0; ours stay DDPM; --sampler overrides.
    from defect_gen.models.loading import LoadedModel
    from defect_gen.pipeline.generator import DefectGenerator
    from defect_gen.pipeline.sample_to_folder import SampleSettings, resolve_sampler

    path, config, _ = _published(tmp_path, "small")
    published = load_model(path, torch.device("cpu"), config_path=config)
    ours = LoadedModel(published.model, published.cfg, "ours.pt")
    s = SampleSettings(sample_dir=str(tmp_path / "s"), step_inference=1000)
    assert published.published and not ours.published
    gen_published, gen_ours = (DefectGenerator(None, m, 1000, precision="fp32") for m in (published, ours))
    assert (resolve_sampler(s, gen_published).sampler, resolve_sampler(s, gen_published).eta) == ("ddim", 0.0)
    assert resolve_sampler(s, gen_ours).sampler == "ddpm"
    s.sampler = "ddpm"
    assert resolve_sampler(s, gen_published).sampler == "ddpm"


def test_published_decoder_attention_uses_num_heads_upsample(tmp_path):
    # Issue 12 item 2: it was dropped as unused; the published decoder attention splits into that many heads.
    from defect_gen.core.unet import AttentionBlock, build_unet

    _, config, fixture = _published(tmp_path, "large")
    params = {**fixture["config"], "num_heads": 1, "num_heads_upsample": 4, "num_head_channels": -1}
    text = yaml.safe_load(open(config))
    text["model"]["params"] = params
    open(config, "w").write(yaml.safe_dump(text))
    cfg = from_published_yaml(config)
    assert cfg.model.num_heads_upsample == 4
    model = build_unet(cfg.model, cfg.num_defect)
    heads = {part: {m.num_heads for m in getattr(model, part).modules() if isinstance(m, AttentionBlock)}
             for part in ("input_blocks", "middle_block", "output_blocks")}
    assert heads == {"input_blocks": {1}, "middle_block": {1}, "output_blocks": {4}}
    model.load_state_dict(fixture["state_dict"])
    cfg.model.num_heads_upsample = -1
    same_heads = build_unet(cfg.model, cfg.num_defect)
    same_heads.load_state_dict(fixture["state_dict"])
    with torch.no_grad():
        assert not torch.allclose(model(fixture["x"], fixture["t"]), same_heads(fixture["x"], fixture["t"]))


def test_published_small_net_default_channel_mult_is_1_2_4_8(tmp_path):
    _, config, fixture = _published(tmp_path, "small")
    text = yaml.safe_load(open(config))
    text["model"]["params"].pop("channel_mult")
    open(config, "w").write(yaml.safe_dump(text))
    assert from_published_yaml(config).model.channel_mult == [1, 2, 4, 8]
