"""In-memory labelled examples with stable global ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TensorData:
    """Examples ``x``, integer labels ``y`` and a global id per example.

    The ids identify an example across splits and clients (for ground truth and membership);
    they index the dataset the examples were loaded from.
    """

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.ids)):
            raise ValueError(
                f"x, y and ids must have the same length, got {len(self.x)}, {len(self.y)}, "
                f"{len(self.ids)}"
            )

    @classmethod
    def from_arrays(cls, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> TensorData:
        """Wrap arrays, numbering the examples 0..n-1."""
        xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
        return cls(xt, yt, torch.arange(len(xt)))

    def __len__(self) -> int:
        # The shape, not len(tensor): Tensor.__len__ is a Python wrapper, and a round of a
        # thousand clients asks every shard its size several times.
        return int(self.y.shape[0])

    def subset(self, index: np.ndarray | torch.Tensor) -> TensorData:
        """The examples at positions ``index`` (positions in this object, not global ids)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return TensorData(self.x[idx], self.y[idx], self.ids[idx])

    def concat(self, other: TensorData) -> TensorData:
        """This data followed by ``other``."""
        return TensorData(
            torch.cat([self.x, other.x]),
            torch.cat([self.y, other.y]),
            torch.cat([self.ids, other.ids]),
        )

    def labels(self) -> np.ndarray:
        """Labels as a numpy array."""
        return self.y.numpy()
