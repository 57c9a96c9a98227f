"""Model sources, typed measurement specs, the switch rungs, the one timing helper and quantile function."""

import sys
import types

import pytest
import torch

from bench import variants
from bench.errors import UsageError
from bench.measure.specs import FlopsSpec, MemorySpec, RooflineSpec, ScalingSpec, SpecError, SpeedSpec
from bench.results import Stats, quantile
from bench.sources import (
    FactorySource,
    HubSource,
    ModelUnderTest,
    PresetSource,
    SourceError,
    build_under_test,
    parse_model_arg,
    resolve_factory,
    source_from_dict,
)


@pytest.mark.parametrize("source", [PresetSource("optimized-tiny", {"fusion.attention": "mha"}),
                                    HubSource("OwlViTForObjectDetection", config={"projection_dim": 64}),
                                    FactorySource("examples.my_detector:build", {"batch_size": 3})])
def test_sources_round_trip_through_json_dicts(source):
    import json

    back = source_from_dict(json.loads(json.dumps(source.to_dict())))
    assert back == source and type(back) is type(source)


@pytest.mark.parametrize("bad, match", [
    (lambda: PresetSource(""), "non-empty"),
    (lambda: PresetSource("baseline", ["x"]), "overrides must be a dict"),
    (lambda: FactorySource("no_colon_here"), "package.module:function"),
    (lambda: FactorySource("pkg.mod:fn", kwargs=3), "kwargs must be a dict"),
    (lambda: HubSource("not a class"), "class name"),
    (lambda: HubSource("OwlViTForObjectDetection", path="/x", config={"a": 1}), "not both"),
    (lambda: source_from_dict({"kind": "onnx"}), "unknown model source kind"),
    (lambda: source_from_dict({"kind": "preset", "preset": "b", "typo": 1}), "unknown keys"),
    (lambda: parse_model_arg("pkg.mod:fn"), "NAME=package.module:function"),
])
def test_bad_sources_are_clear_usage_errors(bad, match):
    with pytest.raises(SourceError, match=match):
        bad()
    assert issubclass(SourceError, UsageError)


def test_model_arg_and_factory_resolution(monkeypatch):
    assert parse_model_arg("mine=my_pkg.det:build") == ("mine", FactorySource("my_pkg.det:build"))
    with pytest.raises(SourceError, match="cannot import module"):
        resolve_factory("surely_missing_pkg_xyz.mod:build")
    with pytest.raises(SourceError, match="has no attribute"):
        resolve_factory("bench.sources:nope")
    fake = types.ModuleType("h4_fake_factories")
    fake.not_a_mut = lambda device: torch.nn.Linear(2, 2)
    fake.fixed = lambda device: ModelUnderTest(torch.nn.Linear(2, 2), (torch.zeros(5, 2),))
    fake.sized = lambda device, batch_size=1, width=2: ModelUnderTest(torch.nn.Linear(width, 2),
                                                                       (torch.zeros(batch_size, width),))
    monkeypatch.setitem(sys.modules, "h4_fake_factories", fake)
    with pytest.raises(SourceError, match="must return"):
        build_under_test(FactorySource("h4_fake_factories:not_a_mut"), "cpu")
    # batch_size reaches a factory that takes it, and only then; the source's kwargs always do
    assert build_under_test(FactorySource("h4_fake_factories:fixed"), "cpu", 3).batch_size == 5
    mut = build_under_test(FactorySource("h4_fake_factories:sized", {"width": 4}), "cpu", 3)
    assert mut.batch_size == 3 and mut.forward().shape == (3, 2)


def test_model_under_test_validates_its_fields():
    with pytest.raises(SourceError, match="nn.Module"):
        ModelUnderTest("model", (torch.zeros(1),))
    with pytest.raises(SourceError, match="tuple of positional or a dict"):
        ModelUnderTest(torch.nn.Identity(), torch.zeros(1))
    with pytest.raises(SourceError, match="callable"):
        ModelUnderTest(torch.nn.Identity(), (torch.zeros(1),), predict="yes")
    mut = ModelUnderTest(torch.nn.Identity(), {"input": torch.ones(4, 2)})
    assert mut.batch_size == 4 and mut.forward().shape == (4, 2)


def test_specs_from_worker_dicts():
    s = SpeedSpec.from_dict({"preset": "optimized-tiny", "overrides": {"similarity": "matmul"}, "device": None,
                             "infer_batch": 4, "skip": ["breakdown"]})
    assert s.source == PresetSource("optimized-tiny", {"similarity": "matmul"}) and s.skip == ("breakdown",)
    f = FlopsSpec.from_dict({"source": {"kind": "factory", "target": "examples.my_detector:build", "kwargs": {}}})
    assert isinstance(f.source, FactorySource) and not f.is_preset
    # a spec without a model drops the model keys the worker sends to every measurement
    assert RooflineSpec.from_dict({"preset": "optimized", "overrides": {}, "sizes": [64]}).sizes == (64,)
    assert SpeedSpec.coerce(s) is s


@pytest.mark.parametrize("cls, data, match", [
    (SpeedSpec, {"preset": "b", "iter": 3}, r"unknown keys \['iter'\]"),
    (SpeedSpec, {"preset": "b", "iters": 0}, "iters must be an int >= 1"),
    (SpeedSpec, {"preset": "b", "skip": ["warp"]}, "skip='warp'"),
    (MemorySpec, {"preset": "b", "batch_size": "8"}, "batch_size must be an int"),
    (MemorySpec, {"overrides": {}}, "no model"),
    (ScalingSpec, {"preset": "b", "axis": "depth", "value": 2}, "axis='depth'"),
    (ScalingSpec, {"source": {"kind": "factory", "target": "a.b:c"}, "axis": "batch", "value": 2}, "preset source"),
    (RooflineSpec, {"dtypes": ["fp8"]}, "dtypes"),
    (FlopsSpec, {"preset": "b", "device": "tpu"}, "device='tpu'"),
])
def test_bad_specs_name_the_key_and_what_is_accepted(cls, data, match):
    with pytest.raises(SpecError, match=match):
        cls.from_dict(data)


# -- variants ---------------------------------------------------------------------------------------

RUNGS = {  # rung -> the config keys it changes from the baseline, and to what
    "+sdpa": {"fusion.attention": "sdpa", "box_head.attention": "sdpa"},
    "+fusion-sdpa": {"fusion.attention": "sdpa"},
    "+head-sdpa": {"box_head.attention": "sdpa"},
    "+mha-fast": {"fusion.attention": "mha-fast", "box_head.attention": "mha-fast"},
    "+tv-mlp": {"fusion.mlp": "torchvision", "box_head.mlp": "torchvision"},
    "+fusion-tv-mlp": {"fusion.mlp": "torchvision"},
    "+head-tv-mlp": {"box_head.mlp": "torchvision"},
}


def _switches(cfg) -> dict:
    return {"fusion.attention": cfg.fusion.attention, "box_head.attention": cfg.box_head.attention,
            "fusion.mlp": cfg.fusion.mlp, "box_head.mlp": cfg.box_head.mlp}


@pytest.mark.parametrize("rung", sorted(RUNGS))
def test_switch_rungs_change_exactly_their_components(rung):
    import ovd

    v = variants.get_variant("baseline-tiny" + rung)
    base = _switches(ovd.get_config("baseline-tiny"))
    got = _switches(ovd.get_config(v.preset, v.overrides))
    changed = {k: got[k] for k in got if got[k] != base[k]}
    assert changed == RUNGS[rung]
    # the description names exactly the modules the changed keys reach
    phrases = {"fusion.attention": variants._FUSION_ATTN, "box_head.attention": variants._HEAD_ATTN,
               "fusion.mlp": variants._FUSION_MLP, "box_head.mlp": variants._HEAD_MLP}
    assert {k for k, p in phrases.items() if p in v.description} == set(RUNGS[rung])


def test_leave_one_out_and_baseline_switches_use_per_component_keys():
    import ovd

    opt = _switches(ovd.get_config("optimized-tiny"))
    shrink = variants.get_variant("baseline-tiny+shrink")
    assert shrink.preset == "optimized-tiny"
    assert _switches(ovd.get_config(shrink.preset, shrink.overrides)) == {
        k: ("mha" if "attention" in k else "sequential") for k in opt}
    v = variants.get_variant("optimized-tiny-head-sdpa")
    assert _switches(ovd.get_config(v.preset, v.overrides)) == {**opt, "box_head.attention": "mha"}
    assert not any(k in ("attention", "mlp") for k in variants.BASELINE_SWITCHES)


def test_variant_json_round_trip_and_peers_are_factories():
    v = variants.get_variant("baseline-tiny+sdpa")
    assert variants.Variant.from_dict(v.to_dict()) == v
    peer = variants.get_variant("peer:owlvit-b32")
    assert isinstance(peer.source, FactorySource) and peer.preset is None
    assert callable(resolve_factory(peer.source.target))
    with pytest.raises(UsageError, match="unknown variant"):
        variants.get_variant("nope")


def test_register_user_model(monkeypatch):
    monkeypatch.setattr(variants, "VARIANTS", dict(variants.VARIANTS))
    name = variants.register_user_model("mine=examples.my_detector:build")
    v = variants.get_variant(name)
    assert (name, v.group, v.source) == ("mine", "user", FactorySource("examples.my_detector:build"))
    with pytest.raises(SourceError, match="already a variant"):
        variants.register_user_model("baseline=examples.my_detector:build")


# -- one timing helper, one quantile function -------------------------------------------------------

def test_time_calls_excludes_warmup_and_syncs_around_each_call(monkeypatch):
    import bench.common
    from bench.measure.timing import time_calls

    log, clock = [], iter(range(100))
    monkeypatch.setattr(bench.common, "now", lambda device: log.append("now") or float(next(clock)))
    times = time_calls(lambda: log.append("call"), "cpu", warmup=2, iters=3)
    assert log[:2] == ["call", "call"]  # warm-up: untimed
    assert log[2:] == ["now", "call", "now"] * 3 and times == [1.0, 1.0, 1.0]
    assert len(time_calls(lambda: None, "cpu", 0, 1, min_time_s=5.0)) == 5  # 1 s per call on this clock
    with pytest.raises(ValueError):
        time_calls(lambda: None, "cpu", 0, 0)


def test_quantile_is_numpy_linear_and_feeds_stats():
    import numpy as np

    xs = [3.0, 1.0, 10.0, 2.0]
    assert quantile(xs, 0.9) == pytest.approx(float(np.quantile(xs, 0.9)))
    assert quantile(xs, (0.25, 0.5)) == [1.75, 2.5]
    s = Stats.of(xs + [float("nan"), None])
    assert (s.q1, s.median, s.n) == (1.75, 2.5, 4)
    with pytest.raises(ValueError):
        quantile([], 0.5)
