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


class FlatParameters:
    """A model whose trainable parameters are views of one flat buffer, loaded in one copy.

    The simulation loads w_t into its worker model once per sampled client; with the
    parameters seated in one buffer that is a single ``copy_`` instead of one copy per tensor
    (a third of the harness's per-client cost on small models). The Parameter objects stay the
    same, so optimizers and hooks see no difference, and the buffer is private to this object:
    unlike torch's ``vector_to_parameters`` it never aliases the caller's vector.

    Args:
        model: The model to re-seat. Its Parameter objects must not be replaced afterwards;
            rebinding a parameter's ``.data`` is detected and undone on the next ``load``.

    Example:
        >>> flat = FlatParameters(torch.nn.Linear(2, 1))
        >>> flat.load(torch.tensor([1.0, 2.0, 3.0]))
        >>> flat.model.bias.item()
        3.0
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._seat()

    def _seat(self) -> None:
        # A fresh buffer holding the current values; the parameters become views of it.
        self.buffer = parameters_to_vector(self._params).detach()
        offset = 0
        for param in self._params:
            size = param.numel()
            param.data = self.buffer[offset : offset + size].view_as(param)
            offset += size
        self._pointers = [p.data_ptr() for p in self._params]

    def load(self, vector: torch.Tensor) -> None:
        """Copy a flat vector (as produced by :func:`get_flat`) into the model's parameters."""
        if vector.numel() != self.buffer.numel():
            raise ValueError(
                f"flat vector has {vector.numel()} entries, model has {self.buffer.numel()}"
            )
        if [p.data_ptr() for p in self._params] != self._pointers:
            self._seat()  # something rebound a parameter's storage: seat it again
        self.buffer.copy_(vector.detach().view(-1))


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
