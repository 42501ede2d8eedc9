"""Model builders for the config's ``model`` section."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nncf_lossless.errors import ConfigError

BUILTIN_MODELS = ("digits_cnn", "resnet20")


def build_model(cfg: dict[str, Any], *, num_classes: int, in_channels: int) -> nn.Module:
    """A freshly initialised (untrained) classifier mapping ``N x in_channels x H x W`` to ``N x num_classes`` logits.

    ``cfg["name"]`` is ``"digits_cnn"`` (a small CNN for 8x8 images), ``"resnet20"`` (the CIFAR
    ResNet-20) or any torchvision classification model name (3 input channels only, no
    pretrained weights). Anything else raises :class:`ConfigError`.
    """
    name = cfg.get("name") if isinstance(cfg, dict) else None
    if name == "digits_cnn":
        return DigitsCNN(num_classes=num_classes, in_channels=in_channels)
    if name == "resnet20":
        return ResNet20(num_classes=num_classes, in_channels=in_channels)
    if isinstance(name, str) and name in _torchvision_names():
        if in_channels != 3:
            raise ConfigError(
                f"model.name: torchvision model {name!r} takes 3 input channels but the dataset has {in_channels}; "
                f"use digits_cnn or resnet20, or a 3-channel dataset"
            )
        import torchvision

        # Auxiliary heads make these return a tuple in training mode; the trainer expects plain logits.
        extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **extra)
    raise ConfigError(
        f"model.name: unknown model {name!r}; known: digits_cnn, resnet20, "
        f"or a torchvision classification model name (e.g. resnet18)"
    )


def wrap_if_sequential(model: nn.Module) -> nn.Module:
    """``model`` itself, unless it is exactly an ``nn.Sequential``: NNCF 3.4 cannot quantize a
    top-level Sequential, so that one is wrapped in a module whose ``forward`` calls it (its
    parameters then appear under the ``model.`` prefix)."""
    if type(model) is nn.Sequential:
        return _SequentialWrapper(model)
    return model


class _SequentialWrapper(nn.Module):
    def __init__(self, model: nn.Sequential) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _torchvision_names() -> set[str]:
    import torchvision

    # module=torchvision.models lists the classification models only (not detection, video, ...).
    return set(torchvision.models.list_models(module=torchvision.models))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsCNN(nn.Module):
    """conv16-conv32-maxpool-conv64 (each conv+BN+ReLU), global average pool, linear; sized for 8x8 digits."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, 16), _conv_bn_relu(16, 32), nn.MaxPool2d(2), _conv_bn_relu(32, 64)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN with a residual; a 1x1 conv+BN shortcut (option B) when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (He et al. 2016): 3x3 stem, 3 stages x 3 BasicBlocks of 16/32/64 channels, pool, linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, 16)
        self.layer1 = nn.Sequential(*(BasicBlock(16, 16, 1) for _ in range(3)))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32, 1), BasicBlock(32, 32, 1))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64, 1), BasicBlock(64, 64, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))
