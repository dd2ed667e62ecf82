"""The object every dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fedbench.data.tensors import TensorData


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset.

    Attributes:
        name: Registry name.
        train: Training examples (clients and the population split are carved from these).
        test: The official test split, or None when the dataset has none (one is then held out).
        num_classes: Number of classes.
        input_shape: Shape of one example (C, H, W) for images, (F,) for tabular data.
        kind: "image" (values in [0, 1]) or "tabular" (standardised features).
        class_names: One name per class.
    """

    name: str
    train: TensorData
    test: TensorData | None
    num_classes: int
    input_shape: tuple[int, ...]
    kind: Literal["image", "tabular"]
    class_names: tuple[str, ...] = field(default=())
