"""Test-wide settings: forced to CPU (unless the run selects the gpu-marked tests, `pytest -m gpu`), one thread
(CPU results depend on the thread count), offline hub."""
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


def pytest_configure(config):
    # before any test module imports torch: hide the GPU unless gpu tests are selected ("gpu", not "not gpu")
    if not re.search(r"(?<!not )\bgpu\b", config.getoption("markexpr") or ""):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
