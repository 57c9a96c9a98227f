import json

import pytest

import ovd
from ovd.config import DetectorConfig, get_config, parse_override, with_overrides


def test_presets_listed():
    assert ovd.list_presets() == ["baseline", "optimized", "baseline-tiny", "optimized-tiny"]


@pytest.mark.parametrize("name", ["baseline", "optimized", "baseline-tiny", "optimized-tiny"])
def test_preset_round_trips_json_and_yaml(name, tmp_path):
    cfg = get_config(name)
    assert DetectorConfig.from_dict(json.loads(cfg.to_json())) == cfg
    cfg.save(tmp_path / "c.yaml")
    assert DetectorConfig.load(tmp_path / "c.yaml") == cfg
    cfg.save(tmp_path / "c.json")
    assert DetectorConfig.load(tmp_path / "c.json") == cfg


def test_switches_of_the_presets():
    base, opt = get_config("baseline"), get_config("optimized")
    assert (base.fusion.attention, base.box_head.mlp, base.similarity) == ("mha", "sequential", "matmul")
    assert (opt.fusion.attention, opt.box_head.mlp, opt.similarity) == ("sdpa", "torchvision", "torchmetrics")
    assert base.image.backbone == "swin_small_patch4_window7_224"
    assert opt.image.backbone == "swin_tiny_patch4_window7_224"
    assert (opt.out_dim, opt.fusion.num_layers, opt.fusion.num_heads, opt.box_head.num_queries) == (256, 1, 4, 20)
    assert opt.train.precision == "auto" and base.train.precision == "32-true"
    # The tiny pair keeps the same relative differences as the full pair.
    bt, ot = get_config("baseline-tiny"), get_config("optimized-tiny")
    assert bt.out_dim > ot.out_dim and bt.box_head.num_queries > ot.box_head.num_queries
    assert bt.fusion.num_layers > ot.fusion.num_layers
    assert bt.box_head.num_decoder_layers > ot.box_head.num_decoder_layers
    assert (bt.fusion.attention, ot.fusion.attention) == ("mha", "sdpa")


def test_with_overrides_applies_keys_and_short_hands_to_a_built_config():
    stored = get_config("optimized-tiny")
    changed = with_overrides(stored, {"attention": "mha", "train.lr": 5e-4})
    assert (changed.fusion.attention, changed.box_head.attention, changed.train.lr) == ("mha", "mha", 5e-4)
    assert changed.name == "optimized-tiny" and stored.fusion.attention == "sdpa"  # the original is untouched
    with pytest.raises(ValueError, match="unknown override key"):
        with_overrides(stored, {"train.nope": 1})


def test_overrides_by_dotted_key():
    cfg = get_config("baseline", {"fusion.attention": "sdpa", "box_head.num_queries": 50, "similarity": "torchmetrics"})
    assert cfg.fusion.attention == "sdpa" and cfg.box_head.num_queries == 50 and cfg.similarity == "torchmetrics"
    assert get_config("baseline").fusion.attention == "mha"  # presets are not mutated


@pytest.mark.parametrize("key,value,fragment", [
    ("fusion.attention", "flash", "mha-fast"),
    ("box_head.mlp", "conv", "torchvision"),
    ("similarity", "dot", "torchmetrics"),
    ("train.precision", "fp8", "bf16-mixed"),
    ("train.scheduler", "step", "onecycle"),
    ("box_head.query_init", "random", "language-guided"),
    ("box_head.num_queries", 0, "positive"),
    ("fusion.num_heads", 3, "divisible"),
])
def test_bad_values_list_valid_choices(key, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        get_config("optimized", {key: value})


def test_unknown_keys_and_presets():
    with pytest.raises(ValueError, match="valid keys"):
        get_config("optimized", {"fusion.atention": "sdpa"})
    with pytest.raises(ValueError, match="choose one of"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown keys"):
        DetectorConfig.from_dict({"fusion": {"heads": 2}})


def test_parse_override():
    assert parse_override("box_head.num_queries=50") == ("box_head.num_queries", 50)
    assert parse_override("fusion.attention=sdpa") == ("fusion.attention", "sdpa")
    assert parse_override("train.betas=[0.9,0.98]") == ("train.betas", [0.9, 0.98])
    with pytest.raises(ValueError, match="key=value"):
        parse_override("nonsense")


def test_shorthand_sets_both_components_and_presets_set_both():
    cfg = get_config("optimized", {"attention": "mha-fast", "mlp": "sequential"})
    assert (cfg.fusion.attention, cfg.box_head.attention) == ("mha-fast", "mha-fast")
    assert (cfg.fusion.mlp, cfg.box_head.mlp) == ("sequential", "sequential")
    base = get_config("baseline")
    assert (base.fusion.attention, base.box_head.attention, base.fusion.mlp, base.box_head.mlp) == (
        "mha", "mha", "sequential", "sequential")


def test_legacy_config_keeps_its_old_meaning_with_a_warning():
    old = get_config("baseline").to_dict()
    del old["box_head"]["attention"], old["fusion"]["mlp"]  # what a checkpoint of ovd-bench 0.1.0 holds
    with pytest.warns(UserWarning, match="box_head.attention='mha'"):
        cfg = DetectorConfig.from_dict(old)
    assert (cfg.box_head.attention, cfg.fusion.mlp) == ("mha", "sequential")
    new = get_config("optimized").to_dict()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DetectorConfig.from_dict(new) == get_config("optimized")


@pytest.mark.parametrize("raw,value", [("false", False), ("False", False), ("FALSE", False), ("True", True), ("true", True)])
def test_parse_override_reads_booleans_in_any_case(raw, value):
    # "False" used to stay a string, which is truthy: text.frozen=False kept the text encoder frozen
    assert parse_override(f"text.frozen={raw}") == ("text.frozen", value)
    assert get_config("optimized-tiny", dict([parse_override(f"text.frozen={raw}")])).text.frozen is value


@pytest.mark.parametrize("key", ["text.frozen", "text.pretrained", "text.phrase_attention", "loss.aux_loss",
                                 "train.pin_memory", "image.pretrained"])
@pytest.mark.parametrize("value", ["False", "no", 0, 1])
def test_bool_fields_refuse_other_types_by_name(key, value):
    with pytest.raises(ValueError, match=rf"{key}=.* must be true or false"):
        get_config("optimized-tiny", {key: value})


def test_a_string_bool_is_refused_from_a_config_file(tmp_path):
    data = get_config("optimized-tiny").to_dict()
    data["loss"]["aux_loss"] = "False"
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="loss.aux_loss='False' must be true or false"):
        DetectorConfig.load(tmp_path / "c.json")


@pytest.mark.parametrize("key,value,fragment", [
    ("train.grad_clip", -1, "train.grad_clip=-1 must be a number >= 0"),
    ("train.weight_decay", -1e-4, "train.weight_decay=.* must be a number >= 0"),
    ("train.backbone_lr", -1e-3, "train.backbone_lr=.* >= 0"),
    ("train.seed", -1, "train.seed=-1 must be a number >= 0"),
    ("train.warmup_fraction", 5, r"train.warmup_fraction=5 must be a number in \[0, 1\]"),
    ("fusion.dropout", 1.5, r"fusion.dropout=1.5 must be a number in \[0, 1\]"),
    ("loss.focal_alpha", 2.0, r"loss.focal_alpha=2.0 must be a number in \[0, 1\]"),
    ("box_head.num_queries", 2.5, "box_head.num_queries=2.5 must be an int"),
    ("box_head.num_queries", 1e2, "box_head.num_queries=100.0 must be an int"),  # JSON reads 1e2 as a float
    ("train.batch_size", 8.0, "train.batch_size=8.0 must be an int"),
    ("image.num_feature_levels", 2.0, "image.num_feature_levels=2.0 must be an int"),
    ("out_dim", 128.0, "config.out_dim=128.0 must be an int"),
    ("train.lr", float("nan"), "train.lr=nan must be a finite number"),
    ("train.weight_decay", "1e-4", "train.weight_decay='1e-4' must be a finite number"),  # YAML reads 1e-4 as text
    ("train.betas", ["0.9", 0.98], "train.betas=.* two numbers"),
])
def test_bad_numbers_are_refused_by_name(key, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        get_config("optimized-tiny", {key: value})


def test_numeric_edges_that_mean_something_are_kept():
    # grad_clip 0 = no clipping, lr 0 keeps the backbone still, an int is a valid float
    cfg = get_config("optimized-tiny", {"train.grad_clip": 0, "train.backbone_lr": 0, "train.warmup_fraction": 0,
                                        "train.weight_decay": 0, "train.lr": 1, "fusion.dropout": 0.1})
    assert (cfg.train.grad_clip, cfg.train.backbone_lr, cfg.train.lr, cfg.fusion.dropout) == (0, 0, 1, 0.1)
    assert get_config("optimized-tiny", {"train.warmup_fraction": 1.0}).train.warmup_fraction == 1.0
