"""Shared fixtures: the real digits data, a briefly trained FP32 reference, real NNCF and OpenVINO."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from nncf_lossless.data import DataBundle, load_dataset
from nncf_lossless.models import build_model

REPO = Path(__file__).resolve().parents[1]
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
# The tests' models are tiny: with two intra-op threads on a busy 2-core machine, torch's threads
# spin-wait on each other and a digits training step took 780 ms instead of 9 ms with one thread
# (measured here, load 17). One thread, for this process and (through the environment) every
# subprocess the tests start; the results are the same, only faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def digits_config(**overrides) -> dict:
    """A small, complete config on digits; ``overrides`` replace top-level sections."""
    config = {
        "model": {"name": "digits_cnn"},
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "dataset": {"name": "digits"},
        "training": {"seed": 0, "epochs": 2, "batch_size": 64, "lr": 1e-3,
                     "reference": {"epochs": 3, "lr": 3e-3}},
        "compression": [{"algorithm": "quantization", "subset_size": 128}],
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    return load_dataset({"name": "digits"})


@pytest.fixture(scope="session")
def _trained_reference(digits: DataBundle) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model({"name": "digits_cnn"}, num_classes=10, in_channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(digits.train, batch_size=64, shuffle=True)
    model.train()
    for _ in range(4):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def reference_checkpoint(_trained_reference: torch.nn.Module, tmp_path_factory) -> Path:
    """The session's trained digits CNN as a ``model.checkpoint`` file, so runs need not train their own."""
    from nncf_lossless.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("reference") / "digits_cnn.pt"
    save_checkpoint({"state_dict": _trained_reference.state_dict()}, path)
    return path


@pytest.fixture
def reference(_trained_reference: torch.nn.Module) -> torch.nn.Module:
    """A fresh copy of a digits CNN trained for a few epochs (about 95% test accuracy)."""
    return copy.deepcopy(_trained_reference)


@pytest.fixture
def calibration(digits: DataBundle) -> DataLoader:
    return DataLoader(digits.calibration, batch_size=64)


@pytest.fixture
def train_loader(digits: DataBundle) -> DataLoader:
    torch.manual_seed(0)
    return DataLoader(digits.train, batch_size=64, shuffle=True)
