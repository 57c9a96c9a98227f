"""A factory for ``ovd-bench run --model mine=examples.my_detector:build`` (contract: bench.sources)."""
import torch

import ovd
from bench.sources import ModelUnderTest


def build(device, batch_size: int = 2) -> ModelUnderTest:
    model = ovd.create_model("optimized-tiny").to(device)  # any nn.Module of yours
    size = model.config.image.image_size
    enc = model.tokenize(["a red circle . a blue square"] * batch_size)
    inputs = (torch.rand(batch_size, 3, size, size, device=device),  # images (B, 3, S, S)
              enc["input_ids"].to(device), enc["attention_mask"].to(device))  # (B, T) each

    def loss(module, inputs):  # optional: enables training speed/memory (a stand-in loss here)
        return module(*inputs)["pred_logits"].float().sigmoid().mean()

    # predict(pil_images, prompts) -> [{"boxes": (K, 4) xyxy px, "scores": (K,), "labels": [...]}]
    return ModelUnderTest(model, inputs, predict=model.predict, loss=loss)
