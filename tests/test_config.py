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
    # The library names its parameter; each command that takes --num_defect shows the flag.
    from defect_gen.cli import bench, data, info, train

    with pytest.raises(ConfigError, match="^num_defect 2 disagrees with data.classes, which lists 3") as err:
        resolve_num_defect(cfg, 2)
    for command in (train, data, info, bench):
        assert err.value.render(command.FLAGS) == ("--num_defect 2 disagrees with data.classes, which lists 3 "
                                                   "classes: a, b, c")
    assert resolve_num_defect(Config(), 2).data.classes == ["defect1", "defect2"]
    with pytest.raises(ConfigError, match="number of defect classes is unknown") as err:
        resolve_num_defect(Config(), None)
    assert err.value.render(train.FLAGS).endswith("pass --num_defect K or list data.classes")
    assert "model:" in to_yaml(cfg)


# Issue 12 (A): YAML duplicates and floats, non-finite values, shapes the UNet cannot build.
@pytest.mark.parametrize("data,needle", [
    ({"train": {"lr": float("nan")}}, "'train.lr': expected a finite number, got nan"),
    ({"train": {"ema_rate": float("inf")}}, "'train.ema_rate': expected a finite number, got inf"),
    ({"model": {"model_channels": 16}}, "'model.model_channels': 16 x channel_mult"),
    ({"model": {"num_head_channels": 48}}, "'model.num_head_channels': 48 does not divide"),
    ({"model": {"num_head_channels": -1, "num_heads": 3}}, "'model.num_heads': 3 does not divide"),
    ({"model": {"num_head_channels": -1, "num_heads_upsample": 5}}, "'model.num_heads_upsample': 5 does not"),
    ({"model": {"num_heads_upsample": 0}}, "'model.num_heads_upsample': must be > 0"),
    ({"model": {"attention_downsample": [3, 64]}}, "'model.attention_downsample': [3, 64] not among"),
    ({"model": {"image_size": 65536}}, "'model.image_size': at most 4096 px, got 65536"),
])
def test_values_the_network_cannot_use_name_the_key(data, needle):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_default_attention_rates_fit_a_shallower_net():
    # configs saved in checkpoints rely on it: the default list places what the depth allows
    assert from_dict({"model": {"channel_mult": [1, 2]}}).model.attention_downsample == [8, 16, 32]


def test_yaml_duplicate_keys_are_errors_and_exponent_floats_are_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 5e-4\nmodel:\n  image_size: 64\ntrain:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'train' is given twice \(lines 1 and 5\)"):
        load_config(str(path))
    path.write_text("train:\n  lr: 5e-4\n  lr: 1e-3\n")
    with pytest.raises(ConfigError, match=r"key 'lr' is given twice \(lines 2 and 3\)"):
        load_config(str(path))
    path.write_text("train:\n  lr: 5e-4\n  weight_decay: 1E-2\n")
    cfg = load_config(str(path), ["train.warmup_steps=10", "train.grad_clip=2e0"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip) == (5e-4, 1e-2, 2.0)
    assert load_config(str(path), ["train.lr=3e-5"]).train.lr == 3e-5
    path.write_text("base: &b {lr: 0.1, max_steps: 2}\ntrain:\n  <<: *b\n  lr: 0.2\n")  # merge keys may be overridden
    with pytest.raises(ConfigError, match="unknown config key 'base'"):
        load_config(str(path))


def test_bad_set_names_the_parameter_and_each_command_its_flag(tmp_path, capsys):
    from defect_gen.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), ["train.lr"])
    assert str(err.value) == "overrides 'train.lr': expected section.key=value"
    with pytest.raises(ConfigError) as err:
        load_config(str(path), ["train.lr.x=1"])
    assert str(err.value) == "overrides 'train.lr.x=1': 'lr' is not a section"
    assert main(["info", "--config", str(path), "--set", "train.lr"]) == 2
    assert capsys.readouterr().err.strip() == "defect-gen info: error: --set 'train.lr': expected section.key=value"
