"""Checkpoints written by older code (``tests/data/README.md`` says which commit and how) still
load with and without Lightning's helper, rebuild the network they were and compute the logits
they did, and give a resumed fit back the RNG states they saved."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn

from fer import FERClassifier, load_model
from fer.models.vgg import SeedVGG
from fer.run.callbacks import RNGState, capture_rng
from fer.run.checkpoints import read_checkpoint

DATA = Path(__file__).parent / "data"
OLD_VGG1 = DATA / "old_vgg1.ckpt"


@pytest.mark.parametrize("load", [FERClassifier.load_from_checkpoint, load_model], ids=["load_from_checkpoint", "load_model"])
def test_a_vgg1_checkpoint_saved_as_seed_vgg_loads_as_vgg1(load) -> None:
    """Made before VGG1/2/3 had a name each (``seed_vgg`` with ``blocks: 1``): it comes back as
    ``vgg1``, the same 4-filter, dense-8 net, its temperature and its recorded logits."""
    assert read_checkpoint(OLD_VGG1)["hyper_parameters"]["net"]["name"] == "seed_vgg"
    expected = np.load(DATA / "old_vgg1_expected.npz")
    model = load(str(OLD_VGG1)).eval()
    assert model.hparams.net["name"] == "vgg1"
    assert isinstance(model.net, SeedVGG)
    assert [m.out_channels for m in model.net.features if isinstance(m, nn.Conv2d)] == [4, 4]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.net.features) == 1
    assert (model.net.classifier[1].in_features, model.net.classifier[1].out_features) == (4 * 24 * 24, 8)
    assert model.temperature == pytest.approx(float(expected["temperature"]))
    with torch.no_grad():
        logits = model(torch.from_numpy(expected["images"]))
    torch.testing.assert_close(logits, torch.from_numpy(expected["logits"]))


def test_the_rng_state_an_old_checkpoint_saved_under_resume_state_is_restored_on_resume() -> None:
    """``ResumeState`` (split since into RNGState, LogState and OneCycleLength) saved the RNGs under
    its own name; RNGState reads and writes that key, so such a checkpoint resumes the same stream."""
    checkpoint = read_checkpoint(OLD_VGG1)
    assert RNGState().state_key == "ResumeState" and "rng" in checkpoint["callbacks"]["ResumeState"]
    saved = checkpoint["callbacks"]["ResumeState"]["rng"]
    before, fitting = capture_rng(), SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING))
    try:
        RNGState().on_load_checkpoint(fitting, None, checkpoint)
        assert torch.equal(torch.get_rng_state(), saved["torch"])
        assert np.random.get_state()[2] == saved["numpy"][2] and list(random.getstate()[1]) == saved["python"][1]
    finally:
        RNGState().on_load_checkpoint(fitting, None, {"callbacks": {"ResumeState": {"rng": before}}})
