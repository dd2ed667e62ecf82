"""Models, sized from the dataset's input shape and number of classes.

The harness supplies ``in_shape`` and ``num_classes``; configs set only the keyword parameters.

Example:
    >>> from fedbench.registry import MODELS
    >>> net = MODELS.create("mlp", {"hidden": [16]}, in_shape=(1, 8, 8), num_classes=10)
    >>> sum(p.numel() for p in net.parameters())
    1210
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from fedbench.params import PositiveFloat, PositiveInt
from fedbench.registry import register_model

_CONTEXT = ("in_shape", "num_classes")


def _flat_size(module: nn.Module, in_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, *in_shape)).flatten(1).shape[1])


class LeNet(nn.Module):
    """The sigmoid LeNet of DLG (Zhu et al. 2019): 3 strided 5×5 convolutions, 12 channels."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, init_range: float) -> None:
        super().__init__()
        channels = in_shape[0]
        self.body = nn.Sequential(
            nn.Conv2d(channels, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        self.fc = nn.Linear(_flat_size(self.body, in_shape), num_classes)
        if init_range > 0:
            # DLG's code draws every weight and bias from U(-0.5, 0.5): it keeps the sigmoid
            # network's gradients informative, which the attack relies on.
            for param in self.parameters():
                nn.init.uniform_(param, -init_range, init_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc(self.body(x).flatten(1))
        return logits


@register_model("lenet", context=_CONTEXT)
def lenet(
    *, in_shape: tuple[int, ...], num_classes: int, init_range: PositiveFloat = 0.5
) -> nn.Module:
    """DLG's sigmoid LeNet (768-wide classifier input at 32×32).

    Args:
        init_range: Weights and biases drawn from U(-init_range, init_range); 0 keeps
            PyTorch's default initialisation.
    """
    if len(in_shape) != 3:
        raise ValueError(f"lenet needs image input (C, H, W), got shape {in_shape}")
    return LeNet(in_shape, num_classes, init_range)


@register_model("convnet", context=_CONTEXT)
def convnet(*, in_shape: tuple[int, ...], num_classes: int, width: PositiveInt = 32) -> nn.Module:
    """Two conv-ReLU-pool blocks and a linear classifier.

    Args:
        width: Channels of the first block (the second has twice as many).
    """
    if len(in_shape) != 3:
        raise ValueError(f"convnet needs image input (C, H, W), got shape {in_shape}")
    body = nn.Sequential(
        nn.Conv2d(in_shape[0], width, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(body, nn.Linear(_flat_size(body, in_shape), num_classes))


@register_model("mlp", context=_CONTEXT)
def mlp(
    *, in_shape: tuple[int, ...], num_classes: int, hidden: list[int] | None = None
) -> nn.Module:
    """Fully connected ReLU network; its first layer is a Linear with bias.

    Args:
        hidden: Widths of the hidden layers (default [64]).
    """
    widths = [64] if hidden is None else list(hidden)
    if any(w < 1 for w in widths):
        raise ValueError(f"mlp: hidden widths must be positive, got {widths}")
    layers: list[nn.Module] = [nn.Flatten()]
    size = int(torch.Size(in_shape).numel())
    for width in widths:
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    layers.append(nn.Linear(size, num_classes))
    return nn.Sequential(*layers)


@register_model("logreg", context=_CONTEXT)
def logreg(*, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multinomial logistic regression (one Linear layer on the flattened input)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.Size(in_shape).numel()), num_classes))


@register_model("resnet18", context=_CONTEXT)
def resnet18(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    norm: Literal["group", "batch"] = "group",
    groups: PositiveInt = 32,
) -> nn.Module:
    """torchvision's ResNet-18, with a 3×3 stem and no max-pool for inputs below 64 pixels.

    Args:
        norm: "group" (GroupNorm; Opacus accepts it and FedAvg has no running statistics to
            average) or "batch" (BatchNorm; its running statistics stay local to each client).
        groups: Number of GroupNorm groups.
    """
    from torchvision.models import resnet18 as tv_resnet18

    if len(in_shape) != 3:
        raise ValueError(f"resnet18 needs image input (C, H, W), got shape {in_shape}")

    def group_norm(channels: int) -> nn.Module:
        return nn.GroupNorm(min(groups, channels), channels)

    norm_layer = group_norm if norm == "group" else nn.BatchNorm2d
    net: nn.Module = tv_resnet18(weights=None, num_classes=num_classes, norm_layer=norm_layer)
    if in_shape[0] != 3 or in_shape[1] < 64:
        net.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    if in_shape[1] < 64:
        net.maxpool = nn.Identity()
    return net
