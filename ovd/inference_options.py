"""The inference options ``ovd predict`` accepts, in a module without torch, so the command line can list them
without importing torch (``ovd --help`` stays fast). :mod:`ovd.batch_predict` validates against the same tuples."""

#: ``--images`` output formats
FORMATS = ("jsonl", "coco")
#: ``--precision``: bf16 runs the whole forward under ``torch.autocast(dtype=torch.bfloat16)``; bf16-image only the
#: image encoder (most of the FLOPs), the text encoder, fusion and box head (query selection, scores) staying fp32
PRECISIONS = ("fp32", "bf16", "bf16-image")
#: ``--quantize``: dynamic int8 of every ``nn.Linear``, or of every one but the text encoder's
QUANTIZATIONS = ("none", "int8", "int8-except-text")
#: ``--backend``
BACKENDS = ("torch", "onnxruntime")
#: ``--compile``: torch.compile (Inductor) of the unquantized torch model; "frozen" adds Inductor's freezing (eval weights
#: folded into the graph as constants, prepacked for oneDNN on the CPU)
COMPILE_MODES = ("none", "default", "frozen")
