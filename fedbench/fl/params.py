"""Flat parameter vectors: the form updates take between stages."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector


def get_flat(model: nn.Module) -> torch.Tensor:
    """All trainable parameters of ``model`` as one detached 1-D tensor."""
    return parameters_to_vector(p for p in model.parameters() if p.requires_grad).detach()


def set_flat(model: nn.Module, vector: torch.Tensor) -> None:
    """Load a flat vector (as produced by :func:`get_flat`) into ``model`` in place."""
    params = [p for p in model.parameters() if p.requires_grad]
    expected = sum(p.numel() for p in params)
    if vector.numel() != expected:
        raise ValueError(f"flat vector has {vector.numel()} entries, model has {expected}")
    # Copy into the existing tensors: torch's vector_to_parameters would instead make every
    # parameter a view of ``vector``, so training the model would silently rewrite the caller's
    # vector (e.g. w_t, making Δ_i = w_i − w_t zero) and replace the tensors optimizers hold.
    with torch.no_grad():
        offset = 0
        for param in params:
            size = param.numel()
            param.copy_(vector[offset : offset + size].view_as(param))
            offset += size


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
