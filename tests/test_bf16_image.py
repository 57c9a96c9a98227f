"""``--precision bf16-image``: bf16 autocast in the image encoder only (``ovd.batch_predict.autocast_for``), the
text encoder, fusion and box head in fp32; the same context in ``ovd predict``, the speed arms and the accuracy
arms (one path)."""

import contextlib

import pytest
import torch

from bench.measure import arms as arms_mod
from bench.measure.arms_accuracy import arm_runner
from bench.report import predict_flag, recommendation
from ovd.batch_predict import autocast_for, check_inference_options, predict_images, submodule_autocast

PARTS = ("image_encoder", "text_encoder", "fusion", "box_head")


@contextlib.contextmanager
def recorded_dtypes(model):
    """Within the block, records per top-level part the dtype its first Linear computes in (``"linear"``) and the
    dtypes of the floating tensors the part receives (``"inputs"``); yields that dict, hooks removed on exit."""
    seen = {part: {"linear": None, "inputs": set()} for part in PARTS}
    handles = []
    for part in PARTS:
        sub = getattr(model, part)
        linear = next(m for m in sub.modules() if isinstance(m, torch.nn.Linear))

        def on_linear(_m, _args, out, part=part):
            seen[part]["linear"] = seen[part]["linear"] or out.dtype

        def on_inputs(_m, args, kwargs, part=part):
            for a in (*args, *kwargs.values()):
                if torch.is_tensor(a) and a.is_floating_point():
                    seen[part]["inputs"].add(a.dtype)

        handles += [linear.register_forward_hook(on_linear),
                    sub.register_forward_pre_hook(on_inputs, with_kwargs=True)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _inputs(model, batch=2):
    s = model.config.image.image_size
    enc = model.tokenize(["red circle . blue square"] * batch)
    return torch.rand(batch, 3, s, s), enc["input_ids"], enc["attention_mask"]


def test_only_the_image_encoder_computes_in_bf16(tiny_model):
    images, ids, mask = _inputs(tiny_model)
    with recorded_dtypes(tiny_model) as seen:
        with torch.no_grad(), autocast_for("bf16-image", torch.device("cpu"), tiny_model):
            out = tiny_model(images, ids, mask)
    assert seen["image_encoder"]["linear"] == torch.bfloat16
    for part in ("text_encoder", "fusion", "box_head"):
        assert seen[part]["linear"] == torch.float32, part
        assert seen[part]["inputs"] <= {torch.float32}, (part, seen[part]["inputs"])  # image features handed on fp32
    assert out["pred_logits"].dtype == torch.float32 and out["pred_boxes"].dtype == torch.float32


def test_the_context_leaves_the_model_as_it_was_even_when_the_forward_raises(tiny_model):
    images, ids, mask = _inputs(tiny_model)
    hooks_before = len(tiny_model.image_encoder._forward_hooks), len(tiny_model.image_encoder._forward_pre_hooks)
    with torch.no_grad(), autocast_for("bf16-image", torch.device("cpu"), tiny_model):
        with pytest.raises(RuntimeError):
            tiny_model(images[:, :2], ids, mask)  # 2 channels: the backbone's first conv raises
        assert not torch.is_autocast_enabled("cpu")  # the failed image encoder did not leave autocast on
        with pytest.raises(RuntimeError):
            tiny_model(images[:, :2], ids, mask)  # and an error escaping the block
    assert not torch.is_autocast_enabled("cpu")
    assert (len(tiny_model.image_encoder._forward_hooks), len(tiny_model.image_encoder._forward_pre_hooks)) == \
        hooks_before
    with recorded_dtypes(tiny_model) as seen:
        with torch.no_grad():
            tiny_model(images, ids, mask)
    assert seen["image_encoder"]["linear"] == torch.float32  # outside the block: fp32 again


def test_nested_blocks_leave_the_rest_of_the_forward_and_the_thread_in_fp32(tiny_model):
    """Two blocks on one model (a caller wrapping predict_images(precision="bf16-image") in its own block): the
    autocasts are left in the order they were entered, so the fusion and box head stay fp32 and nothing stays on."""
    images, ids, mask = _inputs(tiny_model)
    with recorded_dtypes(tiny_model) as seen:
        with torch.no_grad(), autocast_for("bf16-image", torch.device("cpu"), tiny_model):
            with autocast_for("bf16-image", torch.device("cpu"), tiny_model):
                tiny_model(images, ids, mask)
                assert not torch.is_autocast_enabled("cpu")
            assert not torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    assert seen["image_encoder"]["linear"] == torch.bfloat16
    assert seen["fusion"]["linear"] == torch.float32 and seen["box_head"]["linear"] == torch.float32


def test_another_threads_block_changes_nothing_in_this_thread(tiny_model):
    """Autocast is per thread: while another thread holds a block open on the same model (a server answering
    requests in threads), this thread's plain forward stays fp32, and its own block runs as it does alone."""
    import threading

    images, ids, mask = _inputs(tiny_model, batch=1)
    opened, done = threading.Event(), threading.Event()

    def other():
        with autocast_for("bf16-image", torch.device("cpu"), tiny_model):
            opened.set()
            done.wait(60)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert opened.wait(60)
        with recorded_dtypes(tiny_model) as plain:
            with torch.no_grad():
                tiny_model(images, ids, mask)
        with recorded_dtypes(tiny_model) as own:
            with torch.no_grad(), autocast_for("bf16-image", torch.device("cpu"), tiny_model):
                tiny_model(images, ids, mask)
                assert not torch.is_autocast_enabled("cpu")
    finally:
        done.set()
        thread.join()
    assert plain["image_encoder"]["linear"] == torch.float32
    assert own["image_encoder"]["linear"] == torch.bfloat16 and own["box_head"]["linear"] == torch.float32
    assert not torch.is_autocast_enabled("cpu")


def test_a_copy_made_inside_the_block_is_fp32_after_it(tiny_model):
    """deepcopy copies a module's hooks (quantize_dynamic, a user's copy): they must not outlive the block."""
    import copy

    images, ids, mask = _inputs(tiny_model, batch=1)
    with autocast_for("bf16-image", torch.device("cpu"), tiny_model):
        twin = copy.deepcopy(tiny_model)
    with recorded_dtypes(twin) as seen:
        with torch.no_grad():
            twin(images, ids, mask)
    assert seen["image_encoder"]["linear"] == torch.float32


def test_a_compiled_model_is_refused_not_run_in_fp32():
    """A caller's torch.compile traces the forward without the hooks, which it then never calls: refused."""

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.image_encoder = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.image_encoder(x)

    compiled_in_place = Toy()
    compiled_in_place.compile()
    for model in (torch.compile(Toy()), compiled_in_place):
        with pytest.raises(ValueError, match="compiled"):
            with autocast_for("bf16-image", torch.device("cpu"), model):
                pass


def test_outputs_differ_from_fp32(tiny_model):
    """bf16 in the image encoder changes the numbers (else nothing ran in bf16)."""
    images, ids, mask = _inputs(tiny_model)
    with torch.no_grad():
        ref = tiny_model(images, ids, mask)
        with autocast_for("bf16-image", torch.device("cpu"), tiny_model):
            out = tiny_model(images, ids, mask)
    diff = (ref["pred_boxes"] - out["pred_boxes"]).abs().max()
    assert float(diff) > 0


def test_refusals_name_the_option():
    plain = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no 'image_encoder' submodule"):
        with submodule_autocast(plain, "image_encoder", torch.device("cpu"), torch.bfloat16):
            pass
    with pytest.raises(ValueError, match="needs the model"):
        autocast_for("bf16-image", torch.device("cpu"))
    with pytest.raises(ValueError, match="--compile frozen with --precision bf16-image"):
        check_inference_options("bf16-image", "none", torch.device("cpu"), compile="frozen")
    with pytest.raises(ValueError, match="--precision fp32 with --quantize int8"):
        check_inference_options("bf16-image", "int8", torch.device("cpu"))
    with pytest.raises(ValueError, match="the exported graph is fp32"):
        check_inference_options("bf16-image", "none", torch.device("cpu"), backend="onnxruntime")


def test_predict_runs_the_image_encoder_in_bf16(tiny_model, tmp_path):
    from PIL import Image

    paths = []
    for i in range(2):
        Image.new("RGB", (64, 48), (200, 30 * i, 30)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    with recorded_dtypes(tiny_model) as seen:
        preds = list(predict_images(tiny_model, paths, ["red circle"], batch_size=2, threshold=0.0,
                                    precision="bf16-image", progress=False, cache_text=True))
    assert len(preds) == 2 and all(len(p.boxes) == tiny_model.config.box_head.num_queries for p in preds)
    assert seen["image_encoder"]["linear"] == torch.bfloat16
    assert seen["text_encoder"]["linear"] == torch.float32 and seen["box_head"]["linear"] == torch.float32


def test_the_arms_apply_it_and_report_its_predict_flag(tiny_model):
    arm = arms_mod.get_arm("bf16-image+text-cache")
    assert arm.tolerance == arms_mod.REDUCED_TOLERANCE
    assert arms_mod.arm_precision(arm.features) == "bf16-image"
    assert predict_flag(arm.features) == "--precision bf16-image"
    images, ids, mask = _inputs(tiny_model)
    fn, setup_s, _ = arms_mod.build_arm(arm, tiny_model, images, ids, mask, "cpu", workdir=None)
    with recorded_dtypes(tiny_model) as seen:
        out = fn()
    assert seen["image_encoder"]["linear"] == torch.bfloat16 and seen["fusion"]["linear"] == torch.float32
    assert seen["text_encoder"]["linear"] is None  # the cached text: the encoder does not run per call
    assert out["pred_boxes"].shape[0] == 2 and setup_s >= 0
    model, context = arm_runner(arms_mod.get_arm("bf16-image"), tiny_model, torch.device("cpu"))
    with recorded_dtypes(model) as seen:
        with context():
            model(images, ids, mask)
    assert seen["image_encoder"]["linear"] == torch.bfloat16 and seen["text_encoder"]["linear"] == torch.float32


def test_the_recommendation_takes_the_image_only_verdict_for_its_cached_text_arm():
    """bf16-image+text-cache is recommended on bf16-image's accuracy verdict, bf16+text-cache is not on its own."""
    from test_bench_report import _arm_rows, planted, row

    ref = {"mAP50": 0.90, "R@1": 0.92}
    judged = planted([row("optimized-tiny", f"arm_acc/{arm}/val/{metric}", [value], "mAP")
                      for arm, vals in (("eager", ref), ("bf16-autocast", {"mAP50": 0.85, "R@1": 0.92}),
                                        ("bf16-image", ref))
                      for metric, value in vals.items()])
    res = planted(_arm_rows({"bf16+text-cache": [3.0, 3.1, 3.2], "bf16-image+text-cache": [2.8, 2.9, 3.0]},
                            parity={}))
    line = recommendation(res, judged)
    assert "`bf16-image+text-cache`" in line and "--precision bf16-image" in line


def test_one_autocast_per_arm_and_no_unknown_precision_name():
    """An arm's autocast is the one the report names (``numerics``, the roofline): more than one is refused, and a
    name precision_context does not know is not run as whole-forward bf16."""
    for arm in arms_mod.ARMS.values():
        arms_mod.arm_precision(arm.features)  # every arm has at most one
    with pytest.raises(ValueError, match="one autocast feature"):
        arms_mod.arm_precision(("bf16", "bf16_image"))
    with pytest.raises(ValueError, match="accepted"):
        arms_mod.precision_context("bf16_image", "cpu", None)


def test_outputs_in_a_namedtuple_are_handed_on_as_fp32():
    import collections

    from ovd.batch_predict import _as_fp32

    Features = collections.namedtuple("Features", "tokens shapes")
    out = _as_fp32(Features(torch.ones(2, dtype=torch.bfloat16), [(2, 3)]))
    assert isinstance(out, Features) and out.tokens.dtype == torch.float32 and out.shapes == [(2, 3)]
