import pytest

from defect_gen.config import Config, from_dict, load_config, resolve_num_defect, to_dict, to_yaml
from defect_gen.errors import ConfigError


def test_repo_configs_load_and_round_trip():
    for name in ("large", "small", "demo_large", "demo_small"):
        cfg = load_config(f"configs/{name}.yaml")
        assert from_dict(to_dict(cfg)) == cfg
    large, small = load_config("configs/large.yaml"), load_config("configs/small.yaml")
    assert large.model.channel_mult == [1, 1, 2, 2, 4, 4] and large.model.attention_downsample == [8, 16, 32]
    assert small.model.channel_mult == [1, 2, 4] and not small.model.middle_block
    assert small.model.model_channels == 192 and small.model.attention_downsample == []


@pytest.mark.parametrize("data,needle", [
    ({"model": {"chanel_mult": [1, 2]}}, "unknown config key 'model.chanel_mult'; allowed: image_size"),
    ({"train": {"lr": "fast"}}, "'train.lr': expected float, got 'fast'"),
    ({"train": {"batch_size": 2.5}}, "'train.batch_size': expected int"),
    ({"model": {"use_checkpoint": 1}}, "'model.use_checkpoint': expected bool"),
    ({"model": {"channel_mult": 4}}, "'model.channel_mult': expected a list of int"),
    ({"train": {"batch_size": 0}}, "'train.batch_size': must be > 0, got 0"),
    ({"model": {"image_size": 30, "channel_mult": [1, 2, 2]}}, "not divisible by 4"),
    ({"diffusion": {"schedule": "sigmoid"}}, "expected cosine or linear"),
    ({"diffusion": {"t_min": 500, "t_max": 400}}, "t_min=500, t_max=400"),
    ({"bogus": {}}, "unknown config key 'bogus'"),
])
def test_bad_values_name_the_key(data, needle):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_overrides_and_file_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n")
    cfg = load_config(str(path), ["train.max_steps=7", "data.classes=[a, b]", "model.channel_mult=[1,2]"])
    assert cfg.train.max_steps == 7 and cfg.data.classes == ["a", "b"] and cfg.model.channel_mult == [1, 2]
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(str(tmp_path / "missing.yaml"))
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(str(path))
    path.write_text("!!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError):
        load_config(str(path))
    assert not (tmp_path / "pwned").exists()


def test_num_defect_reconciliation():
    cfg = from_dict({"data": {"classes": ["a", "b", "c"]}})
    assert resolve_num_defect(cfg, 3).num_defect == 3
    with pytest.raises(ConfigError, match="--num_defect 2 disagrees with data.classes, which lists 3"):
        resolve_num_defect(cfg, 2)
    assert resolve_num_defect(Config(), 2).data.classes == ["defect1", "defect2"]
    with pytest.raises(ConfigError, match="number of defect classes is unknown"):
        resolve_num_defect(Config(), None)
    assert "model:" in to_yaml(cfg)
