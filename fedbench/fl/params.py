"""Flat parameter vectors: the form updates take between stages."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters


def get_flat(model: nn.Module) -> torch.Tensor:
    """All trainable parameters of ``model`` as one detached 1-D tensor."""
    return parameters_to_vector(p for p in model.parameters() if p.requires_grad).detach()


def set_flat(model: nn.Module, vector: torch.Tensor) -> None:
    """Load a flat vector (as produced by :func:`get_flat`) into ``model`` in place."""
    params = [p for p in model.parameters() if p.requires_grad]
    expected = sum(p.numel() for p in params)
    if vector.numel() != expected:
        raise ValueError(f"flat vector has {vector.numel()} entries, model has {expected}")
    with torch.no_grad():
        vector_to_parameters(vector.to(params[0].device, params[0].dtype), params)


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
