from __future__ import annotations

import pytest

import configs
from configs import available_presets, load_preset, resolve_config
from zssr.config import ConfigError, ZSSRConfig, config_from_dict, config_to_dict, parse_override


def test_defaults_are_the_official_ones():
    cfg = ZSSRConfig()
    assert (cfg.net.depth, cfg.net.width, cfg.net.kernel_size) == (8, 64, 3)
    assert cfg.train.max_iters == 3000 and cfg.train.crop_size == 128
    assert cfg.train.learning_rate == 1e-3 and cfg.train.min_learning_rate == 9e-6
    assert cfg.train.run_test_every == 50 and cfg.train.learning_rate_policy_check_every == 60
    assert cfg.infer.back_projection_iters == 10 and cfg.infer.ensemble


def test_round_trip_through_dict():
    cfg = config_from_dict({"train": {"max_iters": 7}, "scale_steps": [2, 4]})
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert cfg.scale_steps == (2.0, 4.0)


@pytest.mark.parametrize("data, match", [
    ({"trian": {}}, r"unknown config key 'trian'; allowed keys: net, train"),
    ({"train": {"max_iter": 3}}, r"unknown config key 'train.max_iter'; allowed keys: .*train.max_iters"),
    ({"train": {"max_iters": "many"}}, r"'train.max_iters': expected an integer, got 'many'"),
    ({"train": {"max_iters": 0}}, r"'train.max_iters': invalid value 0; expected an integer in \[1, "),
    ({"train": {"crop_size": 10**6}}, r"'train.crop_size'.*\[8, 4096\]"),
    ({"train": {"noise_std": -1}}, r"'train.noise_std'.*>= 0"),
    ({"infer": {"ensemble": "yes"}}, r"'infer.ensemble': expected true or false"),
    ({"norm": {"policy": "zscore"}}, r"'norm.policy': invalid value 'zscore'; allowed: dtype, percentile"),
    ({"net": {"kernel_size": 4}}, r"'net.kernel_size'.*odd"),
    ({"net": 3}, r"'net': expected a mapping"),
    ({"scale_steps": [2, 1.5]}, r"'scale_steps'.*increasing"),
    ({"gradual_steps": [[1.0, 1.0]]}, r"'gradual_steps'.*one of them > 1"),
    ({"gradual_steps": [[0.5, 2.0]]}, r"'gradual_steps'.*each >= 1"),
    ({"gradual_steps": [2.0]}, r"'gradual_steps': expected a list"),
    ({"gradual_steps": [[1.5, 1.5, 2]]}, r"'gradual_steps': expected 2 values"),
    ({"gradual_steps": [[2, 2]], "scale_steps": [2]}, r"'gradual_steps'.*one kind of gradual"),
    ({"gradual_steps": [[1.5, 2], [2, 2]], "gradual_back_projection_iters": [3]},
     r"'gradual_back_projection_iters'.*one integer per gradual step \(2\)"),
    ({"train": {"learning_rate": float("nan")}}, r"finite"),
])
def test_bad_configs_name_key_and_allowed(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_parse_override():
    assert parse_override("train.max_iters=5") == {"train": {"max_iters": 5}}
    assert parse_override("infer.ensemble=false") == {"infer": {"ensemble": False}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.max_iters")


def test_presets_resolve_and_override():
    assert {"paper", "fast"} <= set(available_presets())
    for name in available_presets():
        resolve_config(preset=name)
    cfg, _ = resolve_config(preset="fast", overrides=["train.max_iters=3", "seed=4"])
    assert cfg.train.max_iters == 3 and cfg.seed == 4
    assert load_preset("paper")["net"]["depth"] == 8
    with pytest.raises(ConfigError, match="unknown preset 'nope'; available presets: .*paper"):
        load_preset("nope")


def test_preset_extends_merges_over_its_base(tmp_path, monkeypatch):
    fast, fg = load_preset("fast"), load_preset("fast-gradual")
    assert "extends" not in fg
    assert fg["train"] == {**fast["train"], "crop_size": 80, "max_iters": 500}
    assert fg["gradual_steps"] == [[1.5, 1.5], [2.0, 2.0]]
    assert "gradual_steps" not in load_preset("fast")  # the base is not changed by the merge
    monkeypatch.setattr(configs, "PRESETS_DIR", tmp_path)
    (tmp_path / "a.yaml").write_text("extends: b\nseed: 1\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ConfigError, match=r"b.yaml: presets extend each other in a cycle: a -> b -> a"):
        load_preset("a")
    (tmp_path / "c.yaml").write_text("extends: nope\n")
    with pytest.raises(ConfigError, match="unknown preset 'nope'; available presets: a, b, c"):
        load_preset("c")


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        resolve_config(config_file=bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="list.yaml: a config file must hold a mapping"):
        resolve_config(config_file=lst)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        resolve_config(config_file=tmp_path / "missing.yaml")
