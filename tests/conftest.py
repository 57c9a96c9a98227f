"""Shared fixtures. Tests run on the CPU with the tiny presets; `slow` and `gpu` tests opt in."""

import os

# Thread pools clash on small machines (DESIGN.md): pin BLAS threads before numpy/scipy load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: pass --run-slow to run")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_model():
    import ovd

    torch.manual_seed(0)
    return ovd.create_model("optimized-tiny").eval()


@pytest.fixture(scope="session")
def tokenizer():
    from ovd.models.text_encoder import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A random-weight optimized-tiny checkpoint in the layout `ovd train` writes (state_dict +
    hyper_parameters.config): what `ovd predict`, `ovd eval` and the arms' accuracy load."""
    import ovd
    from ovd.training.module import DetectorModule

    torch.manual_seed(0)
    config = ovd.get_config("optimized-tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save({"state_dict": DetectorModule(config).state_dict(), "hyper_parameters": {"config": config.to_dict()}},
               path)
    return path
