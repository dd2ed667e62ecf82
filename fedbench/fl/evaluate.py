"""Test-split evaluation."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedbench.data.tensors import TensorData


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorData, batch_size: int = 1024) -> tuple[float, float]:
    """Accuracy and mean cross-entropy loss of ``model`` on ``data``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(data), batch_size):
        x = data.x[start : start + batch_size].to(device)
        y = data.y[start : start + batch_size].to(device)
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
    model.train(was_training)
    return correct / len(data), loss / len(data)
