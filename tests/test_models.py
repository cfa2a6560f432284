"""The registered networks: output shapes, the seed's ablation switches, VGG16 freezing and loading
ImageNet weights from a file (nothing here may download)."""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from fer.models import LEGACY_NAMES, MODELS, build_model, resolve
from fer.models.registry import register
from fer.models.vgg import SeedVGG
from fer.models.vgg16 import VGG16Transfer, load_vgg16_features

CONVS = 13


@pytest.fixture(scope="module")
def imagenet_like() -> dict[str, torch.Tensor]:
    """A torchvision VGG16 state_dict with seeded random weights, standing in for ImageNet's."""
    torch.manual_seed(123)
    return torchvision.models.vgg16(weights=None).state_dict()


@pytest.fixture(scope="module")
def weight_files(imagenet_like: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The forms users have the weights in: a full state_dict, and the features alone (with or
    without the ``features.`` prefix, as ``vgg.features.state_dict()`` saves them)."""
    folder = tmp_path_factory.mktemp("vgg16_weights")
    features = {k: v for k, v in imagenet_like.items() if k.startswith("features.")}
    payloads = {
        "full": imagenet_like,
        "features_prefixed": features,
        "features_only": {k.removeprefix("features."): v for k, v in features.items()},
        "lightning_style": {"state_dict": features, "epoch": 3},
    }
    for name, payload in payloads.items():
        torch.save(payload, folder / f"{name}.pth")
    return {name: folder / f"{name}.pth" for name in payloads}


def convs(net: VGG16Transfer) -> list[nn.Conv2d]:
    return [m for m in net.features if isinstance(m, nn.Conv2d)]


def dropout_rates(net: nn.Module) -> list[float]:
    return [m.p for m in net.modules() if isinstance(m, nn.Dropout)]


@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("size", [48, 44])
def test_seed_vgg_output_shape(blocks: int, size: int) -> None:
    net = build_model(f"vgg{blocks}", batch_norm=True, dropout="increasing", input_size=size)
    assert net(torch.rand(2, 1, size, size)).shape == (2, 7)


@pytest.mark.parametrize("size", [40, 48])
def test_vggnet_output_shape(size: int) -> None:
    """The paper's net trains on 40x40 crops: four poolings floor 40 -> 20 -> 10 -> 5 -> 2."""
    net = build_model("vggnet", hidden=32, input_size=size).eval()
    assert net(torch.rand(2, 1, size, size)).shape == (2, 7)
    assert net.classifier[1].in_features == 512 * (size // 16) ** 2


@pytest.mark.parametrize("size", [48, 64])
def test_vgg16_output_shape(size: int) -> None:
    net = build_model("vgg16", pretrained="none", head=[16], input_size=size).eval()
    assert net(torch.rand(2, 3, size, size)).shape == (2, 7)
    assert net.in_channels == 3


def test_too_small_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="input_size=4 must be at least 2\\*\\*blocks=8"):
        build_model("vgg3", input_size=4)
    with pytest.raises(ValueError, match="input_size=8 must be at least 2\\*\\*stages=16"):
        build_model("vggnet", input_size=8)
    with pytest.raises(ValueError, match="VGG16 needs input_size >= 32"):
        build_model("vgg16", pretrained="none", input_size=24)


@pytest.mark.parametrize(
    ("mode", "rates"),
    [("none", []), ("fixed", [0.2, 0.2, 0.2, 0.2]), ("increasing", [0.2, 0.3, 0.4, 0.5])],
)
def test_seed_vgg_dropout_modes(mode: str, rates: list[float]) -> None:
    """The seed's ablation: none, the same rate after each block and the dense layer, or +0.1 per block."""
    net = build_model("vgg3", dropout=mode, dropout_rate=0.2)
    assert dropout_rates(net) == pytest.approx(rates)
    if mode == "increasing":
        assert isinstance(net.classifier[-2], nn.Dropout) and net.classifier[-2].p == pytest.approx(0.5)


def test_seed_vgg_dropout_follows_each_pooling() -> None:
    net = build_model("vgg2", dropout="fixed", dropout_rate=0.25)
    layers = list(net.features)
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    assert [type(layers[i + 1]) for i in pools] == [nn.Dropout, nn.Dropout]
    assert dropout_rates(net) == [0.25, 0.25, 0.25]


def test_seed_vgg_rejects_unknown_dropout_mode_and_blocks() -> None:
    with pytest.raises(ValueError, match="model.dropout='spatial' must be one of none, fixed, increasing"):
        build_model("vgg3", dropout="spatial")
    with pytest.raises(ValueError, match="model.blocks=4"):
        SeedVGG(blocks=4)


def test_a_vgg_name_fixes_its_depth() -> None:
    """``model=vgg1`` is one block whatever ``model.blocks`` says, so the name in a run or checkpoint never lies."""
    assert sum(isinstance(m, nn.MaxPool2d) for m in build_model("vgg1", blocks=1).features) == 1
    with pytest.raises(ValueError, match=re.escape("model=vgg1 has 1 block(s), not model.blocks=3: choose the net by its name")):
        build_model("vgg1", blocks=3)


@pytest.mark.parametrize("config", sorted((Path(__file__).parents[1] / "conf" / "model").glob("*.yaml")), ids=lambda path: path.stem)
def test_each_model_config_names_the_net_registered_under_its_own_name(config: Path) -> None:
    """``model=vgg2`` runs the net registered as ``vgg2``, and metrics.json says ``vgg2``."""
    options = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    assert options["name"] == config.stem and config.stem in MODELS
    if config.stem in ("vgg1", "vgg2", "vgg3"):
        assert sum(isinstance(m, nn.MaxPool2d) for m in build_model(**options).features) == int(config.stem[-1])


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_the_legacy_name_seed_vgg_builds_the_net_its_blocks_say(blocks: int) -> None:
    """Checkpoints and runs of older code call VGG1/2/3 ``seed_vgg``: the registry resolves it, in one place."""
    old = {"name": "seed_vgg", "blocks": blocks, "filters": [8, 16, 32], "dense": 16}
    assert resolve(old) == {**old, "name": f"vgg{blocks}"}
    assert resolve({"name": "seed_vgg"})["name"] == "vgg3"  # SeedVGG's default depth
    assert sum(isinstance(m, nn.MaxPool2d) for m in build_model(**old).features) == blocks
    assert "seed_vgg" in LEGACY_NAMES and "seed_vgg" not in MODELS


@pytest.mark.parametrize("batch_norm", [True, False])
def test_seed_vgg_batch_norm_switch(batch_norm: bool) -> None:
    net = build_model("vgg3", batch_norm=batch_norm)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == (6 if batch_norm else 0)
    if batch_norm:
        assert [n.num_features for n in norms] == [32, 32, 64, 64, 128, 128]


def test_seed_vgg_batch_norm_constants_reach_every_layer() -> None:
    """Keras' eps and momentum (the seed's framework) change the running statistics' update."""
    net = build_model("vgg2", batch_norm=True, bn_eps=1e-3, bn_momentum=0.01)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [(n.eps, n.momentum) for n in norms] == [(1e-3, 0.01)] * 4
    seen = []
    norms[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].mean(dim=(0, 2, 3))))
    net.train()(torch.rand(4, 1, 48, 48))
    assert torch.allclose(norms[0].running_mean, 0.01 * seen[0])  # 1% of the batch's mean, not 10%


@pytest.mark.parametrize("bad", [{"bn_eps": 0.0}, {"bn_momentum": 1.5}, {"bn_momentum": -0.1}])
def test_seed_vgg_rejects_bad_batch_norm_constants(bad: dict[str, float]) -> None:
    (key, value), = bad.items()
    with pytest.raises(ValueError, match=re.escape(f"model.{key}={value} ")):
        build_model("vgg3", batch_norm=True, **bad)


def test_seed_vgg_filters_and_dense_width() -> None:
    net = build_model("vgg2", filters=[8, 16], dense=24)
    assert [m.out_channels for m in net.features if isinstance(m, nn.Conv2d)] == [8, 8, 16, 16]
    assert net.classifier[1].in_features == 16 * 12 * 12 and net.classifier[1].out_features == 24


def test_vgg16_freezing() -> None:
    """trainable_convs counts convolutions from the top (-1: all, 0: none); the new head always trains."""
    net = VGG16Transfer(pretrained="none", trainable_convs=2, head=[16])
    assert [all(p.requires_grad for p in conv.parameters()) for conv in convs(net)] == [False] * 11 + [True] * 2
    assert all(p.requires_grad for p in net.classifier.parameters())
    for trainable, expected in ((-1, [True] * CONVS), (0, [False] * CONVS), (3, [False] * 10 + [True] * 3)):
        net.freeze(trainable)
        assert [all(p.requires_grad for p in conv.parameters()) for conv in convs(net)] == expected
        assert all(p.requires_grad for p in net.classifier.parameters())
    with pytest.raises(ValueError, match="model.trainable_convs=14 must be -1 \\(all\\) or 0..13"):
        net.freeze(CONVS + 1)


@pytest.mark.parametrize("form", ["full", "features_prefixed", "features_only", "lightning_style"])
def test_vgg16_loads_weights_from_every_file_form(
    form: str, weight_files: dict[str, Path], imagenet_like: dict[str, torch.Tensor]
) -> None:
    net = VGG16Transfer(pretrained="imagenet", weights_path=str(weight_files[form]), trainable_convs=2, head=[16])
    net.load_pretrained()
    for key, value in net.features.state_dict().items():
        assert torch.equal(value, imagenet_like[f"features.{key}"]), key
    assert [conv.weight.requires_grad for conv in convs(net)] == [False] * 11 + [True] * 2


def test_pretrained_none_ignores_a_weights_file(weight_files: dict[str, Path], imagenet_like: dict) -> None:
    """FER_VGG16_WEIGHTS fills weights_path in every config; model.pretrained=none must still start random."""
    net = VGG16Transfer(pretrained="none", weights_path=str(weight_files["full"]), head=[16])
    net.load_pretrained()
    assert not torch.equal(net.features[0].weight, imagenet_like["features.0.weight"])


def test_a_weights_file_that_does_not_fit_says_so(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "vgg11.pth"
    torch.save(torchvision.models.vgg11(weights=None).features.state_dict(), path)
    with pytest.raises(RuntimeError, match="does not fit VGG16's convolutions: missing .* wrong shapes"):
        load_vgg16_features(path)
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(RuntimeError, match="missing .*unexpected \\['conv1.weight'\\]"):
        load_vgg16_features(path)


def test_a_weights_file_without_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(RuntimeError, match="does not hold a state_dict \\(found Tensor\\).*FER_VGG16_WEIGHTS"):
        load_vgg16_features(path)
    path.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="Could not read VGG16 weights"):
        load_vgg16_features(path)


def test_a_missing_weights_file_points_to_fer_vgg16_weights(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="FER_VGG16_WEIGHTS") as error:
        VGG16Transfer(pretrained="imagenet", weights_path=str(missing), head=[16]).load_pretrained()
    assert str(missing) in str(error.value)


def test_imagenet_without_file_or_network_explains_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self, *args, **kwargs) -> dict:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.VGG16_Weights, "get_state_dict", offline)
    net = VGG16Transfer(pretrained="imagenet", weights_path=None, head=[16])
    with pytest.raises(RuntimeError, match="Could not download torchvision's ImageNet VGG16 weights") as error:
        net.load_pretrained()
    assert "FER_VGG16_WEIGHTS" in str(error.value) and "model.pretrained=none" in str(error.value)


def test_imagenet_without_file_uses_torchvision_weights(
    monkeypatch: pytest.MonkeyPatch, imagenet_like: dict[str, torch.Tensor]
) -> None:
    monkeypatch.setattr(torchvision.models.VGG16_Weights, "get_state_dict", lambda self, *a, **k: imagenet_like)
    net = VGG16Transfer(pretrained="imagenet", weights_path=None, head=[16])
    net.load_pretrained()
    assert torch.equal(net.features[28].bias, imagenet_like["features.28.bias"])


def test_vgg16_normalises_with_imagenet_statistics() -> None:
    """Callers pass [0, 1] RGB; the net must see ImageNet-normalised input."""
    net = VGG16Transfer(pretrained="none", head=[16]).eval()
    seen = []
    net.features.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    net(torch.full((1, 3, 32, 32), 0.5))
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(seen[0][0, :, 0, 0], expected)


def test_vgg16_rejects_unknown_pretrained() -> None:
    with pytest.raises(ValueError, match="model.pretrained='imagenet21k' must be one of imagenet, none"):
        VGG16Transfer(pretrained="imagenet21k")


def test_unknown_model_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="Unknown model 'resnet18'. Registered models: ") as error:
        build_model("resnet18")
    assert all(name in str(error.value) for name in ("vgg1", "vgg2", "vgg3", "vgg16", "vggnet"))
    assert "seed_vgg" not in str(error.value)


def test_a_name_cannot_be_registered_twice() -> None:
    assert {"vgg1", "vgg2", "vgg3", "vggnet", "vgg16"} <= set(MODELS)
    with pytest.raises(ValueError, match="'vgg16' is registered twice"):
        register("vgg16")(nn.Identity)
    with pytest.raises(ValueError, match="'seed_vgg' is registered twice"):  # a legacy alias is taken too
        register("seed_vgg")(nn.Identity)
