"""Tests for fedbench.models."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator

from fedbench.registry import MODELS

SHAPES = [((1, 8, 8), 10), ((3, 32, 32), 10), ((1, 28, 28), 10)]


@pytest.mark.parametrize("name", ["lenet", "convnet", "mlp", "logreg"])
@pytest.mark.parametrize("in_shape, classes", SHAPES)
def test_output_shape_matches_dataset(name: str, in_shape: tuple[int, ...], classes: int) -> None:
    net = MODELS.create(name, in_shape=in_shape, num_classes=classes)
    assert net(torch.zeros(2, *in_shape)).shape == (2, classes)


def test_tabular_models() -> None:
    for name in ("mlp", "logreg"):
        assert MODELS.create(name, in_shape=(30,), num_classes=2)(torch.zeros(4, 30)).shape == (
            4,
            2,
        )
    with pytest.raises(ValueError, match="lenet needs image input"):
        MODELS.create("lenet", in_shape=(30,), num_classes=2)


def test_lenet_is_dlg_variant() -> None:
    net = MODELS.create("lenet", in_shape=(3, 32, 32), num_classes=10)
    assert net.fc.in_features == 768  # 12 channels × 8 × 8, as in DLG
    assert all(
        isinstance(m, torch.nn.Sigmoid) for m in net.body if not isinstance(m, torch.nn.Conv2d)
    )
    values = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert float(values.abs().max()) <= 0.5 and float(values.std()) > 0.2  # U(-0.5, 0.5)


def test_mlp_first_layer_is_linear_with_bias() -> None:
    net = MODELS.create("mlp", {"hidden": [16, 8]}, in_shape=(1, 8, 8), num_classes=10)
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [16, 8, 10] and linear[0].bias is not None


def test_resnet18_group_norm_is_opacus_compatible() -> None:
    net = MODELS.create("resnet18", in_shape=(3, 32, 32), num_classes=10)
    assert ModuleValidator.validate(net, strict=False) == []
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    batch = MODELS.create("resnet18", {"norm": "batch"}, in_shape=(1, 28, 28), num_classes=10)
    assert ModuleValidator.validate(batch, strict=False) != []  # BatchNorm is flagged by Opacus
    assert batch(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
