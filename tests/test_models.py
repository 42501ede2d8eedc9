"""Model builders: output shapes, architecture facts and error messages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncf_lossless.errors import ConfigError
from nncf_lossless.models import build_model, wrap_if_sequential


@pytest.mark.parametrize("name, in_channels, num_classes, shape", [
    ("digits_cnn", 1, 10, (2, 1, 8, 8)),
    ("resnet20", 3, 10, (2, 3, 32, 32)),
    ("resnet20", 1, 4, (2, 1, 32, 32)),
    ("resnet18", 3, 7, (2, 3, 32, 32)),
])
def test_forward_shape(name, in_channels, num_classes, shape):
    torch.manual_seed(0)
    model = build_model({"name": name}, num_classes=num_classes, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (2, num_classes)
    assert type(model) is not nn.Sequential  # NNCF 3.4 cannot quantize a top-level Sequential


def test_resnet20_architecture():
    model = build_model({"name": "resnet20"}, num_classes=10, in_channels=3)
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 19  # stem + 3 stages x 3 blocks x 2 convs; + fc = 20 weighted layers
    assert [c.out_channels for c in convs3[1::6]] == [16, 32, 64]
    params = sum(p.numel() for p in model.parameters())
    assert 0.26e6 < params < 0.29e6, params  # ~0.27M as in He et al.


def test_torchvision_model_needs_three_channels():
    with pytest.raises(ConfigError, match="model.name: torchvision model 'resnet18' takes 3 input channels"):
        build_model({"name": "resnet18"}, num_classes=10, in_channels=1)


def test_torchvision_model_without_aux_heads_returns_plain_logits():
    model = build_model({"name": "googlenet"}, num_classes=3, in_channels=3).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError) as err:
        build_model({"name": "x"}, num_classes=10, in_channels=3)
    assert str(err.value) == (
        "model.name: unknown model 'x'; known: digits_cnn, resnet20, "
        "or a torchvision classification model name (e.g. resnet18)"
    )


def test_wrap_if_sequential():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    wrapped = wrap_if_sequential(seq)
    assert type(wrapped) is not nn.Sequential and wrapped.model is seq
    x = torch.randn(3, 1, 2, 2)
    assert torch.equal(wrapped(x), seq(x))
    cnn = build_model({"name": "digits_cnn"}, num_classes=10, in_channels=1)
    assert wrap_if_sequential(cnn) is cnn

    class MySequential(nn.Sequential):
        pass

    sub = MySequential(nn.Linear(2, 2))
    assert wrap_if_sequential(sub) is sub  # only exactly nn.Sequential needs the workaround
